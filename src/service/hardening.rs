//! Process hardening at start, and what `keywarden serve` needs to run under systemd or in a
//! container: readiness notification, socket activation and a health probe.
//!
//! [`harden`] runs first thing in `keywarden serve`, before any file, socket or secret is
//! touched:
//!
//! - **root refused** unless [`HardeningOptions::allow_root`] (`--allow-root`): a key service
//!   runs as its own unprivileged user;
//! - **umask 077**: every file the service creates (registry, audit log, token files) is
//!   private to its user;
//! - **no core dumps**: `prctl(PR_SET_DUMPABLE, 0)` and `RLIMIT_CORE` 0 (soft and hard), so a
//!   crash never writes PINs or session keys to disk. A non-dumpable process also cannot be
//!   ptrace-attached or have its memory read through `/proc/<pid>/mem` by processes of its own
//!   uid, and its `/proc/<pid>` files belong to root;
//! - optionally **all memory locked** ([`HardeningOptions::mlock`], `--mlock`):
//!   `mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`, so secrets are never swapped out, while
//!   pages are locked only once touched. Refused with a clear reason when `RLIMIT_MEMLOCK` is
//!   finite and the process lacks `CAP_IPC_LOCK`: with `MCL_FUTURE`, every allocation past the
//!   limit would fail later, at an arbitrary point, instead of at start.
//!
//! The systemd pieces are plain protocol, no libsystemd: [`notify`] sends `READY=1` and friends
//! to `$NOTIFY_SOCKET`; [`activated_listener`] takes the listening socket systemd passes as
//! fd 3 (`LISTEN_PID`/`LISTEN_FDS`). Taking ownership of an inherited descriptor by number needs
//! `unsafe` (`FromRawFd`), which this crate forbids; instead the descriptor is duplicated with
//! `pidfd_getfd(2)` on this process's own pidfd (Linux 5.6+), a safe call that hands back an
//! owned, close-on-exec descriptor. `pidfd_getfd` sits in systemd's `@debug` syscall group, so
//! `packaging/keywarden.service` allows it by name next to `@system-service`.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::Path;
use std::time::Duration;

use rustix::mm::{MlockAllFlags, mlockall};
use rustix::process::{
    DumpableBehavior, PidfdFlags, PidfdGetfdFlags, Resource, Rlimit, getpid, getrlimit,
    pidfd_getfd, pidfd_open, set_dumpable_behavior, setrlimit,
};

/// What [`harden`] should do beyond what it always does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardeningOptions {
    /// Run even when the effective uid is 0 (`--allow-root`).
    pub allow_root: bool,
    /// Lock all memory, current and future, on fault (`--mlock`).
    pub mlock: bool,
}

/// What [`harden`] did, for the start-up log line.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// The effective uid the service runs as.
    pub euid: u32,
    /// The umask before it was set to 077.
    pub previous_umask: u32,
    /// Whether all memory is locked.
    pub memory_locked: bool,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "process hardened: not dumpable, core size limit 0, umask 0077 (was {:04o}), {}, uid {}{}",
            self.previous_umask,
            if self.memory_locked {
                "memory locked (mlockall current+future, on fault)"
            } else {
                "memory not locked (--mlock locks it)"
            },
            self.euid,
            if self.euid == 0 {
                " (root, allowed by --allow-root)"
            } else {
                ""
            },
        )
    }
}

/// Why hardening, activation or the health probe failed. Each message says what to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HardeningError {
    /// The effective uid is 0 and root was not allowed.
    #[error(
        "refusing to run as root: run keywarden serve as its own unprivileged user \
         (packaging/keywarden.service uses User=keywarden), or pass --allow-root"
    )]
    Root,
    /// Core dumps could not be turned off.
    #[error("cannot turn core dumps off: {0}")]
    CoreDumps(String),
    /// Memory could not be locked.
    #[error("--mlock: {0}")]
    Mlock(String),
    /// The socket systemd passed is unusable.
    #[error("socket activation: {0}")]
    Activation(String),
    /// The service did not answer the health probe, or a backend is unhealthy.
    #[error("unhealthy: {0}")]
    Unhealthy(String),
}

/// `CAP_IPC_LOCK`, capability number 14.
const CAP_IPC_LOCK: u32 = 14;

/// Hardens this process; see the module documentation. Call it before anything else in
/// `keywarden serve`: before a file is created (umask) or a secret is read.
pub fn harden(opts: &HardeningOptions) -> Result<Report, HardeningError> {
    let euid = rustix::process::geteuid().as_raw();
    if euid == 0 && !opts.allow_root {
        return Err(HardeningError::Root);
    }
    let previous_umask =
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077)).as_raw_mode();
    set_dumpable_behavior(DumpableBehavior::NotDumpable)
        .map_err(|e| HardeningError::CoreDumps(format!("prctl(PR_SET_DUMPABLE, 0): {e}")))?;
    setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )
    .map_err(|e| HardeningError::CoreDumps(format!("setrlimit(RLIMIT_CORE, 0): {e}")))?;
    if opts.mlock {
        let limit = getrlimit(Resource::Memlock).current;
        check_memlock(limit, has_capability(CAP_IPC_LOCK))?;
        mlockall(MlockAllFlags::CURRENT | MlockAllFlags::FUTURE | MlockAllFlags::ONFAULT).map_err(
            |e| {
                HardeningError::Mlock(format!(
                    "mlockall(MCL_CURRENT|MCL_FUTURE|MCL_ONFAULT) failed: {e}{}",
                    limit.map_or(String::new(), |n| format!(" (RLIMIT_MEMLOCK {n} bytes)"))
                ))
            },
        )?;
    }
    Ok(Report {
        euid,
        previous_umask,
        memory_locked: opts.mlock,
    })
}

/// Locking all future memory under a finite `RLIMIT_MEMLOCK` (without `CAP_IPC_LOCK`, which
/// lifts the limit) makes every allocation past the limit fail later, so it is refused now.
fn check_memlock(limit: Option<u64>, cap_ipc_lock: bool) -> Result<(), HardeningError> {
    match limit {
        Some(n) if !cap_ipc_lock => Err(HardeningError::Mlock(format!(
            "RLIMIT_MEMLOCK is {n} bytes and the process lacks CAP_IPC_LOCK: with all memory \
             locked, every allocation past that would fail; raise the limit (systemd \
             LimitMEMLOCK=infinity, docker run --ulimit memlock=-1) or run without --mlock"
        ))),
        _ => Ok(()),
    }
}

/// Whether capability `cap` is in this process's effective set (`CapEff` in
/// `/proc/self/status`); false when that cannot be read.
fn has_capability(cap: u32) -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("CapEff:"))?;
            u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
        })
        .is_some_and(|eff| eff & (1u64 << cap) != 0)
}

/// Sends a state (`READY=1`, `RELOADING=1`, `STOPPING=1`, `STATUS=…`, one `VAR=value` per
/// line) to the service manager at `$NOTIFY_SOCKET`. Returns `Ok(false)` when there is none
/// (not started by systemd with `Type=notify`).
pub fn notify(state: &str) -> io::Result<bool> {
    notify_to(std::env::var_os("NOTIFY_SOCKET").as_deref(), state)
}

fn notify_to(socket: Option<&OsStr>, state: &str) -> io::Result<bool> {
    use std::os::unix::ffi::OsStrExt as _;
    let Some(socket) = socket.filter(|s| !s.is_empty()) else {
        return Ok(false);
    };
    let sock = UnixDatagram::unbound()?;
    let bytes = socket.as_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        // An abstract socket: `@` stands for the leading NUL.
        use std::os::linux::net::SocketAddrExt as _;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &addr)?
    } else if bytes.starts_with(b"/") {
        sock.send_to(state.as_bytes(), Path::new(socket))?
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("NOTIFY_SOCKET {socket:?} is neither a path nor an abstract name"),
        ));
    };
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "notification truncated",
        ));
    }
    Ok(true)
}

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// The listening Unix socket systemd passed (socket activation, `keywarden.socket`), if this
/// process was started that way: `LISTEN_PID` is this process and `LISTEN_FDS` is 1. The
/// socket is checked to be a listening `AF_UNIX` stream socket and returned non-blocking,
/// ready for `tokio::net::UnixListener::from_std`. The socket file belongs to systemd: the
/// service must not remove it when it stops.
pub fn activated_listener() -> Result<Option<UnixListener>, HardeningError> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    listener_from(pid.as_deref(), fds.as_deref(), LISTEN_FDS_START)
}

fn listener_from(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    fd: RawFd,
) -> Result<Option<UnixListener>, HardeningError> {
    let fail = |m: String| HardeningError::Activation(m);
    let (Some(pid), Some(fds)) = (listen_pid, listen_fds) else {
        return Ok(None);
    };
    // The variables were meant for another process (inherited from a parent): not ours.
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(None);
    }
    let n: u32 = fds
        .trim()
        .parse()
        .map_err(|_| fail(format!("LISTEN_FDS={fds:?} is not a number")))?;
    match n {
        0 => return Ok(None),
        1 => {}
        _ => {
            return Err(fail(format!(
                "{n} sockets passed; keywarden.socket must have exactly one ListenStream="
            )));
        }
    }
    let owned = take_own_fd(fd).map_err(|e| {
        fail(format!(
            "cannot take fd {fd} (pidfd_getfd, Linux 5.6+; under a seccomp filter it must be \
             allowed): {e}"
        ))
    })?;
    check_listening_unix(&owned).map_err(|m| fail(format!("fd {fd}: {m}")))?;
    let listener = UnixListener::from(owned);
    listener
        .set_nonblocking(true)
        .map_err(|e| fail(format!("fd {fd}: cannot make it non-blocking: {e}")))?;
    Ok(Some(listener))
}

/// An owned, close-on-exec duplicate of this process's descriptor `fd`, without `unsafe`:
/// `pidfd_getfd` on our own pidfd. The kernel allows it for the caller's own thread group
/// whatever the ptrace policy.
fn take_own_fd(fd: RawFd) -> io::Result<OwnedFd> {
    let me = pidfd_open(getpid(), PidfdFlags::empty())?;
    Ok(pidfd_getfd(&me, fd, PidfdGetfdFlags::empty())?)
}

fn check_listening_unix(fd: impl AsFd) -> Result<(), String> {
    use rustix::net::{AddressFamily, SocketType, sockopt};
    let fd = fd.as_fd();
    let stat = rustix::fs::fstat(fd).map_err(|e| format!("fstat: {e}"))?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::Socket {
        return Err("not a socket".into());
    }
    let domain = sockopt::socket_domain(fd).map_err(|e| format!("SO_DOMAIN: {e}"))?;
    let kind = sockopt::socket_type(fd).map_err(|e| format!("SO_TYPE: {e}"))?;
    if domain != AddressFamily::UNIX || kind != SocketType::STREAM {
        return Err(format!(
            "not a Unix stream socket (domain {domain:?}, type {kind:?}); keywarden.socket \
             needs ListenStream=/path"
        ));
    }
    if !sockopt::socket_acceptconn(fd).map_err(|e| format!("SO_ACCEPTCONN: {e}"))? {
        return Err("not listening (Accept=no is required)".into());
    }
    Ok(())
}

/// How long [`health`] waits for the service.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// The health probe (`keywarden health`, the container's `HEALTHCHECK`): asks the service on
/// `target` for its `Health` (not audited, no key touched) and succeeds only if it answers
/// within [`HEALTH_TIMEOUT`] and every backend is healthy. Returns a one-line summary.
pub async fn health(target: &crate::client::Target) -> Result<String, HardeningError> {
    let probe = async {
        let client = crate::client::Client::connect_to(target)
            .await
            .map_err(|e| HardeningError::Unhealthy(e.to_string()))?;
        client
            .rpc()
            .health(crate::proto::v1::HealthRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|e| HardeningError::Unhealthy(e.message().to_owned()))
    };
    let answer = tokio::time::timeout(HEALTH_TIMEOUT, probe)
        .await
        .map_err(|_| {
            HardeningError::Unhealthy(format!(
                "no answer from {} within {}s",
                target,
                HEALTH_TIMEOUT.as_secs()
            ))
        })??;
    let backends: Vec<String> = answer
        .backends
        .iter()
        .map(|b| {
            format!(
                "{} ({}, {})",
                b.name,
                b.kind,
                if b.healthy { "ok" } else { "FAILING" }
            )
        })
        .collect();
    let summary = format!(
        "keywarden {} on {}: backends {}",
        answer.version,
        target,
        backends.join(", ")
    );
    if answer.backends.iter().all(|b| b.healthy) {
        Ok(summary)
    } else {
        Err(HardeningError::Unhealthy(summary))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    //! nextest runs every test in its own process, so the tests that harden the test process
    //! itself affect nothing else.
    use super::*;
    use std::os::fd::AsRawFd as _;

    fn status_field(name: &str) -> String {
        let s = std::fs::read_to_string("/proc/self/status").unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .to_owned()
    }

    #[test]
    fn harden_turns_core_dumps_off_and_sets_the_umask() {
        let report = harden(&HardeningOptions {
            allow_root: true,
            mlock: false,
        })
        .unwrap();
        assert_eq!(
            rustix::process::dumpable_behavior().unwrap(),
            DumpableBehavior::NotDumpable
        );
        assert_eq!(
            getrlimit(Resource::Core),
            Rlimit {
                current: Some(0),
                maximum: Some(0)
            }
        );
        assert_eq!(status_field("Umask:"), "0077");
        // A file created now is private, whatever the caller's umask was.
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!report.memory_locked);
        let line = report.to_string();
        assert!(
            line.contains("not dumpable") && line.contains("umask 0077"),
            "{line}"
        );
    }

    #[test]
    fn root_is_refused_unless_allowed() {
        let result = harden(&HardeningOptions::default());
        if rustix::process::geteuid().is_root() {
            let e = result.unwrap_err();
            assert!(matches!(e, HardeningError::Root));
            assert!(e.to_string().contains("--allow-root"), "{e}");
            // Refused before anything changed.
            assert_ne!(
                rustix::process::dumpable_behavior().unwrap(),
                DumpableBehavior::NotDumpable
            );
        } else {
            assert!(result.is_ok());
        }
    }

    #[test]
    fn mlock_locks_memory_when_the_limit_allows_it() {
        let capable = has_capability(CAP_IPC_LOCK);
        let limit = getrlimit(Resource::Memlock).current;
        let result = harden(&HardeningOptions {
            allow_root: true,
            mlock: true,
        });
        if capable || limit.is_none() {
            assert!(result.unwrap().memory_locked);
            let locked_kb: u64 = status_field("VmLck:")
                .trim_end_matches("kB")
                .trim()
                .parse()
                .unwrap();
            assert!(locked_kb > 0, "VmLck {locked_kb} kB");
        } else {
            let e = result.unwrap_err().to_string();
            assert!(e.contains("RLIMIT_MEMLOCK"), "{e}");
        }
    }

    #[test]
    fn a_finite_memlock_limit_without_cap_ipc_lock_is_refused_up_front() {
        let e = check_memlock(Some(8 << 20), false).unwrap_err().to_string();
        assert!(
            e.contains("RLIMIT_MEMLOCK is 8388608 bytes")
                && e.contains("CAP_IPC_LOCK")
                && e.contains("LimitMEMLOCK=infinity"),
            "{e}"
        );
        assert!(check_memlock(Some(8 << 20), true).is_ok());
        assert!(check_memlock(None, false).is_ok());
    }

    #[test]
    fn notify_reaches_a_path_socket_and_an_abstract_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let manager = UnixDatagram::bind(&path).unwrap();
        assert!(notify_to(Some(path.as_os_str()), "READY=1\nSTATUS=serving").unwrap());
        let mut buf = [0u8; 64];
        let n = manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");

        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("keywarden-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let manager = UnixDatagram::bind_addr(&addr).unwrap();
        assert!(notify_to(Some(OsStr::new(&format!("@{name}"))), "STOPPING=1").unwrap());
        let n = manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn notify_without_a_manager_does_nothing() {
        assert!(!notify_to(None, "READY=1").unwrap());
        assert!(!notify_to(Some(OsStr::new("")), "READY=1").unwrap());
        assert!(notify_to(Some(OsStr::new("relative")), "READY=1").is_err());
    }

    fn pid() -> String {
        std::process::id().to_string()
    }

    #[test]
    fn an_activated_unix_listener_is_taken_and_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let original = UnixListener::bind(&path).unwrap();
        let taken = listener_from(Some(&pid()), Some("1"), original.as_raw_fd())
            .unwrap()
            .unwrap();
        assert_ne!(taken.as_raw_fd(), original.as_raw_fd());
        let _client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        // Non-blocking, as tokio needs; the connection is already queued.
        let (_conn, _) = taken.accept().unwrap();
        assert_eq!(
            taken.accept().unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[test]
    fn activation_variables_for_another_process_or_no_socket_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let l = UnixListener::bind(dir.path().join("s")).unwrap();
        let fd = l.as_raw_fd();
        assert!(listener_from(None, None, fd).unwrap().is_none());
        assert!(listener_from(Some(&pid()), None, fd).unwrap().is_none());
        assert!(listener_from(Some("1"), Some("1"), fd).unwrap().is_none());
        assert!(
            listener_from(Some(&pid()), Some("0"), fd)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn activation_with_the_wrong_socket_names_the_problem() {
        let e = |r: Result<Option<UnixListener>, HardeningError>| r.unwrap_err().to_string();
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("plain")).unwrap();
        let m = e(listener_from(Some(&pid()), Some("1"), file.as_raw_fd()));
        assert!(m.contains("not a socket"), "{m}");
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let m = e(listener_from(Some(&pid()), Some("1"), tcp.as_raw_fd()));
        assert!(m.contains("not a Unix stream socket"), "{m}");
        let dgram = UnixDatagram::bind(dir.path().join("d")).unwrap();
        let m = e(listener_from(Some(&pid()), Some("1"), dgram.as_raw_fd()));
        assert!(m.contains("not a Unix stream socket"), "{m}");
        let unlistened = std::os::unix::net::UnixStream::pair().unwrap().0;
        let m = e(listener_from(
            Some(&pid()),
            Some("1"),
            unlistened.as_raw_fd(),
        ));
        assert!(m.contains("not listening"), "{m}");
        let m = e(listener_from(Some(&pid()), Some("2"), 3));
        assert!(m.contains("exactly one ListenStream"), "{m}");
        let m = e(listener_from(Some(&pid()), Some("x"), 3));
        assert!(m.contains("LISTEN_FDS"), "{m}");
        let m = e(listener_from(Some(&pid()), Some("1"), 1_000_000));
        assert!(m.contains("cannot take fd 1000000"), "{m}");
    }

    #[tokio::test]
    async fn the_health_probe_reports_an_absent_service() {
        let dir = tempfile::tempdir().unwrap();
        let target = crate::client::Target::Socket(dir.path().join("none.sock"));
        let e = health(&target).await.unwrap_err();
        assert!(
            matches!(e, HardeningError::Unhealthy(_)) && e.to_string().contains("none.sock"),
            "{e}"
        );
    }
}
