//! Attribute values as PKCS#11 stores them: raw bytes keyed by `CKA_` type, with typed helpers.

use std::collections::BTreeMap;

use cryptoki_sys::{CK_ATTRIBUTE_TYPE, CK_ULONG};

use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// One attribute of a template passed in by the caller.
#[derive(Clone, PartialEq, Eq)]
pub struct Attr {
    /// The `CKA_` type.
    pub ty: CK_ATTRIBUTE_TYPE,
    /// The raw value, as laid out in C (`CK_BBOOL` is one byte, `CK_ULONG` native-endian).
    /// Zeroized on drop: a template may carry key material (`CKA_VALUE` of an import).
    pub value: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Attr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values may be key material (CKA_VALUE of an imported key): print only type and length.
        write!(f, "Attr({:#x}, {} bytes)", self.ty, self.value.len())
    }
}

impl Attr {
    /// A `CK_BBOOL` attribute.
    pub fn bool(ty: CK_ATTRIBUTE_TYPE, v: bool) -> Self {
        Attr {
            ty,
            value: Zeroizing::new(vec![u8::from(v)]),
        }
    }
    /// A `CK_ULONG` attribute.
    pub fn ulong(ty: CK_ATTRIBUTE_TYPE, v: CK_ULONG) -> Self {
        Attr {
            ty,
            value: Zeroizing::new(v.to_ne_bytes().to_vec()),
        }
    }
    /// A byte-array attribute.
    pub fn bytes(ty: CK_ATTRIBUTE_TYPE, v: &[u8]) -> Self {
        Attr {
            ty,
            value: Zeroizing::new(v.to_vec()),
        }
    }
}

/// A caller's template: a list of attributes, in order.
pub type Template = Vec<Attr>;

/// Decodes a `CK_BBOOL` value.
pub fn decode_bool(v: &[u8]) -> Result<bool> {
    match v {
        [b] => Ok(*b != 0),
        _ => Err(Error::AttributeValueInvalid),
    }
}

/// Decodes a `CK_ULONG` value.
pub fn decode_ulong(v: &[u8]) -> Result<CK_ULONG> {
    let arr: [u8; std::mem::size_of::<CK_ULONG>()] =
        v.try_into().map_err(|_| Error::AttributeValueInvalid)?;
    Ok(CK_ULONG::from_ne_bytes(arr))
}

/// Looks an attribute up in a template (the last occurrence wins).
pub fn find(template: &[Attr], ty: CK_ATTRIBUTE_TYPE) -> Option<&[u8]> {
    template
        .iter()
        .rev()
        .find(|a| a.ty == ty)
        .map(|a| a.value.as_slice())
}

/// A template's boolean attribute, if present.
pub fn find_bool(template: &[Attr], ty: CK_ATTRIBUTE_TYPE) -> Result<Option<bool>> {
    find(template, ty).map(decode_bool).transpose()
}

/// A template's `CK_ULONG` attribute, if present.
pub fn find_ulong(template: &[Attr], ty: CK_ATTRIBUTE_TYPE) -> Result<Option<CK_ULONG>> {
    find(template, ty).map(decode_ulong).transpose()
}

/// The non-secret attributes of an object.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AttrMap(pub BTreeMap<CK_ATTRIBUTE_TYPE, Vec<u8>>);

impl std::fmt::Debug for AttrMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.keys().map(|k| format!("{k:#x}")))
            .finish()
    }
}

impl AttrMap {
    /// Sets a raw value.
    pub fn set(&mut self, ty: CK_ATTRIBUTE_TYPE, v: Vec<u8>) {
        self.0.insert(ty, v);
    }
    /// Sets a boolean.
    pub fn set_bool(&mut self, ty: CK_ATTRIBUTE_TYPE, v: bool) {
        self.0.insert(ty, vec![u8::from(v)]);
    }
    /// Sets a `CK_ULONG`.
    pub fn set_ulong(&mut self, ty: CK_ATTRIBUTE_TYPE, v: CK_ULONG) {
        self.0.insert(ty, v.to_ne_bytes().to_vec());
    }
    /// A raw value.
    pub fn get(&self, ty: CK_ATTRIBUTE_TYPE) -> Option<&[u8]> {
        self.0.get(&ty).map(Vec::as_slice)
    }
    /// A boolean, false when absent or malformed.
    pub fn get_bool(&self, ty: CK_ATTRIBUTE_TYPE) -> bool {
        self.get(ty)
            .and_then(|v| decode_bool(v).ok())
            .unwrap_or(false)
    }
    /// A `CK_ULONG`, if present and well-formed.
    pub fn get_ulong(&self, ty: CK_ATTRIBUTE_TYPE) -> Option<CK_ULONG> {
        self.get(ty).and_then(|v| decode_ulong(v).ok())
    }
    /// Whether the attribute is present.
    pub fn has(&self, ty: CK_ATTRIBUTE_TYPE) -> bool {
        self.0.contains_key(&ty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki_sys::{CKA_LABEL, CKA_SIGN, CKA_VALUE_LEN};

    #[test]
    fn typed_round_trip() {
        let t = vec![
            Attr::bool(CKA_SIGN, true),
            Attr::ulong(CKA_VALUE_LEN, 32),
            Attr::bytes(CKA_LABEL, b"k"),
        ];
        assert_eq!(find_bool(&t, CKA_SIGN), Ok(Some(true)));
        assert_eq!(find_ulong(&t, CKA_VALUE_LEN), Ok(Some(32)));
        assert_eq!(find(&t, CKA_LABEL), Some(&b"k"[..]));
        assert_eq!(decode_bool(&[0, 1]), Err(Error::AttributeValueInvalid));
        assert_eq!(decode_ulong(&[1]), Err(Error::AttributeValueInvalid));
    }

    #[test]
    fn debug_never_prints_values() {
        let a = Attr::bytes(0x11, b"supersecretvalue");
        assert!(!format!("{a:?}").contains("supersecret"));
    }
}
