//! The conformance suite: one set of checks every adapter runs against its real token.
//!
//! An adapter's test file builds a [`Harness`] (a fresh vault on a fresh token, plus whatever
//! guard keeps the token alive) and expands [`conformance_tests!`](crate::conformance_tests):
//!
//! ```ignore
//! async fn harness() -> keywarden_vault::testing::Harness { /* fresh token */ }
//! keywarden_vault::conformance_tests!(harness);
//! ```
//!
//! Each check becomes its own `#[tokio::test]`, so a failure names the check and every check
//! runs on its own token. Results the backend produces are verified with independent software
//! (`p256`, `ed25519-dalek`), never with the backend itself.
//!
//! A backend that cannot be tested for something (a simulator that lacks an operation the
//! real device has) declares it in [`Harness::untestable`]; the check then prints
//! `conformance: NOT TESTED …` with the reason instead of passing silently.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

mod checks;

use std::any::Any;
use std::sync::Arc;

use crate::key::KeyRef;
use crate::vault::Vault;

pub use checks::*;

/// One way a backend offers to read key material, tried against a private key.
pub struct ExportAttempt {
    /// What was tried (e.g. `C_GetAttributeValue(CKA_VALUE)`).
    pub method: String,
    /// What came back: bytes would mean the key leaked.
    pub outcome: Result<Vec<u8>, String>,
}

/// Tries every backend-specific way to read a private key back.
pub type ExportProbe = Arc<dyn Fn(&KeyRef) -> Vec<ExportAttempt> + Send + Sync>;

/// The checks a harness can declare untestable on its backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// ECDH through the backend.
    Agreement,
    /// Ed25519 signatures.
    Ed25519,
}

/// A vault under test and what keeps its token alive.
pub struct Harness {
    /// The vault on a fresh token.
    pub vault: Arc<dyn Vault>,
    /// Backend-specific attempts to read private key material.
    pub export_probe: Option<ExportProbe>,
    /// Checks this backend cannot be tested for here, with the reason.
    pub untestable: Vec<(Check, String)>,
    guard: Box<dyn Any + Send + Sync>,
}

impl Harness {
    /// A harness for `vault`, keeping `guard` (temporary directories, simulator processes)
    /// alive as long as the harness.
    pub fn new(vault: Arc<dyn Vault>, guard: impl Any + Send + Sync) -> Self {
        Self {
            vault,
            export_probe: None,
            untestable: Vec::new(),
            guard: Box::new(guard),
        }
    }

    /// Adds the backend's export probe.
    pub fn with_export_probe(mut self, probe: ExportProbe) -> Self {
        self.export_probe = Some(probe);
        self
    }

    /// Declares a check untestable on this backend, with the reason.
    pub fn untestable(mut self, check: Check, why: impl Into<String>) -> Self {
        self.untestable.push((check, why.into()));
        self
    }

    /// The guard, for harnesses that need to reach it (e.g. to restart a simulator).
    pub fn guard(&self) -> &(dyn Any + Send + Sync) {
        self.guard.as_ref()
    }

    /// If `check` is untestable here, says so on stdout and returns true.
    pub(crate) fn skip(&self, check: Check, test: &str) -> bool {
        match self.untestable.iter().find(|(c, _)| *c == check) {
            Some((_, why)) => {
                println!(
                    "conformance: NOT TESTED on {}: {test}: {why}",
                    self.vault.info().name
                );
                true
            }
            None => false,
        }
    }
}

/// Expands to one `#[tokio::test]` per conformance check, each calling `$harness().await`
/// for a fresh vault. The calling crate needs `tokio` with `macros` and `rt-multi-thread`.
#[macro_export]
macro_rules! conformance_tests {
    ($harness:path) => {
        $crate::conformance_tests!(@each $harness;
            generates_each_supported_algorithm,
            refuses_unsupported_algorithms,
            ecdsa_signatures_verify_with_p256,
            ed25519_signatures_verify_with_dalek,
            ecdh_matches_software,
            public_key_is_stable,
            list_and_destroy,
            wrong_operation_is_refused,
            concurrent_signing,
            private_key_is_not_exportable,
            unknown_key_is_not_found,
            message_bounds_are_enforced,
            handles_are_capabilities,
        );
    };
    (@each $harness:path; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                let harness = $harness().await;
                $crate::testing::$check(&harness).await;
            }
        )*
    };
}
