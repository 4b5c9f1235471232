//! The token linked into a program and reached through cryptoki's `Pkcs11::new_from_self()`, the
//! way `keywarden serve` embeds it: configure in-process, initialise, generate, sign, verify.
//! Prints `embedded: ok` on success.

#![allow(clippy::print_stdout)]

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use keywarden_hsm_sim::{Config, KdfParams, SlotConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Keep the entry point in the link: only referenced code is pulled out of the rlib.
    let entry: unsafe extern "C" fn(
        *mut *mut cryptoki_sys::CK_FUNCTION_LIST,
    ) -> cryptoki_sys::CK_RV = keywarden_hsm_sim::ffi::C_GetFunctionList;
    std::hint::black_box(entry);
    keywarden_hsm_sim::set_config(Some(Config {
        slots: vec![SlotConfig {
            kdf: Some(KdfParams {
                m_kib: 64,
                t: 1,
                p: 1,
            }),
            ..Default::default()
        }],
    }));
    let p = Pkcs11::new_from_self()?;
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))?;
    let slot = p.get_all_slots()?[0];
    let so = AuthPin::new("embedded-so".into());
    p.init_token(slot, &so, "embedded")?;
    let s = p.open_rw_session(slot)?;
    s.login(UserType::So, Some(&so))?;
    s.init_pin(&AuthPin::new("embedded-pin".into()))?;
    s.logout()?;
    s.login(UserType::User, Some(&AuthPin::new("embedded-pin".into())))?;
    let p256_oid = keywarden_hsm_sim::crypto::P256_PARAMS_OID.to_vec();
    let (pubk, privk) = s.generate_key_pair(
        &Mechanism::EccKeyPairGen,
        &[Attribute::EcParams(p256_oid), Attribute::Verify(true)],
        &[Attribute::Sign(true)],
    )?;
    let sig = s.sign(&Mechanism::EcdsaSha256, privk, b"embedded")?;
    let point = match s.get_attributes(pubk, &[AttributeType::EcPoint])?.pop() {
        Some(Attribute::EcPoint(p)) => p[2..].to_vec(),
        _ => return Err("no EC_POINT".into()),
    };
    use p256::ecdsa::signature::Verifier;
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)?;
    vk.verify(b"embedded", &p256::ecdsa::Signature::from_slice(&sig)?)?;
    println!("embedded: ok");
    Ok(())
}
