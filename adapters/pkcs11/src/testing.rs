//! Test fixtures (feature `testing`): a fresh SoftHSM2 token per test.
//!
//! SoftHSM2 finds its token directory only through the `SOFTHSM2_CONF` environment variable,
//! read when the module is initialized. The first fixture in a process points it at a private
//! temporary directory; every fixture then adds its own token there. nextest runs each test in
//! its own process, so tests never share a token directory.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use secrecy::SecretString;

use crate::config::{PinSource, Pkcs11Config, TokenSelector};

/// Where Debian's softhsm2 package puts the module.
pub const SOFTHSM2_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// The user PIN of fixture tokens.
pub const USER_PIN: &str = "fixture-user-pin-1234";
/// The SO PIN of fixture tokens.
pub const SO_PIN: &str = "fixture-so-pin-5678";

struct ProcessDir {
    dir: tempfile::TempDir,
    conf: PathBuf,
}

static PROCESS_DIR: OnceLock<ProcessDir> = OnceLock::new();
static NEXT: AtomicU32 = AtomicU32::new(0);

fn process_dir() -> &'static ProcessDir {
    PROCESS_DIR.get_or_init(|| {
        assert!(
            Path::new(SOFTHSM2_MODULE).exists(),
            "{SOFTHSM2_MODULE} is missing: run scripts/setup (installs softhsm2)"
        );
        let dir = tempfile::Builder::new().prefix("kw-softhsm-").tempdir().unwrap();
        remove_when_this_process_ends(dir.path());
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .unwrap();
        #[allow(unsafe_code)]
        // SAFETY: set once per process, before this process loads SoftHSM2 (which reads it in
        // C_Initialize); no other thread of a test process reads or writes the environment
        // concurrently, since the fixture runs before any PKCS#11 call.
        unsafe {
            std::env::set_var("SOFTHSM2_CONF", &conf);
        }
        ProcessDir { dir, conf }
    })
}

/// The process-wide directory lives in a static, which Rust never drops: a detached shell
/// waits for this process to end, however it ends, and then removes the directory.
fn remove_when_this_process_ends(dir: &Path) {
    let spawned = Command::new("sh")
        .arg("-c")
        .arg("while kill -0 \"$1\" 2>/dev/null; do sleep 1; done; rm -rf \"$2\"")
        .arg("kw-softhsm-cleanup")
        .arg(std::process::id().to_string())
        .arg(dir)
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    // Without the shell the directory merely stays behind in the temporary directory.
    drop(spawned);
}

/// One freshly initialized SoftHSM2 token.
pub struct SoftHsm {
    label: String,
}

impl SoftHsm {
    /// Initializes a new token with [`USER_PIN`] and [`SO_PIN`] and a unique label.
    pub fn new() -> Self {
        let pd = process_dir();
        let label = format!(
            "kw-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &pd.conf)
            .args([
                "--init-token",
                "--free",
                "--label",
                &label,
                "--so-pin",
                SO_PIN,
                "--pin",
                USER_PIN,
            ])
            .output()
            .expect("run softhsm2-util (scripts/setup installs softhsm2)");
        assert!(
            out.status.success(),
            "softhsm2-util --init-token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { label }
    }

    /// The token label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The directory holding this process's tokens.
    pub fn token_dir(&self) -> PathBuf {
        process_dir().dir.path().join("tokens")
    }

    /// A vault config for this token with the PIN given inline.
    pub fn config(&self) -> Pkcs11Config {
        Pkcs11Config::new(
            SOFTHSM2_MODULE,
            TokenSelector::Label(self.label.clone()),
            PinSource::Value(SecretString::from(USER_PIN)),
        )
    }
}

impl Default for SoftHsm {
    fn default() -> Self {
        Self::new()
    }
}
