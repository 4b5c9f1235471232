//! keywarden-hsm-sim: a PKCS#11 token written in Rust, with deterministic fault injection.
//!
//! Built as a `cdylib` it is a module any PKCS#11 consumer can load (`C_GetFunctionList`,
//! `C_GetInterface`); as an `rlib` its token logic ([`module::Module`]) can be driven directly.
//! All `unsafe` code lives in the `ffi` module, the C ABI layer; everything below it is safe
//! Rust. See `README.md` for configuration.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod attr;
pub mod config;
pub mod crypto;
pub mod error;
pub mod fault;
pub mod module;
pub mod object;
pub mod seal;
pub mod session;
pub mod store;
pub mod token;

/// The C ABI layer: the only module allowed `unsafe` code.
#[allow(unsafe_code)]
pub mod ffi;

pub use config::{Config, SlotConfig, set_config};
pub use error::{Error, Result};
pub use fault::FaultConfig;
pub use module::Module;
pub use seal::KdfParams;
