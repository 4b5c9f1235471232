//! # keywarden-channel
//!
//! End-to-end encrypted, mutually authenticated channels whose static keys stay in a vault
//! (an HSM, a TPM, a YubiHSM or the key service).
//!
//! - [`noise`]: `Noise_XX_P256_AESGCM_SHA256` as a pure state machine; the static DH of each
//!   side goes through an [`AgreementKey`](keywarden_vault::AgreementKey). Interoperates
//!   with `snow` (P-256 feature).
//! - [`Identity`], [`Identifier`], [`Attestation`], [`Credential`]: who is at the other end,
//!   bound to the Noise static key and described by authorities.
//! - [`policy`]: who may connect ([`policy::CedarPolicy`] with the `cedar` feature, typed
//!   policies otherwise); nothing is trusted by default.
//! - [`transport`]: AES-256-GCM frames with explicit nonces, a replay window and rekeying.
//! - [`Node`]: workers with addresses and bounded mailboxes, routes, TCP and in-process
//!   transports, relays, and the two calls applications use:
//!   [`Node::create_secure_channel`] and [`Node::create_secure_channel_listener`].
//! - [`cli`]: listen / connect / relay / pipe helpers for `keywarden channel …`.
//!
//! ```no_run
//! # async fn demo(identity: keywarden_channel::ChannelIdentity, ca: keywarden_channel::Identifier,
//! #               cred: keywarden_channel::Credential) -> keywarden_channel::Result<()> {
//! use keywarden_channel::policy::RequireAttributes;
//! use keywarden_channel::{Address, ChannelOptions, Node, Route};
//!
//! let options = ChannelOptions::new()
//!     .trust_authority(ca)
//!     .with_credential(cred)
//!     .with_policy(RequireAttributes::default().with("role", "server"));
//! let node = Node::new();
//! let conn = node.tcp_connect("127.0.0.1:4000".parse().unwrap()).await?;
//! let route = Route::from_vec(vec![conn, Address::new("relay")?, Address::new("payments")?])?;
//! let mut channel = node.create_secure_channel(&identity, route, options).await?;
//! channel.send(b"hello").await?;
//! let reply = channel.recv().await?;
//! # Ok(()) }
//! ```
//!
//! ## Protocol (version 1)
//!
//! Routed messages carry a payload whose first byte is its kind: `01`/`02`/`03` the three
//! Noise messages (prologue `keywarden-channel/v1`; message 1 has an empty payload, messages
//! 2 and 3 carry the sender's [`wire::IdentityPayload`]: attestation and credentials), `04`
//! a transport frame, `05` an unauthenticated handshake refusal. A transport frame is
//! `nonce (u64 BE) || AES-256-GCM(plaintext)`; the plaintext's first byte is `00` data,
//! `01` close, `02` credential refresh, `03` accept, `04` refuse (with a reason). The
//! initiator's call returns only after the listener's authenticated accept, so a refusal is
//! an error on both sides.
//!
//! ## Limits of this version
//!
//! - Any worker address on a node can be reached from its transports (source routing, as
//!   the design's routes require); there is no per-connection flow control yet.
//! - A slow channel consumer back-pressures its TCP connection (bounded mailboxes), and so
//!   every channel sharing that connection.
//! - Attestations and credentials are checked at the handshake and on refresh; a channel
//!   is not closed when they later expire, and there is no idle timeout or keep-alive.
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
