//! Randomized inputs for every decoder of untrusted bytes, in the normal test run (the
//! cargo-fuzz targets in channel/fuzz go deeper): mutations of valid encodings and random
//! bytes must be refused or, if accepted, be canonical; nothing panics.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::*;
use keywarden_channel::noise::{Initiator, Responder, TransportKeys};
use keywarden_channel::testing::{agreement_key, signing_key};
use keywarden_channel::transport::{self, TransportConfig};
use keywarden_channel::wire::{IdentityPayload, MessageDecoder, decode_message};
use keywarden_channel::{Attestation, Credential, Identity, PROLOGUE};
use keywarden_vault::SharedSecret;
use zeroize::Zeroizing;

/// xorshift64*: deterministic, so a failure names its seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn mutate(&mut self, valid: &[u8]) -> Vec<u8> {
        let mut v = valid.to_vec();
        for _ in 0..=self.below(3) {
            match self.below(5) {
                0 if !v.is_empty() => {
                    let i = self.below(v.len());
                    v[i] ^= 1 << self.below(8);
                }
                1 => v.truncate(self.below(v.len() + 1)),
                2 => {
                    let i = self.below(v.len() + 1);
                    v.insert(i, self.next() as u8);
                }
                3 if !v.is_empty() => {
                    let i = self.below(v.len());
                    v.remove(i);
                }
                _ => {
                    let n = self.below(64);
                    v = (0..n).map(|_| self.next() as u8).collect();
                }
            }
        }
        v
    }
}

#[tokio::test]
async fn signed_objects_and_payloads() {
    let vault = software_vault();
    let id = Identity::new(signing_key(vault.clone(), "id").await);
    let dh = agreement_key(vault, "dh").await;
    let att = id.attest(dh.public_key(), in_an_hour()).await.unwrap();
    let cred = id
        .issue_credential(
            &id.identifier(),
            attrs(&[("a", "1"), ("b", "2")]),
            in_an_hour(),
        )
        .await
        .unwrap();
    let payload = IdentityPayload {
        attestation: att.clone(),
        credentials: vec![cred.clone()],
    }
    .to_bytes();
    let mut rng = Rng(0x5eed_0001);
    for _ in 0..3000 {
        let a = rng.mutate(&att.to_bytes());
        if let Ok(p) = Attestation::from_bytes(&a) {
            assert_eq!(p.to_bytes(), a);
        }
        let c = rng.mutate(&cred.to_bytes());
        if let Ok(p) = Credential::from_bytes(&c) {
            assert_eq!(p.to_bytes(), c);
        }
        let p = rng.mutate(&payload);
        if let Ok(x) = IdentityPayload::from_bytes(&p) {
            assert_eq!(x.to_bytes(), p);
        }
    }
}

#[tokio::test]
async fn handshake_readers() {
    let vault = software_vault();
    let k = agreement_key(vault, "dh").await;
    let (i, m1) = Initiator::new(k.public_key(), PROLOGUE)
        .unwrap()
        .write_message_1(&[])
        .unwrap();
    let (r, _) = Responder::new(k.public_key(), PROLOGUE)
        .read_message_1(&m1)
        .unwrap();
    let es = k.agree(r.peer_ephemeral()).await.unwrap();
    let (_, m2) = r.write_message_2(&es, b"payload").unwrap();
    drop(i);
    let mut rng = Rng(0x5eed_0002);
    for _ in 0..300 {
        let bad1 = rng.mutate(&m1);
        let _ = Responder::new(k.public_key(), PROLOGUE).read_message_1(&bad1);
        let bad2 = rng.mutate(&m2);
        let (i, _) = Initiator::new(k.public_key(), PROLOGUE)
            .unwrap()
            .write_message_1(&[])
            .unwrap();
        assert!(
            i.read_message_2(&bad2).is_err(),
            "a message 2 for another handshake"
        );
        let (_, m1b) = Initiator::new(k.public_key(), PROLOGUE)
            .unwrap()
            .write_message_1(&[])
            .unwrap();
        let (r, _) = Responder::new(k.public_key(), PROLOGUE)
            .read_message_1(&m1b)
            .unwrap();
        let ss = SharedSecret::new(Zeroizing::new(vec![3; 32]));
        let (r, _) = r.write_message_2(&ss, b"").unwrap();
        let bad3 = rng.mutate(&m2);
        assert!(r.read_message_3(&bad3).is_err());
    }
}

#[test]
fn transport_frames_and_routed_messages() {
    let config = TransportConfig {
        rekey_interval: 1024,
        max_frame_len: 4096,
    };
    let (mut sealer, _) = transport::split(
        TransportKeys::from_raw_for_testing([1; 32], [2; 32]),
        config,
    );
    let (_, mut opener) = transport::split(
        TransportKeys::from_raw_for_testing([2; 32], [1; 32]),
        config,
    );
    let mut rng = Rng(0x5eed_0003);
    let mut delivered = 0;
    for n in 0..3000u32 {
        let good = sealer.seal(&n.to_be_bytes()).unwrap();
        let bad = rng.mutate(&good);
        if bad != good {
            assert!(
                opener.open(&mut bad.clone()).is_err(),
                "forged frame accepted"
            );
        }
        if opener.open(&mut good.clone()).is_ok() {
            delivered += 1;
        }
        let _ = decode_message(&bad);
        let mut d = MessageDecoder::default();
        let _ = d.decode(bad.clone());
        let _ = d.decode(bad);
    }
    assert_eq!(delivered, 3000, "every genuine frame still opens");
}
