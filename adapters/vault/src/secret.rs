//! The output of key agreement.

use core::fmt;

use zeroize::Zeroizing;

/// A shared secret from ECDH (the x-coordinate of the shared point for P-256).
///
/// It is wiped from memory when dropped, cannot be cloned, and prints as `SharedSecret(..)`.
/// Feed it to a KDF (HKDF, the Noise handshake) rather than using it as a key directly.
pub struct SharedSecret(Zeroizing<Vec<u8>>);

impl SharedSecret {
    /// Takes ownership of secret bytes. The caller should pass a buffer it does not keep.
    pub fn new(bytes: Zeroizing<Vec<u8>>) -> Self {
        Self(bytes)
    }

    /// The secret bytes. Keep the borrow short and never log it.
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if empty (never for a real agreement).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedSecret(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = SharedSecret::new(Zeroizing::new(vec![0xab; 32]));
        let shown = format!("{s:?} {s:#?}");
        assert_eq!(shown, "SharedSecret(..) SharedSecret(..)");
        assert!(!shown.to_lowercase().contains("ab"));
        assert_eq!(s.len(), 32);
    }
}
