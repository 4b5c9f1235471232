//! Test and benchmark support (feature `testing`): a [`Vault`] that keeps its keys in process
//! memory, with aws-lc-rs. Not for production: the point of keywarden is that keys live in
//! hardware.
#![allow(missing_docs)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_lc_rs::agreement::{self, ECDH_P256, PrivateKey, UnparsedPublicKey};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};
use keywarden_vault::{
    AgreementKey, Algorithm, BackendInfo, Error, KeyInfo, KeyRef, KeySpec, PublicKey, Result,
    SharedSecret, Signature, SigningKey, Vault, async_trait,
};
use zeroize::Zeroizing;

enum Secret {
    Ecdsa(EcdsaKeyPair),
    Ecdh(PrivateKey),
    Ed25519(Ed25519KeyPair),
}

/// Keys in memory. Every operation is synchronous and fast.
#[derive(Default)]
pub struct SoftwareVault {
    keys: Mutex<HashMap<KeyRef, (KeyInfo, Arc<Secret>)>>,
    next: std::sync::atomic::AtomicU64,
}

impl core::fmt::Debug for SoftwareVault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SoftwareVault(..)")
    }
}

fn backend(e: impl core::fmt::Display) -> Error {
    Error::backend("software", "AWS_LC", e.to_string())
}

impl SoftwareVault {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn get(&self, key: &KeyRef) -> Result<(KeyInfo, Arc<Secret>)> {
        self.keys
            .lock()
            .map_err(backend)?
            .get(key)
            .cloned()
            .ok_or_else(|| Error::KeyNotFound(key.to_string()))
    }
}

#[async_trait]
impl Vault for SoftwareVault {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            name: "software".into(),
            algorithms: vec![
                Algorithm::EcdsaP256Sha256,
                Algorithm::EcdhP256,
                Algorithm::Ed25519,
            ],
            hardware_resident: false,
        }
    }

    async fn generate(&self, spec: &KeySpec) -> Result<KeyInfo> {
        let (secret, public) = match spec.algorithm() {
            Algorithm::EcdsaP256Sha256 => {
                let kp =
                    EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(backend)?;
                let pk = PublicKey::from_sec1(kp.public_key().as_ref())?;
                (Secret::Ecdsa(kp), pk)
            }
            Algorithm::EcdhP256 => {
                let k = PrivateKey::generate(&ECDH_P256).map_err(backend)?;
                let pk = PublicKey::from_sec1(k.compute_public_key().map_err(backend)?.as_ref())?;
                (Secret::Ecdh(k), pk)
            }
            Algorithm::Ed25519 => {
                let kp = Ed25519KeyPair::generate().map_err(backend)?;
                let pk = PublicKey::from_ed25519(kp.public_key().as_ref())?;
                (Secret::Ed25519(kp), pk)
            }
            other => return Err(Error::UnsupportedAlgorithm(other.to_string())),
        };
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key_ref = KeyRef::new(n.to_be_bytes().to_vec());
        let info = KeyInfo {
            key_ref: key_ref.clone(),
            algorithm: spec.algorithm(),
            label: spec.label().to_string(),
            public_key: public,
        };
        self.keys
            .lock()
            .map_err(backend)?
            .insert(key_ref, (info.clone(), Arc::new(secret)));
        Ok(info)
    }

    async fn describe(&self, key: &KeyRef) -> Result<KeyInfo> {
        Ok(self.get(key)?.0)
    }

    async fn sign(&self, key: &KeyRef, message: &[u8]) -> Result<Signature> {
        keywarden_vault::check_message(message)?;
        match &*self.get(key)?.1 {
            Secret::Ecdsa(kp) => {
                let sig = kp.sign(&SystemRandom::new(), message).map_err(backend)?;
                Signature::from_bytes(Algorithm::EcdsaP256Sha256, sig.as_ref())
            }
            Secret::Ed25519(kp) => {
                Signature::from_bytes(Algorithm::Ed25519, kp.sign(message).as_ref())
            }
            Secret::Ecdh(_) => Err(Error::UnsupportedAlgorithm("ecdh key cannot sign".into())),
        }
    }

    async fn agree(&self, key: &KeyRef, peer: &PublicKey) -> Result<SharedSecret> {
        match &*self.get(key)?.1 {
            Secret::Ecdh(k) => agreement::agree(
                k,
                UnparsedPublicKey::new(&ECDH_P256, peer.as_bytes()),
                Error::InvalidInput("peer key refused".into()),
                |s| Ok(SharedSecret::new(Zeroizing::new(s.to_vec()))),
            ),
            _ => Err(Error::UnsupportedAlgorithm("not an ecdh key".into())),
        }
    }

    async fn destroy(&self, key: &KeyRef) -> Result<()> {
        self.keys
            .lock()
            .map_err(backend)?
            .remove(key)
            .map(|_| ())
            .ok_or_else(|| Error::KeyNotFound(key.to_string()))
    }

    async fn list(&self) -> Result<Vec<KeyInfo>> {
        Ok(self
            .keys
            .lock()
            .map_err(backend)?
            .values()
            .map(|(i, _)| i.clone())
            .collect())
    }
}

/// A fresh signing key (ECDSA P-256) in `vault`.
pub async fn signing_key(vault: Arc<dyn Vault>, label: &str) -> SigningKey {
    let info = vault
        .generate(
            &KeySpec::new(Algorithm::EcdsaP256Sha256, label).unwrap_or_else(|e| panic!("{e}")),
        )
        .await
        .unwrap_or_else(|e| panic!("generate signing key: {e}"));
    SigningKey::from_info(vault, info).unwrap_or_else(|e| panic!("{e}"))
}

/// A fresh ECDH key in `vault`.
pub async fn agreement_key(vault: Arc<dyn Vault>, label: &str) -> AgreementKey {
    let info = vault
        .generate(&KeySpec::new(Algorithm::EcdhP256, label).unwrap_or_else(|e| panic!("{e}")))
        .await
        .unwrap_or_else(|e| panic!("generate agreement key: {e}"));
    AgreementKey::from_info(vault, info).unwrap_or_else(|e| panic!("{e}"))
}

/// An hour from now.
pub fn in_an_hour() -> SystemTime {
    SystemTime::now() + Duration::from_secs(3600)
}
