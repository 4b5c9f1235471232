//! `Noise_XX_P256_AESGCM_SHA256` as a pure state machine: no I/O, no clock, no vault.
//!
//! The static DH of each side is the only operation that needs the private static key, so the
//! state machine stops right before it and hands the driver the peer's ephemeral key; the
//! driver computes the DH with its [`AgreementKey`](keywarden_vault::AgreementKey) (which may
//! be a round trip to an HSM) and passes the result to the next step. Each step consumes its
//! state, so a step cannot be repeated or skipped.
//!
//! ```text
//! Initiator                                   Responder
//! Initiator::new ─ write_message_1 ──► e ──►  Responder::new ─ read_message_1
//!                                             (driver: es = static.agree(peer_ephemeral))
//! read_message_2 ◄── e, ee, s, es ◄────────── write_message_2(es)
//! (driver: se = static.agree(peer_ephemeral))
//! write_message_3(se) ──► s, se ──────────►   read_message_3
//! ```

mod dh;
mod handshake;
pub(crate) mod symmetric;

pub use dh::PUBLIC_KEY_LEN;
pub use handshake::{
    HandshakeOutcome, Initiator, InitiatorAwaitingMessage2, InitiatorNeedsStaticDh, Responder,
    ResponderAwaitingMessage3, ResponderNeedsStaticDh, ResponderPreparedMessage2, TransportKeys,
};

/// The Noise protocol name.
pub const PROTOCOL_NAME: &str = "Noise_XX_P256_AESGCM_SHA256";

/// The largest Noise message (Noise spec §3).
pub const MAX_NOISE_MESSAGE_LEN: usize = 65535;
