//! The one error type of the token: every failure maps to exactly one `CKR_` return value.
//!
//! Messages never contain secrets (PINs, key material): the variants carry only codes and
//! static descriptions.

use cryptoki_sys as ck;
use cryptoki_sys::CK_RV;

/// A PKCS#11 failure, named after its `CKR_` code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
#[allow(missing_docs)] // each variant is the CKR_ code of the same name
pub enum Error {
    #[error("CKR_ACTION_PROHIBITED")]
    ActionProhibited,
    #[error("CKR_ARGUMENTS_BAD")]
    ArgumentsBad,
    #[error("CKR_ATTRIBUTE_READ_ONLY")]
    AttributeReadOnly,
    #[error("CKR_ATTRIBUTE_SENSITIVE")]
    AttributeSensitive,
    #[error("CKR_ATTRIBUTE_TYPE_INVALID")]
    AttributeTypeInvalid,
    #[error("CKR_ATTRIBUTE_VALUE_INVALID")]
    AttributeValueInvalid,
    #[error("CKR_BUFFER_TOO_SMALL (need {0} bytes)")]
    BufferTooSmall(usize),
    #[error("CKR_CRYPTOKI_NOT_INITIALIZED")]
    CryptokiNotInitialized,
    #[error("CKR_CRYPTOKI_ALREADY_INITIALIZED")]
    CryptokiAlreadyInitialized,
    #[error("CKR_DATA_LEN_RANGE")]
    DataLenRange,
    #[error("CKR_DEVICE_ERROR: {0}")]
    DeviceError(&'static str),
    #[error("CKR_DEVICE_REMOVED")]
    DeviceRemoved,
    #[error("CKR_DOMAIN_PARAMS_INVALID")]
    DomainParamsInvalid,
    #[error("CKR_FUNCTION_FAILED: {0}")]
    FunctionFailed(&'static str),
    #[error("CKR_FUNCTION_NOT_SUPPORTED")]
    FunctionNotSupported,
    #[error("CKR_KEY_FUNCTION_NOT_PERMITTED")]
    KeyFunctionNotPermitted,
    #[error("CKR_KEY_HANDLE_INVALID")]
    KeyHandleInvalid,
    #[error("CKR_KEY_TYPE_INCONSISTENT")]
    KeyTypeInconsistent,
    #[error("CKR_MECHANISM_INVALID")]
    MechanismInvalid,
    #[error("CKR_MECHANISM_PARAM_INVALID")]
    MechanismParamInvalid,
    #[error("CKR_OBJECT_HANDLE_INVALID")]
    ObjectHandleInvalid,
    #[error("CKR_OPERATION_ACTIVE")]
    OperationActive,
    #[error("CKR_OPERATION_NOT_INITIALIZED")]
    OperationNotInitialized,
    #[error("CKR_PIN_INCORRECT")]
    PinIncorrect,
    #[error("CKR_PIN_LEN_RANGE")]
    PinLenRange,
    #[error("CKR_PIN_LOCKED")]
    PinLocked,
    #[error("CKR_SESSION_CLOSED")]
    SessionClosed,
    #[error("CKR_SESSION_COUNT")]
    SessionCount,
    #[error("CKR_SESSION_EXISTS")]
    SessionExists,
    #[error("CKR_SESSION_HANDLE_INVALID")]
    SessionHandleInvalid,
    #[error("CKR_SESSION_PARALLEL_NOT_SUPPORTED")]
    SessionParallelNotSupported,
    #[error("CKR_SESSION_READ_ONLY")]
    SessionReadOnly,
    #[error("CKR_SESSION_READ_ONLY_EXISTS")]
    SessionReadOnlyExists,
    #[error("CKR_SESSION_READ_WRITE_SO_EXISTS")]
    SessionReadWriteSoExists,
    #[error("CKR_SIGNATURE_INVALID")]
    SignatureInvalid,
    #[error("CKR_SIGNATURE_LEN_RANGE")]
    SignatureLenRange,
    #[error("CKR_SLOT_ID_INVALID")]
    SlotIdInvalid,
    #[error("CKR_TEMPLATE_INCOMPLETE")]
    TemplateIncomplete,
    #[error("CKR_TEMPLATE_INCONSISTENT")]
    TemplateInconsistent,
    #[error("CKR_TOKEN_NOT_PRESENT")]
    TokenNotPresent,
    #[error("CKR_TOKEN_NOT_RECOGNIZED")]
    TokenNotRecognized,
    #[error("CKR_USER_ALREADY_LOGGED_IN")]
    UserAlreadyLoggedIn,
    #[error("CKR_USER_ANOTHER_ALREADY_LOGGED_IN")]
    UserAnotherAlreadyLoggedIn,
    #[error("CKR_USER_NOT_LOGGED_IN")]
    UserNotLoggedIn,
    #[error("CKR_USER_PIN_NOT_INITIALIZED")]
    UserPinNotInitialized,
    #[error("CKR_USER_TYPE_INVALID")]
    UserTypeInvalid,
    #[error("CKR_WRAPPED_KEY_INVALID")]
    WrappedKeyInvalid,
    /// A return value chosen by the fault-injection configuration.
    #[error("injected fault CKR {0:#x}")]
    Injected(CK_RV),
}

impl Error {
    /// The `CKR_` value this error is returned as.
    pub fn rv(&self) -> CK_RV {
        match self {
            Error::ActionProhibited => ck::CKR_ACTION_PROHIBITED,
            Error::ArgumentsBad => ck::CKR_ARGUMENTS_BAD,
            Error::AttributeReadOnly => ck::CKR_ATTRIBUTE_READ_ONLY,
            Error::AttributeSensitive => ck::CKR_ATTRIBUTE_SENSITIVE,
            Error::AttributeTypeInvalid => ck::CKR_ATTRIBUTE_TYPE_INVALID,
            Error::AttributeValueInvalid => ck::CKR_ATTRIBUTE_VALUE_INVALID,
            Error::BufferTooSmall(_) => ck::CKR_BUFFER_TOO_SMALL,
            Error::CryptokiNotInitialized => ck::CKR_CRYPTOKI_NOT_INITIALIZED,
            Error::CryptokiAlreadyInitialized => ck::CKR_CRYPTOKI_ALREADY_INITIALIZED,
            Error::DataLenRange => ck::CKR_DATA_LEN_RANGE,
            Error::DeviceError(_) => ck::CKR_DEVICE_ERROR,
            Error::DeviceRemoved => ck::CKR_DEVICE_REMOVED,
            Error::DomainParamsInvalid => ck::CKR_DOMAIN_PARAMS_INVALID,
            Error::FunctionFailed(_) => ck::CKR_FUNCTION_FAILED,
            Error::FunctionNotSupported => ck::CKR_FUNCTION_NOT_SUPPORTED,
            Error::KeyFunctionNotPermitted => ck::CKR_KEY_FUNCTION_NOT_PERMITTED,
            Error::KeyHandleInvalid => ck::CKR_KEY_HANDLE_INVALID,
            Error::KeyTypeInconsistent => ck::CKR_KEY_TYPE_INCONSISTENT,
            Error::MechanismInvalid => ck::CKR_MECHANISM_INVALID,
            Error::MechanismParamInvalid => ck::CKR_MECHANISM_PARAM_INVALID,
            Error::ObjectHandleInvalid => ck::CKR_OBJECT_HANDLE_INVALID,
            Error::OperationActive => ck::CKR_OPERATION_ACTIVE,
            Error::OperationNotInitialized => ck::CKR_OPERATION_NOT_INITIALIZED,
            Error::PinIncorrect => ck::CKR_PIN_INCORRECT,
            Error::PinLenRange => ck::CKR_PIN_LEN_RANGE,
            Error::PinLocked => ck::CKR_PIN_LOCKED,
            Error::SessionClosed => ck::CKR_SESSION_CLOSED,
            Error::SessionCount => ck::CKR_SESSION_COUNT,
            Error::SessionExists => ck::CKR_SESSION_EXISTS,
            Error::SessionHandleInvalid => ck::CKR_SESSION_HANDLE_INVALID,
            Error::SessionParallelNotSupported => ck::CKR_SESSION_PARALLEL_NOT_SUPPORTED,
            Error::SessionReadOnly => ck::CKR_SESSION_READ_ONLY,
            Error::SessionReadOnlyExists => ck::CKR_SESSION_READ_ONLY_EXISTS,
            Error::SessionReadWriteSoExists => ck::CKR_SESSION_READ_WRITE_SO_EXISTS,
            Error::SignatureInvalid => ck::CKR_SIGNATURE_INVALID,
            Error::SignatureLenRange => ck::CKR_SIGNATURE_LEN_RANGE,
            Error::SlotIdInvalid => ck::CKR_SLOT_ID_INVALID,
            Error::TemplateIncomplete => ck::CKR_TEMPLATE_INCOMPLETE,
            Error::TemplateInconsistent => ck::CKR_TEMPLATE_INCONSISTENT,
            Error::TokenNotPresent => ck::CKR_TOKEN_NOT_PRESENT,
            Error::TokenNotRecognized => ck::CKR_TOKEN_NOT_RECOGNIZED,
            Error::UserAlreadyLoggedIn => ck::CKR_USER_ALREADY_LOGGED_IN,
            Error::UserAnotherAlreadyLoggedIn => ck::CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
            Error::UserNotLoggedIn => ck::CKR_USER_NOT_LOGGED_IN,
            Error::UserPinNotInitialized => ck::CKR_USER_PIN_NOT_INITIALIZED,
            Error::UserTypeInvalid => ck::CKR_USER_TYPE_INVALID,
            Error::WrappedKeyInvalid => ck::CKR_WRAPPED_KEY_INVALID,
            Error::Injected(rv) => *rv,
        }
    }

    /// Parses a `CKR_` name (as written in a fault configuration) into its value.
    pub fn rv_from_name(name: &str) -> Option<CK_RV> {
        let rv = match name {
            "CKR_GENERAL_ERROR" => ck::CKR_GENERAL_ERROR,
            "CKR_FUNCTION_FAILED" => ck::CKR_FUNCTION_FAILED,
            "CKR_DEVICE_ERROR" => ck::CKR_DEVICE_ERROR,
            "CKR_DEVICE_MEMORY" => ck::CKR_DEVICE_MEMORY,
            "CKR_DEVICE_REMOVED" => ck::CKR_DEVICE_REMOVED,
            "CKR_HOST_MEMORY" => ck::CKR_HOST_MEMORY,
            "CKR_SESSION_HANDLE_INVALID" => ck::CKR_SESSION_HANDLE_INVALID,
            "CKR_SESSION_CLOSED" => ck::CKR_SESSION_CLOSED,
            "CKR_SESSION_COUNT" => ck::CKR_SESSION_COUNT,
            "CKR_TOKEN_NOT_PRESENT" => ck::CKR_TOKEN_NOT_PRESENT,
            "CKR_USER_NOT_LOGGED_IN" => ck::CKR_USER_NOT_LOGGED_IN,
            "CKR_FUNCTION_CANCELED" => ck::CKR_FUNCTION_CANCELED,
            "CKR_OPERATION_ACTIVE" => ck::CKR_OPERATION_ACTIVE,
            "CKR_KEY_HANDLE_INVALID" => ck::CKR_KEY_HANDLE_INVALID,
            "CKR_PIN_INCORRECT" => ck::CKR_PIN_INCORRECT,
            _ => {
                let hex = name
                    .strip_prefix("0x")
                    .or_else(|| name.strip_prefix("0X"))?;
                return CK_RV::from_str_radix(hex, 16).ok();
            }
        };
        Some(rv)
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
