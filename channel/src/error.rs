//! The one error type of the crate, and the narrower errors of the pure layers.

use crate::identity::Identifier;

/// A `Result` whose error is the channel [`Error`].
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// Why a handshake message was refused. Carries no secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The message does not have the shape of this handshake step.
    #[error("malformed handshake message: {0}")]
    Malformed(&'static str),
    /// A public key in the message is not a 65-byte uncompressed point on P-256.
    #[error("handshake message carries an invalid P-256 public key")]
    InvalidPublicKey,
    /// Authentication of an encrypted part failed (tampering, wrong keys, wrong prologue).
    #[error("handshake message failed authentication")]
    Decrypt,
    /// The payload does not fit in a 65535-byte Noise message.
    #[error("handshake payload too large for a Noise message")]
    PayloadTooLarge,
    /// The static DH output the driver passed is not 32 bytes.
    #[error("static DH output must be 32 bytes, got {0}")]
    BadStaticDh(usize),
    /// The random number generator failed.
    #[error("could not generate an ephemeral key")]
    Rng,
}

/// Why a transport frame was refused. The channel's state is unchanged by a refused frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Shorter than a nonce and a tag.
    #[error("frame truncated: {0} bytes")]
    Truncated(usize),
    /// Longer than the channel's bound.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The frame's length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The nonce was already accepted.
    #[error("replayed frame (nonce {0})")]
    Replay(u64),
    /// The nonce is older than the replay window.
    #[error("frame too old for the replay window (nonce {0})")]
    TooOld(u64),
    /// The nonce is further ahead than a sender can legitimately be.
    #[error("frame nonce {0} is too far ahead")]
    TooFarAhead(u64),
    /// The nonce is the reserved value 2^64-1.
    #[error("reserved nonce")]
    ReservedNonce,
    /// AES-GCM authentication failed (tampered, truncated or foreign frame).
    #[error("frame failed authentication")]
    Authentication,
    /// The sender has used every nonce; the channel must be re-established.
    #[error("nonces exhausted")]
    NonceExhausted,
}

/// Everything that can go wrong in a channel, in terms a caller can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A handshake message was refused.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// A transport frame was refused.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The vault refused or failed an operation.
    #[error("vault: {0}")]
    Vault(#[from] keywarden_vault::Error),
    /// Bytes that should be an attestation, credential or payload do not decode.
    #[error("malformed {what}: {why}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// Why it was refused.
        why: String,
    },
    /// The peer's attestation does not verify (forged, or signed by another identity).
    #[error("attestation signature does not verify for identity {0}")]
    AttestationForged(Identifier),
    /// The peer's attestation has expired.
    #[error("attestation of {0} expired")]
    AttestationExpired(Identifier),
    /// The attested static key is not the one the Noise handshake authenticated.
    #[error("identity {0} attests a static key other than the one used in the handshake")]
    AttestedKeyMismatch(Identifier),
    /// A credential's signature does not verify.
    #[error("credential from {issuer} does not verify")]
    CredentialForged {
        /// The claimed issuer.
        issuer: Identifier,
    },
    /// A credential was issued by an authority this side does not trust.
    #[error("credential issued by untrusted authority {0}")]
    UntrustedAuthority(Identifier),
    /// A credential has expired.
    #[error("credential from {issuer} about {subject} expired")]
    CredentialExpired {
        /// The issuer.
        issuer: Identifier,
        /// The subject.
        subject: Identifier,
    },
    /// A credential is about someone other than the peer.
    #[error("credential is about {subject}, not the peer {peer}")]
    CredentialSubjectMismatch {
        /// Who the credential is about.
        subject: Identifier,
        /// The peer.
        peer: Identifier,
    },
    /// The access policy refused the peer.
    #[error("policy denied {peer}: {reason}")]
    PolicyDenied {
        /// The peer.
        peer: Identifier,
        /// The policy's reason.
        reason: String,
    },
    /// The handshake did not complete in time.
    #[error("handshake timed out after {0:?}")]
    HandshakeTimeout(std::time::Duration),
    /// The channel (or the node) is closed.
    #[error("channel closed")]
    Closed,
    /// No worker or connection has this address.
    #[error("no route to {0}")]
    NoRoute(String),
    /// The address is already taken.
    #[error("address {0} already in use")]
    AddressInUse(String),
    /// A network error.
    #[error("i/o: {0}")]
    Io(String),
    /// The caller's input is out of bounds.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The peer closed the handshake with an error report.
    #[error("peer refused the handshake: {0}")]
    PeerRefused(String),
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e.to_string())
    }
}

impl Error {
    pub(crate) fn malformed(what: &'static str, why: impl Into<String>) -> Self {
        Self::Malformed {
            what,
            why: why.into(),
        }
    }
}
