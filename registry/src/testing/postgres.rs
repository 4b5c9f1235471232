//! A private PostgreSQL cluster for tests, and a [`Harness`] on it.
//!
//! [`Cluster::shared`] starts one cluster per test process (nextest runs each test in its
//! own process, so each test gets its own): `initdb` into a temporary directory, `postgres`
//! on a free loopback port with its socket in that directory, password authentication
//! (SCRAM) for a superuser `keywarden`. Each [`Cluster::create_database`] is a fresh
//! database. The cluster stops (`pg_ctl stop -m fast`) and its directory goes when the last
//! handle is dropped; should the test process die without dropping it (a SIGKILL, a hung test
//! killed by the runner), a watchdog shell stops the cluster and removes its directory within
//! a second or two.
//!
//! The collation of the databases is ICU's `en` (not bytewise), so code that relies on the
//! database's sort order shows up.
//!
//! Needs Debian's `postgresql` package (binaries under `/usr/lib/postgresql/<version>/bin`,
//! or set `KEYWARDEN_PG_BIN`). PostgreSQL refuses to run as root: when the tests run as root,
//! the cluster runs as the `postgres` system user (through `setpriv`).

use std::fs::File;
use std::hash::{BuildHasher, RandomState};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use super::Harness;
use crate::{PostgresRegistry, Registry};

/// The cluster's superuser.
pub const SUPERUSER: &str = "keywarden";

/// How long the server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running private PostgreSQL cluster; stopped when dropped.
pub struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    password: String,
    tls: bool,
    run_as_postgres: bool,
    server: Mutex<Option<Child>>,
    watchdog: Mutex<Option<Child>>,
    next_db: AtomicU32,
}

/// Waits for the test process (`$1`) to end, then stops the cluster (data directory `$2`,
/// with the `pg_ctl` command line after `$3`) and removes its directory (`$3`).
const WATCHDOG: &str = r#"pid=$1 data=$2 dir=$3
shift 3
while kill -0 "$pid" 2>/dev/null; do sleep 1; done
"$@" stop -D "$data" -m immediate -w >/dev/null 2>&1
rm -rf "$dir"
"#;

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("dir", &self.dir.path())
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

static SHARED: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());

impl Cluster {
    /// The process's cluster, started if no handle to it is alive. Blocks (run it with
    /// `spawn_blocking` from async code); panics with the server's log if it cannot start.
    pub fn shared() -> Arc<Self> {
        let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cluster) = shared.upgrade() {
            return cluster;
        }
        let cluster = Arc::new(Self::start());
        *shared = Arc::downgrade(&cluster);
        cluster
    }

    /// A new cluster of its own (most tests want [`Cluster::shared`]).
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// A new cluster of its own that accepts TCP connections only over TLS, with this
    /// certificate chain and key (PEM). Unix-socket connections stay plain.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Self {
        Self::start_with(Some((cert_pem, key_pem)))
    }

    fn start_with(tls: Option<(&str, &str)>) -> Self {
        let bin = find_bin();
        let run_as_postgres = std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        let dir = tempfile::Builder::new()
            .prefix("kw-pg-")
            .tempdir()
            .expect("temporary directory for the cluster");
        let password = random_hex();
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, format!("{password}\n")).expect("password file");
        if let Some((cert, key)) = tls {
            use std::os::unix::fs::PermissionsExt as _;
            // PostgreSQL refuses a key file that group or others can read.
            for (name, text, mode) in [("server.crt", cert, 0o644), ("server.key", key, 0o600)] {
                let path = dir.path().join(name);
                std::fs::write(&path, text).expect("TLS file");
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                    .expect("TLS file mode");
            }
        }
        if run_as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown of {} failed", dir.path().display());
        }
        let data = dir.path().join("data");
        let mut cluster = Self {
            bin,
            dir,
            port: 0,
            password,
            tls: tls.is_some(),
            run_as_postgres,
            server: Mutex::new(None),
            watchdog: Mutex::new(None),
            next_db: AtomicU32::new(0),
        };
        let out = cluster
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                SUPERUSER,
                "--auth=scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--locale-provider=icu",
                "--icu-locale=en",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_file(&pwfile);
        if cluster.tls {
            // TCP only with TLS; the Unix socket (used to create databases) stays plain.
            cluster.write_as_owner(
                &data.join("pg_hba.conf"),
                "local all all scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
            );
        }
        // A port free a moment ago may be taken by the time the server binds it: retry.
        for attempt in 1..=5 {
            let port = free_port();
            cluster.port = port;
            match cluster.launch() {
                Ok(child) => {
                    *cluster
                        .server
                        .get_mut()
                        .unwrap_or_else(PoisonError::into_inner) = Some(child);
                    let watchdog = cluster.watchdog();
                    *cluster
                        .watchdog
                        .get_mut()
                        .unwrap_or_else(PoisonError::into_inner) = Some(watchdog);
                    return cluster;
                }
                Err(log) if attempt < 5 && log.contains("could not") => continue,
                Err(log) => panic!("PostgreSQL did not start on port {port}:\n{log}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Starts the server and waits until it accepts connections; the log if it does not.
    fn launch(&self) -> Result<Child, String> {
        let log_path = self.dir.path().join(format!("postgres-{}.log", self.port));
        let log = File::create(&log_path).expect("server log");
        let mut tls_args = Vec::new();
        if self.tls {
            for setting in [
                "ssl=on".to_owned(),
                format!(
                    "ssl_cert_file={}",
                    self.dir.path().join("server.crt").display()
                ),
                format!(
                    "ssl_key_file={}",
                    self.dir.path().join("server.key").display()
                ),
            ] {
                tls_args.push("-c".to_owned());
                tls_args.push(setting);
            }
        }
        let mut child = self
            .command("postgres")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-k")
            .arg(self.dir.path())
            .arg("-p")
            .arg(self.port.to_string())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=300",
                // Many clusters run at once under nextest; each needs little memory.
                "-c",
                "shared_buffers=16MB",
                // Durability is the server's business, not what these tests check.
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
            ])
            .args(&tls_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("server log"))
            .stderr(log)
            .spawn()
            .expect("run postgres");
        let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("postgres exited ({status}):\n{}", read_log()));
            }
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(child);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "not ready after {START_TIMEOUT:?}:\n{}",
                    read_log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A shell that stops the cluster once this process is gone, however it went.
    fn watchdog(&self) -> Child {
        let pg_ctl = self.command("pg_ctl");
        Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("kw-pg-watchdog")
            .arg(std::process::id().to_string())
            .arg(self.dir.path().join("data"))
            .arg(self.dir.path())
            .arg(pg_ctl.get_program())
            .args(pg_ctl.get_args())
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run the cluster's watchdog")
    }

    /// A PostgreSQL binary, run as `postgres` if we are root.
    fn command(&self, program: &str) -> Command {
        self.command_path(self.bin.join(program))
    }

    /// Any program, run as `postgres` if we are root.
    fn command_path(&self, program: PathBuf) -> Command {
        let mut cmd = if self.run_as_postgres {
            let mut cmd = Command::new("setpriv");
            cmd.args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ]);
            cmd.arg(program);
            cmd
        } else {
            Command::new(program)
        };
        // The caller's directory may be closed to the `postgres` user.
        cmd.current_dir(self.dir.path());
        cmd
    }

    /// Replaces a file in the data directory, as the user the server runs as.
    fn write_as_owner(&self, path: &Path, text: &str) {
        let mut child = self
            .command_path(PathBuf::from("/bin/sh"))
            .arg("-c")
            .arg("cat > \"$0\"")
            .arg(path)
            .stdin(Stdio::piped())
            .spawn()
            .expect("run sh");
        {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().expect("piped stdin");
            stdin.write_all(text.as_bytes()).expect("write the file");
        }
        assert!(
            child.wait().is_ok_and(|s| s.success()),
            "cannot write {}",
            path.display()
        );
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the server's Unix socket (`host=` in a libpq-style URL).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The superuser's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The URL of database `dbname` as the superuser.
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}/{dbname}",
            self.password, self.port
        )
    }

    /// Creates a fresh, empty database and returns its URL.
    pub async fn create_database(&self) -> String {
        let n = self.next_db.fetch_add(1, Ordering::Relaxed);
        let name = format!("kw_test_{n}");
        // Through the Unix socket, which is plain even when TCP requires TLS.
        let (client, connection) = tokio_postgres::Config::new()
            .host_path(self.dir.path())
            .port(self.port)
            .user(SUPERUSER)
            .password(self.password.as_bytes())
            .dbname("postgres")
            .connect(tokio_postgres::NoTls)
            .await
            .expect("connect to the test cluster");
        let task = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create a test database");
        drop(client);
        let _ = task.await;
        self.url(&name)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut watchdog) = self
            .watchdog
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        let mut server = self.server.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(mut child) = server.take() else {
            return;
        };
        let stopped = self
            .command("pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "fast", "-w", "-t", "30"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

/// The directory holding `initdb`, `postgres`, `pg_ctl` and `pg_isready`.
fn find_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("KEYWARDEN_PG_BIN") {
        return PathBuf::from(dir);
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL server under {}/<version>/bin (install Debian's `postgresql` \
             package: scripts/setup), nor KEYWARDEN_PG_BIN",
            root.display()
        ),
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// 32 hex digits, different on every call (the std hasher's random keys).
fn random_hex() -> String {
    let a = RandomState::new().hash_one(std::process::id());
    let b = RandomState::new().hash_one(Instant::now());
    format!("{a:016x}{b:016x}")
}

/// A fresh database on the process's cluster, with a second handle as a second node would
/// open.
pub async fn harness() -> Harness {
    let cluster = tokio::task::spawn_blocking(Cluster::shared)
        .await
        .expect("start the test cluster");
    let url = cluster.create_database().await;
    let registry: Arc<dyn Registry> = Arc::new(
        PostgresRegistry::connect(&url)
            .await
            .expect("connect to the test database"),
    );
    Harness::new(registry, cluster).with_reopen(move || {
        let url = url.clone();
        async move {
            Arc::new(
                PostgresRegistry::connect(&url)
                    .await
                    .expect("connect a second node"),
            ) as Arc<dyn Registry>
        }
    })
}

/// Runs `sql` (one or more statements) on the database at `url` and returns every row of
/// every result, each column as text (`None` for NULL).
pub async fn sql(url: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    let task = tokio::spawn(connection);
    let messages = client.simple_query(sql).await.expect(sql);
    drop(client);
    let _ = task.await;
    messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_owned))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}
