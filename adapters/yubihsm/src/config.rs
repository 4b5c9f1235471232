//! Configuration: which YubiHSM 2, which credentials, what new keys get.
//!
//! ```json
//! {
//!   "connector": { "type": "http", "url": "http://127.0.0.1:12345" },
//!   "auth_key_id": 1,
//!   "password": "…",
//!   "domains": [1],
//!   "key_capabilities": []
//! }
//! ```
//!
//! The password is held as a [`SecretString`]: it is wiped on drop and never printed by
//! `Debug` (a test checks it).

use std::fmt;

use secrecy::SecretString;
use serde::Deserialize;
use yubihsm::{Capability, Domain};

use crate::error::ConfigError;

/// The default authentication key id of a YubiHSM 2 fresh from the factory (and of MockHsm).
pub const DEFAULT_AUTH_KEY_ID: u16 = 1;

/// The default `yubihsm-connector` port.
pub const DEFAULT_CONNECTOR_PORT: u16 = 12345;

/// How long the HTTP connector waits for yubihsm-connector, by default.
pub const DEFAULT_HTTP_TIMEOUT_MS: u64 = 5_000;

/// Everything the adapter needs to open a YubiHSM 2.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How to reach the device.
    pub connector: ConnectorConfig,
    /// The authentication key the sessions are opened with.
    #[serde(default = "default_auth_key_id")]
    pub auth_key_id: u16,
    /// The password of that authentication key (the YubiHSM derives the key from it with
    /// PBKDF2). Never printed.
    pub password: SecretString,
    /// The domains (1 to 16) new keys are put in; keys outside them are not this vault's.
    #[serde(default = "default_domains")]
    pub domains: Vec<u8>,
    /// Extra capabilities given to every new key, by their YubiHSM names (for example
    /// `sign-attestation-certificate`). The capability a key's use needs (`sign-ecdsa`,
    /// `sign-eddsa` or `derive-ecdh`) is added per key, and only that one; operation and
    /// export capabilities are therefore refused here (`exportable-under-wrap` is asked for per
    /// key, in the key spec: see the crate documentation).
    #[serde(default)]
    pub key_capabilities: Vec<String>,
}

fn default_auth_key_id() -> u16 {
    DEFAULT_AUTH_KEY_ID
}

fn default_domains() -> Vec<u8> {
    vec![1]
}

/// How the adapter reaches the YubiHSM 2.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ConnectorConfig {
    /// Through `yubihsm-connector` over HTTP (`http://host:port`; HTTPS is not supported by
    /// the yubihsm crate, keep the connector on loopback).
    Http {
        /// The connector's URL, e.g. `http://127.0.0.1:12345`.
        url: String,
        /// Request timeout in milliseconds. Passed to the yubihsm crate, whose 0.42 HTTP client
        /// does not use it yet (it has a fixed 20-second timeout).
        #[serde(default = "default_http_timeout")]
        timeout_ms: u64,
    },
    /// Directly over USB (needs this crate's `usb` feature).
    Usb {
        /// The serial number of the device to open; the first YubiHSM 2 found when absent.
        #[serde(default)]
        serial: Option<String>,
    },
    /// An in-process MockHsm, for tests only (needs the `mockhsm` feature, which only builds
    /// with debug assertions). Every vault opened from this config gets a fresh, empty mock.
    #[cfg(feature = "mockhsm")]
    MockHsm,
}

fn default_http_timeout() -> u64 {
    DEFAULT_HTTP_TIMEOUT_MS
}

impl ConnectorConfig {
    /// An HTTP connector at `url` with the default timeout.
    pub fn http(url: impl Into<String>) -> Self {
        Self::Http {
            url: url.into(),
            timeout_ms: DEFAULT_HTTP_TIMEOUT_MS,
        }
    }
}

impl fmt::Display for ConnectorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Http { url, .. } => write!(f, "{url}"),
            Self::Usb { serial: Some(s) } => write!(f, "usb:{s}"),
            Self::Usb { serial: None } => f.write_str("usb"),
            #[cfg(feature = "mockhsm")]
            Self::MockHsm => f.write_str("mockhsm"),
        }
    }
}

/// Splits `http://host[:port][/]` into host and port.
pub(crate) fn parse_http_url(url: &str) -> Result<(String, u16), ConfigError> {
    let bad = |why: &str| ConfigError::Url {
        url: url.to_owned(),
        why: why.to_owned(),
    };
    let rest = if let Some(rest) = url.strip_prefix("http://") {
        rest
    } else if url.starts_with("https://") {
        return Err(bad(
            "https is not supported by the yubihsm crate; run yubihsm-connector on loopback",
        ));
    } else {
        return Err(bad("expected http://host:port"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') {
        return Err(bad("a path is not supported; give http://host:port"));
    }
    if rest.contains('@') {
        return Err(bad("credentials in the URL are not supported"));
    }
    // `[::1]:12345` or `host:12345` or `host`.
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
        match after {
            "" => (host, None),
            p => (
                host,
                Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
            ),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = match port {
        None => DEFAULT_CONNECTOR_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("the port must be a number from 1 to 65535"))?,
    };
    Ok((host.to_owned(), port))
}

impl Config {
    /// A config for `connector` with the given password and the defaults for the rest
    /// (authentication key 1, domain 1, no extra capabilities).
    pub fn new(connector: ConnectorConfig, password: impl Into<String>) -> Self {
        Self {
            connector,
            auth_key_id: DEFAULT_AUTH_KEY_ID,
            password: SecretString::from(password.into()),
            domains: default_domains(),
            key_capabilities: Vec::new(),
        }
    }

    /// The domains as the device's bit set. At least one, each 1 to 16.
    pub(crate) fn domain_set(&self) -> Result<Domain, ConfigError> {
        if self.domains.is_empty() {
            return Err(ConfigError::Domains("no domain given".into()));
        }
        let mut set = Domain::empty();
        for d in &self.domains {
            let one = Domain::at(usize::from(*d)).map_err(|_| {
                ConfigError::Domains(format!("{d} is not a domain (valid domains are 1 to 16)"))
            })?;
            set |= one;
        }
        Ok(set)
    }

    /// The extra capabilities for new keys, checked.
    pub(crate) fn extra_capabilities(&self) -> Result<Capability, ConfigError> {
        let mut set = Capability::empty();
        for name in &self.key_capabilities {
            let cap: Capability = name
                .parse()
                .map_err(|()| ConfigError::Capability(format!("unknown capability {name:?}")))?;
            if crate::caps::PER_KEY.intersects(cap) {
                return Err(ConfigError::Capability(format!(
                    "{name:?} cannot be given to every key: the adapter gives each key only the \
                     operation its algorithm needs, and export under wrap is asked for per key \
                     with the key-spec attribute `{}`",
                    crate::caps::EXPORTABLE_ATTRIBUTE
                )));
            }
            set |= cap;
        }
        Ok(set)
    }

    /// Checks everything that can be checked without the device.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.domain_set()?;
        self.extra_capabilities()?;
        if let ConnectorConfig::Http { url, timeout_ms } = &self.connector {
            parse_http_url(url)?;
            if *timeout_ms == 0 {
                return Err(ConfigError::Url {
                    url: url.clone(),
                    why: "timeout_ms must be more than 0".into(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_http_url("http://127.0.0.1:12345").unwrap(),
            ("127.0.0.1".into(), 12345)
        );
        assert_eq!(
            parse_http_url("http://localhost/").unwrap(),
            ("localhost".into(), 12345)
        );
        assert_eq!(
            parse_http_url("http://[::1]:8080").unwrap(),
            ("::1".into(), 8080)
        );
        let e = parse_http_url("https://hsm:12345").unwrap_err().to_string();
        assert!(e.contains("https is not supported"), "{e}");
        for bad in [
            "127.0.0.1:12345",
            "http://h:0",
            "http://h:x",
            "http://h:1/api",
            "http://:1",
        ] {
            assert!(parse_http_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn domains_and_capabilities_are_checked() {
        let mut c = Config::new(ConnectorConfig::http("http://127.0.0.1:12345"), "pw");
        c.domains = vec![1, 16];
        assert_eq!(c.domain_set().unwrap(), Domain::DOM1 | Domain::DOM16);
        c.domains = vec![17];
        assert!(c.validate().unwrap_err().to_string().contains("1 to 16"));
        c.domains = vec![];
        assert!(c.validate().is_err());
        c.domains = vec![2];
        c.key_capabilities = vec!["sign-attestation-certificate".into()];
        assert_eq!(
            c.extra_capabilities().unwrap(),
            Capability::SIGN_ATTESTATION_CERTIFICATE
        );
        for refused in [
            "sign-ecdsa",
            "derive-ecdh",
            "sign-eddsa",
            "exportable-under-wrap",
        ] {
            c.key_capabilities = vec![refused.into()];
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("cannot be given to every key"), "{refused}: {e}");
        }
        c.key_capabilities = vec!["fly".into()];
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("unknown capability")
        );
    }

    #[test]
    fn parses_from_json_with_defaults() {
        let c: Config = serde_json::from_str(
            r#"{"connector": {"type": "http", "url": "http://127.0.0.1:12345"},
                "password": "hunter2-secret"}"#,
        )
        .unwrap();
        assert_eq!(c.auth_key_id, 1);
        assert_eq!(c.domains, vec![1]);
        assert_eq!(c.connector, ConnectorConfig::http("http://127.0.0.1:12345"));
        let usb: Config = serde_json::from_str(
            r#"{"connector": {"type": "usb", "serial": "0012345678"}, "password": "x",
                "auth_key_id": 2, "domains": [3, 4]}"#,
        )
        .unwrap();
        assert_eq!(
            usb.connector,
            ConnectorConfig::Usb {
                serial: Some("0012345678".into())
            }
        );
        assert!(
            serde_json::from_str::<Config>(
                r#"{"connector": {"type": "http", "url": "http://h"}, "password": "x", "pin": 1}"#
            )
            .is_err(),
            "unknown fields are refused"
        );
    }

    #[test]
    fn debug_never_shows_the_password() {
        let secret = "correct-horse-battery-staple";
        let json = format!(
            r#"{{"connector": {{"type": "http", "url": "http://127.0.0.1:12345"}},
                "password": "{secret}"}}"#
        );
        let c: Config = serde_json::from_str(&json).unwrap();
        let shown = format!("{c:?} {c:#?} {:?}", c.password);
        assert!(!shown.contains(secret), "{shown}");
        assert!(!shown.contains("horse"), "{shown}");
        assert!(shown.contains("REDACTED"), "{shown}");
        let shown = format!(
            "{:?}",
            Config::new(ConnectorConfig::http("http://h"), secret)
        );
        assert!(!shown.contains(secret), "{shown}");
    }
}
