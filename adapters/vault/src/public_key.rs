//! Public keys: validated on the way in, exported as SEC1, SPKI DER or PEM.

use core::fmt;

use ed25519_dalek::pkcs8::DecodePublicKey as _;
use p256::elliptic_curve::sec1::ToSec1Point as _;
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// The curve family of a public key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum KeyKind {
    /// NIST P-256 (secp256r1), used by ECDSA and ECDH keys.
    P256,
    /// Edwards25519, used by Ed25519 keys.
    Ed25519,
}

/// Length of an uncompressed SEC1 P-256 point: `04 || x || y`.
const P256_UNCOMPRESSED_LEN: usize = 65;
/// Length of a compressed SEC1 P-256 point: `02|03 || x`.
const P256_COMPRESSED_LEN: usize = 33;

/// DER of `SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (65 bytes) … }`,
/// everything of a P-256 SubjectPublicKeyInfo before the uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// DER of `SEQUENCE { SEQUENCE { id-Ed25519 }, BIT STRING (32 bytes) … }` before the key.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Inner {
    /// Uncompressed SEC1, checked to be a point on the curve other than the identity.
    P256([u8; P256_UNCOMPRESSED_LEN]),
    /// A 32-byte Ed25519 key, checked to decompress.
    Ed25519([u8; 32]),
}

/// A validated public key. Every constructor checks the encoding and that the point is on the
/// curve, so a `PublicKey` handed to a backend is never a malformed or invalid-curve point.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(Inner);

impl PublicKey {
    /// Parses a P-256 point in SEC1 form, uncompressed (65 bytes) or compressed (33 bytes).
    /// The key is kept uncompressed.
    pub fn from_sec1(bytes: &[u8]) -> Result<Self> {
        match (bytes.len(), bytes.first()) {
            (P256_UNCOMPRESSED_LEN, Some(0x04)) | (P256_COMPRESSED_LEN, Some(0x02 | 0x03)) => {}
            (0, _) => return Err(Error::InvalidInput("P-256 public key is empty".into())),
            (n, Some(tag)) => {
                return Err(Error::InvalidInput(format!(
                    "P-256 public key: expected a 65-byte uncompressed (04…) or 33-byte \
                     compressed (02…/03…) SEC1 point, got {n} bytes starting with {tag:#04x}"
                )));
            }
            (_, None) => unreachable_empty(),
        }
        let key = p256::PublicKey::from_sec1_bytes(bytes).map_err(|_| {
            Error::InvalidInput("P-256 public key: the point is not on the curve".into())
        })?;
        Ok(Self::from_p256(&key))
    }

    /// Wraps a `p256` public key (already valid by construction).
    pub fn from_p256(key: &p256::PublicKey) -> Self {
        let point = key.to_sec1_point(false);
        let mut out = [0u8; P256_UNCOMPRESSED_LEN];
        out.copy_from_slice(point.as_bytes());
        Self(Inner::P256(out))
    }

    /// Parses a 32-byte Ed25519 public key.
    pub fn from_ed25519(bytes: &[u8]) -> Result<Self> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| {
            Error::InvalidInput(format!(
                "Ed25519 public key: expected 32 bytes, got {}",
                bytes.len()
            ))
        })?;
        ed25519_dalek::VerifyingKey::from_bytes(&arr).map_err(|_| {
            Error::InvalidInput("Ed25519 public key: not a valid curve point".into())
        })?;
        Ok(Self(Inner::Ed25519(arr)))
    }

    /// Parses the raw form of a key of the given kind (SEC1 for P-256, 32 bytes for Ed25519).
    pub fn from_raw(kind: KeyKind, bytes: &[u8]) -> Result<Self> {
        match kind {
            KeyKind::P256 => Self::from_sec1(bytes),
            KeyKind::Ed25519 => Self::from_ed25519(bytes),
        }
    }

    /// Parses a DER `SubjectPublicKeyInfo` holding a P-256 (named curve) or Ed25519 key.
    pub fn from_spki_der(der: &[u8]) -> Result<Self> {
        if let Ok(key) = <p256::PublicKey as p256::pkcs8::DecodePublicKey>::from_public_key_der(der)
        {
            return Ok(Self::from_p256(&key));
        }
        if let Ok(key) = ed25519_dalek::VerifyingKey::from_public_key_der(der) {
            return Ok(Self(Inner::Ed25519(key.to_bytes())));
        }
        Err(Error::InvalidInput(
            "public key: not a DER SubjectPublicKeyInfo for a P-256 (named curve) or Ed25519 key"
                .into(),
        ))
    }

    /// Parses a PEM `PUBLIC KEY` block (SubjectPublicKeyInfo).
    pub fn from_pem(pem: &str) -> Result<Self> {
        let (label, der) = pem_rfc7468::decode_vec(pem.trim().as_bytes())
            .map_err(|e| Error::InvalidInput(format!("public key: not PEM: {e}")))?;
        if label != "PUBLIC KEY" {
            return Err(Error::InvalidInput(format!(
                "public key: expected a PEM \"PUBLIC KEY\" block, got {label:?}"
            )));
        }
        Self::from_spki_der(&der)
    }

    /// The curve family.
    pub fn kind(&self) -> KeyKind {
        match self.0 {
            Inner::P256(_) => KeyKind::P256,
            Inner::Ed25519(_) => KeyKind::Ed25519,
        }
    }

    /// The raw form: the 65-byte uncompressed SEC1 point for P-256, 32 bytes for Ed25519.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Inner::P256(b) => b,
            Inner::Ed25519(b) => b,
        }
    }

    /// The DER `SubjectPublicKeyInfo`.
    pub fn to_spki_der(&self) -> Vec<u8> {
        let (prefix, key): (&[u8], &[u8]) = match &self.0 {
            Inner::P256(b) => (&P256_SPKI_PREFIX, b),
            Inner::Ed25519(b) => (&ED25519_SPKI_PREFIX, b),
        };
        [prefix, key].concat()
    }

    /// The PEM `PUBLIC KEY` block (SubjectPublicKeyInfo), with `\n` line endings.
    pub fn to_pem(&self) -> String {
        use base64ct::Encoding as _;
        let b64 = base64ct::Base64::encode_string(&self.to_spki_der());
        let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            // base64 output is ASCII, so every chunk is valid UTF-8.
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END PUBLIC KEY-----\n");
        out
    }

    /// SHA-256 of the SPKI DER: a stable identifier of the key.
    pub fn fingerprint(&self) -> [u8; 32] {
        Sha256::digest(self.to_spki_der()).into()
    }

    /// The key as a `p256` public key, or `None` for an Ed25519 key.
    pub fn to_p256(&self) -> Option<p256::PublicKey> {
        match self.0 {
            Inner::P256(_) => Some(self.to_p256_key()),
            Inner::Ed25519(_) => None,
        }
    }

    /// The key as an `ed25519-dalek` verifying key, or `None` for a P-256 key.
    pub fn to_ed25519(&self) -> Option<ed25519_dalek::VerifyingKey> {
        match self.0 {
            Inner::Ed25519(_) => Some(self.to_ed25519_key()),
            Inner::P256(_) => None,
        }
    }

    fn to_p256_key(&self) -> p256::PublicKey {
        // Invariant: the bytes were validated as an on-curve, non-identity point when this
        // value was built, so decoding them again cannot fail; the fallback is unreachable.
        p256::PublicKey::from_sec1_bytes(self.as_bytes())
            .unwrap_or_else(|_| unreachable_validated())
    }

    fn to_ed25519_key(&self) -> ed25519_dalek::VerifyingKey {
        let mut arr = [0u8; 32];
        arr.copy_from_slice(&self.as_bytes()[..32]);
        // Invariant: validated at construction, as above.
        ed25519_dalek::VerifyingKey::from_bytes(&arr).unwrap_or_else(|_| unreachable_validated())
    }
}

#[cold]
fn unreachable_validated() -> ! {
    unreachable!("a PublicKey holds only bytes validated at construction")
}

#[cold]
fn unreachable_empty() -> ! {
    unreachable!("a zero-length slice is matched by the (0, _) arm")
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PublicKey({:?}, {})",
            self.kind(),
            hex::encode(self.as_bytes())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: &str = "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c2964fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5";

    #[test]
    fn p256_round_trips_through_spki_and_pem() {
        let pk = PublicKey::from_sec1(&hex::decode(G).unwrap()).unwrap();
        assert_eq!(pk.kind(), KeyKind::P256);
        assert_eq!(PublicKey::from_spki_der(&pk.to_spki_der()).unwrap(), pk);
        // Independent check: p256's own encoder produces the same DER.
        let theirs =
            p256::pkcs8::EncodePublicKey::to_public_key_der(&pk.to_p256().unwrap()).unwrap();
        assert_eq!(theirs.as_bytes(), &pk.to_spki_der()[..]);
        let pem = pk.to_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{pem}");
        assert_eq!(PublicKey::from_pem(&pem).unwrap(), pk);
    }

    #[test]
    fn compressed_points_are_normalized() {
        let full = hex::decode(G).unwrap();
        let mut compressed = vec![0x02 | (full[64] & 1)];
        compressed.extend_from_slice(&full[1..33]);
        let pk = PublicKey::from_sec1(&compressed).unwrap();
        assert_eq!(pk.as_bytes(), &full[..]);
    }

    #[test]
    fn bad_points_say_why() {
        let e = PublicKey::from_sec1(&[]).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        let e = PublicKey::from_sec1(&[0x04; 10]).unwrap_err();
        assert!(e.to_string().contains("got 10 bytes"), "{e}");
        let mut off = hex::decode(G).unwrap();
        off[64] ^= 1;
        let e = PublicKey::from_sec1(&off).unwrap_err();
        assert!(e.to_string().contains("not on the curve"), "{e}");
        let e = PublicKey::from_ed25519(&[1; 31]).unwrap_err();
        assert!(e.to_string().contains("expected 32 bytes"), "{e}");
        let e =
            PublicKey::from_pem("-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n")
                .unwrap_err();
        assert!(e.to_string().contains("PRIVATE KEY"), "{e}");
    }

    #[test]
    fn ed25519_round_trips() {
        // RFC 8032 test 1 public key.
        let raw = hex::decode("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
            .unwrap();
        let pk = PublicKey::from_ed25519(&raw).unwrap();
        assert_eq!(pk.kind(), KeyKind::Ed25519);
        assert_eq!(PublicKey::from_pem(&pk.to_pem()).unwrap(), pk);
        let theirs =
            ed25519_dalek::pkcs8::EncodePublicKey::to_public_key_der(&pk.to_ed25519().unwrap())
                .unwrap();
        assert_eq!(theirs.as_bytes(), &pk.to_spki_der()[..]);
        assert!(pk.to_p256().is_none());
    }
}
