//! Nodes killed mid-stream on a shared PostgreSQL registry: writer processes (this test
//! binary re-executed with an environment variable, each a service node with its own
//! connections) create, rotate and complete keys on one database in a loop, concurrently,
//! and are SIGKILLed mid-stream. After each kill the registry must hold no half-written row,
//! keep every acknowledged write, and keep each key's versions gap-free; the locks the killed
//! nodes held are gone, so the next nodes go on.
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keywarden_registry::testing::postgres::{Cluster, sql};
use keywarden_registry::testing::{create_ready, key_ref_for, new_key, public_key_for};
use keywarden_registry::{Error, PostgresRegistry, Registry, VersionState};

/// Set in a re-executed child: the URL of the database it writes to.
const CHILD_URL: &str = "KEYWARDEN_REGISTRY_TEST_WRITER_URL";
/// Set in a re-executed child: its writer id.
const CHILD_ID: &str = "KEYWARDEN_REGISTRY_TEST_WRITER_ID";
/// The key every writer rotates at once.
const SHARED: &str = "shared";
/// Bounds a child's loop, should the parent fail to kill it.
const MAX_CHILD_OPS: usize = 20_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The child: writes forever (bounded), printing `ack NAME VERSION` once a completion returned.
fn writer(url: &str, id: &str) -> ! {
    let rt = runtime();
    rt.block_on(async {
        let reg = PostgresRegistry::connect(url)
            .await
            .expect("child connects to the registry");
        let mut out = std::io::stdout().lock();
        writeln!(out, "open").unwrap();
        out.flush().unwrap();
        for i in 0..MAX_CHILD_OPS {
            // A new key of its own…
            let name = format!("w{id}-{i}");
            let mut k = new_key(&name);
            k.hsm_label = format!("kw-{name}-1");
            let p = reg.begin_create(k).await.unwrap();
            reg.complete(
                &name,
                1,
                &key_ref_for(&p.hsm_label),
                &public_key_for(&p.hsm_label),
            )
            .await
            .unwrap();
            writeln!(out, "ack {name} 1").unwrap();
            out.flush().unwrap();
            // …and a rotation of the key every writer rotates.
            let label = format!("kw-{SHARED}-w{id}-{i}");
            let p = reg.begin_rotate(SHARED, label, 0).await.unwrap();
            reg.complete(
                SHARED,
                p.version,
                &key_ref_for(&p.hsm_label),
                &public_key_for(&p.hsm_label),
            )
            .await
            .unwrap();
            writeln!(out, "ack {SHARED} {}", p.version).unwrap();
            out.flush().unwrap();
        }
    });
    std::process::exit(0)
}

struct Writer {
    child: Child,
    acks: Arc<Mutex<Vec<(String, u32)>>>,
    reader: std::thread::JoinHandle<()>,
}

fn spawn_writer(url: &str, id: usize, test: &str) -> Writer {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_URL, url)
        .env(CHILD_ID, id.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let acks = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&acks);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest's own lines are mixed in; only ours start with "ack ".
            if let Some(rest) = line.strip_prefix("ack ") {
                let (name, v) = rest.split_once(' ').unwrap();
                sink.lock()
                    .unwrap()
                    .push((name.to_owned(), v.parse().unwrap()));
            }
        }
    });
    Writer {
        child,
        acks,
        reader,
    }
}

/// Everything the registry must satisfy after a crash; returns the acknowledged count.
async fn check_registry(url: &str, acked: &BTreeSet<(String, u32)>) -> usize {
    // No version row without its key, none half-written (the schema's CHECKs hold them off;
    // this reads the rows themselves).
    let orphans = sql(
        url,
        "SELECT COUNT(*) FROM key_versions v LEFT JOIN keys k ON k.name = v.key_name
         WHERE k.name IS NULL
            OR (v.state = 'ready' AND (v.key_ref IS NULL OR v.public_key IS NULL))",
    )
    .await;
    assert_eq!(orphans, vec![vec![Some("0".to_owned())]]);
    // The killed nodes' sessions end, and with them every lock their transactions held.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let locks = sql(
            url,
            "SELECT COUNT(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()",
        )
        .await;
        if locks == vec![vec![Some("0".to_owned())]] {
            break;
        }
        assert!(Instant::now() < deadline, "locks left behind: {locks:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reg = PostgresRegistry::connect(url)
        .await
        .expect("the registry works after SIGKILL");
    let keys = reg.list().await.unwrap();
    let mut present = BTreeMap::new();
    for key in &keys {
        let numbers: Vec<u32> = key.versions.iter().map(|v| v.version).collect();
        assert_eq!(
            numbers,
            (1..=key.versions.len() as u32).collect::<Vec<_>>(),
            "versions of {} are gap-free",
            key.name
        );
        for v in &key.versions {
            match v.state {
                VersionState::Ready => {
                    assert_eq!(
                        v.key_ref.as_deref(),
                        Some(&key_ref_for(&v.hsm_label)[..]),
                        "{} v{} ready without its own key_ref",
                        key.name,
                        v.version
                    );
                    assert_eq!(
                        v.public_key.as_deref(),
                        Some(&public_key_for(&v.hsm_label)[..])
                    );
                }
                VersionState::Pending => {
                    assert_eq!(v.key_ref, None);
                    assert_eq!(v.public_key, None);
                }
                VersionState::Destroyed => {}
            }
            present.insert((key.name.clone(), v.version), v.state);
        }
    }
    for ack in acked {
        assert_eq!(
            present.get(ack),
            Some(&VersionState::Ready),
            "acknowledged {ack:?} lost"
        );
    }
    // Recovery as the service does it: no HSM object was made for these, so abort them.
    let pending = reg.pending().await.unwrap();
    for p in &pending {
        assert!(
            !acked.contains(&(p.name.clone(), p.version)),
            "{p:?} acknowledged yet pending"
        );
        reg.abort(&p.name, p.version).await.unwrap();
    }
    assert!(reg.pending().await.unwrap().is_empty());
    eprintln!(
        "after SIGKILL of nodes: {} keys, {} acknowledged writes kept, {} pending rows recovered",
        keys.len(),
        acked.len(),
        pending.len()
    );
    acked.len()
}

/// Two node processes on one database, SIGKILLed three times at growing depths; the registry
/// is checked after each kill and the next nodes start on what the last ones left.
#[test]
fn sigkill_of_nodes_loses_nothing_acknowledged() {
    const TEST: &str = "sigkill_of_nodes_loses_nothing_acknowledged";
    if let (Some(url), Some(id)) = (std::env::var(CHILD_URL).ok(), std::env::var_os(CHILD_ID)) {
        writer(&url, &id.to_string_lossy());
    }

    let cluster = Cluster::shared();
    let rt = runtime();
    let url = rt.block_on(async {
        let url = cluster.create_database().await;
        let reg = PostgresRegistry::connect(&url).await.unwrap();
        create_ready(&reg, SHARED).await;
        url
    });

    let mut acked = BTreeSet::new();
    for round in 0..3usize {
        let mut writers: Vec<Writer> = (0..2)
            .map(|w| spawn_writer(&url, round * 2 + w, TEST))
            .collect();
        // Kill once both have done real work, at a depth that differs per round.
        let want = 20 + 25 * round;
        let deadline = Instant::now() + Duration::from_secs(120);
        while writers.iter().any(|w| w.acks.lock().unwrap().len() < want) {
            assert!(Instant::now() < deadline, "writers made no progress");
            for w in &mut writers {
                if let Some(status) = w.child.try_wait().unwrap() {
                    panic!("a writer died on its own ({status}); its stderr is above");
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        for mut w in writers {
            w.child.kill().unwrap(); // SIGKILL
            let status = w.child.wait().unwrap();
            assert!(!status.success(), "the writer was killed, not finished");
            w.reader.join().unwrap();
            acked.extend(w.acks.lock().unwrap().drain(..));
        }
        let n = rt.block_on(check_registry(&url, &acked));
        assert!(
            n >= 2 * want,
            "round {round}: {n} acknowledged writes checked"
        );
    }

    // After all that, the registry still works normally.
    rt.block_on(async {
        let reg = PostgresRegistry::connect(&url).await.unwrap();
        let shared = reg.get(SHARED).await.unwrap();
        let next = shared.versions.len() as u32 + 1;
        let p = reg.begin_rotate(SHARED, "after".into(), 0).await.unwrap();
        assert_eq!(p.version, next);
        assert!(matches!(
            reg.begin_create(new_key(SHARED)).await,
            Err(Error::AlreadyExists(_))
        ));
    });
}
