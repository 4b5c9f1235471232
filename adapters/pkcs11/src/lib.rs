//! # keywarden-pkcs11
//!
//! A [`keywarden_vault::Vault`] on any PKCS#11 token: SoftHSM2, keywarden's own hsm-sim, or a
//! network HSM, through [`cryptoki`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use keywarden_pkcs11::{PinSource, Pkcs11Config, Pkcs11Vault, TokenSelector};
//! use keywarden_vault::{Algorithm, KeySpec, SigningKey, Vault};
//!
//! let vault: Arc<dyn Vault> = Arc::new(Pkcs11Vault::open(Pkcs11Config::new(
//!     "/usr/lib/softhsm/libsofthsm2.so",
//!     TokenSelector::Label("keywarden".into()),
//!     PinSource::Env("KEYWARDEN_PIN".into()),
//! ))?);
//! let key = vault.generate(&KeySpec::new(Algorithm::EcdsaP256Sha256, "release-signing")?).await?;
//! let signer = SigningKey::from_info(vault, key)?; // hand this to code that only signs
//! let signature = signer.sign(b"release v1.2.3").await?;
//! keywarden_vault::verify::verify(signer.public_key(), b"release v1.2.3", &signature)?;
//! # Ok(()) }
//! ```
//!
//! Keys are generated on the token as token objects, private, sensitive and never
//! extractable, with a random 16-byte `CKA_ID` as their [`KeyRef`](keywarden_vault::KeyRef)
//! and only the usage their algorithm needs. Which algorithms a token offers is read from its
//! mechanism list. Sessions are pooled and logged in; a token that loses them (removed,
//! restarted, logged out) is recovered transparently, once per call.
//!
//! Several objects under one `CKA_ID` are used only when they are provably one key listed
//! more than once (SoftHSM2 2.6 does that when two processes create objects in one token
//! directory at once): public copies must hold the same point, private copies must each sign
//! so that the key's public key verifies, or derive the same secret. Anything else is a
//! `DUPLICATE_ID` error, never a guess.
#![cfg_attr(not(feature = "testing"), forbid(unsafe_code))]
#![warn(missing_docs)]

mod config;
mod error;
mod keys;
pub mod module;
mod pool;
mod rv;
#[cfg(feature = "testing")]
pub mod testing;
mod vault;

pub use crate::config::{PinSource, Pkcs11Config, TokenSelector};
pub use crate::error::Error;
pub use crate::vault::Pkcs11Vault;
