//! The XX handshake states.

use core::fmt;

use keywarden_vault::{PublicKey, SharedSecret};
use zeroize::Zeroizing;

use super::dh::{DHLEN, Ephemeral, PUBLIC_KEY_LEN, parse_public};
use super::symmetric::{HASHLEN, Secret32, SymmetricState, TAGLEN};
use super::{MAX_NOISE_MESSAGE_LEN, PROTOCOL_NAME};
use crate::error::HandshakeError;

/// Length of an encrypted static key in messages 2 and 3.
const ENCRYPTED_STATIC_LEN: usize = PUBLIC_KEY_LEN + TAGLEN;

fn check_len(msg: &[u8]) -> Result<(), HandshakeError> {
    if msg.len() > MAX_NOISE_MESSAGE_LEN {
        return Err(HandshakeError::Malformed("message longer than 65535 bytes"));
    }
    Ok(())
}

fn check_payload(sym: &SymmetricState, fixed: usize, payload: &[u8]) -> Result<(), HandshakeError> {
    if fixed + payload.len() + sym.overhead() > MAX_NOISE_MESSAGE_LEN {
        return Err(HandshakeError::PayloadTooLarge);
    }
    Ok(())
}

fn static_dh(dh: &SharedSecret) -> Result<&[u8], HandshakeError> {
    if dh.len() != DHLEN {
        return Err(HandshakeError::BadStaticDh(dh.len()));
    }
    Ok(dh.expose_secret())
}

fn start(prologue: &[u8]) -> SymmetricState {
    let mut sym = SymmetricState::new(PROTOCOL_NAME);
    sym.mix_hash(prologue);
    sym
}

/// The two transport keys from `Split()`, wiped on drop.
pub struct TransportKeys {
    /// The key this side encrypts with.
    pub(crate) send: Secret32,
    /// The key this side decrypts with.
    pub(crate) recv: Secret32,
}

impl TransportKeys {
    /// Keys from raw bytes, for fuzzing and tests (feature `testing`).
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn from_raw_for_testing(send: [u8; 32], recv: [u8; 32]) -> Self {
        Self {
            send: Zeroizing::new(send),
            recv: Zeroizing::new(recv),
        }
    }
}

impl fmt::Debug for TransportKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TransportKeys(..)")
    }
}

/// What a completed handshake yields.
#[derive(Debug)]
pub struct HandshakeOutcome {
    /// The peer's static public key, authenticated by the handshake.
    pub peer_static: PublicKey,
    /// The handshake hash: a unique, secret-derived name for this session (channel binding).
    pub handshake_hash: [u8; HASHLEN],
    /// The transport keys.
    pub keys: TransportKeys,
}

fn outcome(sym: &SymmetricState, peer_static: PublicKey, initiator: bool) -> HandshakeOutcome {
    let (i2r, r2i) = sym.split();
    let keys = if initiator {
        TransportKeys {
            send: i2r,
            recv: r2i,
        }
    } else {
        TransportKeys {
            send: r2i,
            recv: i2r,
        }
    };
    HandshakeOutcome {
        peer_static,
        handshake_hash: sym.handshake_hash(),
        keys,
    }
}

/// The initiator before its first message.
pub struct Initiator {
    sym: SymmetricState,
    s: PublicKey,
    e: Ephemeral,
}

impl Initiator {
    /// Starts a handshake for the static public key `static_public` (the private half stays
    /// in its vault) with the given prologue, which both sides must agree on.
    pub fn new(static_public: &PublicKey, prologue: &[u8]) -> Result<Self, HandshakeError> {
        Ok(Self::with_ephemeral(
            static_public,
            prologue,
            Ephemeral::generate()?,
        ))
    }

    fn with_ephemeral(static_public: &PublicKey, prologue: &[u8], e: Ephemeral) -> Self {
        Self {
            sym: start(prologue),
            s: static_public.clone(),
            e,
        }
    }

    /// `-> e`, with a payload sent in the clear (XX message 1 has no key yet).
    pub fn write_message_1(
        mut self,
        payload: &[u8],
    ) -> Result<(InitiatorAwaitingMessage2, Vec<u8>), HandshakeError> {
        check_payload(&self.sym, PUBLIC_KEY_LEN, payload)?;
        let mut out = Vec::with_capacity(PUBLIC_KEY_LEN + payload.len());
        out.extend_from_slice(self.e.public());
        self.sym.mix_hash(self.e.public());
        self.sym.encrypt_and_hash(payload, &mut out);
        Ok((
            InitiatorAwaitingMessage2 {
                sym: self.sym,
                s: self.s,
                e: self.e,
            },
            out,
        ))
    }
}

/// The initiator waiting for message 2.
pub struct InitiatorAwaitingMessage2 {
    sym: SymmetricState,
    s: PublicKey,
    e: Ephemeral,
}

impl InitiatorAwaitingMessage2 {
    /// `<- e, ee, s, es`: authenticates the responder's static key and decrypts its payload.
    /// The ephemeral private key is dropped (and wiped) here, after its last use.
    pub fn read_message_2(
        mut self,
        msg: &[u8],
    ) -> Result<(InitiatorNeedsStaticDh, Zeroizing<Vec<u8>>), HandshakeError> {
        check_len(msg)?;
        if msg.len() < PUBLIC_KEY_LEN + ENCRYPTED_STATIC_LEN + TAGLEN {
            return Err(HandshakeError::Malformed("message 2 is too short"));
        }
        let (re_bytes, rest) = msg.split_at(PUBLIC_KEY_LEN);
        let re = parse_public(re_bytes)?;
        self.sym.mix_hash(re_bytes);
        self.sym.mix_key(self.e.dh(&re)?.as_ref());
        let (rs_ct, payload_ct) = rest.split_at(ENCRYPTED_STATIC_LEN);
        let rs_bytes = self
            .sym
            .decrypt_and_hash(rs_ct)
            .ok_or(HandshakeError::Decrypt)?;
        let rs = parse_public(&rs_bytes)?;
        self.sym.mix_key(self.e.dh(&rs)?.as_ref());
        let payload = self
            .sym
            .decrypt_and_hash(payload_ct)
            .ok_or(HandshakeError::Decrypt)?;
        Ok((
            InitiatorNeedsStaticDh {
                sym: self.sym,
                s: self.s,
                re,
                rs,
            },
            payload,
        ))
    }
}

/// The initiator after message 2, waiting for the driver's static DH (`se`).
pub struct InitiatorNeedsStaticDh {
    sym: SymmetricState,
    s: PublicKey,
    re: PublicKey,
    rs: PublicKey,
}

impl InitiatorNeedsStaticDh {
    /// The key the driver must do ECDH with, using the initiator's static key.
    pub fn peer_ephemeral(&self) -> &PublicKey {
        &self.re
    }

    /// The responder's static key, already authenticated by message 2.
    pub fn peer_static(&self) -> &PublicKey {
        &self.rs
    }

    /// `-> s, se`: `se` is `static.agree(peer_ephemeral())`.
    pub fn write_message_3(
        mut self,
        se: &SharedSecret,
        payload: &[u8],
    ) -> Result<(Vec<u8>, HandshakeOutcome), HandshakeError> {
        let se = static_dh(se)?;
        check_payload(&self.sym, ENCRYPTED_STATIC_LEN + TAGLEN, payload)?;
        let mut out = Vec::with_capacity(ENCRYPTED_STATIC_LEN + payload.len() + TAGLEN);
        self.sym.encrypt_and_hash(self.s.as_bytes(), &mut out);
        self.sym.mix_key(se);
        self.sym.encrypt_and_hash(payload, &mut out);
        let done = outcome(&self.sym, self.rs, true);
        Ok((out, done))
    }
}

/// The responder before message 1.
pub struct Responder {
    sym: SymmetricState,
    s: PublicKey,
}

impl Responder {
    /// Starts the responder side for the static public key `static_public`.
    pub fn new(static_public: &PublicKey, prologue: &[u8]) -> Self {
        Self {
            sym: start(prologue),
            s: static_public.clone(),
        }
    }

    /// `-> e`: reads the initiator's ephemeral key and its clear payload.
    pub fn read_message_1(
        mut self,
        msg: &[u8],
    ) -> Result<(ResponderNeedsStaticDh, Zeroizing<Vec<u8>>), HandshakeError> {
        check_len(msg)?;
        if msg.len() < PUBLIC_KEY_LEN {
            return Err(HandshakeError::Malformed("message 1 is too short"));
        }
        let (re_bytes, payload) = msg.split_at(PUBLIC_KEY_LEN);
        let re = parse_public(re_bytes)?;
        self.sym.mix_hash(re_bytes);
        let payload = self
            .sym
            .decrypt_and_hash(payload)
            .ok_or(HandshakeError::Decrypt)?;
        Ok((
            ResponderNeedsStaticDh {
                sym: self.sym,
                s: self.s,
                re,
            },
            payload,
        ))
    }
}

/// The responder after message 1, waiting for the driver's static DH (`es`).
pub struct ResponderNeedsStaticDh {
    sym: SymmetricState,
    s: PublicKey,
    re: PublicKey,
}

impl ResponderNeedsStaticDh {
    /// The key the driver must do ECDH with, using the responder's static key.
    pub fn peer_ephemeral(&self) -> &PublicKey {
        &self.re
    }

    /// `<- e, ee, s, es`: `es` is `static.agree(peer_ephemeral())`.
    pub fn write_message_2(
        self,
        es: &SharedSecret,
        payload: &[u8],
    ) -> Result<(ResponderAwaitingMessage3, Vec<u8>), HandshakeError> {
        self.prepare_message_2()?.write_message_2(es, payload)
    }

    /// The part of message 2 that does not need the static DH (a fresh ephemeral key and
    /// `ee`), so a driver can do it while the vault computes `es`.
    pub fn prepare_message_2(self) -> Result<ResponderPreparedMessage2, HandshakeError> {
        self.prepare_with(Ephemeral::generate()?)
    }

    fn prepare_with(mut self, e: Ephemeral) -> Result<ResponderPreparedMessage2, HandshakeError> {
        let mut out = Vec::with_capacity(PUBLIC_KEY_LEN + ENCRYPTED_STATIC_LEN + 256);
        out.extend_from_slice(e.public());
        self.sym.mix_hash(e.public());
        self.sym.mix_key(e.dh(&self.re)?.as_ref());
        Ok(ResponderPreparedMessage2 {
            sym: self.sym,
            s: self.s,
            e,
            out,
        })
    }

    #[cfg(test)]
    fn write_message_2_with(
        self,
        e: Ephemeral,
        es: &SharedSecret,
        payload: &[u8],
    ) -> Result<(ResponderAwaitingMessage3, Vec<u8>), HandshakeError> {
        self.prepare_with(e)?.write_message_2(es, payload)
    }
}

/// The responder with its ephemeral key and `ee` done, waiting for `es`.
pub struct ResponderPreparedMessage2 {
    sym: SymmetricState,
    s: PublicKey,
    e: Ephemeral,
    out: Vec<u8>,
}

impl ResponderPreparedMessage2 {
    /// Finishes `<- e, ee, s, es`: `es` is `static.agree(peer_ephemeral())`.
    pub fn write_message_2(
        mut self,
        es: &SharedSecret,
        payload: &[u8],
    ) -> Result<(ResponderAwaitingMessage3, Vec<u8>), HandshakeError> {
        let es = static_dh(es)?;
        check_payload(
            &self.sym,
            PUBLIC_KEY_LEN + ENCRYPTED_STATIC_LEN + TAGLEN,
            payload,
        )?;
        let mut out = self.out;
        out.reserve(ENCRYPTED_STATIC_LEN + payload.len() + TAGLEN);
        self.sym.encrypt_and_hash(self.s.as_bytes(), &mut out);
        self.sym.mix_key(es);
        self.sym.encrypt_and_hash(payload, &mut out);
        Ok((
            ResponderAwaitingMessage3 {
                sym: self.sym,
                e: self.e,
            },
            out,
        ))
    }
}

/// The responder waiting for message 3.
pub struct ResponderAwaitingMessage3 {
    sym: SymmetricState,
    e: Ephemeral,
}

impl ResponderAwaitingMessage3 {
    /// `-> s, se`: authenticates the initiator's static key and decrypts its payload. The
    /// ephemeral private key is dropped (and wiped) here.
    pub fn read_message_3(
        mut self,
        msg: &[u8],
    ) -> Result<(HandshakeOutcome, Zeroizing<Vec<u8>>), HandshakeError> {
        check_len(msg)?;
        if msg.len() < ENCRYPTED_STATIC_LEN + TAGLEN {
            return Err(HandshakeError::Malformed("message 3 is too short"));
        }
        let (rs_ct, payload_ct) = msg.split_at(ENCRYPTED_STATIC_LEN);
        let rs_bytes = self
            .sym
            .decrypt_and_hash(rs_ct)
            .ok_or(HandshakeError::Decrypt)?;
        let rs = parse_public(&rs_bytes)?;
        self.sym.mix_key(self.e.dh(&rs)?.as_ref());
        let payload = self
            .sym
            .decrypt_and_hash(payload_ct)
            .ok_or(HandshakeError::Decrypt)?;
        Ok((outcome(&self.sym, rs, false), payload))
    }
}

macro_rules! redacted_debug {
    ($($t:ty),*) => {$(
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($t), "(..)"))
            }
        }
    )*};
}
redacted_debug!(
    Initiator,
    InitiatorAwaitingMessage2,
    InitiatorNeedsStaticDh,
    Responder,
    ResponderNeedsStaticDh,
    ResponderPreparedMessage2,
    ResponderAwaitingMessage3
);

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use keywarden_vault::testing::{software_ecdh, software_p256};

    fn ss(v: Vec<u8>) -> SharedSecret {
        SharedSecret::new(Zeroizing::new(v))
    }

    #[test]
    fn both_sides_agree_and_tampering_is_caught() {
        let (i_sk, i_pk) = software_p256();
        let (r_sk, r_pk) = software_p256();
        let (i, m1) = Initiator::new(&i_pk, b"p")
            .unwrap()
            .write_message_1(b"hi")
            .unwrap();
        let (r, p1) = Responder::new(&r_pk, b"p").read_message_1(&m1).unwrap();
        assert_eq!(&p1[..], b"hi");
        let es = ss(software_ecdh(&r_sk, r.peer_ephemeral()));
        let (r, m2) = r.write_message_2(&es, b"resp").unwrap();

        // Every single-bit flip of message 2 is refused.
        for bit in [0, 8 * 70, 8 * 140, 8 * (m2.len() - 1)] {
            let mut bad = m2.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let (i2, _) = Initiator::new(&i_pk, b"p")
                .unwrap()
                .write_message_1(b"")
                .unwrap();
            assert!(i2.read_message_2(&bad).is_err());
        }

        let (i, p2) = i.read_message_2(&m2).unwrap();
        assert_eq!(&p2[..], b"resp");
        assert_eq!(i.peer_static(), &r_pk);
        let se = ss(software_ecdh(&i_sk, i.peer_ephemeral()));
        let (m3, i_done) = i.write_message_3(&se, b"init").unwrap();
        let (r_done, p3) = r.read_message_3(&m3).unwrap();
        assert_eq!(&p3[..], b"init");
        assert_eq!(r_done.peer_static, i_pk);
        assert_eq!(i_done.peer_static, r_pk);
        assert_eq!(i_done.handshake_hash, r_done.handshake_hash);
        assert_eq!(*i_done.keys.send, *r_done.keys.recv);
        assert_eq!(*i_done.keys.recv, *r_done.keys.send);
        assert_ne!(*i_done.keys.send, *i_done.keys.recv);
    }

    #[test]
    fn prologue_mismatch_fails() {
        let (_, i_pk) = software_p256();
        let (r_sk, r_pk) = software_p256();
        let (i, m1) = Initiator::new(&i_pk, b"one")
            .unwrap()
            .write_message_1(b"")
            .unwrap();
        let (r, _) = Responder::new(&r_pk, b"two").read_message_1(&m1).unwrap();
        let es = ss(software_ecdh(&r_sk, r.peer_ephemeral()));
        let (_, m2) = r.write_message_2(&es, b"").unwrap();
        assert_eq!(i.read_message_2(&m2).unwrap_err(), HandshakeError::Decrypt);
    }

    #[test]
    fn wrong_static_dh_fails_at_the_peer() {
        let (_, i_pk) = software_p256();
        let (_, r_pk) = software_p256();
        let (other_sk, _) = software_p256();
        let (i, m1) = Initiator::new(&i_pk, b"")
            .unwrap()
            .write_message_1(b"")
            .unwrap();
        let (r, _) = Responder::new(&r_pk, b"").read_message_1(&m1).unwrap();
        // The responder claims r_pk but does the DH with another key.
        let es = ss(software_ecdh(&other_sk, r.peer_ephemeral()));
        let (_, m2) = r.write_message_2(&es, b"x").unwrap();
        assert_eq!(i.read_message_2(&m2).unwrap_err(), HandshakeError::Decrypt);
    }

    #[test]
    fn malformed_messages_are_refused() {
        let (_, pk) = software_p256();
        let r = Responder::new(&pk, b"");
        assert!(matches!(
            r.read_message_1(&[4; 10]),
            Err(HandshakeError::Malformed(_))
        ));
        // A compressed point is not the wire form.
        let mut m1 = vec![0x02];
        m1.extend_from_slice(&pk.as_bytes()[1..33]);
        m1.resize(65, 0);
        assert_eq!(
            Responder::new(&pk, b"").read_message_1(&m1).unwrap_err(),
            HandshakeError::InvalidPublicKey
        );
        // An off-curve point.
        let mut off = pk.as_bytes().to_vec();
        off[64] ^= 1;
        assert_eq!(
            Responder::new(&pk, b"").read_message_1(&off).unwrap_err(),
            HandshakeError::InvalidPublicKey
        );
        let too_big = vec![0u8; MAX_NOISE_MESSAGE_LEN + 1];
        assert!(Responder::new(&pk, b"").read_message_1(&too_big).is_err());
        let (i, _) = Initiator::new(&pk, b"")
            .unwrap()
            .write_message_1(b"")
            .unwrap();
        assert!(i.read_message_2(&[4; 100]).is_err());
    }

    #[test]
    fn static_dh_must_be_32_bytes() {
        let (_, pk) = software_p256();
        let (i, m1) = Initiator::new(&pk, b"")
            .unwrap()
            .write_message_1(b"")
            .unwrap();
        drop(i);
        let (r, _) = Responder::new(&pk, b"").read_message_1(&m1).unwrap();
        assert_eq!(
            r.write_message_2(&ss(vec![1; 31]), b"").unwrap_err(),
            HandshakeError::BadStaticDh(31)
        );
    }

    #[test]
    fn debug_is_redacted() {
        let (_, pk) = software_p256();
        let i = Initiator::new(&pk, b"").unwrap();
        assert_eq!(format!("{i:?}"), "Initiator(..)");
        let keys = TransportKeys {
            send: Zeroizing::new([0xab; 32]),
            recv: Zeroizing::new([0xcd; 32]),
        };
        let shown = format!("{keys:?}");
        assert!(!shown.contains("ab") && !shown.contains("cd"), "{shown}");
    }

    #[test]
    fn fixed_ephemerals_are_deterministic() {
        // Same keys and ephemerals → same messages (the state machine has no hidden state).
        let (i_sk, i_pk) = software_p256();
        let (r_sk, r_pk) = software_p256();
        let run = || {
            let i = Initiator::with_ephemeral(&i_pk, b"", Ephemeral::from_scalar(&[7; 32]));
            let (i, m1) = i.write_message_1(b"").unwrap();
            let (r, _) = Responder::new(&r_pk, b"").read_message_1(&m1).unwrap();
            let es = ss(software_ecdh(&r_sk, r.peer_ephemeral()));
            let (_, m2) = r
                .write_message_2_with(Ephemeral::from_scalar(&[9; 32]), &es, b"")
                .unwrap();
            let (i, _) = i.read_message_2(&m2).unwrap();
            let se = ss(software_ecdh(&i_sk, i.peer_ephemeral()));
            let (m3, _) = i.write_message_3(&se, b"").unwrap();
            (m1, m2, m3)
        };
        assert_eq!(run(), run());
    }
}
