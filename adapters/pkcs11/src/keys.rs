//! Key templates and reading keys back from token attributes.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use keywarden_vault::{Algorithm, Error as VaultError, KeyInfo, KeyKind, KeyRef, PublicKey};

use crate::pool::OpError;

/// DER of the OID prime256v1 (1.2.840.10045.3.1.7), as `CKA_EC_PARAMS`.
pub(crate) const P256_PARAMS: [u8; 10] =
    [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of the OID id-Ed25519 (1.3.101.112), as `CKA_EC_PARAMS`.
pub(crate) const ED25519_PARAMS: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];
/// DER of PrintableString "edwards25519", the older way to name the curve.
const ED25519_PARAMS_NAME: &[u8] = b"\x13\x0cedwards25519";

/// Length of the random `CKA_ID` given to each key.
pub(crate) const ID_LEN: usize = 16;

/// The key-pair generation mechanism and the two templates for a key of `algorithm`.
///
/// The private key is a token object, private, sensitive and never extractable, with exactly
/// the one usage its algorithm needs.
pub(crate) fn generation(
    algorithm: Algorithm,
    id: &[u8],
    label: &str,
) -> (Mechanism<'static>, Vec<Attribute>, Vec<Attribute>) {
    let signing = algorithm.is_signing();
    let (mechanism, params) = match algorithm {
        Algorithm::Ed25519 => (Mechanism::EccEdwardsKeyPairGen, ED25519_PARAMS.to_vec()),
        _ => (Mechanism::EccKeyPairGen, P256_PARAMS.to_vec()),
    };
    let public = vec![
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(signing),
        Attribute::EcParams(params),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    let private = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(signing),
        Attribute::Derive(!signing),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    (mechanism, public, private)
}

/// Every object of `class` with `CKA_ID` = `key`.
pub(crate) fn find_all(
    session: &Session,
    class: ObjectClass,
    key: &KeyRef,
) -> Result<Vec<ObjectHandle>, OpError> {
    Ok(session.find_objects(&[
        Attribute::Class(class),
        Attribute::Id(key.as_bytes().to_vec()),
    ])?)
}

/// The error for objects under one `CKA_ID` that are not one key.
pub(crate) fn duplicate_id(class: ObjectClass, key: &KeyRef, n: usize, why: &str) -> OpError {
    VaultError::backend(
        "pkcs11",
        "DUPLICATE_ID",
        format!("{n} objects of class {class} share CKA_ID {key}{why}"),
    )
    .into()
}

/// What a public key object says of its key.
struct EcPublic {
    /// `CKA_EC_PARAMS`.
    params: Vec<u8>,
    /// `CKA_EC_POINT`.
    point: Vec<u8>,
}

/// The `CKA_EC_PARAMS` and `CKA_EC_POINT` of `key`'s public key object.
///
/// SoftHSM2 2.6, when two processes create objects in one token directory at the same time,
/// can list one object twice. Public key objects under one `CKA_ID` with the same curve and
/// point are one public key, whichever handle is read; ones that differ are refused.
fn find_public(session: &Session, key: &KeyRef) -> Result<Option<EcPublic>, OpError> {
    let mut first: Option<EcPublic> = None;
    let handles = find_all(session, ObjectClass::PUBLIC_KEY, key)?;
    for handle in &handles {
        let attrs =
            session.get_attributes(*handle, &[AttributeType::EcParams, AttributeType::EcPoint])?;
        let (mut params, mut point) = (Vec::new(), Vec::new());
        for a in attrs {
            match a {
                Attribute::EcParams(p) => params = p,
                Attribute::EcPoint(p) => point = p,
                _ => {}
            }
        }
        match &first {
            None => first = Some(EcPublic { params, point }),
            Some(f) if f.params == params && f.point == point => {}
            Some(_) => {
                return Err(duplicate_id(
                    ObjectClass::PUBLIC_KEY,
                    key,
                    handles.len(),
                    " and hold different public keys",
                ));
            }
        }
    }
    if handles.len() > 1 {
        tracing::debug!(%key, copies = handles.len(), "the token lists one public key object more than once");
    }
    Ok(first)
}

/// Reads what is public about the private key `handle`: its algorithm (from key type, curve and
/// usage), label and public key (from the matching public key object).
pub(crate) fn read_info(
    session: &Session,
    handle: ObjectHandle,
    key: &KeyRef,
) -> Result<KeyInfo, OpError> {
    let attrs = session.get_attributes(
        handle,
        &[
            AttributeType::KeyType,
            AttributeType::Sign,
            AttributeType::Derive,
            AttributeType::Label,
        ],
    )?;
    let (mut key_type, mut sign, mut derive, mut label) = (None, false, false, String::new());
    for a in attrs {
        match a {
            Attribute::KeyType(t) => key_type = Some(t),
            Attribute::Sign(b) => sign = b,
            Attribute::Derive(b) => derive = b,
            Attribute::Label(l) => label = String::from_utf8_lossy(&l).into_owned(),
            _ => {}
        }
    }
    let EcPublic { params, point } = find_public(session, key)?.ok_or_else(|| {
        VaultError::backend(
            "pkcs11",
            "NO_PUBLIC_KEY",
            format!("key {key} has no public key object"),
        )
    })?;
    let unsupported = |what: &str| -> OpError {
        VaultError::UnsupportedAlgorithm(format!(
            "key {key} is {what}, which keywarden does not use"
        ))
        .into()
    };
    let algorithm = match key_type {
        Some(t) if t == KeyType::EC => {
            if params != P256_PARAMS {
                return Err(unsupported("an EC key on a curve other than P-256"));
            }
            match (sign, derive) {
                (true, _) => Algorithm::EcdsaP256Sha256,
                (false, true) => Algorithm::EcdhP256,
                (false, false) => {
                    return Err(unsupported(
                        "a P-256 key with neither CKA_SIGN nor CKA_DERIVE",
                    ));
                }
            }
        }
        Some(t) if t == KeyType::EC_EDWARDS => {
            if params != ED25519_PARAMS && params != ED25519_PARAMS_NAME {
                return Err(unsupported("an Edwards key on a curve other than Ed25519"));
            }
            Algorithm::Ed25519
        }
        Some(t) => return Err(unsupported(&format!("a {t} key"))),
        None => return Err(unsupported("a key of unknown type")),
    };
    let public_key = parse_ec_point(algorithm.key_kind(), &point).map_err(|e| {
        VaultError::backend(
            "pkcs11",
            "BAD_EC_POINT",
            format!("key {key}: the token's CKA_EC_POINT: {e}"),
        )
    })?;
    Ok(KeyInfo {
        key_ref: key.clone(),
        algorithm,
        label,
        public_key,
    })
}

/// Parses `CKA_EC_POINT`: PKCS#11 says DER `OCTET STRING`, some tokens give the raw point.
pub(crate) fn parse_ec_point(kind: KeyKind, value: &[u8]) -> keywarden_vault::Result<PublicKey> {
    let raw_len = match kind {
        KeyKind::P256 => 65,
        _ => 32,
    };
    let raw = match value {
        [0x04, len, rest @ ..] if usize::from(*len) == raw_len && rest.len() == raw_len => rest,
        _ if value.len() == raw_len => value,
        _ => {
            return Err(VaultError::InvalidInput(format!(
                "expected a {raw_len}-byte point, raw or in a DER OCTET STRING; got {} bytes",
                value.len()
            )));
        }
    };
    PublicKey::from_raw(kind, raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_point_forms() {
        let g = hex::decode("046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c2964fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5").unwrap();
        let mut wrapped = vec![0x04, 0x41];
        wrapped.extend_from_slice(&g);
        assert_eq!(
            parse_ec_point(KeyKind::P256, &g).unwrap().as_bytes(),
            &g[..]
        );
        assert_eq!(
            parse_ec_point(KeyKind::P256, &wrapped).unwrap().as_bytes(),
            &g[..]
        );
        let e = parse_ec_point(KeyKind::P256, &g[..40]).unwrap_err();
        assert!(e.to_string().contains("got 40 bytes"), "{e}");
    }

    #[test]
    fn templates_grant_one_usage() {
        let (_, _, private) = generation(Algorithm::EcdhP256, &[1; ID_LEN], "x");
        assert!(private.contains(&Attribute::Derive(true)));
        assert!(private.contains(&Attribute::Sign(false)));
        assert!(private.contains(&Attribute::Extractable(false)));
        assert!(private.contains(&Attribute::Sensitive(true)));
        let (_, _, private) = generation(Algorithm::EcdsaP256Sha256, &[1; ID_LEN], "x");
        assert!(private.contains(&Attribute::Sign(true)));
        assert!(private.contains(&Attribute::Derive(false)));
    }
}
