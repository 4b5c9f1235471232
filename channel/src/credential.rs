//! Credentials: an authority states attributes about a subject until an expiry.

use std::collections::BTreeMap;
use std::time::SystemTime;

use keywarden_vault::{PublicKey, SigningKey};

use crate::encoding::{Reader, Writer};
use crate::error::{Error, Result};
use crate::identity::Identifier;
use crate::signed::{self, Kind, SIGNATURE_LEN};

const VERSION: u8 = 1;
/// Most attributes in one credential.
pub const MAX_ATTRIBUTES: usize = 64;
/// Longest attribute name, in bytes.
pub const MAX_ATTRIBUTE_NAME_LEN: usize = 128;
/// Longest attribute value, in bytes.
pub const MAX_ATTRIBUTE_VALUE_LEN: usize = 1024;

/// A signed statement "authority A says subject S has attributes M until T".
///
/// Encoding (version 1): `0x02 0x01 | subject (32 bytes) | spki(issuer) | u64 expires |
/// u16 count | (name, value)*`, names strictly ascending, then the signature over
/// `"keywarden-channel/credential/v1\n" || everything before it`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    subject: Identifier,
    issuer_key: PublicKey,
    attributes: BTreeMap<String, String>,
    expires: u64,
    body: Vec<u8>,
    signature: [u8; SIGNATURE_LEN],
}

fn check_attributes(attributes: &BTreeMap<String, String>) -> Result<()> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(Error::InvalidInput(format!(
            "{} attributes; the limit is {MAX_ATTRIBUTES}",
            attributes.len()
        )));
    }
    for (k, v) in attributes {
        if k.is_empty() || k.len() > MAX_ATTRIBUTE_NAME_LEN || v.len() > MAX_ATTRIBUTE_VALUE_LEN {
            return Err(Error::InvalidInput(format!(
                "attribute {k:?}: name must be 1..={MAX_ATTRIBUTE_NAME_LEN} bytes, value at most \
                 {MAX_ATTRIBUTE_VALUE_LEN}"
            )));
        }
    }
    Ok(())
}

fn body(
    subject: &Identifier,
    issuer_key: &PublicKey,
    attributes: &BTreeMap<String, String>,
    expires: u64,
) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(Kind::Credential.tag())
        .u8(VERSION)
        .raw(subject.as_bytes())
        .bytes(&issuer_key.to_spki_der())
        .u64(expires)
        // At most MAX_ATTRIBUTES (64), checked before encoding and after decoding.
        .raw(&(attributes.len() as u16).to_be_bytes());
    for (k, v) in attributes {
        w.bytes(k.as_bytes()).bytes(v.as_bytes());
    }
    w.finish()
}

impl Credential {
    pub(crate) async fn sign(
        key: &SigningKey,
        subject: &Identifier,
        attributes: BTreeMap<String, String>,
        expires: SystemTime,
    ) -> Result<Self> {
        check_attributes(&attributes)?;
        let expires = signed::unix(expires);
        let body = body(subject, key.public_key(), &attributes, expires);
        let signature = signed::sign(key, Kind::Credential, &body).await?;
        Ok(Self {
            subject: *subject,
            issuer_key: key.public_key().clone(),
            attributes,
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
        const WHAT: &str = "credential";
        if bytes.len() < SIGNATURE_LEN {
            return Err(Error::malformed(WHAT, "truncated"));
        }
        let (body_bytes, sig) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
        let mut r = Reader::new(body_bytes, WHAT);
        r.expect(Kind::Credential.tag(), "not a credential")?;
        r.expect(VERSION, "unsupported version")?;
        let mut subject = [0u8; 32];
        subject.copy_from_slice(r.take(32)?);
        let issuer_key = PublicKey::from_spki_der(r.bytes()?)
            .map_err(|e| Error::malformed(WHAT, e.to_string()))?;
        let expires = r.u64()?;
        let count = usize::from(r.u16()?);
        if count > MAX_ATTRIBUTES {
            return Err(Error::malformed(WHAT, "too many attributes"));
        }
        let mut attributes = BTreeMap::new();
        let mut last: Option<String> = None;
        for _ in 0..count {
            let k = String::from_utf8(r.bytes()?.to_vec())
                .map_err(|_| Error::malformed(WHAT, "attribute name is not UTF-8"))?;
            let v = String::from_utf8(r.bytes()?.to_vec())
                .map_err(|_| Error::malformed(WHAT, "attribute value is not UTF-8"))?;
            if last.as_ref().is_some_and(|l| *l >= k) {
                return Err(Error::malformed(
                    WHAT,
                    "attribute names not strictly ascending",
                ));
            }
            last = Some(k.clone());
            attributes.insert(k, v);
        }
        r.finish()?;
        check_attributes(&attributes).map_err(|e| Error::malformed(WHAT, e.to_string()))?;
        let subject = Identifier::from_bytes(subject);
        if body(&subject, &issuer_key, &attributes, expires) != body_bytes {
            return Err(Error::malformed(WHAT, "not in canonical form"));
        }
        let mut signature = [0u8; SIGNATURE_LEN];
        signature.copy_from_slice(sig);
        Ok(Self {
            subject,
            issuer_key,
            attributes,
            expires,
            body: body_bytes.to_vec(),
            signature,
        })
    }

    /// Who the credential is about.
    pub fn subject(&self) -> &Identifier {
        &self.subject
    }

    /// The issuing authority.
    pub fn issuer(&self) -> Identifier {
        Identifier::of(&self.issuer_key)
    }

    /// The attributes (unverified until [`verify`](Self::verify) succeeds).
    pub fn attributes(&self) -> &BTreeMap<String, String> {
        &self.attributes
    }

    /// Expiry, in seconds since the Unix epoch.
    pub fn expires_unix(&self) -> u64 {
        self.expires
    }

    /// Checks that the issuer is one of `trusted`, the signature, the expiry against `now`
    /// and that the subject is `peer`. Returns the verified attributes.
    pub fn verify(
        &self,
        trusted: &[Identifier],
        peer: &Identifier,
        now: SystemTime,
    ) -> Result<&BTreeMap<String, String>> {
        self.verify_with(trusted, peer, now, None)
    }

    pub(crate) fn verify_with(
        &self,
        trusted: &[Identifier],
        peer: &Identifier,
        now: SystemTime,
        cache: Option<&signed::SignatureCache>,
    ) -> Result<&BTreeMap<String, String>> {
        let issuer = self.issuer();
        if !trusted.contains(&issuer) {
            return Err(Error::UntrustedAuthority(issuer));
        }
        let (key, body, sig) = (&self.issuer_key, &self.body, &self.signature);
        let valid = match cache {
            Some(c) => c.verify(key, Kind::Credential, body, sig),
            None => signed::verify(key, Kind::Credential, body, sig),
        };
        if !valid {
            return Err(Error::CredentialForged { issuer });
        }
        if signed::unix(now) >= self.expires {
            return Err(Error::CredentialExpired {
                issuer,
                subject: self.subject,
            });
        }
        if &self.subject != peer {
            return Err(Error::CredentialSubjectMismatch {
                subject: self.subject,
                peer: *peer,
            });
        }
        Ok(&self.attributes)
    }
}
