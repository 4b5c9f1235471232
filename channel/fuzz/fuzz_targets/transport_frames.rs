//! Untrusted transport bytes: a sequence of frames for one receiver (which must refuse all
//! forgeries and never panic), and routed-message decoding as a TCP connection does it.
#![no_main]

use keywarden_channel::noise::TransportKeys;
use keywarden_channel::transport::{self, TransportConfig};
use keywarden_channel::wire::{MessageDecoder, decode_message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let config = TransportConfig {
        rekey_interval: 1024,
        max_frame_len: 4096,
    };
    // Genuine frames from a sealer with the same keys, so the fuzzer can also splice real
    // frames (the receiver must accept each nonce at most once).
    let (mut sealer, _) = transport::split(TransportKeys::from_raw_for_testing([1; 32], [2; 32]), config);
    let (_, mut opener) = transport::split(TransportKeys::from_raw_for_testing([2; 32], [1; 32]), config);
    let mut accepted = std::collections::HashSet::new();
    for chunk in data.split(|&b| b == 0xff).take(64) {
        let mut frame = chunk.to_vec();
        if frame.first() == Some(&0xfe) {
            // Replace with a genuine frame of the remaining bytes.
            frame = sealer.seal(&chunk[1..]).unwrap_or_default();
        }
        let nonce = frame.get(..8).map(|n| u64::from_be_bytes(n.try_into().unwrap_or([0; 8])));
        if opener.open(&mut frame).is_ok() {
            assert!(accepted.insert(nonce), "a nonce was accepted twice");
        }
    }
    let _ = decode_message(data);
    let mut d = MessageDecoder::default();
    let _ = d.decode(data.to_vec());
    let _ = d.decode(data.to_vec());
});
