//! The key service: named, versioned keys in one or more backends, every request authorized by
//! Cedar and written to the audit log before it is answered.
//!
//! [`Service`] is the whole service logic, transport-free; [`api`] puts it on gRPC and
//! [`server`] on a Unix socket.

pub mod api;
pub mod audit;
pub mod backends;
pub mod config;
pub mod hardening;
pub mod identity;
pub mod metrics;
pub mod policy;
pub mod server;
pub mod tls;

use std::collections::BTreeMap;
use std::sync::Arc;

use keywarden_registry::{KeyRecord, KeyState, NewKey, Registry, VersionState};
use keywarden_vault::{Algorithm, KeyRef, KeySpec, PublicKey, SharedSecret, Signature, Vault};
use sha2::{Digest as _, Sha256};

use self::audit::{AuditLog, Entry};
use self::identity::Caller;
use self::metrics::{Metrics, Outcome};
use self::policy::{Action, KeyFacts, Policy, Verdict};

/// What a request can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The backend refused or failed.
    #[error(transparent)]
    Vault(#[from] keywarden_vault::Error),
    /// The registry refused (unknown key, wrong state, name taken…).
    #[error(transparent)]
    Registry(#[from] keywarden_registry::Error),
    /// Policy denied the request.
    #[error("permission denied: {action} on key {key:?} is not permitted for {caller}")]
    Denied {
        /// The action.
        action: &'static str,
        /// The key.
        key: String,
        /// The caller (`uid 1000`, `client spiffe://…`).
        caller: String,
    },
    /// The key is in a state that does not allow the operation.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The key was destroyed; only its tombstone remains.
    #[error("key {0:?} was destroyed")]
    Destroyed(String),
    /// The request is malformed.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The audit log could not be written, so the request is refused.
    #[error("request refused: {0}")]
    Audit(#[from] audit::AuditError),
}

/// A configured backend.
#[derive(Clone, Debug)]
pub struct Backend {
    /// The vault.
    pub vault: Arc<dyn Vault>,
    /// `sim`, `pkcs11`, …
    pub kind: &'static str,
}

/// How long a registry record read by this service is reused before it is read again. Writes
/// made through this service take effect at once; the bound matters only when several service
/// nodes share one registry (a key disabled on one node stops signing on the others within it).
pub const RECORD_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

type RecordCache = std::collections::HashMap<String, (std::time::Instant, Arc<KeyRecord>)>;

/// How old a pending key version on a shared registry must be before a starting node settles
/// it (a creation takes seconds; this leaves room for slow HSMs and clock skew).
pub const RECOVERY_GRACE_SECS: i64 = 300;

/// The service.
#[derive(Debug)]
pub struct Service {
    backends: BTreeMap<String, Backend>,
    default_backend: String,
    registry: Arc<dyn Registry>,
    policy: Policy,
    audit: AuditLog,
    records: std::sync::RwLock<RecordCache>,
    metrics: Metrics,
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn random_hsm_label() -> Result<String, ServiceError> {
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce)
        .map_err(|e| ServiceError::Invalid(format!("random source unavailable: {e}")))?;
    Ok(format!("kw-{}", hex::encode(nonce)))
}

const MAX_LABELS: usize = 32;

/// The owner uid of keys created by remote (TLS) clients: `(uid_t)-1`, which no account has,
/// so the local "owner" rule never applies to them on any node.
pub const REMOTE_OWNER_UID: u32 = u32::MAX;

/// The label that records which TLS client created a key (`Keywarden::Client` identity). Labels
/// under `keywarden.` are the service's own: a caller cannot set them.
pub const CREATOR_LABEL: &str = "keywarden.creator";

fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), ServiceError> {
    if labels.len() > MAX_LABELS {
        return Err(ServiceError::Invalid(format!(
            "{} labels; at most {MAX_LABELS} are allowed",
            labels.len()
        )));
    }
    for (k, v) in labels {
        let key_ok = !k.is_empty()
            && k.len() <= 64
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c));
        if !key_ok {
            return Err(ServiceError::Invalid(format!(
                "label key {k:?}: 1-64 characters of a-z A-Z 0-9 . _ - /"
            )));
        }
        if k.to_ascii_lowercase().starts_with("keywarden.") {
            return Err(ServiceError::Invalid(format!(
                "label key {k:?}: keys under \"keywarden.\" are reserved for the service"
            )));
        }
        if v.len() > 256 || v.chars().any(char::is_control) {
            return Err(ServiceError::Invalid(format!(
                "label {k:?}: the value must be at most 256 bytes without control characters"
            )));
        }
    }
    Ok(())
}

fn facts(record: &KeyRecord) -> KeyFacts<'_> {
    KeyFacts {
        name: &record.name,
        algorithm: &record.algorithm,
        backend: &record.backend,
        owner_uid: record.owner_uid,
        state: match record.state {
            KeyState::Enabled => "enabled",
            KeyState::Disabled => "disabled",
            KeyState::Destroyed => "destroyed",
        },
        labels: &record.labels,
    }
}

/// What one request leaves in the audit log.
struct Trail<'a> {
    caller: &'a Caller,
    action: Action,
    key: &'a str,
    version: Option<u32>,
    verdict: Option<Verdict>,
    digest: Option<String>,
}

impl Service {
    /// Assembles a service from opened parts and finishes any key creation a crash
    /// interrupted.
    pub async fn new(
        backends: BTreeMap<String, Backend>,
        default_backend: String,
        registry: Arc<dyn Registry>,
        policy: Policy,
        audit: AuditLog,
        shared_registry: bool,
    ) -> Result<Self, ServiceError> {
        let service = Self {
            backends,
            default_backend,
            registry,
            policy,
            audit,
            records: std::sync::RwLock::default(),
            metrics: Metrics::new(),
        };
        service.recover(shared_registry).await?;
        Ok(service)
    }

    /// The policy engine (for reloads).
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The backends.
    pub fn backends(&self) -> &BTreeMap<String, Backend> {
        &self.backends
    }

    /// The default backend's name.
    pub fn default_backend(&self) -> &str {
        &self.default_backend
    }

    /// What the service counts (served by [`metrics::serve`] when enabled).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Appends one audit line and records how long that took.
    fn append_audit(&self, entry: &Entry<'_>) -> Result<(), audit::AuditError> {
        let started = std::time::Instant::now();
        let written = self.audit.append(entry);
        self.metrics.audit_write(started.elapsed());
        written
    }

    /// Phase two of crash-safe creation, after a crash: a pending version whose HSM key exists
    /// (found by the label chosen before it was made) is completed; one without is dropped.
    ///
    /// On a registry shared with other nodes, a young pending version may be another node's
    /// creation in progress: only versions older than [`RECOVERY_GRACE_SECS`] are settled.
    async fn recover(&self, shared_registry: bool) -> Result<(), ServiceError> {
        let now = now();
        let pending: Vec<_> = self
            .registry
            .pending()
            .await?
            .into_iter()
            .filter(|p| !shared_registry || now - p.created_at >= RECOVERY_GRACE_SECS)
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let mut listed: BTreeMap<String, Vec<keywarden_vault::KeyInfo>> = BTreeMap::new();
        for p in pending {
            let Some(backend) = self.backends.get(&p.backend) else {
                tracing::warn!(key = %p.name, version = p.version, backend = %p.backend, "pending key version on a backend that is no longer configured; left pending");
                continue;
            };
            if !listed.contains_key(&p.backend) {
                listed.insert(p.backend.clone(), backend.vault.list().await?);
            }
            let found = listed
                .get(&p.backend)
                .and_then(|keys| keys.iter().find(|k| k.label == p.hsm_label));
            match found {
                Some(info) => {
                    self.registry
                        .complete(
                            &p.name,
                            p.version,
                            info.key_ref.as_bytes(),
                            &info.public_key.to_spki_der(),
                        )
                        .await?;
                    tracing::info!(key = %p.name, version = p.version, "recovered a key version created before a crash");
                }
                None => {
                    self.registry.abort(&p.name, p.version).await?;
                    tracing::info!(key = %p.name, version = p.version, "dropped a key version whose creation a crash interrupted");
                }
            }
        }
        Ok(())
    }

    fn backend(&self, name: &str) -> Result<&Backend, ServiceError> {
        self.backends.get(name).ok_or_else(|| {
            ServiceError::Invalid(format!(
                "unknown backend {name:?}; configured: {}",
                self.backends.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    fn write_audit(
        &self,
        trail: &Trail<'_>,
        error: Option<&ServiceError>,
    ) -> Result<(), ServiceError> {
        let (decision, policies): (&str, &[String]) = match &trail.verdict {
            Some(v) if v.allowed => ("allow", &v.policies),
            Some(v) => ("deny", &v.policies),
            None => ("none", &[]),
        };
        let result_text = match error {
            None => "ok".to_string(),
            Some(e) => format!("error: {e}"),
        };
        self.append_audit(&Entry {
            caller: trail.caller,
            action: trail.action.name(),
            key: Some(trail.key),
            version: trail.version,
            decision,
            policies,
            result: &result_text,
            message_sha256: trail.digest.as_deref(),
        })?;
        Ok(())
    }

    /// Runs `op` under policy and audit: decides on `record`, and whatever happens, writes one
    /// audit line before returning. If the line cannot be written, the request fails. Every
    /// request is counted and timed here, by operation, backend and result.
    async fn guarded<T, F, Fut>(
        &self,
        mut trail: Trail<'_>,
        record: &KeyFacts<'_>,
        op: F,
    ) -> Result<T, ServiceError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(T, Option<u32>), ServiceError>>,
    {
        let started = std::time::Instant::now();
        let verdict = self.policy.decide(trail.caller, trail.action, record);
        let allowed = verdict.allowed;
        if !verdict.errors.is_empty() {
            tracing::warn!(errors = ?verdict.errors, "policy evaluation errors");
        }
        trail.verdict = Some(verdict);
        let result = if allowed {
            op().await.map(|(v, version)| {
                if version.is_some() {
                    trail.version = version;
                }
                v
            })
        } else {
            Err(ServiceError::Denied {
                action: trail.action.name(),
                key: trail.key.to_owned(),
                caller: trail.caller.describe(),
            })
        };
        if matches!(
            trail.action,
            Action::CreateKey
                | Action::RotateKey
                | Action::DisableKey
                | Action::EnableKey
                | Action::DestroyKey
        ) {
            self.forget(trail.key);
        }
        let audited = self.write_audit(&trail, result.as_ref().err());
        let outcome = match (&result, &audited) {
            (Err(ServiceError::Denied { .. }), _) => Outcome::Denied,
            (Ok(_), Ok(())) => Outcome::Ok,
            _ => Outcome::Error,
        };
        self.metrics.request(
            trail.action.name(),
            record.backend,
            outcome,
            started.elapsed(),
        );
        audited?;
        result
    }

    fn cached(&self, name: &str) -> Option<Arc<KeyRecord>> {
        let map = self.records.read().unwrap_or_else(|p| p.into_inner());
        map.get(name)
            .filter(|(at, _)| at.elapsed() < RECORD_CACHE_TTL)
            .map(|(_, r)| Arc::clone(r))
    }

    fn forget(&self, name: &str) {
        self.records
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    /// Looks a key up (from the short-lived cache when fresh); a miss is audited too.
    async fn record(
        &self,
        caller: &Caller,
        action: Action,
        name: &str,
    ) -> Result<Arc<KeyRecord>, ServiceError> {
        if let Some(r) = self.cached(name) {
            return Ok(r);
        }
        let started = std::time::Instant::now();
        match self.registry.get(name).await {
            Ok(r) => {
                let r = Arc::new(r);
                self.records
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name.to_owned(), (std::time::Instant::now(), Arc::clone(&r)));
                Ok(r)
            }
            Err(e) => {
                // Unknown key (or registry failure): no backend to name.
                let err = ServiceError::from(e);
                let audited = self.write_audit(&Self::trail(caller, action, name), Some(&err));
                self.metrics
                    .request(action.name(), "", Outcome::Error, started.elapsed());
                audited?;
                Err(err)
            }
        }
    }

    fn trail<'a>(caller: &'a Caller, action: Action, key: &'a str) -> Trail<'a> {
        Trail {
            caller,
            action,
            key,
            version: None,
            verdict: None,
            digest: None,
        }
    }

    /// Creates a key named `name` owned by the caller.
    pub async fn create(
        &self,
        caller: &Caller,
        name: &str,
        algorithm: &str,
        backend: Option<&str>,
        labels: BTreeMap<String, String>,
        expires_at: Option<i64>,
    ) -> Result<KeyRecord, ServiceError> {
        let algorithm: Algorithm = algorithm.parse()?;
        let backend_name = backend
            .filter(|b| !b.is_empty())
            .unwrap_or(&self.default_backend)
            .to_owned();
        let backend = self.backend(&backend_name)?.clone();
        if !backend.vault.info().supports(algorithm) {
            return Err(keywarden_vault::Error::UnsupportedAlgorithm(format!(
                "backend {backend_name:?} cannot generate {algorithm} keys"
            ))
            .into());
        }
        check_labels(&labels)?;
        let mut labels = labels;
        let owner_uid = match caller {
            Caller::Local(c) => c.uid,
            // A remote client has no uid: the key gets an owner uid no local account has, and
            // the client's identity is recorded in a label only the service can set.
            Caller::Remote(c) => {
                labels.insert(CREATOR_LABEL.to_owned(), c.identity.clone());
                REMOTE_OWNER_UID
            }
        };
        let now = now();
        if let Some(t) = expires_at
            && t <= now
        {
            return Err(ServiceError::Invalid(format!(
                "expires_at {t} is in the past"
            )));
        }
        let algorithm_name = algorithm.name().to_owned();
        let proposed = KeyFacts {
            name,
            algorithm: &algorithm_name,
            backend: &backend_name,
            owner_uid,
            state: "new",
            labels: &labels,
        };
        let trail = Self::trail(caller, Action::CreateKey, name);
        let labels_for_op = labels.clone();
        let (algorithm_for_op, backend_for_op) = (algorithm_name.clone(), backend_name.clone());
        self.guarded(trail, &proposed, || async move {
            let hsm_label = random_hsm_label()?;
            let pending = self
                .registry
                .begin_create(NewKey {
                    name: name.to_owned(),
                    algorithm: algorithm_for_op,
                    backend: backend_for_op,
                    owner_uid,
                    labels: labels_for_op,
                    expires_at,
                    hsm_label: hsm_label.clone(),
                    now,
                })
                .await?;
            let record = self
                .make_version(&backend, algorithm, name, pending.version, &hsm_label)
                .await?;
            Ok((record, Some(pending.version)))
        })
        .await
    }

    /// Generates the HSM key for a pending version and completes it; drops the version if the
    /// backend fails.
    async fn make_version(
        &self,
        backend: &Backend,
        algorithm: Algorithm,
        name: &str,
        version: u32,
        hsm_label: &str,
    ) -> Result<KeyRecord, ServiceError> {
        let spec = KeySpec::new(algorithm, hsm_label)?;
        match backend.vault.generate(&spec).await {
            Ok(info) => {
                let done = self
                    .registry
                    .complete(
                        name,
                        version,
                        info.key_ref.as_bytes(),
                        &info.public_key.to_spki_der(),
                    )
                    .await;
                if done.is_err() {
                    // The version went away meanwhile (the key was destroyed): leave no orphan.
                    if let Err(e) = backend.vault.destroy(&info.key_ref).await {
                        tracing::error!(key = %name, version, error = %e, "could not destroy an HSM key the registry refused");
                    }
                }
                Ok(done?)
            }
            Err(e) => {
                if let Err(abort) = self.registry.abort(name, version).await {
                    tracing::error!(key = %name, version, error = %abort, "could not drop a pending version after a backend failure");
                }
                Err(e.into())
            }
        }
    }

    /// Adds a version to an enabled key; new signatures use it.
    pub async fn rotate(&self, caller: &Caller, name: &str) -> Result<KeyRecord, ServiceError> {
        let record = self.record(caller, Action::RotateKey, name).await?;
        let trail = Self::trail(caller, Action::RotateKey, name);
        self.guarded(trail, &facts(&record), || async {
            if record.state != KeyState::Enabled {
                return Err(ServiceError::FailedPrecondition(format!(
                    "key {name:?} is {}; only an enabled key can be rotated",
                    record.state
                )));
            }
            let algorithm: Algorithm = record.algorithm.parse()?;
            let backend = self.backend(&record.backend)?.clone();
            let hsm_label = random_hsm_label()?;
            let pending = self
                .registry
                .begin_rotate(name, hsm_label.clone(), now())
                .await?;
            let rec = self
                .make_version(&backend, algorithm, name, pending.version, &hsm_label)
                .await?;
            Ok((rec, Some(pending.version)))
        })
        .await
    }

    /// Enables or disables a key.
    pub async fn set_enabled(
        &self,
        caller: &Caller,
        name: &str,
        enabled: bool,
    ) -> Result<KeyRecord, ServiceError> {
        let action = if enabled {
            Action::EnableKey
        } else {
            Action::DisableKey
        };
        let record = self.record(caller, action, name).await?;
        let trail = Self::trail(caller, action, name);
        let state = if enabled {
            KeyState::Enabled
        } else {
            KeyState::Disabled
        };
        self.guarded(trail, &facts(&record), || async {
            Ok((self.registry.set_state(name, state).await?, None))
        })
        .await
    }

    /// Destroys a disabled key: its HSM objects first, then the registry keeps a tombstone.
    pub async fn destroy(&self, caller: &Caller, name: &str) -> Result<KeyRecord, ServiceError> {
        let record = self.record(caller, Action::DestroyKey, name).await?;
        let trail = Self::trail(caller, Action::DestroyKey, name);
        self.guarded(trail, &facts(&record), || async {
            if record.state != KeyState::Disabled {
                return Err(ServiceError::FailedPrecondition(format!(
                    "key {name:?} is {}; disable it before destroying it",
                    record.state
                )));
            }
            let backend = self.backend(&record.backend)?.clone();
            for v in &record.versions {
                if let Some(key_ref) = &v.key_ref {
                    match backend.vault.destroy(&KeyRef::new(key_ref.clone())).await {
                        Ok(()) | Err(keywarden_vault::Error::KeyNotFound(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            self.registry.destroy(name).await?;
            Ok((self.registry.get(name).await?, None))
        })
        .await
    }

    /// Describes a key.
    pub async fn get(&self, caller: &Caller, name: &str) -> Result<KeyRecord, ServiceError> {
        let record = self.record(caller, Action::GetKey, name).await?;
        let trail = Self::trail(caller, Action::GetKey, name);
        let r = KeyRecord::clone(&record);
        self.guarded(trail, &facts(&record), || async move { Ok((r, None)) })
            .await
    }

    /// Every key the caller may see (`GetKey` permitted), one audit line for the listing.
    pub async fn list(
        &self,
        caller: &Caller,
        include_destroyed: bool,
    ) -> Result<Vec<KeyRecord>, ServiceError> {
        let started = std::time::Instant::now();
        let all = self.registry.list().await;
        let result = all.map_err(ServiceError::from).map(|keys| {
            keys.into_iter()
                .filter(|k| include_destroyed || k.state != KeyState::Destroyed)
                .filter(|k| {
                    self.policy
                        .decide(caller, Action::GetKey, &facts(k))
                        .allowed
                })
                .collect::<Vec<_>>()
        });
        let audited = self.append_audit(&Entry {
            caller,
            action: "ListKeys",
            key: None,
            version: None,
            decision: "allow",
            policies: &[],
            result: if result.is_ok() { "ok" } else { "error" },
            message_sha256: None,
        });
        let outcome = if result.is_ok() && audited.is_ok() {
            Outcome::Ok
        } else {
            Outcome::Error
        };
        self.metrics
            .request("ListKeys", "", outcome, started.elapsed());
        audited?;
        result
    }

    /// A version's public key (0 = newest ready).
    pub async fn public_key(
        &self,
        caller: &Caller,
        name: &str,
        version: u32,
    ) -> Result<(u32, Algorithm, PublicKey), ServiceError> {
        let record = self.record(caller, Action::GetPublicKey, name).await?;
        let trail = Self::trail(caller, Action::GetPublicKey, name);
        self.guarded(trail, &facts(&record), || async {
            let v = if version == 0 {
                record.latest_ready()
            } else {
                record
                    .version(version)
                    .filter(|v| v.state != VersionState::Pending)
            }
            .ok_or_else(|| {
                ServiceError::FailedPrecondition(format!("key {name:?} has no version {version}"))
            })?;
            let spki = v.public_key.as_deref().unwrap_or_default();
            let pk = PublicKey::from_spki_der(spki)?;
            Ok(((v.version, record.algorithm.parse()?, pk), Some(v.version)))
        })
        .await
    }

    fn usable(record: &KeyRecord, doing: &str) -> Result<(), ServiceError> {
        if record.state == KeyState::Destroyed {
            return Err(ServiceError::Destroyed(record.name.clone()));
        }
        if record.state != KeyState::Enabled {
            return Err(ServiceError::FailedPrecondition(format!(
                "key {:?} is {}; {doing} refused",
                record.name, record.state
            )));
        }
        if let Some(t) = record.expires_at
            && t <= now()
        {
            let at = time::OffsetDateTime::from_unix_timestamp(t)
                .ok()
                .and_then(|d| {
                    d.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_else(|| t.to_string());
            return Err(ServiceError::FailedPrecondition(format!(
                "key {:?} expired at {at}; {doing} refused",
                record.name
            )));
        }
        Ok(())
    }

    /// Signs with the newest version of an enabled, unexpired key.
    pub async fn sign(
        &self,
        caller: &Caller,
        name: &str,
        message: &[u8],
    ) -> Result<(Signature, u32), ServiceError> {
        keywarden_vault::check_message(message)?;
        let record = self.record(caller, Action::Sign, name).await?;
        let mut trail = Self::trail(caller, Action::Sign, name);
        trail.digest = Some(sha256_hex(message));
        self.guarded(trail, &facts(&record), || async {
            Self::usable(&record, "signing")?;
            let algorithm: Algorithm = record.algorithm.parse()?;
            if !algorithm.is_signing() {
                return Err(keywarden_vault::Error::UnsupportedAlgorithm(format!(
                    "key {name:?} is {algorithm}; it cannot sign"
                ))
                .into());
            }
            let v = record.latest_ready().ok_or_else(|| {
                ServiceError::FailedPrecondition(format!("key {name:?} has no ready version"))
            })?;
            let key_ref = KeyRef::new(v.key_ref.clone().unwrap_or_default());
            let backend = self.backend(&record.backend)?;
            let sig = backend.vault.sign(&key_ref, message).await?;
            Ok(((sig, v.version), Some(v.version)))
        })
        .await
    }

    /// Verifies in software against every ready version, newest first.
    pub async fn verify(
        &self,
        caller: &Caller,
        name: &str,
        message: &[u8],
        signature: &[u8],
    ) -> Result<Option<u32>, ServiceError> {
        if message.len() > keywarden_vault::MAX_MESSAGE_LEN {
            keywarden_vault::check_message(message)?;
        }
        let record = self.record(caller, Action::Verify, name).await?;
        let mut trail = Self::trail(caller, Action::Verify, name);
        trail.digest = Some(sha256_hex(message));
        self.guarded(trail, &facts(&record), || async {
            let algorithm: Algorithm = record.algorithm.parse()?;
            if !algorithm.is_signing() {
                return Err(keywarden_vault::Error::UnsupportedAlgorithm(format!(
                    "key {name:?} is {algorithm}; it has no signatures to verify"
                ))
                .into());
            }
            let sig = match (algorithm, signature.len()) {
                (Algorithm::EcdsaP256Sha256, 64) | (Algorithm::Ed25519, _) => {
                    Signature::from_bytes(algorithm, signature)?
                }
                (Algorithm::EcdsaP256Sha256, _) => Signature::from_der(signature)?,
                _ => return Err(ServiceError::Invalid("signature of unknown form".into())),
            };
            for v in record
                .versions
                .iter()
                .rev()
                .filter(|v| v.state == VersionState::Ready)
            {
                let Some(spki) = &v.public_key else { continue };
                let pk = PublicKey::from_spki_der(spki)?;
                if keywarden_vault::verify::verify(&pk, message, &sig).is_ok() {
                    return Ok((Some(v.version), Some(v.version)));
                }
            }
            Ok((None, None))
        })
        .await
    }

    /// ECDH with the newest version of an enabled ECDH key.
    pub async fn agree(
        &self,
        caller: &Caller,
        name: &str,
        peer: &[u8],
    ) -> Result<(SharedSecret, u32), ServiceError> {
        let record = self.record(caller, Action::Agree, name).await?;
        let trail = Self::trail(caller, Action::Agree, name);
        self.guarded(trail, &facts(&record), || async {
            Self::usable(&record, "key agreement")?;
            let peer = match peer.first() {
                Some(0x30) => PublicKey::from_spki_der(peer)?,
                _ => PublicKey::from_sec1(peer)?,
            };
            let algorithm: Algorithm = record.algorithm.parse()?;
            if algorithm != Algorithm::EcdhP256 {
                return Err(keywarden_vault::Error::UnsupportedAlgorithm(format!(
                    "key {name:?} is {algorithm}; it cannot do key agreement"
                ))
                .into());
            }
            let v = record.latest_ready().ok_or_else(|| {
                ServiceError::FailedPrecondition(format!("key {name:?} has no ready version"))
            })?;
            let key_ref = KeyRef::new(v.key_ref.clone().unwrap_or_default());
            let secret = self
                .backend(&record.backend)?
                .vault
                .agree(&key_ref, &peer)
                .await?;
            Ok(((secret, v.version), Some(v.version)))
        })
        .await
    }

    /// True when the backend answers (an unknown-key lookup comes back as `KeyNotFound`).
    pub async fn backend_healthy(backend: &Backend) -> bool {
        matches!(
            backend
                .vault
                .describe(&KeyRef::new(b"keywarden-health-probe".to_vec()))
                .await,
            Err(keywarden_vault::Error::KeyNotFound(_)) | Ok(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_cannot_set_the_services_own_labels() {
        for key in [
            "keywarden.creator",
            "Keywarden.creator",
            "KEYWARDEN.anything",
        ] {
            let labels: BTreeMap<_, _> = [(key.to_owned(), "spiffe://x/victim".to_owned())].into();
            let e = check_labels(&labels).unwrap_err().to_string();
            assert!(e.contains("reserved for the service"), "{key}: {e}");
        }
        let fine: BTreeMap<_, _> = [("keywardenish".to_owned(), "v".to_owned())].into();
        check_labels(&fine).unwrap();
    }
}
