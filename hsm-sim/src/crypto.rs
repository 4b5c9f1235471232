//! The cryptography, all through aws-lc-rs: key generation, signatures, ECDH, SHA-256, random.

use aws_lc_rs::agreement;
use aws_lc_rs::digest;
use aws_lc_rs::encoding::{AsBigEndian, EcPrivateKeyBin};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// DER of the named-curve OID of P-256 (`prime256v1`), as `CKA_EC_PARAMS` holds it.
pub const P256_PARAMS_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of the Ed25519 OID 1.3.101.112.
pub const ED25519_PARAMS_OID: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
/// DER PrintableString "edwards25519", the other `CKA_EC_PARAMS` form the standard allows.
pub const ED25519_PARAMS_NAME: &[u8] = b"\x13\x0cedwards25519";

/// Length of an ECDSA P-256 or Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// The curves the token knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    /// NIST P-256.
    P256,
    /// Curve25519 in Edwards form (Ed25519).
    Ed25519,
}

impl Curve {
    /// Recognises `CKA_EC_PARAMS`.
    pub fn from_params(params: &[u8]) -> Result<Curve> {
        match params {
            P256_PARAMS_OID => Ok(Curve::P256),
            ED25519_PARAMS_OID | ED25519_PARAMS_NAME => Ok(Curve::Ed25519),
            _ => Err(Error::DomainParamsInvalid),
        }
    }
}

/// Wraps a raw point in a DER OCTET STRING (the form of `CKA_EC_POINT`, as SoftHSM2 stores it).
pub fn der_octet_string(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + 3);
    out.push(0x04);
    if raw.len() < 0x80 {
        out.push(raw.len() as u8);
    } else {
        // Points here are at most 133 bytes (P-521), so one length byte suffices.
        out.push(0x81);
        out.push(raw.len() as u8);
    }
    out.extend_from_slice(raw);
    out
}

/// Accepts a peer point either raw or DER OCTET STRING wrapped, returns it raw.
pub fn unwrap_point(curve: Curve, data: &[u8]) -> &[u8] {
    let raw_len = match curve {
        Curve::P256 => 65,
        Curve::Ed25519 => 32,
    };
    if data.len() == raw_len + 2 && data[0] == 0x04 && usize::from(data[1]) == raw_len {
        &data[2..]
    } else {
        data
    }
}

/// A private key ready to use, with its raw secret kept for storage.
pub enum PrivateKey {
    /// An ECDSA/ECDH P-256 key.
    P256 {
        /// Signing form.
        sign: EcdsaKeyPair,
        /// The scalar, big-endian, 32 bytes.
        scalar: Zeroizing<Vec<u8>>,
    },
    /// An Ed25519 key.
    Ed25519 {
        /// Signing form.
        sign: Ed25519KeyPair,
        /// The 32-byte seed.
        seed: Zeroizing<Vec<u8>>,
    },
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrivateKey::P256 { .. } => f.write_str("PrivateKey::P256(..)"),
            PrivateKey::Ed25519 { .. } => f.write_str("PrivateKey::Ed25519(..)"),
        }
    }
}

const CRYPTO: Error = Error::FunctionFailed("crypto backend");

impl PrivateKey {
    /// Generates a fresh key on `curve`.
    pub fn generate(curve: Curve) -> Result<Self> {
        match curve {
            Curve::P256 => {
                let kp = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
                    .map_err(|_| CRYPTO)?;
                let bin: EcPrivateKeyBin<'_> =
                    kp.private_key().as_be_bytes().map_err(|_| CRYPTO)?;
                let scalar = Zeroizing::new(bin.as_ref().to_vec());
                Ok(PrivateKey::P256 { sign: kp, scalar })
            }
            Curve::Ed25519 => {
                let kp = Ed25519KeyPair::generate().map_err(|_| CRYPTO)?;
                let seed = kp.seed().map_err(|_| CRYPTO)?;
                let bin = seed.as_be_bytes().map_err(|_| CRYPTO)?;
                let seed = Zeroizing::new(bin.as_ref().to_vec());
                Ok(PrivateKey::Ed25519 { sign: kp, seed })
            }
        }
    }

    /// Rebuilds a key from its stored secret (P-256 scalar or Ed25519 seed).
    pub fn from_secret(curve: Curve, secret: &[u8]) -> Result<Self> {
        match curve {
            Curve::P256 => {
                if secret.len() != 32 {
                    return Err(Error::AttributeValueInvalid);
                }
                let ecdh = agreement::PrivateKey::from_private_key(&agreement::ECDH_P256, secret)
                    .map_err(|_| Error::AttributeValueInvalid)?;
                let public = ecdh.compute_public_key().map_err(|_| CRYPTO)?;
                let kp = EcdsaKeyPair::from_private_key_and_public_key(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    secret,
                    public.as_ref(),
                )
                .map_err(|_| Error::AttributeValueInvalid)?;
                Ok(PrivateKey::P256 {
                    sign: kp,
                    scalar: Zeroizing::new(secret.to_vec()),
                })
            }
            Curve::Ed25519 => {
                let kp = Ed25519KeyPair::from_seed_unchecked(secret)
                    .map_err(|_| Error::AttributeValueInvalid)?;
                Ok(PrivateKey::Ed25519 {
                    sign: kp,
                    seed: Zeroizing::new(secret.to_vec()),
                })
            }
        }
    }

    /// The curve.
    pub fn curve(&self) -> Curve {
        match self {
            PrivateKey::P256 { .. } => Curve::P256,
            PrivateKey::Ed25519 { .. } => Curve::Ed25519,
        }
    }

    /// The raw secret (scalar or seed): `CKA_VALUE` of the private key.
    pub fn secret(&self) -> &[u8] {
        match self {
            PrivateKey::P256 { scalar, .. } => scalar,
            PrivateKey::Ed25519 { seed, .. } => seed,
        }
    }

    /// The raw public point: uncompressed SEC1 for P-256, 32 bytes for Ed25519.
    pub fn public_raw(&self) -> Vec<u8> {
        match self {
            PrivateKey::P256 { sign, .. } => sign.public_key().as_ref().to_vec(),
            PrivateKey::Ed25519 { sign, .. } => sign.public_key().as_ref().to_vec(),
        }
    }

    /// ECDSA over a caller-supplied hash (`CKM_ECDSA`): the value is truncated or left-padded to
    /// the 32-byte order size exactly as ECDSA's bits-to-integer conversion does.
    pub fn sign_prehashed(&self, hash: &[u8]) -> Result<Vec<u8>> {
        let PrivateKey::P256 { sign, .. } = self else {
            return Err(Error::KeyTypeInconsistent);
        };
        let mut buf = [0u8; 32];
        if hash.len() >= 32 {
            buf.copy_from_slice(&hash[..32]);
        } else {
            buf[32 - hash.len()..].copy_from_slice(hash);
        }
        let d = digest::Digest::import_less_safe(&buf, &digest::SHA256).map_err(|_| CRYPTO)?;
        Ok(sign.sign_digest(&d).map_err(|_| CRYPTO)?.as_ref().to_vec())
    }

    /// ECDSA with SHA-256 over the message (`CKM_ECDSA_SHA256`).
    pub fn sign_sha256(&self, msg: &[u8]) -> Result<Vec<u8>> {
        let PrivateKey::P256 { sign, .. } = self else {
            return Err(Error::KeyTypeInconsistent);
        };
        let rng = SystemRandom::new();
        Ok(sign.sign(&rng, msg).map_err(|_| CRYPTO)?.as_ref().to_vec())
    }

    /// Pure Ed25519 (`CKM_EDDSA` without parameters).
    pub fn sign_eddsa(&self, msg: &[u8]) -> Result<Vec<u8>> {
        let PrivateKey::Ed25519 { sign, .. } = self else {
            return Err(Error::KeyTypeInconsistent);
        };
        Ok(sign.sign(msg).as_ref().to_vec())
    }

    /// ECDH on P-256: the x coordinate of the shared point.
    pub fn ecdh(&self, peer_raw: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let PrivateKey::P256 { scalar, .. } = self else {
            return Err(Error::KeyTypeInconsistent);
        };
        let me = agreement::PrivateKey::from_private_key(&agreement::ECDH_P256, scalar)
            .map_err(|_| CRYPTO)?;
        let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, peer_raw);
        agreement::agree(&me, peer, Error::MechanismParamInvalid, |z| {
            Ok(Zeroizing::new(z.to_vec()))
        })
    }
}

/// Verifies a signature made by one of the mechanisms above against a raw public point.
pub fn verify(
    mech: SigMech,
    curve: Curve,
    public_raw: &[u8],
    data: &[u8],
    sig: &[u8],
) -> Result<()> {
    if sig.len() != SIGNATURE_LEN {
        return Err(Error::SignatureLenRange);
    }
    let ok = match (mech, curve) {
        (SigMech::EcdsaPrehashed, Curve::P256) => {
            let mut buf = [0u8; 32];
            if data.len() >= 32 {
                buf.copy_from_slice(&data[..32]);
            } else {
                buf[32 - data.len()..].copy_from_slice(data);
            }
            let d = digest::Digest::import_less_safe(&buf, &digest::SHA256).map_err(|_| CRYPTO)?;
            signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, public_raw)
                .verify_digest(&d, sig)
                .is_ok()
        }
        (SigMech::EcdsaSha256, Curve::P256) => {
            signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, public_raw)
                .verify(data, sig)
                .is_ok()
        }
        (SigMech::EdDsa, Curve::Ed25519) => {
            signature::UnparsedPublicKey::new(&signature::ED25519, public_raw)
                .verify(data, sig)
                .is_ok()
        }
        _ => return Err(Error::KeyTypeInconsistent),
    };
    if ok {
        Ok(())
    } else {
        Err(Error::SignatureInvalid)
    }
}

/// Checks a public point is on the curve (for `C_CreateObject`).
pub fn check_public(curve: Curve, raw: &[u8]) -> Result<()> {
    match curve {
        Curve::P256 => {
            if raw.len() != 65 || raw[0] != 0x04 {
                return Err(Error::AttributeValueInvalid);
            }
            // Parsing validates that the point is on the curve.
            signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, raw)
                .parse()
                .map(|_| ())
                .map_err(|_| Error::AttributeValueInvalid)
        }
        Curve::Ed25519 => {
            if raw.len() == 32 {
                Ok(())
            } else {
                Err(Error::AttributeValueInvalid)
            }
        }
    }
}

/// The signature mechanisms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigMech {
    /// `CKM_ECDSA`: the data is already a hash.
    EcdsaPrehashed,
    /// `CKM_ECDSA_SHA256`.
    EcdsaSha256,
    /// `CKM_EDDSA`.
    EdDsa,
}

/// A running SHA-256.
#[derive(Clone)]
pub struct Sha256(digest::Context);

impl Default for Sha256 {
    fn default() -> Self {
        Sha256(digest::Context::new(&digest::SHA256))
    }
}

impl Sha256 {
    /// Adds data.
    pub fn update(&mut self, d: &[u8]) {
        self.0.update(d);
    }
    /// The digest.
    pub fn finish(self) -> Vec<u8> {
        self.0.finish().as_ref().to_vec()
    }
}

/// One-shot SHA-256.
pub fn sha256(d: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA256, d).as_ref().to_vec()
}

/// Fills `buf` from the system CSPRNG.
pub fn random(buf: &mut [u8]) -> Result<()> {
    SystemRandom::new()
        .fill(buf)
        .map_err(|_| Error::FunctionFailed("random"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p256_round_trip_and_verify() {
        let k = PrivateKey::generate(Curve::P256).unwrap();
        let k2 = PrivateKey::from_secret(Curve::P256, k.secret()).unwrap();
        assert_eq!(k.public_raw(), k2.public_raw());
        let sig = k.sign_sha256(b"hello").unwrap();
        verify(
            SigMech::EcdsaSha256,
            Curve::P256,
            &k.public_raw(),
            b"hello",
            &sig,
        )
        .unwrap();
        let h = sha256(b"hello");
        verify(
            SigMech::EcdsaPrehashed,
            Curve::P256,
            &k.public_raw(),
            &h,
            &sig,
        )
        .unwrap();
        let sig2 = k.sign_prehashed(&h).unwrap();
        verify(
            SigMech::EcdsaSha256,
            Curve::P256,
            &k.public_raw(),
            b"hello",
            &sig2,
        )
        .unwrap();
        assert_eq!(
            verify(
                SigMech::EcdsaSha256,
                Curve::P256,
                &k.public_raw(),
                b"other",
                &sig
            ),
            Err(Error::SignatureInvalid)
        );
    }

    #[test]
    fn ed25519_round_trip() {
        let k = PrivateKey::generate(Curve::Ed25519).unwrap();
        let k2 = PrivateKey::from_secret(Curve::Ed25519, k.secret()).unwrap();
        assert_eq!(k.public_raw(), k2.public_raw());
        let sig = k.sign_eddsa(b"m").unwrap();
        verify(SigMech::EdDsa, Curve::Ed25519, &k.public_raw(), b"m", &sig).unwrap();
    }

    #[test]
    fn ecdh_agrees() {
        let a = PrivateKey::generate(Curve::P256).unwrap();
        let b = PrivateKey::generate(Curve::P256).unwrap();
        assert_eq!(
            *a.ecdh(&b.public_raw()).unwrap(),
            *b.ecdh(&a.public_raw()).unwrap()
        );
        assert!(a.ecdh(&[4u8; 65]).is_err());
    }

    #[test]
    fn point_wrapping() {
        let raw = [7u8; 65];
        let w = der_octet_string(&raw);
        assert_eq!(&w[..2], &[0x04, 65]);
        assert_eq!(unwrap_point(Curve::P256, &w), &raw[..]);
        assert_eq!(unwrap_point(Curve::P256, &raw), &raw[..]);
    }
}
