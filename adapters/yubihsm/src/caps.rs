//! Which capabilities a key gets, and what a key on the device is for.
//!
//! A key gets exactly the one operation capability its algorithm needs: `sign-ecdsa` for
//! ECDSA P-256, `sign-eddsa` for Ed25519, `derive-ecdh` for ECDH P-256. It is exportable
//! under wrap only when its [`KeySpec`] has the attribute
//! [`exportable-under-wrap=true`](EXPORTABLE_ATTRIBUTE).
//!
//! Going the other way, a key found on the device is classified by its algorithm and
//! capabilities, and the adapter refuses an operation the key's capabilities do not allow
//! before sending anything (MockHsm does not enforce capabilities; a real YubiHSM 2 answers
//! `YHR_DEVICE_INSUFFICIENT_PERMISSIONS`, which maps to the same `PermissionDenied`).

use keywarden_vault::{Algorithm, Error, KeySpec, Result};
use yubihsm::{Capability, asymmetric, object};

/// The key-spec attribute that makes a new key exportable under wrap (`true` or `false`;
/// absent means `false`).
pub const EXPORTABLE_ATTRIBUTE: &str = "exportable-under-wrap";

/// Capabilities the adapter decides per key; refused in the config's `key_capabilities`.
pub(crate) const PER_KEY: Capability = Capability::SIGN_ECDSA
    .union(Capability::SIGN_EDDSA)
    .union(Capability::DERIVE_ECDH)
    .union(Capability::SIGN_PKCS)
    .union(Capability::SIGN_PSS)
    .union(Capability::DECRYPT_OAEP)
    .union(Capability::DECRYPT_PKCS)
    .union(Capability::EXPORTABLE_UNDER_WRAP);

/// The device algorithm and the one operation capability for a keywarden algorithm.
pub(crate) fn for_algorithm(algorithm: Algorithm) -> Result<(asymmetric::Algorithm, Capability)> {
    match algorithm {
        Algorithm::EcdsaP256Sha256 => Ok((asymmetric::Algorithm::EcP256, Capability::SIGN_ECDSA)),
        Algorithm::EcdhP256 => Ok((asymmetric::Algorithm::EcP256, Capability::DERIVE_ECDH)),
        Algorithm::Ed25519 => Ok((asymmetric::Algorithm::Ed25519, Capability::SIGN_EDDSA)),
        other => Err(Error::UnsupportedAlgorithm(format!(
            "yubihsm: {other} is not supported"
        ))),
    }
}

/// The capabilities of a new key for `spec`, plus the configured extras.
pub(crate) fn for_spec(spec: &KeySpec, extra: Capability) -> Result<Capability> {
    let (_, op) = for_algorithm(spec.algorithm())?;
    let exportable = match spec
        .attributes()
        .get(EXPORTABLE_ATTRIBUTE)
        .map(String::as_str)
    {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(Error::InvalidInput(format!(
                "key attribute {EXPORTABLE_ATTRIBUTE}={other:?}: expected true or false"
            )));
        }
    };
    let mut caps = op | (extra - PER_KEY);
    if exportable {
        caps |= Capability::EXPORTABLE_UNDER_WRAP;
    }
    Ok(caps)
}

/// What a key on the device is for, from its algorithm and capabilities; `None` for objects
/// this vault does not use (RSA keys, other curves, keys with no operation we know).
///
/// A key that has both `sign-ecdsa` and `derive-ecdh` (not made by keywarden) is taken as an
/// ECDSA key, so the vault never uses one key for both.
pub(crate) fn classify(info: &object::Info) -> Option<Algorithm> {
    if info.object_type != object::Type::AsymmetricKey {
        return None;
    }
    match info.algorithm.asymmetric()? {
        asymmetric::Algorithm::EcP256 if info.capabilities.contains(Capability::SIGN_ECDSA) => {
            Some(Algorithm::EcdsaP256Sha256)
        }
        asymmetric::Algorithm::EcP256 if info.capabilities.contains(Capability::DERIVE_ECDH) => {
            Some(Algorithm::EcdhP256)
        }
        asymmetric::Algorithm::Ed25519 if info.capabilities.contains(Capability::SIGN_EDDSA) => {
            Some(Algorithm::Ed25519)
        }
        _ => None,
    }
}

/// The capability an operation needs, by name, for messages.
pub(crate) fn name(cap: Capability) -> String {
    let names: Vec<String> = cap.iter().map(|c| c.to_string()).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(",")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn each_key_gets_only_its_operation() {
        let sign = KeySpec::new(Algorithm::EcdsaP256Sha256, "s").unwrap();
        assert_eq!(
            for_spec(&sign, Capability::empty()).unwrap(),
            Capability::SIGN_ECDSA
        );
        let agree = KeySpec::new(Algorithm::EcdhP256, "a").unwrap();
        assert_eq!(
            for_spec(&agree, Capability::empty()).unwrap(),
            Capability::DERIVE_ECDH
        );
        let ed = KeySpec::new(Algorithm::Ed25519, "e").unwrap();
        assert_eq!(
            for_spec(&ed, Capability::SIGN_ATTESTATION_CERTIFICATE).unwrap(),
            Capability::SIGN_EDDSA | Capability::SIGN_ATTESTATION_CERTIFICATE
        );
        // Extras can never smuggle in another operation or exportability.
        assert_eq!(
            for_spec(
                &sign,
                Capability::DERIVE_ECDH | Capability::EXPORTABLE_UNDER_WRAP
            )
            .unwrap(),
            Capability::SIGN_ECDSA
        );
    }

    #[test]
    fn exportability_comes_only_from_the_spec() {
        let spec = KeySpec::new(Algorithm::EcdsaP256Sha256, "x")
            .unwrap()
            .with_attribute(EXPORTABLE_ATTRIBUTE, "true");
        assert_eq!(
            for_spec(&spec, Capability::empty()).unwrap(),
            Capability::SIGN_ECDSA | Capability::EXPORTABLE_UNDER_WRAP
        );
        let spec = KeySpec::new(Algorithm::EcdsaP256Sha256, "x")
            .unwrap()
            .with_attribute(EXPORTABLE_ATTRIBUTE, "yes");
        let e = for_spec(&spec, Capability::empty()).unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
        assert!(e.to_string().contains("expected true or false"), "{e}");
    }

    #[test]
    fn capability_names() {
        assert_eq!(name(Capability::SIGN_ECDSA), "sign-ecdsa");
        assert_eq!(name(Capability::empty()), "none");
    }
}
