//! Capability handles: one key, one operation.

use core::fmt;
use std::sync::Arc;

use crate::algorithm::Algorithm;
use crate::error::{Error, Result};
use crate::key::{KeyInfo, KeyRef};
use crate::public_key::PublicKey;
use crate::secret::SharedSecret;
use crate::signature::Signature;
use crate::vault::Vault;

/// A handle that can sign with one key and read its public key; nothing else.
///
/// The vault inside is private: whoever holds a `SigningKey` cannot list, destroy, or use any
/// other key, nor do key agreement with this one. Cloning is cheap.
#[derive(Clone)]
pub struct SigningKey {
    vault: Arc<dyn Vault>,
    info: Arc<KeyInfo>,
}

impl SigningKey {
    /// Looks the key up in `vault` and makes a handle for it. Fails with
    /// [`Error::UnsupportedAlgorithm`] if the key is not a signing key.
    pub async fn open(vault: Arc<dyn Vault>, key: &KeyRef) -> Result<Self> {
        let info = vault.describe(key).await?;
        Self::from_info(vault, info)
    }

    /// Makes a handle from a key description the caller already has (e.g. from
    /// [`Vault::generate`]).
    pub fn from_info(vault: Arc<dyn Vault>, info: KeyInfo) -> Result<Self> {
        if !info.algorithm.is_signing() {
            return Err(Error::UnsupportedAlgorithm(format!(
                "key {} is {}, not a signing key",
                info.key_ref, info.algorithm
            )));
        }
        Ok(Self {
            vault,
            info: Arc::new(info),
        })
    }

    /// Signs `message` (1 byte to [`MAX_MESSAGE_LEN`](crate::MAX_MESSAGE_LEN)).
    pub async fn sign(&self, message: &[u8]) -> Result<Signature> {
        crate::limits::check_message(message)?;
        self.vault.sign(&self.info.key_ref, message).await
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.info.public_key
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.info.algorithm
    }

    /// The backend's reference to the key.
    pub fn key_ref(&self) -> &KeyRef {
        &self.info.key_ref
    }

    /// The key's label.
    pub fn label(&self) -> &str {
        &self.info.label
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("backend", &self.vault.info().name)
            .field("key_ref", &self.info.key_ref)
            .field("algorithm", &self.info.algorithm)
            .finish()
    }
}

/// A handle that can do ECDH with one key and read its public key; nothing else.
#[derive(Clone)]
pub struct AgreementKey {
    vault: Arc<dyn Vault>,
    info: Arc<KeyInfo>,
}

impl AgreementKey {
    /// Looks the key up in `vault` and makes a handle for it. Fails with
    /// [`Error::UnsupportedAlgorithm`] if the key is not a key-agreement key.
    pub async fn open(vault: Arc<dyn Vault>, key: &KeyRef) -> Result<Self> {
        let info = vault.describe(key).await?;
        Self::from_info(vault, info)
    }

    /// Makes a handle from a key description the caller already has.
    pub fn from_info(vault: Arc<dyn Vault>, info: KeyInfo) -> Result<Self> {
        if !info.algorithm.is_agreement() {
            return Err(Error::UnsupportedAlgorithm(format!(
                "key {} is {}, not a key-agreement key",
                info.key_ref, info.algorithm
            )));
        }
        Ok(Self {
            vault,
            info: Arc::new(info),
        })
    }

    /// ECDH with a peer's public key, which must be a P-256 key.
    pub async fn agree(&self, peer: &PublicKey) -> Result<SharedSecret> {
        if peer.kind() != self.info.public_key.kind() {
            return Err(Error::InvalidInput(format!(
                "peer key is {:?}, this key agrees only with {:?} keys",
                peer.kind(),
                self.info.public_key.kind()
            )));
        }
        self.vault.agree(&self.info.key_ref, peer).await
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.info.public_key
    }

    /// The backend's reference to the key.
    pub fn key_ref(&self) -> &KeyRef {
        &self.info.key_ref
    }

    /// The key's label.
    pub fn label(&self) -> &str {
        &self.info.label
    }
}

impl fmt::Debug for AgreementKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgreementKey")
            .field("backend", &self.vault.info().name)
            .field("key_ref", &self.info.key_ref)
            .finish()
    }
}
