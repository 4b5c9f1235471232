//! How to reach the TPM and where the key blobs live.

use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

/// The hierarchy the primary storage key is made in.
///
/// The null hierarchy is not offered: its seed changes at every TPM reset, so keys made under
/// it would not survive a restart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hierarchy {
    /// The storage (owner) hierarchy: the usual home of application keys.
    #[default]
    Owner,
    /// The endorsement hierarchy.
    Endorsement,
}

/// Configuration of a [`Tpm2Vault`](crate::Tpm2Vault).
///
/// ```
/// let config: keywarden_tpm2::Config = serde_json::from_str(r#"{
///     "tcti": "device:/dev/tpmrm0",
///     "key_dir": "/var/lib/keywarden/tpm2",
///     "hierarchy": "owner",
///     "owner_auth": "correct horse"
/// }"#).unwrap();
/// assert!(!format!("{config:?}").contains("horse"));
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The TCTI, as tpm2-tools spell it: `device:/dev/tpmrm0`, `tabrmd:`,
    /// `swtpm:host=127.0.0.1,port=2321`, `mssim:host=…,port=…`.
    pub tcti: String,
    /// Where the key blobs (public area and encrypted private area) are kept.
    pub key_dir: PathBuf,
    /// The hierarchy of the primary storage key (default: owner).
    #[serde(default)]
    pub hierarchy: Hierarchy,
    /// The hierarchy's authorization value, when one is set (`tpm2_changeauth -c owner`).
    #[serde(default)]
    pub owner_auth: Option<SecretString>,
    /// Use this persistent handle (e.g. `0x81000001`, made with `tpm2_evictcontrol`) as the
    /// parent instead of creating the primary key from the template at start.
    #[serde(default)]
    pub persistent_parent: Option<u32>,
    /// How many child keys to keep loaded between operations (default 2: swtpm and chips
    /// without a resource manager have 3 transient slots, one of which holds the primary).
    #[serde(default = "default_loaded_keys")]
    pub loaded_keys: usize,
    /// How long a call waits for the TPM before answering `DeviceUnavailable`, in
    /// milliseconds (default 30 000). The command itself cannot be cancelled: calls behind it
    /// wait too, until the TPM answers or the link breaks.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    30_000
}

fn default_loaded_keys() -> usize {
    2
}

impl Config {
    /// A configuration with the defaults: owner hierarchy, no owner auth, primary from the
    /// template, two cached keys.
    pub fn new(tcti: impl Into<String>, key_dir: impl Into<PathBuf>) -> Self {
        Self {
            tcti: tcti.into(),
            key_dir: key_dir.into(),
            hierarchy: Hierarchy::Owner,
            owner_auth: None,
            persistent_parent: None,
            loaded_keys: default_loaded_keys(),
            timeout_ms: default_timeout_ms(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn debug_does_not_show_the_owner_auth() {
        let config: Config = serde_json::from_str(
            r#"{"tcti": "swtpm:host=127.0.0.1,port=2321", "key_dir": "/tmp/k",
                "hierarchy": "endorsement", "owner_auth": "s3cr3t-owner-auth"}"#,
        )
        .unwrap();
        assert_eq!(config.hierarchy, Hierarchy::Endorsement);
        assert_eq!(config.loaded_keys, 2);
        let shown = format!("{config:?} {config:#?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("REDACTED"), "{shown}");
        assert!(shown.contains("swtpm:host=127.0.0.1,port=2321"), "{shown}");
    }

    #[test]
    fn refuses_unknown_fields_and_the_null_hierarchy() {
        let e = serde_json::from_str::<Config>(r#"{"tcti": "x", "key_dir": "/k", "pin": "1"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("unknown field `pin`"), "{e}");
        let e = serde_json::from_str::<Config>(
            r#"{"tcti": "x", "key_dir": "/k", "hierarchy": "null"}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown variant `null`"), "{e}");
    }
}
