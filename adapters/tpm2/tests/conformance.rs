//! The shared keywarden-vault conformance suite against swtpm.
#![allow(clippy::expect_used)]

mod common;

use std::sync::Arc;

use keywarden_vault::Vault;
use keywarden_vault::testing::Harness;

async fn harness() -> Harness {
    let mut fixture = common::Fixture::new().await;
    let vault = fixture.vault.take().expect("vault");
    let probe = keywarden_tpm2::testing::export_probe(Arc::clone(&vault));
    let dyn_vault: Arc<dyn Vault> = vault;
    // The harness drops the vault, then the probe (the last reference: the worker stops and
    // the TPM connection closes), then the fixture (swtpm is shut down in order).
    Harness::new(dyn_vault, fixture).with_export_probe(probe)
}

keywarden_vault::conformance_tests!(harness);
