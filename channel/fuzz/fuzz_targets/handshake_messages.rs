//! Untrusted handshake bytes: each of the three Noise messages at the step that reads it,
//! and the identity payload, attestation and credential decoders. None may panic.
#![no_main]

use keywarden_channel::noise::{Initiator, Responder};
use keywarden_channel::wire::IdentityPayload;
use keywarden_channel::{Attestation, Credential, PROLOGUE};
use keywarden_vault::{PublicKey, SharedSecret};
use libfuzzer_sys::fuzz_target;
use zeroize::Zeroizing;

/// The P-256 generator, a valid static key for the state machine (no private key needed:
/// the static DH result is an input).
const G: [u8; 65] = [
    0x04, 0x6b, 0x17, 0xd1, 0xf2, 0xe1, 0x2c, 0x42, 0x47, 0xf8, 0xbc, 0xe6, 0xe5, 0x63, 0xa4,
    0x40, 0xf2, 0x77, 0x03, 0x7d, 0x81, 0x2d, 0xeb, 0x33, 0xa0, 0xf4, 0xa1, 0x39, 0x45, 0xd8,
    0x98, 0xc2, 0x96, 0x4f, 0xe3, 0x42, 0xe2, 0xfe, 0x1a, 0x7f, 0x9b, 0x8e, 0xe7, 0xeb, 0x4a,
    0x7c, 0x0f, 0x9e, 0x16, 0x2b, 0xce, 0x33, 0x57, 0x6b, 0x31, 0x5e, 0xce, 0xcb, 0xb6, 0x40,
    0x68, 0x37, 0xbf, 0x51, 0xf5,
];

fuzz_target!(|data: &[u8]| {
    let Ok(s) = PublicKey::from_sec1(&G) else { return };
    let selector = data.first().copied().unwrap_or(0) % 6;
    let body = data.get(1..).unwrap_or(&[]);
    match selector {
        0 => {
            let _ = Responder::new(&s, PROLOGUE).read_message_1(body);
        }
        1 => {
            let Ok(i) = Initiator::new(&s, PROLOGUE) else { return };
            let Ok((i, _)) = i.write_message_1(&[]) else { return };
            let _ = i.read_message_2(body);
        }
        2 => {
            // A responder that has sent message 2 reads a fuzzed message 3.
            let Ok(i) = Initiator::new(&s, PROLOGUE) else { return };
            let Ok((_, m1)) = i.write_message_1(&[]) else { return };
            let Ok((r, _)) = Responder::new(&s, PROLOGUE).read_message_1(&m1) else { return };
            let es = SharedSecret::new(Zeroizing::new(vec![7; 32]));
            let Ok((r, _)) = r.write_message_2(&es, b"payload") else { return };
            let _ = r.read_message_3(body);
        }
        3 => {
            let _ = IdentityPayload::from_bytes(body);
        }
        4 => {
            if let Ok(a) = Attestation::from_bytes(body) {
                // What parses re-encodes to the same bytes (canonical).
                assert_eq!(a.to_bytes(), body);
            }
        }
        _ => {
            if let Ok(c) = Credential::from_bytes(body) {
                assert_eq!(c.to_bytes(), body);
            }
        }
    }
});
