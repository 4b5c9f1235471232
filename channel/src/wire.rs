//! Byte layouts: routed messages on a TCP connection, the kinds of channel messages, and the
//! identity payload carried in handshake messages 2 and 3.
//!
//! Every decoder here takes untrusted bytes and is a fuzz target (`channel/fuzz`).

use crate::attestation::Attestation;
use crate::credential::Credential;
use crate::encoding::{Reader, Writer};
use crate::error::{Error, Result};
use crate::node::{Address, MAX_ROUTE_LEN, Message, Route};

/// Version byte of a routed message on a connection.
const MESSAGE_VERSION: u8 = 1;
/// Largest TCP frame body: a full Noise-sized payload plus two full routes.
pub const MAX_WIRE_FRAME_LEN: usize = 65535 + 2 * (1 + MAX_ROUTE_LEN * 256) + 16;

/// Channel message kinds: the first byte of a channel payload.
pub(crate) mod kind {
    /// Handshake message 1 (to a listener).
    pub(crate) const HANDSHAKE_1: u8 = 0x01;
    /// Handshake message 2.
    pub(crate) const HANDSHAKE_2: u8 = 0x02;
    /// Handshake message 3.
    pub(crate) const HANDSHAKE_3: u8 = 0x03;
    /// A transport frame.
    pub(crate) const FRAME: u8 = 0x04;
    /// An unauthenticated handshake refusal (text), sent before keys exist.
    pub(crate) const REFUSED: u8 = 0x05;
}

/// Kinds of plaintext inside a transport frame: its first byte.
pub(crate) mod inner {
    /// Application data.
    pub(crate) const DATA: u8 = 0x00;
    /// Orderly close.
    pub(crate) const CLOSE: u8 = 0x01;
    /// Fresh credentials for the sender.
    pub(crate) const CREDENTIALS: u8 = 0x02;
    /// The responder accepted the initiator (ends the handshake).
    pub(crate) const ACCEPT: u8 = 0x03;
    /// The responder refused the initiator, with a reason (ends the handshake).
    pub(crate) const REFUSE: u8 = 0x04;
}

fn encode_route(route: &[Address], out: &mut Vec<u8>) {
    // Routes are at most MAX_ROUTE_LEN (32) addresses of at most 255 bytes: both fit a u8.
    out.push(route.len() as u8);
    for a in route {
        out.push(a.as_str().len() as u8);
        out.extend_from_slice(a.as_str().as_bytes());
    }
}

/// Appends `u32 length || body` for `msg`, leaving out the first `skip` onward addresses.
pub fn encode_message(msg: &Message, skip: usize, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.push(MESSAGE_VERSION);
    let onward = msg.onward.addresses();
    encode_route(&onward[skip.min(onward.len())..], out);
    encode_route(msg.return_route.addresses(), out);
    out.extend_from_slice(&msg.payload);
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

fn decode_route(r: &mut Reader<'_>) -> Result<Route> {
    let n = usize::from(r.u8()?);
    if n > MAX_ROUTE_LEN {
        return Err(Error::malformed("routed message", "route too long"));
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let len = usize::from(r.u8()?);
        let s = core::str::from_utf8(r.take(len)?)
            .map_err(|_| Error::malformed("routed message", "address is not UTF-8"))?;
        v.push(Address::new(s)?);
    }
    Route::from_vec(v)
}

/// Decodes a frame body (without its length prefix).
pub fn decode_message(body: &[u8]) -> Result<Message> {
    let (onward, return_route, header) = decode_header(body)?;
    Ok(Message {
        onward,
        return_route,
        payload: body[header..].to_vec(),
    })
}

/// Decodes the routes of a frame body; returns them and the header length.
pub fn decode_header(body: &[u8]) -> Result<(Route, Route, usize)> {
    if body.len() > MAX_WIRE_FRAME_LEN {
        return Err(Error::malformed("routed message", "too long"));
    }
    let mut r = Reader::new(body, "routed message");
    r.expect(MESSAGE_VERSION, "unsupported version")?;
    let onward = decode_route(&mut r)?;
    let return_route = decode_route(&mut r)?;
    let header = body.len() - r.rest().len();
    Ok((onward, return_route, header))
}

/// Decodes frame bodies from one connection, reusing the routes of the previous frame when
/// its header bytes repeat (the common case: one channel's traffic) and moving the payload
/// out of the body without copying it into a new buffer.
#[derive(Default)]
pub struct MessageDecoder {
    last_header: Vec<u8>,
    last: Option<(Route, Route)>,
}

impl MessageDecoder {
    /// Decodes `body` into a message, taking its buffer for the payload.
    pub fn decode(&mut self, mut body: Vec<u8>) -> Result<Message> {
        let (onward, return_route, header) = match &self.last {
            Some((o, r))
                if body.len() >= self.last_header.len()
                    && body[..self.last_header.len()] == self.last_header[..] =>
            {
                (o.clone(), r.clone(), self.last_header.len())
            }
            _ => {
                let (o, r, header) = decode_header(&body)?;
                self.last_header.clear();
                self.last_header.extend_from_slice(&body[..header]);
                self.last = Some((o.clone(), r.clone()));
                (o, r, header)
            }
        };
        body.drain(..header);
        Ok(Message {
            onward,
            return_route,
            payload: body,
        })
    }
}

/// Version of the identity payload.
const PAYLOAD_VERSION: u8 = 1;
/// Most credentials in one payload.
pub const MAX_CREDENTIALS: usize = 16;

/// What each side proves about itself in the handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityPayload {
    /// Binds the Noise static key to the identity.
    pub attestation: Attestation,
    /// Credentials about the identity.
    pub credentials: Vec<Credential>,
}

impl IdentityPayload {
    /// `0x01 | attestation | u8 count | credential*`, each prefixed with its `u16` length.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(PAYLOAD_VERSION).bytes(&self.attestation.to_bytes());
        w.u8(self.credentials.len().min(MAX_CREDENTIALS) as u8);
        for c in self.credentials.iter().take(MAX_CREDENTIALS) {
            w.bytes(&c.to_bytes());
        }
        w.finish()
    }

    /// Parses an identity payload (signatures are checked later).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "identity payload");
        r.expect(PAYLOAD_VERSION, "unsupported version")?;
        let attestation = Attestation::from_bytes(r.bytes()?)?;
        let n = usize::from(r.u8()?);
        if n > MAX_CREDENTIALS {
            return Err(Error::malformed("identity payload", "too many credentials"));
        }
        let mut credentials = Vec::with_capacity(n);
        for _ in 0..n {
            credentials.push(Credential::from_bytes(r.bytes()?)?);
        }
        r.finish()?;
        Ok(Self {
            attestation,
            credentials,
        })
    }
}

/// Encodes a list of credentials (for an in-channel refresh).
pub(crate) fn encode_credentials(creds: &[Credential]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(creds.len().min(MAX_CREDENTIALS) as u8);
    for c in creds.iter().take(MAX_CREDENTIALS) {
        w.bytes(&c.to_bytes());
    }
    w.finish()
}

/// Decodes a list of credentials.
pub(crate) fn decode_credentials(bytes: &[u8]) -> Result<Vec<Credential>> {
    let mut r = Reader::new(bytes, "credential refresh");
    let n = usize::from(r.u8()?);
    if n > MAX_CREDENTIALS {
        return Err(Error::malformed(
            "credential refresh",
            "too many credentials",
        ));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(Credential::from_bytes(r.bytes()?)?);
    }
    r.finish()?;
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let msg = Message {
            onward: Route::parse(["tcp#1", "relay", "listener"]).unwrap(),
            return_route: Route::parse(["sc#4"]).unwrap(),
            payload: b"bytes".to_vec(),
        };
        let mut out = Vec::new();
        encode_message(&msg, 1, &mut out);
        let len = u32::from_be_bytes(out[..4].try_into().unwrap()) as usize;
        assert_eq!(len, out.len() - 4);
        let back = decode_message(&out[4..]).unwrap();
        assert_eq!(back.onward, Route::parse(["relay", "listener"]).unwrap());
        assert_eq!(back.return_route, msg.return_route);
        assert_eq!(back.payload, msg.payload);
        for cut in 0..out.len() - 4 - 5 {
            // Any truncation inside the routes is refused, never a panic.
            let _ = decode_message(&out[4..4 + cut]);
        }
        assert!(decode_message(&[2, 0, 0]).is_err());

        // The decoder reuses routes for a repeated header and notices a changed one.
        let mut d = MessageDecoder::default();
        let first = d.decode(out[4..].to_vec()).unwrap();
        assert_eq!(first, back);
        let second = d.decode(out[4..].to_vec()).unwrap();
        assert_eq!(second, back);
        let other = Message {
            onward: Route::parse(["x", "relay", "bob"]).unwrap(),
            ..msg.clone()
        };
        let mut out2 = Vec::new();
        encode_message(&other, 1, &mut out2);
        let third = d.decode(out2[4..].to_vec()).unwrap();
        assert_eq!(third.onward, Route::parse(["relay", "bob"]).unwrap());
        let mut short = out[4..6].to_vec();
        short[0] = 1;
        assert!(d.decode(short).is_err());
        assert!(decode_message(&[1, 33]).is_err());
        assert!(decode_message(&[1, 1, 0]).is_err());
    }
}
