//! hsm-sim loaded as a `.so` through cryptoki: keys, signatures checked with independent
//! implementations, ECDH against a software computation, persistence, PINs, faults.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use keywarden_hsm_sim::fault::{ErrorFault, FaultConfig, RemovedWindow};
use sha2::Digest;

fn pin(p: &str) -> AuthPin {
    AuthPin::new(p.into())
}

#[test]
fn p256_signatures_verify_with_p256_crate() {
    let f = Fixture::new(Kind::HsmSim);
    let s = f.user_rw();
    let (pubk, privk) = gen_p256(&s, true, true, false, b"k1");
    let point = public_point(&s, pubk);
    assert_eq!(point.len(), 65);
    let msg = b"keywarden hsm-sim";
    let sig = s.sign(&Mechanism::EcdsaSha256, privk, msg).unwrap();
    p256_verify(&point, msg, &sig);
    let digest = sha2::Sha256::digest(msg);
    let sig2 = s.sign(&Mechanism::Ecdsa, privk, &digest).unwrap();
    p256_verify_prehash(&point, &digest, &sig2);
    // Multi-part.
    s.sign_init(&Mechanism::EcdsaSha256, privk).unwrap();
    s.sign_update(b"keywarden ").unwrap();
    s.sign_update(b"hsm-sim").unwrap();
    let sig3 = s.sign_final().unwrap();
    p256_verify(&point, msg, &sig3);
    // The token's own verification agrees and rejects a modified message.
    s.verify(&Mechanism::EcdsaSha256, pubk, msg, &sig).unwrap();
    s.verify(&Mechanism::Ecdsa, pubk, &digest, &sig).unwrap();
    let e = s
        .verify(&Mechanism::EcdsaSha256, pubk, b"other", &sig)
        .unwrap_err();
    assert_eq!(rv(e), RvError::SignatureInvalid);
    s.verify_init(&Mechanism::EcdsaSha256, pubk).unwrap();
    s.verify_update(msg).unwrap();
    s.verify_final(&sig3).unwrap();
}

#[test]
fn ed25519_signatures_verify_with_dalek() {
    let f = Fixture::new(Kind::HsmSim);
    let s = f.user_rw();
    let pub_t = vec![
        Attribute::EcParams(ED25519_OID.to_vec()),
        Attribute::Token(true),
    ];
    let priv_t = vec![Attribute::Token(true), Attribute::Sign(true)];
    let (pubk, privk) = s
        .generate_key_pair(&Mechanism::EccEdwardsKeyPairGen, &pub_t, &priv_t)
        .unwrap();
    let point = public_point(&s, pubk);
    assert_eq!(point.len(), 32);
    let mech = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
    let sig = s.sign(&mech, privk, b"ed message").unwrap();
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&point.clone().try_into().unwrap()).unwrap();
    let sig = ed25519_dalek::Signature::from_slice(&sig).unwrap();
    vk.verify_strict(b"ed message", &sig).unwrap();
    s.verify(&mech, pubk, b"ed message", &sig.to_bytes())
        .unwrap();
    // ECDSA mechanisms do not fit an Ed25519 key.
    let e = s.sign(&Mechanism::EcdsaSha256, privk, b"x").unwrap_err();
    assert_eq!(rv(e), RvError::KeyTypeInconsistent);
}

#[test]
fn ecdh_matches_software_computation() {
    let f = Fixture::new(Kind::HsmSim);
    let s = f.user_rw();
    let (pubk, privk) = gen_p256(&s, true, false, true, b"dh");
    let token_point = public_point(&s, pubk);
    let peer = p256::SecretKey::from_slice(&[7u8; 32]).unwrap();
    let peer_point = peer.public_key().to_sec1_bytes();
    let params = Ecdh1DeriveParams::new(EcKdf::null(), &peer_point);
    let template = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::Token(false),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
    ];
    let k = s
        .derive_key(&Mechanism::Ecdh1Derive(params), privk, &template)
        .unwrap();
    let value = match &s.get_attributes(k, &[AttributeType::Value]).unwrap()[0] {
        Attribute::Value(v) => v.clone(),
        other => panic!("{other:?}"),
    };
    let token_pub = p256::PublicKey::from_sec1_bytes(&token_point).unwrap();
    let expected = p256::ecdh::diffie_hellman(peer.to_nonzero_scalar(), token_pub.as_affine());
    assert_eq!(value.as_slice(), expected.raw_secret_bytes().as_slice());
    // A sensitive derived key keeps its value.
    let sensitive = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Token(false),
    ];
    let params = Ecdh1DeriveParams::new(EcKdf::null(), &peer_point);
    let k2 = s
        .derive_key(&Mechanism::Ecdh1Derive(params), privk, &sensitive)
        .unwrap();
    let info = s.get_attribute_info(k2, &[AttributeType::Value]).unwrap();
    assert!(
        matches!(info[0], cryptoki::object::AttributeInfo::Sensitive),
        "{info:?}"
    );
    // The key may derive but not sign.
    let e = s.sign(&Mechanism::EcdsaSha256, privk, b"x").unwrap_err();
    assert_eq!(rv(e), RvError::KeyFunctionNotPermitted);
}

#[test]
fn token_objects_survive_restart_and_secrets_stay_encrypted() {
    let f = Fixture::new(Kind::HsmSim);
    let (point, scalar) = {
        let s = f.user_rw();
        let (pubk, _) = gen_p256(&s, true, true, false, b"persist");
        // An extractable key lets the test know a scalar to look for on disk.
        let pub_t = vec![
            Attribute::EcParams(P256_OID.to_vec()),
            Attribute::Token(true),
        ];
        let priv_t = vec![
            Attribute::Token(true),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
            Attribute::Label(b"open".to_vec()),
        ];
        let (_, k) = s
            .generate_key_pair(&Mechanism::EccKeyPairGen, &pub_t, &priv_t)
            .unwrap();
        let scalar = match &s.get_attributes(k, &[AttributeType::Value]).unwrap()[0] {
            Attribute::Value(v) => v.clone(),
            other => panic!("{other:?}"),
        };
        (public_point(&s, pubk), scalar)
    };
    f.pkcs11.finalize().unwrap();
    // Nothing on disk holds the scalar in clear.
    let needle = hex::encode(&scalar);
    for e in std::fs::read_dir(f.dir.path().join("token/objects")).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        assert!(!text.contains(&needle), "private key stored in clear");
    }
    let p = Pkcs11::new(&f.lib).unwrap();
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let s = p.open_rw_session(f.slot).unwrap();
    // Before login only public objects are visible.
    let before = s
        .find_objects(&[Attribute::Id(b"persist".to_vec())])
        .unwrap();
    assert_eq!(before.len(), 1);
    s.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
    let keys = s
        .find_objects(&[
            Attribute::Id(b"persist".to_vec()),
            Attribute::Class(ObjectClass::PRIVATE_KEY),
        ])
        .unwrap();
    assert_eq!(keys.len(), 1);
    let sig = s
        .sign(&Mechanism::EcdsaSha256, keys[0], b"after restart")
        .unwrap();
    p256_verify(&point, b"after restart", &sig);
}

#[test]
fn set_pin_rewraps_keys() {
    let f = Fixture::new(Kind::HsmSim);
    let s = f.user_rw();
    let (pubk, _) = gen_p256(&s, true, true, false, b"pk");
    let point = public_point(&s, pubk);
    s.set_pin(&pin(USER_PIN), &pin("new-pin-99")).unwrap();
    s.logout().unwrap();
    let e = s.login(UserType::User, Some(&pin(USER_PIN))).unwrap_err();
    assert_eq!(rv(e), RvError::PinIncorrect);
    s.login(UserType::User, Some(&pin("new-pin-99"))).unwrap();
    drop(s);
    f.pkcs11.finalize().unwrap();
    let p = Pkcs11::new(&f.lib).unwrap();
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let s = p.open_rw_session(f.slot).unwrap();
    s.login(UserType::User, Some(&pin("new-pin-99"))).unwrap();
    let k = s
        .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
        .unwrap();
    let sig = s.sign(&Mechanism::EcdsaSha256, k[0], b"m").unwrap();
    p256_verify(&point, b"m", &sig);
}

#[test]
fn pin_locks_after_retries_and_so_unlocks() {
    let f = Fixture::with(Kind::HsmSim, None, Some(3));
    let s = f.rw();
    for _ in 0..3 {
        assert_eq!(
            rv(s.login(UserType::User, Some(&pin("9999"))).unwrap_err()),
            RvError::PinIncorrect
        );
    }
    let flags = f.pkcs11.get_token_info(f.slot).unwrap();
    assert!(flags.user_pin_locked());
    assert_eq!(
        rv(s.login(UserType::User, Some(&pin(USER_PIN))).unwrap_err()),
        RvError::PinLocked
    );
    s.login(UserType::So, Some(&pin(SO_PIN))).unwrap();
    s.init_pin(&pin("5678")).unwrap();
    s.logout().unwrap();
    s.login(UserType::User, Some(&pin("5678"))).unwrap();
    assert!(!f.pkcs11.get_token_info(f.slot).unwrap().user_pin_locked());
}

#[test]
fn session_invalidation_fault() {
    let faults = FaultConfig {
        session_invalidate_after_ops: Some(5),
        ..Default::default()
    };
    let f = Fixture::with(Kind::HsmSim, Some(faults), None);
    let s = f.rw();
    let h = s.handle();
    for _ in 0..5 {
        assert_eq!(f.raw.session_info_rv(h), cryptoki_sys::CKR_OK);
    }
    assert_eq!(
        f.raw.session_info_rv(h),
        cryptoki_sys::CKR_SESSION_HANDLE_INVALID
    );
    // A new session works again.
    let s2 = f.rw();
    s2.get_session_info().unwrap();
}

#[test]
fn device_removed_window_by_ops() {
    let faults = FaultConfig {
        device_removed: vec![RemovedWindow {
            after_ops: Some(4),
            for_ops: Some(3),
            ..Default::default()
        }],
        ..Default::default()
    };
    let f = Fixture::with(Kind::HsmSim, Some(faults), None);
    let s = f.rw(); // op 0
    let h = s.handle();
    let results: Vec<_> = (0..8).map(|_| f.raw.session_info_rv(h)).collect();
    // ops 1..=3 fine; 4..=6 removed (the session is lost); afterwards the session stays gone.
    use cryptoki_sys::{CKR_DEVICE_REMOVED, CKR_OK, CKR_SESSION_HANDLE_INVALID};
    assert_eq!(
        results,
        [
            CKR_OK,
            CKR_OK,
            CKR_OK,
            CKR_DEVICE_REMOVED,
            CKR_SESSION_HANDLE_INVALID,
            CKR_SESSION_HANDLE_INVALID,
            CKR_SESSION_HANDLE_INVALID,
            CKR_SESSION_HANDLE_INVALID
        ]
    );
    std::mem::forget(s);
    // Calls on a lost session do not reach the device; the window goes on for ops 5 and 6.
    let opens: Vec<_> = (0..3)
        .map(|_| f.pkcs11.open_rw_session(f.slot).map(|_| ()).map_err(rv))
        .collect();
    assert_eq!(
        opens,
        [
            Err(RvError::DeviceRemoved),
            Err(RvError::DeviceRemoved),
            Ok(())
        ]
    );
}

#[test]
fn device_removed_window_by_time() {
    let faults = FaultConfig {
        device_removed: vec![RemovedWindow {
            start_ms: Some(0),
            duration_ms: Some(300),
            ..Default::default()
        }],
        ..Default::default()
    };
    let f = Fixture::with(Kind::HsmSim, Some(faults), None);
    let e = f.pkcs11.open_rw_session(f.slot).unwrap_err();
    assert_eq!(rv(e), RvError::DeviceRemoved);
    assert!(!f.pkcs11.get_slot_info(f.slot).unwrap().token_present());
    assert!(f.pkcs11.get_slots_with_token().unwrap().is_empty());
    assert_eq!(f.pkcs11.get_all_slots().unwrap(), vec![f.slot]);
    std::thread::sleep(std::time::Duration::from_millis(1600));
    let s = f.user_rw();
    s.get_session_info().unwrap();
}

#[test]
fn session_limit_fault() {
    let faults = FaultConfig {
        max_sessions: Some(2),
        ..Default::default()
    };
    let f = Fixture::with(Kind::HsmSim, Some(faults), None);
    let a = f.rw();
    let _b = f.rw();
    assert_eq!(
        rv(f.pkcs11.open_rw_session(f.slot).unwrap_err()),
        RvError::SessionCount
    );
    drop(a);
    let _c = f.rw();
}

fn error_pattern(seed: u64) -> Vec<bool> {
    let faults = FaultConfig {
        seed,
        errors: BTreeMap::from([(
            "C_GenerateRandom".to_string(),
            ErrorFault {
                rate: 0.25,
                rv: "CKR_DEVICE_ERROR".into(),
            },
        )]),
        latency_ms: BTreeMap::from([("C_GenerateRandom".to_string(), 1)]),
        ..Default::default()
    };
    let f = Fixture::with(Kind::HsmSim, Some(faults), None);
    let s = f.rw();
    let pattern = (0..40)
        .map(|_| match s.generate_random_vec(8) {
            Ok(_) => false,
            Err(e) => {
                assert_eq!(rv(e), RvError::DeviceError);
                true
            }
        })
        .collect();
    drop(s);
    // The module stays loaded (it is linked -z nodelete): finalize so the next run starts afresh.
    f.pkcs11.finalize().unwrap();
    pattern
}

#[test]
fn error_rate_is_replayable_through_the_module() {
    let t = std::time::Instant::now();
    let a = error_pattern(1234);
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(40),
        "latency was injected"
    );
    assert_eq!(a, error_pattern(1234));
    assert!(a.iter().any(|e| *e) && a.iter().any(|e| !*e));
}

#[test]
fn many_threads_sign_concurrently() {
    let f = Fixture::new(Kind::HsmSim);
    let s = f.user_rw();
    let (pubk, privk) = gen_p256(&s, false, true, false, b"mt");
    let point = public_point(&s, pubk);
    std::thread::scope(|sc| {
        for t in 0..4u8 {
            let f = &f;
            let point = &point;
            sc.spawn(move || {
                let s = f.rw();
                for i in 0..25u8 {
                    let msg = [t, i];
                    let sig = s.sign(&Mechanism::EcdsaSha256, privk, &msg).unwrap();
                    p256_verify(point, &msg, &sig);
                }
            });
        }
    });
}

#[test]
fn unsupported_things_are_refused_not_crashed() {
    let f = Fixture::new(Kind::HsmSim);
    let s = f.user_rw();
    let (_, privk) = gen_p256(&s, false, true, false, b"u");
    let e = s.sign(&Mechanism::Sha256, privk, b"x").unwrap_err();
    assert_eq!(rv(e), RvError::MechanismInvalid);
    let e = s
        .encrypt(&Mechanism::AesEcb, privk, b"0123456789abcdef")
        .unwrap_err();
    assert_eq!(rv(e), RvError::FunctionNotSupported);
    let e = s
        .generate_key(&Mechanism::AesKeyGen, &[Attribute::ValueLen(32.into())])
        .unwrap_err();
    assert_eq!(rv(e), RvError::FunctionNotSupported);
    assert_eq!(
        s.digest(&Mechanism::Sha256, b"abc").unwrap(),
        sha2::Sha256::digest(b"abc").to_vec()
    );
}

#[test]
fn pin_failures_survive_restart_and_reinit_wipes_the_token() {
    let f = Fixture::with(Kind::HsmSim, None, Some(3));
    {
        let s = f.user_rw();
        gen_p256(&s, true, true, false, b"gone");
        s.logout().unwrap();
        for _ in 0..2 {
            assert_eq!(
                rv(s.login(UserType::User, Some(&pin("9999"))).unwrap_err()),
                RvError::PinIncorrect
            );
        }
    }
    f.pkcs11.finalize().unwrap();
    let p = Pkcs11::new(&f.lib).unwrap();
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let info = p.get_token_info(f.slot).unwrap();
    assert!(info.user_pin_final_try() && info.user_pin_count_low() && !info.user_pin_locked());
    // Re-initialising needs the SO PIN, wipes every object and the user PIN.
    let e = p.init_token(f.slot, &pin("wrong-so"), "again").unwrap_err();
    assert_eq!(rv(e), RvError::PinIncorrect);
    p.init_token(f.slot, &pin(SO_PIN), "again").unwrap();
    let info = p.get_token_info(f.slot).unwrap();
    assert_eq!(info.label(), "again");
    assert!(!info.user_pin_initialized());
    let s = p.open_rw_session(f.slot).unwrap();
    assert_eq!(
        rv(s.login(UserType::User, Some(&pin(USER_PIN))).unwrap_err()),
        RvError::UserPinNotInitialized
    );
    s.login(UserType::So, Some(&pin(SO_PIN))).unwrap();
    s.init_pin(&pin(USER_PIN)).unwrap();
    s.logout().unwrap();
    s.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
    assert!(s.find_objects(&[]).unwrap().is_empty());
}
