//! `YubiHsmVault`: the `Vault` trait on a YubiHSM 2.

use core::fmt;

use keywarden_vault::{
    Algorithm, BackendInfo, Error, KeyInfo, KeyKind, KeyRef, KeySpec, PublicKey, Result,
    SharedSecret, Signature, Vault, async_trait, check_label, check_message,
};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use yubihsm::{Capability, Connector, Credentials, Domain, asymmetric, object};

use crate::caps;
use crate::config::{Config, ConnectorConfig};
use crate::device::{Device, Link, Retry};
use crate::ecdh;
#[cfg(not(feature = "usb"))]
use crate::error::ConfigError;
use crate::error::device_error;

/// The longest message an Ed25519 key signs: the YubiHSM 2 hashes it inside, so the whole
/// message travels in one 2048-byte frame (3-byte header, session id, 8-byte MAC, AES-CBC
/// padding, the inner 3-byte header and the 2-byte key id leave 2026 bytes).
pub const MAX_ED25519_MESSAGE_LEN: usize = 2026;

/// How many random object ids `generate` tries before giving up (the device holds at most 256
/// objects in 65534 ids, so a miss is rare).
const ID_TRIES: usize = 32;

/// A YubiHSM 2 as a keywarden vault. See the crate documentation.
pub struct YubiHsmVault {
    device: Device,
    info: BackendInfo,
    policy: Policy,
}

impl fmt::Debug for YubiHsmVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("YubiHsmVault")
            .field("name", &self.info.name)
            .finish_non_exhaustive()
    }
}

/// What the device thread needs to know about keys, beyond the link.
#[derive(Clone, Copy)]
struct Policy {
    domains: Domain,
    extra: Capability,
}

fn connector_for(config: &ConnectorConfig) -> Result<Connector> {
    match config {
        ConnectorConfig::Http { url, timeout_ms } => {
            let (addr, port) = crate::config::parse_http_url(url)?;
            Ok(Connector::http(&yubihsm::HttpConfig {
                addr,
                port,
                timeout_ms: *timeout_ms,
            }))
        }
        #[cfg(feature = "usb")]
        ConnectorConfig::Usb { serial } => {
            let serial = match serial {
                Some(s) => Some(s.parse().map_err(|_| {
                    Error::InvalidInput(format!(
                        "yubihsm usb serial {s:?} is not a YubiHSM serial number"
                    ))
                })?),
                None => None,
            };
            Ok(Connector::usb(&yubihsm::UsbConfig {
                serial,
                timeout_ms: yubihsm::UsbConfig::DEFAULT_TIMEOUT_MILLIS,
            }))
        }
        #[cfg(not(feature = "usb"))]
        ConnectorConfig::Usb { .. } => Err(ConfigError::MissingFeature {
            connector: config.to_string(),
            feature: "usb",
        }
        .into()),
        #[cfg(feature = "mockhsm")]
        ConnectorConfig::MockHsm => Ok(Connector::mockhsm()),
    }
}

fn key_id(key: &KeyRef) -> Result<u16> {
    match key.as_bytes() {
        [a, b] if [*a, *b] != [0, 0] => Ok(u16::from_be_bytes([*a, *b])),
        _ => Err(Error::KeyNotFound(format!(
            "{key}: not a YubiHSM object id (2 bytes, not 0000)"
        ))),
    }
}

fn key_ref(id: u16) -> KeyRef {
    KeyRef::new(id.to_be_bytes().to_vec())
}

fn random_id() -> Result<u16> {
    loop {
        let mut b = [0u8; 2];
        getrandom::fill(&mut b)
            .map_err(|e| Error::backend("yubihsm", "RNG", format!("no randomness: {e}")))?;
        let id = u16::from_be_bytes(b);
        // 0 asks the device to choose; 0xffff is reserved.
        if id != 0 && id != 0xffff {
            return Ok(id);
        }
    }
}

fn public_key(pk: &asymmetric::PublicKey, id: u16) -> Result<PublicKey> {
    let bad = |why: String| Error::backend("yubihsm", "PUBLIC_KEY", format!("key {id:04x}: {why}"));
    match pk.algorithm {
        asymmetric::Algorithm::EcP256 => {
            if pk.bytes.len() != 64 {
                return Err(bad(format!(
                    "P-256 public key of {} bytes (expected x || y, 64)",
                    pk.bytes.len()
                )));
            }
            // The device gives x || y without SEC1's 0x04 tag.
            let mut sec1 = Vec::with_capacity(65);
            sec1.push(0x04);
            sec1.extend_from_slice(&pk.bytes);
            PublicKey::from_sec1(&sec1).map_err(|e| bad(e.to_string()))
        }
        asymmetric::Algorithm::Ed25519 => {
            PublicKey::from_ed25519(&pk.bytes).map_err(|e| bad(e.to_string()))
        }
        other => Err(bad(format!("unexpected algorithm {other:?}"))),
    }
}

fn label_of(info: &object::Info) -> String {
    match info.label.try_as_str() {
        Ok(s) => s.to_owned(),
        Err(_) => {
            let raw = info.label.0.iter().take_while(|b| **b != 0).copied();
            String::from_utf8_lossy(&raw.collect::<Vec<u8>>()).into_owned()
        }
    }
}

impl Link {
    /// The object info of a key this vault may use, and what it is for.
    fn key(&mut self, policy: Policy, op: &str, id: u16) -> Result<(object::Info, Algorithm)> {
        let info = self.call(op, Some(id), Retry::Safe, |c| {
            c.get_object_info(id, object::Type::AsymmetricKey)
        })?;
        let not_ours = |why: &str| Error::KeyNotFound(format!("{id:04x}: {why}"));
        if !info.domains.intersects(policy.domains) {
            return Err(not_ours("the object is outside this vault's domains"));
        }
        match caps::classify(&info) {
            Some(algorithm) => Ok((info, algorithm)),
            None => Err(not_ours(&format!(
                "the object is not a keywarden key (algorithm {:?}, capabilities {})",
                info.algorithm,
                caps::name(info.capabilities)
            ))),
        }
    }

    fn describe(&mut self, policy: Policy, op: &str, id: u16) -> Result<KeyInfo> {
        let (info, algorithm) = self.key(policy, op, id)?;
        let pk = self.call(op, Some(id), Retry::Safe, |c| c.get_public_key(id))?;
        Ok(KeyInfo {
            key_ref: key_ref(id),
            algorithm,
            label: label_of(&info),
            public_key: public_key(&pk, id)?,
        })
    }

    /// Refuses an operation the key's capabilities do not allow, before sending it.
    fn require(info: &object::Info, id: u16, needed: Capability, op: &str) -> Result<()> {
        if info.capabilities.contains(needed) {
            Ok(())
        } else {
            Err(Error::PermissionDenied(format!(
                "key {id:04x} has capabilities {}; {op} needs {} (refused before sending)",
                caps::name(info.capabilities),
                caps::name(needed)
            )))
        }
    }

    fn generate(&mut self, policy: Policy, spec: &KeySpec) -> Result<KeyInfo> {
        let (algorithm, _) = caps::for_algorithm(spec.algorithm())?;
        let capabilities = caps::for_spec(spec, policy.extra)?;
        check_label(spec.label())?;
        let label = object::Label::from_bytes(spec.label().as_bytes())
            .map_err(|e| Error::InvalidInput(format!("key label: {e}")))?;
        for _ in 0..ID_TRIES {
            let id = random_id()?;
            // MockHsm panics on an id in use, and the device refuses it: look first.
            match self.call_raw(Retry::Safe, |c| {
                c.get_object_info(id, object::Type::AsymmetricKey)
            }) {
                Ok(_) => continue,
                Err(e) if device_error(&e) == Some(yubihsm::device::ErrorKind::ObjectNotFound) => {}
                Err(e) => return Err(crate::error::map(&e, &self.cx("generate", None))),
            }
            match self.call_raw(Retry::Never, |c| {
                c.generate_asymmetric_key(
                    id,
                    label.clone(),
                    policy.domains,
                    capabilities,
                    algorithm,
                )
            }) {
                Ok(_) => return self.describe(policy, "generate", id),
                Err(e) if device_error(&e) == Some(yubihsm::device::ErrorKind::ObjectExists) => {}
                Err(e) => return Err(crate::error::map(&e, &self.cx("generate", Some(id)))),
            }
        }
        Err(Error::backend(
            "yubihsm",
            "NO_FREE_ID",
            format!(
                "{}: no free object id after {ID_TRIES} random tries",
                self.name
            ),
        ))
    }

    fn sign(&mut self, policy: Policy, id: u16, message: &[u8]) -> Result<Signature> {
        let (info, algorithm) = self.key(policy, "sign", id)?;
        match algorithm {
            Algorithm::EcdsaP256Sha256 => {
                Self::require(&info, id, Capability::SIGN_ECDSA, "sign")?;
                let digest = Sha256::digest(message).to_vec();
                let der = self.call("sign", Some(id), Retry::Safe, |c| {
                    c.sign_ecdsa_prehash_raw(id, digest.clone())
                })?;
                Signature::from_der(&der).map_err(|e| {
                    Error::backend("yubihsm", "SIGNATURE", format!("key {id:04x}: {e}"))
                })
            }
            Algorithm::Ed25519 => {
                Self::require(&info, id, Capability::SIGN_EDDSA, "sign")?;
                if message.len() > MAX_ED25519_MESSAGE_LEN {
                    return Err(Error::InvalidInput(format!(
                        "message is {} bytes; the YubiHSM 2 signs Ed25519 messages of at most \
                         {MAX_ED25519_MESSAGE_LEN} bytes",
                        message.len()
                    )));
                }
                let sig = self.call("sign", Some(id), Retry::Safe, |c| {
                    c.sign_ed25519(id, message.to_vec())
                })?;
                Signature::from_bytes(Algorithm::Ed25519, &sig.to_bytes()).map_err(|e| {
                    Error::backend("yubihsm", "SIGNATURE", format!("key {id:04x}: {e}"))
                })
            }
            other => Err(Error::PermissionDenied(format!(
                "key {id:04x} is an {other} key with capabilities {}; it cannot sign \
                 (refused before sending)",
                caps::name(info.capabilities)
            ))),
        }
    }

    fn agree(&mut self, policy: Policy, id: u16, peer: &PublicKey) -> Result<SharedSecret> {
        let point = ecdh::peer_point(peer)?;
        let (info, algorithm) = self.key(policy, "agree", id)?;
        if algorithm != Algorithm::EcdhP256 {
            return Err(Error::PermissionDenied(format!(
                "key {id:04x} is an {algorithm} key with capabilities {}; it cannot do ECDH \
                 (refused before sending)",
                caps::name(info.capabilities)
            )));
        }
        Self::require(&info, id, Capability::DERIVE_ECDH, "agree")?;
        let answer = self.call("agree", Some(id), Retry::Safe, |c| {
            c.derive_ecdh(id, point.clone())
        })?;
        ecdh::shared_secret(&answer)
    }

    fn destroy(&mut self, policy: Policy, id: u16) -> Result<()> {
        self.key(policy, "destroy", id)?;
        self.call("destroy", Some(id), Retry::Never, |c| {
            c.delete_object(id, object::Type::AsymmetricKey)
        })
    }

    fn list(&mut self, policy: Policy) -> Result<Vec<KeyInfo>> {
        let entries = self.call("list", None, Retry::Safe, |c| {
            c.list_objects(&[object::Filter::Type(object::Type::AsymmetricKey)])
        })?;
        let mut keys = Vec::new();
        for entry in entries {
            if entry.object_type != object::Type::AsymmetricKey {
                continue;
            }
            match self.describe(policy, "list", entry.object_id) {
                Ok(k) => keys.push(k),
                // Not ours, or deleted since the listing.
                Err(Error::KeyNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(keys)
    }

    /// Opens the session and reads which algorithms the device has.
    fn discover(&mut self) -> Result<Vec<Algorithm>> {
        let info = self.call("open", None, Retry::Safe, |c| c.device_info())?;
        let has = |a: yubihsm::Algorithm| info.algorithms.contains(&a);
        let mut algorithms = Vec::new();
        if has(yubihsm::Algorithm::Asymmetric(
            asymmetric::Algorithm::EcP256,
        )) {
            algorithms.push(Algorithm::EcdsaP256Sha256);
            if has(yubihsm::Algorithm::Ecdh(yubihsm::ecdh::Algorithm::Ecdh)) {
                algorithms.push(Algorithm::EcdhP256);
            }
        }
        if has(yubihsm::Algorithm::Asymmetric(
            asymmetric::Algorithm::Ed25519,
        )) {
            algorithms.push(Algorithm::Ed25519);
        }
        Ok(algorithms)
    }
}

impl YubiHsmVault {
    /// Opens the YubiHSM 2 that `config` names: checks the config, connects, authenticates
    /// (a wrong password fails here with `AuthenticationFailed`, an unreachable connector with
    /// `DeviceUnavailable`) and reads the device's algorithms.
    pub async fn open(config: &Config) -> Result<Self> {
        config.validate()?;
        let connector = connector_for(&config.connector)?;
        Self::open_with_connector(config, connector).await
    }

    /// Like [`open`](Self::open), over a connector the caller built (the config's `connector`
    /// then only names the backend). Tests use it to share one MockHsm between the vault and a
    /// probe.
    pub async fn open_with_connector(config: &Config, connector: Connector) -> Result<Self> {
        config.validate()?;
        let policy = Policy {
            domains: config.domain_set()?,
            extra: config.extra_capabilities()?,
        };
        let name = format!("yubihsm:{}", config.connector);
        let credentials = Credentials::from_password(
            config.auth_key_id,
            config.password.expose_secret().as_bytes(),
        );
        let link = Link::new(connector, credentials, name.clone(), config.auth_key_id);
        let device = Device::spawn(link)?;
        let algorithms = device.run(|link| link.discover()).await?;
        if !algorithms.contains(&Algorithm::EcdsaP256Sha256) {
            return Err(Error::UnsupportedAlgorithm(format!(
                "{name}: the device does not offer EC P-256 keys"
            )));
        }
        Ok(Self {
            device,
            info: BackendInfo {
                name,
                algorithms,
                hardware_resident: true,
            },
            policy,
        })
    }

    /// Runs `f` on the device thread with this vault's policy.
    async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Link, Policy) -> Result<T> + Send + 'static,
    {
        let policy = self.policy;
        self.device.run(move |link| f(link, policy)).await
    }
}

#[async_trait]
impl Vault for YubiHsmVault {
    fn info(&self) -> BackendInfo {
        self.info.clone()
    }

    async fn generate(&self, spec: &KeySpec) -> Result<KeyInfo> {
        if !self.info.supports(spec.algorithm()) {
            return Err(Error::UnsupportedAlgorithm(format!(
                "{}: {} is not offered by this device",
                self.info.name,
                spec.algorithm()
            )));
        }
        let spec = spec.clone();
        self.run(move |link, policy| link.generate(policy, &spec))
            .await
    }

    async fn describe(&self, key: &KeyRef) -> Result<KeyInfo> {
        let id = key_id(key)?;
        self.run(move |link, policy| link.describe(policy, "describe", id))
            .await
    }

    async fn sign(&self, key: &KeyRef, message: &[u8]) -> Result<Signature> {
        check_message(message)?;
        let id = key_id(key)?;
        let message = message.to_vec();
        self.run(move |link, policy| link.sign(policy, id, &message))
            .await
    }

    async fn agree(&self, key: &KeyRef, peer: &PublicKey) -> Result<SharedSecret> {
        let id = key_id(key)?;
        if peer.kind() != KeyKind::P256 {
            return Err(Error::InvalidInput(format!(
                "ECDH peer key must be a P-256 point, got a {:?} key",
                peer.kind()
            )));
        }
        let peer = peer.clone();
        self.run(move |link, policy| link.agree(policy, id, &peer))
            .await
    }

    async fn destroy(&self, key: &KeyRef) -> Result<()> {
        let id = key_id(key)?;
        self.run(move |link, policy| link.destroy(policy, id)).await
    }

    async fn list(&self) -> Result<Vec<KeyInfo>> {
        self.run(|link, policy| link.list(policy)).await
    }
}
