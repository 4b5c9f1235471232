//! The one error type of the vault interface.

/// A `Result` whose error is the vault [`Error`].
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// What went wrong, in terms a caller can act on.
///
/// No variant ever carries a secret: messages name keys by reference and label, backends by
/// name and their own error codes (`CKR_…`, `TPM_RC_…`), never PINs, key material or
/// shared secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key does not exist (never did, or was destroyed).
    #[error("key not found: {0}")]
    KeyNotFound(String),
    /// The backend cannot do this algorithm, or the key's algorithm is not the one the
    /// operation needs (signing with an ECDH key).
    #[error("unsupported algorithm: {0}")]
    UnsupportedAlgorithm(String),
    /// The backend or a policy refused the operation.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The credentials (PIN, password, owner auth) were refused.
    #[error("authentication failed: {0}")]
    AuthenticationFailed(String),
    /// The device cannot be reached right now; the same call may succeed later.
    #[error("device unavailable (retryable): {0}")]
    DeviceUnavailable(String),
    /// The caller's input is malformed or out of bounds; the message says which and why.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The backend failed in a way the categories above do not cover.
    #[error("{backend} error {code}: {message}")]
    Backend {
        /// The backend's name (`pkcs11`, `tpm2`, …).
        backend: String,
        /// The backend's own error code, e.g. `CKR_GENERAL_ERROR`.
        code: String,
        /// What the backend was doing when it failed.
        message: String,
    },
}

impl Error {
    /// True when retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::DeviceUnavailable(_))
    }

    /// Shorthand for [`Error::Backend`].
    pub fn backend(
        backend: impl Into<String>,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::Backend {
            backend: backend.into(),
            code: code.into(),
            message: message.into(),
        }
    }
}
