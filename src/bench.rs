//! `keywarden bench`: signing through the service socket versus the same backend in-process,
//! in one run, so the ratio is meaningful on a noisy machine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keywarden_vault::{KeyRef, Vault};

use crate::client::Client;
use crate::proto::v1 as pb;
use crate::service::config::Config;
use crate::service::identity::Caller;
use crate::service::server;

/// One measured configuration.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Row {
    /// `in-process` (the backend alone), `service` (policy, registry and audit in-process),
    /// `socket` (all of it over gRPC on the Unix socket) or `mtls` (over gRPC on a loopback
    /// TCP connection with mutual TLS).
    pub mode: &'static str,
    /// Concurrent clients (tasks in-process, connections over the socket).
    pub clients: usize,
    /// Signatures per second.
    pub ops_per_sec: f64,
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)].as_secs_f64() * 1e6
}

fn row(mode: &'static str, clients: usize, elapsed: Duration, mut lat: Vec<Duration>) -> Row {
    lat.sort_unstable();
    Row {
        mode,
        clients,
        ops_per_sec: lat.len() as f64 / elapsed.as_secs_f64(),
        p50_us: percentile(&lat, 0.50),
        p99_us: percentile(&lat, 0.99),
    }
}

const MESSAGE: &[u8] = b"keywarden bench: a 64-byte message to sign, as a release digest..";

/// Runs `clients` concurrent loops of `op` for `dur`; each loop stops at the first failure.
async fn drive<Op, Fut>(mode: &'static str, dur: Duration, ops: Vec<Op>) -> Row
where
    Op: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let clients = ops.len();
    let start = Instant::now();
    let deadline = start + dur;
    let tasks: Vec<_> = ops
        .into_iter()
        .map(|mut op| {
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    if !op().await {
                        break;
                    }
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    row(mode, clients, start.elapsed(), all)
}

async fn in_process(vault: Arc<dyn Vault>, key: KeyRef, clients: usize, dur: Duration) -> Row {
    let ops = (0..clients)
        .map(|_| {
            let (vault, key) = (Arc::clone(&vault), key.clone());
            move || {
                let (vault, key) = (Arc::clone(&vault), key.clone());
                async move { vault.sign(&key, MESSAGE).await.is_ok() }
            }
        })
        .collect();
    drive("in-process", dur, ops).await
}

async fn service_direct(
    service: Arc<crate::service::Service>,
    name: &str,
    clients: usize,
    dur: Duration,
) -> Row {
    let me = Caller::this_process();
    let ops = (0..clients)
        .map(|_| {
            let (service, name, me) = (Arc::clone(&service), name.to_owned(), me.clone());
            move || {
                let (service, name, me) = (Arc::clone(&service), name.clone(), me.clone());
                async move { service.sign(&me, &name, MESSAGE).await.is_ok() }
            }
        })
        .collect();
    drive("service", dur, ops).await
}

async fn socket(mode: &'static str, clients: Vec<Client>, name: &str, dur: Duration) -> Row {
    let ops = clients
        .into_iter()
        .map(|c| {
            let name = name.to_owned();
            move || {
                let mut rpc = c.rpc();
                let req = pb::SignRequest {
                    name: name.clone(),
                    message: MESSAGE.to_vec(),
                };
                async move { rpc.sign(req).await.is_ok() }
            }
        })
        .collect();
    drive(mode, dur, ops).await
}

/// The mutual-TLS leg of the benchmark: the server's files (its `listen` address is ignored:
/// the benchmark binds a free loopback port) and a client's. The server certificate must name
/// 127.0.0.1.
#[derive(Clone, Debug)]
pub struct TlsBench {
    /// The listener's certificate, key and client CA.
    pub server: crate::service::tls::TlsConfig,
    /// The client's CA, certificate and key.
    pub client: crate::client::TlsFiles,
}

/// Runs the benchmark on a throw-away data directory with the embedded backend (or the
/// backends of `config`, if given) and returns one row per mode and concurrency.
pub async fn run(
    config: Option<Config>,
    seconds: f64,
    concurrency: &[usize],
) -> Result<Vec<Row>, String> {
    run_with(config, None, seconds, concurrency).await
}

/// [`run`], plus an `mtls` row per concurrency when `tls` is given. A `postgres://` registry
/// in `config` is kept (each run creates its own key); otherwise the registry is a throw-away
/// SQLite file.
pub async fn run_with(
    config: Option<Config>,
    tls: Option<&TlsBench>,
    seconds: f64,
    concurrency: &[usize],
) -> Result<Vec<Row>, String> {
    let dir = tempfile::Builder::new()
        .prefix("keywarden-bench-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let mut config = match config {
        Some(c) => c,
        None => Config::from_toml(&format!("data_dir = \"{}\"", dir.path().display()))
            .map_err(|e| e.to_string())?,
    };
    config.socket = dir.path().join("bench.sock");
    config.audit_log = dir.path().join("bench-audit.log");
    if !config.shared_registry() {
        config.registry = format!("sqlite:{}", dir.path().join("bench-registry.db").display());
    }
    let service = server::build(&config).await.map_err(|e| e.to_string())?;
    let listener = server::bind(&config.socket, 0o600)
        .await
        .map_err(|e| e.to_string())?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let socket_path = config.socket.clone();
    let serving = tokio::spawn({
        let service = Arc::clone(&service);
        async move {
            let _ = server::serve(service, listener, &socket_path, async {
                let _ = stop_rx.await;
            })
            .await;
        }
    });

    let (tls_stop, tls_stopped) = tokio::sync::watch::channel(false);
    let tls_endpoint = match tls {
        None => None,
        Some(t) => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| e.to_string())?;
            let port = listener.local_addr().map_err(|e| e.to_string())?.port();
            let settings =
                crate::service::tls::Reloadable::new(&t.server).map_err(|e| e.to_string())?;
            let (service, mut stopped) = (Arc::clone(&service), tls_stopped.clone());
            tokio::spawn(async move {
                let _ = server::serve_tls(service, listener, &settings, async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await;
            });
            Some(format!("https://127.0.0.1:{port}"))
        }
    };

    let me = Caller::this_process();
    let name = format!(
        "bench-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or_default()
    );
    let record = service
        .create(&me, &name, "ecdsa-p256", None, Default::default(), None)
        .await
        .map_err(|e| e.to_string())?;
    let key_ref = KeyRef::new(record.versions[0].key_ref.clone().unwrap_or_default());
    let vault = Arc::clone(&service.backends()[&record.backend].vault);
    let dur = Duration::from_secs_f64(seconds);

    let mut rows = Vec::new();
    for &c in concurrency {
        rows.push(in_process(Arc::clone(&vault), key_ref.clone(), c, dur).await);
        rows.push(service_direct(Arc::clone(&service), &name, c, dur).await);
        let mut clients = Vec::with_capacity(c);
        for _ in 0..c {
            clients.push(
                Client::connect(&config.socket)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        rows.push(socket("socket", clients, &name, dur).await);
        if let (Some(endpoint), Some(t)) = (&tls_endpoint, tls) {
            let mut clients = Vec::with_capacity(c);
            for _ in 0..c {
                clients.push(
                    Client::connect_tls(endpoint, &t.client)
                        .await
                        .map_err(|e| e.to_string())?,
                );
            }
            rows.push(socket("mtls", clients, &name, dur).await);
        }
    }
    let _ = tls_stop.send(true);
    let _ = stop_tx.send(());
    let _ = serving.await;
    Ok(rows)
}
