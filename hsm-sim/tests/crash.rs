//! A child process generating and destroying token keys is SIGKILLed at random moments; the
//! token must then open cleanly and every object it lists must work.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};

fn churn_exe() -> std::path::PathBuf {
    let exe = target_dir().join("examples/churn");
    let mtime = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let stale = match (mtime(&exe), mtime(&std::env::current_exe().unwrap())) {
        (Some(e), Some(t)) => e < t,
        _ => true,
    };
    if stale {
        let st = Command::new(env!("CARGO"))
            .args(["build", "-p", "keywarden-hsm-sim", "--example", "churn"])
            .status()
            .unwrap();
        assert!(st.success());
    }
    exe
}

#[test]
fn sigkill_during_key_churn_leaves_a_usable_token() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = hsm_sim_token(dir.path(), None, None);
    let exe = churn_exe();
    for (i, delay_ms) in [7u64, 23, 41, 3, 67].into_iter().enumerate() {
        let mut child = Command::new(&exe)
            .arg(USER_PIN)
            .env("KEYWARDEN_HSM_SIM_CONFIG", &cfg)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until it is well into its loop, then kill it mid-write.
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        for _ in 0..(3 + i) {
            lines.next().expect("churn died early").unwrap();
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        // SIGKILL: no destructor, no flush.
        child.kill().unwrap();
        child.wait().unwrap();
    }

    // SAFETY: one test per process (nextest); no other thread reads the environment.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("KEYWARDEN_HSM_SIM_CONFIG", &cfg)
    };
    let p = cryptoki::context::Pkcs11::new(hsm_sim_lib()).unwrap();
    p.initialize(cryptoki::context::CInitializeArgs::new(
        cryptoki::context::CInitializeFlags::OS_LOCKING_OK,
    ))
    .unwrap();
    let slot = p.get_all_slots().unwrap()[0];
    let s = p.open_rw_session(slot).unwrap();
    s.login(
        cryptoki::session::UserType::User,
        Some(&cryptoki::types::AuthPin::new(USER_PIN.into())),
    )
    .unwrap();
    let all = s.find_objects(&[]).unwrap();
    assert!(!all.is_empty(), "the churn left no keys");
    let mut signed = 0;
    for o in &all {
        let class = match &s.get_attributes(*o, &[AttributeType::Class]).unwrap()[0] {
            Attribute::Class(c) => *c,
            other => panic!("{other:?}"),
        };
        if class == ObjectClass::PUBLIC_KEY {
            let point = public_point(&s, *o);
            p256::PublicKey::from_sec1_bytes(&point).expect("stored public key is a valid point");
            continue;
        }
        assert_eq!(class, ObjectClass::PRIVATE_KEY);
        let id = match &s.get_attributes(*o, &[AttributeType::Id]).unwrap()[0] {
            Attribute::Id(id) => id.clone(),
            other => panic!("{other:?}"),
        };
        let sig = s
            .sign(&Mechanism::EcdsaSha256, *o, b"after the crash")
            .unwrap();
        let pubs = s
            .find_objects(&[Attribute::Class(ObjectClass::PUBLIC_KEY), Attribute::Id(id)])
            .unwrap();
        if let Some(pk) = pubs.first() {
            p256_verify(&public_point(&s, *pk), b"after the crash", &sig);
        }
        signed += 1;
    }
    assert!(signed > 0, "no private key survived");
    // No temporary file is left behind once the token was opened.
    for e in std::fs::read_dir(dir.path().join("token/objects")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "leftover {name}");
    }
}
