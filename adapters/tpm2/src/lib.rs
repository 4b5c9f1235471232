//! # keywarden-tpm2
//!
//! A TPM 2.0 chip as a keywarden [`Vault`](keywarden_vault::Vault) backend, through
//! [`tss-esapi`](tss_esapi) 7 and the system's libtss2 (3.2.1 on Debian bookworm).
//!
//! - Keys are ECDSA P-256 (`TPM2_Sign` over a host-side SHA-256 digest) and ECDH P-256
//!   (`TPM2_ECDH_ZGen`; the shared secret is the x-coordinate) children of a P-256 primary
//!   storage key, created with `sensitiveDataOrigin`, `fixedTPM`, `fixedParent`, `noDA` and
//!   `userWithAuth` (empty password). The primary is made from a fixed template at start, so
//!   it is the same key after every TPM restart, or loaded from a configured persistent
//!   handle.
//! - Each key's public area and TPM-encrypted private area are written to the key directory
//!   (temporary file, fsync, rename, fsync of the directory); the [`KeyRef`](keywarden_vault::KeyRef)
//!   is 16 random bytes naming the file.
//! - One thread owns the ESAPI context; vault calls queue closures to it. At most
//!   [`Config::loaded_keys`] children stay loaded (LRU), so the three transient slots of a
//!   TPM without resource manager never run out.
//! - TPM response codes appear by name (`TPM_RC_LOCKOUT`, …); `TPM_RC_RETRY`, `YIELDED` and
//!   `TESTING` are retried; a lost connection is reopened once per call.
//!
//! libtss2 logs to stderr unless told otherwise: set `TSS2_LOG=all+NONE` (or `esys+error`…) in
//! the environment of the process.
//!
//! With the `testing` feature, `testing::Swtpm` starts and stops a software TPM for tests.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod error;
mod rc;
mod store;
mod tpm;
mod vault;
mod worker;

#[cfg(feature = "testing")]
pub mod testing;

pub use crate::config::{Config, Hierarchy};
pub use crate::error::Tpm2Error;
pub use crate::rc::{Class as ResponseClass, ResponseCode};
pub use crate::vault::Tpm2Vault;
