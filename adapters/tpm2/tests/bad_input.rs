//! Bad configuration and bad key blobs give errors that say what is wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;

use keywarden_tpm2::testing::{Swtpm, key_dir, key_file};
use keywarden_tpm2::{Config, Tpm2Error, Tpm2Vault};
use keywarden_vault::testing::{independent_verify, software_p256};
use keywarden_vault::{Algorithm, Error, KeyInfo, KeySpec, Vault};
use secrecy::SecretString;

async fn generate(vault: &dyn Vault, algorithm: Algorithm, label: &str) -> KeyInfo {
    vault
        .generate(&KeySpec::new(algorithm, label).unwrap())
        .await
        .unwrap()
}

fn vault_error(e: Tpm2Error) -> Error {
    e.into()
}

#[tokio::test]
async fn unreachable_tcti_is_a_clear_retryable_error() {
    // A port nobody listens on (bound, then released).
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let keys = key_dir().unwrap();
    let tcti = format!("swtpm:host=127.0.0.1,port={port}");
    let e = Tpm2Vault::open(Config::new(&tcti, keys.path()))
        .await
        .unwrap_err();
    let shown = e.to_string();
    assert!(matches!(e, Tpm2Error::Unreachable { .. }), "{e:?}");
    assert!(shown.contains("cannot reach the TPM"), "{shown}");
    assert!(shown.contains(&tcti), "{shown}");
    assert!(shown.contains("TSS2_TCTI_RC_IO_ERROR"), "{shown}");
    let e = vault_error(e);
    assert!(e.is_retryable(), "{e:?}");
}

#[tokio::test]
async fn missing_device_and_malformed_tcti_are_clear_errors() {
    let keys = key_dir().unwrap();
    let e = Tpm2Vault::open(Config::new("device:/nonexistent/tpmrm9", keys.path()))
        .await
        .unwrap_err();
    let shown = e.to_string();
    assert!(shown.contains("cannot reach the TPM"), "{shown}");
    assert!(shown.contains("device:/nonexistent/tpmrm9"), "{shown}");

    let e = Tpm2Vault::open(Config::new("carrier-pigeon:coop=3", keys.path()))
        .await
        .unwrap_err();
    let shown = e.to_string();
    assert!(matches!(e, Tpm2Error::Config(_)), "{e:?}");
    assert!(shown.contains("carrier-pigeon:coop=3"), "{shown}");
    assert!(shown.contains("device:…, tabrmd:…, swtpm:…"), "{shown}");
    assert!(matches!(vault_error(e), Error::InvalidInput(_)));
}

#[tokio::test]
async fn a_missing_blob_is_key_not_found() {
    let f = common::Fixture::new().await;
    let key = generate(f.vault().as_ref(), Algorithm::EcdsaP256Sha256, "missing").await;
    std::fs::remove_file(key_file(f.keys.path(), &key.key_ref)).unwrap();
    for e in [
        f.vault().sign(&key.key_ref, b"m").await.unwrap_err(),
        f.vault().describe(&key.key_ref).await.unwrap_err(),
    ] {
        assert!(matches!(e, Error::KeyNotFound(_)), "{e:?}");
        assert!(e.to_string().contains(&key.key_ref.to_string()), "{e}");
    }
    assert!(f.vault().list().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_corrupt_blob_names_the_file_and_the_fault() {
    let f = common::Fixture::new().await;
    let vault = f.vault().as_ref();
    // Loaded keys are cached: use fresh keys that were never loaded.
    let garbage = generate(vault, Algorithm::EcdsaP256Sha256, "garbage").await;
    let path = key_file(f.keys.path(), &garbage.key_ref);
    std::fs::write(&path, b"\x00\x01 not json").unwrap();
    let e = vault.sign(&garbage.key_ref, b"m").await.unwrap_err();
    let shown = e.to_string();
    assert!(
        matches!(&e, Error::Backend { code, .. } if code == "CORRUPT_KEY_BLOB"),
        "{e:?}"
    );
    assert!(shown.contains(&path.display().to_string()), "{shown}");
    assert!(shown.contains("not a key file"), "{shown}");
    // list() reports the corrupt file rather than hiding it.
    let e = vault.list().await.unwrap_err();
    assert!(e.to_string().contains("corrupt"), "{e}");
    std::fs::remove_file(&path).unwrap();

    // A well-formed file whose TPM-encrypted private area was altered: the TPM's integrity
    // check refuses it.
    let altered = generate(vault, Algorithm::EcdhP256, "altered").await;
    let path = key_file(f.keys.path(), &altered.key_ref);
    let mut file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut private = hex::decode(file["private"].as_str().unwrap()).unwrap();
    let last = private.len() - 1;
    private[last] ^= 0x01;
    file["private"] = hex::encode(private).into();
    std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
    let (_, peer) = software_p256();
    let e = vault.agree(&altered.key_ref, &peer).await.unwrap_err();
    let shown = e.to_string();
    assert!(shown.contains("TPM_RC_INTEGRITY"), "{shown}");
    assert!(shown.contains("does not load on this TPM"), "{shown}");
    assert!(shown.contains(&altered.key_ref.to_string()), "{shown}");

    // A file with an unknown format version.
    let versioned = generate(vault, Algorithm::EcdsaP256Sha256, "versioned").await;
    let path = key_file(f.keys.path(), &versioned.key_ref);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("keywarden-tpm2/1", "keywarden-tpm2/9")).unwrap();
    let e = vault.describe(&versioned.key_ref).await.unwrap_err();
    assert!(e.to_string().contains("unknown format"), "{e}");
}

#[tokio::test]
async fn a_blob_from_another_tpm_is_refused_by_name() {
    let a = common::Fixture::new().await;
    let b = common::Fixture::new().await;
    let key = generate(a.vault().as_ref(), Algorithm::EcdsaP256Sha256, "from-a").await;
    std::fs::copy(
        key_file(a.keys.path(), &key.key_ref),
        key_file(b.keys.path(), &key.key_ref),
    )
    .unwrap();
    // B lists it (the file is well-formed) but its TPM cannot load it.
    assert_eq!(b.vault().describe(&key.key_ref).await.unwrap(), key);
    let e = b.vault().sign(&key.key_ref, b"m").await.unwrap_err();
    let shown = e.to_string();
    assert!(
        matches!(&e, Error::Backend { code, .. } if code == "FOREIGN_KEY_BLOB"),
        "{e:?}"
    );
    assert!(shown.contains("made by another TPM"), "{shown}");
    assert!(shown.contains("TPM_RC_INTEGRITY"), "{shown}");
    // The key still works on its own TPM.
    let sig = a.vault().sign(&key.key_ref, b"m").await.unwrap();
    assert!(independent_verify(&key.public_key, b"m", &sig));
}

#[tokio::test]
async fn ed25519_is_unsupported() {
    let f = common::Fixture::new().await;
    let info = f.vault().info();
    assert_eq!(info.name, "tpm2");
    assert!(info.hardware_resident);
    assert_eq!(
        info.algorithms,
        vec![Algorithm::EcdsaP256Sha256, Algorithm::EcdhP256]
    );
    let e = f
        .vault()
        .generate(&KeySpec::new(Algorithm::Ed25519, "ed").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::UnsupportedAlgorithm(_)), "{e:?}");
    assert!(e.to_string().contains("no Ed25519"), "{e}");
    assert!(f.vault().list().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_wrong_owner_auth_is_an_authentication_failure() {
    let tpm = Swtpm::start().unwrap();
    let keys = key_dir().unwrap();
    let mut config = Config::new(tpm.tcti(), keys.path());
    config.owner_auth = Some(SecretString::from("not-the-owner-auth"));
    let e = Tpm2Vault::open(config).await.unwrap_err();
    let shown = e.to_string();
    assert!(!shown.contains("not-the-owner-auth"), "{shown}");
    assert!(shown.contains("TPM2_CreatePrimary"), "{shown}");
    let e = vault_error(e);
    assert!(matches!(e, Error::AuthenticationFailed(_)), "{e:?}");
    assert!(e.to_string().contains("owner_auth"), "{e}");
}

#[tokio::test]
async fn more_keys_than_transient_slots() {
    // swtpm has 3 transient slots; ask for a cache of 8 so that the TPM, not our LRU, runs
    // out first: TPM_RC_OBJECT_MEMORY must be handled by flushing and loading again.
    let tpm = Swtpm::start().unwrap();
    let keys = key_dir().unwrap();
    let mut config = Config::new(tpm.tcti(), keys.path());
    config.loaded_keys = 8;
    let vault = Tpm2Vault::open(config).await.unwrap();
    let mut made = Vec::new();
    for i in 0..5 {
        made.push(generate(&vault, Algorithm::EcdsaP256Sha256, &format!("slot-{i}")).await);
    }
    for round in 0..3 {
        for key in &made {
            let message = format!("round {round}");
            let sig = vault.sign(&key.key_ref, message.as_bytes()).await.unwrap();
            assert!(independent_verify(
                &key.public_key,
                message.as_bytes(),
                &sig
            ));
        }
    }
    drop(vault);
    drop(tpm);
}
