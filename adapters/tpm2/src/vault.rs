//! [`Tpm2Vault`]: the [`Vault`] implementation.

use core::fmt;
use std::sync::{Mutex, mpsc};
use std::time::Duration;

use keywarden_vault::{
    Algorithm, BackendInfo, Error, KeyInfo, KeyKind, KeyRef, KeySpec, PublicKey, Result,
    SharedSecret, Signature, Vault, async_trait, check_message,
};
use sha2::{Digest as _, Sha256};
use tokio::sync::oneshot;

use crate::config::Config;
use crate::error::Tpm2Error;
use crate::worker::{self, Msg, Worker};

/// How long dropping a vault waits for the worker to close the TPM context.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A TPM 2.0 as a keywarden [`Vault`].
///
/// Keys are children of a primary storage key (P-256, from a fixed template, or a configured
/// persistent handle); their public and encrypted private areas are kept in the key directory,
/// one file per key, named by the [`KeyRef`]. One thread owns the ESAPI context and serves
/// every request in order.
///
/// Calls wait for the TPM at most [`Config::timeout_ms`] with `tokio::time`, so the runtime
/// must have its time driver enabled (`enable_all()` / `#[tokio::main]` do).
pub struct Tpm2Vault {
    jobs: mpsc::Sender<Msg>,
    thread: Mutex<Option<worker::Thread>>,
    info: BackendInfo,
    tcti: String,
    timeout: Duration,
}

impl fmt::Debug for Tpm2Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tpm2Vault")
            .field("tcti", &self.tcti)
            .field("algorithms", &self.info.algorithms)
            .finish_non_exhaustive()
    }
}

impl Tpm2Vault {
    /// Connects to the TPM, brings up the parent key and reads what the TPM can do.
    ///
    /// Fails with a clear error when the TCTI cannot be loaded or the TPM cannot be reached.
    pub async fn open(config: Config) -> Result<Self, Tpm2Error> {
        if config.loaded_keys == 0 {
            return Err(Tpm2Error::Config("loaded_keys must be at least 1".into()));
        }
        let tcti = config.tcti.clone();
        let timeout = Duration::from_millis(config.timeout_ms);
        let (ready_tx, ready_rx) = oneshot::channel();
        let (jobs, thread) = worker::spawn(config, ready_tx)?;
        let algorithms = match ready_rx.await {
            Ok(r) => r,
            Err(_) => Err(Tpm2Error::WorkerGone),
        };
        let algorithms = match algorithms {
            Ok(a) => a,
            Err(e) => {
                thread.join(STOP_TIMEOUT);
                return Err(e);
            }
        };
        Ok(Self {
            jobs,
            thread: Mutex::new(Some(thread)),
            info: BackendInfo {
                name: "tpm2".into(),
                algorithms,
                hardware_resident: true,
            },
            tcti,
            timeout,
        })
    }

    /// Runs `f` on the worker thread and awaits its answer.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Worker) -> Result<T, Tpm2Error> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Msg::Run(Box::new(move |w| {
                let _ = tx.send(f(w));
            })))
            .map_err(|_| Error::from(Tpm2Error::WorkerGone))?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(r)) => r.map_err(Error::from),
            Ok(Err(_)) => Err(Tpm2Error::WorkerGone.into()),
            Err(_) => Err(Tpm2Error::Timeout {
                tcti: self.tcti.clone(),
                after: self.timeout,
            }
            .into()),
        }
    }

    /// A round trip through the worker queue without touching the TPM: the adapter's own
    /// overhead per call, for the benchmark.
    #[cfg(feature = "testing")]
    pub async fn ping(&self) -> Result<()> {
        self.call(|_| Ok(())).await
    }

    /// Every way the TPM offers to read a key's private part, tried against `key` (for the
    /// conformance suite's export probe). Blocks until the worker answers.
    #[cfg(feature = "testing")]
    pub fn export_attempts(&self, key: &KeyRef) -> Vec<(String, Result<Vec<u8>, String>)> {
        let (tx, rx) = mpsc::channel();
        let key = key.clone();
        let sent = self.jobs.send(Msg::Run(Box::new(move |w| {
            let _ = tx.send(w.export_attempts(&key));
        })));
        if sent.is_err() {
            return vec![("worker".into(), Err(Tpm2Error::WorkerGone.to_string()))];
        }
        rx.recv()
            .unwrap_or_else(|_| vec![("worker".into(), Err(Tpm2Error::WorkerGone.to_string()))])
    }
}

impl Drop for Tpm2Vault {
    fn drop(&mut self) {
        // Close the context (flushing what it loaded) before anyone stops the TPM.
        let _ = self.jobs.send(Msg::Stop);
        let thread = match self.thread.lock() {
            Ok(mut t) => t.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(thread) = thread {
            thread.join(STOP_TIMEOUT);
        }
    }
}

#[async_trait]
impl Vault for Tpm2Vault {
    fn info(&self) -> BackendInfo {
        self.info.clone()
    }

    async fn generate(&self, spec: &KeySpec) -> Result<KeyInfo> {
        let algorithm = spec.algorithm();
        if !self.info.supports(algorithm) {
            return Err(Error::UnsupportedAlgorithm(match algorithm {
                Algorithm::Ed25519 => {
                    "ed25519: TPM 2.0 has no Ed25519 (its curves are NIST, BN and SM2); \
                     use ecdsa-p256"
                        .into()
                }
                other => format!("{other}: this TPM does not report it"),
            }));
        }
        let label = spec.label().to_owned();
        self.call(move |w| w.generate(algorithm, &label)).await
    }

    async fn describe(&self, key: &KeyRef) -> Result<KeyInfo> {
        let key = key.clone();
        self.call(move |w| w.describe(&key)).await
    }

    async fn sign(&self, key: &KeyRef, message: &[u8]) -> Result<Signature> {
        check_message(message)?;
        let digest: [u8; 32] = Sha256::digest(message).into();
        let key = key.clone();
        let raw = self.call(move |w| w.sign(&key, digest)).await?;
        Signature::from_bytes(Algorithm::EcdsaP256Sha256, &raw)
    }

    async fn agree(&self, key: &KeyRef, peer: &PublicKey) -> Result<SharedSecret> {
        if peer.kind() != KeyKind::P256 {
            return Err(Error::InvalidInput(
                "ECDH on a TPM needs a P-256 peer key".into(),
            ));
        }
        let key = key.clone();
        let peer = peer.clone();
        let z = self.call(move |w| w.agree(&key, &peer)).await?;
        Ok(SharedSecret::new(z))
    }

    async fn destroy(&self, key: &KeyRef) -> Result<()> {
        let key = key.clone();
        self.call(move |w| w.destroy(&key)).await
    }

    async fn list(&self) -> Result<Vec<KeyInfo>> {
        self.call(|w| w.list()).await
    }
}
