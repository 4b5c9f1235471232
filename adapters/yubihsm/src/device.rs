//! The one owner of the device: a dedicated thread that holds the yubihsm `Client` (and so the
//! one session), runs commands one at a time, and reopens the session when it is lost.
//!
//! The yubihsm client is blocking and serializes commands on its session anyway; giving it a
//! thread of its own keeps the async executor free, makes the order of commands explicit, and
//! lets the thread replace the client after a failure without locks. Async callers send it a
//! job and await the answer on a oneshot channel.
//!
//! Reconnection: the crate reopens a session by itself when its idle timer says the session
//! timed out. Everything else (the connector restarted, the HTTP connection dropped, the
//! device forgot the session: `YHR_DEVICE_INVALID_SESSION`) surfaces as an error; the thread
//! then drops the client, so the next command opens a new connection and session, and
//! commands that are safe to repeat (all but generate and destroy) are retried once at once.
//! A panic inside the yubihsm crate (it has a few `unwrap`s, and MockHsm panics on commands it
//! lacks) is caught, reported as a backend error, and the client is dropped too.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;

use keywarden_vault::{Error, Result};
use tokio::sync::oneshot;
use yubihsm::{Client, Connector, Credentials, client};

use crate::error::{self, Context};

/// What the device thread owns.
pub(crate) struct Link {
    connector: Connector,
    credentials: Credentials,
    client: Option<Client>,
    /// The backend's name, for messages.
    pub(crate) name: String,
    /// The authentication key id, for messages.
    pub(crate) auth_key_id: u16,
}

/// Whether a command may be sent again after the session was lost mid-command.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Reading, signing, deriving: repeating it has no lasting effect.
    Safe,
    /// Generating or deleting: it may have happened already.
    Never,
}

impl Link {
    pub(crate) fn new(
        connector: Connector,
        credentials: Credentials,
        name: String,
        auth_key_id: u16,
    ) -> Self {
        Self {
            connector,
            credentials,
            client: None,
            name,
            auth_key_id,
        }
    }

    fn client(&mut self) -> Result<&Client, client::Error> {
        if self.client.is_none() {
            let fresh = Client::open(self.connector.clone(), self.credentials.clone(), true)?;
            self.client = Some(fresh);
        }
        self.client
            .as_ref()
            .ok_or_else(|| client::Error::from(client::ErrorKind::CreateFailed))
    }

    /// Forgets the session; the next command opens a new one.
    pub(crate) fn reset(&mut self) {
        self.client = None;
    }

    /// Runs one command, reconnecting once if the session was lost and `retry` allows.
    pub(crate) fn call_raw<T>(
        &mut self,
        retry: Retry,
        f: impl Fn(&Client) -> Result<T, client::Error>,
    ) -> Result<T, client::Error> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let result = match self.client() {
                Ok(c) => f(c),
                Err(e) => Err(e),
            };
            match result {
                Ok(v) => return Ok(v),
                Err(e) if error::session_lost(&e) => {
                    tracing::debug!(backend = %self.name, error = %e, "yubihsm session lost");
                    self.reset();
                    if retry == Retry::Safe && attempts < 2 {
                        continue;
                    }
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The error context for an operation.
    pub(crate) fn cx<'a>(&'a self, op: &'a str, key: Option<u16>) -> Context<'a> {
        Context {
            backend: &self.name,
            op,
            key: key.map(|id| format!("{id:04x}")),
            auth_key_id: self.auth_key_id,
        }
    }

    /// Runs one command and maps its error.
    pub(crate) fn call<T>(
        &mut self,
        op: &str,
        key: Option<u16>,
        retry: Retry,
        f: impl Fn(&Client) -> Result<T, client::Error>,
    ) -> Result<T> {
        self.call_raw(retry, f)
            .map_err(|e| error::map(&e, &self.cx(op, key)))
    }
}

type Job = Box<dyn FnOnce(&mut Link) + Send>;

/// A handle to the device thread. Dropping it ends the thread once queued jobs are done.
pub(crate) struct Device {
    jobs: mpsc::Sender<Job>,
    name: String,
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}

impl Device {
    /// Starts the thread that owns `link`.
    pub(crate) fn spawn(link: Link) -> Result<Self> {
        let name = link.name.clone();
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("keywarden-yubihsm".into())
            .spawn(move || {
                let mut link = link;
                while let Ok(job) = queue.recv() {
                    job(&mut link);
                }
            })
            .map_err(|e| {
                Error::DeviceUnavailable(format!("{name}: cannot start the device thread: {e}"))
            })?;
        Ok(Self { jobs, name })
    }

    /// Runs `f` on the device thread and waits for its answer without blocking the executor.
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Link) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |link: &mut Link| {
            let out = match catch_unwind(AssertUnwindSafe(|| f(link))) {
                Ok(out) => out,
                Err(payload) => {
                    link.reset();
                    let msg = panic_message(payload.as_ref());
                    tracing::error!(backend = %link.name, panic = %msg, "yubihsm driver panicked");
                    Err(Error::backend(
                        "yubihsm",
                        "DRIVER_PANIC",
                        format!(
                            "{}: the yubihsm driver panicked ({msg}); the session was dropped",
                            link.name
                        ),
                    ))
                }
            };
            // The caller may have stopped waiting; nothing to do then.
            let _ = tx.send(out);
        });
        self.jobs.send(job).map_err(|_| {
            Error::DeviceUnavailable(format!("{}: the device thread has stopped", self.name))
        })?;
        rx.await.map_err(|_| {
            Error::DeviceUnavailable(format!(
                "{}: the device thread stopped before answering",
                self.name
            ))
        })?
    }
}
