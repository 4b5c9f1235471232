//! The pieces of a handshake, one by one (to see where its time goes).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::SystemTime;

use criterion::{Criterion, criterion_group, criterion_main};
use keywarden_channel::testing::{SoftwareVault, agreement_key, in_an_hour, signing_key};
use keywarden_channel::{Attestation, Identity};
use keywarden_vault::{PublicKey, Vault};

fn micro(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let v: Arc<dyn Vault> = SoftwareVault::new();
    let (dh, id) = rt.block_on(async {
        (
            agreement_key(v.clone(), "dh").await,
            Identity::new(signing_key(v.clone(), "id").await),
        )
    });
    let other = rt.block_on(agreement_key(v.clone(), "other"));
    let att = rt
        .block_on(id.attest(dh.public_key(), in_an_hour()))
        .unwrap();
    let att_bytes = att.to_bytes();
    let point = dh.public_key().as_bytes().to_vec();
    let mut g = c.benchmark_group("micro");
    g.bench_function("public_key_from_sec1", |b| {
        b.iter(|| PublicKey::from_sec1(&point).unwrap())
    });
    g.bench_function("software_vault_agree", |b| {
        b.iter(|| rt.block_on(dh.agree(other.public_key())).unwrap())
    });
    g.bench_function("attestation_parse", |b| {
        b.iter(|| Attestation::from_bytes(&att_bytes).unwrap())
    });
    g.bench_function("attestation_verify", |b| {
        b.iter(|| att.verify(dh.public_key(), SystemTime::now()).unwrap())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500)).sample_size(20);
    targets = micro
}
criterion_main!(benches);
