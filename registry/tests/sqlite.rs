//! What only the SQLite registry has: its file, its schema version, its migrations.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use keywarden_registry::migrations::CURRENT_VERSION;
use keywarden_registry::testing::create_ready;
use keywarden_registry::{Error, KeyState, Registry, SqliteRegistry};
use rusqlite::Connection;

fn schema_rows(path: &Path) -> Vec<i64> {
    let conn = Connection::open(path).unwrap();
    let mut stmt = conn.prepare("SELECT version FROM schema_version").unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn tables(path: &Path) -> Vec<String> {
    let conn = Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT type || ' ' || name || ': ' || COALESCE(sql, '') FROM sqlite_master ORDER BY name")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test]
async fn migrations_are_idempotent_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    let first = SqliteRegistry::open(&path).unwrap();
    create_ready(&first, "a").await;
    let snapshot = first.list().await.unwrap();
    drop(first);
    let schema = tables(&path);
    assert!(
        schema.iter().any(|t| t.starts_with("table keys:")),
        "{schema:?}"
    );
    assert!(schema.iter().any(|t| t.starts_with("table key_versions:")));
    assert_eq!(schema_rows(&path), vec![i64::from(CURRENT_VERSION)]);
    for _ in 0..3 {
        let again = SqliteRegistry::open(&path).unwrap();
        assert_eq!(again.list().await.unwrap(), snapshot);
        drop(again);
        assert_eq!(tables(&path), schema, "reopening changes no table");
        assert_eq!(schema_rows(&path), vec![i64::from(CURRENT_VERSION)]);
    }
}

#[test]
fn concurrent_first_opens_migrate_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| SqliteRegistry::open(&path).map(drop)))
            .collect();
        for h in handles {
            h.join().unwrap().unwrap();
        }
    });
    assert_eq!(schema_rows(&path), vec![i64::from(CURRENT_VERSION)]);
}

#[test]
fn a_newer_schema_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    drop(SqliteRegistry::open(&path).unwrap());
    let newer = CURRENT_VERSION + 1;
    Connection::open(&path)
        .unwrap()
        .execute("UPDATE schema_version SET version = ?1", [newer])
        .unwrap();
    let before = tables(&path);
    let err = SqliteRegistry::open(&path).unwrap_err();
    assert!(
        matches!(err, Error::SchemaTooNew { found, supported } if found == newer && supported == CURRENT_VERSION),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "registry schema version {newer} is newer than this keywarden understands ({CURRENT_VERSION})"
        )
    );
    assert_eq!(tables(&path), before);
    assert_eq!(schema_rows(&path), vec![i64::from(newer)]);
}

#[test]
fn storage_errors_name_the_file_and_sqlite_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing-dir").join("r.db");
    let err = SqliteRegistry::open(&path).unwrap_err();
    let Error::Storage(msg) = &err else {
        panic!("{err:?}")
    };
    assert!(msg.contains("missing-dir"), "{msg}");
    assert!(msg.contains("unable to open database file"), "{msg}");
    assert!(err.to_string().starts_with("registry storage: "));

    let not_db = dir.path().join("not-a-db");
    std::fs::write(&not_db, vec![b'x'; 4096]).unwrap();
    let err = SqliteRegistry::open(&not_db).unwrap_err();
    assert!(
        matches!(&err, Error::Storage(m) if m.contains("not a database")),
        "{err:?}"
    );
}

#[test]
fn the_schema_forbids_half_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    drop(SqliteRegistry::open(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    conn.execute(
        "INSERT INTO keys VALUES ('k', 'ed25519', 'sim', 0, '{}', 'enabled', 0, NULL)",
        [],
    )
    .unwrap();
    for bad in [
        "INSERT INTO key_versions VALUES ('k', 1, 'ready', 'l', NULL, NULL, 0)",
        "INSERT INTO key_versions VALUES ('k', 1, 'ready', 'l', x'01', NULL, 0)",
        "INSERT INTO key_versions VALUES ('k', 1, 'pending', 'l', x'01', x'02', 0)",
        "INSERT INTO key_versions VALUES ('k', 0, 'pending', 'l', NULL, NULL, 0)",
        "INSERT INTO key_versions VALUES ('k', 1, 'bogus', 'l', NULL, NULL, 0)",
    ] {
        let err = conn.execute(bad, []).unwrap_err();
        assert!(err.to_string().contains("CHECK"), "{bad}: {err}");
    }
    assert!(
        conn.execute("UPDATE keys SET state = 'lost' WHERE name = 'k'", [])
            .is_err()
    );
}

#[tokio::test]
async fn a_corrupt_row_is_a_storage_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    let reg = SqliteRegistry::open(&path).unwrap();
    create_ready(&reg, "k").await;
    Connection::open(&path)
        .unwrap()
        .execute("UPDATE keys SET labels = 'not json' WHERE name = 'k'", [])
        .unwrap();
    let err = reg.get("k").await.unwrap_err();
    assert!(
        matches!(&err, Error::Storage(m) if m.contains("corrupt registry row") && m.contains("labels")),
        "{err:?}"
    );
    assert!(reg.list().await.is_err());
    // Other keys stay reachable.
    create_ready(&reg, "other").await;
    assert_eq!(
        reg.set_state("other", KeyState::Disabled)
            .await
            .unwrap()
            .state,
        KeyState::Disabled
    );
}

/// Another process holding the write lock makes a write wait (busy timeout), not fail, and
/// the wait happens off the executor: on a single-threaded runtime, other tasks keep running.
#[tokio::test(flavor = "current_thread")]
async fn a_write_waits_for_another_process_without_blocking_the_executor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    let reg = std::sync::Arc::new(SqliteRegistry::open(&path).unwrap());
    create_ready(reg.as_ref(), "k").await;

    // "Another process": a raw connection holding the write lock.
    let other = Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();

    let writer = {
        let reg = std::sync::Arc::clone(&reg);
        tokio::spawn(async move { reg.begin_rotate("k", "kw-k-2".into(), 0).await })
    };
    // The executor is free: this loop's sleeps complete while the write waits.
    let mut ticks = 0;
    for _ in 0..20 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        ticks += 1;
    }
    assert_eq!(ticks, 20);
    assert!(!writer.is_finished(), "the write waits for the lock");
    // A read is not blocked by the other writer (WAL).
    assert_eq!(reg.get("k").await.unwrap().versions.len(), 1);

    other.execute_batch("COMMIT").unwrap();
    let p = writer.await.unwrap().unwrap();
    assert_eq!(p.version, 2);
}

/// A migration that fails leaves nothing half-applied: it runs in one transaction with the
/// schema version bump.
#[test]
fn a_failed_migration_rolls_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    // Something unrelated already took the name of the second table migration 1 creates.
    Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE key_versions (x INTEGER)")
        .unwrap();
    let err = SqliteRegistry::open(&path).unwrap_err();
    assert!(
        matches!(&err, Error::Storage(m) if m.contains("migration 1") && m.contains("key_versions")),
        "{err:?}"
    );
    let left = tables(&path);
    assert!(
        !left.iter().any(|t| t.starts_with("table keys:")),
        "the first table of the failed migration was rolled back: {left:?}"
    );
    let versions: i64 = Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(versions, 0, "no schema version recorded");
    // Once the obstacle is gone the same file migrates.
    Connection::open(&path)
        .unwrap()
        .execute_batch("DROP TABLE key_versions")
        .unwrap();
    drop(SqliteRegistry::open(&path).unwrap());
    assert_eq!(schema_rows(&path), vec![i64::from(CURRENT_VERSION)]);
}
