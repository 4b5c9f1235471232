//! TSS2 / TPM 2.0 response codes, decoded to the names in the specifications.
//!
//! A TSS2 return code carries its layer in bits 16..24 (0 = the TPM itself, 7 = ESAPI,
//! 10 = TCTI, …) and a TPM response code in the low bits, in one of two formats (TPM 2.0
//! Part 2, 6.6): format zero (`TPM_RC_VER1 + n` errors and `TPM_RC_WARN + n` warnings) and
//! format one (`TPM_RC_FMT1 + n`, with the handle, session or parameter number it refers to).

use core::fmt;

use tss_esapi::constants::response_code::Tss2ResponseCode;

/// A decoded TSS2 return code.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ResponseCode(u32);

/// What a caller can do about a response code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// The TPM asks to send the same command again (`TPM_RC_RETRY`, `TPM_RC_YIELDED`,
    /// `TPM_RC_TESTING`, `TPM_RC_NV_RATE`…).
    Retry,
    /// The TPM is in dictionary-attack lockout.
    Lockout,
    /// An authorization value was refused.
    BadAuth,
    /// The TPM is out of transient object slots.
    ObjectMemory,
    /// The TPM (or the link to it) cannot be reached.
    Unreachable,
    /// A key blob does not belong to this TPM / parent.
    ForeignBlob,
    /// Anything else.
    Other,
}

const LAYER_TPM: u32 = 0;
const LAYER_FEATURE: u32 = 6;
const LAYER_ESYS: u32 = 7;
const LAYER_SYS: u32 = 8;
const LAYER_MU: u32 = 9;
const LAYER_TCTI: u32 = 10;
const LAYER_RESMGR: u32 = 11;
const LAYER_RESMGR_TPM: u32 = 12;

const RC_FMT1: u32 = 0x080;
const RC_WARN: u32 = 0x900;

impl ResponseCode {
    /// Wraps a raw TSS2_RC.
    pub const fn new(raw: u32) -> Self {
        Self(raw)
    }

    /// The raw value.
    pub const fn raw(self) -> u32 {
        self.0
    }

    fn layer(self) -> u32 {
        (self.0 >> 16) & 0xff
    }

    /// The TPM response code without layer and without the handle/session/parameter number,
    /// when the code comes from a TPM (directly or through a resource manager).
    fn tpm_base(self) -> Option<u32> {
        match self.layer() {
            LAYER_TPM | LAYER_RESMGR_TPM => {
                let rc = self.0 & 0xffff;
                if rc & RC_FMT1 != 0 {
                    Some(RC_FMT1 | (rc & 0x3f))
                } else {
                    Some(rc & 0xfff)
                }
            }
            _ => None,
        }
    }

    /// For format-one codes: which handle, session or parameter the TPM complains about.
    fn fmt1_subject(self) -> Option<String> {
        let rc = self.0 & 0xffff;
        if self.tpm_base().is_none() || rc & RC_FMT1 == 0 {
            return None;
        }
        let n = (rc >> 8) & 0xf;
        if rc & 0x40 != 0 {
            Some(format!("parameter {n}"))
        } else if n == 0 {
            None
        } else if n < 8 {
            Some(format!("handle {n}"))
        } else {
            Some(format!("session {}", n - 8))
        }
    }

    /// The specification's name: `TPM_RC_LOCKOUT`, `TSS2_ESYS_RC_BAD_REFERENCE`, …
    pub fn name(self) -> String {
        if let Some(base) = self.tpm_base() {
            return tpm_name(base)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("TPM_RC_{base:#05x}"));
        }
        let prefix = match self.layer() {
            LAYER_FEATURE => "TSS2_FEATURE_RC",
            LAYER_ESYS => "TSS2_ESYS_RC",
            LAYER_SYS => "TSS2_SYS_RC",
            LAYER_MU => "TSS2_MU_RC",
            LAYER_TCTI => "TSS2_TCTI_RC",
            LAYER_RESMGR => "TSS2_RESMGR_RC",
            _ => "TSS2_RC",
        };
        match base_name(self.0 & 0xffff) {
            Some(n) => format!("{prefix}_{n}"),
            None => format!("{prefix}_{:#x}", self.0 & 0xffff),
        }
    }

    /// How to react to it.
    pub fn class(self) -> Class {
        match self.tpm_base() {
            Some(b) if b == RC_WARN + 0x22 || b == RC_WARN + 0x08 || b == RC_WARN + 0x0a => {
                Class::Retry
            }
            Some(b) if b == RC_WARN + 0x20 || b == RC_WARN + 0x23 => Class::Retry,
            Some(b) if b == RC_WARN + 0x21 => Class::Lockout,
            Some(b) if b == RC_WARN + 0x02 || b == RC_WARN + 0x06 => Class::ObjectMemory,
            Some(b) if b == RC_FMT1 + 0x22 || b == RC_FMT1 + 0x0e => Class::BadAuth,
            Some(b) if b == RC_FMT1 + 0x1f || b == RC_FMT1 + 0x05 => Class::ForeignBlob,
            Some(_) => Class::Other,
            None => match self.0 & 0xffff {
                // NO_CONNECTION, IO_ERROR, TRY_AGAIN from the TCTI or below.
                8..=10 if self.layer() == LAYER_TCTI || self.layer() == LAYER_ESYS => {
                    Class::Unreachable
                }
                _ => Class::Other,
            },
        }
    }
}

impl fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:#010x}", self.name(), self.0)?;
        if let Some(s) = self.fmt1_subject() {
            write!(f, ", {s}")?;
        }
        f.write_str(")")
    }
}

impl fmt::Debug for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResponseCode({self})")
    }
}

/// The raw code inside a tss-esapi error, when it has one.
pub(crate) fn from_esapi(e: &tss_esapi::Error) -> Option<ResponseCode> {
    match e {
        // tss-esapi 7 keeps the raw value private; the formats' Display is
        // "Response code value: 0x…".
        tss_esapi::Error::Tss2Error(code) => {
            let shown = match code {
                Tss2ResponseCode::Success => return Some(ResponseCode(0)),
                Tss2ResponseCode::FormatZero(rc) => rc.to_string(),
                Tss2ResponseCode::FormatOne(rc) => rc.to_string(),
            };
            let hex = shown.rsplit("0x").next()?;
            u32::from_str_radix(hex.trim(), 16).ok().map(ResponseCode)
        }
        tss_esapi::Error::WrapperError(_) => None,
    }
}

fn tpm_name(base: u32) -> Option<&'static str> {
    Some(match base {
        0x000 => "TPM_RC_SUCCESS",
        0x01e => "TPM_RC_BAD_TAG",
        // Format zero, errors.
        0x100 => "TPM_RC_INITIALIZE",
        0x101 => "TPM_RC_FAILURE",
        0x103 => "TPM_RC_SEQUENCE",
        0x10b => "TPM_RC_PRIVATE",
        0x119 => "TPM_RC_HMAC",
        0x120 => "TPM_RC_DISABLED",
        0x121 => "TPM_RC_EXCLUSIVE",
        0x124 => "TPM_RC_AUTH_TYPE",
        0x125 => "TPM_RC_AUTH_MISSING",
        0x126 => "TPM_RC_POLICY",
        0x127 => "TPM_RC_PCR",
        0x128 => "TPM_RC_PCR_CHANGED",
        0x12d => "TPM_RC_UPGRADE",
        0x12e => "TPM_RC_TOO_MANY_CONTEXTS",
        0x12f => "TPM_RC_AUTH_UNAVAILABLE",
        0x130 => "TPM_RC_REBOOT",
        0x131 => "TPM_RC_UNBALANCED",
        0x142 => "TPM_RC_COMMAND_SIZE",
        0x143 => "TPM_RC_COMMAND_CODE",
        0x144 => "TPM_RC_AUTHSIZE",
        0x145 => "TPM_RC_AUTH_CONTEXT",
        0x146 => "TPM_RC_NV_RANGE",
        0x147 => "TPM_RC_NV_SIZE",
        0x148 => "TPM_RC_NV_LOCKED",
        0x149 => "TPM_RC_NV_AUTHORIZATION",
        0x14a => "TPM_RC_NV_UNINITIALIZED",
        0x14b => "TPM_RC_NV_SPACE",
        0x14c => "TPM_RC_NV_DEFINED",
        0x150 => "TPM_RC_BAD_CONTEXT",
        0x151 => "TPM_RC_CPHASH",
        0x152 => "TPM_RC_PARENT",
        0x153 => "TPM_RC_NEEDS_TEST",
        0x154 => "TPM_RC_NO_RESULT",
        0x155 => "TPM_RC_SENSITIVE",
        // Format one.
        0x081 => "TPM_RC_ASYMMETRIC",
        0x082 => "TPM_RC_ATTRIBUTES",
        0x083 => "TPM_RC_HASH",
        0x084 => "TPM_RC_VALUE",
        0x085 => "TPM_RC_HIERARCHY",
        0x087 => "TPM_RC_KEY_SIZE",
        0x088 => "TPM_RC_MGF",
        0x089 => "TPM_RC_MODE",
        0x08a => "TPM_RC_TYPE",
        0x08b => "TPM_RC_HANDLE",
        0x08c => "TPM_RC_KDF",
        0x08d => "TPM_RC_RANGE",
        0x08e => "TPM_RC_AUTH_FAIL",
        0x08f => "TPM_RC_NONCE",
        0x090 => "TPM_RC_PP",
        0x092 => "TPM_RC_SCHEME",
        0x095 => "TPM_RC_SIZE",
        0x096 => "TPM_RC_SYMMETRIC",
        0x097 => "TPM_RC_TAG",
        0x098 => "TPM_RC_SELECTOR",
        0x09a => "TPM_RC_INSUFFICIENT",
        0x09b => "TPM_RC_SIGNATURE",
        0x09c => "TPM_RC_KEY",
        0x09d => "TPM_RC_POLICY_FAIL",
        0x09f => "TPM_RC_INTEGRITY",
        0x0a0 => "TPM_RC_TICKET",
        0x0a1 => "TPM_RC_RESERVED_BITS",
        0x0a2 => "TPM_RC_BAD_AUTH",
        0x0a3 => "TPM_RC_EXPIRED",
        0x0a4 => "TPM_RC_POLICY_CC",
        0x0a5 => "TPM_RC_BINDING",
        0x0a6 => "TPM_RC_CURVE",
        0x0a7 => "TPM_RC_ECC_POINT",
        // Format zero, warnings.
        0x901 => "TPM_RC_CONTEXT_GAP",
        0x902 => "TPM_RC_OBJECT_MEMORY",
        0x903 => "TPM_RC_SESSION_MEMORY",
        0x904 => "TPM_RC_MEMORY",
        0x905 => "TPM_RC_SESSION_HANDLES",
        0x906 => "TPM_RC_OBJECT_HANDLES",
        0x907 => "TPM_RC_LOCALITY",
        0x908 => "TPM_RC_YIELDED",
        0x909 => "TPM_RC_CANCELED",
        0x90a => "TPM_RC_TESTING",
        0x910 => "TPM_RC_REFERENCE_H0",
        0x911 => "TPM_RC_REFERENCE_H1",
        0x912 => "TPM_RC_REFERENCE_H2",
        0x918 => "TPM_RC_REFERENCE_S0",
        0x920 => "TPM_RC_NV_RATE",
        0x921 => "TPM_RC_LOCKOUT",
        0x922 => "TPM_RC_RETRY",
        0x923 => "TPM_RC_NV_UNAVAILABLE",
        _ => return None,
    })
}

fn base_name(n: u32) -> Option<&'static str> {
    Some(match n {
        1 => "GENERAL_FAILURE",
        2 => "NOT_IMPLEMENTED",
        3 => "BAD_CONTEXT",
        4 => "ABI_MISMATCH",
        5 => "BAD_REFERENCE",
        6 => "INSUFFICIENT_BUFFER",
        7 => "BAD_SEQUENCE",
        8 => "NO_CONNECTION",
        9 => "TRY_AGAIN",
        10 => "IO_ERROR",
        11 => "BAD_VALUE",
        12 => "NOT_PERMITTED",
        13 => "INVALID_SESSIONS",
        14 => "NO_DECRYPT_PARAM",
        15 => "NO_ENCRYPT_PARAM",
        16 => "BAD_SIZE",
        17 => "MALFORMED_RESPONSE",
        18 => "INSUFFICIENT_CONTEXT",
        19 => "INSUFFICIENT_RESPONSE",
        20 => "INCOMPATIBLE_TCTI",
        21 => "NOT_SUPPORTED",
        22 => "BAD_TCTI_STRUCTURE",
        23 => "MEMORY",
        24 => "BAD_TR",
        25 => "MULTIPLE_DECRYPT_SESSIONS",
        26 => "MULTIPLE_ENCRYPT_SESSIONS",
        27 => "RSP_AUTH_FAILED",
        28 => "NO_CONFIG",
        29 => "BAD_PATH",
        30 => "NOT_DELETABLE",
        31 => "PATH_ALREADY_EXISTS",
        32 => "KEY_NOT_FOUND",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_tpm_codes_in_both_formats() {
        assert_eq!(ResponseCode::new(0x921).name(), "TPM_RC_LOCKOUT");
        assert_eq!(ResponseCode::new(0x902).name(), "TPM_RC_OBJECT_MEMORY");
        assert_eq!(ResponseCode::new(0x922).class(), Class::Retry);
        assert_eq!(ResponseCode::new(0x908).class(), Class::Retry);
        assert_eq!(ResponseCode::new(0x90a).class(), Class::Retry);
        assert_eq!(ResponseCode::new(0x921).class(), Class::Lockout);
        // TPM_RC_INTEGRITY on parameter 1: 0x9f | 0x40 | 1 << 8.
        let integrity = ResponseCode::new(0x1df);
        assert_eq!(integrity.name(), "TPM_RC_INTEGRITY");
        assert_eq!(integrity.class(), Class::ForeignBlob);
        assert_eq!(
            integrity.to_string(),
            "TPM_RC_INTEGRITY (0x000001df, parameter 1)"
        );
        // TPM_RC_BAD_AUTH on the first session: 0xa2 | (8 + 1) << 8.
        let bad_auth = ResponseCode::new(0x9a2);
        assert_eq!(bad_auth.name(), "TPM_RC_BAD_AUTH");
        assert_eq!(bad_auth.class(), Class::BadAuth);
        assert!(bad_auth.to_string().contains("session 1"));
        // Through the resource manager layer.
        assert_eq!(
            ResponseCode::new(0x000c_0902).name(),
            "TPM_RC_OBJECT_MEMORY"
        );
    }

    #[test]
    fn names_tss_layers() {
        let io = ResponseCode::new(0x000a_000a);
        assert_eq!(io.name(), "TSS2_TCTI_RC_IO_ERROR");
        assert_eq!(io.class(), Class::Unreachable);
        assert_eq!(
            ResponseCode::new(0x0007_0005).name(),
            "TSS2_ESYS_RC_BAD_REFERENCE"
        );
        assert_eq!(ResponseCode::new(0x0007_0999).name(), "TSS2_ESYS_RC_0x999");
    }
}
