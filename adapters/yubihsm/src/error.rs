//! Errors: this crate's own (configuration), and the mapping of yubihsm errors into the
//! vault's.
//!
//! | yubihsm says | vault error |
//! | --- | --- |
//! | authentication key refused (cryptogram mismatch, `YHR_DEVICE_AUTHENTICATION_FAILED`, auth key missing) | `AuthenticationFailed` |
//! | `YHR_DEVICE_OBJECT_NOT_FOUND` | `KeyNotFound` |
//! | `YHR_DEVICE_INSUFFICIENT_PERMISSIONS` | `PermissionDenied` |
//! | connector unreachable, I/O, HTTP errors; session lost; `SESSIONS_FULL` | `DeviceUnavailable` (retryable) |
//! | anything else | `Backend { backend: "yubihsm", code: "YHR_…" }` |
//!
//! No message carries the password: yubihsm's messages name the authentication key by id only.

use std::error::Error as StdError;

use keywarden_vault::Error;
use yubihsm::{client, connector, device, session};

/// This crate's own errors: a configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The connector URL is not one the yubihsm crate can use.
    #[error("yubihsm connector URL {url:?}: {why}")]
    Url {
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// The domains are not 1 to 16.
    #[error("yubihsm domains: {0}")]
    Domains(String),
    /// A capability name is unknown or not allowed for every key.
    #[error("yubihsm key capabilities: {0}")]
    Capability(String),
    /// The connector needs a cargo feature this build does not have.
    #[error("yubihsm connector {connector}: this build lacks the `{feature}` feature")]
    MissingFeature {
        /// The connector asked for.
        connector: String,
        /// The feature that would provide it.
        feature: &'static str,
    },
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::InvalidInput(e.to_string())
    }
}

/// The device's own error code name (as in libyubihsm's `yh_rc`), for messages and
/// `Error::Backend::code`.
pub(crate) fn device_code(kind: device::ErrorKind) -> String {
    use device::ErrorKind as K;
    let name = match kind {
        K::InvalidCommand => "YHR_DEVICE_INVALID_COMMAND",
        K::InvalidData => "YHR_DEVICE_INVALID_DATA",
        K::InvalidSession => "YHR_DEVICE_INVALID_SESSION",
        K::AuthenticationFailed => "YHR_DEVICE_AUTHENTICATION_FAILED",
        K::SessionsFull => "YHR_DEVICE_SESSIONS_FULL",
        K::SessionFailed => "YHR_DEVICE_SESSION_FAILED",
        K::StorageFailed => "YHR_DEVICE_STORAGE_FAILED",
        K::WrongLength => "YHR_DEVICE_WRONG_LENGTH",
        K::InsufficientPermissions => "YHR_DEVICE_INSUFFICIENT_PERMISSIONS",
        K::LogFull => "YHR_DEVICE_LOG_FULL",
        K::ObjectNotFound => "YHR_DEVICE_OBJECT_NOT_FOUND",
        K::InvalidId => "YHR_DEVICE_INVALID_ID",
        K::InvalidOtp => "YHR_DEVICE_INVALID_OTP",
        K::DemoMode => "YHR_DEVICE_DEMO_MODE",
        K::CommandUnexecuted => "YHR_DEVICE_COMMAND_UNEXECUTED",
        K::GenericError => "YHR_GENERIC_ERROR",
        K::ObjectExists => "YHR_DEVICE_OBJECT_EXISTS",
        K::SshCaConstraintViolation => "YHR_DEVICE_SSH_CA_CONSTRAINT_VIOLATION",
        K::Unknown { code } => return format!("YHR_DEVICE_UNKNOWN_{code:#04x}"),
    };
    name.to_owned()
}

/// The first error of type `E` in `e`'s source chain (including `e`).
fn find<'a, E: StdError + 'static>(e: &'a (dyn StdError + 'static)) -> Option<&'a E> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(found) = err.downcast_ref::<E>() {
            return Some(found);
        }
        cur = err.source();
    }
    None
}

/// Every error in the chain, each said once: yubihsm's errors print their kind followed by
/// their source, which repeats along the chain ("I/O error: I/O error") and may stop short of
/// the root cause (the OS error).
pub(crate) fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        let shown = err.to_string();
        let own = match err.source() {
            Some(src) => vec![
                shown
                    .strip_suffix(&format!(": {src}"))
                    .unwrap_or(&shown)
                    .to_owned(),
            ],
            None => match hidden_description(err) {
                Some(detail) if !shown.contains(&detail) => vec![shown, detail],
                _ => vec![shown],
            },
        };
        for part in own {
            if !part.is_empty() && parts.last() != Some(&part) {
                parts.push(part);
            }
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// yubihsm's HTTP client keeps the cause (`Connection refused (os error 111)`) in a private
/// `description` field that only its `Debug` shows; fish it out, best effort, so an operator
/// sees why the connector could not be reached.
fn hidden_description(err: &(dyn StdError + 'static)) -> Option<String> {
    const MARK: &str = "description: Some(\"";
    let dbg = format!("{err:?}");
    let start = dbg.find(MARK)? + MARK.len();
    let len = dbg[start..].find("\")")?;
    Some(dbg[start..start + len].to_owned())
}

/// The device error code in a client error, wherever in the chain it sits.
pub(crate) fn device_error(e: &client::Error) -> Option<device::ErrorKind> {
    e.device_error()
        .or_else(|| find::<device::ErrorKind>(e).copied())
}

/// True if the session or the connection behind it is gone, so the next command needs a new
/// session (and, for the HTTP connector, a new connection).
pub(crate) fn session_lost(e: &client::Error) -> bool {
    if let Some(kind) = device_error(e) {
        return matches!(
            kind,
            device::ErrorKind::InvalidSession | device::ErrorKind::SessionFailed
        );
    }
    if find::<connector::Error>(e).is_some() {
        return true;
    }
    match e.kind() {
        client::ErrorKind::ClosedSessionError
        | client::ErrorKind::ConnectorError
        | client::ErrorKind::CreateFailed
        | client::ErrorKind::ProtocolError
        | client::ErrorKind::ResponseError => true,
        client::ErrorKind::AuthenticationError | client::ErrorKind::DeviceError => false,
    }
}

/// What the adapter was doing when an error happened, for the message.
pub(crate) struct Context<'a> {
    /// The backend's name (with the connector).
    pub backend: &'a str,
    /// The operation, e.g. `sign`.
    pub op: &'a str,
    /// The key reference (hex) if the operation is on one key.
    pub key: Option<String>,
    /// The authentication key id.
    pub auth_key_id: u16,
}

impl Context<'_> {
    fn what(&self) -> String {
        match &self.key {
            Some(k) => format!("{} {} (key {k})", self.backend, self.op),
            None => format!("{} {}", self.backend, self.op),
        }
    }
}

/// Maps a yubihsm client error into the vault's error.
pub(crate) fn map(e: &client::Error, cx: &Context<'_>) -> Error {
    let what = cx.what();
    if let Some(kind) = device_error(e) {
        let code = device_code(kind);
        return match kind {
            device::ErrorKind::ObjectNotFound => Error::KeyNotFound(match &cx.key {
                Some(k) => format!("{k}: no such object on the YubiHSM ({code})"),
                None => format!("{what}: object not found ({code})"),
            }),
            device::ErrorKind::InsufficientPermissions => Error::PermissionDenied(format!(
                "{what}: the YubiHSM refused: the key or authentication key {} lacks the \
                 capability or domain ({code})",
                cx.auth_key_id
            )),
            device::ErrorKind::AuthenticationFailed => Error::AuthenticationFailed(format!(
                "{what}: the YubiHSM refused authentication key {} ({code})",
                cx.auth_key_id
            )),
            device::ErrorKind::SessionsFull
            | device::ErrorKind::InvalidSession
            | device::ErrorKind::SessionFailed => Error::DeviceUnavailable(format!(
                "{what}: session lost or no free session on the device ({code}); retry"
            )),
            _ => Error::backend("yubihsm", code, format!("{what}: {}", chain(e))),
        };
    }
    if *e.kind() == client::ErrorKind::AuthenticationError {
        return Error::AuthenticationFailed(format!(
            "{what}: authentication key {} was refused (wrong password, or no such \
             authentication key): {}",
            cx.auth_key_id,
            chain(e)
        ));
    }
    if let Some(c) = find::<connector::Error>(e) {
        let through = cx.backend.trim_start_matches("yubihsm:");
        let hint = if through.starts_with("http") {
            "is yubihsm-connector running there, with the device plugged in?"
        } else if through.starts_with("usb") {
            "is a YubiHSM 2 plugged in, and may this user open it (udev rules)?"
        } else {
            "retry later"
        };
        return Error::DeviceUnavailable(format!(
            "{what}: cannot reach the YubiHSM through {through}: {} ({hint})",
            chain(c)
        ));
    }
    if let Some(s) = find::<session::Error>(e)
        && *s.kind() == session::ErrorKind::AuthenticationError
    {
        return Error::AuthenticationFailed(format!(
            "{what}: authentication key {} was refused: {}",
            cx.auth_key_id,
            chain(s)
        ));
    }
    if session_lost(e) {
        return Error::DeviceUnavailable(format!(
            "{what}: session with the YubiHSM lost: {}",
            chain(e)
        ));
    }
    Error::backend(
        "yubihsm",
        format!("{:?}", e.kind()),
        format!("{what}: {}", chain(e)),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn cx() -> Context<'static> {
        Context {
            backend: "yubihsm:http://127.0.0.1:12345",
            op: "sign",
            key: Some("1234".into()),
            auth_key_id: 1,
        }
    }

    /// A client error carrying a device code, built the way the crate builds it from a
    /// device response (device kind → session error → client error).
    fn from_device(kind: device::ErrorKind) -> client::Error {
        client::Error::from(session::Error::from(kind))
    }

    #[test]
    fn device_codes_map_to_vault_errors() {
        let e = map(&from_device(device::ErrorKind::ObjectNotFound), &cx());
        assert!(matches!(e, Error::KeyNotFound(_)), "{e:?}");
        assert!(e.to_string().contains("1234"), "{e}");
        assert!(e.to_string().contains("YHR_DEVICE_OBJECT_NOT_FOUND"), "{e}");

        let e = map(
            &from_device(device::ErrorKind::InsufficientPermissions),
            &cx(),
        );
        assert!(matches!(e, Error::PermissionDenied(_)), "{e:?}");
        assert!(
            e.to_string()
                .contains("YHR_DEVICE_INSUFFICIENT_PERMISSIONS"),
            "{e}"
        );

        let e = map(&from_device(device::ErrorKind::AuthenticationFailed), &cx());
        assert!(matches!(e, Error::AuthenticationFailed(_)), "{e:?}");

        let e = map(&from_device(device::ErrorKind::SessionsFull), &cx());
        assert!(e.is_retryable(), "{e:?}");

        let e = map(&from_device(device::ErrorKind::StorageFailed), &cx());
        match e {
            Error::Backend { backend, code, .. } => {
                assert_eq!(backend, "yubihsm");
                assert_eq!(code, "YHR_DEVICE_STORAGE_FAILED");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            device_code(device::ErrorKind::Unknown { code: 0x42 }),
            "YHR_DEVICE_UNKNOWN_0x42"
        );
    }

    #[test]
    fn chains_are_said_once() {
        let e = from_device(device::ErrorKind::ObjectNotFound);
        let shown = chain(&e);
        assert_eq!(shown.matches("object not found").count(), 1, "{shown}");
    }

    #[test]
    fn lost_sessions_are_recognized() {
        assert!(session_lost(&from_device(
            device::ErrorKind::InvalidSession
        )));
        assert!(!session_lost(&from_device(
            device::ErrorKind::ObjectNotFound
        )));
        assert!(!session_lost(&from_device(
            device::ErrorKind::InsufficientPermissions
        )));
    }
}
