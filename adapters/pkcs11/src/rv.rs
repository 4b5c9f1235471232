//! PKCS#11 return values: their names, which ones a fresh session cures, and what they mean
//! to a vault caller.

use cryptoki::context::Function;
use cryptoki::error::{Error as CkError, RvError};
use keywarden_vault::Error as VaultError;

/// `RvError::SessionHandleInvalid` → `CKR_SESSION_HANDLE_INVALID`.
pub(crate) fn ckr_name(rv: RvError) -> String {
    format!("CKR_{}", screaming(&format!("{rv:?}")))
}

/// `Function::Sign` → `C_Sign`.
pub(crate) fn function_name(f: Function) -> String {
    format!("C_{f:?}")
}

fn screaming(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// The return value inside a cryptoki error, if it came from the module.
pub(crate) fn rv_of(e: &CkError) -> Option<RvError> {
    match e {
        CkError::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

/// True when the session (or the login state) is gone and a new, logged-in session may cure it.
pub(crate) fn needs_new_session(e: &CkError) -> bool {
    matches!(
        rv_of(e),
        Some(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::UserNotLoggedIn
                | RvError::TokenNotPresent
        )
    )
}

/// True when the cached object handle no longer names the object.
pub(crate) fn handle_invalid(e: &CkError) -> bool {
    matches!(
        rv_of(e),
        Some(RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid)
    )
}

/// Maps a cryptoki error to a vault error; `doing` says what the adapter was doing
/// (e.g. "sign with key 0a1b…").
pub(crate) fn to_vault(e: &CkError, doing: &str) -> VaultError {
    let Some(rv) = rv_of(e) else {
        return VaultError::backend("pkcs11", "CRYPTOKI", format!("{doing}: {e}"));
    };
    let code = ckr_name(rv);
    let function = match e {
        CkError::Pkcs11(_, f) => function_name(*f),
        _ => String::new(),
    };
    let msg = format!("{doing}: {function} returned {code}");
    match rv {
        RvError::PinIncorrect
        | RvError::PinInvalid
        | RvError::PinLenRange
        | RvError::PinExpired => VaultError::AuthenticationFailed(msg),
        RvError::PinLocked => VaultError::AuthenticationFailed(format!(
            "{msg}: the user PIN is locked; the security officer must reset it"
        )),
        RvError::DeviceRemoved
        | RvError::TokenNotPresent
        | RvError::DeviceError
        | RvError::SessionCount
        | RvError::SessionHandleInvalid
        | RvError::SessionClosed
        | RvError::CryptokiNotInitialized => VaultError::DeviceUnavailable(msg),
        RvError::KeyFunctionNotPermitted | RvError::UserNotLoggedIn => {
            VaultError::PermissionDenied(msg)
        }
        RvError::MechanismInvalid
        | RvError::MechanismParamInvalid
        | RvError::KeyTypeInconsistent
        | RvError::CurveNotSupported => VaultError::UnsupportedAlgorithm(msg),
        RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid => VaultError::KeyNotFound(msg),
        RvError::DataLenRange | RvError::DataInvalid => VaultError::InvalidInput(msg),
        _ => VaultError::backend("pkcs11", code, format!("{doing}: {function} failed")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_standard() {
        assert_eq!(
            ckr_name(RvError::SessionHandleInvalid),
            "CKR_SESSION_HANDLE_INVALID"
        );
        assert_eq!(ckr_name(RvError::UserNotLoggedIn), "CKR_USER_NOT_LOGGED_IN");
        assert_eq!(ckr_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(function_name(Function::Sign), "C_Sign");
    }

    #[test]
    fn recovery_classes() {
        let e = |rv| CkError::Pkcs11(rv, Function::Sign);
        assert!(needs_new_session(&e(RvError::DeviceRemoved)));
        assert!(needs_new_session(&e(RvError::SessionHandleInvalid)));
        assert!(!needs_new_session(&e(RvError::PinIncorrect)));
        assert!(handle_invalid(&e(RvError::KeyHandleInvalid)));
        assert!(matches!(
            to_vault(&e(RvError::DeviceRemoved), "sign"),
            VaultError::DeviceUnavailable(m) if m.contains("CKR_DEVICE_REMOVED")
        ));
        assert!(matches!(
            to_vault(&e(RvError::PinIncorrect), "login"),
            VaultError::AuthenticationFailed(_)
        ));
        assert!(matches!(
            to_vault(&e(RvError::GeneralError), "sign"),
            VaultError::Backend { code, .. } if code == "CKR_GENERAL_ERROR"
        ));
    }
}
