//! Identities: a [`SigningKey`] and the identifier derived from its public key.

use core::fmt;
use core::str::FromStr;
use std::collections::BTreeMap;
use std::time::SystemTime;

use keywarden_vault::{PublicKey, SigningKey};

use crate::attestation::Attestation;
use crate::credential::Credential;
use crate::error::{Error, Result};

/// The printed prefix of an identifier.
const PREFIX: &str = "kwid1";

/// Who an identity is: SHA-256 of its public key's SubjectPublicKeyInfo DER.
///
/// Printed as `kwid1` followed by 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identifier([u8; 32]);

impl Identifier {
    /// The identifier of a public key.
    pub fn of(public_key: &PublicKey) -> Self {
        Self(public_key.fingerprint())
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// From 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identifier({self})")
    }
}

impl FromStr for Identifier {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let hexpart = s.strip_prefix(PREFIX).ok_or_else(|| {
            Error::InvalidInput(format!("identifier {s:?} does not start with {PREFIX}"))
        })?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(hexpart, &mut out)
            .map_err(|e| Error::InvalidInput(format!("identifier {s:?}: {e}")))?;
        Ok(Self(out))
    }
}

/// An identity: a signing key (in any vault) and its identifier.
#[derive(Clone, Debug)]
pub struct Identity {
    key: SigningKey,
    id: Identifier,
}

impl Identity {
    /// The identity of `key`.
    pub fn new(key: SigningKey) -> Self {
        let id = Identifier::of(key.public_key());
        Self { key, id }
    }

    /// The identifier.
    pub fn identifier(&self) -> Identifier {
        self.id
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        self.key.public_key()
    }

    /// Signs an attestation binding the static DH key `static_key` to this identity until
    /// `expires`.
    pub async fn attest(&self, static_key: &PublicKey, expires: SystemTime) -> Result<Attestation> {
        Attestation::sign(&self.key, static_key, expires).await
    }

    /// Issues (as an authority) a credential stating `attributes` about `subject`, valid
    /// until `expires`.
    pub async fn issue_credential(
        &self,
        subject: &Identifier,
        attributes: BTreeMap<String, String>,
        expires: SystemTime,
    ) -> Result<Credential> {
        Credential::sign(&self.key, subject, attributes, expires).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use keywarden_vault::testing::software_p256;

    #[test]
    fn identifier_round_trips() {
        let (_, pk) = software_p256();
        let id = Identifier::of(&pk);
        let s = id.to_string();
        assert!(s.starts_with("kwid1") && s.len() == 69, "{s}");
        assert_eq!(s.parse::<Identifier>().unwrap(), id);
        assert!("kwid2ab".parse::<Identifier>().is_err());
        assert!("kwid1zz".parse::<Identifier>().is_err());
        // Independent: SHA-256 of the SPKI DER from p256's own encoder.
        let der = p256::pkcs8::EncodePublicKey::to_public_key_der(&pk.to_p256().unwrap()).unwrap();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der.as_bytes());
        assert_eq!(id.as_bytes(), digest.as_ref());
    }
}
