//! The embedded registry: one SQLite file.
//!
//! - WAL journal and `synchronous=FULL`: a write that returned is on disk, whatever crashes.
//! - Every write is one `BEGIN IMMEDIATE` transaction, so several processes on the same file
//!   (the service, a CLI tool, a restarted service) serialize their writes; a busy timeout
//!   makes them wait for each other instead of failing.
//! - Two connections, each behind a mutex: writes go through one, reads through the other, so
//!   a write waiting for another process's lock does not hold up reads (WAL lets them go on).
//!   Every call runs on tokio's blocking pool, never on the async executor.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::Registry;
use crate::error::Error;
use crate::migrations::{CURRENT_VERSION, Dialect, MIGRATIONS, SCHEMA_VERSION_TABLE};
use crate::types::{
    KeyRecord, KeyState, NewKey, Pending, Timestamp, VersionRecord, VersionState, validate_name,
};

/// How long a write waits for another process's transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// A [`Registry`] in one SQLite file (or in memory, for tests).
pub struct SqliteRegistry {
    writer: Arc<Mutex<Connection>>,
    /// A second connection for reads; the writer itself in memory (one database per
    /// connection there).
    reader: Arc<Mutex<Connection>>,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for SqliteRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteRegistry")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteRegistry {
    /// Opens (creating if absent) the registry at `path` and brings its schema up to date.
    ///
    /// [`Error::SchemaTooNew`] if a newer keywarden migrated it.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let context = |e: rusqlite::Error| Error::Storage(format!("{}: {e}", path.display()));
        create_private(path)?;
        let mut conn = Connection::open(path).map_err(context)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(context)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(context)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Storage(format!(
                "{}: journal mode is {mode:?}, not WAL",
                path.display()
            )));
        }
        Self::prepare(&mut conn)?;
        let reader = Connection::open(path).map_err(context)?;
        reader.busy_timeout(BUSY_TIMEOUT).map_err(context)?;
        // It writes nothing, but the last connection to close checkpoints the WAL.
        reader
            .pragma_update(None, "synchronous", "FULL")
            .map_err(context)?;
        Ok(Self {
            writer: Arc::new(Mutex::new(conn)),
            reader: Arc::new(Mutex::new(reader)),
            path: Some(path.to_owned()),
        })
    }

    /// A fresh registry in memory, gone when dropped.
    pub fn in_memory() -> Result<Self, Error> {
        let mut conn = Connection::open_in_memory()?;
        Self::prepare(&mut conn)?;
        let conn = Arc::new(Mutex::new(conn));
        Ok(Self {
            writer: Arc::clone(&conn),
            reader: conn,
            path: None,
        })
    }

    /// The file this registry lives in (`None` in memory).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn prepare(conn: &mut Connection) -> Result<(), Error> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(conn)
    }

    /// Runs `f` with the write connection on the blocking pool.
    async fn write<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, Error> + Send + 'static,
    {
        run(Arc::clone(&self.writer), f).await
    }

    /// Runs `f` with the read connection on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, Error> + Send + 'static,
    {
        run(Arc::clone(&self.reader), f).await
    }
}

/// Runs `f` with `conn` on the blocking pool.
async fn run<T, F>(conn: Arc<Mutex<Connection>>, f: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> Result<T, Error> + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        // A panic while the lock was held dropped its transaction, which rolled back:
        // the connection is consistent, so poisoning carries no information here.
        let mut guard = conn.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    })
    .await
    .map_err(|e| Error::Storage(format!("registry task failed: {e}")))?
}

/// Creates the file readable by its owner only, if absent. SQLite gives the `-wal` and `-shm`
/// files it makes beside it the same mode.
fn create_private(path: &Path) -> Result<(), Error> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::Storage(format!(
            "{}: unable to open database file: {e}",
            path.display()
        ))),
    }
}

/// Applies every migration newer than the database's schema, in one transaction.
fn migrate(conn: &mut Connection) -> Result<(), Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(SCHEMA_VERSION_TABLE)?;
    let found: Option<i64> =
        tx.query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))?;
    let found = u32::try_from(found.unwrap_or(0))
        .map_err(|_| Error::Storage(format!("schema version {found:?} out of range")))?;
    if found > CURRENT_VERSION {
        return Err(Error::SchemaTooNew {
            found,
            supported: CURRENT_VERSION,
        });
    }
    if found == CURRENT_VERSION {
        return Ok(());
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > found) {
        tx.execute_batch(&m.sql(Dialect::Sqlite)).map_err(|e| {
            Error::Storage(format!("migration {} ({}): {e}", m.version, m.description))
        })?;
    }
    tx.execute("DELETE FROM schema_version", [])?;
    tx.execute(
        "INSERT INTO schema_version (version) VALUES (?1)",
        [CURRENT_VERSION],
    )?;
    tx.commit()?;
    Ok(())
}

fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::Storage(format!("corrupt registry row: {what}"))
}

/// The key row without its versions.
fn key_row(conn: &Connection, name: &str) -> Result<Option<KeyRecord>, Error> {
    let raw = conn
        .query_row(
            "SELECT name, algorithm, backend, owner_uid, labels, state, created_at, expires_at
             FROM keys WHERE name = ?1",
            [name],
            raw_key,
        )
        .optional()?;
    raw.map(RawKey::into_record).transpose()
}

type RawKey = (
    String,
    String,
    String,
    i64,
    String,
    String,
    Timestamp,
    Option<Timestamp>,
);

fn raw_key(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawKey> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}

trait IntoRecord {
    fn into_record(self) -> Result<KeyRecord, Error>;
}

impl IntoRecord for RawKey {
    fn into_record(self) -> Result<KeyRecord, Error> {
        let (name, algorithm, backend, owner_uid, labels, state, created_at, expires_at) = self;
        let labels: BTreeMap<String, String> = serde_json::from_str(&labels)
            .map_err(|e| corrupt(format!("labels of {name:?}: {e}")))?;
        Ok(KeyRecord {
            owner_uid: u32::try_from(owner_uid)
                .map_err(|_| corrupt(format!("owner uid {owner_uid} of {name:?}")))?,
            state: state
                .parse()
                .map_err(|e| corrupt(format!("state of {name:?}: {e}")))?,
            name,
            algorithm,
            backend,
            labels,
            created_at,
            expires_at,
            versions: Vec::new(),
        })
    }
}

type RawVersion = (
    String,
    i64,
    String,
    String,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Timestamp,
);

const VERSION_COLUMNS: &str =
    "key_name, version, state, hsm_label, key_ref, public_key, created_at";

fn raw_version(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawVersion> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn version_record(raw: RawVersion) -> Result<(String, VersionRecord), Error> {
    let (name, version, state, hsm_label, key_ref, public_key, created_at) = raw;
    let record = VersionRecord {
        version: u32::try_from(version)
            .map_err(|_| corrupt(format!("version {version} of {name:?}")))?,
        state: state
            .parse()
            .map_err(|e| corrupt(format!("version {version} of {name:?}: {e}")))?,
        hsm_label,
        key_ref,
        public_key,
        created_at,
    };
    Ok((name, record))
}

fn versions_of(conn: &Connection, name: &str) -> Result<Vec<VersionRecord>, Error> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {VERSION_COLUMNS} FROM key_versions WHERE key_name = ?1 ORDER BY version"
    ))?;
    let rows = stmt.query_map([name], raw_version)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(version_record(row?)?.1);
    }
    Ok(out)
}

/// The whole record, or `None` if there is no such key.
fn load(conn: &Connection, name: &str) -> Result<Option<KeyRecord>, Error> {
    let Some(mut record) = key_row(conn, name)? else {
        return Ok(None);
    };
    record.versions = versions_of(conn, name)?;
    Ok(Some(record))
}

fn load_existing(conn: &Connection, name: &str) -> Result<KeyRecord, Error> {
    load(conn, name)?.ok_or_else(|| Error::NotFound(name.to_owned()))
}

fn version_state(conn: &Connection, name: &str, version: u32) -> Result<VersionState, Error> {
    let state: Option<String> = conn
        .query_row(
            "SELECT state FROM key_versions WHERE key_name = ?1 AND version = ?2",
            params![name, version],
            |r| r.get(0),
        )
        .optional()?;
    match state {
        None => Err(Error::NoSuchVersion {
            name: name.to_owned(),
            version,
        }),
        Some(s) => s
            .parse()
            .map_err(|e| corrupt(format!("version {version} of {name:?}: {e}"))),
    }
}

fn pending_of(
    record: &KeyRecord,
    version: u32,
    hsm_label: String,
    created_at: Timestamp,
) -> Pending {
    Pending {
        name: record.name.clone(),
        version,
        hsm_label,
        backend: record.backend.clone(),
        algorithm: record.algorithm.clone(),
        created_at,
    }
}

#[async_trait::async_trait]
impl Registry for SqliteRegistry {
    async fn begin_create(&self, new: NewKey) -> Result<Pending, Error> {
        validate_name(&new.name)?;
        let labels = serde_json::to_string(&new.labels)
            .map_err(|e| Error::Storage(format!("labels: {e}")))?;
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let exists = tx
                .query_row(
                    "SELECT 1 FROM keys WHERE name = ?1",
                    [&new.name],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if exists {
                return Err(Error::AlreadyExists(new.name));
            }
            tx.execute(
                "INSERT INTO keys
                   (name, algorithm, backend, owner_uid, labels, state, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    new.name,
                    new.algorithm,
                    new.backend,
                    new.owner_uid,
                    labels,
                    KeyState::Enabled.as_str(),
                    new.now,
                    new.expires_at
                ],
            )?;
            tx.execute(
                "INSERT INTO key_versions (key_name, version, state, hsm_label, created_at)
                 VALUES (?1, 1, ?2, ?3, ?4)",
                params![
                    new.name,
                    VersionState::Pending.as_str(),
                    new.hsm_label,
                    new.now
                ],
            )?;
            tx.commit()?;
            Ok(Pending {
                name: new.name,
                version: 1,
                hsm_label: new.hsm_label,
                backend: new.backend,
                algorithm: new.algorithm,
                created_at: new.now,
            })
        })
        .await
    }

    async fn begin_rotate(
        &self,
        name: &str,
        hsm_label: String,
        now: Timestamp,
    ) -> Result<Pending, Error> {
        validate_name(name)?;
        let name = name.to_owned();
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let key = key_row(&tx, &name)?.ok_or_else(|| Error::NotFound(name.clone()))?;
            if key.state != KeyState::Enabled {
                return Err(Error::WrongState {
                    name,
                    state: key.state,
                    action: "rotate",
                    needs: "enabled",
                });
            }
            let max: i64 = tx.query_row(
                "SELECT COALESCE(MAX(version), 0) FROM key_versions WHERE key_name = ?1",
                [&name],
                |r| r.get(0),
            )?;
            let next = u32::try_from(max + 1)
                .map_err(|_| Error::Storage(format!("key {name:?} has run out of versions")))?;
            tx.execute(
                "INSERT INTO key_versions (key_name, version, state, hsm_label, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![name, next, VersionState::Pending.as_str(), hsm_label, now],
            )?;
            tx.commit()?;
            Ok(pending_of(&key, next, hsm_label, now))
        })
        .await
    }

    async fn complete(
        &self,
        name: &str,
        version: u32,
        key_ref: &[u8],
        public_key: &[u8],
    ) -> Result<KeyRecord, Error> {
        validate_name(name)?;
        let name = name.to_owned();
        let key_ref = key_ref.to_vec();
        let public_key = public_key.to_vec();
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let before = load_existing(&tx, &name)?;
            let Some(v) = before.version(version) else {
                return Err(Error::NoSuchVersion { name, version });
            };
            match v.state {
                VersionState::Pending => {
                    tx.execute(
                        "UPDATE key_versions SET state = ?1, key_ref = ?2, public_key = ?3
                         WHERE key_name = ?4 AND version = ?5",
                        params![
                            VersionState::Ready.as_str(),
                            key_ref,
                            public_key,
                            name,
                            version
                        ],
                    )?;
                }
                // A retry of a completion whose answer was lost.
                VersionState::Ready
                    if v.key_ref.as_deref() == Some(&key_ref[..])
                        && v.public_key.as_deref() == Some(&public_key[..]) =>
                {
                    return Ok(before);
                }
                state => {
                    return Err(Error::VersionWrongState {
                        name,
                        version,
                        state,
                        action: "complete",
                        needs: "pending",
                    });
                }
            }
            let after = load_existing(&tx, &name)?;
            tx.commit()?;
            Ok(after)
        })
        .await
    }

    async fn abort(&self, name: &str, version: u32) -> Result<(), Error> {
        validate_name(name)?;
        let name = name.to_owned();
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if key_row(&tx, &name)?.is_none() {
                return Err(Error::NotFound(name));
            }
            let state = version_state(&tx, &name, version)?;
            if state != VersionState::Pending {
                return Err(Error::VersionWrongState {
                    name,
                    version,
                    state,
                    action: "abort",
                    needs: "pending",
                });
            }
            let (count, max): (i64, i64) = tx.query_row(
                "SELECT COUNT(*), MAX(version) FROM key_versions WHERE key_name = ?1",
                [&name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            if count == 1 {
                // Version 1 of a key that never got an HSM key: the key goes too.
                tx.execute("DELETE FROM key_versions WHERE key_name = ?1", [&name])?;
                tx.execute("DELETE FROM keys WHERE name = ?1", [&name])?;
            } else if i64::from(version) == max {
                tx.execute(
                    "DELETE FROM key_versions WHERE key_name = ?1 AND version = ?2",
                    params![name, version],
                )?;
            } else {
                // Newer versions exist: keep the number, so the sequence stays gap-free.
                tx.execute(
                    "UPDATE key_versions SET state = ?1 WHERE key_name = ?2 AND version = ?3",
                    params![VersionState::Destroyed.as_str(), name, version],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn pending(&self) -> Result<Vec<Pending>, Error> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT v.key_name, v.version, v.hsm_label, k.backend, k.algorithm, v.created_at
                 FROM key_versions v JOIN keys k ON k.name = v.key_name
                 WHERE v.state = ?1
                 ORDER BY v.key_name, v.version",
            )?;
            let rows = stmt.query_map([VersionState::Pending.as_str()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Timestamp>(5)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (name, version, hsm_label, backend, algorithm, created_at) = row?;
                let version = u32::try_from(version)
                    .map_err(|_| corrupt(format!("version {version} of {name:?}")))?;
                out.push(Pending {
                    name,
                    version,
                    hsm_label,
                    backend,
                    algorithm,
                    created_at,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn get(&self, name: &str) -> Result<KeyRecord, Error> {
        validate_name(name)?;
        let name = name.to_owned();
        self.read(move |conn| {
            // One read transaction: the key and its versions from the same snapshot.
            let tx = conn.transaction()?;
            let record = load_existing(&tx, &name)?;
            tx.finish()?;
            Ok(record)
        })
        .await
    }

    async fn list(&self) -> Result<Vec<KeyRecord>, Error> {
        self.read(|conn| {
            let tx = conn.transaction()?;
            let mut keys = Vec::new();
            {
                let mut stmt = tx.prepare_cached(
                    "SELECT name, algorithm, backend, owner_uid, labels, state, created_at,
                            expires_at
                     FROM keys ORDER BY name",
                )?;
                for row in stmt.query_map([], raw_key)? {
                    keys.push(row?.into_record()?);
                }
                let mut by_name: BTreeMap<String, Vec<VersionRecord>> = BTreeMap::new();
                let mut stmt = tx.prepare_cached(&format!(
                    "SELECT {VERSION_COLUMNS} FROM key_versions ORDER BY key_name, version"
                ))?;
                for row in stmt.query_map([], raw_version)? {
                    let (name, v) = version_record(row?)?;
                    by_name.entry(name).or_default().push(v);
                }
                for key in &mut keys {
                    key.versions = by_name.remove(&key.name).unwrap_or_default();
                }
            }
            tx.finish()?;
            // The database's collation need not be bytewise (PostgreSQL's is not); ours is.
            keys.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(keys)
        })
        .await
    }

    async fn set_state(&self, name: &str, state: KeyState) -> Result<KeyRecord, Error> {
        validate_name(name)?;
        let name = name.to_owned();
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let before = load_existing(&tx, &name)?;
            let (action, needs) = match state {
                KeyState::Enabled => ("enable", "disabled"),
                KeyState::Disabled => ("disable", "enabled"),
                KeyState::Destroyed => {
                    return Err(Error::WrongState {
                        name,
                        state: before.state,
                        action: "set_state(destroyed)",
                        needs: "disabled and then destroy(), not set_state",
                    });
                }
            };
            if before.state == KeyState::Destroyed {
                return Err(Error::WrongState {
                    name,
                    state: before.state,
                    action,
                    needs,
                });
            }
            if before.state == state {
                return Ok(before);
            }
            tx.execute(
                "UPDATE keys SET state = ?1 WHERE name = ?2",
                params![state.as_str(), name],
            )?;
            let after = load_existing(&tx, &name)?;
            tx.commit()?;
            Ok(after)
        })
        .await
    }

    async fn destroy(&self, name: &str) -> Result<KeyRecord, Error> {
        validate_name(name)?;
        let name = name.to_owned();
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let before = load_existing(&tx, &name)?;
            if before.state != KeyState::Disabled {
                return Err(Error::WrongState {
                    name,
                    state: before.state,
                    action: "destroy",
                    needs: "disabled",
                });
            }
            tx.execute(
                "UPDATE keys SET state = ?1 WHERE name = ?2",
                params![KeyState::Destroyed.as_str(), name],
            )?;
            tx.execute(
                "UPDATE key_versions SET state = ?1 WHERE key_name = ?2",
                params![VersionState::Destroyed.as_str(), name],
            )?;
            tx.commit()?;
            Ok(before)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pragma(conn: &Connection, name: &str) -> String {
        conn.query_row(&format!("PRAGMA {name}"), [], |r| {
            r.get::<_, rusqlite::types::Value>(0)
        })
        .map(|v| match v {
            rusqlite::types::Value::Integer(i) => i.to_string(),
            rusqlite::types::Value::Text(s) => s,
            other => format!("{other:?}"),
        })
        .unwrap()
    }

    #[test]
    fn file_connections_are_durable_and_wait_for_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let reg = SqliteRegistry::open(&dir.path().join("r.db")).unwrap();
        let conn = reg.writer.lock().unwrap();
        assert_eq!(pragma(&conn, "journal_mode"), "wal");
        assert_eq!(pragma(&conn, "synchronous"), "2", "FULL");
        assert_eq!(pragma(&conn, "foreign_keys"), "1");
        assert_eq!(
            pragma(&conn, "busy_timeout"),
            BUSY_TIMEOUT.as_millis().to_string()
        );
        drop(conn);
        let reader = reg.reader.lock().unwrap();
        assert_eq!(pragma(&reader, "synchronous"), "2", "FULL");
        assert_eq!(
            pragma(&reader, "busy_timeout"),
            BUSY_TIMEOUT.as_millis().to_string()
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_new_file_and_its_wal_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let _reg = SqliteRegistry::open(&path).unwrap();
        for file in ["r.db", "r.db-wal", "r.db-shm"] {
            let mode = std::fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
    }

    #[test]
    fn debug_names_the_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let reg = SqliteRegistry::open(&path).unwrap();
        let dbg = format!("{reg:?}");
        assert!(dbg.contains("r.db"), "{dbg}");
        assert_eq!(reg.path(), Some(path.as_path()));
        assert_eq!(SqliteRegistry::in_memory().unwrap().path(), None);
    }
}
