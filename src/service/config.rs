//! The service configuration: a TOML file (`--config`), or defaults that need nothing.
//!
//! ```toml
//! data_dir = "/var/lib/keywarden"          # default: $KEYWARDEN_HOME or ./.keywarden
//! socket = "/run/keywarden/keywarden.sock" # default: $KEYWARDEN_SOCKET or <data_dir>/keywarden.sock
//! socket_mode = "0660"
//! registry = "sqlite:/var/lib/keywarden/registry.db"
//! audit_log = "/var/log/keywarden/audit.log"
//! audit_fsync = false
//! policy_dir = "/etc/keywarden/policies"
//! default_backend = "hsm"
//! metrics = "127.0.0.1:9464"             # Prometheus endpoint; off unless set (or --metrics)
//!
//! # With registry = "postgres://keywarden@db.example.org/keywarden":
//! # registry_password = { file = "/etc/keywarden/db-password" }   # or { env = "VAR" }
//! # registry_tls_ca = "/etc/keywarden/db-ca.crt"                  # TLS, verify-full
//!
//! [tls]                                    # remote clients with mutual TLS; off unless set
//! listen = "0.0.0.0:7443"
//! cert = "/etc/keywarden/tls/server.crt"
//! key = "/etc/keywarden/tls/server.key"
//! client_ca = "/etc/keywarden/tls/clients.crt"
//!
//! [backends.hsm]
//! kind = "pkcs11"
//! module = "/usr/lib/softhsm/libsofthsm2.so"
//! token = { label = "keywarden" }
//! pin = { file = "/etc/keywarden/pin" }
//!
//! [backends.sim]
//! kind = "sim"            # the embedded hsm-sim token, kept in <data_dir>/hsm-sim
//! ```
//!
//! Unknown fields are errors that name the line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use keywarden_pkcs11::Pkcs11Config;
use serde::Deserialize;

pub use crate::service::tls::TlsConfig;

/// Configuration errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {}: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file does not parse (the message names line and column).
    #[error("config file {}: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with the line.
        reason: String,
    },
    /// A value is inconsistent.
    #[error("config: {0}")]
    Invalid(String),
}

/// One backend.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum BackendConfig {
    /// The embedded hsm-sim token.
    Sim {
        /// Token directory (default `<data_dir>/hsm-sim`).
        #[serde(default)]
        token_dir: Option<PathBuf>,
    },
    /// Any PKCS#11 module.
    Pkcs11(Pkcs11Config),
    /// A TPM 2.0 chip (build with the `tpm2` feature).
    #[cfg(feature = "tpm2")]
    Tpm2(keywarden_tpm2::Config),
    /// A YubiHSM 2 (build with the `yubihsm` feature).
    #[cfg(feature = "yubihsm")]
    Yubihsm(keywarden_yubihsm::Config),
}

impl BackendConfig {
    /// `sim`, `pkcs11`, `tpm2` or `yubihsm`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sim { .. } => "sim",
            Self::Pkcs11(_) => "pkcs11",
            #[cfg(feature = "tpm2")]
            Self::Tpm2(_) => "tpm2",
            #[cfg(feature = "yubihsm")]
            Self::Yubihsm(_) => "yubihsm",
        }
    }
}

/// Where a secret the configuration needs comes from; never the secret itself, so that the
/// configuration file can be readable by more than the service.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SecretSource {
    /// An environment variable.
    Env(String),
    /// A file; its contents without the trailing newline.
    File(PathBuf),
}

impl SecretSource {
    /// Reads the secret. Errors name the source, never the secret.
    pub fn read(&self, what: &str) -> Result<zeroize::Zeroizing<String>, ConfigError> {
        let value = match self {
            Self::Env(name) => zeroize::Zeroizing::new(std::env::var(name).map_err(|e| {
                ConfigError::Invalid(format!("{what}: environment variable {name}: {e}"))
            })?),
            Self::File(path) => {
                warn_if_shared(path, what);
                zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::Invalid(format!("{what}: file {}: {e}", path.display()))
                })?)
            }
        };
        let trimmed = value.trim_end_matches(['\n', '\r']);
        if trimmed.is_empty() {
            return Err(ConfigError::Invalid(format!("{what}: {self:?} is empty")));
        }
        Ok(zeroize::Zeroizing::new(trimmed.to_owned()))
    }
}

/// Logs a warning if the secret file at `path` is readable by group or others.
pub(crate) fn warn_if_shared(path: &Path, what: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    if std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
        tracing::warn!(
            path = %path.display(),
            "{what}: the file is readable by group or others; chmod 600 it"
        );
    }
}

/// The file as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    socket_mode: Option<String>,
    registry: Option<String>,
    audit_log: Option<PathBuf>,
    #[serde(default)]
    audit_fsync: bool,
    policy_dir: Option<PathBuf>,
    default_backend: Option<String>,
    metrics: Option<std::net::SocketAddr>,
    tls: Option<TlsConfig>,
    registry_password: Option<SecretSource>,
    registry_tls_ca: Option<PathBuf>,
    #[serde(default)]
    backends: BTreeMap<String, BackendConfig>,
}

/// The resolved configuration: every path decided. `Debug` hides a registry password.
#[derive(Clone)]
pub struct Config {
    /// Data directory (registry, audit log, policies, the sim token by default).
    pub data_dir: PathBuf,
    /// The Unix socket.
    pub socket: PathBuf,
    /// The socket's permission bits.
    pub socket_mode: u32,
    /// Registry location: `sqlite:<path>` or `postgres://…` (feature `postgres`).
    pub registry: String,
    /// The audit log.
    pub audit_log: PathBuf,
    /// fsync every audit line.
    pub audit_fsync: bool,
    /// The policy directory.
    pub policy_dir: PathBuf,
    /// The backend for keys created without one.
    pub default_backend: String,
    /// Every backend by name.
    pub backends: BTreeMap<String, BackendConfig>,
    /// Where to serve Prometheus metrics (`GET /metrics`); `None`: no endpoint.
    pub metrics: Option<std::net::SocketAddr>,
    /// The mutual-TLS listener; `None`: the Unix socket only.
    pub tls: Option<TlsConfig>,
    /// The PostgreSQL registry's password, kept out of the URL.
    pub registry_password: Option<SecretSource>,
    /// The CA that issued the PostgreSQL server's certificate: with it, the registry is
    /// reached over TLS only (verify-full).
    pub registry_tls_ca: Option<PathBuf>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field("socket", &self.socket)
            .field("socket_mode", &format_args!("{:o}", self.socket_mode))
            .field("registry", &redact_registry(&self.registry))
            .field("audit_log", &self.audit_log)
            .field("audit_fsync", &self.audit_fsync)
            .field("policy_dir", &self.policy_dir)
            .field("default_backend", &self.default_backend)
            .field("backends", &self.backends)
            .field("metrics", &self.metrics)
            .field("tls", &self.tls)
            .field("registry_password", &self.registry_password)
            .field("registry_tls_ca", &self.registry_tls_ca)
            .finish()
    }
}

/// A registry location fit for logs: the password of a `postgres://user:password@…` URL or of
/// a libpq `password=…` setting is replaced by `***`.
pub fn redact_registry(registry: &str) -> String {
    if let Some((scheme, rest)) = registry.split_once("://") {
        let (location, query) = match rest.split_once('?') {
            Some((l, q)) => (l, Some(q)),
            None => (rest, None),
        };
        // The last '@' ends the user info (a password may itself hold an '@').
        let location = match location.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _password)) => format!("{user}:***@{host}"),
                None => format!("{userinfo}@{host}"),
            },
            None => location.to_owned(),
        };
        let query = query.map(|q| {
            q.split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_owned(),
                })
                .collect::<Vec<_>>()
                .join("&")
        });
        return match query {
            Some(q) => format!("{scheme}://{location}?{q}"),
            None => format!("{scheme}://{location}"),
        };
    }
    registry
        .split_whitespace()
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => kv.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The data directory from `$KEYWARDEN_HOME`, else `./.keywarden`.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("KEYWARDEN_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".keywarden"))
}

/// The socket from `$KEYWARDEN_SOCKET`, else `<data_dir>/keywarden.sock`.
pub fn default_socket(data_dir: &Path) -> PathBuf {
    std::env::var_os("KEYWARDEN_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| data_dir.join("keywarden.sock"))
}

impl Config {
    /// Reads `path`, or uses the defaults when `None`.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let file = match path {
            None => FileConfig::default(),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Read {
                    path: p.to_path_buf(),
                    reason: e.to_string(),
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: p.to_path_buf(),
                    reason: e.to_string().trim().replace('\n', " "),
                })?
            }
        };
        Self::resolve(file)
    }

    /// Parses TOML text (for tests).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<inline>"),
            reason: e.to_string().trim().replace('\n', " "),
        })?;
        Self::resolve(file)
    }

    fn resolve(file: FileConfig) -> Result<Self, ConfigError> {
        let data_dir = file.data_dir.unwrap_or_else(default_data_dir);
        let socket = file.socket.unwrap_or_else(|| default_socket(&data_dir));
        let socket_mode = match file.socket_mode {
            None => 0o660,
            Some(m) => u32::from_str_radix(m.trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "socket_mode {m:?} is not an octal mode like \"0660\""
                    ))
                })?,
        };
        let registry = file
            .registry
            .unwrap_or_else(|| format!("sqlite:{}", data_dir.join("registry.db").display()));
        let postgres = registry.starts_with("postgres://") || registry.starts_with("postgresql://");
        if postgres && !cfg!(feature = "postgres") {
            return Err(ConfigError::Invalid(
                "registry: this build has no PostgreSQL support (build with --features postgres)"
                    .into(),
            ));
        }
        if !registry.starts_with("sqlite:") && !postgres {
            return Err(ConfigError::Invalid(
                "registry: expected sqlite:<path> or postgres://user@host/db".into(),
            ));
        }
        if let Some(t) = &file.tls {
            let check = |name: &str, v: u64, range: std::ops::RangeInclusive<u64>| {
                if range.contains(&v) {
                    Ok(())
                } else {
                    Err(ConfigError::Invalid(format!(
                        "tls.{name} = {v}: expected {} to {}",
                        range.start(),
                        range.end()
                    )))
                }
            };
            check("handshake_timeout_secs", t.handshake_timeout_secs, 1..=300)?;
            check(
                "max_connection_age_secs",
                t.max_connection_age_secs,
                1..=7 * 86_400,
            )?;
            check("max_connections", t.max_connections as u64, 1..=1_000_000)?;
            check("close_grace_secs", t.close_grace_secs, 1..=3_600)?;
        }
        if !postgres && (file.registry_password.is_some() || file.registry_tls_ca.is_some()) {
            return Err(ConfigError::Invalid(
                "registry_password and registry_tls_ca apply to a postgres:// registry only".into(),
            ));
        }
        let mut backends = file.backends;
        if backends.is_empty() {
            backends.insert("sim".into(), BackendConfig::Sim { token_dir: None });
        }
        let default_backend = match file.default_backend {
            Some(b) => b,
            None if backends.len() == 1 => backends.keys().next().cloned().unwrap_or_default(),
            None if backends.contains_key("sim") => "sim".into(),
            None => {
                return Err(ConfigError::Invalid(
                    "several backends are configured: name one as default_backend".into(),
                ));
            }
        };
        if !backends.contains_key(&default_backend) {
            return Err(ConfigError::Invalid(format!(
                "default_backend {default_backend:?} is not among the backends ({})",
                backends.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        if backends
            .values()
            .filter(|b| matches!(b, BackendConfig::Sim { .. }))
            .count()
            > 1
        {
            return Err(ConfigError::Invalid(
                "at most one sim backend per service".into(),
            ));
        }
        Ok(Self {
            audit_log: file.audit_log.unwrap_or_else(|| data_dir.join("audit.log")),
            policy_dir: file.policy_dir.unwrap_or_else(|| data_dir.join("policies")),
            audit_fsync: file.audit_fsync,
            data_dir,
            socket,
            socket_mode,
            registry,
            default_backend,
            backends,
            metrics: file.metrics,
            tls: file.tls,
            registry_password: file.registry_password,
            registry_tls_ca: file.registry_tls_ca,
        })
    }

    /// True when the registry may be shared with other service nodes.
    pub fn shared_registry(&self) -> bool {
        !self.registry.starts_with("sqlite:")
    }

    /// The SQLite path of the registry.
    pub fn registry_path(&self) -> PathBuf {
        PathBuf::from(self.registry.trim_start_matches("sqlite:"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_values_out_of_range_are_refused_by_name() {
        let tls =
            "[tls]\nlisten = \"127.0.0.1:7443\"\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"ca\"\n";
        assert!(Config::from_toml(tls).unwrap().tls.is_some());
        for (setting, name) in [
            (
                "handshake_timeout_secs = 0",
                "tls.handshake_timeout_secs = 0",
            ),
            (
                "max_connection_age_secs = 0",
                "tls.max_connection_age_secs = 0",
            ),
            ("max_connections = 0", "tls.max_connections = 0"),
            ("close_grace_secs = 0", "tls.close_grace_secs = 0"),
            (
                "handshake_timeout_secs = 100000",
                "tls.handshake_timeout_secs = 100000",
            ),
        ] {
            let e = Config::from_toml(&format!("{tls}{setting}\n"))
                .err()
                .unwrap_or_else(|| panic!("{setting} accepted"))
                .to_string();
            assert!(e.contains(name), "{setting}: {e}");
        }
        let e = Config::from_toml(&format!("{tls}ciphers = \"all\"\n"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("ciphers"), "{e}");
    }

    #[test]
    fn a_registry_password_source_says_what_is_wrong_and_never_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let e = SecretSource::File(empty)
            .read("registry_password")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("registry_password") && e.contains("is empty"),
            "{e}"
        );
        let missing = dir.path().join("missing");
        let e = SecretSource::File(missing)
            .read("registry_password")
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");
        let good = dir.path().join("good");
        std::fs::write(&good, "s3cret-pw\r\n").unwrap();
        let source = SecretSource::File(good);
        assert_eq!(
            source.read("registry_password").unwrap().as_str(),
            "s3cret-pw"
        );
        assert!(!format!("{source:?}").contains("s3cret"));
    }

    #[test]
    fn registry_passwords_never_show() {
        assert_eq!(
            redact_registry("postgres://kw:s3cret@db.example:5432/keys"),
            "postgres://kw:***@db.example:5432/keys"
        );
        assert_eq!(
            redact_registry("host=/run/postgresql user=kw password=s3cret dbname=keys"),
            "host=/run/postgresql user=kw password=*** dbname=keys"
        );
        assert_eq!(
            redact_registry("postgres://kw:p@ss@db:5432/keys?sslmode=disable&Password=x@y"),
            "postgres://kw:***@db:5432/keys?sslmode=disable&Password=***"
        );
        assert_eq!(
            redact_registry("postgres://kw@db/keys?password=s3cret"),
            "postgres://kw@db/keys?password=***"
        );
        assert_eq!(
            redact_registry("sqlite:/var/lib/kw/registry.db"),
            "sqlite:/var/lib/kw/registry.db"
        );
        let mut c = Config::from_toml("data_dir = \"/tmp/kw\"").unwrap();
        c.registry = "postgres://kw:s3cret@db/keys".into();
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn defaults_need_nothing() {
        let c = Config::from_toml("data_dir = \"/tmp/kw\"").unwrap();
        assert_eq!(c.socket, PathBuf::from("/tmp/kw/keywarden.sock"));
        assert_eq!(c.socket_mode, 0o660);
        assert_eq!(c.default_backend, "sim");
        assert_eq!(c.registry_path(), PathBuf::from("/tmp/kw/registry.db"));
        assert_eq!(c.metrics, None, "the metrics endpoint is off by default");
    }

    #[test]
    fn metrics_address_parses_and_a_bad_one_is_refused() {
        let c = Config::from_toml("metrics = \"127.0.0.1:9464\"").unwrap();
        assert_eq!(c.metrics, Some("127.0.0.1:9464".parse().unwrap()));
        let e = Config::from_toml("metrics = \"localhost\"").unwrap_err();
        assert!(e.to_string().contains("metrics"), "{e}");
    }

    #[test]
    fn unknown_field_names_the_line() {
        let e = Config::from_toml("data_dir = \"/tmp/kw\"\nsokcet = \"/x\"\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("line 2"), "{msg}");
        assert!(msg.contains("sokcet"), "{msg}");
    }

    #[test]
    fn pkcs11_backend_parses_and_unknown_backend_fields_are_refused() {
        let c = Config::from_toml(
            r#"
default_backend = "hsm"
[backends.hsm]
kind = "pkcs11"
module = "/usr/lib/softhsm/libsofthsm2.so"
token = { label = "kw" }
pin = { env = "KW_PIN" }
"#,
        )
        .unwrap();
        assert_eq!(c.backends["hsm"].kind(), "pkcs11");
        let e = Config::from_toml("[backends.x]\nkind = \"sim\"\ncolour = 1\n").unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        let e = Config::from_toml("[backends.x]\nkind = \"quantum\"\n").unwrap_err();
        assert!(e.to_string().contains("quantum"), "{e}");
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        let e = Config::from_toml("socket_mode = \"rw\"").unwrap_err();
        assert!(e.to_string().contains("not an octal mode"), "{e}");
        let e = Config::from_toml("default_backend = \"nope\"").unwrap_err();
        assert!(
            e.to_string().contains("not among the backends (sim)"),
            "{e}"
        );
        let e = Config::from_toml("registry = \"mysql://x\"").unwrap_err();
        assert!(
            e.to_string()
                .contains("expected sqlite:<path> or postgres://"),
            "{e}"
        );
    }
}
