//! Project Wycheproof vectors against the vault's input validation and verification helpers.
//!
//! The vectors live in `shared/vectors/wycheproof/` beside the repository (read-only, shared
//! by the team); `KEYWARDEN_WYCHEPROOF_DIR` overrides the location.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;

use keywarden_vault::{Algorithm, Error, PublicKey, Signature, verify};
use serde_json::Value;

fn load(name: &str) -> Value {
    let dir = std::env::var_os("KEYWARDEN_WYCHEPROOF_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors/wycheproof")
        });
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

struct Case {
    id: u64,
    result: String,
    flags: Vec<String>,
    test: Value,
    group: Value,
}

fn cases(file: &Value) -> Vec<Case> {
    let mut out = Vec::new();
    for group in file["testGroups"].as_array().unwrap() {
        for test in group["tests"].as_array().unwrap() {
            out.push(Case {
                id: test["tcId"].as_u64().unwrap(),
                result: test["result"].as_str().unwrap().to_owned(),
                flags: test["flags"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f.as_str().unwrap().to_owned())
                    .collect(),
                test: test.clone(),
                group: group.clone(),
            });
        }
    }
    assert!(out.len() > 100, "suspiciously few vectors: {}", out.len());
    out
}

fn hexfield(v: &Value, field: &str) -> Vec<u8> {
    hex::decode(v[field].as_str().unwrap()).unwrap()
}

/// Peer keys: every invalid point is refused with `InvalidInput`; every valid one is accepted
/// and, with the vector's private key, gives the vector's shared secret in software.
fn check_ecdh_file(name: &str, parse: fn(&[u8]) -> keywarden_vault::Result<PublicKey>) {
    let file = load(name);
    let (mut invalid, mut valid) = (0, 0);
    for case in cases(&file) {
        let public = hexfield(&case.test, "public");
        let parsed = parse(&public);
        match case.result.as_str() {
            "invalid" => {
                invalid += 1;
                match parsed {
                    Err(Error::InvalidInput(_)) => {}
                    // A syntactically fine key whose ECDH Wycheproof rejects for another
                    // reason would be a gap in our validation: fail loudly.
                    other => panic!(
                        "{name} tc {} {:?}: accepted invalid key: {other:?}",
                        case.id, case.flags
                    ),
                }
            }
            "valid" => {
                valid += 1;
                let pk = parsed
                    .unwrap_or_else(|e| panic!("{name} tc {}: refused valid key: {e}", case.id));
                let private = hexfield(&case.test, "private");
                // Wycheproof private keys may carry a leading zero byte.
                let private = &private[private.len().saturating_sub(32)..];
                let mut padded = [0u8; 32];
                padded[32 - private.len()..].copy_from_slice(private);
                let sk = p256::SecretKey::from_slice(&padded).unwrap();
                let shared = keywarden_vault::testing::software_ecdh(&sk, &pk);
                assert_eq!(
                    shared,
                    hexfield(&case.test, "shared"),
                    "{name} tc {}",
                    case.id
                );
            }
            _ => {} // "acceptable": either answer is allowed.
        }
    }
    assert!(
        invalid >= 20 && valid >= 300,
        "{name}: {invalid} invalid, {valid} valid"
    );
}

#[test]
fn ecdh_ecpoint_peer_keys() {
    check_ecdh_file("ecdh_secp256r1_ecpoint_test.json", PublicKey::from_sec1);
}

#[test]
fn ecdh_spki_peer_keys() {
    check_ecdh_file("ecdh_secp256r1_test.json", PublicKey::from_spki_der);
}

fn check_signature_file(name: &str, der: bool) {
    let file = load(name);
    let (mut valid, mut invalid) = (0, 0);
    for case in cases(&file) {
        let pk_der = hexfield(&case.group, "publicKeyDer");
        let pk = PublicKey::from_spki_der(&pk_der).unwrap();
        let msg = hexfield(&case.test, "msg");
        let sig = hexfield(&case.test, "sig");
        let outcome = match (pk.kind(), der) {
            (keywarden_vault::KeyKind::P256, true) => verify::verify_der(&pk, &msg, &sig),
            _ => verify::verify_raw(&pk, &msg, &sig),
        };
        match case.result.as_str() {
            "valid" => {
                valid += 1;
                outcome.unwrap_or_else(|e| {
                    panic!(
                        "{name} tc {} {:?}: valid rejected: {e}",
                        case.id, case.flags
                    )
                });
            }
            "invalid" => {
                invalid += 1;
                assert!(
                    outcome.is_err(),
                    "{name} tc {} {:?}: invalid accepted",
                    case.id,
                    case.flags
                );
            }
            _ => {}
        }
    }
    assert!(
        valid > 50 && invalid > 50,
        "{name}: {valid} valid, {invalid} invalid"
    );
}

#[test]
fn ecdsa_p256_sha256_der() {
    check_signature_file("ecdsa_secp256r1_sha256_test.json", true);
}

#[test]
fn ecdsa_p256_sha256_p1363() {
    check_signature_file("ecdsa_secp256r1_sha256_p1363_test.json", false);
}

#[test]
fn ed25519() {
    check_signature_file("ed25519_test.json", false);
}

#[test]
fn signature_kind_must_match_key() {
    let file = load("ed25519_test.json");
    let group = &file["testGroups"][0];
    let pk = PublicKey::from_spki_der(&hexfield(group, "publicKeyDer")).unwrap();
    let sig = Signature::from_bytes(Algorithm::EcdsaP256Sha256, &[1; 64]).unwrap();
    let e = verify::verify(&pk, b"m", &sig).unwrap_err();
    assert!(e.to_string().contains("does not match"), "{e}");
}
