//! A pool of logged-in sessions on one token.
//!
//! A cryptoki `Session` is `Send` but not `Sync`, so each call takes a session out of the pool,
//! uses it on a thread where blocking is allowed, and puts it back. The pool never holds more
//! sessions than its semaphore has permits, which is at most what the token allows.
//!
//! Recovery: when a call fails because the session or the login state is gone
//! (`CKR_SESSION_HANDLE_INVALID`, `CKR_SESSION_CLOSED`, `CKR_DEVICE_REMOVED`,
//! `CKR_USER_NOT_LOGGED_IN`, `CKR_TOKEN_NOT_PRESENT`), every idle session is discarded (they
//! share the token's fate), a new session is opened and logged in, and the call is retried
//! once. A refused PIN is never retried: repeating it would lock the token.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use keywarden_vault::Error as VaultError;
use secrecy::SecretString;
use tokio::sync::Semaphore;

use crate::rv;

/// What a pooled operation can fail with: a PKCS#11 error to map, or a vault error the
/// operation decided on itself.
#[derive(Debug)]
pub(crate) enum OpError {
    /// The module returned an error.
    Ck(CkError),
    /// The operation refused on its own (unknown key, wrong algorithm…).
    Vault(VaultError),
}

impl From<CkError> for OpError {
    fn from(e: CkError) -> Self {
        Self::Ck(e)
    }
}

impl From<VaultError> for OpError {
    fn from(e: VaultError) -> Self {
        Self::Vault(e)
    }
}

struct Pooled {
    session: Session,
    epoch: u64,
}

/// Logged-in sessions on one token.
pub(crate) struct Pool {
    ctx: Pkcs11,
    slot: Slot,
    pin: SecretString,
    token_name: String,
    idle: Mutex<Vec<Pooled>>,
    permits: Arc<Semaphore>,
    size: usize,
    /// Bumped whenever the token lost our sessions; older sessions are discarded.
    epoch: AtomicU64,
    /// Called after a recovery, so the vault can drop cached object handles.
    on_recover: Box<dyn Fn() + Send + Sync>,
}

impl Pool {
    pub(crate) fn new(
        ctx: Pkcs11,
        slot: Slot,
        pin: SecretString,
        token_name: String,
        size: usize,
        on_recover: Box<dyn Fn() + Send + Sync>,
    ) -> Self {
        Self {
            ctx,
            slot,
            pin,
            token_name,
            idle: Mutex::new(Vec::with_capacity(size)),
            permits: Arc::new(Semaphore::new(size)),
            size,
            epoch: AtomicU64::new(0),
            on_recover,
        }
    }

    /// The most sessions this pool opens at once.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Pooled>> {
        // A panic while holding this lock cannot leave the Vec inconsistent (push/pop only),
        // so a poisoned lock is still safe to use.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a session and logs in (`CKR_USER_ALREADY_LOGGED_IN` is success: login state is
    /// per application, not per session).
    pub(crate) fn open_session(&self) -> Result<Session, CkError> {
        let session = self.ctx.open_rw_session(self.slot)?;
        match session.login(UserType::User, Some(&self.pin)) {
            Ok(()) => Ok(session),
            Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(e) => Err(e),
        }
    }

    fn checkout(&self) -> Result<Pooled, CkError> {
        let epoch = self.epoch.load(Ordering::Acquire);
        loop {
            let Some(p) = self.idle().pop() else { break };
            if p.epoch == epoch {
                return Ok(p);
            }
            // A session from before a recovery: drop (closes it) and look again.
        }
        Ok(Pooled {
            session: self.open_session()?,
            epoch,
        })
    }

    fn checkin(&self, p: Pooled) {
        if p.epoch == self.epoch.load(Ordering::Acquire) {
            self.idle().push(p);
        }
    }

    fn recover(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let stale: Vec<Pooled> = std::mem::take(&mut *self.idle());
        drop(stale);
        (self.on_recover)();
        tracing::warn!(token = %self.token_name, "PKCS#11 sessions lost; reopening and logging in again");
    }

    /// Seeds the pool with a session opened by the caller (the one that checked the PIN).
    pub(crate) fn seed(&self, session: Session) {
        let epoch = self.epoch.load(Ordering::Acquire);
        self.idle().push(Pooled { session, epoch });
    }

    /// Runs `op` on a pooled session, off the async executor, retrying once on a fresh session
    /// when the token lost the first one. `doing` names the operation for error messages.
    pub(crate) async fn run<T, F>(self: &Arc<Self>, doing: String, op: F) -> Result<T, VaultError>
    where
        T: Send + 'static,
        F: Fn(&Session) -> Result<T, OpError> + Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| VaultError::DeviceUnavailable("session pool closed".into()))?;
        let pool = Arc::clone(self);
        blocking(move || {
            let _permit = permit;
            pool.run_blocking(&doing, &op)
        })
        .await?
    }

    fn run_blocking<T>(
        &self,
        doing: &str,
        op: &dyn Fn(&Session) -> Result<T, OpError>,
    ) -> Result<T, VaultError> {
        let mut retried = false;
        loop {
            let pooled = match self.checkout() {
                Ok(p) => p,
                Err(e) if rv::needs_new_session(&e) && !retried => {
                    retried = true;
                    self.recover();
                    continue;
                }
                Err(e) => return Err(rv::to_vault(&e, &format!("{doing} (opening a session)"))),
            };
            match op(&pooled.session) {
                Ok(v) => {
                    self.checkin(pooled);
                    return Ok(v);
                }
                Err(OpError::Vault(e)) => {
                    self.checkin(pooled);
                    return Err(e);
                }
                Err(OpError::Ck(e)) if rv::needs_new_session(&e) => {
                    drop(pooled);
                    self.recover();
                    if retried {
                        return Err(rv::to_vault(&e, doing));
                    }
                    retried = true;
                }
                Err(OpError::Ck(e)) => {
                    self.checkin(pooled);
                    return Err(rv::to_vault(&e, doing));
                }
            }
        }
    }
}

/// Runs blocking work without stalling the async executor: `block_in_place` on a multi-thread
/// runtime (no thread hop, so a 40 µs token call does not pay for two cross-thread wake-ups),
/// `spawn_blocking` on a current-thread runtime, inline outside any runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, VaultError> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            Ok(tokio::task::block_in_place(f))
        }
        Ok(_) => tokio::task::spawn_blocking(f).await.map_err(|e| {
            VaultError::backend("pkcs11", "TASK_FAILED", format!("blocking task: {e}"))
        }),
        Err(_) => Ok(f()),
    }
}
