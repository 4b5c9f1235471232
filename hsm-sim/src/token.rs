//! One token: its persistent state (label, PINs, failure counters), who is logged in, the
//! unwrapped data key while someone is, and its objects.

use std::collections::{BTreeMap, HashMap};

use cryptoki_sys::*;
use secrecy::{ExposeSecret, SecretSlice};
use zeroize::Zeroizing;

use crate::attr::AttrMap;
use crate::error::{Error, Result};
use crate::object::{Object, Secret};
use crate::seal::{self, KdfParams, Key, WrappedKey};
use crate::store::{ObjectFile, Store, TokenFile};

/// A PIN as the token holds it while a call runs: zeroized on drop, never printed.
pub type Pin = SecretSlice<u8>;

/// Shortest and longest PIN accepted.
pub const PIN_LEN: std::ops::RangeInclusive<usize> = 4..=255;

/// Who is logged in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The security officer.
    So,
    /// The normal user.
    User,
}

/// One token.
pub struct Token {
    store: Store,
    file: Option<TokenFile>,
    max_retries: u32,
    init_kdf: KdfParams,
    /// Who is logged in (shared by every session of the process).
    pub login: Option<Role>,
    dek: Option<Key>,
    /// Objects by handle: token objects and this process's session objects.
    pub objects: HashMap<CK_OBJECT_HANDLE, Object>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("label", &self.file.as_ref().map(|t| &t.label))
            .field("login", &self.login)
            .field("objects", &self.objects.len())
            .finish_non_exhaustive()
    }
}

fn obj_file(o: &Object, sealed: Option<Vec<u8>>) -> ObjectFile {
    ObjectFile {
        attrs: o
            .attrs
            .0
            .iter()
            .map(|(k, v)| (format!("{k:x}"), hex::encode(v)))
            .collect(),
        sealed: sealed.map(hex::encode),
    }
}

fn parse_obj(f: &ObjectFile) -> Result<Object> {
    let mut attrs = AttrMap::default();
    for (k, v) in &f.attrs {
        let ty = CK_ATTRIBUTE_TYPE::from_str_radix(k, 16).map_err(|_| Error::TokenNotRecognized)?;
        attrs.set(ty, hex::decode(v).map_err(|_| Error::TokenNotRecognized)?);
    }
    let secret = match &f.sealed {
        Some(s) => Secret::Sealed(hex::decode(s).map_err(|_| Error::TokenNotRecognized)?),
        None => Secret::None,
    };
    Ok(Object::new(attrs, secret))
}

impl Token {
    /// Opens the token in `store`, giving each stored object a handle from `next_handle`.
    pub fn open(
        store: Store,
        max_retries: u32,
        init_kdf: KdfParams,
        next_handle: &mut dyn FnMut() -> CK_OBJECT_HANDLE,
    ) -> Result<Self> {
        let file = store.load_token()?;
        let mut objects = HashMap::new();
        if file.is_some() {
            for (id, f) in store.load_objects()? {
                let mut o = parse_obj(&f)?;
                o.store_id = Some(id);
                objects.insert(next_handle(), o);
            }
        }
        Ok(Token {
            store,
            file,
            max_retries,
            init_kdf,
            login: None,
            dek: None,
            objects,
        })
    }

    /// Whether the token has been initialised.
    pub fn initialized(&self) -> bool {
        self.file.is_some()
    }

    /// The label, blank-padded to 32 bytes.
    pub fn label(&self) -> [u8; 32] {
        let mut out = [b' '; 32];
        if let Some(f) = &self.file {
            let l = f.label.as_bytes();
            let n = l.len().min(32);
            out[..n].copy_from_slice(&l[..n]);
        }
        out
    }

    /// The serial number, blank-padded to 16 bytes.
    pub fn serial(&self) -> [u8; 16] {
        let mut out = [b' '; 16];
        if let Some(f) = &self.file {
            let s = f.serial.as_bytes();
            let n = s.len().min(16);
            out[..n].copy_from_slice(&s[..n]);
        }
        out
    }

    /// `CK_TOKEN_INFO.flags`.
    pub fn flags(&self) -> CK_FLAGS {
        let mut fl = CKF_RNG | CKF_LOGIN_REQUIRED | CKF_RESTORE_KEY_NOT_NEEDED;
        let Some(f) = &self.file else { return fl };
        fl |= CKF_TOKEN_INITIALIZED;
        if f.user.is_some() {
            fl |= CKF_USER_PIN_INITIALIZED;
        }
        let m = self.max_retries;
        let pin_flags = |n: u32, low, last, locked| match n {
            0 => 0,
            n if n >= m => locked,
            n if n + 1 == m => low | last,
            _ => low,
        };
        fl |= pin_flags(
            f.user_failures,
            CKF_USER_PIN_COUNT_LOW,
            CKF_USER_PIN_FINAL_TRY,
            CKF_USER_PIN_LOCKED,
        );
        fl |= pin_flags(
            f.so_failures,
            CKF_SO_PIN_COUNT_LOW,
            CKF_SO_PIN_FINAL_TRY,
            CKF_SO_PIN_LOCKED,
        );
        fl
    }

    fn file(&self) -> Result<&TokenFile> {
        self.file.as_ref().ok_or(Error::TokenNotRecognized)
    }

    fn check_pin_len(pin: &Pin) -> Result<()> {
        if PIN_LEN.contains(&pin.expose_secret().len()) {
            Ok(())
        } else {
            Err(Error::PinLenRange)
        }
    }

    /// Checks a PIN against `role`'s wrapped key, counting failures; the data key on success.
    fn verify(&mut self, role: Role, pin: &Pin) -> Result<Key> {
        let max = self.max_retries;
        let f = self.file.as_mut().ok_or(Error::TokenNotRecognized)?;
        let (wrapped, failures) = match role {
            Role::So => (Some(&f.so), f.so_failures),
            Role::User => (f.user.as_ref(), f.user_failures),
        };
        let wrapped = wrapped.ok_or(Error::UserPinNotInitialized)?.clone();
        if failures >= max {
            return Err(Error::PinLocked);
        }
        let got = wrapped.unwrap_with(pin.expose_secret(), f.kdf)?;
        let counter = match role {
            Role::So => &mut f.so_failures,
            Role::User => &mut f.user_failures,
        };
        let before = *counter;
        *counter = if got.is_some() { 0 } else { before + 1 };
        if *counter != before {
            let snapshot = f.clone();
            self.store.save_token(&snapshot)?;
        }
        got.ok_or(Error::PinIncorrect)
    }

    /// `C_InitToken` (no session may be open; the caller checks).
    pub fn init(&mut self, so_pin: &Pin, label: &[u8; 32]) -> Result<()> {
        Self::check_pin_len(so_pin)?;
        let serial = match &self.file {
            Some(f) => {
                let s = f.serial.clone();
                self.verify(Role::So, so_pin)?;
                s
            }
            None => {
                let mut r = [0u8; 8];
                crate::crypto::random(&mut r)?;
                hex::encode(r)
            }
        };
        let dek = seal::random_key()?;
        let kdf = self.init_kdf;
        let label = String::from_utf8_lossy(label).trim_end().to_owned();
        let f = TokenFile {
            version: 1,
            label,
            serial,
            kdf,
            so: WrappedKey::wrap(so_pin.expose_secret(), &dek, kdf)?,
            user: None,
            so_failures: 0,
            user_failures: 0,
        };
        self.store.wipe_objects()?;
        self.store.save_token(&f)?;
        self.objects.clear();
        self.file = Some(f);
        self.login = None;
        self.dek = None;
        Ok(())
    }

    /// `C_Login` (the caller checks session states).
    pub fn login(&mut self, role: Role, pin: &Pin) -> Result<()> {
        self.file()?;
        if let Some(r) = self.login {
            return Err(if r == role {
                Error::UserAlreadyLoggedIn
            } else {
                Error::UserAnotherAlreadyLoggedIn
            });
        }
        let dek = self.verify(role, pin)?;
        if role == Role::User {
            for o in self.objects.values_mut() {
                if let (Secret::Sealed(blob), Some(id)) = (&o.secret, &o.store_id) {
                    let plain = seal::open(&dek, id.as_bytes(), blob)
                        .ok_or(Error::DeviceError("object secret does not decrypt"))?;
                    o.secret = Secret::Clear(plain);
                }
            }
        }
        self.dek = Some(dek);
        self.login = Some(role);
        Ok(())
    }

    /// `C_Logout`, also done when the last session closes: secrets of token objects go back to
    /// their sealed form and the data key is dropped.
    pub fn logout(&mut self) {
        if let Some(dek) = self.dek.take() {
            for o in self.objects.values_mut() {
                if let (Secret::Clear(s), Some(id)) = (&o.secret, &o.store_id) {
                    let sealed = seal::seal(&dek, id.as_bytes(), s).ok();
                    o.forget_secret(sealed);
                } else {
                    o.forget_secret(None);
                }
            }
        }
        self.login = None;
    }

    /// `C_InitPIN` by the SO.
    pub fn init_pin(&mut self, pin: &Pin) -> Result<()> {
        Self::check_pin_len(pin)?;
        if self.login != Some(Role::So) {
            return Err(Error::UserNotLoggedIn);
        }
        let dek = self.dek.as_ref().ok_or(Error::UserNotLoggedIn)?;
        let mut f = self.file()?.clone();
        f.user = Some(WrappedKey::wrap(pin.expose_secret(), dek, f.kdf)?);
        f.user_failures = 0;
        self.store.save_token(&f)?;
        self.file = Some(f);
        Ok(())
    }

    /// `C_SetPIN`: the SO's PIN if the SO is logged in, else the user's. Re-wraps the data key.
    pub fn set_pin(&mut self, old: &Pin, new: &Pin) -> Result<()> {
        Self::check_pin_len(new)?;
        let role = if self.login == Some(Role::So) {
            Role::So
        } else {
            Role::User
        };
        let dek = self.verify(role, old)?;
        let mut f = self.file()?.clone();
        let w = WrappedKey::wrap(new.expose_secret(), &dek, f.kdf)?;
        match role {
            Role::So => f.so = w,
            Role::User => f.user = Some(w),
        }
        self.store.save_token(&f)?;
        self.file = Some(f);
        Ok(())
    }

    /// Whether an object is visible in the current login state.
    pub fn visible(&self, o: &Object) -> bool {
        !o.is_private() || self.login == Some(Role::User)
    }

    /// An object usable in the current login state: a private object's handle stays valid
    /// after logout but gives `CKR_USER_NOT_LOGGED_IN` (as SoftHSM2 does, and as keywarden's
    /// adapter expects in order to log in again).
    pub fn object(&self, h: CK_OBJECT_HANDLE) -> Result<&Object> {
        let o = self.objects.get(&h).ok_or(Error::ObjectHandleInvalid)?;
        if self.visible(o) {
            Ok(o)
        } else {
            Err(Error::UserNotLoggedIn)
        }
    }

    /// Mutable access, with the same rules as [`Token::object`].
    pub fn object_mut(&mut self, h: CK_OBJECT_HANDLE) -> Result<&mut Object> {
        let user = self.login == Some(Role::User);
        let o = self.objects.get_mut(&h).ok_or(Error::ObjectHandleInvalid)?;
        if !o.is_private() || user {
            Ok(o)
        } else {
            Err(Error::UserNotLoggedIn)
        }
    }

    /// Writes a token object to disk (its secret sealed under the data key).
    pub fn persist(&self, o: &Object) -> Result<()> {
        let Some(id) = &o.store_id else { return Ok(()) };
        let sealed = match &o.secret {
            Secret::None => None,
            Secret::Sealed(b) => Some(b.clone()),
            Secret::Clear(s) => {
                let dek = self.dek.as_ref().ok_or(Error::UserNotLoggedIn)?;
                Some(seal::seal(dek, id.as_bytes(), s)?)
            }
        };
        self.store.save_object(id, &obj_file(o, sealed))
    }

    /// Adds an object; token objects are written to disk first.
    pub fn insert(&mut self, h: CK_OBJECT_HANDLE, mut o: Object) -> Result<()> {
        if o.is_token() {
            let mut id = [0u8; 16];
            crate::crypto::random(&mut id)?;
            o.store_id = Some(hex::encode(id));
            if !matches!(o.secret, Secret::None) && self.dek.is_none() {
                return Err(Error::UserNotLoggedIn);
            }
            self.persist(&o)?;
        }
        self.objects.insert(h, o);
        Ok(())
    }

    /// Removes an object (from disk first for token objects).
    pub fn remove(&mut self, h: CK_OBJECT_HANDLE) -> Result<()> {
        if let Some(id) = self.objects.get(&h).and_then(|o| o.store_id.clone()) {
            self.store.delete_object(&id)?;
        }
        self.objects.remove(&h);
        Ok(())
    }

    /// Drops the session objects of a closed session.
    pub fn drop_session_objects(&mut self, s: CK_SESSION_HANDLE) {
        self.objects.retain(|_, o| o.owner != Some(s));
    }

    /// A quick view for tests and debugging: label by handle of the visible objects.
    pub fn labels(&self) -> BTreeMap<CK_OBJECT_HANDLE, Vec<u8>> {
        self.objects
            .iter()
            .filter(|(_, o)| self.visible(o))
            .map(|(h, o)| (*h, o.attrs.get(CKA_LABEL).unwrap_or_default().to_vec()))
            .collect()
    }
}

/// Makes a [`Pin`] from bytes.
pub fn pin(bytes: &[u8]) -> Pin {
    SecretSlice::from(bytes.to_vec())
}

/// A zeroizing copy of a PIN's bytes, for callers that must hand it on.
pub fn pin_bytes(p: &Pin) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(p.expose_secret().to_vec())
}
