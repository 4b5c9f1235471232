//! The PostgreSQL registry on a private cluster: the shared suite with a second node on the
//! same database, then what only PostgreSQL has (its schema table, migrating under a lock,
//! many nodes rotating one key, lost connections, the connection URL's password).
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use keywarden_registry::migrations::CURRENT_VERSION;
use keywarden_registry::testing::postgres::{Cluster, harness, sql};
use keywarden_registry::testing::{create_ready, key_ref_for, public_key_for, rotate_ready};
use keywarden_registry::{Error, KeyState, PostgresRegistry, Registry, VersionState};

keywarden_registry::registry_tests!(harness);

async fn cluster() -> Arc<Cluster> {
    tokio::task::spawn_blocking(Cluster::shared).await.unwrap()
}

fn text(rows: &[Vec<Option<String>>]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|r| r.iter().map(|c| c.clone().unwrap_or_default()).collect())
        .collect()
}

async fn schema_rows(url: &str) -> Vec<Vec<String>> {
    text(&sql(url, "SELECT version FROM schema_version").await)
}

async fn tables(url: &str) -> Vec<Vec<String>> {
    text(
        &sql(
            url,
            "SELECT table_name, column_name, data_type FROM information_schema.columns
             WHERE table_schema = 'public' ORDER BY table_name, ordinal_position",
        )
        .await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_connects_migrate_once() {
    let cluster = cluster().await;
    let url = cluster.create_database().await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            PostgresRegistry::connect(&url).await.map(drop)
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        schema_rows(&url).await,
        vec![vec![CURRENT_VERSION.to_string()]]
    );
    let schema = tables(&url).await;
    let names: BTreeSet<&str> = schema.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["key_versions", "keys", "schema_version"])
    );
    assert!(
        schema.contains(&vec![
            "key_versions".into(),
            "key_ref".into(),
            "bytea".into()
        ]),
        "{schema:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrations_are_idempotent_on_reconnect() {
    let cluster = cluster().await;
    let url = cluster.create_database().await;
    let first = PostgresRegistry::connect(&url).await.unwrap();
    create_ready(&first, "a").await;
    let snapshot = first.list().await.unwrap();
    drop(first);
    let schema = tables(&url).await;
    for _ in 0..3 {
        let again = PostgresRegistry::connect(&url).await.unwrap();
        assert_eq!(again.list().await.unwrap(), snapshot);
        assert_eq!(tables(&url).await, schema, "reconnecting changes no table");
        assert_eq!(
            schema_rows(&url).await,
            vec![vec![CURRENT_VERSION.to_string()]]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_newer_schema_is_refused_and_left_alone() {
    let cluster = cluster().await;
    let url = cluster.create_database().await;
    let first = PostgresRegistry::connect(&url).await.unwrap();
    create_ready(&first, "kept").await;
    drop(first);
    let newer = CURRENT_VERSION + 1;
    sql(
        &url,
        &format!("UPDATE schema_version SET version = {newer}"),
    )
    .await;
    let before = tables(&url).await;
    let err = PostgresRegistry::connect(&url).await.unwrap_err();
    assert!(
        matches!(err, Error::SchemaTooNew { found, supported } if found == newer && supported == CURRENT_VERSION),
        "{err:?}"
    );
    assert_eq!(tables(&url).await, before);
    assert_eq!(schema_rows(&url).await, vec![vec![newer.to_string()]]);
    let rows = sql(&url, "SELECT name FROM keys").await;
    assert_eq!(text(&rows), vec![vec!["kept".to_owned()]]);
}

/// Issue 7: 100 concurrent rotations split across two nodes leave a gap-free sequence.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_rotations_from_two_nodes_are_gap_free() {
    let cluster = cluster().await;
    let url = cluster.create_database().await;
    let a: Arc<dyn Registry> = Arc::new(PostgresRegistry::connect(&url).await.unwrap());
    let b: Arc<dyn Registry> = Arc::new(PostgresRegistry::connect(&url).await.unwrap());
    create_ready(a.as_ref(), "hot").await;
    let mut tasks = Vec::new();
    for i in 0..100 {
        let node = Arc::clone(if i % 2 == 0 { &a } else { &b });
        tasks.push(tokio::spawn(async move {
            let label = format!("kw-hot-task-{i}");
            (i % 2, rotate_ready(node.as_ref(), "hot", label).await)
        }));
    }
    let mut got = Vec::new();
    let mut per_node = [0; 2];
    for t in tasks {
        let (node, version) = t.await.unwrap();
        per_node[node] += 1;
        got.push(version);
    }
    got.sort_unstable();
    assert_eq!(got, (2..=101).collect::<Vec<u32>>(), "one version each");
    assert_eq!(per_node, [50, 50]);
    for node in [&a, &b] {
        let rec = node.get("hot").await.unwrap();
        let numbers: Vec<u32> = rec.versions.iter().map(|v| v.version).collect();
        assert_eq!(numbers, (1..=101).collect::<Vec<_>>());
        let mut labels = BTreeSet::new();
        for v in &rec.versions {
            assert_eq!(v.state, VersionState::Ready);
            assert_eq!(v.key_ref.as_deref(), Some(&key_ref_for(&v.hsm_label)[..]));
            assert_eq!(
                v.public_key.as_deref(),
                Some(&public_key_for(&v.hsm_label)[..])
            );
            assert!(labels.insert(v.hsm_label.clone()), "{} twice", v.hsm_label);
        }
        assert_eq!(rec.latest_ready().unwrap().version, 101);
    }
    assert!(a.pending().await.unwrap().is_empty());
}

/// A destroy on one node racing completions on the other: every completion either landed
/// before the destroy (its version is in what destroy returned, to be destroyed in the HSM)
/// or is refused as Destroyed (the caller destroys its HSM object). Nothing is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn destroy_racing_completions_on_another_node_loses_nothing() {
    let cluster = cluster().await;
    let url = cluster.create_database().await;
    let a = Arc::new(PostgresRegistry::connect(&url).await.unwrap());
    let b = Arc::new(PostgresRegistry::connect(&url).await.unwrap());
    create_ready(a.as_ref(), "doomed").await;
    let mut pendings = Vec::new();
    for i in 0..20 {
        pendings.push(
            a.begin_rotate("doomed", format!("kw-doomed-{i}"), 1)
                .await
                .unwrap(),
        );
    }
    a.set_state("doomed", KeyState::Disabled).await.unwrap();
    let mut tasks = Vec::new();
    for p in pendings {
        let b = Arc::clone(&b);
        tasks.push(tokio::spawn(async move {
            let r = b
                .complete(
                    &p.name,
                    p.version,
                    &key_ref_for(&p.hsm_label),
                    &public_key_for(&p.hsm_label),
                )
                .await;
            (p.version, r.map(drop))
        }));
    }
    let destroyed = a.destroy("doomed").await.unwrap();
    for t in tasks {
        let (version, result) = t.await.unwrap();
        let in_destroy = destroyed.version(version).unwrap().state;
        match result {
            Ok(()) => assert_eq!(in_destroy, VersionState::Ready, "v{version}"),
            Err(Error::VersionWrongState {
                state: VersionState::Destroyed,
                ..
            }) => assert_eq!(in_destroy, VersionState::Pending, "v{version}"),
            Err(e) => panic!("v{version}: {e:?}"),
        }
    }
    let tomb = b.get("doomed").await.unwrap();
    assert_eq!(tomb.versions.len(), 21);
    assert!(
        tomb.versions
            .iter()
            .all(|v| v.state == VersionState::Destroyed)
    );
    assert!(b.pending().await.unwrap().is_empty());
}

/// The server dropping every connection (a restart, a failover) costs at most the calls in
/// flight: the pool replaces broken connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_the_server_dropped_are_replaced() {
    let cluster = cluster().await;
    let url = cluster.create_database().await;
    let reg = PostgresRegistry::connect(&url).await.unwrap();
    create_ready(&reg, "k").await;
    let dbname = url.rsplit('/').next().unwrap().to_owned();
    let killed = sql(
        &cluster.url("postgres"),
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = '{dbname}' AND pid <> pg_backend_pid()"
        ),
    )
    .await;
    assert!(!killed.is_empty(), "the registry had a connection");
    // The connection's task notices the close as soon as the server's message arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(reg.get("k").await.unwrap().versions.len(), 1);
    rotate_ready(&reg, "k", "kw-k-2".into()).await;
}

/// Names sort bytewise in `pending` and `list`, though the database collates with ICU.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn order_is_bytewise_whatever_the_collation() {
    let cluster = cluster().await;
    let url = cluster.create_database().await;
    let reg = PostgresRegistry::connect(&url).await.unwrap();
    let names = ["b", "a", "B", "a-1", "a.1", "a0", "_", "A"];
    for name in names {
        reg.begin_create(keywarden_registry::testing::new_key(name))
            .await
            .unwrap();
    }
    let mut want: Vec<&str> = names.to_vec();
    want.sort_unstable();
    let pending: Vec<String> = reg
        .pending()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(pending, want);
    let listed: Vec<String> = reg
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.name)
        .collect();
    assert_eq!(listed, want);
    // The database itself would have sorted them otherwise.
    let db = sql(&url, "SELECT name FROM keys ORDER BY name").await;
    let db: Vec<String> = text(&db).into_iter().map(|r| r[0].clone()).collect();
    assert_ne!(db, want, "the test database should not collate bytewise");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_password_never_shows() {
    let cluster = cluster().await;
    let url = cluster.create_database().await;
    let password = cluster.password().to_owned();
    // Wrong password: the server refuses; neither password is in the message.
    let wrong = url.replace(&password, "SECRETPW");
    let err = PostgresRegistry::connect(&wrong).await.unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("password authentication failed"), "{shown}");
    assert!(
        !shown.contains("SECRETPW") && !shown.contains(&password),
        "{shown}"
    );
    // Nothing listening.
    let err = PostgresRegistry::connect("postgres://u:SECRETPW@127.0.0.1:1/db")
        .await
        .unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("SECRETPW"), "{shown}");
    // A working handle's Debug, and a storage error from a live connection.
    let reg = PostgresRegistry::connect(&url).await.unwrap();
    let dbg = format!("{reg:?}");
    assert!(dbg.contains("127.0.0.1"), "{dbg}");
    assert!(!dbg.contains(&password), "{dbg}");
    sql(&url, "DROP TABLE key_versions").await;
    let err = reg.list().await.unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("key_versions"), "{shown}");
    assert!(!shown.contains(&password), "{shown}");
}

/// Calls abandoned half-way (a client hung up and the service dropped the future) leave no
/// connection inside a transaction and no lock held: later calls from both nodes go on, and
/// the versions that were begun stay gap-free.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abandoned_calls_leave_no_transaction_open() {
    let cluster = cluster().await;
    let url = cluster.create_database().await;
    let a = Arc::new(PostgresRegistry::connect_with(&url, 4).await.unwrap());
    let b = Arc::new(PostgresRegistry::connect_with(&url, 4).await.unwrap());
    create_ready(a.as_ref(), "k").await;
    let mut cut = 0;
    for round in 0..40u64 {
        let mut tasks = Vec::new();
        for (i, node) in [&a, &b, &a, &b].into_iter().enumerate() {
            let node = Arc::clone(node);
            tasks.push(tokio::spawn(async move {
                // Cut short at a different point each time.
                let limit = Duration::from_micros(200 * (round % 10) + 50 * i as u64);
                let rotate = tokio::time::timeout(
                    limit,
                    node.begin_rotate("k", format!("kw-k-{round}-{i}"), 0),
                )
                .await;
                let _ = tokio::time::timeout(limit, node.list()).await;
                rotate.is_err()
            }));
        }
        for t in tasks {
            cut += usize::from(t.await.unwrap());
        }
    }
    assert!(cut > 0, "no call was cut short");
    // Every connection is back to idle, none "idle in transaction".
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let open = sql(
            &url,
            "SELECT COUNT(*) FROM pg_stat_activity
             WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
        )
        .await;
        if open == vec![vec![Some("0".to_owned())]] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{open:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rec = b.get("k").await.unwrap();
    let numbers: Vec<u32> = rec.versions.iter().map(|v| v.version).collect();
    assert_eq!(numbers, (1..=rec.versions.len() as u32).collect::<Vec<_>>());
    let next = rotate_ready(a.as_ref(), "k", "kw-k-after".into()).await;
    assert_eq!(next as usize, rec.versions.len() + 1);
    for p in b.pending().await.unwrap() {
        b.abort(&p.name, p.version).await.unwrap();
    }
    assert!(a.pending().await.unwrap().is_empty());
}

/// Over the server's Unix socket, in libpq's `key=value` form: the deployment the module
/// docs suggest while TLS is not supported.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connects_over_a_unix_socket() {
    let cluster = cluster().await;
    let url = cluster.create_database().await;
    let dbname = url.rsplit('/').next().unwrap();
    let conninfo = format!(
        "host={} port={} user=keywarden password={} dbname={dbname}",
        cluster.socket_dir().display(),
        cluster.port(),
        cluster.password()
    );
    let reg = PostgresRegistry::connect(&conninfo).await.unwrap();
    let dbg = format!("{reg:?}");
    assert!(
        dbg.contains(&cluster.socket_dir().display().to_string()),
        "{dbg}"
    );
    assert!(!dbg.contains(cluster.password()), "{dbg}");
    create_ready(&reg, "local").await;
    let over_tcp = PostgresRegistry::connect(&url).await.unwrap();
    assert_eq!(over_tcp.get("local").await.unwrap().versions.len(), 1);
}
