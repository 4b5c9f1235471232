//! # keywarden-vault
//!
//! The interface every keywarden backend implements, and the narrow capability handles that
//! applications use instead of keys.
//!
//! Private keys live in a backend (a PKCS#11 token, a TPM 2.0 chip, a YubiHSM 2 or the
//! key service) and never leave it. Code above the backend holds only:
//!
//! - an [`Arc<dyn Vault>`](Vault), for the owner of the keys: generate, list, destroy, and
//!   every operation on every key;
//! - a [`SigningKey`], which can sign with one key and read its public key, nothing else;
//! - an [`AgreementKey`], which can do ECDH with one key and read its public key, nothing else.
//!
//! Inputs that come from outside are validated here, before any backend sees them: a
//! [`PublicKey`] can only be built from a point that is on the curve, a message to sign must
//! be between 1 byte and [`MAX_MESSAGE_LEN`] bytes, and a label must fit [`MAX_LABEL_LEN`].
//!
//! [`verify`] holds software verification for callers and tests, independent of any backend.
//!
//! With the `testing` feature, [`testing`] is the conformance suite that every adapter runs
//! against its real token.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod algorithm;
mod error;
mod handle;
mod key;
mod limits;
mod public_key;
mod secret;
mod signature;
mod vault;
pub mod verify;

#[cfg(feature = "testing")]
pub mod testing;

pub use crate::algorithm::Algorithm;
pub use crate::error::{Error, Result};
pub use crate::handle::{AgreementKey, SigningKey};
pub use crate::key::{KeyInfo, KeyRef, KeySpec};
pub use crate::limits::{MAX_LABEL_LEN, MAX_MESSAGE_LEN, check_label, check_message};
pub use crate::public_key::{KeyKind, PublicKey};
pub use crate::secret::SharedSecret;
pub use crate::signature::Signature;
pub use crate::vault::{BackendInfo, Vault};

/// Re-exported so that adapters implement [`Vault`] with the same macro version.
pub use async_trait::async_trait;
