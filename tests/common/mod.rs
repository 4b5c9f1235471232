//! Runs the real `keywarden` binary on a private data directory.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs
)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_keywarden");

/// A running `keywarden serve`.
pub struct Service {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub config: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Service {
    /// Starts the service with the embedded backend, its socket world-connectable (mode 0666,
    /// in a 0755 directory) so that tests can call it as other uids.
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// Starts with extra TOML appended to the generated config.
    pub fn start_with(extra: &str) -> Self {
        Self::start_with_env(extra, &[])
    }

    /// Starts with extra TOML and extra environment for the service process.
    pub fn start_with_env(extra: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("kw-e2e-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let sock_dir = dir.path().join("run");
        std::fs::create_dir(&sock_dir).unwrap();
        std::fs::set_permissions(&sock_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = sock_dir.join("keywarden.sock");
        let config = dir.path().join("keywarden.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\nsocket = \"{}\"\nsocket_mode = \"0666\"\n{extra}",
                dir.path().join("data").display(),
                socket.display()
            ),
        )
        .unwrap();
        let mut s = Self {
            dir,
            socket,
            config,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
        };
        s.spawn();
        s
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// (Re)starts the process on the same data directory.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("serve.log"))
            .unwrap();
        let child = Command::new(BIN)
            .args(["serve", "--allow-root", "--config"])
            .arg(&self.config)
            .env("KEYWARDEN_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("keywarden serve exited with {status}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("keywarden serve did not start: {}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait: an orderly stop.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if c.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            c.kill().unwrap();
            c.wait().unwrap();
            panic!("keywarden serve ignored SIGTERM");
        }
    }

    /// Runs the CLI as this process's user.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .env("KEYWARDEN_HOME", self.data())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs the CLI as another uid/gid (setpriv), with no supplementary groups.
    pub fn cli_as(&self, uid: u32, gid: u32, args: &[&str]) -> Output {
        Command::new("setpriv")
            .args([
                "--reuid",
                &uid.to_string(),
                "--regid",
                &gid.to_string(),
                "--clear-groups",
                BIN,
            ])
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs the CLI and insists on success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "keywarden {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs the CLI, insists on failure, returns stderr (one line).
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            !out.status.success(),
            "keywarden {args:?} should have failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
        err
    }

    pub fn audit_log(&self) -> PathBuf {
        self.data().join("audit.log")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    p
}

/// `keywarden serve --check-config` on a config of `data_dir = <dir>/data` plus `extra`:
/// (success, stderr).
pub fn check_config(dir: &Path, extra: &str) -> (bool, String) {
    let config = dir.join("check.toml");
    std::fs::write(
        &config,
        format!("data_dir = \"{}\"\n{extra}", dir.join("data").display()),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--allow-root", "--check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
