//! Signatures as fixed-size bytes, with DER conversion for ECDSA.

use core::fmt;

use crate::algorithm::Algorithm;
use crate::error::{Error, Result};

/// A signature made by a backend: `r || s` (32 bytes each, big-endian) for ECDSA P-256, the
/// 64-byte RFC 8032 signature for Ed25519.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Signature {
    algorithm: Algorithm,
    bytes: [u8; 64],
}

impl Signature {
    /// Wraps a fixed-size signature for a signing algorithm.
    ///
    /// For ECDSA, `r` and `s` must both be in `1..n`; the bytes are otherwise taken as given
    /// (checking them against a key is [`verify`](crate::verify)'s job).
    pub fn from_bytes(algorithm: Algorithm, bytes: &[u8]) -> Result<Self> {
        let arr: [u8; 64] = bytes.try_into().map_err(|_| {
            Error::InvalidInput(format!(
                "{algorithm} signature: expected 64 bytes, got {}",
                bytes.len()
            ))
        })?;
        match algorithm {
            Algorithm::EcdsaP256Sha256 => {
                p256::ecdsa::Signature::from_slice(&arr).map_err(|_| {
                    Error::InvalidInput(
                        "ECDSA signature: r or s is zero or not below the group order".into(),
                    )
                })?;
            }
            Algorithm::Ed25519 => {}
            Algorithm::EcdhP256 => {
                return Err(Error::UnsupportedAlgorithm(
                    "ecdh-p256 keys do not make signatures".into(),
                ));
            }
        }
        Ok(Self {
            algorithm,
            bytes: arr,
        })
    }

    /// Parses an ECDSA signature in ASN.1 DER (`SEQUENCE { r INTEGER, s INTEGER }`), strictly:
    /// BER variants are refused.
    pub fn from_der(der: &[u8]) -> Result<Self> {
        let sig = p256::ecdsa::Signature::from_der(der)
            .map_err(|_| Error::InvalidInput("ECDSA signature: not a valid DER encoding".into()))?;
        Ok(Self {
            algorithm: Algorithm::EcdsaP256Sha256,
            bytes: sig.to_bytes().into(),
        })
    }

    /// The algorithm that made it.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The fixed-size form (`r || s` for ECDSA).
    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.bytes
    }

    /// The ASN.1 DER form of an ECDSA signature (what OpenSSL and X.509 use), or `None` for
    /// Ed25519, whose only form is the 64 bytes.
    pub fn to_der(&self) -> Option<Vec<u8>> {
        match self.algorithm {
            Algorithm::EcdsaP256Sha256 => p256::ecdsa::Signature::from_slice(&self.bytes)
                .ok()
                .map(|s| s.to_der().as_bytes().to_vec()),
            _ => None,
        }
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Signature({}, {})",
            self.algorithm,
            hex::encode(self.bytes)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_round_trip() {
        let mut raw = [0u8; 64];
        raw[31] = 7;
        raw[63] = 9;
        let sig = Signature::from_bytes(Algorithm::EcdsaP256Sha256, &raw).unwrap();
        let der = sig.to_der().unwrap();
        assert_eq!(der, vec![0x30, 0x06, 0x02, 0x01, 7, 0x02, 0x01, 9]);
        assert_eq!(Signature::from_der(&der).unwrap(), sig);
    }

    #[test]
    fn bad_inputs_say_why() {
        let e = Signature::from_bytes(Algorithm::EcdsaP256Sha256, &[1; 63]).unwrap_err();
        assert!(e.to_string().contains("expected 64 bytes, got 63"), "{e}");
        let e = Signature::from_bytes(Algorithm::EcdsaP256Sha256, &[0; 64]).unwrap_err();
        assert!(e.to_string().contains("zero"), "{e}");
        let e = Signature::from_bytes(Algorithm::EcdhP256, &[1; 64]).unwrap_err();
        assert!(matches!(e, Error::UnsupportedAlgorithm(_)));
        let e = Signature::from_der(&[0x30, 0x00]).unwrap_err();
        assert!(e.to_string().contains("DER"), "{e}");
        let ed = Signature::from_bytes(Algorithm::Ed25519, &[1; 64]).unwrap();
        assert!(ed.to_der().is_none());
    }
}
