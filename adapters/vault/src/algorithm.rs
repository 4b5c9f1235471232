//! The algorithms a key can be generated for.

use core::fmt;
use core::str::FromStr;

use crate::error::Error;
use crate::public_key::KeyKind;

/// What a key is for. A key has exactly one algorithm, fixed when it is generated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Algorithm {
    /// ECDSA on NIST P-256 over SHA-256 of the message (the digest is computed host-side).
    EcdsaP256Sha256,
    /// Elliptic-curve Diffie-Hellman on NIST P-256; the shared secret is the x-coordinate.
    EcdhP256,
    /// Ed25519 signatures (pure EdDSA, RFC 8032).
    Ed25519,
}

impl Algorithm {
    /// Every algorithm keywarden knows, in a stable order.
    pub const ALL: [Algorithm; 3] = [Self::EcdsaP256Sha256, Self::EcdhP256, Self::Ed25519];

    /// The stable name used in configuration, the CLI and the API (`ecdsa-p256`, `ecdh-p256`,
    /// `ed25519`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::EcdsaP256Sha256 => "ecdsa-p256",
            Self::EcdhP256 => "ecdh-p256",
            Self::Ed25519 => "ed25519",
        }
    }

    /// True if keys of this algorithm make signatures.
    pub const fn is_signing(self) -> bool {
        matches!(self, Self::EcdsaP256Sha256 | Self::Ed25519)
    }

    /// True if keys of this algorithm do key agreement.
    pub const fn is_agreement(self) -> bool {
        matches!(self, Self::EcdhP256)
    }

    /// The kind of public key a key of this algorithm has.
    pub const fn key_kind(self) -> KeyKind {
        match self {
            Self::EcdsaP256Sha256 | Self::EcdhP256 => KeyKind::P256,
            Self::Ed25519 => KeyKind::Ed25519,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "unknown algorithm {s:?}; expected one of ecdsa-p256, ecdh-p256, ed25519"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in Algorithm::ALL {
            assert_eq!(a.name().parse::<Algorithm>().unwrap(), a);
            assert_eq!(a.to_string(), a.name());
        }
    }

    #[test]
    fn unknown_name_lists_the_choices() {
        let err = "rsa-2048".parse::<Algorithm>().unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)));
        assert!(
            err.to_string().contains("ecdsa-p256, ecdh-p256, ed25519"),
            "{err}"
        );
    }

    #[test]
    fn capabilities_are_disjoint() {
        for a in Algorithm::ALL {
            assert_ne!(a.is_signing(), a.is_agreement(), "{a}");
        }
    }
}
