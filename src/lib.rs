//! # keywarden
//!
//! The appliance: the key service (`keywarden serve`), its client, and the CLI. Private keys
//! live in HSMs behind [`keywarden_vault::Vault`] backends; callers reach them through the
//! service's gRPC API on a Unix socket (or a mutual-TLS listener), under Cedar policies, with every request in a
//! hash-chained audit log.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;
pub mod client;
pub mod proto;
pub mod service;
#[cfg(feature = "testing")]
pub mod testing;
