//! The parent key: a persistent handle made with tpm2-tools, and a primary under an owner
//! hierarchy that has an auth value.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use keywarden_tpm2::testing::{Swtpm, key_dir};
use keywarden_tpm2::{Config, Tpm2Vault};
use keywarden_vault::testing::{independent_verify, software_ecdh, software_p256};
use keywarden_vault::{Algorithm, Error, KeySpec, Vault};
use secrecy::SecretString;

fn tpm2_tool(tpm: &Swtpm, tool: &str, args: &[&str]) {
    let out = Command::new(tool)
        .args(args)
        .arg("-T")
        .arg(tpm.tcti())
        .env("TSS2_LOG", "all+NONE")
        .output()
        .unwrap_or_else(|e| panic!("run {tool} (apt-get install tpm2-tools): {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn sign_and_agree(vault: &Tpm2Vault) {
    let signer = vault
        .generate(&KeySpec::new(Algorithm::EcdsaP256Sha256, "p-sign").unwrap())
        .await
        .unwrap();
    let sig = vault.sign(&signer.key_ref, b"parent").await.unwrap();
    assert!(independent_verify(&signer.public_key, b"parent", &sig));
    let agreer = vault
        .generate(&KeySpec::new(Algorithm::EcdhP256, "p-agree").unwrap())
        .await
        .unwrap();
    let (secret, public) = software_p256();
    let z = vault.agree(&agreer.key_ref, &public).await.unwrap();
    assert_eq!(
        z.expose_secret(),
        &software_ecdh(&secret, &agreer.public_key)[..]
    );
}

#[tokio::test]
async fn a_persistent_parent_made_with_tpm2_tools() {
    let tpm = Swtpm::start().unwrap();
    let keys = key_dir().unwrap();
    let ctx = keys.path().join("primary.ctx");
    let ctx = ctx.to_str().unwrap();
    tpm2_tool(
        &tpm,
        "tpm2_createprimary",
        &["-C", "o", "-G", "ecc256", "-c", ctx],
    );
    tpm2_tool(
        &tpm,
        "tpm2_evictcontrol",
        &["-C", "o", "-c", ctx, "0x81000001"],
    );
    // Without a resource manager the tools leave their transient objects loaded: they hold
    // swtpm's 3 slots until flushed.
    tpm2_tool(&tpm, "tpm2_flushcontext", &["-t"]);

    let mut config = Config::new(tpm.tcti(), keys.path().join("keys"));
    config.persistent_parent = Some(0x8100_0001);
    let vault = Tpm2Vault::open(config).await.unwrap();
    sign_and_agree(&vault).await;
    drop(vault);

    // A persistent handle that holds nothing.
    let mut config = Config::new(tpm.tcti(), keys.path().join("keys"));
    config.persistent_parent = Some(0x8100_0002);
    let e = Tpm2Vault::open(config).await.unwrap_err();
    let shown = e.to_string();
    assert!(shown.contains("0x81000002"), "{shown}");
    assert!(shown.contains("TPM_RC_HANDLE"), "{shown}");

    // Not a persistent handle at all.
    let mut config = Config::new(tpm.tcti(), keys.path().join("keys"));
    config.persistent_parent = Some(0x4000_0001);
    let e: Error = Tpm2Vault::open(config).await.unwrap_err().into();
    assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
}

#[tokio::test]
async fn an_owner_hierarchy_with_an_auth_value() {
    let tpm = Swtpm::start().unwrap();
    tpm2_tool(&tpm, "tpm2_changeauth", &["-c", "owner", "owner-secret-1"]);
    let keys = key_dir().unwrap();
    let mut config = Config::new(tpm.tcti(), keys.path());
    config.owner_auth = Some(SecretString::from("owner-secret-1"));
    let vault = Tpm2Vault::open(config).await.unwrap();
    assert!(!format!("{vault:?}").contains("owner-secret-1"));
    sign_and_agree(&vault).await;
    drop(vault);

    // Without it, the primary cannot be made.
    let e: Error = Tpm2Vault::open(Config::new(tpm.tcti(), keys.path()))
        .await
        .unwrap_err()
        .into();
    assert!(matches!(e, Error::AuthenticationFailed(_)), "{e:?}");
    // Restore an empty owner auth so that the fixture's shutdown needs none.
    tpm2_tool(
        &tpm,
        "tpm2_changeauth",
        &["-c", "owner", "-p", "owner-secret-1"],
    );
}

#[tokio::test]
async fn the_endorsement_hierarchy_is_another_parent() {
    let tpm = Swtpm::start().unwrap();
    let keys = key_dir().unwrap();
    let mut config = Config::new(tpm.tcti(), keys.path());
    config.hierarchy = keywarden_tpm2::Hierarchy::Endorsement;
    let vault = Tpm2Vault::open(config).await.unwrap();
    sign_and_agree(&vault).await;
    let listed = vault.list().await.unwrap();
    assert_eq!(listed.len(), 2);
    drop(vault);

    // The same blobs under the owner hierarchy's primary: another parent, refused by name.
    let vault = Tpm2Vault::open(Config::new(tpm.tcti(), keys.path()))
        .await
        .unwrap();
    let signer = listed
        .iter()
        .find(|k| k.algorithm == Algorithm::EcdsaP256Sha256)
        .unwrap();
    let e = vault.sign(&signer.key_ref, b"m").await.unwrap_err();
    assert!(e.to_string().contains("another parent key"), "{e}");
}
