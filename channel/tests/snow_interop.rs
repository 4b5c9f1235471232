//! Our `Noise_XX_P256_AESGCM_SHA256` against `snow` (built with its P-256 feature), an
//! independent implementation: both roles, payloads in every handshake message, transport
//! frames both ways, across rekeys.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use keywarden_channel::noise::{Initiator, PROTOCOL_NAME, Responder};
use keywarden_channel::testing::{SoftwareVault, agreement_key};
use keywarden_channel::transport::{self, NONCE_LEN, Opener, Sealer, TransportConfig};
use snow::{Builder, StatelessTransportState};

const PROLOGUE: &[u8] = b"keywarden interop";

fn config() -> TransportConfig {
    TransportConfig {
        rekey_interval: 1024,
        max_frame_len: 65535,
    }
}

fn snow_builder() -> (Builder<'static>, snow::Keypair) {
    let b = Builder::new(PROTOCOL_NAME.parse().unwrap());
    let kp = b.generate_keypair().unwrap();
    assert_eq!(
        kp.public.len(),
        65,
        "snow P-256 public keys are uncompressed SEC1"
    );
    assert_eq!(kp.public[0], 0x04);
    (b, kp)
}

/// Frames both ways: ours → snow and snow → ours, past two rekeys each way.
fn exchange(sealer: &mut Sealer, opener: &mut Opener, theirs: &mut StatelessTransportState) {
    let interval = config().rekey_interval;
    let mut buf = vec![0u8; 70000];
    for n in 0..(interval * 2 + 10) {
        if n != 0 && n % interval == 0 {
            theirs.rekey_incoming();
            theirs.rekey_outgoing();
        }
        let msg = format!("ours {n}").into_bytes();
        let frame = sealer.seal(&msg).unwrap();
        assert_eq!(&frame[..NONCE_LEN], &n.to_be_bytes());
        let len = theirs
            .read_message(n, &frame[NONCE_LEN..], &mut buf)
            .unwrap();
        assert_eq!(&buf[..len], &msg[..]);

        let msg = format!("snow {n}").into_bytes();
        let len = theirs.write_message(n, &msg, &mut buf).unwrap();
        let mut frame = n.to_be_bytes().to_vec();
        frame.extend_from_slice(&buf[..len]);
        assert_eq!(opener.open(&mut frame).unwrap(), &msg[..]);
    }
    // A large message too.
    let big = vec![0x5a; 60000];
    let frame = sealer.seal(&big).unwrap();
    let n = u64::from_be_bytes(frame[..8].try_into().unwrap());
    let len = theirs
        .read_message(n, &frame[NONCE_LEN..], &mut buf)
        .unwrap();
    assert_eq!(&buf[..len], &big[..]);
}

#[tokio::test]
async fn our_initiator_with_snow_responder() {
    let vault = SoftwareVault::new();
    let ours = agreement_key(vault, "chan").await;
    let (b, kp) = snow_builder();
    let mut resp = b
        .local_private_key(&kp.private)
        .unwrap()
        .prologue(PROLOGUE)
        .unwrap()
        .build_responder()
        .unwrap();
    let mut buf = vec![0u8; 65535];

    let (i, m1) = Initiator::new(ours.public_key(), PROLOGUE)
        .unwrap()
        .write_message_1(b"m1 payload")
        .unwrap();
    let len = resp.read_message(&m1, &mut buf).unwrap();
    assert_eq!(&buf[..len], b"m1 payload");
    let len = resp.write_message(b"m2 payload", &mut buf).unwrap();
    let (i, p2) = i.read_message_2(&buf[..len]).unwrap();
    assert_eq!(&p2[..], b"m2 payload");
    assert_eq!(i.peer_static().as_bytes(), &kp.public[..]);
    let se = ours.agree(i.peer_ephemeral()).await.unwrap();
    let (m3, done) = i.write_message_3(&se, b"m3 payload").unwrap();
    let len = resp.read_message(&m3, &mut buf).unwrap();
    assert_eq!(&buf[..len], b"m3 payload");
    assert_eq!(
        resp.get_remote_static().unwrap(),
        ours.public_key().as_bytes()
    );
    assert_eq!(resp.get_handshake_hash(), &done.handshake_hash[..]);

    let mut theirs = resp.into_stateless_transport_mode().unwrap();
    let (mut sealer, mut opener) = transport::split(done.keys, config());
    exchange(&mut sealer, &mut opener, &mut theirs);
}

#[tokio::test]
async fn snow_initiator_with_our_responder() {
    let vault = SoftwareVault::new();
    let ours = agreement_key(vault, "chan").await;
    let (b, kp) = snow_builder();
    let mut init = b
        .local_private_key(&kp.private)
        .unwrap()
        .prologue(PROLOGUE)
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut buf = vec![0u8; 65535];

    let len = init.write_message(b"first", &mut buf).unwrap();
    let (r, p1) = Responder::new(ours.public_key(), PROLOGUE)
        .read_message_1(&buf[..len])
        .unwrap();
    assert_eq!(&p1[..], b"first");
    let es = ours.agree(r.peer_ephemeral()).await.unwrap();
    let (r, m2) = r.write_message_2(&es, b"second").unwrap();
    let len = init.read_message(&m2, &mut buf).unwrap();
    assert_eq!(&buf[..len], b"second");
    assert_eq!(
        init.get_remote_static().unwrap(),
        ours.public_key().as_bytes()
    );
    let len = init.write_message(b"third", &mut buf).unwrap();
    let (done, p3) = r.read_message_3(&buf[..len]).unwrap();
    assert_eq!(&p3[..], b"third");
    assert_eq!(done.peer_static.as_bytes(), &kp.public[..]);
    assert_eq!(init.get_handshake_hash(), &done.handshake_hash[..]);

    let mut theirs = init.into_stateless_transport_mode().unwrap();
    let (mut sealer, mut opener) = transport::split(done.keys, config());
    exchange(&mut sealer, &mut opener, &mut theirs);
}

#[tokio::test]
async fn snow_refuses_our_tampered_message_and_we_refuse_its() {
    let vault = SoftwareVault::new();
    let ours = agreement_key(vault, "chan").await;
    let (b, kp) = snow_builder();
    let mut resp = b
        .local_private_key(&kp.private)
        .unwrap()
        .prologue(PROLOGUE)
        .unwrap()
        .build_responder()
        .unwrap();
    let mut buf = vec![0u8; 65535];
    let (i, m1) = Initiator::new(ours.public_key(), PROLOGUE)
        .unwrap()
        .write_message_1(b"")
        .unwrap();
    resp.read_message(&m1, &mut buf).unwrap();
    let len = resp.write_message(b"payload", &mut buf).unwrap();
    let mut m2 = buf[..len].to_vec();
    let last = m2.len() - 1;
    m2[last] ^= 0x80;
    assert!(i.read_message_2(&m2).is_err());
}
