//! The crate's error type and its mapping onto [`keywarden_vault::Error`].

use std::io;
use std::path::{Path, PathBuf};

use keywarden_vault::{Error, KeyRef};

use crate::rc::{Class, ResponseCode};

const BACKEND: &str = "tpm2";

/// Everything that can go wrong in the TPM adapter. Never carries a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Tpm2Error {
    /// No key file for this reference.
    #[error("key not found: {0}")]
    KeyNotFound(KeyRef),
    /// The TPM adapter cannot make keys of this algorithm, or the key's algorithm does not
    /// allow the operation.
    #[error("{0}")]
    Unsupported(String),
    /// The configuration is unusable.
    #[error("bad tpm2 configuration: {0}")]
    Config(String),
    /// The TCTI could not be loaded or the TPM could not be reached through it.
    #[error("cannot reach the TPM through TCTI {tcti:?}: {why}")]
    Unreachable {
        /// The configured TCTI.
        tcti: String,
        /// What failed.
        why: String,
    },
    /// The TPM (or the TSS below us) answered a command with an error.
    #[error("{op}: {rc}{hint}")]
    Tpm {
        /// The command or step.
        op: &'static str,
        /// The decoded response code.
        rc: ResponseCode,
        /// What to do about it, when we know ("" otherwise).
        hint: &'static str,
    },
    /// tss-esapi refused the call before it reached the TPM.
    #[error("{op}: tss-esapi: {why}")]
    Wrapper {
        /// The command or step.
        op: &'static str,
        /// tss-esapi's message.
        why: String,
    },
    /// A key file exists but cannot be decoded.
    #[error("key blob {path} is corrupt: {why}")]
    CorruptBlob {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The TPM refused to load a key blob because it was made by another TPM, or under
    /// another parent key.
    #[error(
        "key blob for {key} does not load on this TPM ({rc}): it was made by another TPM or \
         under another parent key, or it was altered; a blob only loads on the TPM (and \
         hierarchy seed) that created it"
    )]
    ForeignBlob {
        /// The key.
        key: KeyRef,
        /// The TPM's answer (usually `TPM_RC_INTEGRITY`).
        rc: ResponseCode,
    },
    /// Reading or writing the key directory failed.
    #[error("cannot {what} {path}: {source}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The TPM did not answer in time.
    #[error("the TPM at {tcti:?} did not answer within {after:?}")]
    Timeout {
        /// The configured TCTI.
        tcti: String,
        /// The configured timeout.
        after: std::time::Duration,
    },
    /// The thread that owns the TPM context has stopped.
    #[error("the TPM worker thread has stopped")]
    WorkerGone,
    /// A broken invariant; the message says which.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Tpm2Error {
    pub(crate) fn io(what: &'static str, path: &Path, source: io::Error) -> Self {
        Self::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }

    /// Wraps a tss-esapi error from the command `op`.
    pub(crate) fn esapi(op: &'static str, e: tss_esapi::Error) -> Self {
        match crate::rc::from_esapi(&e) {
            Some(rc) => Self::tpm(op, rc),
            None => Self::Wrapper {
                op,
                why: e.to_string(),
            },
        }
    }

    pub(crate) fn tpm(op: &'static str, rc: ResponseCode) -> Self {
        let hint = match rc.class() {
            Class::Lockout => {
                "; the TPM is in dictionary-attack lockout after too many authorization \
                 failures (or unorderly shutdowns): wait for the recovery time \
                 (`tpm2_getcap properties-variable`, TPM2_PT_LOCKOUT_RECOVERY) or clear it \
                 with `tpm2_dictionarylockout --clear-lockout` and the lockout auth"
            }
            Class::ObjectMemory => {
                "; the TPM has no free transient object slot: another program (or a crashed \
                 one, without a resource manager) holds them; use /dev/tpmrm0 or tabrmd, or \
                 flush with `tpm2_flushcontext -t`"
            }
            Class::BadAuth => "; check the configured owner_auth",
            Class::Retry => "; the TPM kept asking to retry",
            _ => "",
        };
        Self::Tpm { op, rc, hint }
    }

    /// The response code, when the TPM or TSS gave one.
    pub fn response_code(&self) -> Option<ResponseCode> {
        match self {
            Self::Tpm { rc, .. } | Self::ForeignBlob { rc, .. } => Some(*rc),
            _ => None,
        }
    }
}

impl From<Tpm2Error> for Error {
    fn from(e: Tpm2Error) -> Self {
        let message = e.to_string();
        match &e {
            Tpm2Error::KeyNotFound(key) => Error::KeyNotFound(key.to_string()),
            Tpm2Error::Unsupported(_) => Error::UnsupportedAlgorithm(message),
            Tpm2Error::Config(_) => Error::InvalidInput(message),
            Tpm2Error::Unreachable { .. } | Tpm2Error::Timeout { .. } | Tpm2Error::WorkerGone => {
                Error::DeviceUnavailable(message)
            }
            Tpm2Error::Tpm { rc, .. } => match rc.class() {
                Class::Unreachable | Class::Retry => Error::DeviceUnavailable(message),
                Class::BadAuth => Error::AuthenticationFailed(message),
                _ => Error::backend(BACKEND, rc.name(), message),
            },
            Tpm2Error::ForeignBlob { .. } => Error::backend(BACKEND, "FOREIGN_KEY_BLOB", message),
            Tpm2Error::CorruptBlob { .. } => Error::backend(BACKEND, "CORRUPT_KEY_BLOB", message),
            Tpm2Error::Wrapper { .. } => Error::backend(BACKEND, "TSS_ESAPI", message),
            Tpm2Error::Io { .. } => Error::backend(BACKEND, "IO", message),
            Tpm2Error::Internal(_) => Error::backend(BACKEND, "INTERNAL", message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockout_says_what_to_do() {
        let e: Error = Tpm2Error::tpm("TPM2_Sign", ResponseCode::new(0x921)).into();
        match &e {
            Error::Backend { code, message, .. } => {
                assert_eq!(code, "TPM_RC_LOCKOUT");
                assert!(message.contains("dictionary-attack lockout"), "{message}");
                assert!(message.contains("tpm2_dictionarylockout"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn categories() {
        let e: Error = Tpm2Error::tpm("TPM2_Create", ResponseCode::new(0x9a2)).into();
        assert!(matches!(e, Error::AuthenticationFailed(_)), "{e:?}");
        let e: Error = Tpm2Error::tpm("TPM2_Load", ResponseCode::new(0x902)).into();
        assert!(e.to_string().contains("TPM_RC_OBJECT_MEMORY"), "{e}");
        let e: Error = Tpm2Error::tpm("connect", ResponseCode::new(0x000a_000a)).into();
        assert!(e.is_retryable(), "{e:?}");
    }
}
