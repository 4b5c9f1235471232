//! `keywarden serve` hardens itself at start (issue 7): checked from outside, on the real
//! binary, the way an operator would.
//!
//! Non-dumpability has no field of its own in `/proc/<pid>/status` (the wording); the
//! kernel's visible, documented sign (proc(5)) is that every file under `/proc/<pid>` becomes
//! owned by root:root instead of the process's uid, and that processes of the same uid can no
//! longer read its environment or memory. So the service runs here as an unprivileged uid
//! (`setpriv`), where that difference shows, next to a control process of the same uid that
//! shows the opposite. `/proc/<pid>/status` gives the uid and the umask, `/proc/<pid>/limits`
//! the core size limit.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Service};

/// `nobody`: an unprivileged uid every Debian system has.
const UID: u32 = 65534;

/// A data directory and config usable by [`UID`].
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    socket: PathBuf,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("kw-harden-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(dir.path(), Some(UID), Some(UID)).unwrap();
        let socket = dir.path().join("keywarden.sock");
        let config = dir.path().join("keywarden.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\nsocket = \"{}\"\n",
                dir.path().join("data").display(),
                socket.display()
            ),
        )
        .unwrap();
        Self {
            dir,
            config,
            socket,
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("serve.log")
    }

    /// `keywarden serve` as [`UID`] (through `setpriv`, which execs: same pid), with `prefix`
    /// (e.g. `prlimit …`) in front.
    fn command_as_uid(&self, prefix: &[&str], extra: &[&str]) -> Command {
        self.command_as_uid_with(prefix, &[], extra)
    }

    /// As [`Self::command_as_uid`], with extra `setpriv` options (capabilities to keep).
    fn command_as_uid_with(&self, prefix: &[&str], setpriv: &[&str], extra: &[&str]) -> Command {
        let mut argv: Vec<String> = prefix.iter().map(ToString::to_string).collect();
        argv.push("setpriv".into());
        argv.extend(setpriv.iter().map(ToString::to_string));
        argv.extend(
            [
                "--reuid",
                &UID.to_string(),
                "--regid",
                &UID.to_string(),
                "--clear-groups",
                BIN,
                "serve",
                "--config",
            ]
            .map(String::from),
        );
        argv.push(self.config.display().to_string());
        argv.extend(extra.iter().map(ToString::to_string));
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env("KEYWARDEN_LOG", "info")
            .env_remove("KEYWARDEN_ALLOW_ROOT")
            .stdin(Stdio::null());
        cmd
    }

    fn spawn(&self, cmd: Command) -> Running {
        self.spawn_on(cmd, &self.socket)
    }

    fn spawn_on(&self, mut cmd: Command, socket: &Path) -> Running {
        let log = std::fs::File::create(self.log()).unwrap();
        let child = cmd
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut running = Running {
            child,
            log: self.log(),
        };
        running.wait_for(socket);
        running
    }
}

struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for(&mut self, socket: &Path) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if UnixStream::connect(socket).is_ok() {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("keywarden serve exited with {status}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("keywarden serve did not start: {}", self.log());
    }

    /// SIGTERM, and wait for the orderly stop.
    fn stop(mut self) -> String {
        terminate(self.child.id());
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return self.log();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("keywarden serve ignored SIGTERM: {}", self.log());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn terminate(pid: u32) {
    let ok = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM {pid}");
}

fn status_field(pid: u32, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

/// Reads `path` as [`UID`] with no capabilities: what another process of the service's own
/// user can see.
fn read_as_uid(path: &str) -> Output {
    Command::new("setpriv")
        .args(["--reuid", &UID.to_string(), "--regid", &UID.to_string()])
        .args(["--clear-groups", "cat", path])
        .stdout(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn the_running_service_is_not_dumpable_has_no_core_limit_and_umask_077() {
    let setup = Setup::new();
    let service = setup.spawn(setup.command_as_uid(&[], &[]));
    let pid = service.pid();

    // /proc/<pid>/status: the service runs as the unprivileged uid, with umask 077.
    let uid_line = status_field(pid, "Uid:");
    let uid = UID.to_string();
    let uids: Vec<&str> = uid_line.split_whitespace().collect();
    assert_eq!(uids, [uid.as_str(); 4], "Uid: {uid_line}");
    assert_eq!(status_field(pid, "Umask:"), "0077");

    // /proc/<pid>/limits: core files limited to 0 bytes, soft and hard.
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(
        core.split_whitespace().collect::<Vec<_>>(),
        ["Max", "core", "file", "size", "0", "0", "bytes"],
        "{core}"
    );

    // A control process of the same uid, dumpable as every process is by default.
    let mut control = Command::new("setpriv")
        .args(["--reuid", &UID.to_string(), "--regid", &UID.to_string()])
        .args(["--clear-groups", "sleep", "60"])
        .spawn()
        .unwrap();
    let control_pid = control.id();
    let owner = |pid: u32| {
        std::fs::metadata(format!("/proc/{pid}/environ"))
            .unwrap()
            .uid()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while owner(control_pid) != UID && Instant::now() < deadline {
        // setpriv has not exec'd sleep with the new uid yet.
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(owner(control_pid), UID, "control process");
    assert!(
        read_as_uid(&format!("/proc/{control_pid}/environ"))
            .status
            .success()
    );

    // Non-dumpable: its /proc files belong to root although it runs as UID, and its own
    // user cannot read its environment.
    assert_eq!(owner(pid), 0, "/proc/{pid}/environ of the service");
    let denied = read_as_uid(&format!("/proc/{pid}/environ"));
    assert!(!denied.status.success());
    let why = String::from_utf8_lossy(&denied.stderr);
    assert!(why.contains("Permission denied"), "{why}");

    let _ = control.kill();
    let _ = control.wait();
    let log = service.stop();
    assert!(log.contains("process hardened: not dumpable"), "{log}");
}

#[test]
fn files_the_service_creates_are_private_to_its_user() {
    let setup = Setup::new();
    let service = setup.spawn(setup.command_as_uid(&[], &[]));
    let data = setup.dir.path().join("data");
    let audit = data.join("audit.log");
    let registry = data.join("registry.db");
    for f in [&audit, &registry] {
        let meta = std::fs::metadata(f).unwrap();
        assert_eq!(meta.uid(), UID, "{}", f.display());
        assert_eq!(
            meta.permissions().mode() & 0o077,
            0,
            "{} is mode {:o}",
            f.display(),
            meta.permissions().mode()
        );
    }
    service.stop();
}

#[test]
fn root_is_refused_without_allow_root() {
    let setup = Setup::new();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&setup.config)
        .env_remove("KEYWARDEN_ALLOW_ROOT")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to run as root") && err.contains("--allow-root"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    // Refused before anything was created.
    assert!(!setup.dir.path().join("data").exists());
    assert!(!setup.socket.exists());
}

#[test]
fn mlock_under_a_small_memlock_limit_is_refused_with_the_reason() {
    let setup = Setup::new();
    let out = setup
        .command_as_uid(&["prlimit", "--memlock=65536:65536"], &["--mlock"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--mlock")
            && err.contains("RLIMIT_MEMLOCK is 65536 bytes")
            && err.contains("LimitMEMLOCK=infinity"),
        "{err}"
    );
}

/// The service keeps `CAP_IPC_LOCK`, which lifts `RLIMIT_MEMLOCK` (the other way to allow
/// `--mlock`, `LimitMEMLOCK=infinity`, needs `CAP_SYS_RESOURCE` to raise the hard limit, which
/// CI's container lacks).
#[test]
fn mlock_locks_the_service_memory_when_the_limit_allows_it() {
    let setup = Setup::new();
    let service = setup.spawn(setup.command_as_uid_with(
        &[],
        &["--inh-caps", "+ipc_lock", "--ambient-caps", "+ipc_lock"],
        &["--mlock"],
    ));
    let locked = status_field(service.pid(), "VmLck:");
    let kb: u64 = locked.trim_end_matches("kB").trim().parse().unwrap();
    assert!(kb > 0, "VmLck: {locked}");
    let log = service.stop();
    assert!(log.contains("memory locked"), "{log}");
}

#[test]
fn systemd_is_told_when_the_service_is_ready_and_when_it_stops() {
    let setup = Setup::new();
    let notify_path = setup.dir.path().join("notify");
    let manager = UnixDatagram::bind(&notify_path).unwrap();
    manager
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    std::os::unix::fs::chown(&notify_path, Some(UID), Some(UID)).unwrap();
    let mut cmd = setup.command_as_uid(&[], &[]);
    cmd.env("NOTIFY_SOCKET", &notify_path);
    let service = setup.spawn(cmd);
    let mut buf = [0u8; 512];
    let n = manager.recv(&mut buf).unwrap();
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    // Ready means answering.
    assert!(UnixStream::connect(&setup.socket).is_ok());
    service.stop();
    let n = manager.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1");
}

#[test]
fn a_socket_passed_by_systemd_is_served_and_left_in_place() {
    let setup = Setup::new();
    // The socket systemd would create (keywarden.socket); the config's own path stays unused.
    let activated = setup.dir.path().join("activated.sock");
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.arg("--listen")
        .arg(&activated)
        .args(["setpriv", "--reuid", &UID.to_string()])
        .args(["--regid", &UID.to_string(), "--clear-groups", BIN])
        .args(["serve", "--config"])
        .arg(&setup.config)
        .env("KEYWARDEN_LOG", "info")
        .stdin(Stdio::null());
    // systemd-socket-activate listens at once and execs the service on the first connection.
    let service = setup.spawn_on(cmd, &activated);
    // That connection started the service; it answers once it has opened its backends.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = Command::new(BIN)
            .arg("--socket")
            .arg(&activated)
            .arg("health")
            .output()
            .unwrap();
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            service.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = service.stop();
    assert!(log.contains("socket activation"), "{log}");
    assert!(!setup.socket.exists(), "the configured socket was bound");
    // The socket file is systemd's: still there after the service stopped.
    assert!(activated.exists());
}

#[test]
fn health_asks_the_service_and_fails_without_one() {
    let s = Service::start();
    let out = s.ok(&["health"]);
    assert!(
        out.contains("keywarden ") && out.contains("(sim, ok)"),
        "{out}"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("--socket")
        .arg(dir.path().join("absent.sock"))
        .arg("health")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unhealthy") && err.contains("absent.sock"),
        "{err}"
    );
}
