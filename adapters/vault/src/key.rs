//! How keys are asked for and named.

use core::fmt;
use std::collections::BTreeMap;

use crate::algorithm::Algorithm;
use crate::error::{Error, Result};
use crate::limits::check_label;
use crate::public_key::PublicKey;

/// A backend's reference to one key: opaque bytes the backend chose (a PKCS#11 `CKA_ID`, a
/// TPM key blob name, a YubiHSM object id). It names the key; it grants nothing by itself.
///
/// Displayed and parsed as lower-case hex.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyRef(Vec<u8>);

/// The longest [`KeyRef`] accepted: 64 bytes.
const MAX_KEY_REF_LEN: usize = 64;

impl KeyRef {
    /// Wraps a backend's reference bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// The reference bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Parses the hex form that [`Display`](fmt::Display) prints.
    pub fn from_hex(s: &str) -> Result<Self> {
        let bytes = hex::decode(s)
            .map_err(|e| Error::InvalidInput(format!("key reference {s:?} is not hex: {e}")))?;
        if bytes.is_empty() || bytes.len() > MAX_KEY_REF_LEN {
            return Err(Error::InvalidInput(format!(
                "key reference must be 1 to {MAX_KEY_REF_LEN} bytes, got {}",
                bytes.len()
            )));
        }
        Ok(Self(bytes))
    }
}

impl fmt::Display for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Debug for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyRef({self})")
    }
}

/// What to generate: an algorithm, a label, and free-form attributes the backend may record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySpec {
    algorithm: Algorithm,
    label: String,
    attributes: BTreeMap<String, String>,
}

impl KeySpec {
    /// A spec for one key. The label is checked with [`check_label`].
    pub fn new(algorithm: Algorithm, label: impl Into<String>) -> Result<Self> {
        let label = label.into();
        check_label(&label)?;
        Ok(Self {
            algorithm,
            label,
            attributes: BTreeMap::new(),
        })
    }

    /// Adds an attribute (key and value are free-form text; backends that cannot store them
    /// ignore them, the key service keeps them in its registry).
    pub fn with_attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(key.into(), value.into());
        self
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The attributes.
    pub fn attributes(&self) -> &BTreeMap<String, String> {
        &self.attributes
    }
}

/// What a backend knows about one of its keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// The backend's reference.
    pub key_ref: KeyRef,
    /// The key's algorithm.
    pub algorithm: Algorithm,
    /// The key's label.
    pub label: String,
    /// The key's public half.
    pub public_key: PublicKey,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ref_hex_round_trip() {
        let r = KeyRef::new(vec![0xde, 0xad, 0x01]);
        assert_eq!(r.to_string(), "dead01");
        assert_eq!(format!("{r:?}"), "KeyRef(dead01)");
        assert_eq!(KeyRef::from_hex("dead01").unwrap(), r);
    }

    #[test]
    fn key_ref_rejects_bad_hex_and_sizes() {
        assert!(
            KeyRef::from_hex("zz")
                .unwrap_err()
                .to_string()
                .contains("not hex")
        );
        assert!(KeyRef::from_hex("").is_err());
        assert!(KeyRef::from_hex(&"00".repeat(65)).is_err());
    }

    #[test]
    fn spec_checks_label() {
        assert!(KeySpec::new(Algorithm::EcdhP256, "").is_err());
        let spec = KeySpec::new(Algorithm::EcdhP256, "chan")
            .unwrap()
            .with_attribute("team", "payments");
        assert_eq!(
            spec.attributes().get("team").map(String::as_str),
            Some("payments")
        );
    }
}
