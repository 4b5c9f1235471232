//! Domain-separated signatures over canonical encodings.
//!
//! What is signed is `domain || body`, where `domain` names the kind of object and its
//! version (`keywarden-channel/attestation/v1\n`, …) and `body` starts with the same kind and
//! version bytes. A signature over one kind of object therefore never verifies as another.

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use keywarden_vault::{KeyKind, PublicKey, SigningKey};

use crate::error::Result;

/// Length of a signature on the wire (`r || s` for ECDSA P-256, 64 bytes for Ed25519).
pub(crate) const SIGNATURE_LEN: usize = 64;

/// The kinds of signed objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Attestation,
    Credential,
}

impl Kind {
    pub(crate) fn tag(self) -> u8 {
        match self {
            Self::Attestation => 0x01,
            Self::Credential => 0x02,
        }
    }

    fn domain(self) -> &'static [u8] {
        match self {
            Self::Attestation => b"keywarden-channel/attestation/v1\n",
            Self::Credential => b"keywarden-channel/credential/v1\n",
        }
    }
}

/// Signs `domain(kind) || body`.
pub(crate) async fn sign(key: &SigningKey, kind: Kind, body: &[u8]) -> Result<[u8; SIGNATURE_LEN]> {
    let msg = [kind.domain(), body].concat();
    let sig = key.sign(&msg).await?;
    Ok(*sig.as_bytes())
}

/// Verifies a signature by `signer` over `domain(kind) || body`.
pub(crate) fn verify(signer: &PublicKey, kind: Kind, body: &[u8], sig: &[u8]) -> bool {
    let msg = [kind.domain(), body].concat();
    let alg: &'static dyn signature::VerificationAlgorithm = match signer.kind() {
        KeyKind::P256 => &signature::ECDSA_P256_SHA256_FIXED,
        KeyKind::Ed25519 => &signature::ED25519,
        _ => return false,
    };
    UnparsedPublicKey::new(alg, signer.as_bytes())
        .verify(&msg, sig)
        .is_ok()
}

/// Seconds since the Unix epoch (0 for times before it).
pub(crate) fn unix(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Signatures already verified, by SHA-256 of `domain || body || signature`. Only the
/// signature check is skipped on a hit; expiry, trust and key binding are checked on every
/// use. Bounded: cleared when full.
#[derive(Default)]
pub(crate) struct SignatureCache(std::sync::Mutex<std::collections::HashSet<[u8; 32]>>);

/// Entries kept before the cache is cleared.
const SIGNATURE_CACHE_LIMIT: usize = 4096;

impl SignatureCache {
    /// Like [`verify`], remembering successes.
    pub(crate) fn verify(&self, signer: &PublicKey, kind: Kind, body: &[u8], sig: &[u8]) -> bool {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(kind.domain());
        ctx.update(&signer.to_spki_der());
        ctx.update(body);
        ctx.update(sig);
        let mut key = [0u8; 32];
        key.copy_from_slice(ctx.finish().as_ref());
        if let Ok(set) = self.0.lock()
            && set.contains(&key)
        {
            return true;
        }
        let ok = verify(signer, kind, body, sig);
        if ok && let Ok(mut set) = self.0.lock() {
            if set.len() >= SIGNATURE_CACHE_LIMIT {
                set.clear();
            }
            set.insert(key);
        }
        ok
    }
}

impl core::fmt::Debug for SignatureCache {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let n = self.0.lock().map(|s| s.len()).unwrap_or(0);
        write!(f, "SignatureCache({n} entries)")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};

    #[test]
    fn the_cache_remembers_only_valid_signatures_of_the_exact_bytes() {
        let kp = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let pk = PublicKey::from_sec1(kp.public_key().as_ref()).unwrap();
        let body = b"\x01\x01body";
        let msg = [Kind::Attestation.domain(), &body[..]].concat();
        let sig = kp.sign(&SystemRandom::new(), &msg).unwrap();
        let cache = SignatureCache::default();
        let mut forged = sig.as_ref().to_vec();
        forged[63] ^= 1;
        assert!(!cache.verify(&pk, Kind::Attestation, body, &forged));
        assert!(cache.verify(&pk, Kind::Attestation, body, sig.as_ref()));
        assert!(cache.verify(&pk, Kind::Attestation, body, sig.as_ref()));
        // Neither a forged signature, another kind, nor other bytes ride on the cached entry.
        assert!(!cache.verify(&pk, Kind::Attestation, body, &forged));
        assert!(!cache.verify(&pk, Kind::Credential, body, sig.as_ref()));
        assert!(!cache.verify(&pk, Kind::Attestation, b"\x01\x01bodx", sig.as_ref()));
        assert_eq!(format!("{cache:?}"), "SignatureCache(1 entries)");
    }
}
