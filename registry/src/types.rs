//! The records the registry keeps, and the rules for key names.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// Unix seconds, UTC.
pub type Timestamp = i64;

/// The longest key name the registry accepts.
pub const MAX_NAME_LEN: usize = 64;

/// The state of a key as a whole.
///
/// `Enabled ↔ Disabled` may change back and forth; `Disabled → Destroyed` is final: a destroyed
/// key stays in the registry as a tombstone that keeps its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Usable: signs, agrees, verifies, rotates.
    Enabled,
    /// Kept but refused for use until enabled again.
    Disabled,
    /// Its HSM objects are gone; the row is a tombstone.
    Destroyed,
}

/// The state of one version of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionState {
    /// Phase one of creation: the row exists, the HSM key may or may not.
    Pending,
    /// The HSM key exists and the row holds its reference and public key.
    Ready,
    /// The HSM key was destroyed (or never existed, for a version aborted behind a newer one).
    Destroyed,
}

/// A string that is not the name of a [`KeyState`] or [`VersionState`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown state {0:?}")]
pub struct UnknownState(pub String);

impl KeyState {
    /// The lowercase name, as stored and displayed.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "enabled",
            Self::Disabled => "disabled",
            Self::Destroyed => "destroyed",
        }
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "enabled" => Ok(Self::Enabled),
            "disabled" => Ok(Self::Disabled),
            "destroyed" => Ok(Self::Destroyed),
            other => Err(UnknownState(other.to_owned())),
        }
    }
}

impl VersionState {
    /// The lowercase name, as stored and displayed.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Ready => "ready",
            Self::Destroyed => "destroyed",
        }
    }
}

impl fmt::Display for VersionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for VersionState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(Self::Pending),
            "ready" => Ok(Self::Ready),
            "destroyed" => Ok(Self::Destroyed),
            other => Err(UnknownState(other.to_owned())),
        }
    }
}

/// One version of a key.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct VersionRecord {
    /// 1, 2, 3… gap-free per key.
    pub version: u32,
    /// Where this version is in its life.
    pub state: VersionState,
    /// The label the HSM object gets, chosen before it exists (for crash recovery).
    pub hsm_label: String,
    /// The backend's `KeyRef` bytes; `None` while pending.
    pub key_ref: Option<Vec<u8>>,
    /// The public key as SubjectPublicKeyInfo DER; `None` while pending.
    pub public_key: Option<Vec<u8>>,
    /// When the version was begun.
    pub created_at: Timestamp,
}

/// A named key and all its versions.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct KeyRecord {
    /// The key's name (see [`validate_name`]).
    pub name: String,
    /// `"ecdsa-p256"`, `"ecdh-p256"` or `"ed25519"`; opaque to the registry.
    pub algorithm: String,
    /// The backend's name from the service config.
    pub backend: String,
    /// The uid of the key's creator.
    pub owner_uid: u32,
    /// Free-form labels, for policies.
    pub labels: BTreeMap<String, String>,
    /// The key's state.
    pub state: KeyState,
    /// When the key was created.
    pub created_at: Timestamp,
    /// When the key stops signing, if ever.
    pub expires_at: Option<Timestamp>,
    /// Every version, pending ones included, ascending by version.
    pub versions: Vec<VersionRecord>,
}

impl KeyRecord {
    /// The newest version in state [`VersionState::Ready`]: the one new signatures use.
    pub fn latest_ready(&self) -> Option<&VersionRecord> {
        self.versions
            .iter()
            .rev()
            .find(|v| v.state == VersionState::Ready)
    }

    /// Version `v`, in whatever state.
    pub fn version(&self, v: u32) -> Option<&VersionRecord> {
        self.versions.iter().find(|r| r.version == v)
    }

    /// Whether the key has expired at `now` (expiry is inclusive: at `expires_at` it has).
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }
}

/// What [`Registry::begin_create`](crate::Registry::begin_create) needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewKey {
    /// The key's name (see [`validate_name`]).
    pub name: String,
    /// The algorithm, opaque to the registry.
    pub algorithm: String,
    /// The backend's name.
    pub backend: String,
    /// The creator's uid.
    pub owner_uid: u32,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// When the key stops signing, if ever.
    pub expires_at: Option<Timestamp>,
    /// The label version 1's HSM object will get.
    pub hsm_label: String,
    /// The creation time.
    pub now: Timestamp,
}

/// A version row in state Pending: phase one of crash-safe creation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    /// The key's name.
    pub name: String,
    /// The pending version.
    pub version: u32,
    /// The label its HSM object gets (or got, if the crash came after generation).
    pub hsm_label: String,
    /// The key's backend.
    pub backend: String,
    /// The key's algorithm.
    pub algorithm: String,
    /// When the version was begun (the `now` given to `begin_create` / `begin_rotate`).
    ///
    /// Several nodes sharing one registry: a row this young may be another live node's
    /// creation in progress (its HSM key being generated right now), not a crash's leftover.
    /// Recovery at start should leave alone rows younger than the longest a creation takes
    /// (plus clock skew between nodes), and settle them later.
    pub created_at: Timestamp,
}

/// Checks a key name: 1 to [`MAX_NAME_LEN`] characters of `a-z A-Z 0-9 . _ -`.
pub fn validate_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn states_round_trip_through_strings_and_serde() {
        for s in [KeyState::Enabled, KeyState::Disabled, KeyState::Destroyed] {
            assert_eq!(s.to_string().parse::<KeyState>().unwrap(), s);
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        for s in [
            VersionState::Pending,
            VersionState::Ready,
            VersionState::Destroyed,
        ] {
            assert_eq!(s.to_string().parse::<VersionState>().unwrap(), s);
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert!("Enabled".parse::<KeyState>().is_err());
        assert!("".parse::<VersionState>().is_err());
    }

    #[test]
    fn names() {
        for good in ["a", "A.b_c-9", &"x".repeat(64), "..", "-"] {
            validate_name(good).unwrap();
        }
        for bad in ["", &"x".repeat(65), "a/b", "a b", "é", "a\0", "a\n", "ключ"] {
            assert!(matches!(validate_name(bad), Err(Error::InvalidName(n)) if n == bad));
        }
    }

    #[test]
    fn latest_ready_skips_pending_and_destroyed() {
        let v = |version, state| VersionRecord {
            version,
            state,
            hsm_label: format!("l{version}"),
            key_ref: None,
            public_key: None,
            created_at: 0,
        };
        let rec = KeyRecord {
            name: "k".into(),
            algorithm: "ed25519".into(),
            backend: "sim".into(),
            owner_uid: 0,
            labels: BTreeMap::new(),
            state: KeyState::Enabled,
            created_at: 0,
            expires_at: None,
            versions: vec![
                v(1, VersionState::Ready),
                v(2, VersionState::Ready),
                v(3, VersionState::Destroyed),
                v(4, VersionState::Pending),
            ],
        };
        assert_eq!(rec.latest_ready().unwrap().version, 2);
        assert_eq!(rec.version(4).unwrap().state, VersionState::Pending);
        assert!(rec.version(5).is_none());

        assert!(!rec.is_expired(i64::MAX), "no expiry, never expired");
        let rec = KeyRecord {
            expires_at: Some(100),
            ..rec
        };
        assert!(!rec.is_expired(99));
        assert!(rec.is_expired(100));
        assert!(rec.is_expired(101));
    }
}
