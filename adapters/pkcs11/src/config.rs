//! Which module, which token, which PIN.

use std::fmt;
use std::path::PathBuf;

use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

use crate::error::Error;

/// How to reach one token.
///
/// ```
/// use keywarden_pkcs11::{Pkcs11Config, PinSource, TokenSelector};
/// let config = Pkcs11Config::new(
///     "/usr/lib/softhsm/libsofthsm2.so",
///     TokenSelector::Label("keywarden".into()),
///     PinSource::Env("KEYWARDEN_PIN".into()),
/// );
/// assert!(!format!("{config:?}").contains("KEYWARDEN_PIN=")); // never the PIN itself
/// ```
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// Path of the PKCS#11 module (`.so`).
    pub module: PathBuf,
    /// Which token to use.
    pub token: TokenSelector,
    /// Where the user PIN comes from.
    pub pin: PinSource,
    /// The most sessions to keep open; defaults to twice the CPU count (2 to 32), and never
    /// more than the token allows.
    #[serde(default)]
    pub max_sessions: Option<usize>,
}

impl Pkcs11Config {
    /// A config with the default session pool size.
    pub fn new(module: impl Into<PathBuf>, token: TokenSelector, pin: PinSource) -> Self {
        Self {
            module: module.into(),
            token,
            pin,
            max_sessions: None,
        }
    }
}

impl fmt::Debug for Pkcs11Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Config")
            .field("module", &self.module)
            .field("token", &self.token)
            .field("pin", &self.pin)
            .field("max_sessions", &self.max_sessions)
            .finish()
    }
}

/// Picks a token. SoftHSM2 assigns random slot ids, so slots are never named by number.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSelector {
    /// The token label (`CKA_LABEL` of the token, trailing spaces ignored).
    Label(String),
    /// The token serial number.
    Serial(String),
}

impl fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Label(l) => write!(f, "label {l:?}"),
            Self::Serial(s) => write!(f, "serial {s:?}"),
        }
    }
}

/// Where the user PIN comes from. The PIN itself never appears in `Debug` or errors.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PinSource {
    /// The PIN itself (in a config file, keep the file private).
    Value(SecretString),
    /// An environment variable holding the PIN.
    Env(String),
    /// A file whose contents (without a trailing newline) are the PIN.
    File(PathBuf),
}

impl fmt::Debug for PinSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value(_) => f.write_str("PinSource::Value(<redacted>)"),
            Self::Env(name) => write!(f, "PinSource::Env({name:?})"),
            Self::File(path) => write!(f, "PinSource::File({path:?})"),
        }
    }
}

impl PinSource {
    /// Reads the PIN. Errors name the source, never the PIN.
    pub fn resolve(&self) -> Result<SecretString, Error> {
        let pin: SecretString = match self {
            Self::Value(pin) => pin.clone(),
            Self::Env(name) => match std::env::var(name) {
                Ok(v) => SecretString::from(v),
                Err(std::env::VarError::NotPresent) => {
                    return Err(Error::PinSource(format!(
                        "environment variable {name} is not set"
                    )));
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(Error::PinSource(format!(
                        "environment variable {name} is not valid UTF-8"
                    )));
                }
            },
            Self::File(path) => {
                let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                    Error::PinSource(format!("cannot read PIN file {}: {e}", path.display()))
                })?);
                SecretString::from(text.trim_end_matches(['\r', '\n']).to_owned())
            }
        };
        if pin.expose_secret().is_empty() {
            return Err(Error::PinSource(format!("{self:?} gives an empty PIN")));
        }
        Ok(pin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_pin() {
        let config = Pkcs11Config::new(
            "/m.so",
            TokenSelector::Label("t".into()),
            PinSource::Value(SecretString::from("s3cret-pin-value")),
        );
        let shown = format!("{config:?} {config:#?} {:?}", config.pin);
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn pin_sources_resolve_and_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pin");
        std::fs::write(&file, "1234\n").unwrap();
        let pin = PinSource::File(file).resolve().unwrap();
        assert_eq!(pin.expose_secret(), "1234");

        let missing = PinSource::File(dir.path().join("nope"))
            .resolve()
            .unwrap_err();
        assert!(
            missing.to_string().contains("cannot read PIN file"),
            "{missing}"
        );

        let unset = PinSource::Env("KEYWARDEN_TEST_SURELY_UNSET_VAR".into())
            .resolve()
            .unwrap_err();
        assert!(
            unset
                .to_string()
                .contains("KEYWARDEN_TEST_SURELY_UNSET_VAR is not set"),
            "{unset}"
        );

        let empty = PinSource::Value(SecretString::from(""))
            .resolve()
            .unwrap_err();
        assert!(empty.to_string().contains("empty PIN"), "{empty}");
    }

    #[test]
    fn config_parses_from_toml_like_json_and_rejects_unknown_fields() {
        let ok: Pkcs11Config = serde_json::from_str(
            r#"{"module":"/m.so","token":{"label":"kw"},"pin":{"env":"PIN"},"max_sessions":4}"#,
        )
        .unwrap();
        assert_eq!(ok.token, TokenSelector::Label("kw".into()));
        assert_eq!(ok.max_sessions, Some(4));
        let bad = serde_json::from_str::<Pkcs11Config>(
            r#"{"module":"/m.so","token":{"label":"kw"},"pin":{"env":"PIN"},"pinn":1}"#,
        );
        assert!(bad.is_err());
    }
}
