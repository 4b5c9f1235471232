//! # keywarden-yubihsm
//!
//! A YubiHSM 2 as a keywarden [`Vault`](keywarden_vault::Vault), through the `yubihsm` crate
//! (0.42).
//!
//! - **Connectors** ([`ConnectorConfig`]): `http` to a `yubihsm-connector`, `usb` (cargo
//!   feature `usb`, needs libusb), and `mockhsm` (cargo feature `mockhsm`, for tests only:
//!   MockHsm does not build without debug assertions).
//! - **Credentials**: an authentication key id and its password, held as a
//!   [`secrecy::SecretString`] and never printed.
//! - **Keys**: ECDSA P-256 (the message is hashed with SHA-256 on the host and the device signs
//!   the digest), Ed25519 (the device signs the message, at most
//!   [`MAX_ED25519_MESSAGE_LEN`] bytes), ECDH P-256 (`Derive ECDH`; see [`ecdh`]). Each key is
//!   created with exactly the one capability its algorithm needs (`sign-ecdsa`, `sign-eddsa`,
//!   `derive-ecdh`) plus the config's extra `key_capabilities`, in the config's domains, with
//!   the spec's label written to the device (at most 40 bytes, which the vault enforces).
//!   It is not exportable under wrap unless the key spec has the attribute
//!   `exportable-under-wrap=true` ([`EXPORTABLE_ATTRIBUTE`]).
//! - **Key references** are the 2-byte object id, big-endian (`KeyRef` hex `1a2b` is object
//!   `0x1a2b`). Ids are chosen at random by the adapter.
//! - **One session per device**, owned by a dedicated thread (the yubihsm client is blocking),
//!   reopened when it is lost; see `device.rs`.
//! - **Errors**: a wrong password is `AuthenticationFailed`, a missing object `KeyNotFound`, a
//!   capability refusal `PermissionDenied`, an unreachable connector `DeviceUnavailable`
//!   naming the connector; the device's own code (`YHR_…`) is in the message or in
//!   `Error::Backend`.
//!
//! ## Limits worth knowing
//!
//! - The yubihsm crate has no way to close a session from a `Client`, and its `Session` is not
//!   closed on drop (despite its documentation): when a vault is dropped, or a lost session is
//!   replaced, the device frees the slot after its 30-second idle timeout. A YubiHSM 2 has 16
//!   session slots.
//! - The HTTP connector of yubihsm 0.42 ignores `timeout_ms`: it connects, reads and writes
//!   with its own 20-second timeout, so a hung connector holds the device thread (and every
//!   queued call) for up to 20 seconds before `DeviceUnavailable`.
//! - Derive ECDH is behind the crate's `untested` feature and MockHsm lacks it; see [`ecdh`] for
//!   what was checked against the specification, and `tests/ecdh_wire.rs` for the end-to-end
//!   test against a fake device.
//!
//! The yubihsm crate is on the previous RustCrypto generation (p256 0.13); keys and signatures
//! cross into keywarden's types (p256 0.14) as bytes only.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod caps;
mod config;
mod device;
pub mod ecdh;
mod error;
mod vault;

pub use crate::caps::EXPORTABLE_ATTRIBUTE;
pub use crate::config::{
    Config, ConnectorConfig, DEFAULT_AUTH_KEY_ID, DEFAULT_CONNECTOR_PORT, DEFAULT_HTTP_TIMEOUT_MS,
};
pub use crate::error::ConfigError;
pub use crate::vault::{MAX_ED25519_MESSAGE_LEN, YubiHsmVault};

/// The yubihsm crate this adapter is built on, for callers that build their own
/// [`Connector`](yubihsm::Connector) (see [`YubiHsmVault::open_with_connector`]).
pub use yubihsm;
