//! Sign and ECDH through `keywarden-tpm2` versus a direct tss-esapi loop, in the same run.
//!
//! Each side gets its own swtpm (same binary, same flags, fresh state) and the same kind of
//! key: a P-256 child of a P-256 primary, loaded once, used under a password session. The
//! direct loop hashes the message with SHA-256 too, so the only difference is the adapter:
//! the queue to the worker thread, the LRU lookup, the reply channel and the conversions.
//!
//! Run: `TSS2_LOG=all+NONE cargo bench -p keywarden-tpm2 --features testing`.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout
)]

use std::hint::black_box;
use std::str::FromStr;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use keywarden_tpm2::testing::{Swtpm, key_dir};
use keywarden_tpm2::{Config, Tpm2Vault};
use keywarden_vault::testing::{independent_verify, software_ecdh, software_p256};
use keywarden_vault::{Algorithm, KeySpec, Vault};
use sha2::{Digest as _, Sha256};
use tss_esapi::Context;
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Digest, EccParameter, EccPoint, EccScheme, HashScheme, HashcheckTicket,
    KeyDerivationFunctionScheme, Public, PublicBuilder, PublicEccParametersBuilder,
    Signature as TpmSignature, SignatureScheme, SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;

const MESSAGE: &[u8] = b"keywarden benchmark message: 64 bytes of something to be signed";

fn ecc_public(restricted: bool, signing: bool) -> Public {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_restricted(restricted)
        .with_sign_encrypt(signing)
        .with_decrypt(!signing)
        .build()
        .unwrap();
    let parameters = if restricted {
        PublicEccParametersBuilder::new_restricted_decryption_key(
            SymmetricDefinitionObject::AES_128_CFB,
            EccCurve::NistP256,
        )
    } else if signing {
        PublicEccParametersBuilder::new_unrestricted_signing_key(
            EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)),
            EccCurve::NistP256,
        )
    } else {
        PublicEccParametersBuilder::new()
            .with_ecc_scheme(EccScheme::EcDh(HashScheme::new(HashingAlgorithm::Sha256)))
            .with_curve(EccCurve::NistP256)
            .with_is_decryption_key(true)
            .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
    };
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(parameters.build().unwrap())
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
        .unwrap()
}

/// The direct side: a context, a primary and two loaded keys, as a careful hand-written
/// tss-esapi program would have them.
struct Direct {
    ctx: Context,
    signer: KeyHandle,
    agreer: KeyHandle,
    ticket: HashcheckTicket,
}

impl Direct {
    fn new(tcti: &str) -> Self {
        let mut ctx = Context::new(TctiNameConf::from_str(tcti).unwrap()).unwrap();
        ctx.set_sessions((Some(AuthSession::Password), None, None));
        let primary = ctx
            .create_primary(
                Hierarchy::Owner,
                ecc_public(true, false),
                None,
                None,
                None,
                None,
            )
            .unwrap()
            .key_handle;
        let mut child = |signing| {
            let created = ctx
                .create(primary, ecc_public(false, signing), None, None, None, None)
                .unwrap();
            ctx.load(primary, created.out_private, created.out_public)
                .unwrap()
        };
        let signer = child(true);
        let agreer = child(false);
        let ticket = HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
            tag: TPM2_ST_HASHCHECK,
            hierarchy: TPM2_RH_NULL,
            digest: Default::default(),
        })
        .unwrap();
        Self {
            ctx,
            signer,
            agreer,
            ticket,
        }
    }

    fn sign(&mut self, message: &[u8]) -> [u8; 64] {
        let digest = Digest::try_from(Sha256::digest(message).to_vec()).unwrap();
        let sig = self
            .ctx
            .sign(
                self.signer,
                digest,
                SignatureScheme::Null,
                self.ticket.clone(),
            )
            .unwrap();
        let TpmSignature::EcDsa(ecc) = sig else {
            panic!("not ECDSA")
        };
        let mut out = [0u8; 64];
        let (r, s) = (ecc.signature_r().value(), ecc.signature_s().value());
        out[32 - r.len()..32].copy_from_slice(r);
        out[64 - s.len()..].copy_from_slice(s);
        out
    }

    fn agree(&mut self, peer: &keywarden_vault::PublicKey) -> Vec<u8> {
        let sec1 = peer.as_bytes();
        let point = EccPoint::new(
            EccParameter::try_from(&sec1[1..33]).unwrap(),
            EccParameter::try_from(&sec1[33..65]).unwrap(),
        );
        let z = self.ctx.ecdh_z_gen(self.agreer, point).unwrap();
        z.x().value().to_vec()
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // The adapter, on its own swtpm.
    let tpm_vault = Swtpm::start().expect("swtpm for the vault");
    let keys = key_dir().unwrap();
    let vault = rt
        .block_on(Tpm2Vault::open(Config::new(tpm_vault.tcti(), keys.path())))
        .unwrap();
    let signer = rt
        .block_on(vault.generate(&KeySpec::new(Algorithm::EcdsaP256Sha256, "bench-sign").unwrap()))
        .unwrap();
    let agreer = rt
        .block_on(vault.generate(&KeySpec::new(Algorithm::EcdhP256, "bench-agree").unwrap()))
        .unwrap();
    let (peer_secret, peer) = software_p256();

    // The direct loop, on another swtpm.
    let tpm_direct = Swtpm::start().expect("swtpm for the direct loop");
    let mut direct = Direct::new(&tpm_direct.tcti());

    // Both sides produce correct results before anything is timed.
    let sig = rt.block_on(vault.sign(&signer.key_ref, MESSAGE)).unwrap();
    assert!(independent_verify(&signer.public_key, MESSAGE, &sig));
    let z = rt.block_on(vault.agree(&agreer.key_ref, &peer)).unwrap();
    assert_eq!(
        z.expose_secret(),
        &software_ecdh(&peer_secret, &agreer.public_key)[..]
    );
    let raw = direct.sign(MESSAGE);
    assert!(p256::ecdsa::Signature::from_slice(&raw).is_ok());
    assert_eq!(direct.agree(&peer).len(), 32);

    // Named `<implementation>/<variant>` for scripts/bench-ratios.py; `direct_tss_esapi` is
    // the baseline.
    let mut group = c.benchmark_group("tpm2");
    group.bench_function(BenchmarkId::new("keywarden_tpm2", "sign"), |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(vault.sign(&signer.key_ref, MESSAGE).await.unwrap()) })
    });
    group.bench_function(BenchmarkId::new("direct_tss_esapi", "sign"), |b| {
        b.iter(|| black_box(direct.sign(MESSAGE)))
    });
    group.bench_function(BenchmarkId::new("keywarden_tpm2", "ecdh"), |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(vault.agree(&agreer.key_ref, &peer).await.unwrap()) })
    });
    group.bench_function(BenchmarkId::new("direct_tss_esapi", "ecdh"), |b| {
        b.iter(|| black_box(direct.agree(&peer)))
    });
    group.finish();

    // Criterion measures one side after the other; on a shared machine the load can change in
    // between. Interleave short batches of both sides and compare medians as well.
    let rounds = 40;
    let batch = 100;
    let mut times = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    let mut pings = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..batch {
            rt.block_on(vault.ping()).unwrap();
        }
        pings.push(t.elapsed() / batch);
        let t = Instant::now();
        for _ in 0..batch {
            black_box(rt.block_on(vault.sign(&signer.key_ref, MESSAGE)).unwrap());
        }
        times[0].push(t.elapsed() / batch);
        let t = Instant::now();
        for _ in 0..batch {
            black_box(direct.sign(MESSAGE));
        }
        times[1].push(t.elapsed() / batch);
        let t = Instant::now();
        for _ in 0..batch {
            black_box(rt.block_on(vault.agree(&agreer.key_ref, &peer)).unwrap());
        }
        times[2].push(t.elapsed() / batch);
        let t = Instant::now();
        for _ in 0..batch {
            black_box(direct.agree(&peer));
        }
        times[3].push(t.elapsed() / batch);
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    // Per-round ratios pair each vault batch with the direct batch right after it, so a change
    // of load between rounds cancels out.
    let paired = |v: &[Duration], d: &[Duration]| {
        let mut r: Vec<f64> = v
            .iter()
            .zip(d)
            .map(|(v, d)| v.as_secs_f64() / d.as_secs_f64())
            .collect();
        r.sort_by(f64::total_cmp);
        r[r.len() / 2]
    };
    let (sign_ratio, ecdh_ratio) = (paired(&times[0], &times[1]), paired(&times[2], &times[3]));
    let [mut vs, mut ds, mut va, mut da] = times;
    let (vs, ds, va, da) = (
        median(&mut vs),
        median(&mut ds),
        median(&mut va),
        median(&mut da),
    );
    println!("interleaved medians ({rounds} rounds of {batch} operations per side):");
    println!(
        "  worker queue round trip (no TPM command): {:.1} µs",
        median(&mut pings).as_secs_f64() * 1e6
    );
    for (op, v, d, paired) in [("sign", vs, ds, sign_ratio), ("ecdh", va, da, ecdh_ratio)] {
        println!(
            "  {op}: keywarden-tpm2 {:.1} µs/op ({:.0}/s), tss-esapi direct {:.1} µs/op ({:.0}/s), \
             ratio of medians {:.3}, median of paired ratios {paired:.3}",
            v.as_secs_f64() * 1e6,
            1.0 / v.as_secs_f64(),
            d.as_secs_f64() * 1e6,
            1.0 / d.as_secs_f64(),
            v.as_secs_f64() / d.as_secs_f64()
        );
    }

    drop(direct);
    drop(vault);
    drop(tpm_direct);
    drop(tpm_vault);
}

criterion_group!(benches, bench);
criterion_main!(benches);
