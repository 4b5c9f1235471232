//! The Noise `P256` DH function as `snow` implements it: public keys are 65-byte uncompressed
//! SEC1 points, the DH output is the 32-byte x-coordinate of the shared point.

use core::fmt;

use aws_lc_rs::agreement::{self, ECDH_P256, PrivateKey, UnparsedPublicKey};
use keywarden_vault::PublicKey;
use zeroize::Zeroizing;

use crate::error::HandshakeError;

/// `DHLEN` for P-256: the x-coordinate.
pub(crate) const DHLEN: usize = 32;
/// Length of a public key on the wire.
pub const PUBLIC_KEY_LEN: usize = 65;

/// Parses a P-256 public key as it appears in a handshake message: exactly 65 bytes,
/// uncompressed, on the curve.
pub(crate) fn parse_public(bytes: &[u8]) -> Result<PublicKey, HandshakeError> {
    if bytes.len() != PUBLIC_KEY_LEN || bytes[0] != 0x04 {
        return Err(HandshakeError::InvalidPublicKey);
    }
    PublicKey::from_sec1(bytes).map_err(|_| HandshakeError::InvalidPublicKey)
}

/// A software ephemeral key pair (aws-lc-rs). AWS-LC wipes the scalar when the key is freed.
pub(crate) struct Ephemeral {
    private: PrivateKey,
    public: [u8; PUBLIC_KEY_LEN],
}

impl Ephemeral {
    pub(crate) fn generate() -> Result<Self, HandshakeError> {
        let private = PrivateKey::generate(&ECDH_P256).map_err(|_| HandshakeError::Rng)?;
        let public_key = private
            .compute_public_key()
            .map_err(|_| HandshakeError::Rng)?;
        let public: [u8; PUBLIC_KEY_LEN] = public_key
            .as_ref()
            .try_into()
            .map_err(|_| HandshakeError::Rng)?;
        Ok(Self { private, public })
    }

    /// For tests: a fixed private scalar.
    #[cfg(test)]
    pub(crate) fn from_scalar(scalar: &[u8; 32]) -> Self {
        #[allow(clippy::unwrap_used)]
        let private = PrivateKey::from_private_key(&ECDH_P256, scalar).unwrap();
        #[allow(clippy::unwrap_used)]
        let public = private
            .compute_public_key()
            .unwrap()
            .as_ref()
            .try_into()
            .unwrap();
        Self { private, public }
    }

    pub(crate) fn public(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.public
    }

    /// DH with an already-validated peer key.
    pub(crate) fn dh(&self, peer: &PublicKey) -> Result<Zeroizing<[u8; DHLEN]>, HandshakeError> {
        agreement::agree(
            &self.private,
            UnparsedPublicKey::new(&ECDH_P256, peer.as_bytes()),
            HandshakeError::InvalidPublicKey,
            |secret| {
                let mut out = Zeroizing::new([0u8; DHLEN]);
                if secret.len() != DHLEN {
                    return Err(HandshakeError::InvalidPublicKey);
                }
                out.copy_from_slice(secret);
                Ok(out)
            },
        )
    }
}

impl fmt::Debug for Ephemeral {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ephemeral({})", hex::encode(self.public))
    }
}
