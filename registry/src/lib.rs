//! # keywarden-registry
//!
//! The key service's registry: named keys, their versions, state, owner, labels, expiry,
//! backend and the backend's key reference.
//!
//! [`Registry`] is the interface the service uses; [`SqliteRegistry`] is the embedded default
//! (a PostgreSQL implementation follows, on the same [`migrations`]).
//!
//! ## Crash-safe creation
//! Creating or rotating a key is three steps, so that a crash at any point leaves nothing
//! unaccounted for:
//! 1. [`Registry::begin_create`] / [`Registry::begin_rotate`] write a version row in state
//!    [`VersionState::Pending`] that names the label the HSM object will get;
//! 2. the caller generates the key in the HSM under that label;
//! 3. [`Registry::complete`] records the backend's reference and public key (`Ready`), or
//!    [`Registry::abort`] drops the row if no HSM key was made.
//!
//! On start the service walks [`Registry::pending`] and, for each row, finishes it (the HSM
//! object exists) or destroys what is there and aborts it.
//!
//! With the `testing` feature, [`testing`] is the suite every implementation runs.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
pub mod migrations;
mod sqlite;
mod types;

#[cfg(feature = "testing")]
pub mod testing;

pub use crate::error::Error;
pub use crate::sqlite::SqliteRegistry;
pub use crate::types::{
    KeyRecord, KeyState, MAX_NAME_LEN, NewKey, Pending, Timestamp, UnknownState, VersionRecord,
    VersionState, validate_name,
};

/// The key service's store of named, versioned keys.
///
/// Object safe (`Arc<dyn Registry>`); every future is `Send`. Names are checked with
/// [`validate_name`] by every operation that takes one ([`Error::InvalidName`]).
#[async_trait::async_trait]
pub trait Registry: Send + Sync + std::fmt::Debug {
    /// Phase 1 of create: inserts the key (state Enabled) with version 1 Pending.
    /// [`Error::AlreadyExists`] if the name exists in any state (a destroyed key's tombstone
    /// keeps its name).
    async fn begin_create(&self, new: NewKey) -> Result<Pending, Error>;

    /// Phase 1 of rotate: adds version max+1 as Pending, gap-free even under concurrent
    /// rotations from several processes. The key must be Enabled.
    async fn begin_rotate(
        &self,
        name: &str,
        hsm_label: String,
        now: Timestamp,
    ) -> Result<Pending, Error>;

    /// Phase 3: Pending → Ready with the backend's reference and public key. Returns the
    /// whole record.
    ///
    /// Completing a Ready version again with the same bytes succeeds (a retry after a lost
    /// answer); anything else on a non-pending version is [`Error::VersionWrongState`]. A
    /// version whose key was destroyed meanwhile is Destroyed: the caller must destroy the
    /// HSM object it just made.
    async fn complete(
        &self,
        name: &str,
        version: u32,
        key_ref: &[u8],
        public_key: &[u8],
    ) -> Result<KeyRecord, Error>;

    /// Drops a Pending version that never got an HSM key. If it was the key's only version
    /// (version 1 of a new key), the key row goes too. A pending version with newer versions
    /// above it is marked Destroyed instead of deleted, so the sequence stays gap-free.
    async fn abort(&self, name: &str, version: u32) -> Result<(), Error>;

    /// Every Pending version (for recovery at start), by name then version.
    async fn pending(&self) -> Result<Vec<Pending>, Error>;

    /// The key with all its versions. [`Error::NotFound`] if absent; tombstones are returned
    /// (state Destroyed).
    async fn get(&self, name: &str) -> Result<KeyRecord, Error>;

    /// Every key, sorted by name, tombstones included.
    async fn list(&self) -> Result<Vec<KeyRecord>, Error>;

    /// Enabled ↔ Disabled. Setting the state a key already has is a no-op. A Destroyed key
    /// never changes again, and Destroyed is reached only through [`Registry::destroy`]:
    /// both are [`Error::WrongState`].
    async fn set_state(&self, name: &str, state: KeyState) -> Result<KeyRecord, Error>;

    /// Disabled → Destroyed; marks every version Destroyed (keeping key_ref and public_key
    /// for audit) and returns the record as it was before, so that the caller destroys those
    /// HSM objects. [`Error::WrongState`] if the key is not Disabled.
    async fn destroy(&self, name: &str) -> Result<KeyRecord, Error>;
}
