//! The transport phase: AES-256-GCM frames with an explicit 8-byte nonce, a sliding replay
//! window, rekeying at an interval and a bounded frame size.
//!
//! A frame is `nonce (8 bytes, big-endian) || ciphertext || tag (16 bytes)`, encrypted with
//! the Noise AESGCM nonce encoding (4 zero bytes, then the nonce) and empty associated data,
//! so a `snow` `StatelessTransportState` reads and writes the same frames.
//!
//! Keys change every `rekey_interval` nonces: the key for nonce `n` is the split key after
//! `n / rekey_interval` applications of Noise `REKEY`. The receiver derives a newer key only
//! to try a frame, and keeps it only if the frame authenticates; nothing in the receiver
//! changes for a refused frame.

use core::fmt;

use crate::error::FrameError;
use crate::noise::TransportKeys;
use crate::noise::symmetric::{AeadKey, TAGLEN};

/// Bytes of explicit nonce at the start of a frame.
pub const NONCE_LEN: usize = 8;
/// Bytes a frame adds to its plaintext.
pub const FRAME_OVERHEAD: usize = NONCE_LEN + TAGLEN;
/// Width of the replay window, in nonces.
pub const REPLAY_WINDOW: u64 = 1024;
/// The largest frame, matching the Noise message limit.
pub const MAX_FRAME_LEN: usize = 65535;
/// How many rekey intervals ahead of the newest accepted frame a frame may be.
const MAX_EPOCH_SKIP: u64 = 8;

/// Transport parameters. Both sides must use the same `rekey_interval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportConfig {
    /// Messages between key changes; at least [`REPLAY_WINDOW`].
    pub rekey_interval: u64,
    /// The largest frame accepted or produced (nonce, ciphertext and tag), at most
    /// [`MAX_FRAME_LEN`].
    pub max_frame_len: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            rekey_interval: 1 << 20,
            max_frame_len: MAX_FRAME_LEN,
        }
    }
}

impl TransportConfig {
    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), crate::Error> {
        if self.rekey_interval < REPLAY_WINDOW {
            return Err(crate::Error::InvalidInput(format!(
                "rekey interval {} is below the replay window of {REPLAY_WINDOW}",
                self.rekey_interval
            )));
        }
        if self.max_frame_len < FRAME_OVERHEAD + 1 || self.max_frame_len > MAX_FRAME_LEN {
            return Err(crate::Error::InvalidInput(format!(
                "max frame length {} outside {}..={MAX_FRAME_LEN}",
                self.max_frame_len,
                FRAME_OVERHEAD + 1
            )));
        }
        Ok(())
    }

    /// The largest plaintext a frame can carry.
    pub fn max_plaintext_len(&self) -> usize {
        self.max_frame_len - FRAME_OVERHEAD
    }
}

/// Splits handshake keys into the sending and receiving halves.
pub fn split(keys: TransportKeys, config: TransportConfig) -> (Sealer, Opener) {
    (
        Sealer {
            key: AeadKey::new(&keys.send),
            next: 0,
            config,
        },
        Opener {
            current: AeadKey::new(&keys.recv),
            previous: None,
            epoch: 0,
            highest: None,
            window: [0; (REPLAY_WINDOW / 64) as usize],
            config,
        },
    )
}

/// The sending half.
pub struct Sealer {
    key: AeadKey,
    next: u64,
    config: TransportConfig,
}

impl Sealer {
    /// Appends one frame carrying `plaintext` to `out`.
    pub fn seal_into(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        self.seal_parts(&[plaintext], out)
    }

    /// Appends one frame carrying the concatenation of `parts` to `out` (no intermediate
    /// buffer).
    pub fn seal_parts(&mut self, parts: &[&[u8]], out: &mut Vec<u8>) -> Result<(), FrameError> {
        let plain_len: usize = parts.iter().map(|p| p.len()).sum();
        let len = plain_len + FRAME_OVERHEAD;
        if len > self.config.max_frame_len {
            return Err(FrameError::TooLarge {
                len,
                max: self.config.max_frame_len,
            });
        }
        let n = self.next;
        if n == u64::MAX {
            return Err(FrameError::NonceExhausted);
        }
        if n != 0 && n.is_multiple_of(self.config.rekey_interval) {
            self.key = self.key.rekey();
        }
        self.next = n + 1;
        out.reserve(len);
        out.extend_from_slice(&n.to_be_bytes());
        let start = out.len();
        for p in parts {
            out.extend_from_slice(p);
        }
        self.key.seal_append(n, &[], out, start);
        Ok(())
    }

    /// One frame carrying `plaintext`.
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::new();
        self.seal_into(plaintext, &mut out)?;
        Ok(out)
    }

    /// The nonce of the next frame.
    pub fn next_nonce(&self) -> u64 {
        self.next
    }
}

/// The receiving half.
pub struct Opener {
    current: AeadKey,
    previous: Option<AeadKey>,
    epoch: u64,
    highest: Option<u64>,
    window: [u64; (REPLAY_WINDOW / 64) as usize],
    config: TransportConfig,
}

/// A key the opener derived to try one frame, committed only if the frame authenticates.
enum Candidate<'a> {
    Current(&'a AeadKey),
    Previous(&'a AeadKey),
    Ahead {
        key: AeadKey,
        previous: Option<AeadKey>,
        epoch: u64,
    },
}

impl Opener {
    fn seen(&self, n: u64) -> bool {
        let bit = n % REPLAY_WINDOW;
        self.window[(bit / 64) as usize] & (1 << (bit % 64)) != 0
    }

    fn mark(&mut self, n: u64) {
        match self.highest {
            Some(h) if n <= h => {}
            Some(h) => {
                if n - h >= REPLAY_WINDOW {
                    self.window = [0; (REPLAY_WINDOW / 64) as usize];
                } else {
                    for k in h + 1..=n {
                        let bit = k % REPLAY_WINDOW;
                        self.window[(bit / 64) as usize] &= !(1 << (bit % 64));
                    }
                }
                self.highest = Some(n);
            }
            None => {
                self.window = [0; (REPLAY_WINDOW / 64) as usize];
                self.highest = Some(n);
            }
        }
        let bit = n % REPLAY_WINDOW;
        self.window[(bit / 64) as usize] |= 1 << (bit % 64);
    }

    /// Checks the nonce against the window without changing anything.
    fn check_nonce(&self, n: u64) -> Result<(), FrameError> {
        if n == u64::MAX {
            return Err(FrameError::ReservedNonce);
        }
        if let Some(h) = self.highest
            && n <= h
        {
            if h - n >= REPLAY_WINDOW {
                return Err(FrameError::TooOld(n));
            }
            if self.seen(n) {
                return Err(FrameError::Replay(n));
            }
        }
        Ok(())
    }

    fn candidate(&self, n: u64) -> Result<Candidate<'_>, FrameError> {
        let e = n / self.config.rekey_interval;
        if e == self.epoch {
            Ok(Candidate::Current(&self.current))
        } else if e + 1 == self.epoch {
            self.previous
                .as_ref()
                .map(Candidate::Previous)
                .ok_or(FrameError::TooOld(n))
        } else if e < self.epoch {
            Err(FrameError::TooOld(n))
        } else if e - self.epoch > MAX_EPOCH_SKIP {
            Err(FrameError::TooFarAhead(n))
        } else {
            // The key of epoch `e`, and of `e - 1` unless that is the current key.
            let mut previous = None;
            let mut key = self.current.rekey();
            for _ in self.epoch + 1..e {
                let next = key.rekey();
                previous = Some(key);
                key = next;
            }
            Ok(Candidate::Ahead {
                key,
                previous,
                epoch: e,
            })
        }
    }

    /// Authenticates and decrypts one frame in place and returns its plaintext. A refused
    /// frame changes nothing (the buffer's contents are then unspecified).
    pub fn open<'a>(&mut self, frame: &'a mut [u8]) -> Result<&'a mut [u8], FrameError> {
        if frame.len() < FRAME_OVERHEAD {
            return Err(FrameError::Truncated(frame.len()));
        }
        if frame.len() > self.config.max_frame_len {
            return Err(FrameError::TooLarge {
                len: frame.len(),
                max: self.config.max_frame_len,
            });
        }
        let (nonce, body) = frame.split_at_mut(NONCE_LEN);
        let mut nb = [0u8; NONCE_LEN];
        nb.copy_from_slice(nonce);
        let n = u64::from_be_bytes(nb);
        self.check_nonce(n)?;
        let candidate = self.candidate(n)?;
        let key = match &candidate {
            Candidate::Current(k) | Candidate::Previous(k) => *k,
            Candidate::Ahead { key, .. } => key,
        };
        let plaintext = key
            .open_in_place(n, &[], body)
            .ok_or(FrameError::Authentication)?;
        if let Candidate::Ahead {
            key,
            previous,
            epoch,
        } = candidate
        {
            let old = core::mem::replace(&mut self.current, key);
            self.previous = Some(previous.unwrap_or(old));
            self.epoch = epoch;
        }
        self.mark(n);
        Ok(plaintext)
    }
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer").field("next", &self.next).finish()
    }
}

impl fmt::Debug for Opener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opener")
            .field("epoch", &self.epoch)
            .field("highest", &self.highest)
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    fn pair(config: TransportConfig) -> (Sealer, Opener) {
        let a = TransportKeys {
            send: Zeroizing::new([1; 32]),
            recv: Zeroizing::new([2; 32]),
        };
        let b = TransportKeys {
            send: Zeroizing::new([2; 32]),
            recv: Zeroizing::new([1; 32]),
        };
        let (s, _) = split(a, config);
        let (_, o) = split(b, config);
        (s, o)
    }

    fn small() -> TransportConfig {
        TransportConfig {
            rekey_interval: REPLAY_WINDOW,
            max_frame_len: 4096,
        }
    }

    #[test]
    fn round_trip_and_layout() {
        let (mut s, mut o) = pair(TransportConfig::default());
        let mut f = s.seal(b"hello").unwrap();
        assert_eq!(f.len(), 5 + FRAME_OVERHEAD);
        assert_eq!(&f[..8], &0u64.to_be_bytes());
        assert!(!f.windows(5).any(|w| w == b"hello"));
        assert_eq!(o.open(&mut f).unwrap(), b"hello");
        let mut f = s.seal(b"").unwrap();
        assert_eq!(o.open(&mut f).unwrap(), b"");
    }

    #[test]
    fn flipped_bit_is_refused_and_the_channel_survives() {
        let (mut s, mut o) = pair(small());
        let good = s.seal(b"payload").unwrap();
        for i in 0..good.len() * 8 {
            let mut bad = good.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(o.open(&mut bad).is_err(), "bit {i}");
        }
        assert_eq!(o.open(&mut good.clone()).unwrap(), b"payload");
        let mut next = s.seal(b"next").unwrap();
        assert_eq!(o.open(&mut next).unwrap(), b"next");
    }

    #[test]
    fn replay_is_refused() {
        let (mut s, mut o) = pair(small());
        let f = s.seal(b"once").unwrap();
        o.open(&mut f.clone()).unwrap();
        assert_eq!(o.open(&mut f.clone()).unwrap_err(), FrameError::Replay(0));
        let mut g = s.seal(b"twice").unwrap();
        assert_eq!(o.open(&mut g).unwrap(), b"twice");
    }

    #[test]
    fn reordering_inside_the_window_is_fine_beyond_it_is_refused() {
        let (mut s, mut o) = pair(TransportConfig::default());
        let frames: Vec<_> = (0..REPLAY_WINDOW + 10)
            .map(|i| s.seal(&i.to_be_bytes()).unwrap())
            .collect();
        // Deliver 5 first, then the last, then the rest out of order.
        o.open(&mut frames[5].clone()).unwrap();
        let last = frames.len() - 1;
        o.open(&mut frames[last].clone()).unwrap();
        // 5 is now more than the window behind the newest → too old.
        assert_eq!(
            o.open(&mut frames[0].clone()).unwrap_err(),
            FrameError::TooOld(0)
        );
        assert_eq!(
            o.open(&mut frames[20].clone()).unwrap(),
            &20u64.to_be_bytes()
        );
        assert_eq!(
            o.open(&mut frames[20].clone()).unwrap_err(),
            FrameError::Replay(20)
        );
        assert!(o.open(&mut frames[last - 1].clone()).is_ok());
    }

    #[test]
    fn truncated_frames_are_refused() {
        let (mut s, mut o) = pair(small());
        let f = s.seal(b"some bytes").unwrap();
        for len in 0..f.len() {
            let mut t = f[..len].to_vec();
            assert!(o.open(&mut t).is_err(), "len {len}");
        }
        assert_eq!(o.open(&mut f.clone()).unwrap(), b"some bytes");
    }

    #[test]
    fn messages_flow_past_many_rekeys_and_late_ones_still_open() {
        let config = small();
        let (mut s, mut o) = pair(config);
        let mut held = None;
        for i in 0..(REPLAY_WINDOW * 5 + 3) {
            let f = s.seal(&i.to_le_bytes()).unwrap();
            if i == REPLAY_WINDOW * 3 - 2 {
                held = Some(f);
                continue;
            }
            let mut f = f;
            assert_eq!(o.open(&mut f).unwrap(), &i.to_le_bytes(), "message {i}");
            if i == REPLAY_WINDOW * 3 + 5 {
                // The held frame is from the previous epoch but inside the window.
                let mut h = held.take().unwrap();
                assert!(o.open(&mut h).is_ok());
            }
        }
        assert_eq!(o.epoch, 5);
    }

    #[test]
    fn jumps_ahead_are_bounded_and_only_committed_on_success() {
        let config = small();
        let (mut s, mut o) = pair(config);
        // A forged frame claiming a far-future nonce is refused without work or change.
        let mut forged = vec![0u8; 40];
        forged[..8].copy_from_slice(&(REPLAY_WINDOW * 1000).to_be_bytes());
        assert_eq!(
            o.open(&mut forged).unwrap_err(),
            FrameError::TooFarAhead(REPLAY_WINDOW * 1000)
        );
        // A forged frame a couple of epochs ahead is tried and refused; epoch unchanged.
        forged[..8].copy_from_slice(&(REPLAY_WINDOW * 2).to_be_bytes());
        assert_eq!(o.open(&mut forged).unwrap_err(), FrameError::Authentication);
        assert_eq!(o.epoch, 0);
        let mut max = vec![0u8; 40];
        max[..8].copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(o.open(&mut max).unwrap_err(), FrameError::ReservedNonce);
        // Skipping (lost) frames across two epochs still works.
        let mut f = Vec::new();
        for _ in 0..REPLAY_WINDOW * 2 + 1 {
            f = s.seal(b"x").unwrap();
        }
        assert_eq!(o.open(&mut f).unwrap(), b"x");
        assert_eq!(o.epoch, 2);
    }

    #[test]
    fn debug_never_shows_keys() {
        let keys = || TransportKeys {
            send: Zeroizing::new([0xab; 32]),
            recv: Zeroizing::new([0xcd; 32]),
        };
        let (s, o) = split(keys(), small());
        let shown = format!("{s:?} {o:?} {s:#?} {o:#?} {:?}", keys());
        for needle in ["abab", "cdcd", "171, 171", "205, 205"] {
            assert!(!shown.contains(needle), "{shown}");
        }
    }

    #[test]
    fn sizes_are_bounded() {
        let (mut s, mut o) = pair(small());
        let max = small().max_plaintext_len();
        assert!(s.seal(&vec![0; max]).is_ok());
        assert!(matches!(
            s.seal(&vec![0; max + 1]),
            Err(FrameError::TooLarge { .. })
        ));
        let mut big = vec![0u8; 4097];
        assert!(matches!(o.open(&mut big), Err(FrameError::TooLarge { .. })));
        assert!(
            TransportConfig {
                rekey_interval: 10,
                max_frame_len: 100
            }
            .validate()
            .is_err()
        );
    }
}
