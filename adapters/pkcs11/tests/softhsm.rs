//! keywarden-pkcs11 against a real SoftHSM2 token: the shared conformance suite, the key
//! attributes PKCS#11 reports, recovery from lost sessions, and errors for bad configuration.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use keywarden_pkcs11::testing::{SOFTHSM2_MODULE, SoftHsm, USER_PIN};
use keywarden_pkcs11::{Error, PinSource, Pkcs11Config, Pkcs11Vault, TokenSelector, module};
use keywarden_vault::testing::{ExportAttempt, Harness, independent_verify};
use keywarden_vault::{Algorithm, KeyRef, KeySpec, Vault};
use secrecy::SecretString;

/// A logged-in raw cryptoki session on the fixture's token, sharing the vault's context.
fn raw_session(token: &SoftHsm) -> Session {
    let ctx = module::load(SOFTHSM2_MODULE.as_ref()).unwrap();
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == token.label())
        .unwrap();
    let session = ctx.open_rw_session(slot).unwrap();
    match session.login(UserType::User, Some(&SecretString::from(USER_PIN))) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
        }
        Err(e) => panic!("login: {e}"),
    }
    session
}

fn private_handle(session: &Session, key: &KeyRef) -> ObjectHandle {
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(key.as_bytes().to_vec()),
        ])
        .unwrap();
    assert_eq!(found.len(), 1);
    found[0]
}

/// Every way SoftHSM2 offers to get a private key out: read `CKA_VALUE`, flip
/// `CKA_EXTRACTABLE`/`CKA_SENSITIVE`, copy the object with relaxed attributes, wrap it.
fn export_attempts(token: &SoftHsm, key: &KeyRef) -> Vec<ExportAttempt> {
    let session = raw_session(token);
    let handle = private_handle(&session, key);
    let mut attempts = Vec::new();
    let value = session.get_attributes(handle, &[AttributeType::Value]);
    attempts.push(ExportAttempt {
        method: "C_GetAttributeValue(CKA_VALUE)".into(),
        outcome: match value {
            Ok(attrs) => match attrs.into_iter().find_map(|a| match a {
                Attribute::Value(v) => Some(v),
                _ => None,
            }) {
                Some(v) => Ok(v),
                None => Err("CKA_VALUE unavailable (sensitive)".into()),
            },
            Err(e) => Err(e.to_string()),
        },
    });
    for (name, attr) in [
        (
            "C_SetAttributeValue(CKA_EXTRACTABLE=true)",
            Attribute::Extractable(true),
        ),
        (
            "C_SetAttributeValue(CKA_SENSITIVE=false)",
            Attribute::Sensitive(false),
        ),
    ] {
        attempts.push(ExportAttempt {
            method: name.into(),
            outcome: match session.update_attributes(handle, &[attr]) {
                Ok(()) => Ok(b"attribute changed".to_vec()),
                Err(e) => Err(e.to_string()),
            },
        });
    }
    attempts.push(ExportAttempt {
        method: "C_CopyObject(CKA_SENSITIVE=false, CKA_EXTRACTABLE=true)".into(),
        outcome: match session.copy_object(
            handle,
            &[Attribute::Sensitive(false), Attribute::Extractable(true)],
        ) {
            Ok(copy) => {
                let v = session
                    .get_attributes(copy, &[AttributeType::Value])
                    .unwrap_or_default();
                let _ = session.destroy_object(copy);
                match v.into_iter().next() {
                    Some(Attribute::Value(v)) => Ok(v),
                    _ => Err("copy made but CKA_VALUE still unavailable".into()),
                }
            }
            Err(e) => Err(e.to_string()),
        },
    });
    // Wrap under a session AES key we control.
    let wrapping = session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::ValueLen(32.into()),
                Attribute::Wrap(true),
                Attribute::Encrypt(true),
            ],
        )
        .unwrap();
    attempts.push(ExportAttempt {
        method: "C_WrapKey(CKM_AES_KEY_WRAP_PAD)".into(),
        outcome: session
            .wrap_key(&Mechanism::AesKeyWrapPad, wrapping, handle)
            .map_err(|e| e.to_string()),
    });
    let _ = session.destroy_object(wrapping);
    attempts
}

async fn harness() -> Harness {
    let token = Arc::new(SoftHsm::new());
    let vault = Pkcs11Vault::open(token.config()).unwrap();
    let probe_token = Arc::clone(&token);
    Harness::new(Arc::new(vault), token).with_export_probe(Arc::new(move |key: &KeyRef| {
        export_attempts(&probe_token, key)
    }))
}

keywarden_vault::conformance_tests!(harness);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_private_keys_report_sensitive_and_never_extractable() {
    let token = SoftHsm::new();
    let vault = Pkcs11Vault::open(token.config()).unwrap();
    for algorithm in vault.info().algorithms {
        let key = vault
            .generate(&KeySpec::new(algorithm, "attrs").unwrap())
            .await
            .unwrap();
        let session = raw_session(&token);
        let handle = private_handle(&session, &key.key_ref);
        let attrs = session
            .get_attributes(
                handle,
                &[
                    AttributeType::Token,
                    AttributeType::Private,
                    AttributeType::Sensitive,
                    AttributeType::AlwaysSensitive,
                    AttributeType::NeverExtractable,
                    AttributeType::Extractable,
                    AttributeType::Sign,
                    AttributeType::Derive,
                ],
            )
            .unwrap();
        let want = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::AlwaysSensitive(true),
            Attribute::NeverExtractable(true),
            Attribute::Extractable(false),
            Attribute::Sign(algorithm.is_signing()),
            Attribute::Derive(algorithm.is_agreement()),
        ];
        for w in want {
            assert!(
                attrs.contains(&w),
                "{algorithm}: expected {w:?} in {attrs:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ed25519_is_discovered_from_the_mechanism_list() {
    let token = SoftHsm::new();
    let vault = Pkcs11Vault::open(token.config()).unwrap();
    let ctx = module::load(SOFTHSM2_MODULE.as_ref()).unwrap();
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == token.label())
        .unwrap();
    let mechs = ctx.get_mechanism_list(slot).unwrap();
    let has_eddsa = mechs.contains(&cryptoki::mechanism::MechanismType::EDDSA);
    assert_eq!(vault.info().supports(Algorithm::Ed25519), has_eddsa);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_after_an_outside_logout() {
    let token = SoftHsm::new();
    let vault = Pkcs11Vault::open(token.config()).unwrap();
    let key = vault
        .generate(&KeySpec::new(Algorithm::EcdsaP256Sha256, "logout").unwrap())
        .await
        .unwrap();
    let session = raw_session(&token);
    session.logout().unwrap();
    // The key is still found (after logging in again), not reported missing.
    let sig = vault.sign(&key.key_ref, b"after logout").await.unwrap();
    assert!(independent_verify(&key.public_key, b"after logout", &sig));
    assert_eq!(vault.describe(&key.key_ref).await.unwrap(), key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_survive_reopening_the_vault() {
    let token = SoftHsm::new();
    let key = {
        let vault = Pkcs11Vault::open(token.config()).unwrap();
        vault
            .generate(&KeySpec::new(Algorithm::EcdhP256, "persist").unwrap())
            .await
            .unwrap()
    };
    let vault = Pkcs11Vault::open(token.config()).unwrap();
    let listed = vault.list().await.unwrap();
    assert!(listed.contains(&key), "{listed:?}");
}

#[test]
fn wrong_pin_is_reported_and_names_the_token() {
    let token = SoftHsm::new();
    let mut config = token.config();
    config.pin = PinSource::Value(SecretString::from("not-the-pin"));
    let e = Pkcs11Vault::open(config).unwrap_err();
    assert!(matches!(e, Error::PinIncorrect(_)), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("PIN incorrect") && msg.contains(token.label()),
        "{msg}"
    );
    assert!(!msg.contains("not-the-pin"), "{msg}");
    let v: keywarden_vault::Error = e.into();
    assert!(matches!(v, keywarden_vault::Error::AuthenticationFailed(_)));
}

#[test]
fn missing_module_is_reported() {
    let config = Pkcs11Config::new(
        "/nonexistent/libnothing.so",
        TokenSelector::Label("x".into()),
        PinSource::Value(SecretString::from("1234")),
    );
    let e = Pkcs11Vault::open(config).unwrap_err();
    assert_eq!(
        e.to_string(),
        "PKCS#11 module not found: /nonexistent/libnothing.so does not exist"
    );
}

#[test]
fn a_file_that_is_not_a_module_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("fake.so");
    std::fs::write(&fake, b"not an ELF").unwrap();
    let config = Pkcs11Config::new(
        &fake,
        TokenSelector::Label("x".into()),
        PinSource::Value(SecretString::from("1")),
    );
    let e = Pkcs11Vault::open(config).unwrap_err();
    assert!(e.to_string().contains("could not be loaded"), "{e}");
}

#[test]
fn unknown_token_label_lists_the_tokens_present() {
    let token = SoftHsm::new();
    let mut config = token.config();
    config.token = TokenSelector::Label("no-such-token".into());
    let e = Pkcs11Vault::open(config).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with("no PKCS#11 token with label \"no-such-token\""),
        "{msg}"
    );
    assert!(msg.contains(token.label()), "{msg}");
}

#[test]
fn uninitialized_token_is_reported() {
    // SoftHSM2 always offers one free, uninitialized slot whose token label is empty.
    let token = SoftHsm::new();
    let mut config = token.config();
    config.token = TokenSelector::Label(String::new());
    let e = Pkcs11Vault::open(config).unwrap_err();
    assert!(matches!(e, Error::TokenNotInitialized(_)), "{e:?}");
    assert!(e.to_string().contains("is not initialized"), "{e}");
}

#[test]
fn missing_pin_env_var_is_reported() {
    let token = SoftHsm::new();
    let mut config = token.config();
    config.pin = PinSource::Env("KEYWARDEN_TEST_NO_SUCH_PIN_VAR".into());
    let e = Pkcs11Vault::open(config).unwrap_err();
    assert_eq!(
        e.to_string(),
        "PIN source: environment variable KEYWARDEN_TEST_NO_SUCH_PIN_VAR is not set"
    );
}

#[test]
fn debug_output_never_contains_the_pin() {
    let token = SoftHsm::new();
    let config = token.config();
    let vault = Pkcs11Vault::open(config.clone()).unwrap();
    let shown = format!("{config:?} {vault:?} {:?}", vault.info());
    assert!(!shown.contains(USER_PIN), "{shown}");
    assert!(shown.contains(token.label()), "{shown}");
}

#[tokio::test(flavor = "current_thread")]
async fn works_on_a_current_thread_runtime() {
    let token = SoftHsm::new();
    let vault = Pkcs11Vault::open(token.config()).unwrap();
    let key = vault
        .generate(&KeySpec::new(Algorithm::EcdsaP256Sha256, "ct").unwrap())
        .await
        .unwrap();
    let sig = vault.sign(&key.key_ref, b"current thread").await.unwrap();
    assert!(independent_verify(&key.public_key, b"current thread", &sig));
}

#[test]
fn max_sessions_is_bounded_by_config() {
    let token = SoftHsm::new();
    let mut config = token.config();
    config.max_sessions = Some(3);
    assert_eq!(Pkcs11Vault::open(config.clone()).unwrap().max_sessions(), 3);
    config.max_sessions = Some(0);
    let e = Pkcs11Vault::open(config).unwrap_err();
    assert!(
        e.to_string().contains("max_sessions must be at least 1"),
        "{e}"
    );
}

/// Every object of `class` under `key`'s id.
fn objects(session: &Session, class: ObjectClass, key: &KeyRef) -> Vec<ObjectHandle> {
    session
        .find_objects(&[
            Attribute::Class(class),
            Attribute::Id(key.as_bytes().to_vec()),
        ])
        .unwrap()
}

/// SoftHSM2 lists an object twice when two processes create objects in one token directory at
/// once; a copy of the key's objects (same key, same id) is that situation made on purpose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_listed_twice_still_works_and_is_listed_once() {
    let token = SoftHsm::new();
    let vault = Pkcs11Vault::open(token.config()).unwrap();
    let session = raw_session(&token);
    let mut keys = Vec::new();
    for (alg, label) in [
        (Algorithm::EcdsaP256Sha256, "twice-ecdsa"),
        (Algorithm::EcdhP256, "twice-ecdh"),
        (Algorithm::Ed25519, "twice-ed25519"),
    ] {
        let key = vault
            .generate(&KeySpec::new(alg, label).unwrap())
            .await
            .unwrap();
        for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
            let original = objects(&session, class, &key.key_ref)[0];
            session.copy_object(original, &[]).unwrap();
            assert_eq!(objects(&session, class, &key.key_ref).len(), 2);
        }
        keys.push(key);
    }
    // A fresh vault, so that nothing is cached from generation.
    drop(vault);
    let vault = Pkcs11Vault::open(token.config()).unwrap();
    for key in &keys {
        assert_eq!(&vault.describe(&key.key_ref).await.unwrap(), key);
        match key.algorithm {
            Algorithm::EcdhP256 => {
                let (secret, public) = keywarden_vault::testing::software_p256();
                let shared = vault.agree(&key.key_ref, &public).await.unwrap();
                assert_eq!(
                    shared.expose_secret(),
                    keywarden_vault::testing::software_ecdh(&secret, &key.public_key).as_slice()
                );
            }
            _ => {
                let sig = vault.sign(&key.key_ref, b"listed twice").await.unwrap();
                assert!(independent_verify(&key.public_key, b"listed twice", &sig));
            }
        }
    }
    let listed = vault.list().await.unwrap();
    assert_eq!(listed.len(), 3, "{listed:?}");
    // Destroy takes every copy.
    vault.destroy(&keys[0].key_ref).await.unwrap();
    for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
        assert!(objects(&session, class, &keys[0].key_ref).is_empty());
    }
}

/// Two different keys under one id: never guessed between, for any operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_different_keys_under_one_id_are_refused() {
    let token = SoftHsm::new();
    let vault = Pkcs11Vault::open(token.config()).unwrap();
    let session = raw_session(&token);
    for alg in [Algorithm::EcdsaP256Sha256, Algorithm::EcdhP256] {
        let a = vault
            .generate(&KeySpec::new(alg, "a").unwrap())
            .await
            .unwrap();
        let b = vault
            .generate(&KeySpec::new(alg, "b").unwrap())
            .await
            .unwrap();
        // b's private key moves under a's id; a keeps its own public key object.
        let b_private = objects(&session, ObjectClass::PRIVATE_KEY, &b.key_ref)[0];
        session
            .update_attributes(b_private, &[Attribute::Id(a.key_ref.as_bytes().to_vec())])
            .unwrap();
        let fresh = Pkcs11Vault::open(token.config()).unwrap();
        let e = fresh.describe(&a.key_ref).await.unwrap_err().to_string();
        assert!(
            e.contains("DUPLICATE_ID") && e.contains("not one key"),
            "{alg}: {e}"
        );
        let e = match alg {
            Algorithm::EcdhP256 => {
                let (_, public) = keywarden_vault::testing::software_p256();
                fresh.agree(&a.key_ref, &public).await.unwrap_err()
            }
            _ => fresh.sign(&a.key_ref, b"m").await.unwrap_err(),
        };
        assert!(e.to_string().contains("DUPLICATE_ID"), "{alg}: {e}");
        assert!(
            !fresh
                .list()
                .await
                .unwrap()
                .iter()
                .any(|k| k.key_ref == a.key_ref),
            "{alg}: listed"
        );
        assert!(
            fresh
                .destroy(&a.key_ref)
                .await
                .unwrap_err()
                .to_string()
                .contains("DUPLICATE_ID")
        );
        assert_eq!(
            objects(&session, ObjectClass::PRIVATE_KEY, &a.key_ref).len(),
            2
        );
        // Public key objects that differ under one id are refused too.
        let b_public = objects(&session, ObjectClass::PUBLIC_KEY, &b.key_ref)[0];
        session
            .update_attributes(b_public, &[Attribute::Id(a.key_ref.as_bytes().to_vec())])
            .unwrap();
        let e = Pkcs11Vault::open(token.config())
            .unwrap()
            .describe(&a.key_ref)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("different public keys"), "{alg}: {e}");
    }
}
