//! ECDSA P-256 signing through keywarden-pkcs11 against hsm-sim and SoftHSM2 in the same run,
//! with 1 and 2 threads. One iteration is one signature (host-side SHA-256, then `C_Sign` with
//! `CKM_ECDSA`), so time per iteration is the inverse of throughput.
//!
//! Run with `cargo bench -p keywarden-hsm-sim --bench sign` (needs softhsm2 installed).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use cryptoki::session::UserType;
use cryptoki_sys::{CKF_RW_SESSION, CKF_SERIAL_SESSION, CKU_SO};
use keywarden_hsm_sim::{Config, KdfParams, Module, SlotConfig, token};
use keywarden_pkcs11::testing::SoftHsm;
use keywarden_pkcs11::{PinSource, Pkcs11Config, Pkcs11Vault, TokenSelector};
use keywarden_vault::{Algorithm, KeySpec, Vault};
use secrecy::SecretString;
use sha2::Digest as _;

const MESSAGE: &[u8; 32] = b"keywarden benchmark message 0001";
const PIN: &str = "bench-pin-1234";
const P256_OID: &[u8] = keywarden_hsm_sim::crypto::P256_PARAMS_OID;

/// An initialised hsm-sim token; the release `.so` next to the bench executable.
fn hsm_sim(dir: &std::path::Path) -> Pkcs11Config {
    let slot = SlotConfig {
        token_dir: Some(dir.join("token")),
        kdf: Some(KdfParams {
            m_kib: 64,
            t: 1,
            p: 1,
        }),
        ..Default::default()
    };
    let m = Module::new(&Config {
        slots: vec![slot.clone()],
    })
    .unwrap();
    let so = token::pin(b"bench-so-5678");
    let mut label = [b' '; 32];
    label[..5].copy_from_slice(b"bench");
    m.init_token(0, &so, &label).unwrap();
    let h = m
        .open_session(0, CKF_SERIAL_SESSION | CKF_RW_SESSION)
        .unwrap();
    m.login(h, CKU_SO, &so).unwrap();
    m.init_pin(h, &token::pin(PIN.as_bytes())).unwrap();
    m.close_session(h).unwrap();
    let cfg = dir.join("hsm-sim.json");
    std::fs::write(
        &cfg,
        serde_json::to_vec(&Config { slots: vec![slot] }).unwrap(),
    )
    .unwrap();
    // SAFETY: set before any thread or module exists.
    unsafe { std::env::set_var("KEYWARDEN_HSM_SIM_CONFIG", &cfg) };
    let exe = std::env::current_exe().unwrap();
    let so: PathBuf = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("libkeywarden_hsm_sim.so");
    assert!(
        so.exists(),
        "build it first: cargo build --release -p keywarden-hsm-sim --lib"
    );
    Pkcs11Config::new(
        so,
        TokenSelector::Label("bench".into()),
        PinSource::Value(SecretString::from(PIN)),
    )
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let soft = SoftHsm::new();
    let mut targets = vec![
        ("hsm_sim", hsm_sim(dir.path())),
        ("softhsm2", soft.config()),
    ];
    for (_, cfg) in &mut targets {
        cfg.max_sessions = Some(2);
    }
    let mut group = c.benchmark_group("ecdsa_p256_sign_via_keywarden_pkcs11");
    group.measurement_time(Duration::from_secs(5));
    for (name, cfg) in targets {
        let vault = Arc::new(Pkcs11Vault::open(cfg).unwrap());
        let key = rt
            .block_on(vault.generate(&KeySpec::new(Algorithm::EcdsaP256Sha256, "bench").unwrap()))
            .unwrap();
        for threads in [1u64, 2] {
            let (vault, key_ref) = (Arc::clone(&vault), key.key_ref.clone());
            group.bench_function(format!("{name}/{threads}t"), |b| {
                b.iter_custom(|iters| {
                    let per = iters.div_ceil(threads);
                    rt.block_on(async {
                        let start = Instant::now();
                        let mut tasks = Vec::new();
                        for _ in 0..threads {
                            let (vault, key_ref) = (Arc::clone(&vault), key_ref.clone());
                            tasks.push(tokio::spawn(async move {
                                for _ in 0..per {
                                    let sig = vault.sign(&key_ref, MESSAGE).await.unwrap();
                                    assert_eq!(sig.as_bytes().len(), 64);
                                }
                            }));
                        }
                        for t in tasks {
                            t.await.unwrap();
                        }
                        start.elapsed()
                    })
                })
            });
        }
    }
    group.finish();

    // The tokens alone: raw cryptoki C_Sign loops on one session per thread, no adapter.
    let mut group = c.benchmark_group("ecdsa_p256_sign_raw_cryptoki");
    group.measurement_time(Duration::from_secs(5));
    for (name, cfg) in [
        ("hsm_sim", hsm_sim_config_again(dir.path())),
        ("softhsm2", soft.config()),
    ] {
        let ctx = keywarden_pkcs11::module::load(&cfg.module).unwrap();
        let slot = ctx
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|s| {
                let label = ctx
                    .get_token_info(*s)
                    .unwrap()
                    .label()
                    .trim_end()
                    .to_owned();
                label == "bench" || label == soft.label()
            })
            .unwrap();
        let pin = match name {
            "hsm_sim" => SecretString::from(PIN),
            _ => SecretString::from(keywarden_pkcs11::testing::USER_PIN),
        };
        let setup = ctx.open_rw_session(slot).unwrap();
        let _ = setup.login(UserType::User, Some(&pin));
        let (_, key) = setup
            .generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &[
                    Attribute::EcParams(P256_OID.to_vec()),
                    Attribute::Token(false),
                ],
                &[Attribute::Sign(true), Attribute::Token(false)],
            )
            .unwrap();
        let digest: [u8; 32] = sha2::Sha256::digest(MESSAGE).into();
        for threads in [1u64, 2] {
            let ctx = &ctx;
            group.bench_function(format!("{name}/{threads}t"), |b| {
                b.iter_custom(|iters| {
                    let per = iters.div_ceil(threads);
                    let start = Instant::now();
                    std::thread::scope(|sc| {
                        for _ in 0..threads {
                            sc.spawn(|| {
                                let s = ctx.open_rw_session(slot).unwrap();
                                for _ in 0..per {
                                    let sig = s.sign(&Mechanism::Ecdsa, key, &digest).unwrap();
                                    assert_eq!(sig.len(), 64);
                                }
                            });
                        }
                    });
                    start.elapsed()
                })
            });
        }
        drop(setup);
    }
    group.finish();
}

/// The hsm-sim module configuration (the token was created by `hsm_sim`).
fn hsm_sim_config_again(_dir: &std::path::Path) -> Pkcs11Config {
    let exe = std::env::current_exe().unwrap();
    let so: PathBuf = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("libkeywarden_hsm_sim.so");
    Pkcs11Config::new(
        so,
        TokenSelector::Label("bench".into()),
        PinSource::Value(SecretString::from(PIN)),
    )
}

criterion_group!(benches, bench);
criterion_main!(benches);
