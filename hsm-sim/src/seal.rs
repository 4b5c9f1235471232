//! Key wrapping: a PIN-derived key (Argon2id) wraps the token's data key; the data key
//! encrypts each object's secret (AES-256-GCM, the object's file name as associated data).

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto;
use crate::error::{Error, Result};

/// Argon2id cost parameters, fixed per token at initialisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Iterations.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for KdfParams {
    /// OWASP's recommendation for Argon2id: 19 MiB, 2 iterations, 1 lane.
    fn default() -> Self {
        KdfParams {
            m_kib: 19 * 1024,
            t: 2,
            p: 1,
        }
    }
}

/// A 256-bit key that zeroizes on drop.
pub type Key = Zeroizing<[u8; 32]>;

/// Derives the key-encryption key from a PIN.
pub fn derive_kek(pin: &[u8], salt: &[u8], kdf: KdfParams) -> Result<Key> {
    let params = argon2::Params::new(kdf.m_kib, kdf.t, kdf.p, Some(32))
        .map_err(|_| Error::DeviceError("bad KDF parameters"))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    a.hash_password_into(pin, salt, out.as_mut())
        .map_err(|_| Error::DeviceError("KDF failed"))?;
    Ok(out)
}

/// A fresh random key.
pub fn random_key() -> Result<Key> {
    let mut k = Zeroizing::new([0u8; 32]);
    crypto::random(k.as_mut())?;
    Ok(k)
}

fn aead_key(key: &Key) -> Result<LessSafeKey> {
    let k =
        UnboundKey::new(&AES_256_GCM, key.as_ref()).map_err(|_| Error::DeviceError("AEAD key"))?;
    Ok(LessSafeKey::new(k))
}

/// Encrypts: output is nonce || ciphertext || tag.
pub fn seal(key: &Key, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    crypto::random(&mut nonce)?;
    let mut buf = plain.to_vec();
    aead_key(key)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut buf,
        )
        .map_err(|_| Error::DeviceError("seal"))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
    zeroize::Zeroize::zeroize(&mut buf);
    Ok(out)
}

/// Decrypts what [`seal`] produced. A wrong key or a modified blob gives `None`.
pub fn open(key: &Key, aad: &[u8], blob: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if blob.len() < NONCE_LEN {
        return None;
    }
    let (n, ct) = blob.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(n).ok()?;
    let mut buf = Zeroizing::new(ct.to_vec());
    let len = aead_key(key)
        .ok()?
        .open_in_place(nonce, Aad::from(aad), buf.as_mut_slice())
        .ok()?
        .len();
    buf.truncate(len);
    Some(buf)
}

/// The data key wrapped under one PIN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKey {
    /// Argon2 salt, hex.
    pub salt: String,
    /// `seal(kek, "dek", dek)`, hex.
    pub blob: String,
}

impl WrappedKey {
    /// Wraps `dek` under `pin`.
    pub fn wrap(pin: &[u8], dek: &Key, kdf: KdfParams) -> Result<Self> {
        let mut salt = [0u8; 16];
        crypto::random(&mut salt)?;
        let kek = derive_kek(pin, &salt, kdf)?;
        Ok(WrappedKey {
            salt: hex::encode(salt),
            blob: hex::encode(seal(&kek, b"dek", dek.as_ref())?),
        })
    }

    /// Unwraps with `pin`: `Ok(None)` when the PIN is wrong.
    pub fn unwrap_with(&self, pin: &[u8], kdf: KdfParams) -> Result<Option<Key>> {
        let salt = hex::decode(&self.salt).map_err(|_| Error::DeviceError("corrupt token file"))?;
        let blob = hex::decode(&self.blob).map_err(|_| Error::DeviceError("corrupt token file"))?;
        let kek = derive_kek(pin, &salt, kdf)?;
        Ok(open(&kek, b"dek", &blob).and_then(|v| {
            let arr: [u8; 32] = v.as_slice().try_into().ok()?;
            Some(Zeroizing::new(arr))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: KdfParams = KdfParams {
        m_kib: 8,
        t: 1,
        p: 1,
    };

    #[test]
    fn wrap_unwrap() {
        let dek = random_key().unwrap();
        let w = WrappedKey::wrap(b"1234", &dek, CHEAP).unwrap();
        assert_eq!(
            w.unwrap_with(b"1234", CHEAP).unwrap().unwrap().as_ref(),
            dek.as_ref()
        );
        assert!(w.unwrap_with(b"1235", CHEAP).unwrap().is_none());
    }

    #[test]
    fn seal_binds_aad() {
        let k = random_key().unwrap();
        let blob = seal(&k, b"a", b"secret").unwrap();
        assert_eq!(open(&k, b"a", &blob).unwrap().as_slice(), b"secret");
        assert!(open(&k, b"b", &blob).is_none());
    }
}
