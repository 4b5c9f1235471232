//! OpenSC's `pkcs11-tool` against the hsm-sim module: list slots, log in, generate an EC P-256
//! key pair, sign, read the public key; the signature verifies with the `p256` crate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn tool(module: &Path, cfg: &Path, args: &[&str]) -> String {
    let out = Command::new("pkcs11-tool")
        .arg("--module")
        .arg(module)
        .args(args)
        .env("KEYWARDEN_HSM_SIM_CONFIG", cfg)
        .output()
        .expect("pkcs11-tool (package opensc) must be installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pkcs11-tool {args:?} failed:\n{text}");
    text
}

/// The SEC1 point inside a DER SubjectPublicKeyInfo for P-256 (the last 65 bytes).
fn point_from_spki(der: &[u8]) -> &[u8] {
    assert!(der.len() > 65);
    let p = &der[der.len() - 65..];
    assert_eq!(p[0], 0x04);
    p
}

#[test]
fn pkcs11_tool_keygen_sign_and_read_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = hsm_sim_token(dir.path(), None, None);
    let so = hsm_sim_lib();

    let slots = tool(&so, &cfg, &["--list-slots"]);
    assert!(slots.contains("keywarden hsm-sim"), "{slots}");
    assert!(slots.contains("token label        : test"), "{slots}");

    let mechs = tool(&so, &cfg, &["--list-mechanisms"]);
    for m in [
        "ECDSA",
        "ECDSA-SHA256",
        "ECDH1-DERIVE",
        "SHA256",
        "ECDSA-KEY-PAIR-GEN",
        "EDDSA",
    ] {
        assert!(mechs.contains(m), "{m} missing from {mechs}");
    }

    let keygen = tool(
        &so,
        &cfg,
        &[
            "--login",
            "--pin",
            USER_PIN,
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            "--label",
            "tool",
            "--id",
            "0a0b",
        ],
    );
    assert!(keygen.contains("Key pair generated"), "{keygen}");

    let listed = tool(&so, &cfg, &["--login", "--pin", USER_PIN, "--list-objects"]);
    assert!(listed.contains("Private Key Object; EC"), "{listed}");
    assert!(listed.contains("never extractable"), "{listed}");

    let msg = dir.path().join("msg");
    std::fs::write(&msg, b"signed by pkcs11-tool").unwrap();
    let sig = dir.path().join("sig");
    tool(
        &so,
        &cfg,
        &[
            "--login",
            "--pin",
            USER_PIN,
            "--sign",
            "--mechanism",
            "ECDSA-SHA256",
            "--id",
            "0a0b",
            "--input-file",
            msg.to_str().unwrap(),
            "--output-file",
            sig.to_str().unwrap(),
        ],
    );
    let pubder = dir.path().join("pub.der");
    tool(
        &so,
        &cfg,
        &[
            "--read-object",
            "--type",
            "pubkey",
            "--id",
            "0a0b",
            "--output-file",
            pubder.to_str().unwrap(),
        ],
    );
    let der = std::fs::read(&pubder).unwrap();
    let signature = std::fs::read(&sig).unwrap();
    assert_eq!(signature.len(), 64, "raw r||s");
    p256_verify(point_from_spki(&der), b"signed by pkcs11-tool", &signature);

    // Raw ECDSA over a digest the tool computes itself.
    let sig2 = dir.path().join("sig2");
    let digest = {
        use sha2::Digest;
        sha2::Sha256::digest(b"signed by pkcs11-tool")
    };
    let dfile = dir.path().join("digest");
    std::fs::write(&dfile, digest).unwrap();
    tool(
        &so,
        &cfg,
        &[
            "--login",
            "--pin",
            USER_PIN,
            "--sign",
            "--mechanism",
            "ECDSA",
            "--id",
            "0a0b",
            "--input-file",
            dfile.to_str().unwrap(),
            "--output-file",
            sig2.to_str().unwrap(),
        ],
    );
    p256_verify_prehash(
        point_from_spki(&der),
        &digest,
        &std::fs::read(&sig2).unwrap(),
    );
}
