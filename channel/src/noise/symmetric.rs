//! The Noise `CipherState` and `SymmetricState` for `AESGCM` and `SHA256` (Noise spec §5.1,
//! §5.2, §4.2, §4.3), independent of the DH function.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::{digest, hmac};
use zeroize::Zeroizing;

/// Length of a SHA-256 output, of the chaining key and of the handshake hash.
pub(crate) const HASHLEN: usize = 32;
/// Length of an AES-256-GCM key.
pub(crate) const KEYLEN: usize = 32;
/// Length of an AES-GCM tag.
pub(crate) const TAGLEN: usize = 16;

/// A 32-byte secret (chaining key, cipher key), wiped on drop.
pub(crate) type Secret32 = Zeroizing<[u8; 32]>;

/// The AESGCM nonce of the Noise spec: 4 zero bytes then the 64-bit counter, big-endian.
pub(crate) fn nonce(n: u64) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[4..].copy_from_slice(&n.to_be_bytes());
    Nonce::assume_unique_for_key(bytes)
}

/// An AES-256-GCM key for the Noise nonce encoding.
pub(crate) struct AeadKey(LessSafeKey);

impl AeadKey {
    pub(crate) fn new(key: &[u8; KEYLEN]) -> Self {
        // Invariant: AES-256-GCM takes exactly 32-byte keys and `key` is `[u8; 32]`, so
        // `UnboundKey::new` cannot fail.
        #[allow(clippy::expect_used)]
        let unbound = UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte AES-256 key");
        Self(LessSafeKey::new(unbound))
    }

    /// Encrypts `out[start..]` in place and appends the tag.
    pub(crate) fn seal_append(&self, n: u64, ad: &[u8], out: &mut Vec<u8>, start: usize) {
        // Invariant: sealing fails only for inputs longer than AES-GCM's 64 GiB limit; every
        // caller bounds messages to far less.
        #[allow(clippy::expect_used)]
        let tag = self
            .0
            .seal_in_place_separate_tag(nonce(n), Aad::from(ad), &mut out[start..])
            .expect("AES-GCM seal of a bounded message");
        out.extend_from_slice(tag.as_ref());
    }

    /// Decrypts and authenticates `in_out` (ciphertext then tag) in place; returns the
    /// plaintext prefix. On failure the buffer holds garbage and nothing else changed.
    pub(crate) fn open_in_place<'a>(
        &self,
        n: u64,
        ad: &[u8],
        in_out: &'a mut [u8],
    ) -> Option<&'a mut [u8]> {
        self.0.open_in_place(nonce(n), Aad::from(ad), in_out).ok()
    }

    /// Noise `REKEY(k)`: the first 32 bytes of `ENCRYPT(k, 2^64-1, "", 32 zero bytes)`.
    pub(crate) fn rekey(&self) -> Self {
        let mut buf = Zeroizing::new(vec![0u8; KEYLEN]);
        self.seal_append(u64::MAX, &[], &mut buf, 0);
        let mut k = Zeroizing::new([0u8; KEYLEN]);
        k.copy_from_slice(&buf[..KEYLEN]);
        Self::new(&k)
    }
}

/// SHA-256 of the concatenation of `parts`.
pub(crate) fn hash(parts: &[&[u8]]) -> [u8; HASHLEN] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; HASHLEN];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Secret32 {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&key);
    for p in parts {
        ctx.update(p);
    }
    let mut out = Zeroizing::new([0u8; HASHLEN]);
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// Noise `HKDF(chaining_key, input_key_material, 2)`.
pub(crate) fn hkdf2(ck: &[u8], ikm: &[u8]) -> (Secret32, Secret32) {
    let temp = hmac(ck, &[ikm]);
    let out1 = hmac(temp.as_ref(), &[&[1u8]]);
    let out2 = hmac(temp.as_ref(), &[out1.as_ref(), &[2u8]]);
    (out1, out2)
}

/// Noise `CipherState`: a key (once set) and a nonce counter.
pub(crate) struct CipherState {
    key: Option<AeadKey>,
    n: u64,
}

impl CipherState {
    fn empty() -> Self {
        Self { key: None, n: 0 }
    }

    fn set(&mut self, key: &[u8; KEYLEN]) {
        self.key = Some(AeadKey::new(key));
        self.n = 0;
    }

    /// `EncryptWithAd`: appends the ciphertext of `plaintext` (or the plaintext itself when no
    /// key is set) to `out`.
    fn encrypt_with_ad(&mut self, ad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(plaintext);
        if let Some(key) = &self.key {
            key.seal_append(self.n, ad, out, start);
            self.n += 1;
        }
    }

    /// `DecryptWithAd`: the plaintext, or `None` when authentication fails. The counter only
    /// moves on success.
    fn decrypt_with_ad(&mut self, ad: &[u8], ciphertext: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        match &self.key {
            None => Some(buf),
            Some(key) => {
                let len = key.open_in_place(self.n, ad, &mut buf)?.len();
                buf.truncate(len);
                self.n += 1;
                Some(buf)
            }
        }
    }

    fn has_key(&self) -> bool {
        self.key.is_some()
    }
}

/// Noise `SymmetricState`.
pub(crate) struct SymmetricState {
    ck: Secret32,
    h: [u8; HASHLEN],
    cipher: CipherState,
}

impl SymmetricState {
    /// `InitializeSymmetric(protocol_name)`.
    pub(crate) fn new(protocol_name: &str) -> Self {
        let name = protocol_name.as_bytes();
        let h = if name.len() <= HASHLEN {
            let mut h = [0u8; HASHLEN];
            h[..name.len()].copy_from_slice(name);
            h
        } else {
            hash(&[name])
        };
        Self {
            ck: Zeroizing::new(h),
            h,
            cipher: CipherState::empty(),
        }
    }

    /// `MixHash(data)`.
    pub(crate) fn mix_hash(&mut self, data: &[u8]) {
        self.h = hash(&[&self.h, data]);
    }

    /// `MixKey(input_key_material)`.
    pub(crate) fn mix_key(&mut self, ikm: &[u8]) {
        let (ck, k) = hkdf2(self.ck.as_ref(), ikm);
        self.ck = ck;
        self.cipher.set(&k);
    }

    /// `EncryptAndHash(plaintext)`, appending to `out`.
    pub(crate) fn encrypt_and_hash(&mut self, plaintext: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        let h = self.h;
        self.cipher.encrypt_with_ad(&h, plaintext, out);
        let ct = out[start..].to_vec();
        self.mix_hash(&ct);
    }

    /// `DecryptAndHash(ciphertext)`; `None` when authentication fails.
    pub(crate) fn decrypt_and_hash(&mut self, ciphertext: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let h = self.h;
        let pt = self.cipher.decrypt_with_ad(&h, ciphertext)?;
        self.mix_hash(ciphertext);
        Some(pt)
    }

    /// Bytes `EncryptAndHash` adds to a plaintext of the current state.
    pub(crate) fn overhead(&self) -> usize {
        if self.cipher.has_key() { TAGLEN } else { 0 }
    }

    /// The handshake hash `h`.
    pub(crate) fn handshake_hash(&self) -> [u8; HASHLEN] {
        self.h
    }

    /// `Split()`: the initiator-to-responder key, then the responder-to-initiator key.
    pub(crate) fn split(&self) -> (Secret32, Secret32) {
        hkdf2(self.ck.as_ref(), &[])
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    //! The published cacophony vector for `Noise_XX_25519_AESGCM_SHA256`: it shares with our
    //! suite everything but the DH function (SHA-256, HKDF, AES-GCM cipher states, the XX
    //! token order). The X25519 outputs come from aws-lc-rs and are fed to our
    //! `SymmetricState` exactly as our P-256 handshake feeds its own.
    use super::*;
    use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey, X25519};

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    struct Kp(PrivateKey);
    impl Kp {
        fn new(hexkey: &str) -> Self {
            Self(PrivateKey::from_private_key(&X25519, &h(hexkey)).unwrap())
        }
        fn public(&self) -> Vec<u8> {
            self.0.compute_public_key().unwrap().as_ref().to_vec()
        }
        fn dh(&self, peer: &[u8]) -> Vec<u8> {
            agreement::agree(&self.0, UnparsedPublicKey::new(&X25519, peer), (), |s| {
                Ok(s.to_vec())
            })
            .unwrap()
        }
    }

    #[test]
    fn cacophony_xx_25519_aesgcm_sha256() {
        let prologue = h("4a6f686e2047616c74");
        let is = Kp::new("e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1");
        let ie = Kp::new("893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a");
        let rs = Kp::new("4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893");
        let re = Kp::new("bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b");
        let payloads = [
            "4c756477696720766f6e204d69736573",
            "4d757272617920526f746862617264",
            "462e20412e20486179656b",
            "4361726c204d656e676572",
            "4a65616e2d426170746973746520536179",
            "457567656e2042f6686d20766f6e2042617765726b",
        ];
        let expected = [
            "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c79444c756477696720766f6e204d69736573",
            "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f144808843757117acceb05bd7a45733bc22015c97a9d0cbaf41b80446d5988ff5127235d76b79eade70f473d6a4ef521fdcbeda5340d01e028ba793fc059f2724a83af05f12dda0448a7621a926b379a92477fd",
            "c90f1cf77eba4e50edb038991565e36c9758943a989229b6051244dc4fbecb6946744b401af2ee1a5881b65fbb87fd07cb6a328ececc9ce6ce84c399dc332d4fd521fa4bb7f467ce909395",
            "bc3fa77f6aca3e8466d7dc6bea10013e88a6a29add5132b461806c",
            "250b01074cdfe0df2ecf8ccbf1737b15a2ddb5b52fd9a396604e9c793cee3b3bb9",
            "449d4d433b3cdc3d02bf6fc881774b9df54366ebcffb9689bb13f14709822cd7ef42bcdb4d",
        ];
        let name = "Noise_XX_25519_AESGCM_SHA256";
        let mut i = SymmetricState::new(name);
        let mut r = SymmetricState::new(name);
        i.mix_hash(&prologue);
        r.mix_hash(&prologue);

        // -> e
        let mut m1 = ie.public();
        i.mix_hash(&ie.public());
        i.encrypt_and_hash(&h(payloads[0]), &mut m1);
        assert_eq!(hex::encode(&m1), expected[0]);
        r.mix_hash(&m1[..32]);
        assert_eq!(
            &r.decrypt_and_hash(&m1[32..]).unwrap()[..],
            &h(payloads[0])[..]
        );

        // <- e, ee, s, es
        let mut m2 = re.public();
        r.mix_hash(&re.public());
        r.mix_key(&re.dh(&ie.public()));
        r.encrypt_and_hash(&rs.public(), &mut m2);
        r.mix_key(&rs.dh(&ie.public()));
        r.encrypt_and_hash(&h(payloads[1]), &mut m2);
        assert_eq!(hex::encode(&m2), expected[1]);
        i.mix_hash(&m2[..32]);
        i.mix_key(&ie.dh(&m2[..32]));
        let rs_pub = i.decrypt_and_hash(&m2[32..80]).unwrap();
        assert_eq!(&rs_pub[..], &rs.public()[..]);
        i.mix_key(&ie.dh(&rs_pub));
        assert_eq!(
            &i.decrypt_and_hash(&m2[80..]).unwrap()[..],
            &h(payloads[1])[..]
        );

        // -> s, se
        let mut m3 = Vec::new();
        i.encrypt_and_hash(&is.public(), &mut m3);
        i.mix_key(&is.dh(&re.public()));
        i.encrypt_and_hash(&h(payloads[2]), &mut m3);
        assert_eq!(hex::encode(&m3), expected[2]);
        let is_pub = r.decrypt_and_hash(&m3[..48]).unwrap();
        r.mix_key(&re.dh(&is_pub));
        assert_eq!(
            &r.decrypt_and_hash(&m3[48..]).unwrap()[..],
            &h(payloads[2])[..]
        );

        assert_eq!(
            hex::encode(i.handshake_hash()),
            "1b7aefb1125762aa21a252890d00af54519638b76437444538f9a52f21e2e0dc"
        );
        assert_eq!(i.handshake_hash(), r.handshake_hash());

        // Transport: the vector uses the spec's implicit nonces, starting at 0 per direction.
        let (i2r, r2i) = i.split();
        let (k1, k2) = (AeadKey::new(&i2r), AeadKey::new(&r2i));
        let transport = [(&k2, 0u64, 3usize), (&k1, 0, 4), (&k2, 1, 5)];
        for (key, n, idx) in transport {
            let mut out = h(payloads[idx]);
            key.seal_append(n, &[], &mut out, 0);
            assert_eq!(hex::encode(&out), expected[idx], "transport message {idx}");
        }
    }

    #[test]
    fn decrypt_failure_leaves_the_counter() {
        let mut s = SymmetricState::new("Noise_XX_P256_AESGCM_SHA256");
        s.mix_key(b"ikm");
        let mut other = SymmetricState::new("Noise_XX_P256_AESGCM_SHA256");
        other.mix_key(b"ikm");
        let mut ct = Vec::new();
        other.encrypt_and_hash(b"hello", &mut ct);
        let mut bad = ct.clone();
        bad[0] ^= 1;
        assert!(s.decrypt_and_hash(&bad).is_none());
        assert_eq!(&s.decrypt_and_hash(&ct).unwrap()[..], b"hello");
    }
}
