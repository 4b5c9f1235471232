//! Software signature verification, independent of any backend.
//!
//! ECDSA P-256/SHA-256 with the `p256` crate, Ed25519 with `ed25519-dalek` in strict mode
//! (non-canonical encodings and small-order keys are refused). Checked against Project
//! Wycheproof's vectors.

use p256::ecdsa::signature::Verifier as _;

use crate::algorithm::Algorithm;
use crate::error::{Error, Result};
use crate::public_key::{KeyKind, PublicKey};
use crate::signature::Signature;

/// Verifies `signature` over `message` with `public_key`.
///
/// Returns [`Error::InvalidInput`] when the signature does not verify or does not belong to the
/// key's kind. Accepts any message length, including empty.
pub fn verify(public_key: &PublicKey, message: &[u8], signature: &Signature) -> Result<()> {
    match (public_key.kind(), signature.algorithm()) {
        (KeyKind::P256, Algorithm::EcdsaP256Sha256) => {
            let key = public_key.to_p256().ok_or_else(mismatch)?;
            let vk = p256::ecdsa::VerifyingKey::from(key);
            let sig =
                p256::ecdsa::Signature::from_slice(signature.as_bytes()).map_err(|_| bad())?;
            vk.verify(message, &sig).map_err(|_| bad())
        }
        (KeyKind::Ed25519, Algorithm::Ed25519) => {
            let vk = public_key.to_ed25519().ok_or_else(mismatch)?;
            let sig = ed25519_dalek::Signature::from_bytes(signature.as_bytes());
            vk.verify_strict(message, &sig).map_err(|_| bad())
        }
        _ => Err(mismatch()),
    }
}

/// Verifies an ECDSA P-256/SHA-256 signature given in ASN.1 DER (strict DER only).
pub fn verify_der(public_key: &PublicKey, message: &[u8], der: &[u8]) -> Result<()> {
    verify(public_key, message, &Signature::from_der(der)?)
}

/// Verifies a fixed-size signature (`r || s` for ECDSA, 64 bytes for Ed25519) for the key's
/// algorithm family.
pub fn verify_raw(public_key: &PublicKey, message: &[u8], raw: &[u8]) -> Result<()> {
    let algorithm = match public_key.kind() {
        KeyKind::P256 => Algorithm::EcdsaP256Sha256,
        KeyKind::Ed25519 => Algorithm::Ed25519,
    };
    verify(public_key, message, &Signature::from_bytes(algorithm, raw)?)
}

fn bad() -> Error {
    Error::InvalidInput("signature does not verify".into())
}

fn mismatch() -> Error {
    Error::InvalidInput("signature algorithm does not match the public key".into())
}
