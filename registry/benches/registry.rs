//! The registry's own cost per operation, SQLite (one file) against PostgreSQL (a private
//! cluster on loopback, two nodes): read a key, rotate a key (begin + complete, two
//! transactions), and 32 rotations of one key at once split across two nodes (the row lock
//! makes them take turns). The benchmarked key gains a version with every rotation, and
//! `complete` returns the whole record, so rotation times grow slowly over a run.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use keywarden_registry::testing::postgres::Cluster;
use keywarden_registry::testing::{create_ready, rotate_ready};
use keywarden_registry::{PostgresRegistry, Registry, SqliteRegistry};
use tokio::runtime::Runtime;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Two handles on one store per backend, and what keeps the stores alive.
struct Stores {
    backends: Vec<(&'static str, [Arc<dyn Registry>; 2])>,
    _dir: tempfile::TempDir,
    _cluster: Arc<Cluster>,
}

fn stores(rt: &Runtime) -> Stores {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    let cluster = Cluster::shared();
    rt.block_on(async {
        let sqlite: [Arc<dyn Registry>; 2] = [
            Arc::new(SqliteRegistry::open(&path).unwrap()),
            Arc::new(SqliteRegistry::open(&path).unwrap()),
        ];
        let url = cluster.create_database().await;
        let postgres: [Arc<dyn Registry>; 2] = [
            Arc::new(PostgresRegistry::connect(&url).await.unwrap()),
            Arc::new(PostgresRegistry::connect(&url).await.unwrap()),
        ];
        for [a, _] in [&sqlite, &postgres] {
            create_ready(a.as_ref(), "bench").await;
            rotate_ready(a.as_ref(), "bench", "kw-bench-2".into()).await;
        }
        Stores {
            backends: vec![("sqlite", sqlite), ("postgres", postgres)],
            _dir: dir,
            _cluster: cluster,
        }
    })
}

fn registry(c: &mut Criterion) {
    let rt = runtime();
    let stores = stores(&rt);
    let mut n = 0u64;

    let mut group = c.benchmark_group("registry/get");
    for (name, [a, _]) in &stores.backends {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.to_async(&rt)
                .iter(|| async { a.get("bench").await.unwrap() });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("registry/rotate");
    for (name, [a, _]) in &stores.backends {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                n += 1;
                rt.block_on(rotate_ready(a.as_ref(), "bench", format!("kw-r-{n}")))
            });
        });
    }
    group.finish();

    const AT_ONCE: u64 = 32;
    let mut group = c.benchmark_group("registry/rotate_two_nodes_32_at_once");
    group.throughput(Throughput::Elements(AT_ONCE));
    group.sample_size(20);
    for (name, nodes) in &stores.backends {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                n += 1;
                let round = n;
                rt.block_on(async {
                    let tasks: Vec<_> = (0..AT_ONCE)
                        .map(|i| {
                            let node = Arc::clone(&nodes[(i % 2) as usize]);
                            tokio::spawn(async move {
                                rotate_ready(node.as_ref(), "bench", format!("kw-c-{round}-{i}"))
                                    .await
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                })
            });
        });
    }
    group.finish();
}

criterion_group!(benches, registry);
criterion_main!(benches);
