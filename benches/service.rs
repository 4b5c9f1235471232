//! The key service benchmark in one run: signing in-process, through the service logic, over
//! the Unix socket and over mutual TLS on loopback TCP, first with the SQLite registry, then
//! with a PostgreSQL registry (a private cluster started here). Prints a table with each row's
//! throughput as a share of the in-process baseline measured in the same run.
//!
//! `cargo bench --bench service --features testing,postgres` (scripts/bench runs it);
//! `KEYWARDEN_BENCH_SECONDS` (default 2) and `KEYWARDEN_BENCH_CLIENTS` (default 1,8,32).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use keywarden::bench::{Row, TlsBench, run_with};
use keywarden::service::config::Config;
use keywarden::testing::{Leaf, Pki};
use keywarden_registry::testing::postgres::Cluster;

fn main() {
    // `cargo bench` passes --bench; there is nothing to filter.
    let seconds: f64 = std::env::var("KEYWARDEN_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let clients: Vec<usize> = std::env::var("KEYWARDEN_BENCH_CLIENTS")
        .ok()
        .map(|s| s.split(',').filter_map(|c| c.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 8, 32]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let pki = Pki::new(([127, 0, 0, 1], 0).into(), &[]);
        let tls = TlsBench {
            server: pki.server.clone(),
            client: pki.client("bench", &Leaf::client("spiffe://bench/client", 2)),
        };
        let data = tempfile::tempdir().unwrap();
        // The bench signs as this process; over TLS it is a Keywarden::Client, which the
        // default policies do not admit: let the bench's client do everything.
        let policies = data.path().join("policies");
        std::fs::create_dir(&policies).unwrap();
        std::fs::write(
            policies.join("default.cedar"),
            keywarden::service::policy::DEFAULT_POLICIES,
        )
        .unwrap();
        std::fs::write(
            policies.join("bench.cedar"),
            "permit (principal == Keywarden::Client::\"spiffe://bench/client\", action, resource);",
        )
        .unwrap();
        let base = format!(
            "data_dir = \"{}\"\npolicy_dir = \"{}\"\n",
            data.path().display(),
            policies.display()
        );

        let sqlite = Config::from_toml(&base).unwrap();
        let mut rows: Vec<(&str, Row)> = run_with(Some(sqlite), Some(&tls), seconds, &clients)
            .await
            .unwrap()
            .into_iter()
            .map(|r| ("sqlite", r))
            .collect();

        let cluster = Cluster::shared();
        let url = cluster.create_database().await;
        let postgres = Config::from_toml(&format!("{base}registry = \"{url}\"\n")).unwrap();
        rows.extend(
            run_with(Some(postgres), Some(&tls), seconds, &clients)
                .await
                .unwrap()
                .into_iter()
                .filter(|r| r.mode != "in-process")
                .map(|r| ("postgres", r)),
        );

        println!(
            "\n{:<11} {:<9} {:>7} {:>10} {:>9} {:>9} {:>11}",
            "mode", "registry", "clients", "signs/s", "p50 us", "p99 us", "vs in-proc"
        );
        for &c in &clients {
            let base = rows
                .iter()
                .find(|(_, r)| r.mode == "in-process" && r.clients == c)
                .map(|(_, r)| r.ops_per_sec)
                .unwrap_or(0.0);
            for (registry, r) in rows.iter().filter(|(_, r)| r.clients == c) {
                let registry = if r.mode == "in-process" {
                    "-"
                } else {
                    registry
                };
                let share = if base > 0.0 {
                    format!("{:.1}%", 100.0 * r.ops_per_sec / base)
                } else {
                    String::new()
                };
                println!(
                    "{:<11} {:<9} {:>7} {:>10.0} {:>9.1} {:>9.1} {:>11}",
                    r.mode, registry, r.clients, r.ops_per_sec, r.p50_us, r.p99_us, share
                );
            }
        }
    });
}
