//! The service with hardware backends other than the embedded token: a SoftHSM2 token over
//! PKCS#11, and (with the `tpm2` feature) a TPM through swtpm. Signatures verified by OpenSSL.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::process::Command;

use common::{Service, write};

fn sign_and_verify_with_openssl(s: &Service, backend: &str, alg: &str) {
    let d = s.dir.path();
    let name = format!("k-{backend}");
    let created: serde_json::Value = serde_json::from_str(&s.ok(&[
        "--json",
        "key",
        "create",
        &name,
        "--alg",
        alg,
        "--backend",
        backend,
    ]))
    .unwrap();
    assert_eq!(created["backend"], backend);
    let msg = write(d, "msg", b"signed in hardware");
    let pem = d.join(format!("{name}.pem"));
    let sig = d.join(format!("{name}.sig"));
    s.ok(&["key", "public", &name, "--out", pem.to_str().unwrap()]);
    s.ok(&[
        "key",
        "sign",
        &name,
        "--in",
        msg.to_str().unwrap(),
        "--out",
        sig.to_str().unwrap(),
    ]);
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(&pem)
        .arg("-signature")
        .arg(&sig)
        .arg(&msg)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Verified OK"),
        "{out:?}"
    );
}

#[test]
fn a_softhsm2_backend_next_to_the_embedded_one() {
    let token = keywarden_pkcs11::testing::SoftHsm::new();
    let extra = format!(
        "default_backend = \"sim\"\n[backends.sim]\nkind = \"sim\"\n[backends.softhsm]\nkind = \"pkcs11\"\nmodule = \"{}\"\ntoken = {{ label = \"{}\" }}\npin = {{ value = \"{}\" }}\n",
        keywarden_pkcs11::testing::SOFTHSM2_MODULE,
        token.label(),
        keywarden_pkcs11::testing::USER_PIN,
    );
    let s = Service::start_with_env(
        &extra,
        &[("SOFTHSM2_CONF", &std::env::var("SOFTHSM2_CONF").unwrap())],
    );
    sign_and_verify_with_openssl(&s, "softhsm", "ecdsa-p256");
    sign_and_verify_with_openssl(&s, "sim", "ecdsa-p256");
    let health = s.ok(&["--json", "key", "list"]);
    assert!(
        health.contains("softhsm") && health.contains("\"sim\""),
        "{health}"
    );
}

#[cfg(feature = "tpm2")]
#[test]
fn a_tpm_backend_through_swtpm() {
    let tpm = keywarden_tpm2::testing::Swtpm::start().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let extra = format!(
        "default_backend = \"tpm\"\n[backends.tpm]\nkind = \"tpm2\"\ntcti = \"{}\"\nkey_dir = \"{}\"\n",
        tpm.tcti(),
        keys.path().display()
    );
    let s = Service::start_with_env(&extra, &[("TSS2_LOG", "all+NONE")]);
    sign_and_verify_with_openssl(&s, "tpm", "ecdsa-p256");
    let e = s.fails(&["key", "create", "ed", "--alg", "ed25519"]);
    assert!(e.contains("cannot generate ed25519"), "{e}");
    drop(s);
    drop(tpm);
}
