//! # keywarden-channel
//!
//! End-to-end encrypted, mutually authenticated channels whose static keys stay in a vault
//! (an HSM, a TPM, a YubiHSM or the key service).
//!
//! - [`noise`]: `Noise_XX_P256_AESGCM_SHA256` as a pure state machine; the static DH of each
//!   side goes through an [`AgreementKey`](keywarden_vault::AgreementKey).
//! - [`Identity`], [`Identifier`], [`Attestation`], [`Credential`]: who is at the other end,
//!   bound to the Noise static key and described by authorities.
//! - [`transport`]: AES-256-GCM frames with explicit nonces, a replay window and rekeying.
//! - [`Node`]: workers with addresses and bounded mailboxes, routes, TCP and in-process
//!   transports, relays, and the two calls applications use:
//!   [`Node::create_secure_channel`] and [`Node::create_secure_channel_listener`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod attestation;
mod channel;
pub mod cli;
mod credential;
mod encoding;
mod error;
mod identity;
mod node;
pub mod noise;
pub mod policy;
mod signed;
mod tcp;
pub mod transport;
pub mod wire;

#[cfg(feature = "testing")]
pub mod testing;

pub use crate::attestation::Attestation;
pub use crate::channel::{
    ChannelIdentity, ChannelOptions, ChannelReceiver, ChannelSender, PROLOGUE, SecureChannel,
    SecureChannelListener,
};
pub use crate::credential::{
    Credential, MAX_ATTRIBUTE_NAME_LEN, MAX_ATTRIBUTE_VALUE_LEN, MAX_ATTRIBUTES,
};
pub use crate::error::{Error, FrameError, HandshakeError, Result};
pub use crate::identity::{Identifier, Identity};
pub use crate::node::{
    Address, DEFAULT_MAILBOX_CAPACITY, MAX_ADDRESS_LEN, MAX_ROUTE_LEN, Mailbox, Message, Node,
    Route, WireTap,
};
