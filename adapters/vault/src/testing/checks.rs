//! The individual checks. Each takes a fresh [`Harness`] and panics with a message that names
//! what the backend got wrong.

use std::collections::BTreeSet;
use std::sync::Arc;

use ed25519_dalek::Verifier as _;

use super::{Check, Harness};
use crate::{
    AgreementKey, Algorithm, Error, KeyInfo, KeyKind, KeyRef, KeySpec, MAX_MESSAGE_LEN, PublicKey,
    SigningKey,
};

fn spec(algorithm: Algorithm, label: &str) -> KeySpec {
    KeySpec::new(algorithm, label).unwrap()
}

async fn generate(h: &Harness, algorithm: Algorithm, label: &str) -> KeyInfo {
    h.vault
        .generate(&spec(algorithm, label))
        .await
        .unwrap_or_else(|e| panic!("generate {algorithm} on {}: {e}", h.vault.info().name))
}

/// A software P-256 key pair from the OS RNG, independent of any backend.
pub fn software_p256() -> (p256::SecretKey, PublicKey) {
    loop {
        let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut()).unwrap();
        if let Ok(sk) = p256::SecretKey::from_slice(bytes.as_ref()) {
            let pk = PublicKey::from_p256(&sk.public_key());
            return (sk, pk);
        }
    }
}

/// ECDH computed in software with `p256`.
pub fn software_ecdh(secret: &p256::SecretKey, peer: &PublicKey) -> Vec<u8> {
    let peer = peer.to_p256().expect("a P-256 peer key");
    let shared = p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), peer.as_affine());
    shared.raw_secret_bytes().to_vec()
}

/// Verifies with the `p256` / `ed25519-dalek` crates directly (not through `crate::verify`).
pub fn independent_verify(public: &PublicKey, message: &[u8], sig: &crate::Signature) -> bool {
    match public.kind() {
        KeyKind::P256 => {
            let vk = p256::ecdsa::VerifyingKey::from(public.to_p256().unwrap());
            let Ok(s) = p256::ecdsa::Signature::from_slice(sig.as_bytes()) else {
                return false;
            };
            vk.verify(message, &s).is_ok()
        }
        KeyKind::Ed25519 => {
            let vk = public.to_ed25519().unwrap();
            let s = ed25519_dalek::Signature::from_bytes(sig.as_bytes());
            vk.verify(message, &s).is_ok()
        }
    }
}

fn random_ref() -> KeyRef {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).unwrap();
    KeyRef::new(bytes.to_vec())
}

/// Every algorithm the backend reports generates a key whose public half is well-formed and of
/// the right kind, with the label kept.
pub async fn generates_each_supported_algorithm(h: &Harness) {
    let info = h.vault.info();
    assert!(
        info.supports(Algorithm::EcdsaP256Sha256) && info.supports(Algorithm::EcdhP256),
        "{}: every backend must support ECDSA P-256 and ECDH P-256, reports {:?}",
        info.name,
        info.algorithms
    );
    for algorithm in info.algorithms.clone() {
        let label = format!("gen-{algorithm}");
        let key = generate(h, algorithm, &label).await;
        assert_eq!(key.algorithm, algorithm);
        assert_eq!(key.label, label);
        assert_eq!(key.public_key.kind(), algorithm.key_kind());
        // Re-parse the public key from its raw and SPKI forms: it must be a valid point.
        PublicKey::from_raw(algorithm.key_kind(), key.public_key.as_bytes()).unwrap();
        PublicKey::from_spki_der(&key.public_key.to_spki_der()).unwrap();
        let described = h.vault.describe(&key.key_ref).await.unwrap();
        assert_eq!(described, key, "describe() disagrees with generate()");
    }
}

/// Algorithms the backend does not report are refused with `UnsupportedAlgorithm`.
pub async fn refuses_unsupported_algorithms(h: &Harness) {
    let info = h.vault.info();
    let missing: Vec<_> = Algorithm::ALL
        .into_iter()
        .filter(|a| !info.supports(*a))
        .collect();
    if missing.is_empty() {
        println!(
            "conformance: {} supports every algorithm; nothing to refuse",
            info.name
        );
    }
    for algorithm in missing {
        let err = h
            .vault
            .generate(&spec(algorithm, "unsupported"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedAlgorithm(_)),
            "{}: generating {algorithm} gave {err:?}",
            info.name
        );
    }
}

/// ECDSA signatures verify with the `p256` crate, including DER conversion; tampering breaks them.
pub async fn ecdsa_signatures_verify_with_p256(h: &Harness) {
    let key = generate(h, Algorithm::EcdsaP256Sha256, "ecdsa").await;
    let vk = p256::ecdsa::VerifyingKey::from(key.public_key.to_p256().unwrap());
    let big = vec![0x5a; MAX_MESSAGE_LEN];
    for message in [&b"x"[..], b"keywarden signs this", &big] {
        let sig = h.vault.sign(&key.key_ref, message).await.unwrap();
        assert_eq!(sig.algorithm(), Algorithm::EcdsaP256Sha256);
        let raw = p256::ecdsa::Signature::from_slice(sig.as_bytes()).unwrap();
        vk.verify(message, &raw)
            .unwrap_or_else(|e| panic!("p256 rejects the backend's signature: {e}"));
        let der = sig.to_der().unwrap();
        vk.verify(message, &p256::ecdsa::Signature::from_der(&der).unwrap())
            .unwrap();
        let mut tampered = message.to_vec();
        tampered[0] ^= 1;
        assert!(
            vk.verify(&tampered, &raw).is_err(),
            "tampered message verified"
        );
    }
    // Two signatures of the same message both verify (randomized or deterministic nonces are
    // both fine), and neither verifies under another key.
    let other = generate(h, Algorithm::EcdsaP256Sha256, "ecdsa-other").await;
    let sig = h.vault.sign(&key.key_ref, b"same").await.unwrap();
    assert!(!independent_verify(&other.public_key, b"same", &sig));
}

/// Ed25519 signatures verify with `ed25519-dalek` (when the backend has Ed25519).
pub async fn ed25519_signatures_verify_with_dalek(h: &Harness) {
    if h.skip(Check::Ed25519, "ed25519_signatures_verify_with_dalek") {
        return;
    }
    if !h.vault.info().supports(Algorithm::Ed25519) {
        println!(
            "conformance: {} has no Ed25519; refusal checked by refuses_unsupported_algorithms",
            h.vault.info().name
        );
        return;
    }
    let key = generate(h, Algorithm::Ed25519, "ed").await;
    let vk = key.public_key.to_ed25519().unwrap();
    for message in [&b"x"[..], b"keywarden signs this with ed25519"] {
        let sig = h.vault.sign(&key.key_ref, message).await.unwrap();
        assert_eq!(sig.algorithm(), Algorithm::Ed25519);
        let s = ed25519_dalek::Signature::from_bytes(sig.as_bytes());
        vk.verify_strict(message, &s)
            .unwrap_or_else(|e| panic!("ed25519-dalek rejects the backend's signature: {e}"));
        // Ed25519 is deterministic: the same message gives the same signature.
        let again = h.vault.sign(&key.key_ref, message).await.unwrap();
        assert_eq!(again, sig, "Ed25519 signatures must be deterministic");
    }
}

/// ECDH through the backend equals ECDH computed in software against a fresh `p256` key.
pub async fn ecdh_matches_software(h: &Harness) {
    if h.skip(Check::Agreement, "ecdh_matches_software") {
        return;
    }
    let key = generate(h, Algorithm::EcdhP256, "ecdh").await;
    for _ in 0..3 {
        let (eph_secret, eph_public) = software_p256();
        let ours = h.vault.agree(&key.key_ref, &eph_public).await.unwrap();
        let theirs = software_ecdh(&eph_secret, &key.public_key);
        assert_eq!(ours.len(), 32);
        assert_eq!(
            ours.expose_secret(),
            &theirs[..],
            "backend ECDH differs from software ECDH"
        );
    }
}

/// The public key is the same from generate, describe, public_key and list, call after call.
pub async fn public_key_is_stable(h: &Harness) {
    let key = generate(h, Algorithm::EcdsaP256Sha256, "stable").await;
    for _ in 0..3 {
        assert_eq!(
            h.vault.public_key(&key.key_ref).await.unwrap(),
            key.public_key
        );
    }
    let listed = h.vault.list().await.unwrap();
    let entry = listed
        .iter()
        .find(|k| k.key_ref == key.key_ref)
        .expect("generated key is listed");
    assert_eq!(entry, &key);
}

/// A destroyed key is gone from the list and every operation on it answers `KeyNotFound`;
/// other keys are untouched.
pub async fn list_and_destroy(h: &Harness) {
    let a = generate(h, Algorithm::EcdsaP256Sha256, "list-a").await;
    let b = generate(h, Algorithm::EcdsaP256Sha256, "list-b").await;
    let c = if h.vault.info().supports(Algorithm::EcdhP256) {
        generate(h, Algorithm::EcdhP256, "list-c").await
    } else {
        generate(h, Algorithm::EcdsaP256Sha256, "list-c").await
    };
    let refs: BTreeSet<_> = h
        .vault
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|k| (k.key_ref, k.label))
        .collect();
    for k in [&a, &b, &c] {
        assert!(
            refs.contains(&(k.key_ref.clone(), k.label.clone())),
            "{k:?} not listed"
        );
    }

    h.vault.destroy(&b.key_ref).await.unwrap();
    let after: BTreeSet<_> = h
        .vault
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.key_ref)
        .collect();
    assert!(!after.contains(&b.key_ref), "destroyed key still listed");
    assert!(after.contains(&a.key_ref) && after.contains(&c.key_ref));

    let not_found = |e: Error, op: &str| {
        assert!(
            matches!(e, Error::KeyNotFound(_)),
            "{op} on a destroyed key gave {e:?}"
        );
    };
    not_found(h.vault.sign(&b.key_ref, b"m").await.unwrap_err(), "sign");
    not_found(
        h.vault.public_key(&b.key_ref).await.unwrap_err(),
        "public_key",
    );
    not_found(h.vault.describe(&b.key_ref).await.unwrap_err(), "describe");
    not_found(h.vault.destroy(&b.key_ref).await.unwrap_err(), "destroy");
    let sig = h.vault.sign(&a.key_ref, b"still here").await.unwrap();
    assert!(independent_verify(&a.public_key, b"still here", &sig));
}

fn refused(e: &Error) -> bool {
    matches!(
        e,
        Error::UnsupportedAlgorithm(_) | Error::PermissionDenied(_)
    )
}

/// Signing with an ECDH key, or agreeing with a signing key, is refused cleanly; so is a peer
/// key of the wrong kind.
pub async fn wrong_operation_is_refused(h: &Harness) {
    let signer = generate(h, Algorithm::EcdsaP256Sha256, "wrong-op-sign").await;
    let (_, peer) = software_p256();
    let e = h.vault.agree(&signer.key_ref, &peer).await.unwrap_err();
    assert!(refused(&e), "agree with an ECDSA key gave {e:?}");

    if !h.skip(Check::Agreement, "wrong_operation_is_refused (ECDH key)") {
        let agreer = generate(h, Algorithm::EcdhP256, "wrong-op-agree").await;
        let e = h.vault.sign(&agreer.key_ref, b"m").await.unwrap_err();
        assert!(refused(&e), "sign with an ECDH key gave {e:?}");
        let ed_peer = PublicKey::from_ed25519(&[
            0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64,
            0x07, 0x3a, 0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68,
            0xf7, 0x07, 0x51, 0x1a,
        ])
        .unwrap();
        let e = h.vault.agree(&agreer.key_ref, &ed_peer).await.unwrap_err();
        assert!(
            matches!(e, Error::InvalidInput(_) | Error::UnsupportedAlgorithm(_)),
            "agree with an Ed25519 peer key gave {e:?}"
        );
        // The key still works after the refusals.
        let (s, p) = software_p256();
        let ours = h.vault.agree(&agreer.key_ref, &p).await.unwrap();
        assert_eq!(
            ours.expose_secret(),
            &software_ecdh(&s, &agreer.public_key)[..]
        );
    }
}

/// 64 tasks signing at once all get valid signatures.
pub async fn concurrent_signing(h: &Harness) {
    let key = generate(h, Algorithm::EcdsaP256Sha256, "concurrent").await;
    let mut tasks = Vec::new();
    for i in 0..64u32 {
        let vault = Arc::clone(&h.vault);
        let key_ref = key.key_ref.clone();
        tasks.push(tokio::spawn(async move {
            let message = format!("message {i}").into_bytes();
            let sig = vault.sign(&key_ref, &message).await;
            (message, sig)
        }));
    }
    for task in tasks {
        let (message, sig) = task.await.unwrap();
        let sig = sig.unwrap_or_else(|e| panic!("concurrent sign failed: {e}"));
        assert!(
            independent_verify(&key.public_key, &message, &sig),
            "a concurrent signature does not verify"
        );
    }
}

/// Every way the backend offers to read a private key back fails.
pub async fn private_key_is_not_exportable(h: &Harness) {
    let info = h.vault.info();
    assert!(
        info.hardware_resident,
        "{} says its keys are not hardware-resident",
        info.name
    );
    let probe = h
        .export_probe
        .as_ref()
        .unwrap_or_else(|| panic!("{}: the harness must provide an export probe", info.name));
    let mut keys = vec![generate(h, Algorithm::EcdsaP256Sha256, "export-sign").await];
    if !h.skip(Check::Agreement, "private_key_is_not_exportable (ECDH key)") {
        keys.push(generate(h, Algorithm::EcdhP256, "export-agree").await);
    }
    for key in keys {
        let attempts = probe(&key.key_ref);
        assert!(!attempts.is_empty(), "the export probe tried nothing");
        for attempt in attempts {
            if let Ok(bytes) = &attempt.outcome {
                panic!(
                    "{}: {} returned {} bytes of a private key",
                    info.name,
                    attempt.method,
                    bytes.len()
                );
            }
            println!(
                "conformance: {}: {} refused: {}",
                info.name,
                attempt.method,
                attempt.outcome.err().unwrap_or_default()
            );
        }
    }
}

/// An unknown reference answers `KeyNotFound` for every operation.
pub async fn unknown_key_is_not_found(h: &Harness) {
    let r = random_ref();
    let (_, peer) = software_p256();
    let errors = [
        ("describe", h.vault.describe(&r).await.unwrap_err()),
        ("public_key", h.vault.public_key(&r).await.unwrap_err()),
        ("sign", h.vault.sign(&r, b"m").await.unwrap_err()),
        ("agree", h.vault.agree(&r, &peer).await.unwrap_err()),
        ("destroy", h.vault.destroy(&r).await.unwrap_err()),
    ];
    for (op, e) in errors {
        assert!(
            matches!(e, Error::KeyNotFound(_)),
            "{op} on an unknown key gave {e:?}"
        );
        assert!(
            e.to_string().contains(&r.to_string()),
            "{op}: error does not name the key: {e}"
        );
    }
}

/// Empty and oversized messages are refused with `InvalidInput` naming the limit.
pub async fn message_bounds_are_enforced(h: &Harness) {
    let key = generate(h, Algorithm::EcdsaP256Sha256, "bounds").await;
    let e = h.vault.sign(&key.key_ref, b"").await.unwrap_err();
    assert!(
        matches!(e, Error::InvalidInput(_)),
        "empty message gave {e:?}"
    );
    assert!(e.to_string().contains("empty"), "{e}");
    let e = h
        .vault
        .sign(&key.key_ref, &vec![0; MAX_MESSAGE_LEN + 1])
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::InvalidInput(_)),
        "oversized message gave {e:?}"
    );
    assert!(e.to_string().contains("limit is 1048576 bytes"), "{e}");
}

/// `SigningKey` and `AgreementKey` do their one operation and refuse to be made for the other
/// kind of key.
pub async fn handles_are_capabilities(h: &Harness) {
    let key = generate(h, Algorithm::EcdsaP256Sha256, "handle-sign").await;
    let signer = SigningKey::open(Arc::clone(&h.vault), &key.key_ref)
        .await
        .unwrap();
    assert_eq!(signer.public_key(), &key.public_key);
    let sig = signer.sign(b"through a handle").await.unwrap();
    assert!(independent_verify(
        signer.public_key(),
        b"through a handle",
        &sig
    ));
    let e = AgreementKey::open(Arc::clone(&h.vault), &key.key_ref)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::UnsupportedAlgorithm(_)), "{e:?}");
    let shown = format!("{signer:?}");
    assert!(
        shown.contains("SigningKey") && shown.contains(&key.key_ref.to_string()),
        "{shown}"
    );

    if !h.skip(Check::Agreement, "handles_are_capabilities (AgreementKey)") {
        let key = generate(h, Algorithm::EcdhP256, "handle-agree").await;
        let agreer = AgreementKey::open(Arc::clone(&h.vault), &key.key_ref)
            .await
            .unwrap();
        let (s, p) = software_p256();
        let secret = agreer.agree(&p).await.unwrap();
        assert_eq!(
            secret.expose_secret(),
            &software_ecdh(&s, agreer.public_key())[..]
        );
        assert_eq!(format!("{secret:?}"), "SharedSecret(..)");
        let e = SigningKey::open(Arc::clone(&h.vault), &key.key_ref)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::UnsupportedAlgorithm(_)), "{e:?}");
    }
}
