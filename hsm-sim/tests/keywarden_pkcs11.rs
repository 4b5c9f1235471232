//! keywarden-pkcs11 against hsm-sim loaded as a `.so`: the shared `keywarden-vault`
//! conformance suite, and the adapter's recovery from the faults hsm-sim injects.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::{Session, UserType};
use keywarden_hsm_sim::fault::{FaultConfig, RemovedWindow};
use keywarden_pkcs11::{PinSource, Pkcs11Config, Pkcs11Vault, TokenSelector, module};
use keywarden_vault::testing::{ExportAttempt, Harness, independent_verify};
use keywarden_vault::{Algorithm, KeyRef, KeySpec, Vault};
use secrecy::SecretString;

/// A token in a temporary directory, configured for this process.
struct Token {
    /// Kept alive (and so not deleted) as long as the vault uses the token.
    _dir: tempfile::TempDir,
}

impl Token {
    fn new(faults: Option<FaultConfig>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cfg = hsm_sim_token(dir.path(), faults, None);
        // SAFETY: one test per process (nextest); no other thread reads the environment yet.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("KEYWARDEN_HSM_SIM_CONFIG", &cfg)
        };
        Token { _dir: dir }
    }

    fn config(&self) -> Pkcs11Config {
        Pkcs11Config::new(
            hsm_sim_lib(),
            TokenSelector::Label("test".into()),
            PinSource::Value(SecretString::from(USER_PIN)),
        )
    }
}

fn raw_session() -> Session {
    let ctx = module::load(&hsm_sim_lib()).unwrap();
    let slot = ctx.get_slots_with_token().unwrap()[0];
    let s = ctx.open_rw_session(slot).unwrap();
    match s.login(UserType::User, Some(&SecretString::from(USER_PIN))) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
        }
        Err(e) => panic!("login: {e}"),
    }
    s
}

/// Every way the token might give a private key out.
fn export_attempts(key: &KeyRef) -> Vec<ExportAttempt> {
    let s = raw_session();
    let h = s
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(key.as_bytes().to_vec()),
        ])
        .unwrap()[0];
    let mut out = Vec::new();
    out.push(ExportAttempt {
        method: "C_GetAttributeValue(CKA_VALUE)".into(),
        outcome: match s.get_attributes(h, &[AttributeType::Value]) {
            Ok(v) => match v.into_iter().next() {
                Some(Attribute::Value(v)) => Ok(v),
                _ => Err("CKA_VALUE unavailable (sensitive)".into()),
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
        out.push(ExportAttempt {
            method: name.into(),
            outcome: s
                .update_attributes(h, &[attr])
                .map(|()| b"changed".to_vec())
                .map_err(|e| e.to_string()),
        });
    }
    out.push(ExportAttempt {
        method: "C_CopyObject(CKA_SENSITIVE=false)".into(),
        outcome: s
            .copy_object(
                h,
                &[Attribute::Sensitive(false), Attribute::Extractable(true)],
            )
            .map(|_| b"copied".to_vec())
            .map_err(|e| e.to_string()),
    });
    out
}

async fn harness() -> Harness {
    let token = Token::new(None);
    let vault = Pkcs11Vault::open(token.config()).unwrap();
    Harness::new(Arc::new(vault), token)
        .with_export_probe(Arc::new(|key: &KeyRef| export_attempts(key)))
}

keywarden_vault::conformance_tests!(harness);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_signing_run_survives_session_invalidation() {
    // 20 calls per session: key generation (a handful of calls) completes on its first session,
    // then a session dies every few signatures. With fewer, the session can die between
    // C_GenerateKeyPair and the adapter's next call; its retry then creates a second pair with
    // the same CKA_ID (reported to the adapter's owner), which is not what this test is about.
    let faults = FaultConfig {
        session_invalidate_after_ops: Some(20),
        ..Default::default()
    };
    let token = Token::new(Some(faults));
    let vault = Pkcs11Vault::open(token.config()).unwrap();
    let key = vault
        .generate(&KeySpec::new(Algorithm::EcdsaP256Sha256, "inv").unwrap())
        .await
        .unwrap();
    for i in 0..200u32 {
        let msg = i.to_be_bytes();
        let sig = vault
            .sign(&key.key_ref, &msg)
            .await
            .unwrap_or_else(|e| panic!("signature {i}: {e}"));
        assert!(
            independent_verify(&key.public_key, &msg, &sig),
            "signature {i} invalid"
        );
    }
}

/// Generates keys while sessions die every `every` calls, so some die between C_GenerateKeyPair
/// and the reads that follow it. The adapter retries only the part that did not happen: every key
/// generated is listed exactly once and usable.
///
/// 14 is the floor: a sign on a fresh session (open, login, key lookup, attribute reads, sign
/// init, sign) takes more calls than a shorter-lived session has, so with 13 or fewer even the
/// adapter's one retry on a fresh session cannot succeed (measured: 13 and below fail with
/// `CKR_SESSION_HANDLE_INVALID`, as they should). 14 to 18 all pass.
///
/// One value per test, hence per process: keywarden-pkcs11 keeps one initialized context per
/// module for the whole process (`C_Initialize` runs once), and hsm-sim reads its configuration
/// at `C_Initialize`. A second `Token` in the same process would not reconfigure the module: it
/// would keep the first token's faults and directory, which is deleted when that `Token` drops
/// (every write then fails with `CKR_DEVICE_ERROR`, "token storage I/O").
async fn key_generation_under_session_loss(every: u64) {
    let faults = FaultConfig {
        session_invalidate_after_ops: Some(every),
        ..Default::default()
    };
    let token = Token::new(Some(faults));
    let vault = Pkcs11Vault::open(token.config()).unwrap();
    let mut made = Vec::new();
    for i in 0..6 {
        let key = vault
            .generate(&KeySpec::new(Algorithm::EcdsaP256Sha256, format!("g{i}")).unwrap())
            .await
            .unwrap_or_else(|e| panic!("every {every}: generate {i}: {e}"));
        made.push(key);
    }
    // A duplicated CKA_ID would make describe fail with DUPLICATE_ID. (Listing many keys takes
    // more calls than a session lives here, so each key is described on its own.)
    for key in &made {
        assert_eq!(
            &vault.describe(&key.key_ref).await.unwrap(),
            key,
            "every {every}"
        );
        let sig = vault.sign(&key.key_ref, b"m").await.unwrap();
        assert!(
            independent_verify(&key.public_key, b"m", &sig),
            "every {every}"
        );
    }
}

macro_rules! key_generation_under_session_loss_tests {
    ($($name:ident: $every:expr,)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            key_generation_under_session_loss($every).await;
        }
    )*};
}

key_generation_under_session_loss_tests! {
    key_generation_under_frequent_session_loss_never_duplicates_an_id_every_14: 14,
    key_generation_under_frequent_session_loss_never_duplicates_an_id_every_15: 15,
    key_generation_under_frequent_session_loss_never_duplicates_an_id_every_16: 16,
    key_generation_under_frequent_session_loss_never_duplicates_an_id_every_17: 17,
    key_generation_under_frequent_session_loss_never_duplicates_an_id_every_18: 18,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_removal_window_gives_device_unavailable_then_recovers() {
    // The window's clock starts at C_Initialize, i.e. when the vault opens.
    let (start_ms, duration_ms) = (4000, 2000);
    let faults = FaultConfig {
        device_removed: vec![RemovedWindow {
            start_ms: Some(start_ms),
            duration_ms: Some(duration_ms),
            ..Default::default()
        }],
        ..Default::default()
    };
    let token = Token::new(Some(faults));
    let opened = std::time::Instant::now();
    let vault = Pkcs11Vault::open(token.config()).unwrap();
    let key = vault
        .generate(&KeySpec::new(Algorithm::EcdsaP256Sha256, "rm").unwrap())
        .await
        .unwrap();
    let sig = vault.sign(&key.key_ref, b"before").await.unwrap();
    assert!(independent_verify(&key.public_key, b"before", &sig));
    assert!(
        opened.elapsed() < Duration::from_millis(start_ms),
        "setup too slow for the window"
    );
    let at = |ms: u64| opened + Duration::from_millis(ms);
    tokio::time::sleep_until(at(start_ms + 300).into()).await;
    for _ in 0..3 {
        let e = vault.sign(&key.key_ref, b"during").await.unwrap_err();
        assert!(
            matches!(e, keywarden_vault::Error::DeviceUnavailable(_)),
            "{e:?}"
        );
    }
    tokio::time::sleep_until(at(start_ms + duration_ms + 600).into()).await;
    let sig = vault.sign(&key.key_ref, b"after").await.unwrap();
    assert!(independent_verify(&key.public_key, b"after", &sig));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_stays_under_the_session_limit() {
    let faults = FaultConfig {
        max_sessions: Some(3),
        ..Default::default()
    };
    let token = Token::new(Some(faults));
    let vault = Arc::new(Pkcs11Vault::open(token.config()).unwrap());
    assert!(
        vault.max_sessions() <= 3,
        "pool allows {}",
        vault.max_sessions()
    );
    let key = vault
        .generate(&KeySpec::new(Algorithm::EcdsaP256Sha256, "lim").unwrap())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for t in 0..8u8 {
        let (vault, key) = (Arc::clone(&vault), key.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..20u8 {
                let sig = vault.sign(&key.key_ref, &[t, i]).await.unwrap();
                assert!(independent_verify(&key.public_key, &[t, i], &sig));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}
