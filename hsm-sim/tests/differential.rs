//! The differential suite: the same scripted PKCS#11 call sequences run against SoftHSM2 and
//! hsm-sim, comparing return codes and every deterministic output, error paths included.
//! Where SoftHSM2 deviates from the PKCS#11 standard, hsm-sim follows the standard and the
//! deviation is recorded below by name; a recorded deviation that disappears fails the test,
//! so the list stays true.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use cryptoki::error::RvError;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use cryptoki_sys::*;

/// A deterministic rendering of a step's result, or its `CKR_`.
type Outcome = Result<String, RvError>;

/// The steps of one scripted run.
#[derive(Default)]
struct Run(Vec<(&'static str, Outcome)>);

impl Run {
    fn ck<T>(
        &mut self,
        step: &'static str,
        r: cryptoki::error::Result<T>,
        show: impl FnOnce(T) -> String,
    ) {
        self.0.push((step, r.map(show).map_err(rv)));
    }
    fn ok<T>(&mut self, step: &'static str, r: cryptoki::error::Result<T>) {
        self.ck(step, r, |_| "ok".into());
    }
    fn raw(&mut self, step: &'static str, code: CK_RV, shown: String) {
        let o = match rv_of(code) {
            cryptoki::error::Rv::Ok => Ok(shown),
            cryptoki::error::Rv::Error(e) => Err(e),
        };
        self.0.push((step, o));
    }
}

/// A place where SoftHSM2 departs from the standard and hsm-sim does not.
struct Deviation {
    name: &'static str,
    step: &'static str,
    softhsm: Outcome,
    standard: Outcome,
}

fn compare(script: fn(&Fixture, &mut Run), deviations: &[Deviation]) {
    let soft = Fixture::new(Kind::SoftHsm);
    let sim = Fixture::new(Kind::HsmSim);
    let mut a = Run::default();
    let mut b = Run::default();
    script(&soft, &mut a);
    script(&sim, &mut b);
    assert_eq!(a.0.len(), b.0.len(), "scripts ran different step counts");
    let mut seen = Vec::new();
    for ((step, sa), (_, sb)) in a.0.iter().zip(&b.0) {
        eprintln!("{step:40} softhsm2 {sa:?} | hsm-sim {sb:?}");
    }
    for ((step, sa), (step_b, sb)) in a.0.iter().zip(&b.0) {
        assert_eq!(step, step_b);
        let dev = deviations.iter().find(|d| d.step == *step);
        match dev {
            None => assert_eq!(sa, sb, "step {step:?}: SoftHSM2 {sa:?}, hsm-sim {sb:?}"),
            Some(d) => {
                assert_eq!(
                    sa, &d.softhsm,
                    "deviation {} at {step:?}: SoftHSM2 now gives {sa:?}",
                    d.name
                );
                assert_eq!(
                    sb, &d.standard,
                    "deviation {} at {step:?}: hsm-sim gives {sb:?}",
                    d.name
                );
                eprintln!(
                    "recorded deviation {}: SoftHSM2 {sa:?}, standard/hsm-sim {sb:?}",
                    d.name
                );
                seen.push(d.name);
            }
        }
    }
    for d in deviations {
        assert!(
            seen.contains(&d.name),
            "deviation {} was not exercised",
            d.name
        );
    }
}

fn pin(p: &str) -> AuthPin {
    AuthPin::new(p.into())
}

fn attr_hex(s: &Session, o: ObjectHandle, ty: AttributeType) -> cryptoki::error::Result<String> {
    s.get_attributes(o, &[ty]).map(|v| format!("{:?}", v))
}

/// Fixed keys so that outputs are comparable across tokens.
const P256_SCALAR: [u8; 32] = [0x11; 32];
const ED25519_SEED: [u8; 32] = [0x22; 32];
const PEER_SCALAR: [u8; 32] = [0x33; 32];

fn import_p256(s: &Session, sign: bool, derive: bool) -> ObjectHandle {
    s.create_object(&[
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::EC),
        Attribute::EcParams(P256_OID.to_vec()),
        Attribute::Value(P256_SCALAR.to_vec()),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Sign(sign),
        Attribute::Derive(derive),
    ])
    .unwrap()
}

fn import_p256_public(s: &Session) -> ObjectHandle {
    let sk = p256::SecretKey::from_slice(&P256_SCALAR).unwrap();
    let point = sk.public_key().to_sec1_bytes();
    let mut der = vec![0x04, point.len() as u8];
    der.extend_from_slice(&point);
    s.create_object(&[
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::EC),
        Attribute::EcParams(P256_OID.to_vec()),
        Attribute::EcPoint(der),
        Attribute::Token(false),
        Attribute::Verify(true),
    ])
    .unwrap()
}

fn script_login(f: &Fixture, r: &mut Run) {
    let s = f.rw();
    r.ok("logout when not logged in", s.logout());
    r.ok(
        "login wrong PIN",
        s.login(UserType::User, Some(&pin("0000"))),
    );
    r.ok(
        "login too-short PIN",
        s.login(UserType::User, Some(&pin("1"))),
    );
    r.ok("login user", s.login(UserType::User, Some(&pin(USER_PIN))));
    r.ok(
        "login user again",
        s.login(UserType::User, Some(&pin(USER_PIN))),
    );
    r.ok(
        "login SO while user",
        s.login(UserType::So, Some(&pin(SO_PIN))),
    );
    r.ck("session state", s.get_session_info(), |i| {
        format!("{:?}", i.session_state())
    });
    r.ok("logout", s.logout());
    r.ok("logout again", s.logout());
    let ro = f.pkcs11.open_ro_session(f.slot).unwrap();
    r.ok(
        "SO login with RO session open",
        s.login(UserType::So, Some(&pin(SO_PIN))),
    );
    drop(ro);
    r.ok("SO login", s.login(UserType::So, Some(&pin(SO_PIN))));
    r.ck("SO state", s.get_session_info(), |i| {
        format!("{:?}", i.session_state())
    });
    r.ok("open RO session while SO", f.pkcs11.open_ro_session(f.slot));
    r.ok("SO logout", s.logout());
    r.ok("set PIN wrong old", s.set_pin(&pin("0000"), &pin("4321")));
    r.ok("set PIN", s.set_pin(&pin(USER_PIN), &pin("4321")));
    r.ok(
        "login old PIN",
        s.login(UserType::User, Some(&pin(USER_PIN))),
    );
    r.ok("login new PIN", s.login(UserType::User, Some(&pin("4321"))));
}

#[test]
fn login_and_pins() {
    compare(
        script_login,
        &[
            Deviation {
                name: "softhsm2_logout_without_login_ok",
                step: "logout when not logged in",
                softhsm: Ok("ok".into()),
                standard: Err(RvError::UserNotLoggedIn),
            },
            Deviation {
                name: "softhsm2_logout_without_login_ok",
                step: "logout again",
                softhsm: Ok("ok".into()),
                standard: Err(RvError::UserNotLoggedIn),
            },
        ],
    );
}

fn script_locked(f: &Fixture, r: &mut Run) {
    let s = f.rw();
    for _ in 0..3 {
        r.ok("wrong PIN", s.login(UserType::User, Some(&pin("0000"))));
    }
    r.ok(
        "wrong PIN after limit",
        s.login(UserType::User, Some(&pin("0000"))),
    );
    r.ok(
        "right PIN after limit",
        s.login(UserType::User, Some(&pin(USER_PIN))),
    );
    r.ck("token flags", f.pkcs11.get_token_info(f.slot), |t| {
        format!(
            "locked={} low={} final={}",
            t.user_pin_locked(),
            t.user_pin_count_low(),
            t.user_pin_final_try()
        )
    });
}

#[test]
fn locked_pin() {
    compare(
        script_locked,
        &[
            Deviation {
                name: "softhsm2_no_pin_lockout",
                step: "wrong PIN after limit",
                softhsm: Err(RvError::PinIncorrect),
                standard: Err(RvError::PinLocked),
            },
            Deviation {
                name: "softhsm2_no_pin_lockout",
                step: "right PIN after limit",
                softhsm: Ok("ok".into()),
                standard: Err(RvError::PinLocked),
            },
            Deviation {
                name: "softhsm2_no_pin_count_flags",
                step: "token flags",
                softhsm: Ok("locked=false low=false final=false".into()),
                standard: Ok("locked=true low=false final=false".into()),
            },
        ],
    );
}

fn script_sessions(f: &Fixture, r: &mut Run) {
    r.raw(
        "unknown session",
        f.raw.session_info_rv(0xdead_beef),
        String::new(),
    );
    let s = f.rw();
    let h = s.handle();
    r.raw("close session", f.raw.close(h), String::new());
    r.raw(
        "use closed session",
        f.raw.session_info_rv(h),
        String::new(),
    );
    r.raw("close closed session", f.raw.close(h), String::new());
    std::mem::forget(s);
    let s = f.rw();
    r.ck("rw session info", s.get_session_info(), |i| {
        format!("{:?} rw={}", i.session_state(), i.read_write())
    });
    let ro = f.pkcs11.open_ro_session(f.slot).unwrap();
    r.ck("ro session info", ro.get_session_info(), |i| {
        format!("{:?} rw={}", i.session_state(), i.read_write())
    });
    s.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
    r.ck("ro session after login", ro.get_session_info(), |i| {
        format!("{:?}", i.session_state())
    });
    let t = [
        Attribute::EcParams(P256_OID.to_vec()),
        Attribute::Token(true),
    ];
    r.ok(
        "token keygen in RO session",
        ro.generate_key_pair(&Mechanism::EccKeyPairGen, &t, &[Attribute::Token(true)]),
    );
    r.raw(
        "close all sessions",
        f.raw.close_all(f.slot.id()),
        String::new(),
    );
    std::mem::forget(s);
    std::mem::forget(ro);
    let s = f.rw();
    r.ck("state after close all", s.get_session_info(), |i| {
        format!("{:?}", i.session_state())
    });
}

#[test]
fn sessions_unknown_and_closed() {
    compare(script_sessions, &[]);
}

fn script_keys(f: &Fixture, r: &mut Run) {
    let s = f.user_rw();
    let (pubk, privk) = gen_p256(&s, true, true, false, b"id1");
    for ty in [
        AttributeType::Class,
        AttributeType::KeyType,
        AttributeType::Token,
        AttributeType::Private,
        AttributeType::Sensitive,
        AttributeType::Extractable,
        AttributeType::AlwaysSensitive,
        AttributeType::NeverExtractable,
        AttributeType::Local,
        AttributeType::KeyGenMechanism,
        AttributeType::Sign,
        AttributeType::Derive,
        AttributeType::Id,
        AttributeType::EcParams,
        AttributeType::Modifiable,
    ] {
        r.ck("private key attribute", attr_hex(&s, privk, ty), |x| x);
    }
    for ty in [
        AttributeType::Class,
        AttributeType::KeyType,
        AttributeType::Verify,
        AttributeType::Local,
        AttributeType::EcParams,
        AttributeType::Private,
    ] {
        r.ck("public key attribute", attr_hex(&s, pubk, ty), |x| x);
    }
    r.ck(
        "EC_POINT is a DER OCTET STRING",
        s.get_attributes(pubk, &[AttributeType::EcPoint]),
        |v| match &v[0] {
            Attribute::EcPoint(p) => {
                format!("{:02x}{:02x}{:02x} len {}", p[0], p[1], p[2], p.len())
            }
            o => format!("{o:?}"),
        },
    );
    // Sensitive value: raw call to see the length and code.
    let (code, len, _) = f.raw.attr(s.handle(), privk.handle(), CKA_VALUE, None);
    r.raw("read sensitive CKA_VALUE", code, format!("{len}"));
    r.raw(
        "ulValueLen of a sensitive attribute",
        CKR_OK,
        format!("{:#x}", len),
    );
    let (code, len, _) = f.raw.attr(s.handle(), privk.handle(), CKA_MODULUS, None);
    r.raw("attribute not on this object", code, String::new());
    r.raw("its ulValueLen", CKR_OK, format!("{:#x}", len));
    // Two-call length convention.
    let (code, len, _) = f.raw.attr(s.handle(), pubk.handle(), CKA_EC_PARAMS, None);
    r.raw("EC_PARAMS length query", code, format!("{len}"));
    let (code, len, _) = f
        .raw
        .attr(s.handle(), pubk.handle(), CKA_EC_PARAMS, Some(4));
    r.raw("EC_PARAMS too-small buffer", code, format!("{len:#x}"));
    let (code, _, v) = f
        .raw
        .attr(s.handle(), pubk.handle(), CKA_EC_PARAMS, Some(64));
    r.raw("EC_PARAMS read", code, hex::encode(v));
    // Attribute changes.
    r.ok(
        "EXTRACTABLE false->true",
        s.update_attributes(privk, &[Attribute::Extractable(true)]),
    );
    r.ok(
        "SENSITIVE true->false",
        s.update_attributes(privk, &[Attribute::Sensitive(false)]),
    );
    r.ok(
        "set ALWAYS_SENSITIVE",
        s.update_attributes(privk, &[Attribute::AlwaysSensitive(false)]),
    );
    r.ok(
        "set LABEL",
        s.update_attributes(privk, &[Attribute::Label(b"renamed".to_vec())]),
    );
    r.ck(
        "LABEL after set",
        attr_hex(&s, privk, AttributeType::Label),
        |x| x,
    );
    r.ok(
        "set KEY_TYPE",
        s.update_attributes(privk, &[Attribute::KeyType(KeyType::RSA)]),
    );
    // Find.
    r.ck(
        "find by id",
        s.find_objects(&[Attribute::Id(b"id1".to_vec())]),
        |v| format!("{}", v.len()),
    );
    r.ck(
        "find private by id",
        s.find_objects(&[
            Attribute::Id(b"id1".to_vec()),
            Attribute::Class(ObjectClass::PRIVATE_KEY),
        ]),
        |v| format!("{} same={}", v.len(), v.first() == Some(&privk)),
    );
    r.ok("destroy", s.destroy_object(privk));
    r.ok("destroy again", s.destroy_object(privk));
    r.ck(
        "find after destroy",
        s.find_objects(&[Attribute::Id(b"id1".to_vec())]),
        |v| format!("{}", v.len()),
    );
    s.logout().unwrap();
    r.ck(
        "find before login sees only public",
        s.find_objects(&[]),
        |v| format!("{}", v.len()),
    );
}

#[test]
fn keys_attributes_and_find() {
    compare(script_keys, &[]);
}

/// SHA-256 of the test message: SoftHSM2 2.6 has no `CKM_ECDSA_SHA256`, so the shared scripts
/// sign digests with `CKM_ECDSA` (hsm-sim's `CKM_ECDSA_SHA256` is tested in `hsm_sim.rs`).
fn digest_of(m: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(m).to_vec()
}

fn script_sign(f: &Fixture, r: &mut Run) {
    let s = f.user_rw();
    let h = s.handle();
    let signer = import_p256(&s, true, false);
    let deriver = import_p256(&s, false, true);
    let public = import_p256_public(&s);
    let d = digest_of(b"m");
    r.ok(
        "ECDSA_SHA256 supported",
        s.sign(&Mechanism::EcdsaSha256, signer, b"m"),
    );
    r.ok(
        "sign with derive-only key",
        s.sign(&Mechanism::Ecdsa, deriver, &d),
    );
    r.raw(
        "sign without init",
        f.raw.sign(h, &d, Some(64)).0,
        String::new(),
    );
    r.raw(
        "unknown mechanism",
        f.raw.sign_init(h, 0x8000_1234, signer.handle()),
        String::new(),
    );
    r.raw(
        "digest mechanism for signing",
        f.raw.sign_init(h, CKM_SHA256, signer.handle()),
        String::new(),
    );
    r.raw(
        "sign init",
        f.raw.sign_init(h, CKM_ECDSA, signer.handle()),
        String::new(),
    );
    r.raw(
        "sign init again",
        f.raw.sign_init(h, CKM_ECDSA, signer.handle()),
        String::new(),
    );
    r.raw(
        "digest init while signing",
        f.raw.digest_init(h, CKM_SHA256),
        String::new(),
    );
    let (code, len, _) = f.raw.sign(h, &d, None);
    r.raw("signature length query", code, format!("{len}"));
    let (code, len, _) = f.raw.sign(h, &d, Some(10));
    r.raw("signature too-small buffer", code, format!("{len}"));
    let (code, len, sig) = f.raw.sign(h, &d, Some(64));
    let sk = p256::SecretKey::from_slice(&P256_SCALAR).unwrap();
    let point = sk.public_key().to_sec1_bytes();
    let valid = {
        use p256::ecdsa::signature::Verifier;
        let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).unwrap();
        p256::ecdsa::Signature::from_slice(&sig).is_ok_and(|s| vk.verify(b"m", &s).is_ok())
    };
    r.raw(
        "sign after the length dance",
        code,
        format!("{len} valid={valid}"),
    );
    r.raw(
        "sign once more without init",
        f.raw.sign(h, &d, Some(64)).0,
        String::new(),
    );
    let sig = s.sign(&Mechanism::Ecdsa, signer, &d).unwrap();
    p256_verify_prehash(&point, &d, &sig);
    r.ok("verify", s.verify(&Mechanism::Ecdsa, public, &d, &sig));
    r.ok(
        "verify wrong digest",
        s.verify(&Mechanism::Ecdsa, public, &digest_of(b"x"), &sig),
    );
    r.ok(
        "verify short signature",
        s.verify(&Mechanism::Ecdsa, public, &d, &sig[..63]),
    );
    r.ok(
        "verify with private key",
        s.verify(&Mechanism::Ecdsa, signer, &d, &sig),
    );
    r.ok(
        "sign with public key",
        s.sign(&Mechanism::Ecdsa, public, &d),
    );
    r.ok(
        "sign with bogus handle",
        s.sign(&Mechanism::Ecdsa, unsafe_handle(0x7777_7777), &d),
    );
    let ed = s
        .create_object(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::EC_EDWARDS),
            Attribute::EcParams(ED25519_OID.to_vec()),
            Attribute::Value(ED25519_SEED.to_vec()),
            Attribute::Token(false),
            Attribute::Sign(true),
        ])
        .unwrap();
    let eddsa = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
    r.ck(
        "EdDSA signature (deterministic)",
        s.sign(&eddsa, ed, b"deterministic"),
        hex::encode,
    );
    r.ok(
        "ECDSA with an Ed25519 key",
        s.sign(&Mechanism::Ecdsa, ed, &d),
    );
    r.ok("EdDSA with a P-256 key", s.sign(&eddsa, signer, b"m"));
    r.ok(
        "raw ECDSA sign init",
        s.sign_init(&Mechanism::Ecdsa, signer),
    );
    r.ok("raw ECDSA is single-part", s.sign_update(b"a"));
    r.raw(
        "after the refused update",
        f.raw.sign(h, &d, Some(64)).0,
        String::new(),
    );
    r.ok("EdDSA sign init", s.sign_init(&eddsa, ed));
    r.ok("EdDSA is single-part", s.sign_update(b"a"));
}

fn mech(p: &[u8]) -> Mechanism<'_> {
    Mechanism::Ecdh1Derive(Ecdh1DeriveParams::new(EcKdf::null(), p))
}

/// A made-up object handle.
fn unsafe_handle(h: CK_OBJECT_HANDLE) -> ObjectHandle {
    #[allow(unsafe_code)]
    // SAFETY: the handle is only passed to the token, which must reject it; never dereferenced.
    unsafe {
        ObjectHandle::new_from_raw(h)
    }
}

#[test]
fn sign_verify_and_operation_state() {
    compare(
        script_sign,
        &[
            Deviation {
                // Not a deviation from the standard: SoftHSM2 2.6 lacks the mechanism.
                name: "softhsm2_2_6_has_no_ecdsa_sha256",
                step: "ECDSA_SHA256 supported",
                softhsm: Err(RvError::MechanismInvalid),
                standard: Ok("ok".into()),
            },
            Deviation {
                // C_SignInit's return values name CKR_KEY_HANDLE_INVALID for a bad key handle.
                name: "softhsm2_object_handle_invalid_for_key",
                step: "sign with bogus handle",
                softhsm: Err(RvError::ObjectHandleInvalid),
                standard: Err(RvError::KeyHandleInvalid),
            },
            Deviation {
                // An Ed25519 key with CKM_ECDSA is a key-type mismatch, not a general error.
                name: "softhsm2_key_type_mismatch_general_error",
                step: "ECDSA with an Ed25519 key",
                softhsm: Err(RvError::GeneralError),
                standard: Err(RvError::KeyTypeInconsistent),
            },
            Deviation {
                // A P-256 key with CKM_EDDSA is a key-type mismatch, not a general error.
                name: "softhsm2_key_type_mismatch_general_error",
                step: "EdDSA with a P-256 key",
                softhsm: Err(RvError::GeneralError),
                standard: Err(RvError::KeyTypeInconsistent),
            },
        ],
    );
}

fn script_digest_derive(f: &Fixture, r: &mut Run) {
    let s = f.user_rw();
    let h = s.handle();
    r.ck("digest", s.digest(&Mechanism::Sha256, b"abc"), hex::encode);
    r.raw(
        "digest without init",
        f.raw.digest(h, b"abc", Some(32)).0,
        String::new(),
    );
    r.raw(
        "digest init",
        f.raw.digest_init(h, CKM_SHA256),
        String::new(),
    );
    let (code, len, _) = f.raw.digest(h, b"abc", Some(3));
    r.raw("digest too-small buffer", code, format!("{len}"));
    let (code, _, d) = f.raw.digest(h, b"abc", Some(32));
    r.raw("digest after too-small", code, hex::encode(d));
    r.raw(
        "unknown digest mechanism",
        f.raw.digest_init(h, 0x8000_4321),
        String::new(),
    );
    s.digest_init(&Mechanism::Sha256).unwrap();
    r.ok("digest update", s.digest_update(b"a"));
    r.ok("digest update", s.digest_update(b"bc"));
    r.ck("digest final", s.digest_final(), hex::encode);
    let deriver = import_p256(&s, false, true);
    let signer = import_p256(&s, true, false);
    let peer = p256::SecretKey::from_slice(&PEER_SCALAR)
        .unwrap()
        .public_key()
        .to_sec1_bytes();
    let t = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::Token(false),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
    ];
    let k = s.derive_key(&mech(&peer), deriver, &t);
    r.ck(
        "ECDH value",
        k.and_then(|k| s.get_attributes(k, &[AttributeType::Value])),
        |v| format!("{v:?}"),
    );
    let k = s.derive_key(&mech(&peer), deriver, &t).unwrap();
    for (step, ty) in [
        ("derived VALUE_LEN", AttributeType::ValueLen),
        ("derived LOCAL", AttributeType::Local),
        ("derived ALWAYS_SENSITIVE", AttributeType::AlwaysSensitive),
        ("derived NEVER_EXTRACTABLE", AttributeType::NeverExtractable),
    ] {
        r.ck(step, attr_hex(&s, k, ty), |x| x);
    }
    r.ok(
        "derive with sign-only key",
        s.derive_key(&mech(&peer), signer, &t),
    );
    let mut short = t.clone();
    short.push(Attribute::ValueLen(16.into()));
    r.ck(
        "ECDH value with VALUE_LEN",
        s.derive_key(&mech(&peer), deriver, &short)
            .and_then(|k| s.get_attributes(k, &[AttributeType::Value])),
        |v| format!("{v:?}"),
    );
    let sensitive = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::Token(false),
    ];
    let k = s.derive_key(&mech(&peer), deriver, &sensitive).unwrap();
    let (code, len, _) = f.raw.attr(h, k.handle(), CKA_VALUE, Some(64));
    r.raw("sensitive derived value", code, format!("{len:#x}"));
    r.ok(
        "derive with unknown mechanism",
        s.derive_key(&Mechanism::Sha256, deriver, &t),
    );
    r.ck(
        "mechanism list has ours",
        f.pkcs11.get_mechanism_list(f.slot),
        |l| {
            let want = [
                MechanismType::ECC_KEY_PAIR_GEN,
                MechanismType::ECC_EDWARDS_KEY_PAIR_GEN,
                MechanismType::ECDSA,
                MechanismType::EDDSA,
                MechanismType::ECDH1_DERIVE,
                MechanismType::SHA256,
            ];
            format!("{}", want.iter().all(|m| l.contains(m)))
        },
    );
    r.ok("random", s.generate_random_vec(16));
}

#[test]
fn digest_and_ecdh_derive() {
    compare(
        script_digest_derive,
        &[Deviation {
            // PKCS#11 2.40 §4.7.3: CKA_VALUE_LEN of a generic secret is the key length; a
            // derived key gets the length of its value.
            name: "softhsm2_derived_value_len_zero",
            step: "derived VALUE_LEN",
            softhsm: Ok("[ValueLen(Ulong { val: 0 })]".into()),
            standard: Ok("[ValueLen(Ulong { val: 32 })]".into()),
        }],
    );
}

fn script_templates(f: &Fixture, r: &mut Run) {
    let s = f.user_rw();
    let keygen = |p: Vec<Attribute>, k: Vec<Attribute>| {
        s.generate_key_pair(&Mechanism::EccKeyPairGen, &p, &k)
    };
    r.ok(
        "keygen without EC_PARAMS",
        keygen(vec![Attribute::Token(false)], vec![]),
    );
    r.ok(
        "keygen with class mismatch",
        keygen(
            vec![
                Attribute::EcParams(P256_OID.to_vec()),
                Attribute::Class(ObjectClass::SECRET_KEY),
            ],
            vec![],
        ),
    );
    r.ok(
        "keygen with LOCAL in template",
        keygen(
            vec![Attribute::EcParams(P256_OID.to_vec())],
            vec![Attribute::Local(true)],
        ),
    );
    r.ok(
        "keygen with RSA attribute",
        keygen(
            vec![
                Attribute::EcParams(P256_OID.to_vec()),
                Attribute::ModulusBits(2048.into()),
            ],
            vec![],
        ),
    );
    r.ok(
        "Ed25519 keygen",
        s.generate_key_pair(
            &Mechanism::EccEdwardsKeyPairGen,
            &[Attribute::EcParams(ED25519_OID.to_vec())],
            &[Attribute::Sign(true)],
        ),
    );
    r.ok(
        "public key without EC_POINT",
        s.create_object(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::EC),
            Attribute::EcParams(P256_OID.to_vec()),
        ]),
    );
    r.ok(
        "secret key without value",
        s.create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
        ]),
    );
    let k = s.create_object(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::Value(vec![5; 20]),
        Attribute::Token(false),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
    ]);
    r.ck(
        "imported secret readable",
        k.and_then(|k| s.get_attributes(k, &[AttributeType::Value, AttributeType::ValueLen])),
        |v| format!("{v:?}"),
    );
    let ro = f.pkcs11.open_ro_session(f.slot).unwrap();
    r.ok(
        "session object in RO session",
        ro.create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Value(vec![5; 16]),
            Attribute::Token(false),
        ]),
    );
    r.ok(
        "token object in RO session",
        ro.create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Value(vec![5; 16]),
            Attribute::Token(true),
        ]),
    );
}

#[test]
fn template_errors() {
    compare(
        script_templates,
        &[Deviation {
            // C_GenerateKey/C_GenerateKeyPair: a key type or CKA_CLASS inconsistent with the
            // mechanism fails with CKR_TEMPLATE_INCONSISTENT.
            name: "softhsm2_class_mismatch_attribute_value_invalid",
            step: "keygen with class mismatch",
            softhsm: Err(RvError::AttributeValueInvalid),
            standard: Err(RvError::TemplateInconsistent),
        }],
    );
}
