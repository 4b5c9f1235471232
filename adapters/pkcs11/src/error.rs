//! The adapter's error type: what went wrong opening a token, in words an operator can act on.

use std::path::PathBuf;

use cryptoki::error::Error as CkError;

use crate::rv::{ckr_name, function_name};

/// Errors from configuring and opening a PKCS#11 token. Operations on keys return
/// [`keywarden_vault::Error`]; this converts into it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The module file does not exist.
    #[error("PKCS#11 module not found: {} does not exist", .0.display())]
    ModuleNotFound(PathBuf),
    /// The module exists but could not be loaded or initialized.
    #[error("PKCS#11 module {} could not be loaded: {reason}", path.display())]
    ModuleLoad {
        /// The module path.
        path: PathBuf,
        /// Why (the loader's or the module's own words).
        reason: String,
    },
    /// No slot holds a token matching the configured label or serial.
    #[error("no PKCS#11 token with {wanted}; tokens present: {}", if available.is_empty() { "none".to_string() } else { available.join(", ") })]
    TokenNotFound {
        /// What was asked for (`label "x"` or `serial "y"`).
        wanted: String,
        /// The labels of the tokens that are there.
        available: Vec<String>,
    },
    /// The token exists but was never initialized.
    #[error(
        "PKCS#11 token {0} is not initialized (initialize it with softhsm2-util --init-token, pkcs11-tool --init-token or the vendor's tool)"
    )]
    TokenNotInitialized(String),
    /// The user PIN was refused.
    #[error("PIN incorrect for PKCS#11 token {0} (not retried: repeated failures lock the token)")]
    PinIncorrect(String),
    /// The user PIN is locked after too many failures.
    #[error("user PIN of PKCS#11 token {0} is locked; the security officer must reset it")]
    PinLocked(String),
    /// The PIN could not be read from its configured source.
    #[error("PIN source: {0}")]
    PinSource(String),
    /// The configuration is inconsistent.
    #[error("PKCS#11 configuration: {0}")]
    Config(String),
    /// A PKCS#11 call failed.
    #[error("{function} failed: {code}")]
    Pkcs11 {
        /// The function, e.g. `C_OpenSession`.
        function: String,
        /// The return value name, e.g. `CKR_DEVICE_ERROR`.
        code: String,
        /// The raw return value, for mapping.
        #[source]
        source: CkError,
    },
}

impl Error {
    pub(crate) fn ck(source: CkError) -> Self {
        match &source {
            CkError::Pkcs11(rv, f) => Self::Pkcs11 {
                function: function_name(*f),
                code: ckr_name(*rv),
                source,
            },
            other => Self::Pkcs11 {
                function: "cryptoki".into(),
                code: other.to_string(),
                source,
            },
        }
    }
}

impl From<Error> for keywarden_vault::Error {
    fn from(e: Error) -> Self {
        use keywarden_vault::Error as V;
        match &e {
            Error::PinIncorrect(_) | Error::PinLocked(_) => V::AuthenticationFailed(e.to_string()),
            Error::ModuleNotFound(_) | Error::ModuleLoad { .. } => {
                V::DeviceUnavailable(e.to_string())
            }
            Error::Pkcs11 { source, .. } => crate::rv::to_vault(source, "PKCS#11 call"),
            _ => V::backend("pkcs11", "CONFIG", e.to_string()),
        }
    }
}
