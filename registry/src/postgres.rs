//! The shared registry: one PostgreSQL database that several service nodes use at once.
//!
//! - Every write is one transaction (READ COMMITTED) that first locks the key's row
//!   (`SELECT … FOR UPDATE`), so writes to one key from any number of nodes run one after
//!   the other: `begin_rotate` reads `MAX(version)` under that lock and versions stay
//!   gap-free. A create races on the primary key (`INSERT … ON CONFLICT DO NOTHING`, which
//!   waits for a concurrent insert of the same name to commit or roll back). Each
//!   transaction locks at most one key row, so writers cannot deadlock.
//! - `get` reads the key and its versions in one statement (one snapshot, one round trip);
//!   `list` runs its two in one REPEATABLE READ, READ ONLY transaction.
//! - Each pooled connection prepares a statement once and reuses it.
//! - The schema is [`migrations`](crate::migrations) rendered for [`Dialect::Postgres`],
//!   applied in one transaction under a transaction-scoped advisory lock, so nodes starting
//!   at once migrate exactly once.
//! - A small pool of connections (each with its own task driving it); a connection that
//!   broke is dropped and a new one made on the next call.
//! - Names sort bytewise (`COLLATE "C"`), as in SQLite, whatever the database's collation.
//! - The connection URL's password never appears in an error or in `Debug`; it can also come
//!   separately ([`PostgresOptions::password`], e.g. from a file), out of the URL.
//! - TLS: with [`PostgresOptions::tls_ca`] every connection is TLS (rustls), the server's
//!   certificate must chain to that CA and name the host of the URL (libpq's
//!   `sslmode=verify-full`), and SCRAM binds to the TLS channel when the server offers it.
//!   Without it the connection is plain (`sslmode=require` in the URL is then refused, rather
//!   than silently not verifying): use a Unix socket (`host=/run/postgresql`) or a trusted
//!   network.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, IsolationLevel, NoTls, Row, Statement, Transaction};
use tokio_postgres_rustls::MakeRustlsConnect;
use zeroize::Zeroizing;

use crate::Registry;
use crate::error::Error;
use crate::migrations::{CURRENT_VERSION, Dialect, MIGRATIONS, SCHEMA_VERSION_TABLE};
use crate::types::{
    KeyRecord, KeyState, NewKey, Pending, Timestamp, VersionRecord, VersionState, validate_name,
};

/// Connections a handle opens at most, unless [`PostgresRegistry::connect_with`] says.
pub const DEFAULT_MAX_CONNECTIONS: usize = 8;

/// How long a connection attempt waits, unless the URL sets `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The key of the advisory lock migrations run under (`"kwregmig"` in ASCII).
const MIGRATION_LOCK: i64 = 0x6b77_7265_676d_6967;

/// A [`Registry`] in a PostgreSQL database, shared by every node that connects to it.
pub struct PostgresRegistry {
    pool: Arc<Pool>,
}

impl std::fmt::Debug for PostgresRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresRegistry")
            .field("target", &self.pool.target)
            .field("max_connections", &self.pool.max)
            .finish_non_exhaustive()
    }
}

impl PostgresRegistry {
    /// Connects to the database at `url` (`postgres://user:password@host:port/dbname`, or
    /// libpq's `key=value` form) with up to [`DEFAULT_MAX_CONNECTIONS`] connections, and
    /// brings its schema up to date.
    ///
    /// [`Error::SchemaTooNew`] if a newer keywarden migrated it; [`Error::Storage`] if the
    /// URL is malformed or the server cannot be reached (the message never holds the
    /// password).
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::connect_with(url, DEFAULT_MAX_CONNECTIONS).await
    }

    /// [`PostgresRegistry::connect`] with at most `max_connections` connections (at least 1).
    pub async fn connect_with(url: &str, max_connections: usize) -> Result<Self, Error> {
        Self::connect_with_options(
            url,
            PostgresOptions {
                max_connections,
                ..PostgresOptions::default()
            },
        )
        .await
    }

    /// [`PostgresRegistry::connect`] with a pool size, a password kept out of the URL, and TLS.
    pub async fn connect_with_options(url: &str, options: PostgresOptions) -> Result<Self, Error> {
        let max_connections = if options.max_connections == 0 {
            DEFAULT_MAX_CONNECTIONS
        } else {
            options.max_connections
        };
        let mut config = Config::from_str(url).map_err(|e| {
            // Only the parser's messages that name an option, never one that quotes the input.
            let cause = std::error::Error::source(&e)
                .map(ToString::to_string)
                .unwrap_or_default();
            let names_an_option = cause.starts_with("invalid value for option `")
                || cause.starts_with("unknown option `");
            Error::Storage(format!(
                "invalid PostgreSQL connection URL{}",
                if names_an_option {
                    format!(": {cause}")
                } else {
                    String::new()
                }
            ))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("keywarden");
        }
        if let Some(password) = &options.password {
            if config.get_password().is_some() {
                return Err(Error::Storage(
                    "the PostgreSQL password is given twice (in the URL and separately): \
                     keep it out of the URL"
                        .into(),
                ));
            }
            config.password(password.as_bytes());
        }
        let tls = match &options.tls_ca {
            None => {
                let remote_tcp = config.get_hosts().iter().any(|h| match h {
                    Host::Tcp(name) => !is_loopback(name),
                    Host::Unix(_) => false,
                });
                if remote_tcp && config.get_password().is_some() {
                    return Err(Error::Storage(
                        "a password would cross the network to the registry without TLS: \
                         set registry_tls_ca, or reach the database over a Unix socket or \
                         loopback"
                            .into(),
                    ));
                }
                if config.get_ssl_mode() == SslMode::Require {
                    return Err(Error::Storage(
                        "sslmode=require needs a CA to verify the server against \
                         (registry_tls_ca); without one keywarden would not know whom it \
                         talks to"
                            .into(),
                    ));
                }
                config.ssl_mode(SslMode::Disable);
                None
            }
            Some(ca) => {
                if config.get_ssl_mode() == SslMode::Disable {
                    return Err(Error::Storage(
                        "sslmode=disable contradicts the TLS CA given for the registry".into(),
                    ));
                }
                config.ssl_mode(SslMode::Require);
                Some(tls_connector(ca)?)
            }
        };
        let secret = config.get_password().map(|p| Zeroizing::new(p.to_vec()));
        let pool = Arc::new(Pool {
            target: describe_target(&config),
            config,
            tls,
            secret,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(max_connections.max(1)),
            max: max_connections.max(1),
        });
        let registry = Self { pool };
        let mut conn = registry.pool.get().await?;
        migrate(&registry.pool, conn.client()).await?;
        drop(conn);
        Ok(registry)
    }
}

/// How to reach the database, beyond its URL.
#[derive(Clone, Default)]
pub struct PostgresOptions {
    /// Pool size (0: [`DEFAULT_MAX_CONNECTIONS`]).
    pub max_connections: usize,
    /// The password, if not in the URL (it must not be in both).
    pub password: Option<Zeroizing<String>>,
    /// A CA certificate file (PEM): connect with TLS only, and only to a server whose
    /// certificate chains to it and names the URL's host.
    pub tls_ca: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("max_connections", &self.max_connections)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls_ca", &self.tls_ca)
            .finish()
    }
}

/// True for `localhost` and loopback addresses.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A rustls connector that trusts exactly the CAs in `ca` (PEM).
fn tls_connector(ca: &std::path::Path) -> Result<MakeRustlsConnect, Error> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let fail =
        |reason: String| Error::Storage(format!("registry TLS CA {}: {reason}", ca.display()));
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("no PEM CERTIFICATE block in the file".into()));
    }
    for cert in certs {
        roots.add(cert).map_err(|e| fail(e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .map_err(|e| fail(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// Connections not in use, and a limit on how many exist.
struct Pool {
    config: Config,
    /// TLS to the server, or `None` for a plain connection.
    tls: Option<MakeRustlsConnect>,
    /// The password, to scrub from any message before it leaves this module. (`config`
    /// holds it too, in tokio-postgres's own unzeroized copy.)
    secret: Option<Zeroizing<Vec<u8>>>,
    /// `user@host:port/dbname`, for `Debug` and messages.
    target: String,
    idle: Mutex<Vec<Pooled>>,
    permits: Semaphore,
    max: usize,
}

/// A connection and the statements prepared on it (each SQL text once per connection, which
/// halves the round trips of every later use).
struct Pooled {
    client: Client,
    statements: HashMap<String, Statement>,
}

/// A connection taken from the pool; back into it when dropped, unless it broke.
struct Conn<'a> {
    pool: &'a Pool,
    inner: Option<Pooled>,
    _permit: SemaphorePermit<'a>,
}

impl Conn<'_> {
    fn pooled(&mut self) -> &mut Pooled {
        // Invariant: `inner` is `Some` from `Pool::get` until `drop`.
        #[allow(clippy::expect_used)]
        self.inner
            .as_mut()
            .expect("a pooled connection until dropped")
    }

    fn client(&mut self) -> &mut Client {
        &mut self.pooled().client
    }

    /// Runs one statement (prepared once per connection) outside a transaction.
    async fn query(
        &mut self,
        what: &'static str,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<Vec<Row>, Error> {
        let pool = self.pool;
        let Pooled { client, statements } = self.pooled();
        let statement = match statements.get(sql) {
            Some(statement) => statement.clone(),
            None => {
                let statement = client
                    .prepare(sql)
                    .await
                    .map_err(|e| pool.error(what, &e))?;
                statements.insert(sql.to_owned(), statement.clone());
                statement
            }
        };
        client
            .query(&statement, params)
            .await
            .map_err(|e| pool.error(what, &e))
    }

    /// Starts the transaction of operation `what`: READ COMMITTED for writes, or one
    /// REPEATABLE READ, READ ONLY snapshot for reads.
    async fn begin(&mut self, what: &'static str, read_only: bool) -> Result<Tx<'_>, Error> {
        let pool = self.pool;
        let Pooled { client, statements } = self.pooled();
        let started = if read_only {
            client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
        } else {
            client.transaction().await
        };
        Ok(Tx {
            tx: started.map_err(|e| pool.error(what, &e))?,
            statements,
            pool,
            what,
        })
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Some(pooled) = self.inner.take()
            && !pooled.client.is_closed()
        {
            // A transaction dropped unfinished has already queued its ROLLBACK on this
            // connection, ahead of whatever the next user sends.
            self.pool
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(pooled);
        }
    }
}

impl Pool {
    async fn get(&self) -> Result<Conn<'_>, Error> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| Error::Storage(format!("registry connection pool: {e}")))?;
        loop {
            let idle = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            match idle {
                Some(pooled) if pooled.client.is_closed() => continue,
                Some(pooled) => {
                    return Ok(Conn {
                        pool: self,
                        inner: Some(pooled),
                        _permit: permit,
                    });
                }
                None => break,
            }
        }
        let fail = |e| self.error(&format!("connecting to {}", self.target), &e);
        // The connection's task ends when the client is dropped or the server goes away;
        // its error then shows up on the client's next call.
        let client = match &self.tls {
            None => {
                let (client, connection) = self.config.connect(NoTls).await.map_err(fail)?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                client
            }
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await.map_err(fail)?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                client
            }
        };
        Ok(Conn {
            pool: self,
            inner: Some(Pooled {
                client,
                statements: HashMap::new(),
            }),
            _permit: permit,
        })
    }

    /// A storage error describing `e` (with its causes), without the password.
    fn error(&self, context: &str, e: &tokio_postgres::Error) -> Error {
        Error::Storage(self.scrub(format!("{context}: {}", describe(e))))
    }

    fn scrub(&self, mut message: String) -> String {
        if let Some(secret) = self.secret.as_deref().filter(|s| !s.is_empty()) {
            let secret = String::from_utf8_lossy(secret);
            message = message.replace(secret.as_ref(), "<password>");
        }
        message
    }
}

/// `user@host:port/dbname`, never the password.
fn describe_target(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{}",
        config.get_user().unwrap_or("?"),
        config.get_dbname().unwrap_or("?")
    )
}

/// The error and its causes; for a server error its message, detail and SQLSTATE.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{}: {}", db.severity(), db.message());
        if let Some(detail) = db.detail() {
            s.push_str(&format!(" ({detail})"));
        }
        s.push_str(&format!(" [SQLSTATE {}]", db.code().code()));
        return s;
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    s
}

/// Applies every migration newer than the database's schema, in one transaction under an
/// advisory lock, so concurrent first connects migrate once.
async fn migrate(pool: &Pool, client: &mut Client) -> Result<(), Error> {
    let err = |e: tokio_postgres::Error| pool.error("migrating the registry schema", &e);
    let tx = client.transaction().await.map_err(err)?;
    // Before anything else: two `CREATE TABLE IF NOT EXISTS` at once can both find the
    // table absent, and one then fails.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(err)?;
    tx.batch_execute(SCHEMA_VERSION_TABLE).await.map_err(err)?;
    tx.batch_execute("LOCK TABLE schema_version IN EXCLUSIVE MODE")
        .await
        .map_err(err)?;
    let found: Option<i32> = tx
        .query_one("SELECT MAX(version) FROM schema_version", &[])
        .await
        .map_err(err)?
        .get(0);
    let found = u32::try_from(found.unwrap_or(0))
        .map_err(|_| Error::Storage(format!("schema version {found:?} out of range")))?;
    if found > CURRENT_VERSION {
        return Err(Error::SchemaTooNew {
            found,
            supported: CURRENT_VERSION,
        });
    }
    if found == CURRENT_VERSION {
        return tx.commit().await.map_err(err);
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > found) {
        tx.batch_execute(&m.sql(Dialect::Postgres))
            .await
            .map_err(|e| pool.error(&format!("migration {} ({})", m.version, m.description), &e))?;
    }
    let current = i32::try_from(CURRENT_VERSION)
        .map_err(|_| Error::Storage("schema version out of range".to_owned()))?;
    tx.execute("DELETE FROM schema_version", &[])
        .await
        .map_err(err)?;
    tx.execute(
        "INSERT INTO schema_version (version) VALUES ($1)",
        &[&current],
    )
    .await
    .map_err(err)?;
    tx.commit().await.map_err(err)
}

fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::Storage(format!("corrupt registry row: {what}"))
}

// Key rows are read as these columns, in this order (see `key_record`)…
const KEY_ROW: &str = "SELECT name, algorithm, backend, owner_uid, labels, state, created_at,
        expires_at FROM keys WHERE name = $1";
const KEY_ROW_FOR_UPDATE: &str = "SELECT name, algorithm, backend, owner_uid, labels, state,
        created_at, expires_at FROM keys WHERE name = $1 FOR UPDATE";
const ALL_KEYS: &str = "SELECT name, algorithm, backend, owner_uid, labels, state, created_at,
        expires_at FROM keys";
// …and version rows as these (see `version_record`).
const VERSIONS_OF: &str = "SELECT key_name, version, state, hsm_label, key_ref, public_key,
        created_at FROM key_versions WHERE key_name = $1 ORDER BY version";
// A whole record in one statement (so from one snapshot, in one round trip): the key's
// columns, then its versions' (NULL for a key without versions).
const RECORD: &str = "SELECT k.name, k.algorithm, k.backend, k.owner_uid, k.labels, k.state,
        k.created_at, k.expires_at, v.key_name, v.version, v.state, v.hsm_label, v.key_ref,
        v.public_key, v.created_at
        FROM keys k LEFT JOIN key_versions v ON v.key_name = k.name
        WHERE k.name = $1 ORDER BY v.version";
const PENDING: &str = "SELECT v.key_name, v.version, v.hsm_label, k.backend, k.algorithm,
        v.created_at FROM key_versions v JOIN keys k ON k.name = v.key_name
        WHERE v.state = 'pending' ORDER BY v.key_name COLLATE \"C\", v.version";
const ALL_VERSIONS: &str = "SELECT key_name, version, state, hsm_label, key_ref, public_key,
        created_at FROM key_versions ORDER BY version";

/// A key row (selected as in [`KEY_ROW`]) without its versions.
fn key_record(row: &Row) -> Result<KeyRecord, Error> {
    let get = |e: tokio_postgres::Error| Error::Storage(format!("reading a key row: {e}"));
    let name: String = row.try_get(0).map_err(get)?;
    let owner_uid: i64 = row.try_get(3).map_err(get)?;
    let labels: String = row.try_get(4).map_err(get)?;
    let state: String = row.try_get(5).map_err(get)?;
    let labels: BTreeMap<String, String> =
        serde_json::from_str(&labels).map_err(|e| corrupt(format!("labels of {name:?}: {e}")))?;
    Ok(KeyRecord {
        owner_uid: u32::try_from(owner_uid)
            .map_err(|_| corrupt(format!("owner uid {owner_uid} of {name:?}")))?,
        state: state
            .parse()
            .map_err(|e| corrupt(format!("state of {name:?}: {e}")))?,
        algorithm: row.try_get(1).map_err(get)?,
        backend: row.try_get(2).map_err(get)?,
        labels,
        created_at: row.try_get(6).map_err(get)?,
        expires_at: row.try_get(7).map_err(get)?,
        versions: Vec::new(),
        name,
    })
}

/// A version row (selected as in [`VERSIONS_OF`]) and the name of its key.
fn version_record(row: &Row) -> Result<(String, VersionRecord), Error> {
    version_record_at(row, 0)
}

/// The version columns of `row` from column `at` on, in [`VERSIONS_OF`]'s order.
fn version_record_at(row: &Row, at: usize) -> Result<(String, VersionRecord), Error> {
    let get = |e: tokio_postgres::Error| Error::Storage(format!("reading a version row: {e}"));
    let name: String = row.try_get(at).map_err(get)?;
    let version: i64 = row.try_get(at + 1).map_err(get)?;
    let state: String = row.try_get(at + 2).map_err(get)?;
    let record = VersionRecord {
        version: u32::try_from(version)
            .map_err(|_| corrupt(format!("version {version} of {name:?}")))?,
        state: state
            .parse()
            .map_err(|e| corrupt(format!("version {version} of {name:?}: {e}")))?,
        hsm_label: row.try_get(at + 3).map_err(get)?,
        key_ref: row.try_get(at + 4).map_err(get)?,
        public_key: row.try_get(at + 5).map_err(get)?,
        created_at: row.try_get(at + 6).map_err(get)?,
    };
    Ok((name, record))
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

/// One registry operation's transaction, with the connection's prepared statements.
struct Tx<'c> {
    tx: Transaction<'c>,
    statements: &'c mut HashMap<String, Statement>,
    pool: &'c Pool,
    what: &'static str,
}

type Params<'p> = [&'p (dyn ToSql + Sync)];

impl Tx<'_> {
    fn err(&self, e: tokio_postgres::Error) -> Error {
        self.pool.error(self.what, &e)
    }

    /// `sql` prepared on this connection, once.
    async fn statement(&mut self, sql: &str) -> Result<Statement, Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.tx.prepare(sql).await.map_err(|e| self.err(e))?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    async fn query(&mut self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>, Error> {
        let statement = self.statement(sql).await?;
        self.tx
            .query(&statement, params)
            .await
            .map_err(|e| self.err(e))
    }

    async fn query_opt(&mut self, sql: &str, params: &Params<'_>) -> Result<Option<Row>, Error> {
        let statement = self.statement(sql).await?;
        self.tx
            .query_opt(&statement, params)
            .await
            .map_err(|e| self.err(e))
    }

    async fn query_one(&mut self, sql: &str, params: &Params<'_>) -> Result<Row, Error> {
        let statement = self.statement(sql).await?;
        self.tx
            .query_one(&statement, params)
            .await
            .map_err(|e| self.err(e))
    }

    async fn execute(&mut self, sql: &str, params: &Params<'_>) -> Result<u64, Error> {
        let statement = self.statement(sql).await?;
        self.tx
            .execute(&statement, params)
            .await
            .map_err(|e| self.err(e))
    }

    async fn commit(self) -> Result<(), Error> {
        let (pool, what) = (self.pool, self.what);
        self.tx.commit().await.map_err(|e| pool.error(what, &e))
    }

    /// The key row, locked against every other writer of this key until the transaction
    /// ends (`lock`), or as the snapshot sees it.
    async fn key_row(&mut self, name: &str, lock: bool) -> Result<Option<KeyRecord>, Error> {
        let sql = if lock { KEY_ROW_FOR_UPDATE } else { KEY_ROW };
        let row = self.query_opt(sql, &[&name]).await?;
        row.as_ref().map(key_record).transpose()
    }

    async fn versions_of(&mut self, name: &str) -> Result<Vec<VersionRecord>, Error> {
        let rows = self.query(VERSIONS_OF, &[&name]).await?;
        rows.iter()
            .map(|r| version_record(r).map(|(_, v)| v))
            .collect()
    }

    /// The whole record ([`Error::NotFound`] if absent), its key row locked if `lock`.
    async fn load(&mut self, name: &str, lock: bool) -> Result<KeyRecord, Error> {
        let mut record = self
            .key_row(name, lock)
            .await?
            .ok_or_else(|| Error::NotFound(name.to_owned()))?;
        record.versions = self.versions_of(name).await?;
        Ok(record)
    }
}

#[async_trait::async_trait]
impl Registry for PostgresRegistry {
    async fn begin_create(&self, new: NewKey) -> Result<Pending, Error> {
        validate_name(&new.name)?;
        let labels = serde_json::to_string(&new.labels)
            .map_err(|e| Error::Storage(format!("labels: {e}")))?;
        let mut conn = self.pool.get().await?;
        let mut tx = conn.begin("begin_create", false).await?;
        // Waits for a concurrent insert of the same name to commit (then conflicts) or roll
        // back (then inserts).
        let inserted = tx
            .execute(
                "INSERT INTO keys
                   (name, algorithm, backend, owner_uid, labels, state, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (name) DO NOTHING",
                &[
                    &new.name,
                    &new.algorithm,
                    &new.backend,
                    &i64::from(new.owner_uid),
                    &labels,
                    &KeyState::Enabled.as_str(),
                    &new.now,
                    &new.expires_at,
                ],
            )
            .await?;
        if inserted == 0 {
            return Err(Error::AlreadyExists(new.name));
        }
        tx.execute(
            "INSERT INTO key_versions (key_name, version, state, hsm_label, created_at)
             VALUES ($1, 1, $2, $3, $4)",
            &[
                &new.name,
                &VersionState::Pending.as_str(),
                &new.hsm_label,
                &new.now,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(Pending {
            name: new.name,
            version: 1,
            hsm_label: new.hsm_label,
            backend: new.backend,
            algorithm: new.algorithm,
            created_at: new.now,
        })
    }

    async fn begin_rotate(
        &self,
        name: &str,
        hsm_label: String,
        now: Timestamp,
    ) -> Result<Pending, Error> {
        validate_name(name)?;
        let mut conn = self.pool.get().await?;
        let mut tx = conn.begin("begin_rotate", false).await?;
        // The row lock makes concurrent rotations of this key, from any node, take turns:
        // each reads the MAX that the one before committed.
        let key = tx
            .key_row(name, true)
            .await?
            .ok_or_else(|| Error::NotFound(name.to_owned()))?;
        if key.state != KeyState::Enabled {
            return Err(Error::WrongState {
                name: name.to_owned(),
                state: key.state,
                action: "rotate",
                needs: "enabled",
            });
        }
        let max: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM key_versions WHERE key_name = $1",
                &[&name],
            )
            .await?
            .get(0);
        let next = u32::try_from(max + 1)
            .map_err(|_| Error::Storage(format!("key {name:?} has run out of versions")))?;
        tx.execute(
            "INSERT INTO key_versions (key_name, version, state, hsm_label, created_at)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &name,
                &i64::from(next),
                &VersionState::Pending.as_str(),
                &hsm_label,
                &now,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(pending_of(&key, next, hsm_label, now))
    }

    async fn complete(
        &self,
        name: &str,
        version: u32,
        key_ref: &[u8],
        public_key: &[u8],
    ) -> Result<KeyRecord, Error> {
        validate_name(name)?;
        let mut conn = self.pool.get().await?;
        let mut tx = conn.begin("complete", false).await?;
        let before = tx.load(name, true).await?;
        let Some(v) = before.version(version) else {
            return Err(Error::NoSuchVersion {
                name: name.to_owned(),
                version,
            });
        };
        match v.state {
            VersionState::Pending => {
                tx.execute(
                    "UPDATE key_versions SET state = $1, key_ref = $2, public_key = $3
                     WHERE key_name = $4 AND version = $5",
                    &[
                        &VersionState::Ready.as_str(),
                        &key_ref,
                        &public_key,
                        &name,
                        &i64::from(version),
                    ],
                )
                .await?;
            }
            // A retry of a completion whose answer was lost.
            VersionState::Ready
                if v.key_ref.as_deref() == Some(key_ref)
                    && v.public_key.as_deref() == Some(public_key) =>
            {
                return Ok(before);
            }
            state => {
                return Err(Error::VersionWrongState {
                    name: name.to_owned(),
                    version,
                    state,
                    action: "complete",
                    needs: "pending",
                });
            }
        }
        let after = tx.load(name, false).await?;
        tx.commit().await?;
        Ok(after)
    }

    async fn abort(&self, name: &str, version: u32) -> Result<(), Error> {
        validate_name(name)?;
        let mut conn = self.pool.get().await?;
        let mut tx = conn.begin("abort", false).await?;
        let record = tx.load(name, true).await?;
        let Some(v) = record.version(version) else {
            return Err(Error::NoSuchVersion {
                name: name.to_owned(),
                version,
            });
        };
        if v.state != VersionState::Pending {
            return Err(Error::VersionWrongState {
                name: name.to_owned(),
                version,
                state: v.state,
                action: "abort",
                needs: "pending",
            });
        }
        let max = record.versions.iter().map(|v| v.version).max();
        let version_param = i64::from(version);
        if record.versions.len() == 1 {
            // Version 1 of a key that never got an HSM key: the key goes too.
            tx.execute("DELETE FROM key_versions WHERE key_name = $1", &[&name])
                .await?;
            tx.execute("DELETE FROM keys WHERE name = $1", &[&name])
                .await?;
        } else if max == Some(version) {
            tx.execute(
                "DELETE FROM key_versions WHERE key_name = $1 AND version = $2",
                &[&name, &version_param],
            )
            .await?;
        } else {
            // Newer versions exist: keep the number, so the sequence stays gap-free.
            tx.execute(
                "UPDATE key_versions SET state = $1 WHERE key_name = $2 AND version = $3",
                &[&VersionState::Destroyed.as_str(), &name, &version_param],
            )
            .await?;
        }
        tx.commit().await
    }

    async fn pending(&self) -> Result<Vec<Pending>, Error> {
        let mut conn = self.pool.get().await?;
        let rows = conn.query("pending", PENDING, &[]).await?;
        let get = |e: tokio_postgres::Error| Error::Storage(format!("reading a pending row: {e}"));
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let name: String = row.try_get(0).map_err(get)?;
            let version: i64 = row.try_get(1).map_err(get)?;
            out.push(Pending {
                version: u32::try_from(version)
                    .map_err(|_| corrupt(format!("version {version} of {name:?}")))?,
                name,
                hsm_label: row.try_get(2).map_err(get)?,
                backend: row.try_get(3).map_err(get)?,
                algorithm: row.try_get(4).map_err(get)?,
                created_at: row.try_get(5).map_err(get)?,
            });
        }
        Ok(out)
    }

    async fn get(&self, name: &str) -> Result<KeyRecord, Error> {
        validate_name(name)?;
        let mut conn = self.pool.get().await?;
        let rows = conn.query("get", RECORD, &[&name]).await?;
        let Some(first) = rows.first() else {
            return Err(Error::NotFound(name.to_owned()));
        };
        let mut record = key_record(first)?;
        for row in &rows {
            let has_version = row
                .try_get::<_, Option<i64>>(9)
                .map_err(|e| Error::Storage(format!("reading a version row: {e}")))?
                .is_some();
            if has_version {
                record.versions.push(version_record_at(row, 8)?.1);
            }
        }
        Ok(record)
    }

    async fn list(&self) -> Result<Vec<KeyRecord>, Error> {
        let mut conn = self.pool.get().await?;
        let mut tx = conn.begin("list", true).await?;
        let key_rows = tx.query(ALL_KEYS, &[]).await?;
        let version_rows = tx.query(ALL_VERSIONS, &[]).await?;
        tx.commit().await?;
        let mut by_name: BTreeMap<String, Vec<VersionRecord>> = BTreeMap::new();
        for row in &version_rows {
            let (name, v) = version_record(row)?;
            by_name.entry(name).or_default().push(v);
        }
        let mut keys = key_rows
            .iter()
            .map(key_record)
            .collect::<Result<Vec<_>, _>>()?;
        for key in &mut keys {
            key.versions = by_name.remove(&key.name).unwrap_or_default();
        }
        // Bytewise, whatever the database's collation.
        keys.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(keys)
    }

    async fn set_state(&self, name: &str, state: KeyState) -> Result<KeyRecord, Error> {
        validate_name(name)?;
        let mut conn = self.pool.get().await?;
        let mut tx = conn.begin("set_state", false).await?;
        let before = tx.load(name, true).await?;
        let (action, needs) = match state {
            KeyState::Enabled => ("enable", "disabled"),
            KeyState::Disabled => ("disable", "enabled"),
            KeyState::Destroyed => {
                return Err(Error::WrongState {
                    name: name.to_owned(),
                    state: before.state,
                    action: "set_state(destroyed)",
                    needs: "disabled and then destroy(), not set_state",
                });
            }
        };
        if before.state == KeyState::Destroyed {
            return Err(Error::WrongState {
                name: name.to_owned(),
                state: before.state,
                action,
                needs,
            });
        }
        if before.state == state {
            return Ok(before);
        }
        tx.execute(
            "UPDATE keys SET state = $1 WHERE name = $2",
            &[&state.as_str(), &name],
        )
        .await?;
        tx.commit().await?;
        Ok(KeyRecord { state, ..before })
    }

    async fn destroy(&self, name: &str) -> Result<KeyRecord, Error> {
        validate_name(name)?;
        let mut conn = self.pool.get().await?;
        let mut tx = conn.begin("destroy", false).await?;
        let before = tx.load(name, true).await?;
        if before.state != KeyState::Disabled {
            return Err(Error::WrongState {
                name: name.to_owned(),
                state: before.state,
                action: "destroy",
                needs: "disabled",
            });
        }
        tx.execute(
            "UPDATE keys SET state = $1 WHERE name = $2",
            &[&KeyState::Destroyed.as_str(), &name],
        )
        .await?;
        tx.execute(
            "UPDATE key_versions SET state = $1 WHERE key_name = $2",
            &[&VersionState::Destroyed.as_str(), &name],
        )
        .await?;
        tx.commit().await?;
        Ok(before)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_failed_connect_never_shows_the_password() {
        for url in [
            "postgres://u:SECRETPW@127.0.0.1:1/db",
            "host=127.0.0.1 port=1 user=u password=SECRETPW dbname=db",
            // Malformed: the parser must not echo it either.
            "postgres://u:SECRETPW@127.0.0.1:notaport/db",
            "postgres://u:SECRETPW@127.0.0.1:1/db?bogus_option=SECRETPW",
        ] {
            let err = PostgresRegistry::connect(url).await.unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(matches!(err, Error::Storage(_)), "{shown}");
            assert!(!shown.contains("SECRETPW"), "{url}: {shown}");
        }
        let err = PostgresRegistry::connect("postgres://u:SECRETPW@127.0.0.1:1/db")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("u@127.0.0.1:1/db"), "{err}");
        let err = PostgresRegistry::connect("postgres://u:SECRETPW@h:notaport/db")
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "registry storage: invalid PostgreSQL connection URL: invalid value for option `port`"
        );
    }

    #[tokio::test]
    async fn tls_and_password_options_are_checked_before_connecting() {
        let err = |url: &str, options: PostgresOptions| {
            let url = url.to_owned();
            async move {
                PostgresRegistry::connect_with_options(&url, options)
                    .await
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default()
            }
        };
        let url = "postgres://kw@127.0.0.1:1/db";
        let password = || Some(Zeroizing::new("s3cret-pw".to_owned()));
        let e = err(
            "postgres://kw:other@127.0.0.1:1/db",
            PostgresOptions {
                password: password(),
                ..Default::default()
            },
        )
        .await;
        assert!(e.contains("given twice"), "{e}");
        let e = err(
            "postgres://kw@db.example.org/db",
            PostgresOptions {
                password: password(),
                ..Default::default()
            },
        )
        .await;
        assert!(e.contains("without TLS"), "{e}");
        assert!(!e.contains("s3cret-pw"), "{e}");
        let e = err(
            &format!("{url}?sslmode=require"),
            PostgresOptions::default(),
        )
        .await;
        assert!(e.contains("needs a CA"), "{e}");
        let e = err(
            &format!("{url}?sslmode=disable"),
            PostgresOptions {
                tls_ca: Some("/nonexistent/ca.pem".into()),
                ..Default::default()
            },
        )
        .await;
        assert!(e.contains("contradicts"), "{e}");
        let e = err(
            url,
            PostgresOptions {
                tls_ca: Some("/nonexistent/ca.pem".into()),
                password: password(),
                ..Default::default()
            },
        )
        .await;
        assert!(e.contains("registry TLS CA /nonexistent/ca.pem"), "{e}");
        let options = PostgresOptions {
            password: password(),
            ..Default::default()
        };
        assert!(!format!("{options:?}").contains("s3cret-pw"));
        // Nothing listens on port 1: the connection error must not carry the password.
        let e = err(url, options).await;
        assert!(e.contains("connecting to kw@127.0.0.1:1/db"), "{e}");
        assert!(!e.contains("s3cret-pw"), "{e}");
    }

    #[test]
    fn scrub_removes_the_password_anywhere() {
        let pool = Pool {
            config: Config::new(),
            tls: None,
            secret: Some(Zeroizing::new(b"hunter2".to_vec())),
            target: String::new(),
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(1),
            max: 1,
        };
        assert_eq!(
            pool.scrub("bad hunter2 and hunter2".to_owned()),
            "bad <password> and <password>"
        );
    }
}
