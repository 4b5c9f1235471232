//! A fake YubiHSM 2 behind a fake yubihsm-connector, written from the YubiHSM 2 protocol
//! description, so that Derive ECDH (which MockHsm lacks) can be exercised end to end through
//! the yubihsm crate's real client: HTTP, the SCP03 secure channel (session keys derived from
//! the password, AES-CBC with counter-derived IVs, C-MAC/R-MAC chaining), and the command
//! encodings.
//!
//! It implements only what the ECDH tests need: Create/Authenticate Session, Session
//! Message, and inside it Device Info, Get Object Info, Get Public Key, Generate Asymmetric
//! Key (EC P-256) and Derive ECDH, with capability enforcement like the real device. Every
//! decrypted inner command is logged so tests can check the bytes on the wire.
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::thread;

use aes::Aes128;
use aes::cipher::block_padding::Iso7816;
use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockDecryptMut, BlockEncrypt, BlockEncryptMut, KeyInit, KeyIvInit};
use cmac::{Cmac, Mac};
use p256::elliptic_curve::sec1::ToSec1Point;

const CMD_CREATE_SESSION: u8 = 0x03;
const CMD_AUTHENTICATE_SESSION: u8 = 0x04;
const CMD_SESSION_MESSAGE: u8 = 0x05;
const CMD_DEVICE_INFO: u8 = 0x06;
const CMD_GENERATE_ASYMMETRIC_KEY: u8 = 0x46;
const CMD_GET_OBJECT_INFO: u8 = 0x4e;
const CMD_GET_PUBLIC_KEY: u8 = 0x54;
const CMD_SIGN_ECDSA: u8 = 0x56;
pub const CMD_DERIVE_ECDH: u8 = 0x57;
const CMD_ERROR: u8 = 0x7f;

const ERR_INVALID_COMMAND: u8 = 0x01;
const ERR_INVALID_DATA: u8 = 0x02;
const ERR_INVALID_SESSION: u8 = 0x03;
const ERR_AUTHENTICATION_FAILED: u8 = 0x04;
const ERR_INSUFFICIENT_PERMISSIONS: u8 = 0x09;
const ERR_OBJECT_NOT_FOUND: u8 = 0x0b;
const ERR_OBJECT_EXISTS: u8 = 0x11;

const ALG_EC_P256: u8 = 0x0c;
const ALG_ECDH: u8 = 0x18;
const ALG_ECDSA_SHA256: u8 = 0x2b;
const TYPE_ASYMMETRIC_KEY: u8 = 0x03;

pub const CAP_SIGN_ECDSA: u64 = 0x80;
pub const CAP_DERIVE_ECDH: u64 = 0x800;

type CbcEnc = cbc::Encryptor<Aes128>;
type CbcDec = cbc::Decryptor<Aes128>;

struct Session {
    enc: [u8; 16],
    mac: [u8; 16],
    rmac: [u8; 16],
    chain: [u8; 16],
    counter: u32,
    host_cryptogram: [u8; 8],
    authenticated: bool,
}

pub struct Key {
    secret: p256::SecretKey,
    pub label: [u8; 40],
    pub capabilities: u64,
    pub domains: u16,
}

/// What the fake holds and how it misbehaves on request.
pub struct State {
    auth_enc: [u8; 16],
    auth_mac: [u8; 16],
    sessions: HashMap<u8, Session>,
    next_session: u8,
    pub keys: BTreeMap<u16, Key>,
    /// Every decrypted inner command, as sent: code, length (2 bytes), data.
    pub log: Vec<Vec<u8>>,
    /// Refuse Derive ECDH with `INSUFFICIENT_PERMISSIONS`, as a device does when the
    /// authentication key lacks `derive-ecdh`.
    pub refuse_derive: bool,
    /// Answer Derive ECDH with a whole point instead of the x-coordinate.
    pub malformed_derive_answer: bool,
}

/// A fake YubiHSM 2 served over HTTP on a loopback port (until the test process ends).
#[derive(Clone)]
pub struct FakeYubiHsm {
    pub state: Arc<Mutex<State>>,
    pub port: u16,
}

fn cmac(key: &[u8; 16], parts: &[&[u8]]) -> [u8; 16] {
    let mut m = <Cmac<Aes128> as KeyInit>::new_from_slice(key).unwrap();
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// SCP03 key derivation (NIST SP 800-108 counter mode with AES-CMAC), as the YubiHSM uses it.
fn kdf(key: &[u8; 16], constant: u8, context: &[u8; 16], out: &mut [u8]) {
    let mut data = [0u8; 32];
    data[11] = constant;
    data[12] = 0x00;
    data[13..15].copy_from_slice(&((out.len() * 8) as u16).to_be_bytes());
    data[15] = 0x01;
    data[16..].copy_from_slice(context);
    let tag = cmac(key, &[&data]);
    out.copy_from_slice(&tag[..out.len()]);
}

fn key16(key: &[u8; 16], constant: u8, context: &[u8; 16]) -> [u8; 16] {
    let mut out = [0u8; 16];
    kdf(key, constant, context, &mut out);
    out
}

fn icv(enc: &[u8; 16], counter: u32) -> [u8; 16] {
    let mut block = [0u8; 16];
    block[12..].copy_from_slice(&counter.to_be_bytes());
    let cipher = Aes128::new(GenericArray::from_slice(enc));
    cipher.encrypt_block(GenericArray::from_mut_slice(&mut block));
    block
}

fn frame(code: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![code];
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn device_error(code: u8) -> Vec<u8> {
    frame(CMD_ERROR, &[code])
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).unwrap();
    b
}

impl FakeYubiHsm {
    /// A fake whose authentication key 1 has `password`, listening on a free loopback port.
    pub fn start(password: &str) -> Self {
        let auth = keywarden_yubihsm::yubihsm::authentication::Key::derive_from_password(
            password.as_bytes(),
        );
        let secret = auth.as_secret_slice();
        let state = State {
            auth_enc: secret[..16].try_into().unwrap(),
            auth_mac: secret[16..].try_into().unwrap(),
            sessions: HashMap::new(),
            next_session: 0,
            keys: BTreeMap::new(),
            log: Vec::new(),
            refuse_derive: false,
            malformed_derive_answer: false,
        };
        let state = Arc::new(Mutex::new(state));
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let port = server.server_addr().to_ip().unwrap().port();
        let shared = Arc::clone(&state);
        thread::spawn(move || {
            for mut request in server.incoming_requests() {
                let mut body = Vec::new();
                std::io::Read::read_to_end(request.as_reader(), &mut body).unwrap();
                let answer = if request.url() == "/connector/api" {
                    shared.lock().unwrap().handle(&body)
                } else {
                    b"status=OK\n".to_vec()
                };
                let _ = request.respond(tiny_http::Response::from_data(answer));
            }
        });
        Self { state, port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The logged inner commands with the given code.
    pub fn commands(&self, code: u8) -> Vec<Vec<u8>> {
        let state = self.state.lock().unwrap();
        state.log.iter().filter(|c| c[0] == code).cloned().collect()
    }
}

impl State {
    fn handle(&mut self, request: &[u8]) -> Vec<u8> {
        assert!(request.len() >= 3, "short request");
        let len = usize::from(u16::from_be_bytes([request[1], request[2]]));
        assert_eq!(len + 3, request.len(), "length field");
        let body = &request[3..];
        match request[0] {
            CMD_CREATE_SESSION => self.create_session(body),
            CMD_AUTHENTICATE_SESSION => self.authenticate_session(body),
            CMD_SESSION_MESSAGE => self.session_message(body),
            _ => device_error(ERR_INVALID_COMMAND),
        }
    }

    fn create_session(&mut self, body: &[u8]) -> Vec<u8> {
        let auth_key_id = u16::from_be_bytes([body[0], body[1]]);
        if auth_key_id != 1 {
            return device_error(ERR_OBJECT_NOT_FOUND);
        }
        let mut context = [0u8; 16];
        context[..8].copy_from_slice(&body[2..10]);
        context[8..].copy_from_slice(&random::<8>());
        let enc = key16(&self.auth_enc, 0b100, &context);
        let mac = key16(&self.auth_mac, 0b110, &context);
        let rmac = key16(&self.auth_mac, 0b111, &context);
        let mut card_cryptogram = [0u8; 8];
        kdf(&mac, 0, &context, &mut card_cryptogram);
        let mut host_cryptogram = [0u8; 8];
        kdf(&mac, 1, &context, &mut host_cryptogram);
        let id = self.next_session;
        self.next_session = (self.next_session + 1) % 16;
        self.sessions.insert(
            id,
            Session {
                enc,
                mac,
                rmac,
                chain: [0; 16],
                counter: 0,
                host_cryptogram,
                authenticated: false,
            },
        );
        let mut out = vec![id];
        out.extend_from_slice(&context[8..]);
        out.extend_from_slice(&card_cryptogram);
        frame(CMD_CREATE_SESSION | 0x80, &out)
    }

    fn check_cmac(s: &mut Session, code: u8, body: &[u8]) -> Option<()> {
        let (signed, tag) = body.split_at(body.len().checked_sub(8)?);
        let len = (body.len() as u16).to_be_bytes();
        let full = cmac(&s.mac, &[&s.chain, &[code], &len, signed]);
        if full[..8] != *tag {
            return None;
        }
        s.chain = full;
        Some(())
    }

    fn authenticate_session(&mut self, body: &[u8]) -> Vec<u8> {
        let Some(s) = self.sessions.get_mut(&body[0]) else {
            return device_error(ERR_INVALID_SESSION);
        };
        if body.len() != 1 + 8 + 8 || body[1..9] != s.host_cryptogram {
            return device_error(ERR_AUTHENTICATION_FAILED);
        }
        if Self::check_cmac(s, CMD_AUTHENTICATE_SESSION, body).is_none() {
            return device_error(ERR_AUTHENTICATION_FAILED);
        }
        s.authenticated = true;
        s.counter = 1;
        frame(CMD_AUTHENTICATE_SESSION | 0x80, &[])
    }

    fn session_message(&mut self, body: &[u8]) -> Vec<u8> {
        let sid = body[0];
        let inner = {
            let Some(s) = self.sessions.get_mut(&sid) else {
                return device_error(ERR_INVALID_SESSION);
            };
            if !s.authenticated || Self::check_cmac(s, CMD_SESSION_MESSAGE, body).is_none() {
                return device_error(ERR_INVALID_SESSION);
            }
            let mut ct = body[1..body.len() - 8].to_vec();
            let iv = icv(&s.enc, s.counter);
            let dec = CbcDec::new(
                GenericArray::from_slice(&s.enc),
                GenericArray::from_slice(&iv),
            );
            match dec.decrypt_padded_mut::<Iso7816>(&mut ct) {
                Ok(plain) => plain.to_vec(),
                Err(_) => return device_error(ERR_INVALID_DATA),
            }
        };
        self.log.push(inner.clone());
        let answer = self.command(&inner);
        let s = self.sessions.get_mut(&sid).expect("session checked above");
        let iv = icv(&s.enc, s.counter);
        let mut buf = answer.clone();
        buf.extend_from_slice(&[0u8; 16]);
        let enc = CbcEnc::new(
            GenericArray::from_slice(&s.enc),
            GenericArray::from_slice(&iv),
        );
        let ct = enc
            .encrypt_padded_mut::<Iso7816>(&mut buf, answer.len())
            .unwrap()
            .to_vec();
        let len = ((1 + ct.len() + 8) as u16).to_be_bytes();
        let rmac = cmac(
            &s.rmac,
            &[&s.chain, &[CMD_SESSION_MESSAGE | 0x80], &len, &[sid], &ct],
        );
        s.counter += 1;
        let mut out = vec![sid];
        out.extend_from_slice(&ct);
        out.extend_from_slice(&rmac[..8]);
        frame(CMD_SESSION_MESSAGE | 0x80, &out)
    }

    fn command(&mut self, inner: &[u8]) -> Vec<u8> {
        let code = inner[0];
        let data = &inner[3..];
        let ok = |d: &[u8]| frame(code | 0x80, d);
        let id = || u16::from_be_bytes([data[0], data[1]]);
        match code {
            CMD_DEVICE_INFO => {
                let mut d = vec![2, 4, 0];
                d.extend_from_slice(&12_345_678u32.to_be_bytes());
                d.extend_from_slice(&[62, 0, ALG_EC_P256, ALG_ECDH, ALG_ECDSA_SHA256]);
                ok(&d)
            }
            CMD_GET_OBJECT_INFO => {
                if data[2] != TYPE_ASYMMETRIC_KEY {
                    return device_error(ERR_OBJECT_NOT_FOUND);
                }
                let Some(k) = self.keys.get(&id()) else {
                    return device_error(ERR_OBJECT_NOT_FOUND);
                };
                let mut d = Vec::new();
                d.extend_from_slice(&k.capabilities.to_be_bytes());
                d.extend_from_slice(&id().to_be_bytes());
                d.extend_from_slice(&64u16.to_be_bytes());
                d.extend_from_slice(&k.domains.to_be_bytes());
                d.extend_from_slice(&[TYPE_ASYMMETRIC_KEY, ALG_EC_P256, 1, 0x01]);
                d.extend_from_slice(&k.label);
                d.extend_from_slice(&0u64.to_be_bytes());
                ok(&d)
            }
            CMD_GET_PUBLIC_KEY => {
                let Some(k) = self.keys.get(&id()) else {
                    return device_error(ERR_OBJECT_NOT_FOUND);
                };
                let point = k.secret.public_key().to_sec1_point(false);
                let mut d = vec![ALG_EC_P256];
                d.extend_from_slice(&point.as_bytes()[1..]);
                ok(&d)
            }
            CMD_GENERATE_ASYMMETRIC_KEY => {
                // key id (2) || label (40) || domains (2) || capabilities (8) || algorithm (1)
                if data.len() != 53 || data[52] != ALG_EC_P256 {
                    return device_error(ERR_INVALID_DATA);
                }
                if self.keys.contains_key(&id()) {
                    return device_error(ERR_OBJECT_EXISTS);
                }
                let secret = loop {
                    if let Ok(sk) = p256::SecretKey::from_slice(&random::<32>()) {
                        break sk;
                    }
                };
                self.keys.insert(
                    id(),
                    Key {
                        secret,
                        label: data[2..42].try_into().unwrap(),
                        domains: u16::from_be_bytes([data[42], data[43]]),
                        capabilities: u64::from_be_bytes(data[44..52].try_into().unwrap()),
                    },
                );
                ok(&data[..2])
            }
            CMD_SIGN_ECDSA => {
                let Some(k) = self.keys.get(&id()) else {
                    return device_error(ERR_OBJECT_NOT_FOUND);
                };
                if k.capabilities & CAP_SIGN_ECDSA == 0 {
                    return device_error(ERR_INSUFFICIENT_PERMISSIONS);
                }
                device_error(ERR_INVALID_COMMAND)
            }
            CMD_DERIVE_ECDH => {
                let Some(k) = self.keys.get(&id()) else {
                    return device_error(ERR_OBJECT_NOT_FOUND);
                };
                if k.capabilities & CAP_DERIVE_ECDH == 0 || self.refuse_derive {
                    return device_error(ERR_INSUFFICIENT_PERMISSIONS);
                }
                // Object id (2) || uncompressed point 04 || x || y (65).
                if data.len() != 2 + 65 || data[2] != 0x04 {
                    return device_error(ERR_INVALID_DATA);
                }
                let Ok(peer) = p256::PublicKey::from_sec1_bytes(&data[2..]) else {
                    return device_error(ERR_INVALID_DATA);
                };
                let shared =
                    p256::ecdh::diffie_hellman(k.secret.to_nonzero_scalar(), peer.as_affine());
                if self.malformed_derive_answer {
                    let mut whole = vec![0x04];
                    whole.extend_from_slice(shared.raw_secret_bytes());
                    whole.extend_from_slice(shared.raw_secret_bytes());
                    return ok(&whole);
                }
                ok(shared.raw_secret_bytes())
            }
            _ => device_error(ERR_INVALID_COMMAND),
        }
    }
}
