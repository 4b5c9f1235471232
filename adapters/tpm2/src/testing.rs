//! A software TPM for tests and benchmarks (feature `testing`).
//!
//! [`Swtpm::start`] runs `swtpm socket --tpm2` on two free loopback ports with its state in a
//! fresh temporary directory, so tests running in parallel processes (nextest) never share a
//! TPM. [`Swtpm::stop`] (and `Drop`) stops it in order: `tpm2_shutdown` through the TCTI, then
//! `swtpm_ioctl -s` on the control port. A kill without shutdown counts as an unorderly
//! shutdown and raises the dictionary-attack counter (swtpm locks out after 3); our keys are
//! `noDA`, so they keep working, but [`Swtpm::kill`] is for crash tests only.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use keywarden_vault::KeyRef;
use keywarden_vault::testing::{ExportAttempt, ExportProbe};

use crate::Tpm2Vault;

/// How long to wait for swtpm to listen, or to exit after the shutdown command.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A running swtpm with its own ports and state directory.
#[derive(Debug)]
pub struct Swtpm {
    child: Option<Child>,
    port: u16,
    ctrl_port: u16,
    state: tempfile::TempDir,
}

/// Where swtpm ports are picked: below Linux's default ephemeral range (32768-60999), so that
/// the many outgoing connections on a busy machine (which take ephemeral ports) never hold
/// them.
const PORTS: core::ops::Range<u16> = 20_000..32_000;

/// Two consecutive free loopback ports at random in [`PORTS`]: the swtpm TCTI reaches the
/// control channel at the command port + 1.
fn free_port_pair() -> io::Result<(u16, u16)> {
    for _ in 0..200 {
        let mut r = [0u8; 2];
        getrandom::fill(&mut r).map_err(|e| io::Error::other(format!("OS RNG: {e}")))?;
        let port = PORTS.start + u16::from_le_bytes(r) % (PORTS.end - PORTS.start - 1);
        let Ok(first) = TcpListener::bind(("127.0.0.1", port)) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            drop(first);
            return Ok((port, port + 1));
        }
    }
    Err(io::Error::other(format!(
        "no two consecutive free loopback ports in {PORTS:?}"
    )))
}

impl Swtpm {
    /// Starts a fresh swtpm (empty state: a new TPM with its own seeds).
    pub fn start() -> io::Result<Self> {
        let state = tempfile::Builder::new()
            .prefix("keywarden-swtpm-")
            .tempdir()?;
        let mut last = None;
        // Another process may take a port between our probe and swtpm's bind: try again.
        for _ in 0..10 {
            let (port, ctrl_port) = free_port_pair()?;
            match launch(port, ctrl_port, state.path()) {
                Ok(child) => {
                    return Ok(Self {
                        child: Some(child),
                        port,
                        ctrl_port,
                        state,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no free port pair")))
    }

    /// The TCTI string for this simulator.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// The state directory (the TPM's NV: seeds, DA counter).
    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// The dictionary-attack failure counter (`TPM2_PT_LOCKOUT_COUNTER`, via `tpm2_getcap`).
    /// No other client may be connected (swtpm serves one at a time).
    pub fn lockout_counter(&self) -> io::Result<u32> {
        let out = Command::new("tpm2_getcap")
            .arg("-T")
            .arg(self.tcti())
            .arg("properties-variable")
            .env("TSS2_LOG", "all+NONE")
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "tpm2_getcap: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.trim().strip_prefix("TPM2_PT_LOCKOUT_COUNTER:"))
            .and_then(|v| u32::from_str_radix(v.trim().trim_start_matches("0x"), 16).ok())
            .ok_or_else(|| io::Error::other("no TPM2_PT_LOCKOUT_COUNTER in tpm2_getcap output"))
    }

    /// True while swtpm runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Stops swtpm in order: `TPM2_Shutdown(CLEAR)` through the TCTI, then `swtpm_ioctl -s`,
    /// then waits for it to exit (killing it if it does not). Any client must have
    /// disconnected first (swtpm serves one connection at a time).
    pub fn stop(&mut self) -> io::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let shutdown = run_with_timeout(
            Command::new("tpm2_shutdown")
                .arg("-T")
                .arg(self.tcti())
                .env("TSS2_LOG", "all+NONE"),
        );
        let ioctl = swtpm_ioctl(self.ctrl_port, "-s");
        let deadline = Instant::now() + TIMEOUT;
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = child.wait();
        shutdown.and(ioctl)
    }

    /// Freezes swtpm (SIGSTOP): it keeps its sockets but answers nothing, like a hung chip.
    pub fn pause(&self) -> io::Result<()> {
        self.signal("-STOP")
    }

    /// Lets a paused swtpm run again (SIGCONT).
    pub fn resume(&self) -> io::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, signal: &str) -> io::Result<()> {
        let pid = self
            .child
            .as_ref()
            .ok_or_else(|| io::Error::other("swtpm is not running"))?
            .id();
        run_with_timeout(Command::new("kill").arg(signal).arg(pid.to_string()))
    }

    /// Kills swtpm with SIGKILL, without a shutdown (a simulated crash or power loss).
    pub fn kill(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts swtpm again on the same ports with the same state (after [`stop`](Self::stop)
    /// or [`kill`](Self::kill)).
    pub fn restart(&mut self) -> io::Result<()> {
        if self.child.is_some() {
            self.stop()?;
        }
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match launch(self.port, self.ctrl_port, self.state.path()) {
                Ok(child) => {
                    self.child = Some(child);
                    return Ok(());
                }
                // The old listener's port may take a moment to be free again.
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("swtpm on port {}: orderly stop failed: {e}", self.port);
        }
    }
}

/// Starts swtpm on these ports with this state, and waits until it answers.
fn launch(port: u16, ctrl_port: u16, state: &Path) -> io::Result<Child> {
    let mut child = Command::new("swtpm")
        .args(["socket", "--tpm2"])
        .arg("--server")
        .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
        .arg("--ctrl")
        .arg(format!("type=tcp,port={ctrl_port},bindaddr=127.0.0.1"))
        .arg("--tpmstate")
        .arg(format!("dir={}", state.display()))
        .args(["--flags", "not-need-init,startup-clear"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot run swtpm (apt-get install swtpm swtpm-tools): {e}"),
            )
        })?;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(io::Error::other(format!("swtpm exited at start: {status}")));
        }
        // The control channel answers once the TPM is initialised.
        if TcpStream::connect(("127.0.0.1", ctrl_port)).is_ok()
            && swtpm_ioctl(ctrl_port, "-g").is_ok()
        {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("swtpm did not start listening"));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn swtpm_ioctl(ctrl_port: u16, flag: &str) -> io::Result<()> {
    run_with_timeout(
        Command::new("swtpm_ioctl")
            .arg(flag)
            .arg("--tcp")
            .arg(format!("127.0.0.1:{ctrl_port}")),
    )
}

fn run_with_timeout(cmd: &mut Command) -> io::Result<()> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            if status.success() {
                return Ok(());
            }
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = io::Read::read_to_string(&mut e, &mut err);
            }
            return Err(io::Error::other(format!(
                "{cmd:?}: {status}: {}",
                err.trim()
            )));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(format!("{cmd:?}: timed out")));
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// The export probe for the conformance suite: every way a TPM offers to read a private key,
/// tried through the vault's own connection (swtpm serves one client at a time).
pub fn export_probe(vault: std::sync::Arc<Tpm2Vault>) -> ExportProbe {
    std::sync::Arc::new(move |key: &KeyRef| {
        vault
            .export_attempts(key)
            .into_iter()
            .map(|(method, outcome)| ExportAttempt { method, outcome })
            .collect()
    })
}

/// A key directory next to a simulator, for tests: a temporary directory.
pub fn key_dir() -> io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("keywarden-tpm2-keys-")
        .tempdir()
}

/// The path of a key's file in `dir` (for tests that corrupt or move blobs).
pub fn key_file(dir: &Path, key: &KeyRef) -> PathBuf {
    dir.join(format!("{key}.tpmkey"))
}
