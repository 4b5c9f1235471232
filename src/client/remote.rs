//! `RemoteVault`: the `Vault` trait spoken over the service API, so that an application or a
//! channel worker uses a service key exactly like a local one.
//!
//! A [`KeyRef`] here is the key's name (UTF-8). `generate` creates a key whose name is the
//! spec's label; `sign`/`agree` use the key's newest version; `destroy` disables, then destroys.

use async_trait::async_trait;
use keywarden_vault::{
    Algorithm, BackendInfo, Error as VaultError, KeyInfo, KeyRef, KeySpec, PublicKey, Result,
    SharedSecret, Signature, Vault,
};
use tonic::Code;
use zeroize::Zeroizing;

use crate::client::Client;
use crate::proto::v1 as pb;

/// A [`Vault`] backed by a running key service.
#[derive(Clone, Debug)]
pub struct RemoteVault {
    client: Client,
    info: BackendInfo,
}

fn map_status(s: tonic::Status) -> VaultError {
    let msg = s.message().to_owned();
    match s.code() {
        Code::NotFound => VaultError::KeyNotFound(msg),
        Code::InvalidArgument => VaultError::InvalidInput(msg),
        Code::PermissionDenied => VaultError::PermissionDenied(msg),
        Code::Unauthenticated => VaultError::AuthenticationFailed(msg),
        Code::Unavailable => VaultError::DeviceUnavailable(msg),
        Code::FailedPrecondition
            if msg.contains("unsupported algorithm") || msg.contains("cannot") =>
        {
            VaultError::UnsupportedAlgorithm(msg)
        }
        code => VaultError::backend("keywarden-service", format!("{code:?}"), msg),
    }
}

/// The key name a reference stands for; a reference that cannot be a name names no key.
fn name_of(key: &KeyRef) -> Result<&str> {
    std::str::from_utf8(key.as_bytes())
        .ok()
        .filter(|n| {
            !n.is_empty()
                && n.len() <= 64
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        })
        .ok_or_else(|| VaultError::KeyNotFound(format!("no key {key} (not a key service name)")))
}

fn not_found_names(key: &KeyRef) -> impl Fn(tonic::Status) -> VaultError + '_ {
    move |s| match map_status(s) {
        VaultError::KeyNotFound(m) => VaultError::KeyNotFound(format!("{m} (key {key})")),
        other => other,
    }
}

fn info_of(key: &pb::Key) -> Result<KeyInfo> {
    let algorithm: Algorithm = key.algorithm.parse()?;
    let latest = key
        .versions
        .iter()
        .rev()
        .find(|v| v.state == "ready")
        .ok_or_else(|| {
            VaultError::KeyNotFound(format!("key {:?} has no ready version", key.name))
        })?;
    Ok(KeyInfo {
        key_ref: KeyRef::new(key.name.as_bytes().to_vec()),
        algorithm,
        label: key.name.clone(),
        public_key: PublicKey::from_spki_der(&latest.public_key)?,
    })
}

impl RemoteVault {
    /// Wraps a connected client; asks the service which algorithms its default backend has.
    pub async fn new(client: Client) -> Result<Self> {
        let health = client
            .rpc()
            .health(pb::HealthRequest {})
            .await
            .map_err(map_status)?
            .into_inner();
        let default = health
            .backends
            .iter()
            .find(|b| b.name == health.default_backend)
            .ok_or_else(|| {
                VaultError::DeviceUnavailable("the service reports no default backend".into())
            })?;
        let algorithms = default
            .algorithms
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        Ok(Self {
            info: BackendInfo {
                name: format!("keywarden-service:{}", client.target()),
                algorithms,
                hardware_resident: default.hardware_resident,
            },
            client,
        })
    }
}

#[async_trait]
impl Vault for RemoteVault {
    fn info(&self) -> BackendInfo {
        self.info.clone()
    }

    async fn generate(&self, spec: &KeySpec) -> Result<KeyInfo> {
        let key = self
            .client
            .rpc()
            .create_key(pb::CreateKeyRequest {
                name: spec.label().to_owned(),
                algorithm: spec.algorithm().name().to_owned(),
                backend: String::new(),
                labels: spec.attributes().clone().into_iter().collect(),
                expires_at: None,
            })
            .await
            .map_err(map_status)?
            .into_inner();
        info_of(&key)
    }

    async fn describe(&self, key: &KeyRef) -> Result<KeyInfo> {
        let name = name_of(key)?;
        let k = self
            .client
            .rpc()
            .get_key(pb::KeyName {
                name: name.to_owned(),
            })
            .await
            .map_err(not_found_names(key))?
            .into_inner();
        if k.state == "destroyed" {
            return Err(VaultError::KeyNotFound(format!("key {key} was destroyed")));
        }
        info_of(&k)
    }

    async fn sign(&self, key: &KeyRef, message: &[u8]) -> Result<Signature> {
        keywarden_vault::check_message(message)?;
        let name = name_of(key)?;
        let r = self
            .client
            .rpc()
            .sign(pb::SignRequest {
                name: name.to_owned(),
                message: message.to_vec(),
            })
            .await
            .map_err(not_found_names(key))?
            .into_inner();
        Signature::from_bytes(r.algorithm.parse()?, &r.signature)
    }

    async fn agree(&self, key: &KeyRef, peer: &PublicKey) -> Result<SharedSecret> {
        let name = name_of(key)?;
        let r = self
            .client
            .rpc()
            .agree(pb::AgreeRequest {
                name: name.to_owned(),
                peer_public_key: peer.as_bytes().to_vec(),
            })
            .await
            .map_err(not_found_names(key))?
            .into_inner();
        Ok(SharedSecret::new(Zeroizing::new(r.shared_secret)))
    }

    async fn destroy(&self, key: &KeyRef) -> Result<()> {
        let name = name_of(key)?.to_owned();
        let mut rpc = self.client.rpc();
        let k = rpc
            .get_key(pb::KeyName { name: name.clone() })
            .await
            .map_err(not_found_names(key))?
            .into_inner();
        if k.state == "destroyed" {
            return Err(VaultError::KeyNotFound(format!(
                "key {key} was already destroyed"
            )));
        }
        if k.state == "enabled" {
            rpc.disable_key(pb::KeyName { name: name.clone() })
                .await
                .map_err(not_found_names(key))?;
        }
        rpc.destroy_key(pb::KeyName { name })
            .await
            .map_err(not_found_names(key))?;
        Ok(())
    }

    async fn list(&self) -> Result<Vec<KeyInfo>> {
        let keys = self
            .client
            .rpc()
            .list_keys(pb::ListKeysRequest {
                include_destroyed: false,
            })
            .await
            .map_err(map_status)?
            .into_inner();
        keys.keys
            .iter()
            .filter(|k| k.state != "destroyed")
            .map(info_of)
            .collect()
    }
}
