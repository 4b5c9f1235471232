//! Secure channels over loopback TCP: handshakes per second (software and PKCS#11 static
//! keys) and one-way transport throughput for 64 B, 1 KiB and 16 KiB messages.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use keywarden_channel::noise::{Initiator, Responder};
use keywarden_channel::policy::AllowAnyAuthenticated;
use keywarden_channel::testing::{SoftwareVault, agreement_key, signing_key};
use keywarden_channel::{
    Address, ChannelIdentity, ChannelOptions, Identity, Node, PROLOGUE, Route,
};
use keywarden_pkcs11::Pkcs11Vault;
use keywarden_pkcs11::testing::SoftHsm;
use keywarden_vault::Vault;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::runtime::Runtime;
use tokio::sync::Notify;

#[derive(Default)]
struct Counter {
    target: AtomicU64,
    done: Notify,
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn identity(vault: Arc<dyn Vault>, name: &str) -> ChannelIdentity {
    let id = Identity::new(signing_key(vault.clone(), &format!("{name}-id")).await);
    let dh = agreement_key(vault, &format!("{name}-dh")).await;
    ChannelIdentity::new(id, dh, Duration::from_secs(86400))
        .await
        .unwrap()
}

fn options() -> ChannelOptions {
    ChannelOptions::new().with_policy(AllowAnyAuthenticated)
}

/// Two nodes joined by one loopback TCP connection, a listener on the second; returns the
/// first node and the route to the listener.
async fn pair(listener_identity: &ChannelIdentity) -> (Node, Route, Node) {
    let (a, b) = (Node::new(), Node::new());
    let addr = b.tcp_listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut listener = b
        .create_secure_channel_listener(listener_identity, Address::new("l").unwrap(), options())
        .unwrap();
    tokio::spawn(async move {
        // Accepted channels are dropped at once (their addresses freed).
        while let Ok(ch) = listener.accept().await {
            drop(ch);
        }
    });
    let conn = a.tcp_connect(addr).await.unwrap();
    let route = Route::from_vec(vec![conn, Address::new("l").unwrap()]).unwrap();
    (a, route, b)
}

fn handshakes(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("handshake");
    group.throughput(Throughput::Elements(1));

    // The crypto alone: both sides of the Noise state machine, software static keys.
    let (ka, kb) = rt.block_on(async {
        let v: Arc<dyn Vault> = SoftwareVault::new();
        (
            agreement_key(v.clone(), "a").await,
            agreement_key(v, "b").await,
        )
    });
    group.bench_function("noise_state_machine_both_sides", |bench| {
        bench.to_async(&rt).iter(|| async {
            let (i, m1) = Initiator::new(ka.public_key(), PROLOGUE)
                .unwrap()
                .write_message_1(&[])
                .unwrap();
            let (r, _) = Responder::new(kb.public_key(), PROLOGUE)
                .read_message_1(&m1)
                .unwrap();
            let es = kb.agree(r.peer_ephemeral()).await.unwrap();
            let (r, m2) = r.write_message_2(&es, b"payload").unwrap();
            let (i, _) = i.read_message_2(&m2).unwrap();
            let se = ka.agree(i.peer_ephemeral()).await.unwrap();
            let (m3, _) = i.write_message_3(&se, b"payload").unwrap();
            r.read_message_3(&m3).unwrap();
        })
    });

    let (a_id, b_id) = rt.block_on(async {
        let v: Arc<dyn Vault> = SoftwareVault::new();
        (identity(v.clone(), "a").await, identity(v, "b").await)
    });
    let (a, route, _b) = rt.block_on(pair(&b_id));
    // One options value per client, as a reconnecting client keeps it.
    let client_options = options();
    group.bench_function("software_static_keys", |bench| {
        bench.to_async(&rt).iter(|| async {
            let ch = a
                .create_secure_channel(&a_id, route.clone(), client_options.clone())
                .await
                .unwrap();
            drop(ch);
        })
    });

    // First contact: fresh options each time, so every signature is verified.
    group.bench_function("software_static_keys_first_contact", |bench| {
        bench.to_async(&rt).iter(|| async {
            let ch = a
                .create_secure_channel(&a_id, route.clone(), options())
                .await
                .unwrap();
            drop(ch);
        })
    });

    // Throughput: 8 handshakes in flight at once on the same connection.
    group.throughput(Throughput::Elements(8));
    group.bench_function("software_static_keys_8_concurrent", |bench| {
        bench.to_async(&rt).iter(|| async {
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..8 {
                let (a, a_id, route) = (a.clone(), a_id.clone(), route.clone());
                set.spawn(async move {
                    drop(
                        a.create_secure_channel(&a_id, route, options())
                            .await
                            .unwrap(),
                    );
                });
            }
            while let Some(r) = set.join_next().await {
                r.unwrap();
            }
        })
    });
    group.throughput(Throughput::Elements(1));

    let tokens: Vec<SoftHsm> = (0..2).map(|_| SoftHsm::new()).collect();
    let (a_id, b_id) = rt.block_on(async {
        let va: Arc<dyn Vault> = Arc::new(Pkcs11Vault::open(tokens[0].config()).unwrap());
        let vb: Arc<dyn Vault> = Arc::new(Pkcs11Vault::open(tokens[1].config()).unwrap());
        (identity(va, "a").await, identity(vb, "b").await)
    });
    let (a, route, _b2) = rt.block_on(pair(&b_id));
    let client_options = options();
    group.bench_function("softhsm2_static_keys", |bench| {
        bench.to_async(&rt).iter(|| async {
            let ch = a
                .create_secure_channel(&a_id, route.clone(), client_options.clone())
                .await
                .unwrap();
            drop(ch);
        })
    });
    group.finish();
}

fn throughput(c: &mut Criterion) {
    let rt = runtime();
    let (a_id, b_id) = rt.block_on(async {
        let v: Arc<dyn Vault> = SoftwareVault::new();
        (identity(v.clone(), "a").await, identity(v, "b").await)
    });
    let mut group = c.benchmark_group("one_way");
    for size in [64usize, 1024, 16 * 1024] {
        let (a, b) = (Node::new(), Node::new());
        let (mut tx, count) = rt.block_on(async {
            let addr = b.tcp_listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
            let mut listener = b
                .create_secure_channel_listener(&b_id, Address::new("l").unwrap(), options())
                .unwrap();
            let conn = a.tcp_connect(addr).await.unwrap();
            let route = Route::from_vec(vec![conn, Address::new("l").unwrap()]).unwrap();
            let (ch, server) = tokio::join!(
                a.create_secure_channel(&a_id, route, options()),
                listener.accept()
            );
            let (tx, _) = ch.unwrap().split();
            let (_, mut rx) = server.unwrap().split();
            let counter = Arc::new(Counter::default());
            let c2 = counter.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while let Ok(Some(_m)) = rx.recv().await {
                    n += 1;
                    if n == c2.target.load(Ordering::Acquire) {
                        c2.done.notify_one();
                    }
                }
            });
            (tx, counter)
        });
        let msg = vec![0xa5u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        let mut sent = 0u64;
        group.bench_function(BenchmarkId::new("tcp", size), |bench| {
            bench.iter_custom(|iters| {
                rt.block_on(async {
                    sent += iters;
                    count.target.store(sent, Ordering::Release);
                    let start = Instant::now();
                    for _ in 0..iters {
                        tx.send(&msg).await.unwrap();
                    }
                    // Elapsed until the receiver has decrypted the last message.
                    count.done.notified().await;
                    start.elapsed()
                })
            })
        });
        a.shutdown();
        b.shutdown();
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20);
    targets = handshakes, throughput
}
criterion_main!(benches);
