//! Sessions and the operation each one may have running.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use cryptoki_sys::CK_OBJECT_HANDLE;

use crate::crypto::{Curve, PrivateKey, Sha256, SigMech};

/// The operation a session is running (one at a time, as SoftHSM2 does).
pub enum Op {
    /// `C_FindObjects*`.
    Find {
        /// Matching handles not yet returned.
        results: Vec<CK_OBJECT_HANDLE>,
    },
    /// `C_Sign*`.
    Sign {
        /// Mechanism.
        mech: SigMech,
        /// Key.
        key: Arc<PrivateKey>,
        /// Running hash for multi-part `CKM_ECDSA_SHA256`, once `C_SignUpdate` was called.
        hash: Option<Sha256>,
    },
    /// `C_Verify*`.
    Verify {
        /// Mechanism.
        mech: SigMech,
        /// Curve of the key.
        curve: Curve,
        /// Raw public point.
        public: Vec<u8>,
        /// Running hash for multi-part `CKM_ECDSA_SHA256`.
        hash: Option<Sha256>,
    },
    /// `C_Digest*`.
    Digest {
        /// Running hash.
        hash: Sha256,
        /// Whether `C_DigestUpdate` was called.
        multi: bool,
    },
}

/// The mutable part of a session.
pub struct SessionState {
    /// The running operation.
    pub op: Option<Op>,
}

/// One open session.
pub struct Session {
    /// Index of its slot in the module.
    pub slot: usize,
    /// Read/write session.
    pub rw: bool,
    /// Calls made on it (for the session-invalidation fault).
    pub calls: AtomicU64,
    /// The operation state.
    pub state: Mutex<SessionState>,
}

impl Session {
    /// A new session without an operation.
    pub fn new(slot: usize, rw: bool) -> Self {
        Session {
            slot,
            rw,
            calls: AtomicU64::new(0),
            state: Mutex::new(SessionState { op: None }),
        }
    }
}
