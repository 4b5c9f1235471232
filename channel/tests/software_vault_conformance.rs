//! The test vault (feature `testing`) passes the shared keywarden-vault conformance suite,
//! so channel tests that use it exercise a vault that behaves like the real ones.
//!
//! All checks but one: `private_key_is_not_exportable` requires a hardware-resident
//! backend, and this vault keeps keys in process memory by design; it says so
//! (`hardware_resident: false`), which `says_it_is_not_hardware_resident` asserts instead.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use keywarden_channel::testing::SoftwareVault;
use keywarden_vault::testing::{self as checks, Harness};

async fn harness() -> Harness {
    Harness::new(SoftwareVault::new(), ())
}

macro_rules! checks {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $check() {
            checks::$check(&harness().await).await;
        }
    )*};
}

checks!(
    generates_each_supported_algorithm,
    refuses_unsupported_algorithms,
    ecdsa_signatures_verify_with_p256,
    ed25519_signatures_verify_with_dalek,
    ecdh_matches_software,
    public_key_is_stable,
    list_and_destroy,
    wrong_operation_is_refused,
    concurrent_signing,
    unknown_key_is_not_found,
    message_bounds_are_enforced,
    handles_are_capabilities,
);

#[test]
fn says_it_is_not_hardware_resident() {
    use keywarden_vault::Vault as _;
    assert!(!SoftwareVault::new().info().hardware_resident);
}
