//! The whole library state behind the C ABI, as safe Rust: slots with their tokens, sessions,
//! and one method per PKCS#11 function. Locks are taken in one order: a session's state, then
//! a token, then the session table (never a token lock while the session table is held).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use cryptoki_sys::*;

use crate::attr::{self, Attr};
use crate::config::Config;
use crate::crypto::{self, Curve, SIGNATURE_LEN, Sha256, SigMech};
use crate::error::{Error, Result};
use crate::fault::Faults;
use crate::object::{self, Object};
use crate::seal::KdfParams;
use crate::session::{Op, Session};
use crate::store::Store;
use crate::token::{Pin, Role, Token};

/// A mechanism with its parameter, decoded from `CK_MECHANISM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mechanism {
    /// `CKM_` type.
    pub ty: CK_MECHANISM_TYPE,
    /// Parameter.
    pub param: MechParam,
}

/// A mechanism parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MechParam {
    /// None given.
    None,
    /// Bytes the token does not interpret further.
    Bytes(Vec<u8>),
    /// `CK_ECDH1_DERIVE_PARAMS`.
    Ecdh1 {
        /// `CKD_` function.
        kdf: CK_ULONG,
        /// Shared data (must be empty with `CKD_NULL`).
        shared: Vec<u8>,
        /// The peer's public point.
        public: Vec<u8>,
    },
}

impl Mechanism {
    /// A mechanism without parameter.
    pub fn new(ty: CK_MECHANISM_TYPE) -> Self {
        Mechanism {
            ty,
            param: MechParam::None,
        }
    }
}

/// Output of a function with the two-call length convention.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    /// Only the length was asked for (NULL buffer).
    Len(usize),
    /// The result.
    Data(Vec<u8>),
}

/// Facts for `CK_TOKEN_INFO`.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    /// Blank-padded label.
    pub label: [u8; 32],
    /// Blank-padded serial number.
    pub serial: [u8; 16],
    /// `CKF_` flags.
    pub flags: CK_FLAGS,
    /// Open sessions.
    pub sessions: usize,
    /// Open read/write sessions.
    pub rw_sessions: usize,
    /// Session limit (0: effectively infinite).
    pub max_sessions: usize,
}

/// Facts for `CK_SESSION_INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionInfo {
    /// Slot id.
    pub slot_id: CK_SLOT_ID,
    /// `CKS_` state.
    pub state: CK_STATE,
    /// `CKF_` flags.
    pub flags: CK_FLAGS,
}

/// The mechanisms and their `CK_MECHANISM_INFO` (min key size, max key size, flags).
pub const MECHANISMS: &[(CK_MECHANISM_TYPE, CK_ULONG, CK_ULONG, CK_FLAGS)] = &[
    (
        CKM_EC_KEY_PAIR_GEN,
        256,
        256,
        CKF_GENERATE_KEY_PAIR | EC_FLAGS,
    ),
    (CKM_EC_EDWARDS_KEY_PAIR_GEN, 255, 255, CKF_GENERATE_KEY_PAIR),
    (CKM_ECDSA, 256, 256, CKF_SIGN | CKF_VERIFY | EC_FLAGS),
    (CKM_ECDSA_SHA256, 256, 256, CKF_SIGN | CKF_VERIFY | EC_FLAGS),
    (CKM_EDDSA, 255, 255, CKF_SIGN | CKF_VERIFY),
    (CKM_ECDH1_DERIVE, 256, 256, CKF_DERIVE | EC_FLAGS),
    (CKM_SHA256, 0, 0, CKF_DIGEST),
];
const EC_FLAGS: CK_FLAGS = CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS;

/// One slot.
struct Slot {
    id: CK_SLOT_ID,
    token: RwLock<Token>,
    faults: Option<Faults>,
}

/// The library state between `C_Initialize` and `C_Finalize`.
pub struct Module {
    slots: Vec<Slot>,
    sessions: RwLock<HashMap<CK_SESSION_HANDLE, Arc<Session>>>,
    next: Arc<AtomicU64>,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("slots", &self.slots.len())
            .finish_non_exhaustive()
    }
}

const POISON: Error = Error::DeviceError("lock poisoned");

fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>> {
    m.lock().map_err(|_| POISON)
}
fn read<T>(m: &RwLock<T>) -> Result<RwLockReadGuard<'_, T>> {
    m.read().map_err(|_| POISON)
}
fn write<T>(m: &RwLock<T>) -> Result<RwLockWriteGuard<'_, T>> {
    m.write().map_err(|_| POISON)
}

fn sig_mech(m: &Mechanism) -> Result<SigMech> {
    let sm = match m.ty {
        CKM_ECDSA => SigMech::EcdsaPrehashed,
        CKM_ECDSA_SHA256 => SigMech::EcdsaSha256,
        CKM_EDDSA => SigMech::EdDsa,
        _ => return Err(Error::MechanismInvalid),
    };
    if m.param != MechParam::None {
        return Err(Error::MechanismParamInvalid);
    }
    Ok(sm)
}

fn key_fits(mech: SigMech, kt: CK_KEY_TYPE) -> Result<()> {
    match (mech, kt) {
        (SigMech::EcdsaPrehashed | SigMech::EcdsaSha256, CKK_EC)
        | (SigMech::EdDsa, CKK_EC_EDWARDS) => Ok(()),
        _ => Err(Error::KeyTypeInconsistent),
    }
}

/// Runs the length convention for an output of known size.
fn out_len(need: usize, cap: Option<usize>) -> Result<Option<Output>> {
    match cap {
        None => Ok(Some(Output::Len(need))),
        Some(c) if c < need => Err(Error::BufferTooSmall(need)),
        Some(_) => Ok(None),
    }
}

impl Module {
    /// Opens every configured token.
    pub fn new(cfg: &Config) -> Result<Module> {
        let next = Arc::new(AtomicU64::new(1));
        let mut slots = Vec::new();
        for (i, sc) in cfg.slots.iter().enumerate() {
            let store = Store::new(sc.token_dir.clone())?;
            let n = Arc::clone(&next);
            let mut alloc = move || n.fetch_add(1, Ordering::Relaxed);
            let token = Token::open(
                store,
                sc.max_pin_retries.unwrap_or(3).max(1),
                sc.kdf.unwrap_or_default(),
                &mut alloc,
            )?;
            let faults = match &sc.faults {
                Some(f) => Some(
                    Faults::new(f.clone())
                        .map_err(|_| Error::DeviceError("bad fault configuration"))?,
                ),
                None => None,
            };
            slots.push(Slot {
                id: sc.slot_id.unwrap_or(i as u64) as CK_SLOT_ID,
                token: RwLock::new(token),
                faults,
            });
        }
        Ok(Module {
            slots,
            sessions: RwLock::new(HashMap::new()),
            next,
        })
    }

    /// A module with one in-memory token (for tests and embedding).
    pub fn in_memory(kdf: KdfParams) -> Result<Module> {
        let cfg = Config {
            slots: vec![crate::config::SlotConfig {
                kdf: Some(kdf),
                ..Default::default()
            }],
        };
        Module::new(&cfg)
    }

    fn handle(&self) -> CK_ULONG {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    fn slot_index(&self, id: CK_SLOT_ID) -> Result<usize> {
        self.slots
            .iter()
            .position(|s| s.id == id)
            .ok_or(Error::SlotIdInvalid)
    }

    /// Runs the slot's faults for one call; a removal drops the slot's sessions.
    fn fault(&self, slot: usize, func: &str) -> Result<()> {
        let Some(f) = &self.slots[slot].faults else {
            return Ok(());
        };
        match f.on_call(func) {
            Err(Error::DeviceRemoved) => {
                self.drop_sessions(slot)?;
                Err(Error::DeviceRemoved)
            }
            r => r,
        }
    }

    /// Looks a session up and runs the faults of the call made on it.
    fn session(&self, h: CK_SESSION_HANDLE, func: &str) -> Result<Arc<Session>> {
        let s = read(&self.sessions)?
            .get(&h)
            .cloned()
            .ok_or(Error::SessionHandleInvalid)?;
        self.fault(s.slot, func)?;
        if let Some(limit) = self.slots[s.slot]
            .faults
            .as_ref()
            .and_then(Faults::session_limit)
            && s.calls.fetch_add(1, Ordering::SeqCst) >= limit
        {
            self.close_session_inner(h)?;
            return Err(Error::SessionHandleInvalid);
        }
        Ok(s)
    }

    fn token(&self, slot: usize) -> &RwLock<Token> {
        &self.slots[slot].token
    }

    fn sessions_on(&self, slot: usize) -> Result<Vec<(CK_SESSION_HANDLE, bool)>> {
        Ok(read(&self.sessions)?
            .iter()
            .filter(|(_, s)| s.slot == slot)
            .map(|(h, s)| (*h, s.rw))
            .collect())
    }

    /// Drops every session of a slot and logs the user out (device removal, `C_CloseAllSessions`).
    /// As in [`Module::close_session_inner`], the token lock is held throughout, so that a
    /// session opened meanwhile is either dropped with the others or opened after the logout.
    fn drop_sessions(&self, slot: usize) -> Result<()> {
        let mut t = write(self.token(slot))?;
        let gone: Vec<CK_SESSION_HANDLE> = {
            let mut m = write(&self.sessions)?;
            let hs: Vec<_> = m
                .iter()
                .filter(|(_, s)| s.slot == slot)
                .map(|(h, _)| *h)
                .collect();
            for h in &hs {
                m.remove(h);
            }
            hs
        };
        for h in gone {
            t.drop_session_objects(h);
        }
        t.logout();
        Ok(())
    }

    // ---- slots and tokens ----

    /// `C_GetSlotList`: every slot, or only those with a token present.
    pub fn slot_list(&self) -> Vec<CK_SLOT_ID> {
        self.slots.iter().map(|s| s.id).collect()
    }

    /// `C_GetSlotList(CK_TRUE, …)`: slots whose device is not removed.
    pub fn slots_with_token(&self) -> Vec<CK_SLOT_ID> {
        self.slots
            .iter()
            .filter(|s| !s.faults.as_ref().is_some_and(Faults::removed_now))
            .map(|s| s.id)
            .collect()
    }

    /// `C_GetSlotInfo`: whether a token is present.
    pub fn slot_present(&self, slot: CK_SLOT_ID) -> Result<bool> {
        let i = self.slot_index(slot)?;
        Ok(!self.slots[i]
            .faults
            .as_ref()
            .is_some_and(Faults::removed_now))
    }

    /// `C_GetTokenInfo`.
    pub fn token_info(&self, slot: CK_SLOT_ID) -> Result<TokenInfo> {
        let i = self.slot_index(slot)?;
        self.fault(i, "C_GetTokenInfo")?;
        let ss = self.sessions_on(i)?;
        let t = read(self.token(i))?;
        Ok(TokenInfo {
            label: t.label(),
            serial: t.serial(),
            flags: t.flags(),
            sessions: ss.len(),
            rw_sessions: ss.iter().filter(|(_, rw)| *rw).count(),
            max_sessions: self.slots[i]
                .faults
                .as_ref()
                .and_then(Faults::max_sessions)
                .unwrap_or(0),
        })
    }

    /// `C_GetMechanismList`.
    pub fn mechanism_list(&self, slot: CK_SLOT_ID) -> Result<Vec<CK_MECHANISM_TYPE>> {
        self.slot_index(slot)?;
        Ok(MECHANISMS.iter().map(|m| m.0).collect())
    }

    /// `C_GetMechanismInfo`: (min, max, flags).
    pub fn mechanism_info(
        &self,
        slot: CK_SLOT_ID,
        ty: CK_MECHANISM_TYPE,
    ) -> Result<(CK_ULONG, CK_ULONG, CK_FLAGS)> {
        self.slot_index(slot)?;
        MECHANISMS
            .iter()
            .find(|m| m.0 == ty)
            .map(|m| (m.1, m.2, m.3))
            .ok_or(Error::MechanismInvalid)
    }

    /// `C_InitToken`.
    pub fn init_token(&self, slot: CK_SLOT_ID, so_pin: &Pin, label: &[u8; 32]) -> Result<()> {
        let i = self.slot_index(slot)?;
        self.fault(i, "C_InitToken")?;
        if !self.sessions_on(i)?.is_empty() {
            return Err(Error::SessionExists);
        }
        write(self.token(i))?.init(so_pin, label)
    }

    /// `C_InitPIN`.
    pub fn init_pin(&self, h: CK_SESSION_HANDLE, pin: &Pin) -> Result<()> {
        let s = self.session(h, "C_InitPIN")?;
        let mut t = write(self.token(s.slot))?;
        if t.login != Some(Role::So) {
            return Err(Error::UserNotLoggedIn);
        }
        if !s.rw {
            return Err(Error::SessionReadOnly);
        }
        t.init_pin(pin)
    }

    /// `C_SetPIN`.
    pub fn set_pin(&self, h: CK_SESSION_HANDLE, old: &Pin, new: &Pin) -> Result<()> {
        let s = self.session(h, "C_SetPIN")?;
        if !s.rw {
            return Err(Error::SessionReadOnly);
        }
        write(self.token(s.slot))?.set_pin(old, new)
    }

    // ---- sessions ----

    /// `C_OpenSession`.
    pub fn open_session(&self, slot: CK_SLOT_ID, flags: CK_FLAGS) -> Result<CK_SESSION_HANDLE> {
        let i = self.slot_index(slot)?;
        self.fault(i, "C_OpenSession")?;
        if flags & CKF_SERIAL_SESSION == 0 {
            return Err(Error::SessionParallelNotSupported);
        }
        let t = read(self.token(i))?;
        if !t.initialized() {
            return Err(Error::TokenNotRecognized);
        }
        let rw = flags & CKF_RW_SESSION != 0;
        if !rw && t.login == Some(Role::So) {
            return Err(Error::SessionReadWriteSoExists);
        }
        let mut m = write(&self.sessions)?;
        if let Some(max) = self.slots[i].faults.as_ref().and_then(Faults::max_sessions)
            && m.values().filter(|s| s.slot == i).count() >= max
        {
            return Err(Error::SessionCount);
        }
        let h = self.handle();
        m.insert(h, Arc::new(Session::new(i, rw)));
        Ok(h)
    }

    /// Removes a session; the user is logged out if it was the slot's last one.
    ///
    /// The token lock is taken first and held while the session leaves the table: deciding
    /// "last session" and logging out must be one step, or a session opened and logged in on
    /// another thread in between would be logged out under its feet (`open_session` inserts
    /// under the token lock, so it cannot slip in).
    fn close_session_inner(&self, h: CK_SESSION_HANDLE) -> Result<()> {
        let Some(slot) = read(&self.sessions)?.get(&h).map(|s| s.slot) else {
            return Err(Error::SessionHandleInvalid);
        };
        let mut t = write(self.token(slot))?;
        let last = {
            let mut m = write(&self.sessions)?;
            // Another thread may have closed it since it was looked up.
            m.remove(&h).ok_or(Error::SessionHandleInvalid)?;
            !m.values().any(|o| o.slot == slot)
        };
        t.drop_session_objects(h);
        if last {
            t.logout();
        }
        Ok(())
    }

    /// `C_CloseSession`.
    pub fn close_session(&self, h: CK_SESSION_HANDLE) -> Result<()> {
        self.session(h, "C_CloseSession")?;
        self.close_session_inner(h)
    }

    /// `C_CloseAllSessions`.
    pub fn close_all_sessions(&self, slot: CK_SLOT_ID) -> Result<()> {
        let i = self.slot_index(slot)?;
        self.fault(i, "C_CloseAllSessions")?;
        self.drop_sessions(i)
    }

    /// `C_GetSessionInfo`.
    pub fn session_info(&self, h: CK_SESSION_HANDLE) -> Result<SessionInfo> {
        let s = self.session(h, "C_GetSessionInfo")?;
        let t = read(self.token(s.slot))?;
        let state = match (t.login, s.rw) {
            (Some(Role::So), _) => CKS_RW_SO_FUNCTIONS,
            (Some(Role::User), true) => CKS_RW_USER_FUNCTIONS,
            (Some(Role::User), false) => CKS_RO_USER_FUNCTIONS,
            (None, true) => CKS_RW_PUBLIC_SESSION,
            (None, false) => CKS_RO_PUBLIC_SESSION,
        };
        let flags = CKF_SERIAL_SESSION | if s.rw { CKF_RW_SESSION } else { 0 };
        Ok(SessionInfo {
            slot_id: self.slots[s.slot].id,
            state,
            flags,
        })
    }

    /// `C_Login`.
    pub fn login(&self, h: CK_SESSION_HANDLE, user_type: CK_USER_TYPE, pin: &Pin) -> Result<()> {
        let s = self.session(h, "C_Login")?;
        let role = match user_type {
            CKU_SO => Role::So,
            CKU_USER => Role::User,
            CKU_CONTEXT_SPECIFIC => {
                let t = read(self.token(s.slot))?;
                return Err(if t.login.is_none() {
                    Error::UserNotLoggedIn
                } else {
                    Error::OperationNotInitialized
                });
            }
            _ => return Err(Error::UserTypeInvalid),
        };
        if role == Role::So && self.sessions_on(s.slot)?.iter().any(|(_, rw)| !rw) {
            let t = read(self.token(s.slot))?;
            if t.login.is_none() {
                return Err(Error::SessionReadOnlyExists);
            }
        }
        let mut t = write(self.token(s.slot))?;
        // Sessions leave the table under the token lock (see `close_session_inner`): if this one
        // was dropped while the call ran, its logout has happened and must not be undone by a
        // login that outlives the session.
        if !read(&self.sessions)?.contains_key(&h) {
            return Err(Error::SessionHandleInvalid);
        }
        t.login(role, pin)
    }

    /// `C_Logout`. Signing operations in progress end with it: their keys are private objects,
    /// whose handles the standard invalidates at logout.
    pub fn logout(&self, h: CK_SESSION_HANDLE) -> Result<()> {
        let s = self.session(h, "C_Logout")?;
        {
            let mut t = write(self.token(s.slot))?;
            if t.login.is_none() {
                return Err(Error::UserNotLoggedIn);
            }
            t.logout();
        }
        // Session states are locked only after the token lock is released (lock order).
        let others: Vec<Arc<Session>> = read(&self.sessions)?
            .values()
            .filter(|o| o.slot == s.slot)
            .cloned()
            .collect();
        for o in others {
            let mut st = lock(&o.state)?;
            if matches!(st.op, Some(Op::Sign { .. })) {
                st.op = None;
            }
        }
        Ok(())
    }

    // ---- objects ----

    fn may_create(t: &Token, s: &Session, token_obj: bool, private: bool) -> Result<()> {
        if token_obj && !s.rw {
            return Err(Error::SessionReadOnly);
        }
        if private && t.login != Some(Role::User) {
            return Err(Error::UserNotLoggedIn);
        }
        Ok(())
    }

    fn flags_of(template: &[Attr]) -> Result<(bool, bool)> {
        Ok((
            attr::find_bool(template, CKA_TOKEN)?.unwrap_or(false),
            attr::find_bool(template, CKA_PRIVATE)?.unwrap_or(true),
        ))
    }

    fn add(&self, t: &mut Token, h: CK_SESSION_HANDLE, mut o: Object) -> Result<CK_OBJECT_HANDLE> {
        if !o.is_token() {
            o.owner = Some(h);
        }
        let oh = self.handle();
        t.insert(oh, o)?;
        Ok(oh)
    }

    /// `C_CreateObject`.
    pub fn create_object(
        &self,
        h: CK_SESSION_HANDLE,
        template: &[Attr],
    ) -> Result<CK_OBJECT_HANDLE> {
        let s = self.session(h, "C_CreateObject")?;
        let mut t = write(self.token(s.slot))?;
        let (tok, private) = Self::flags_of(template)?;
        Self::may_create(&t, &s, tok, private)?;
        let o = object::create(template)?;
        self.add(&mut t, h, o)
    }

    /// `C_DestroyObject`.
    pub fn destroy_object(&self, h: CK_SESSION_HANDLE, oh: CK_OBJECT_HANDLE) -> Result<()> {
        let s = self.session(h, "C_DestroyObject")?;
        let mut t = write(self.token(s.slot))?;
        let o = t.object(oh)?;
        if o.is_token() && !s.rw {
            return Err(Error::SessionReadOnly);
        }
        if !o.attrs.get_bool(CKA_DESTROYABLE) {
            return Err(Error::ActionProhibited);
        }
        t.remove(oh)
    }

    /// `C_GetObjectSize`: the token does not say.
    pub fn object_size(&self, h: CK_SESSION_HANDLE, oh: CK_OBJECT_HANDLE) -> Result<CK_ULONG> {
        let s = self.session(h, "C_GetObjectSize")?;
        read(self.token(s.slot))?.object(oh)?;
        Ok(CK_UNAVAILABLE_INFORMATION)
    }

    /// `C_GetAttributeValue`: one result per requested type.
    pub fn get_attributes(
        &self,
        h: CK_SESSION_HANDLE,
        oh: CK_OBJECT_HANDLE,
        types: &[CK_ATTRIBUTE_TYPE],
    ) -> Result<Vec<Result<zeroize::Zeroizing<Vec<u8>>>>> {
        let s = self.session(h, "C_GetAttributeValue")?;
        let t = read(self.token(s.slot))?;
        let o = t.object(oh)?;
        Ok(types.iter().map(|ty| o.get_attribute(*ty)).collect())
    }

    /// `C_SetAttributeValue`.
    pub fn set_attributes(
        &self,
        h: CK_SESSION_HANDLE,
        oh: CK_OBJECT_HANDLE,
        template: &[Attr],
    ) -> Result<()> {
        let s = self.session(h, "C_SetAttributeValue")?;
        let mut t = write(self.token(s.slot))?;
        let so = t.login == Some(Role::So);
        let o = t.object_mut(oh)?;
        if o.is_token() && !s.rw {
            return Err(Error::SessionReadOnly);
        }
        let before = o.attrs.clone();
        o.set_attributes(template, so)?;
        let o = t.object(oh)?;
        if let Err(e) = t.persist(o) {
            t.object_mut(oh)?.attrs = before;
            return Err(e);
        }
        Ok(())
    }

    /// `C_FindObjectsInit`.
    pub fn find_init(&self, h: CK_SESSION_HANDLE, template: &[Attr]) -> Result<()> {
        let s = self.session(h, "C_FindObjectsInit")?;
        let mut st = lock(&s.state)?;
        if st.op.is_some() {
            return Err(Error::OperationActive);
        }
        let t = read(self.token(s.slot))?;
        let mut results: Vec<_> = t
            .objects
            .iter()
            .filter(|(_, o)| t.visible(o) && o.matches(template))
            .map(|(h, _)| *h)
            .collect();
        results.sort_unstable_by(|a, b| b.cmp(a));
        st.op = Some(Op::Find { results });
        Ok(())
    }

    /// `C_FindObjects`.
    pub fn find(&self, h: CK_SESSION_HANDLE, max: usize) -> Result<Vec<CK_OBJECT_HANDLE>> {
        let s = self.session(h, "C_FindObjects")?;
        let mut st = lock(&s.state)?;
        let Some(Op::Find { results }) = &mut st.op else {
            return Err(Error::OperationNotInitialized);
        };
        let mut out = Vec::new();
        while out.len() < max {
            match results.pop() {
                Some(x) => out.push(x),
                None => break,
            }
        }
        Ok(out)
    }

    /// `C_FindObjectsFinal`.
    pub fn find_final(&self, h: CK_SESSION_HANDLE) -> Result<()> {
        let s = self.session(h, "C_FindObjectsFinal")?;
        let mut st = lock(&s.state)?;
        if !matches!(st.op, Some(Op::Find { .. })) {
            return Err(Error::OperationNotInitialized);
        }
        st.op = None;
        Ok(())
    }

    // ---- keys ----

    /// `C_GenerateKeyPair`: (public, private).
    pub fn generate_key_pair(
        &self,
        h: CK_SESSION_HANDLE,
        mech: &Mechanism,
        pub_t: &[Attr],
        priv_t: &[Attr],
    ) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)> {
        let s = self.session(h, "C_GenerateKeyPair")?;
        if !matches!(mech.ty, CKM_EC_KEY_PAIR_GEN | CKM_EC_EDWARDS_KEY_PAIR_GEN) {
            return Err(Error::MechanismInvalid);
        }
        if mech.param != MechParam::None {
            return Err(Error::MechanismParamInvalid);
        }
        let mut t = write(self.token(s.slot))?;
        let (ptok, ppriv) = Self::flags_of(pub_t)?;
        let (ktok, kpriv) = Self::flags_of(priv_t)?;
        Self::may_create(&t, &s, ptok || ktok, ppriv || kpriv)?;
        let (pubo, privo) = object::generate_key_pair(mech.ty, pub_t, priv_t)?;
        let ph = self.add(&mut t, h, pubo)?;
        match self.add(&mut t, h, privo) {
            Ok(kh) => Ok((ph, kh)),
            Err(e) => {
                // No half pair stays in the token: the public half leaves memory in any case,
                // and its file too unless the storage fails again (then it is what a crash
                // between the two writes leaves, see the README).
                let _ = t.remove(ph);
                t.objects.remove(&ph);
                Err(e)
            }
        }
    }

    /// `C_DeriveKey` with `CKM_ECDH1_DERIVE` / `CKD_NULL`.
    pub fn derive_key(
        &self,
        h: CK_SESSION_HANDLE,
        mech: &Mechanism,
        base: CK_OBJECT_HANDLE,
        template: &[Attr],
    ) -> Result<CK_OBJECT_HANDLE> {
        let s = self.session(h, "C_DeriveKey")?;
        if mech.ty != CKM_ECDH1_DERIVE {
            return Err(Error::MechanismInvalid);
        }
        let MechParam::Ecdh1 {
            kdf,
            shared,
            public,
        } = &mech.param
        else {
            return Err(Error::MechanismParamInvalid);
        };
        if *kdf != CKD_NULL || !shared.is_empty() {
            return Err(Error::MechanismParamInvalid);
        }
        let mut t = write(self.token(s.slot))?;
        let b = t.object(base).map_err(key_handle)?;
        if b.class() != CKO_PRIVATE_KEY {
            return Err(Error::KeyHandleInvalid);
        }
        if !b.attrs.get_bool(CKA_DERIVE) {
            return Err(Error::KeyFunctionNotPermitted);
        }
        if b.key_type() != CKK_EC {
            return Err(Error::KeyTypeInconsistent);
        }
        let key = b.private_key()?;
        let z = key.ecdh(crypto::unwrap_point(Curve::P256, public))?;
        let (tok, private) = Self::flags_of(template)?;
        Self::may_create(&t, &s, tok, private)?;
        let o = object::derived_secret(template, b, z)?;
        self.add(&mut t, h, o)
    }

    // ---- signatures ----

    /// `C_SignInit`.
    pub fn sign_init(
        &self,
        h: CK_SESSION_HANDLE,
        mech: &Mechanism,
        key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        let s = self.session(h, "C_SignInit")?;
        let mut st = lock(&s.state)?;
        if st.op.is_some() {
            return Err(Error::OperationActive);
        }
        let t = read(self.token(s.slot))?;
        let o = t.object(key).map_err(key_handle)?;
        // A public key has no CKA_SIGN: not permitted, as SoftHSM2 answers.
        if !o.attrs.get_bool(CKA_SIGN) || o.class() != CKO_PRIVATE_KEY {
            return Err(Error::KeyFunctionNotPermitted);
        }
        let m = sig_mech(mech)?;
        key_fits(m, o.key_type())?;
        let key = o.private_key()?;
        st.op = Some(Op::Sign {
            mech: m,
            key,
            hash: None,
        });
        Ok(())
    }

    /// `C_Sign`.
    pub fn sign(&self, h: CK_SESSION_HANDLE, data: &[u8], cap: Option<usize>) -> Result<Output> {
        let s = self.session(h, "C_Sign")?;
        let mut st = lock(&s.state)?;
        let Some(Op::Sign { mech, key, hash }) = &st.op else {
            return Err(Error::OperationNotInitialized);
        };
        if hash.is_some() {
            st.op = None;
            return Err(Error::OperationActive);
        }
        if let Some(o) = out_len(SIGNATURE_LEN, cap)? {
            return Ok(o);
        }
        let r = match mech {
            SigMech::EcdsaPrehashed => key.sign_prehashed(data),
            SigMech::EcdsaSha256 => key.sign_sha256(data),
            SigMech::EdDsa => key.sign_eddsa(data),
        };
        st.op = None;
        r.map(Output::Data)
    }

    /// `C_SignUpdate` (only `CKM_ECDSA_SHA256` is multi-part).
    pub fn sign_update(&self, h: CK_SESSION_HANDLE, data: &[u8]) -> Result<()> {
        let s = self.session(h, "C_SignUpdate")?;
        let mut st = lock(&s.state)?;
        let Some(Op::Sign { mech, hash, .. }) = &mut st.op else {
            return Err(Error::OperationNotInitialized);
        };
        if *mech != SigMech::EcdsaSha256 {
            // Single-part mechanism: the standard names no code; SoftHSM2 ends the operation
            // and answers CKR_OPERATION_NOT_INITIALIZED, and so does hsm-sim.
            st.op = None;
            return Err(Error::OperationNotInitialized);
        }
        hash.get_or_insert_with(Sha256::default).update(data);
        Ok(())
    }

    /// `C_SignFinal`.
    pub fn sign_final(&self, h: CK_SESSION_HANDLE, cap: Option<usize>) -> Result<Output> {
        let s = self.session(h, "C_SignFinal")?;
        let mut st = lock(&s.state)?;
        let Some(Op::Sign { mech, key, hash }) = &st.op else {
            return Err(Error::OperationNotInitialized);
        };
        if *mech != SigMech::EcdsaSha256 {
            st.op = None;
            return Err(Error::FunctionNotSupported);
        }
        if let Some(o) = out_len(SIGNATURE_LEN, cap)? {
            return Ok(o);
        }
        let digest = hash.clone().unwrap_or_default().finish();
        let r = key.sign_prehashed(&digest);
        st.op = None;
        r.map(Output::Data)
    }

    /// `C_VerifyInit`.
    pub fn verify_init(
        &self,
        h: CK_SESSION_HANDLE,
        mech: &Mechanism,
        key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        let s = self.session(h, "C_VerifyInit")?;
        let mut st = lock(&s.state)?;
        if st.op.is_some() {
            return Err(Error::OperationActive);
        }
        let t = read(self.token(s.slot))?;
        let o = t.object(key).map_err(key_handle)?;
        if !o.attrs.get_bool(CKA_VERIFY) || o.class() != CKO_PUBLIC_KEY {
            return Err(Error::KeyFunctionNotPermitted);
        }
        let m = sig_mech(mech)?;
        key_fits(m, o.key_type())?;
        let curve = o.curve()?;
        let point = o.attrs.get(CKA_EC_POINT).ok_or(Error::KeyHandleInvalid)?;
        let public = crypto::unwrap_point(curve, point).to_vec();
        st.op = Some(Op::Verify {
            mech: m,
            curve,
            public,
            hash: None,
        });
        Ok(())
    }

    /// `C_Verify`.
    pub fn verify(&self, h: CK_SESSION_HANDLE, data: &[u8], sig: &[u8]) -> Result<()> {
        let s = self.session(h, "C_Verify")?;
        let mut st = lock(&s.state)?;
        let Some(Op::Verify {
            mech,
            curve,
            public,
            hash,
        }) = st.op.take()
        else {
            return Err(Error::OperationNotInitialized);
        };
        if hash.is_some() {
            return Err(Error::OperationActive);
        }
        crypto::verify(mech, curve, &public, data, sig)
    }

    /// `C_VerifyUpdate`.
    pub fn verify_update(&self, h: CK_SESSION_HANDLE, data: &[u8]) -> Result<()> {
        let s = self.session(h, "C_VerifyUpdate")?;
        let mut st = lock(&s.state)?;
        let Some(Op::Verify { mech, hash, .. }) = &mut st.op else {
            return Err(Error::OperationNotInitialized);
        };
        if *mech != SigMech::EcdsaSha256 {
            st.op = None;
            return Err(Error::OperationNotInitialized);
        }
        hash.get_or_insert_with(Sha256::default).update(data);
        Ok(())
    }

    /// `C_VerifyFinal`.
    pub fn verify_final(&self, h: CK_SESSION_HANDLE, sig: &[u8]) -> Result<()> {
        let s = self.session(h, "C_VerifyFinal")?;
        let mut st = lock(&s.state)?;
        let Some(Op::Verify {
            mech,
            curve,
            public,
            hash,
        }) = st.op.take()
        else {
            return Err(Error::OperationNotInitialized);
        };
        if mech != SigMech::EcdsaSha256 {
            return Err(Error::FunctionNotSupported);
        }
        let digest = hash.unwrap_or_default().finish();
        crypto::verify(SigMech::EcdsaPrehashed, curve, &public, &digest, sig)
    }

    // ---- digest and random ----

    /// `C_DigestInit`.
    pub fn digest_init(&self, h: CK_SESSION_HANDLE, mech: &Mechanism) -> Result<()> {
        let s = self.session(h, "C_DigestInit")?;
        let mut st = lock(&s.state)?;
        if st.op.is_some() {
            return Err(Error::OperationActive);
        }
        if mech.ty != CKM_SHA256 {
            return Err(Error::MechanismInvalid);
        }
        if mech.param != MechParam::None {
            return Err(Error::MechanismParamInvalid);
        }
        st.op = Some(Op::Digest {
            hash: Sha256::default(),
            multi: false,
        });
        Ok(())
    }

    /// `C_Digest`.
    pub fn digest(&self, h: CK_SESSION_HANDLE, data: &[u8], cap: Option<usize>) -> Result<Output> {
        let s = self.session(h, "C_Digest")?;
        let mut st = lock(&s.state)?;
        let Some(Op::Digest { multi, .. }) = &st.op else {
            return Err(Error::OperationNotInitialized);
        };
        if *multi {
            st.op = None;
            return Err(Error::OperationActive);
        }
        if let Some(o) = out_len(32, cap)? {
            return Ok(o);
        }
        st.op = None;
        Ok(Output::Data(crypto::sha256(data)))
    }

    /// `C_DigestUpdate`.
    pub fn digest_update(&self, h: CK_SESSION_HANDLE, data: &[u8]) -> Result<()> {
        let s = self.session(h, "C_DigestUpdate")?;
        let mut st = lock(&s.state)?;
        let Some(Op::Digest { hash, multi }) = &mut st.op else {
            return Err(Error::OperationNotInitialized);
        };
        hash.update(data);
        *multi = true;
        Ok(())
    }

    /// `C_DigestFinal`.
    pub fn digest_final(&self, h: CK_SESSION_HANDLE, cap: Option<usize>) -> Result<Output> {
        let s = self.session(h, "C_DigestFinal")?;
        let mut st = lock(&s.state)?;
        let Some(Op::Digest { hash, .. }) = &st.op else {
            return Err(Error::OperationNotInitialized);
        };
        if let Some(o) = out_len(32, cap)? {
            return Ok(o);
        }
        let d = hash.clone().finish();
        st.op = None;
        Ok(Output::Data(d))
    }

    /// `C_GenerateRandom`.
    pub fn generate_random(&self, h: CK_SESSION_HANDLE, buf: &mut [u8]) -> Result<()> {
        self.session(h, "C_GenerateRandom")?;
        crypto::random(buf)
    }

    /// `C_SeedRandom`: the token's generator cannot be seeded.
    pub fn seed_random(&self, h: CK_SESSION_HANDLE) -> Result<()> {
        self.session(h, "C_SeedRandom")?;
        Err(Error::FunctionNotSupported)
    }

    /// Checks a session handle for functions the token does not implement.
    pub fn unsupported(&self, h: CK_SESSION_HANDLE, func: &str) -> Result<()> {
        self.session(h, func)?;
        Err(Error::FunctionNotSupported)
    }
}

fn key_handle(e: Error) -> Error {
    if e == Error::ObjectHandleInvalid {
        Error::KeyHandleInvalid
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::pin;

    const CHEAP: KdfParams = KdfParams {
        m_kib: 8,
        t: 1,
        p: 1,
    };
    const RW: CK_FLAGS = CKF_SERIAL_SESSION | CKF_RW_SESSION;

    fn ready() -> Module {
        let m = Module::in_memory(CHEAP).unwrap();
        let mut label = [b' '; 32];
        label[..3].copy_from_slice(b"lbl");
        m.init_token(0, &pin(b"so-pin-1"), &label).unwrap();
        let h = m.open_session(0, RW).unwrap();
        m.login(h, CKU_SO, &pin(b"so-pin-1")).unwrap();
        m.init_pin(h, &pin(b"user-1")).unwrap();
        m.close_session(h).unwrap();
        m
    }

    /// Sets the flag when dropped, also when the owning thread panics.
    struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }

    fn p256(m: &Module, h: CK_SESSION_HANDLE) -> (CK_OBJECT_HANDLE, CK_OBJECT_HANDLE) {
        let pub_t = vec![Attr::bytes(CKA_EC_PARAMS, crypto::P256_PARAMS_OID)];
        m.generate_key_pair(h, &Mechanism::new(CKM_EC_KEY_PAIR_GEN), &pub_t, &[])
            .unwrap()
    }

    #[test]
    fn uninitialised_token_refuses_sessions() {
        let m = Module::in_memory(CHEAP).unwrap();
        assert_eq!(m.open_session(0, RW), Err(Error::TokenNotRecognized));
        assert_eq!(m.open_session(9, RW), Err(Error::SlotIdInvalid));
        assert_eq!(m.token_info(0).unwrap().flags & CKF_TOKEN_INITIALIZED, 0);
    }

    #[test]
    fn session_rules() {
        let m = ready();
        assert_eq!(
            m.open_session(0, CKF_RW_SESSION),
            Err(Error::SessionParallelNotSupported)
        );
        let ro = m.open_session(0, CKF_SERIAL_SESSION).unwrap();
        let rw = m.open_session(0, RW).unwrap();
        assert_eq!(
            m.login(rw, CKU_SO, &pin(b"so-pin-1")),
            Err(Error::SessionReadOnlyExists)
        );
        m.login(ro, CKU_USER, &pin(b"user-1")).unwrap();
        assert_eq!(m.session_info(ro).unwrap().state, CKS_RO_USER_FUNCTIONS);
        assert_eq!(m.session_info(rw).unwrap().state, CKS_RW_USER_FUNCTIONS);
        // Token objects need a read/write session.
        let t = vec![
            Attr::bytes(CKA_EC_PARAMS, crypto::P256_PARAMS_OID),
            Attr::bool(CKA_TOKEN, true),
        ];
        assert_eq!(
            m.generate_key_pair(ro, &Mechanism::new(CKM_EC_KEY_PAIR_GEN), &t, &[]),
            Err(Error::SessionReadOnly)
        );
        assert_eq!(
            m.init_token(0, &pin(b"so-pin-1"), &[b' '; 32]),
            Err(Error::SessionExists)
        );
        m.close_session(ro).unwrap();
        m.close_session(rw).unwrap();
        // The last session closing logged the user out.
        let s = m.open_session(0, RW).unwrap();
        assert_eq!(m.session_info(s).unwrap().state, CKS_RW_PUBLIC_SESSION);
        assert_eq!(m.close_session(ro), Err(Error::SessionHandleInvalid));
    }

    #[test]
    fn private_objects_need_login_and_session_objects_die_with_their_session() {
        let m = ready();
        let a = m.open_session(0, RW).unwrap();
        let t = vec![Attr::bytes(CKA_EC_PARAMS, crypto::P256_PARAMS_OID)];
        assert_eq!(
            m.generate_key_pair(a, &Mechanism::new(CKM_EC_KEY_PAIR_GEN), &t, &[]),
            Err(Error::UserNotLoggedIn)
        );
        m.login(a, CKU_USER, &pin(b"user-1")).unwrap();
        let b = m.open_session(0, RW).unwrap();
        let (_, k) = p256(&m, b);
        m.find_init(a, &[Attr::ulong(CKA_CLASS, CKO_PRIVATE_KEY)])
            .unwrap();
        assert_eq!(m.find(a, 10).unwrap(), vec![k]);
        m.find_final(a).unwrap();
        m.close_session(b).unwrap();
        m.find_init(a, &[Attr::ulong(CKA_CLASS, CKO_PRIVATE_KEY)])
            .unwrap();
        assert!(m.find(a, 10).unwrap().is_empty());
    }

    #[test]
    fn sign_length_convention_keeps_the_operation() {
        let m = ready();
        let s = m.open_session(0, RW).unwrap();
        m.login(s, CKU_USER, &pin(b"user-1")).unwrap();
        let (p, k) = p256(&m, s);
        m.sign_init(s, &Mechanism::new(CKM_ECDSA_SHA256), k)
            .unwrap();
        assert_eq!(m.sign(s, b"m", None), Ok(Output::Len(64)));
        assert_eq!(m.sign(s, b"m", Some(8)), Err(Error::BufferTooSmall(64)));
        let Output::Data(sig) = m.sign(s, b"m", Some(64)).unwrap() else {
            panic!("no data")
        };
        assert_eq!(
            m.sign(s, b"m", Some(64)),
            Err(Error::OperationNotInitialized)
        );
        m.verify_init(s, &Mechanism::new(CKM_ECDSA_SHA256), p)
            .unwrap();
        m.verify(s, b"m", &sig).unwrap();
        assert_eq!(
            m.sign_init(
                s,
                &Mechanism {
                    ty: CKM_ECDSA,
                    param: MechParam::Bytes(vec![1])
                },
                k
            ),
            Err(Error::MechanismParamInvalid)
        );
    }

    #[test]
    fn logout_ends_signing_operations() {
        let m = ready();
        let s = m.open_session(0, RW).unwrap();
        let other = m.open_session(0, RW).unwrap();
        m.login(s, CKU_USER, &pin(b"user-1")).unwrap();
        let (_, k) = p256(&m, s);
        m.sign_init(other, &Mechanism::new(CKM_ECDSA_SHA256), k)
            .unwrap();
        m.logout(s).unwrap();
        assert_eq!(
            m.sign(other, b"m", Some(64)),
            Err(Error::OperationNotInitialized)
        );
        assert_eq!(
            m.sign_init(other, &Mechanism::new(CKM_ECDSA_SHA256), k),
            Err(Error::UserNotLoggedIn)
        );
        assert_eq!(m.logout(s), Err(Error::UserNotLoggedIn));
    }

    #[test]
    fn pin_lock_and_counters() {
        let m = ready();
        let s = m.open_session(0, RW).unwrap();
        for _ in 0..2 {
            assert_eq!(
                m.login(s, CKU_USER, &pin(b"wrong")),
                Err(Error::PinIncorrect)
            );
        }
        assert_ne!(m.token_info(0).unwrap().flags & CKF_USER_PIN_FINAL_TRY, 0);
        assert_eq!(
            m.login(s, CKU_USER, &pin(b"wrong")),
            Err(Error::PinIncorrect)
        );
        assert_eq!(m.login(s, CKU_USER, &pin(b"user-1")), Err(Error::PinLocked));
        assert_ne!(m.token_info(0).unwrap().flags & CKF_USER_PIN_LOCKED, 0);
        assert_eq!(m.login(s, 7, &pin(b"user-1")), Err(Error::UserTypeInvalid));
        assert_eq!(m.login(s, CKU_USER, &pin(b"ab")), Err(Error::PinLocked));
    }

    #[test]
    fn debug_output_and_errors_hold_no_secrets() {
        let m = ready();
        let s = m.open_session(0, RW).unwrap();
        m.login(s, CKU_USER, &pin(b"user-1")).unwrap();
        let t = vec![
            Attr::ulong(CKA_CLASS, CKO_SECRET_KEY),
            Attr::ulong(CKA_KEY_TYPE, CKK_GENERIC_SECRET),
            Attr::bytes(CKA_VALUE, b"TOPSECRETVALUE"),
        ];
        let h = m.create_object(s, &t).unwrap();
        let token = read(&m.slots[0].token).unwrap();
        let shown = format!(
            "{m:?} {token:?} {:?} {t:?} {:?}",
            token.object(h).unwrap(),
            pin(b"user-1")
        );
        assert!(!shown.contains("TOPSECRET"), "{shown}");
        assert!(!shown.contains("user-1"), "{shown}");
        assert!(!shown.contains(&hex::encode(b"TOPSECRET")), "{shown}");
        let key = crate::crypto::PrivateKey::generate(Curve::P256).unwrap();
        let dbg = format!("{key:?}");
        assert!(
            !dbg.contains(&hex::encode(key.secret()))
                && !dbg.contains(&format!("{:?}", key.secret()))
        );
        assert_eq!(Error::PinIncorrect.to_string(), "CKR_PIN_INCORRECT");
    }

    #[test]
    fn slots_are_independent() {
        let slot = |id| crate::config::SlotConfig {
            slot_id: Some(id),
            kdf: Some(CHEAP),
            ..Default::default()
        };
        let m = Module::new(&Config {
            slots: vec![slot(5), slot(9)],
        })
        .unwrap();
        assert_eq!(m.slot_list(), vec![5, 9]);
        m.init_token(9, &pin(b"so-pin-9"), &[b'n'; 32]).unwrap();
        assert_eq!(m.open_session(5, RW), Err(Error::TokenNotRecognized));
        let s = m.open_session(9, RW).unwrap();
        assert_eq!(m.session_info(s).unwrap().slot_id, 9);
        assert_eq!(m.token_info(9).unwrap().sessions, 1);
        assert_eq!(m.token_info(5).unwrap().sessions, 0);
        m.close_all_sessions(9).unwrap();
        assert_eq!(m.session_info(s), Err(Error::SessionHandleInvalid));
    }

    #[test]
    fn closing_the_last_session_never_logs_out_a_session_opened_meanwhile() {
        // Closing a session (C_CloseSession, or the token dropping it under the
        // session-invalidation fault) logs the user out if it was the last one. Whether it was
        // the last must be decided atomically with the logout: a session opened and logged in
        // on another thread in between must stay logged in.
        let m = ready();
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|sc| {
            let (m, done) = (&m, &done);
            sc.spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    let a = m.open_session(0, RW).unwrap();
                    m.close_session(a).unwrap();
                }
            });
            sc.spawn(move || {
                let _stop = StopOnDrop(done);
                for i in 0..2000 {
                    let b = m.open_session(0, RW).unwrap();
                    match m.login(b, CKU_USER, &pin(b"user-1")) {
                        Ok(()) | Err(Error::UserAlreadyLoggedIn) => {}
                        Err(e) => panic!("login {i}: {e}"),
                    }
                    for _ in 0..20 {
                        assert_eq!(
                            m.session_info(b).unwrap().state,
                            CKS_RW_USER_FUNCTIONS,
                            "iteration {i}: logged out under an open session"
                        );
                    }
                    m.close_session(b).unwrap();
                }
            });
        });
    }

    #[test]
    fn dropping_every_session_never_leaves_one_open_but_logged_out() {
        // Device removal and C_CloseAllSessions drop the slot's sessions and log out. A session
        // opened meanwhile on another thread is either dropped with them or opened after the
        // logout (and may log in): never kept open under a logout meant for the others.
        let m = ready();
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|sc| {
            let (m, done) = (&m, &done);
            sc.spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    m.close_all_sessions(0).unwrap();
                }
            });
            sc.spawn(move || {
                let _stop = StopOnDrop(done);
                for i in 0..5000 {
                    let b = m.open_session(0, RW).unwrap();
                    match m.login(b, CKU_USER, &pin(b"user-1")) {
                        Ok(()) | Err(Error::UserAlreadyLoggedIn) => {}
                        Err(Error::SessionHandleInvalid) => continue,
                        Err(e) => panic!("login {i}: {e}"),
                    }
                    // A call may still see its session's state from after the drop (it looked
                    // the session up just before); once logged out, the session must be gone.
                    match m.session_info(b).map(|info| info.state) {
                        Ok(CKS_RW_USER_FUNCTIONS) | Err(Error::SessionHandleInvalid) => {}
                        Ok(_) => assert_eq!(
                            m.session_info(b),
                            Err(Error::SessionHandleInvalid),
                            "iteration {i}: logged out under an open session"
                        ),
                        Err(e) => panic!("iteration {i}: {e}"),
                    }
                    let _ = m.close_session(b);
                }
            });
        });
    }

    #[test]
    fn lost_token_storage_fails_generation_cleanly_and_the_token_recovers() {
        // What a consumer sees when the token directory disappears under a running module (a
        // test that deleted the directory of a module it kept initialised): CKR_DEVICE_ERROR,
        // no half-made key pair, the session and login intact, and generation works again once
        // the storage is back.
        let dir = tempfile::tempdir().unwrap();
        let token_dir = dir.path().join("token");
        let m = Module::new(&Config {
            slots: vec![crate::config::SlotConfig {
                token_dir: Some(token_dir.clone()),
                kdf: Some(CHEAP),
                ..Default::default()
            }],
        })
        .unwrap();
        m.init_token(0, &pin(b"so-pin-1"), &[b' '; 32]).unwrap();
        let h = m.open_session(0, RW).unwrap();
        m.login(h, CKU_SO, &pin(b"so-pin-1")).unwrap();
        m.init_pin(h, &pin(b"user-1")).unwrap();
        m.logout(h).unwrap();
        m.login(h, CKU_USER, &pin(b"user-1")).unwrap();
        let t = vec![
            Attr::bytes(CKA_EC_PARAMS, crypto::P256_PARAMS_OID),
            Attr::bool(CKA_TOKEN, true),
        ];
        let k = vec![Attr::bool(CKA_TOKEN, true)];
        let gen_mech = Mechanism::new(CKM_EC_KEY_PAIR_GEN);

        std::fs::remove_dir_all(&token_dir).unwrap();
        assert_eq!(
            m.generate_key_pair(h, &gen_mech, &t, &k),
            Err(Error::DeviceError("token storage I/O"))
        );
        m.find_init(h, &[]).unwrap();
        assert!(m.find(h, 10).unwrap().is_empty(), "half a key pair left");
        m.find_final(h).unwrap();
        assert_eq!(m.session_info(h).unwrap().state, CKS_RW_USER_FUNCTIONS);

        std::fs::create_dir_all(token_dir.join("objects")).unwrap();
        let (p, key) = m.generate_key_pair(h, &gen_mech, &t, &k).unwrap();
        m.find_init(h, &[]).unwrap();
        let mut found = m.find(h, 10).unwrap();
        found.sort_unstable();
        assert_eq!(found, [p, key]);
        m.find_final(h).unwrap();
        assert_eq!(
            std::fs::read_dir(token_dir.join("objects"))
                .unwrap()
                .count(),
            2
        );
    }

    #[test]
    fn mixed_operations_from_many_threads_do_not_deadlock() {
        let m = ready();
        let admin = m.open_session(0, RW).unwrap();
        m.login(admin, CKU_USER, &pin(b"user-1")).unwrap();
        std::thread::scope(|sc| {
            for t in 0..4 {
                let m = &m;
                sc.spawn(move || {
                    let s = m.open_session(0, RW).unwrap();
                    for i in 0..40 {
                        // Errors are fine (another thread may have logged out); hangs are not.
                        if let Ok((p, k)) = m.generate_key_pair(
                            s,
                            &Mechanism::new(CKM_EC_KEY_PAIR_GEN),
                            &[Attr::bytes(CKA_EC_PARAMS, crypto::P256_PARAMS_OID)],
                            &[],
                        ) {
                            if m.sign_init(s, &Mechanism::new(CKM_ECDSA_SHA256), k).is_ok() {
                                let _ = m.sign(s, b"x", Some(64));
                            }
                            let _ = m.destroy_object(s, k);
                            let _ = m.destroy_object(s, p);
                        }
                        if m.find_init(s, &[]).is_ok() {
                            let _ = m.find(s, 5);
                            let _ = m.find_final(s);
                        }
                        if t == 0 && i % 10 == 5 {
                            let _ = m.logout(s);
                            let _ = m.login(s, CKU_USER, &pin(b"user-1"));
                        }
                    }
                    m.close_session(s).unwrap();
                });
            }
        });
        m.close_session(admin).unwrap();
    }
}
