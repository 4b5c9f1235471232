//! The registry's one error type.

use crate::types::{KeyState, VersionState};

/// Everything a registry operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key of that name exists (in any state: a destroyed key's tombstone keeps its name).
    #[error("key {0:?} already exists")]
    AlreadyExists(String),
    /// No key of that name.
    #[error("no key named {0:?}")]
    NotFound(String),
    /// The key's state does not allow the operation.
    #[error("key {name:?} is {state}; {action} needs it {needs}")]
    WrongState {
        /// The key.
        name: String,
        /// Its state now.
        state: KeyState,
        /// The operation refused.
        action: &'static str,
        /// The state it needs.
        needs: &'static str,
    },
    /// The name breaks the naming rules.
    #[error("invalid key name {0:?}: names are 1-64 characters of a-z A-Z 0-9 . _ -")]
    InvalidName(String),
    /// The key exists but has no such version.
    #[error("key {name:?} has no version {version}")]
    NoSuchVersion {
        /// The key.
        name: String,
        /// The version asked for.
        version: u32,
    },
    /// The version's state does not allow the operation (e.g. completing a version twice).
    #[error("version {version} of key {name:?} is {state}; {action} needs it {needs}")]
    VersionWrongState {
        /// The key.
        name: String,
        /// The version.
        version: u32,
        /// Its state now.
        state: VersionState,
        /// The operation refused.
        action: &'static str,
        /// The state it needs.
        needs: &'static str,
    },
    /// The storage failed; the text is the database's own message (never a secret).
    #[error("registry storage: {0}")]
    Storage(String),
    /// The database was migrated by a newer keywarden.
    #[error(
        "registry schema version {found} is newer than this keywarden understands ({supported})"
    )]
    SchemaTooNew {
        /// The schema version found in the database.
        found: u32,
        /// The newest this build knows.
        supported: u32,
    },
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Self::Storage(e.to_string())
    }
}
