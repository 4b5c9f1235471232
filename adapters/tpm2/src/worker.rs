//! The worker thread: the only code that touches the ESAPI context (its methods take
//! `&mut self` and it is not `Send`-safe to share). Requests arrive on a queue as closures;
//! replies go back on oneshot channels.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use keywarden_vault::{Algorithm, KeyInfo, KeyRef, PublicKey};
use tss_esapi::structures::Public;
use tss_esapi::traits::UnMarshall;
use zeroize::Zeroizing;

use crate::config::Config;
use crate::error::Tpm2Error;
use crate::rc::Class;
use crate::store::{KeyStore, StoredKey};
use crate::tpm::{self, Connection};

/// A request for the worker.
pub(crate) enum Msg {
    /// Run this with the worker.
    Run(Box<dyn FnOnce(&mut Worker) + Send>),
    /// Close the context and end the thread.
    Stop,
}

/// The state owned by the worker thread.
pub(crate) struct Worker {
    config: Config,
    store: KeyStore,
    conn: Option<Connection>,
}

/// Starts the worker: connects, reads the TPM's algorithms, then serves the queue.
pub(crate) fn spawn(
    config: Config,
    ready: tokio::sync::oneshot::Sender<Result<Vec<Algorithm>, Tpm2Error>>,
) -> Result<(mpsc::Sender<Msg>, Thread), Tpm2Error> {
    let (tx, rx) = mpsc::channel::<Msg>();
    let (exited_tx, exited) = mpsc::channel::<()>();
    let handle = thread::Builder::new()
        .name("keywarden-tpm2".into())
        .spawn(move || {
            // Declared first, dropped last: after the context is closed.
            let _exited = exited_tx;
            let started = (|| {
                let store = KeyStore::open(&config.key_dir)?;
                let mut conn = Connection::open(&config)?;
                let algorithms = tpm::algorithms(&mut conn)?;
                Ok((
                    Worker {
                        config,
                        store,
                        conn: Some(conn),
                    },
                    algorithms,
                ))
            })();
            let mut worker = match started {
                Ok((worker, algorithms)) => {
                    let _ = ready.send(Ok(algorithms));
                    worker
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            while let Ok(Msg::Run(job)) = rx.recv() {
                job(&mut worker);
            }
        })
        .map_err(|e| Tpm2Error::Internal(format!("cannot start the TPM worker thread: {e}")))?;
    Ok((tx, Thread { handle, exited }))
}

/// The worker thread, and a channel that disconnects once it has closed the context.
pub(crate) struct Thread {
    handle: thread::JoinHandle<()>,
    exited: mpsc::Receiver<()>,
}

impl Thread {
    /// Waits up to `timeout` for the thread to close the context and end. A thread stuck in a
    /// TPM command that never returns is left behind rather than hanging the caller.
    pub(crate) fn join(self, timeout: Duration) {
        match self.exited.recv_timeout(timeout) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                tracing::warn!(?timeout, "the TPM worker thread did not stop; leaving it");
            }
            _ => {
                let _ = self.handle.join();
            }
        }
    }
}

/// True for failures after which the connection is not worth keeping: the link is gone, or
/// the TPM was restarted underneath us.
fn connection_lost(e: &Tpm2Error) -> bool {
    e.response_code().is_some_and(|rc| {
        rc.class() == Class::Unreachable
            || matches!(
                rc.name().as_str(),
                "TPM_RC_INITIALIZE" | "TPM_RC_REFERENCE_H0" | "TPM_RC_HANDLE"
            )
    })
}

impl Worker {
    /// Runs `f` on the connection, (re)connecting first if needed; if the link is lost on the
    /// way, reconnects once and runs `f` again (every operation here is safe to repeat).
    fn with_conn<T>(
        &mut self,
        mut f: impl FnMut(&mut Connection, &KeyStore) -> Result<T, Tpm2Error>,
    ) -> Result<T, Tpm2Error> {
        for attempt in 0..2 {
            if self.conn.is_none() {
                self.conn = Some(Connection::open(&self.config)?);
            }
            let Some(conn) = self.conn.as_mut() else {
                return Err(Tpm2Error::Internal("no connection after connecting".into()));
            };
            match f(conn, &self.store) {
                Err(e) if attempt == 0 && connection_lost(&e) => {
                    tracing::warn!(error = %e, "TPM connection lost; reconnecting");
                    self.conn = None;
                }
                other => return other,
            }
        }
        Err(Tpm2Error::Internal("reconnect loop ended".into()))
    }

    pub(crate) fn generate(
        &mut self,
        algorithm: Algorithm,
        label: &str,
    ) -> Result<KeyInfo, Tpm2Error> {
        let (public, private, public_key) = self.with_conn(|c, _| c.create(algorithm))?;
        let key_ref = KeyStore::new_ref()?;
        self.store.write(
            &key_ref,
            &StoredKey {
                algorithm,
                label: label.to_owned(),
                public,
                private,
            },
        )?;
        Ok(KeyInfo {
            key_ref,
            algorithm,
            label: label.to_owned(),
            public_key,
        })
    }

    pub(crate) fn describe(&mut self, key: &KeyRef) -> Result<KeyInfo, Tpm2Error> {
        describe(&self.store, key)
    }

    pub(crate) fn list(&mut self) -> Result<Vec<KeyInfo>, Tpm2Error> {
        let mut out = Vec::new();
        for key in self.store.refs()? {
            match describe(&self.store, &key) {
                Ok(info) => out.push(info),
                // Removed between listing and reading: not a key any more.
                Err(Tpm2Error::KeyNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    pub(crate) fn destroy(&mut self, key: &KeyRef) -> Result<(), Tpm2Error> {
        self.store.remove(key)?;
        if let Some(conn) = self.conn.as_mut() {
            conn.forget(key);
        }
        Ok(())
    }

    pub(crate) fn sign(&mut self, key: &KeyRef, digest: [u8; 32]) -> Result<[u8; 64], Tpm2Error> {
        self.with_conn(|c, store| c.sign(key, || store.read(key), digest))
    }

    pub(crate) fn agree(
        &mut self,
        key: &KeyRef,
        peer: &PublicKey,
    ) -> Result<Zeroizing<Vec<u8>>, Tpm2Error> {
        self.with_conn(|c, store| c.agree(key, || store.read(key), peer))
    }

    #[cfg(feature = "testing")]
    pub(crate) fn export_attempts(
        &mut self,
        key: &KeyRef,
    ) -> Vec<(String, Result<Vec<u8>, String>)> {
        let result = self.with_conn(|c, store| Ok(c.export_attempts(key, || store.read(key))));
        result.unwrap_or_else(|e| vec![("connect".into(), Err(e.to_string()))])
    }
}

fn describe(store: &KeyStore, key: &KeyRef) -> Result<KeyInfo, Tpm2Error> {
    let stored = store.read(key)?;
    let corrupt = |why: String| Tpm2Error::CorruptBlob {
        path: format!("for key {key}").into(),
        why,
    };
    let public = Public::unmarshall(&stored.public)
        .map_err(|e| corrupt(format!("public area does not unmarshal: {e}")))?;
    let public_key = tpm::public_key_of(&public, stored.algorithm).map_err(corrupt)?;
    Ok(KeyInfo {
        key_ref: key.clone(),
        algorithm: stored.algorithm,
        label: stored.label,
        public_key,
    })
}
