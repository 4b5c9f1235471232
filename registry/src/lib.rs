//! # keywarden-registry
//!
//! The key service's registry: named keys, their versions, state, owner, labels, expiry,
//! backend and the backend's key reference.
//!
//! [`Registry`] is the interface the service uses; [`SqliteRegistry`] is the embedded default,
//! and with the `postgres` feature `PostgresRegistry` lets several service nodes share one
//! PostgreSQL database (same [`migrations`], same semantics).
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
//! ```
//! use std::collections::BTreeMap;
//! use keywarden_registry::{KeyState, NewKey, Registry, SqliteRegistry};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let rt = tokio::runtime::Builder::new_current_thread().build()?;
//! # rt.block_on(async {
//! let dir = tempfile::tempdir()?;
//! let registry = SqliteRegistry::open(&dir.path().join("registry.db"))?;
//!
//! // At start: settle whatever a crash left pending.
//! for p in registry.pending().await? {
//!     // If the backend has an object labelled `p.hsm_label`: complete(…) with it;
//!     // otherwise nothing was made, so:
//!     registry.abort(&p.name, p.version).await?;
//! }
//!
//! // Create: pending row, HSM key, ready row.
//! let pending = registry
//!     .begin_create(NewKey {
//!         name: "payments.signing".into(),
//!         algorithm: "ecdsa-p256".into(),
//!         backend: "sim".into(),
//!         owner_uid: 1000,
//!         labels: BTreeMap::from([("team".into(), "payments".into())]),
//!         expires_at: None,
//!         hsm_label: "kw-payments.signing-1".into(),
//!         now: 1_700_000_000,
//!     })
//!     .await?;
//! let (key_ref, spki) = (b"backend key ref".to_vec(), b"SPKI DER".to_vec()); // from the vault
//! let record = registry
//!     .complete(&pending.name, pending.version, &key_ref, &spki)
//!     .await?;
//! assert_eq!(record.latest_ready().map(|v| v.version), Some(1));
//!
//! // Rotate the same way; then retire the key.
//! let p2 = registry.begin_rotate("payments.signing", "kw-payments.signing-2".into(), 1_700_000_100).await?;
//! registry.complete(&p2.name, p2.version, b"ref 2", b"SPKI 2").await?;
//! registry.set_state("payments.signing", KeyState::Disabled).await?;
//! let before = registry.destroy("payments.signing").await?; // destroy before.versions' HSM objects
//! assert_eq!(before.versions.len(), 2);
//! assert_eq!(registry.get("payments.signing").await?.state, KeyState::Destroyed);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```
//!
//! With the `testing` feature, [`testing`] is the suite every implementation runs.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
pub mod migrations;
#[cfg(feature = "postgres")]
mod postgres;
mod sqlite;
mod types;

#[cfg(feature = "testing")]
pub mod testing;

pub use crate::error::Error;
#[cfg(feature = "postgres")]
pub use crate::postgres::{DEFAULT_MAX_CONNECTIONS, PostgresOptions, PostgresRegistry};
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
