//! The backend interface.

use core::fmt;

use async_trait::async_trait;

use crate::algorithm::Algorithm;
use crate::error::Result;
use crate::key::{KeyInfo, KeyRef, KeySpec};
use crate::public_key::PublicKey;
use crate::secret::SharedSecret;
use crate::signature::Signature;

/// What a backend is and can do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendInfo {
    /// A short name for logs and errors (`pkcs11:SoftHSM`, `tpm2`, …).
    pub name: String,
    /// The algorithms this backend can generate keys for, discovered from the device.
    pub algorithms: Vec<Algorithm>,
    /// True when private keys are held by hardware (or a token that behaves as such) and are
    /// not extractable.
    pub hardware_resident: bool,
}

impl BackendInfo {
    /// True if the backend can generate keys for `algorithm`.
    pub fn supports(&self, algorithm: Algorithm) -> bool {
        self.algorithms.contains(&algorithm)
    }
}

/// A place where private keys live and are used without leaving it.
///
/// Object-safe and shareable: use it as `Arc<dyn Vault>`. Every method is async and its future
/// is `Send`; implementations run blocking device calls off the async executor.
///
/// Implementations must:
/// - refuse a message outside [`check_message`](crate::check_message)'s bounds with
///   [`Error::InvalidInput`](crate::Error::InvalidInput) before touching the device;
/// - answer [`Error::KeyNotFound`](crate::Error::KeyNotFound) for a reference they do not hold;
/// - answer [`Error::UnsupportedAlgorithm`](crate::Error::UnsupportedAlgorithm) (or
///   `PermissionDenied`) when a key is used for an operation its algorithm does not allow;
/// - never return or log private key material.
///
/// `keywarden_vault::testing` (feature `testing`) checks all of this against a real device.
#[async_trait]
pub trait Vault: Send + Sync + fmt::Debug {
    /// Describes the backend.
    fn info(&self) -> BackendInfo;

    /// Generates a key inside the backend and returns what is public about it.
    async fn generate(&self, spec: &KeySpec) -> Result<KeyInfo>;

    /// Describes one key.
    async fn describe(&self, key: &KeyRef) -> Result<KeyInfo>;

    /// The public key of one key.
    async fn public_key(&self, key: &KeyRef) -> Result<PublicKey> {
        Ok(self.describe(key).await?.public_key)
    }

    /// Signs `message` (ECDSA: over its SHA-256 digest; Ed25519: the message itself).
    async fn sign(&self, key: &KeyRef, message: &[u8]) -> Result<Signature>;

    /// ECDH between the key and a peer's (validated) public key.
    async fn agree(&self, key: &KeyRef, peer: &PublicKey) -> Result<SharedSecret>;

    /// Destroys a key. Afterwards every operation on it answers `KeyNotFound`.
    async fn destroy(&self, key: &KeyRef) -> Result<()>;

    /// Every key this backend holds (for this vault's credentials).
    async fn list(&self) -> Result<Vec<KeyInfo>>;
}
