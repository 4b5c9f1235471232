//! ECDSA P-256 signing through keywarden-pkcs11 versus raw cryptoki `C_Sign` on the same
//! SoftHSM2 token, with 1 and 2 threads. Each iteration is one signature (host-side SHA-256 of
//! a 32-byte message, then `C_Sign` with `CKM_ECDSA`), so the reported time per iteration is
//! the inverse of throughput. `scripts/bench` prints the adapter/raw ratios.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::{Session, UserType};
use keywarden_pkcs11::testing::{SOFTHSM2_MODULE, SoftHsm, USER_PIN};
use keywarden_pkcs11::{Pkcs11Vault, module};
use keywarden_vault::{Algorithm, KeyRef, KeySpec, Vault};
use secrecy::SecretString;
use sha2::{Digest as _, Sha256};

const MESSAGE: &[u8; 32] = b"keywarden benchmark message 0001";

fn raw_session(label: &str) -> Session {
    let ctx = module::load(SOFTHSM2_MODULE.as_ref()).unwrap();
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == label)
        .unwrap();
    let s = ctx.open_rw_session(slot).unwrap();
    let _ = s.login(UserType::User, Some(&SecretString::from(USER_PIN)));
    s
}

fn raw_sign_loop(label: &str, key: &KeyRef, n: u64) {
    let session = raw_session(label);
    let handle = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(key.as_bytes().to_vec()),
        ])
        .unwrap()[0];
    for _ in 0..n {
        let digest = Sha256::digest(MESSAGE);
        let sig = session.sign(&Mechanism::Ecdsa, handle, &digest).unwrap();
        assert_eq!(sig.len(), 64);
    }
}

fn bench(c: &mut Criterion) {
    let token = SoftHsm::new();
    let label = token.label().to_owned();
    let mut config = token.config();
    config.max_sessions = Some(2);
    let vault = Arc::new(Pkcs11Vault::open(config).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let key = rt
        .block_on(vault.generate(&KeySpec::new(Algorithm::EcdsaP256Sha256, "bench").unwrap()))
        .unwrap();

    let mut group = c.benchmark_group("softhsm2_ecdsa_p256_sign");
    group.measurement_time(Duration::from_secs(5));
    for threads in [1u64, 2] {
        let (label, key_ref) = (label.clone(), key.key_ref.clone());
        group.bench_function(format!("raw_cryptoki/{threads}t"), |b| {
            b.iter_custom(|iters| {
                let per = iters.div_ceil(threads);
                let start = Instant::now();
                std::thread::scope(|s| {
                    for _ in 0..threads {
                        s.spawn(|| raw_sign_loop(&label, &key_ref, per));
                    }
                });
                start.elapsed()
            })
        });
        let key_ref = key.key_ref.clone();
        let vault = Arc::clone(&vault);
        group.bench_function(format!("keywarden_pkcs11/{threads}t"), |b| {
            b.iter_custom(|iters| {
                let per = iters.div_ceil(threads);
                rt.block_on(async {
                    let start = Instant::now();
                    let tasks: Vec<_> = (0..threads)
                        .map(|_| {
                            let vault = Arc::clone(&vault);
                            let key_ref = key_ref.clone();
                            tokio::spawn(async move {
                                for _ in 0..per {
                                    vault.sign(&key_ref, MESSAGE).await.unwrap();
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
