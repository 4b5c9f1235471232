//! A vault on a fresh swtpm, for the integration tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use keywarden_tpm2::testing::{Swtpm, key_dir};
use keywarden_tpm2::{Config, Tpm2Vault};

/// A simulator, a key directory, and a vault on both. Field order matters on drop: the vault
/// closes its connection before the simulator is shut down.
pub struct Fixture {
    pub vault: Option<Arc<Tpm2Vault>>,
    pub keys: tempfile::TempDir,
    pub tpm: Swtpm,
}

impl Fixture {
    pub async fn new() -> Self {
        let tpm = Swtpm::start().expect("start swtpm");
        let keys = key_dir().unwrap();
        let vault = Tpm2Vault::open(Config::new(tpm.tcti(), keys.path()))
            .await
            .expect("open the vault on swtpm");
        Self {
            vault: Some(Arc::new(vault)),
            keys,
            tpm,
        }
    }

    pub fn vault(&self) -> &Arc<Tpm2Vault> {
        self.vault.as_ref().expect("vault is open")
    }

    pub fn config(&self) -> Config {
        Config::new(self.tpm.tcti(), self.keys.path())
    }

    /// Closes the vault (its TPM connection) and waits for the worker thread.
    pub fn close(&mut self) {
        let vault = self.vault.take().expect("vault is open");
        assert_eq!(
            Arc::strong_count(&vault),
            1,
            "someone still holds the vault"
        );
        drop(vault);
    }

    pub async fn reopen(&mut self) {
        let vault = Tpm2Vault::open(self.config())
            .await
            .expect("reopen the vault");
        self.vault = Some(Arc::new(vault));
    }
}
