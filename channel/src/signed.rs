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
