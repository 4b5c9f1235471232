//! Attestations: an identity binds a static DH key to itself until an expiry.

use std::time::SystemTime;

use keywarden_vault::{PublicKey, SigningKey};

use crate::encoding::{Reader, Writer};
use crate::error::{Error, Result};
use crate::identity::Identifier;
use crate::signed::{self, Kind, SIGNATURE_LEN};

const VERSION: u8 = 1;

/// A signed statement "identity I uses static key S until T".
///
/// Encoding (version 1): `0x01 0x01 | spki(identity) | sec1(static) | u64 expires | sig`,
/// byte strings prefixed with their `u16` length, the signature over
/// `"keywarden-channel/attestation/v1\n" || everything before it`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attestation {
    identity_key: PublicKey,
    static_key: PublicKey,
    expires: u64,
    body: Vec<u8>,
    signature: [u8; SIGNATURE_LEN],
}

fn body(identity_key: &PublicKey, static_key: &PublicKey, expires: u64) -> Vec<u8> {
    Writer::new()
        .u8(Kind::Attestation.tag())
        .u8(VERSION)
        .bytes(&identity_key.to_spki_der())
        .bytes(static_key.as_bytes())
        .u64(expires)
        .finish()
}

impl Attestation {
    pub(crate) async fn sign(
        key: &SigningKey,
        static_key: &PublicKey,
        expires: SystemTime,
    ) -> Result<Self> {
        let expires = signed::unix(expires);
        let body = body(key.public_key(), static_key, expires);
        let signature = signed::sign(key, Kind::Attestation, &body).await?;
        Ok(Self {
            identity_key: key.public_key().clone(),
            static_key: static_key.clone(),
            expires,
            body,
            signature,
        })
    }

    /// The canonical encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        [&self.body[..], &self.signature].concat()
    }

    /// Parses the canonical encoding (the signature is checked by [`verify`](Self::verify)).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        const WHAT: &str = "attestation";
        if bytes.len() < SIGNATURE_LEN {
            return Err(Error::malformed(WHAT, "truncated"));
        }
        let (body_bytes, sig) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
        let mut r = Reader::new(body_bytes, WHAT);
        r.expect(Kind::Attestation.tag(), "not an attestation")?;
        r.expect(VERSION, "unsupported version")?;
        let identity_key = PublicKey::from_spki_der(r.bytes()?)
            .map_err(|e| Error::malformed(WHAT, e.to_string()))?;
        let static_bytes = r.bytes()?;
        if static_bytes.len() != 65 {
            return Err(Error::malformed(
                WHAT,
                "static key is not a 65-byte P-256 point",
            ));
        }
        let static_key = PublicKey::from_sec1(static_bytes)
            .map_err(|e| Error::malformed(WHAT, e.to_string()))?;
        let expires = r.u64()?;
        r.finish()?;
        // Canonical: re-encoding must give the same bytes.
        if body(&identity_key, &static_key, expires) != body_bytes {
            return Err(Error::malformed(WHAT, "not in canonical form"));
        }
        let mut signature = [0u8; SIGNATURE_LEN];
        signature.copy_from_slice(sig);
        Ok(Self {
            identity_key,
            static_key,
            expires,
            body: body_bytes.to_vec(),
            signature,
        })
    }

    /// The attesting identity.
    pub fn identifier(&self) -> Identifier {
        Identifier::of(&self.identity_key)
    }

    /// The attesting identity's public key.
    pub fn identity_key(&self) -> &PublicKey {
        &self.identity_key
    }

    /// The attested static DH key.
    pub fn static_key(&self) -> &PublicKey {
        &self.static_key
    }

    /// Expiry, in seconds since the Unix epoch.
    pub fn expires_unix(&self) -> u64 {
        self.expires
    }

    /// Checks the signature, the expiry against `now`, and that the attested key is
    /// `noise_static`, the key the handshake authenticated. Returns the identity.
    pub fn verify(&self, noise_static: &PublicKey, now: SystemTime) -> Result<Identifier> {
        self.verify_with(noise_static, now, None)
    }

    pub(crate) fn verify_with(
        &self,
        noise_static: &PublicKey,
        now: SystemTime,
        cache: Option<&signed::SignatureCache>,
    ) -> Result<Identifier> {
        let id = self.identifier();
        let (key, body, sig) = (&self.identity_key, &self.body, &self.signature);
        let valid = match cache {
            Some(c) => c.verify(key, Kind::Attestation, body, sig),
            None => signed::verify(key, Kind::Attestation, body, sig),
        };
        if !valid {
            return Err(Error::AttestationForged(id));
        }
        if signed::unix(now) >= self.expires {
            return Err(Error::AttestationExpired(id));
        }
        if &self.static_key != noise_static {
            return Err(Error::AttestedKeyMismatch(id));
        }
        Ok(id)
    }
}
