//! Keys survive a TPM restart: the primary comes back from the same template and seed, and
//! the blobs on disk load under it again. Signatures are checked with `p256`, ECDH against a
//! software computation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use keywarden_vault::testing::{independent_verify, software_ecdh, software_p256};
use keywarden_vault::{Algorithm, KeyInfo, KeySpec, Vault};

async fn make_keys(f: &common::Fixture) -> (KeyInfo, KeyInfo) {
    let vault = f.vault();
    let signer = vault
        .generate(&KeySpec::new(Algorithm::EcdsaP256Sha256, "restart-sign").unwrap())
        .await
        .unwrap();
    let agreer = vault
        .generate(&KeySpec::new(Algorithm::EcdhP256, "restart-agree").unwrap())
        .await
        .unwrap();
    (signer, agreer)
}

/// The same keys still sign and agree, with the same public keys.
async fn check_keys(vault: &dyn Vault, signer: &KeyInfo, agreer: &KeyInfo) {
    let listed = vault.list().await.unwrap();
    assert!(
        listed.contains(signer) && listed.contains(agreer),
        "{listed:?}"
    );
    for i in 0..3 {
        let message = format!("after the restart {i}");
        let sig = vault
            .sign(&signer.key_ref, message.as_bytes())
            .await
            .unwrap();
        assert!(
            independent_verify(&signer.public_key, message.as_bytes(), &sig),
            "a signature after the restart does not verify with p256"
        );
        let (secret, public) = software_p256();
        let ours = vault.agree(&agreer.key_ref, &public).await.unwrap();
        assert_eq!(
            ours.expose_secret(),
            &software_ecdh(&secret, &agreer.public_key)[..],
            "ECDH after the restart differs from software"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_survive_an_orderly_restart() {
    let mut f = common::Fixture::new().await;
    let (signer, agreer) = make_keys(&f).await;
    check_keys(f.vault().as_ref(), &signer, &agreer).await;

    f.close();
    f.tpm.stop().expect("tpm2_shutdown, then swtpm_ioctl -s");
    assert!(!f.tpm.is_running());
    f.tpm.restart().unwrap();
    f.reopen().await;
    check_keys(f.vault().as_ref(), &signer, &agreer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_survive_a_sigkill_of_the_tpm() {
    let mut f = common::Fixture::new().await;
    let (signer, agreer) = make_keys(&f).await;
    check_keys(f.vault().as_ref(), &signer, &agreer).await;

    f.close();
    f.tpm.kill().unwrap();
    f.tpm.restart().unwrap();
    // An unorderly shutdown raises the DA counter only if DA-protected authorizations were
    // used since the last orderly one; every object we touch is noDA.
    assert_eq!(f.tpm.lockout_counter().unwrap(), 0);
    f.reopen().await;
    check_keys(f.vault().as_ref(), &signer, &agreer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_vault_reconnects_after_the_tpm_restarts() {
    let mut f = common::Fixture::new().await;
    let (signer, agreer) = make_keys(&f).await;
    check_keys(f.vault().as_ref(), &signer, &agreer).await;

    // The vault keeps its (now dead) connection and its loaded-key cache; the TPM comes back
    // empty. The next call finds the link gone, reconnects, recreates the primary and loads
    // the blobs again.
    f.tpm.kill().unwrap();
    f.tpm.restart().unwrap();
    check_keys(f.vault().as_ref(), &signer, &agreer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_tpm_is_reported_as_unavailable() {
    let mut f = common::Fixture::new().await;
    let (signer, _) = make_keys(&f).await;
    f.tpm.kill().unwrap();
    let e = f
        .vault()
        .sign(&signer.key_ref, b"nobody home")
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    assert!(e.to_string().contains("cannot reach the TPM"), "{e}");
    // And it comes back once the TPM does.
    f.tpm.restart().unwrap();
    let sig = f.vault().sign(&signer.key_ref, b"back").await.unwrap();
    assert!(independent_verify(&signer.public_key, b"back", &sig));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_tpm_times_out_and_recovers() {
    let mut f = common::Fixture::new().await;
    f.close();
    let mut config = f.config();
    config.timeout_ms = 500;
    f.vault = Some(std::sync::Arc::new(
        keywarden_tpm2::Tpm2Vault::open(config).await.unwrap(),
    ));
    let (signer, _) = make_keys(&f).await;
    f.tpm.pause().unwrap();
    let started = std::time::Instant::now();
    let e = f.vault().sign(&signer.key_ref, b"hung").await.unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(e.is_retryable(), "{e:?}");
    assert!(e.to_string().contains("did not answer within 500ms"), "{e}");
    f.tpm.resume().unwrap();
    // The stuck command completes once the TPM runs again; later calls work.
    let sig = f.vault().sign(&signer.key_ref, b"awake").await.unwrap();
    assert!(independent_verify(&signer.public_key, b"awake", &sig));
}
