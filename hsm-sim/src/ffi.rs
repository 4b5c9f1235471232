//! The C ABI: `C_GetFunctionList`, `C_GetInterfaceList`, `C_GetInterface` and every entry of
//! `CK_FUNCTION_LIST` (v2.40). This is the only module with `unsafe` code. Each function
//! decodes its raw arguments into safe Rust values, calls [`Module`], and encodes the result;
//! panics are caught so that none crosses the C boundary. All state is behind locks, so the
//! module is safe from many threads (`CKF_OS_LOCKING_OK`).

#![allow(non_snake_case)]

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;
use std::sync::{Arc, RwLock};

use cryptoki_sys::*;

use crate::attr::Attr;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::module::{MechParam, Mechanism, Module, Output};
use crate::token;

static STATE: RwLock<Option<Arc<Module>>> = RwLock::new(None);

fn module() -> Result<Arc<Module>> {
    STATE
        .read()
        .map_err(|_| Error::DeviceError("lock poisoned"))?
        .clone()
        .ok_or(Error::CryptokiNotInitialized)
}

/// Runs `f`, turning its error or a panic into a `CKR_` value.
fn guard(f: impl FnOnce() -> Result<()>) -> CK_RV {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => CKR_OK,
        Ok(Err(e)) => e.rv(),
        Err(_) => CKR_GENERAL_ERROR,
    }
}

fn to_usize(n: CK_ULONG) -> Result<usize> {
    usize::try_from(n).map_err(|_| Error::ArgumentsBad)
}

/// Borrows a caller's byte buffer.
///
/// # Safety
/// `p` must be null or point to `len` readable bytes that stay valid during the call.
unsafe fn bytes<'a>(p: *const CK_BYTE, len: CK_ULONG) -> Result<&'a [u8]> {
    let len = to_usize(len)?;
    if p.is_null() {
        return if len == 0 {
            Ok(&[])
        } else {
            Err(Error::ArgumentsBad)
        };
    }
    // SAFETY: non-null, and the caller guarantees `len` readable bytes (PKCS#11 contract).
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// Copies a caller's template.
///
/// # Safety
/// `p` must be null or point to `n` valid `CK_ATTRIBUTE`s whose values are readable.
unsafe fn template(p: *const CK_ATTRIBUTE, n: CK_ULONG) -> Result<Vec<Attr>> {
    let n = to_usize(n)?;
    if p.is_null() {
        return if n == 0 {
            Ok(Vec::new())
        } else {
            Err(Error::ArgumentsBad)
        };
    }
    // SAFETY: non-null, `n` entries guaranteed by the caller.
    let raw = unsafe { std::slice::from_raw_parts(p, n) };
    raw.iter()
        .map(|a| {
            // SAFETY: each attribute's pValue points to ulValueLen bytes (PKCS#11 contract).
            let v = unsafe { bytes(a.pValue as *const u8, a.ulValueLen) }?;
            Ok(Attr {
                ty: a.type_,
                value: zeroize::Zeroizing::new(v.to_vec()),
            })
        })
        .collect()
}

/// Decodes a `CK_MECHANISM`.
///
/// # Safety
/// `p` must be null or point to a valid `CK_MECHANISM` whose parameter is readable.
unsafe fn mechanism(p: *const CK_MECHANISM) -> Result<Mechanism> {
    if p.is_null() {
        return Err(Error::ArgumentsBad);
    }
    // SAFETY: non-null and valid per the caller.
    let m = unsafe { &*p };
    if m.pParameter.is_null() || m.ulParameterLen == 0 {
        return Ok(Mechanism::new(m.mechanism));
    }
    if m.mechanism == CKM_ECDH1_DERIVE
        && to_usize(m.ulParameterLen)? == std::mem::size_of::<CK_ECDH1_DERIVE_PARAMS>()
    {
        // SAFETY: the length matches CK_ECDH1_DERIVE_PARAMS, which the caller passes for this
        // mechanism; read_unaligned does not require the caller's buffer to be aligned.
        let e = unsafe { ptr::read_unaligned(m.pParameter as *const CK_ECDH1_DERIVE_PARAMS) };
        // SAFETY: the params' pointers/lengths describe readable buffers (PKCS#11 contract).
        let shared = unsafe { bytes(e.pSharedData, e.ulSharedDataLen) }?.to_vec();
        // SAFETY: as above.
        let public = unsafe { bytes(e.pPublicData, e.ulPublicDataLen) }?.to_vec();
        return Ok(Mechanism {
            ty: m.mechanism,
            param: MechParam::Ecdh1 {
                kdf: e.kdf,
                shared,
                public,
            },
        });
    }
    // SAFETY: pParameter points to ulParameterLen bytes.
    let raw = unsafe { bytes(m.pParameter as *const u8, m.ulParameterLen) }?.to_vec();
    Ok(Mechanism {
        ty: m.mechanism,
        param: MechParam::Bytes(raw),
    })
}

/// The capacity the caller offers: `None` for a length query (NULL buffer).
///
/// # Safety
/// `len` must be null or valid for reads.
unsafe fn capacity(out: *const CK_BYTE, len: *const CK_ULONG) -> Result<Option<usize>> {
    if len.is_null() {
        return Err(Error::ArgumentsBad);
    }
    if out.is_null() {
        return Ok(None);
    }
    // SAFETY: non-null, valid per the caller.
    Ok(Some(to_usize(unsafe { *len })?))
}

/// Writes an [`Output`] with the two-call length convention.
///
/// # Safety
/// `len` must be valid for writes; `out`, when data is written, must have room for `*len` bytes
/// (checked by [`capacity`] before the operation ran).
unsafe fn put_output(out: *mut CK_BYTE, len: *mut CK_ULONG, r: Result<Output>) -> Result<()> {
    match r {
        Ok(Output::Len(n)) => {
            // SAFETY: `len` checked non-null by `capacity`.
            unsafe { *len = n as CK_ULONG };
            Ok(())
        }
        Ok(Output::Data(v)) => {
            // SAFETY: the module only returns data when the capacity `*len` sufficed; `out` is
            // non-null in that case (a NULL buffer is a length query).
            unsafe {
                ptr::copy_nonoverlapping(v.as_ptr(), out, v.len());
                *len = v.len() as CK_ULONG;
            }
            Ok(())
        }
        Err(Error::BufferTooSmall(n)) => {
            // SAFETY: as above.
            unsafe { *len = n as CK_ULONG };
            Err(Error::BufferTooSmall(n))
        }
        Err(e) => Err(e),
    }
}

/// Writes one value through an out-pointer.
///
/// # Safety
/// `p` must be null or valid for writes.
unsafe fn put<T>(p: *mut T, v: T) -> Result<()> {
    if p.is_null() {
        return Err(Error::ArgumentsBad);
    }
    // SAFETY: non-null and writable per the caller.
    unsafe { p.write(v) };
    Ok(())
}

/// Writes a list with the two-call convention (`C_GetSlotList`, `C_GetMechanismList`).
///
/// # Safety
/// `count` must be valid for reads and writes; `list`, if non-null, must have room for `*count`
/// entries.
unsafe fn put_list(list: *mut CK_ULONG, count: *mut CK_ULONG, items: &[CK_ULONG]) -> Result<()> {
    if count.is_null() {
        return Err(Error::ArgumentsBad);
    }
    // SAFETY: non-null, valid per the caller.
    let cap = to_usize(unsafe { *count })?;
    // SAFETY: as above.
    unsafe { *count = items.len() as CK_ULONG };
    if list.is_null() {
        return Ok(());
    }
    if cap < items.len() {
        return Err(Error::BufferTooSmall(items.len()));
    }
    // SAFETY: `list` has room for `cap >= items.len()` entries.
    unsafe { ptr::copy_nonoverlapping(items.as_ptr(), list, items.len()) };
    Ok(())
}

fn padded<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [b' '; N];
    let b = s.as_bytes();
    let n = b.len().min(N);
    out[..n].copy_from_slice(&b[..n]);
    out
}

const VERSION: CK_VERSION = CK_VERSION { major: 0, minor: 1 };

// ---- general purpose ----

unsafe extern "C" fn C_Initialize(args: *mut c_void) -> CK_RV {
    guard(|| {
        if !args.is_null() {
            // SAFETY: a non-null argument is a CK_C_INITIALIZE_ARGS (PKCS#11 contract).
            let a = unsafe { &*(args as *const CK_C_INITIALIZE_ARGS) };
            if !a.pReserved.is_null() {
                return Err(Error::ArgumentsBad);
            }
            let fns = [
                a.CreateMutex.is_some(),
                a.DestroyMutex.is_some(),
                a.LockMutex.is_some(),
                a.UnlockMutex.is_some(),
            ];
            let given = fns.iter().filter(|x| **x).count();
            if given != 0 && given != 4 {
                return Err(Error::ArgumentsBad);
            }
            // Mutex callbacks without CKF_OS_LOCKING_OK would oblige us to use them.
            if given == 4 && a.flags & CKF_OS_LOCKING_OK == 0 {
                return Err(Error::Injected(CKR_CANT_LOCK));
            }
        }
        let mut st = STATE
            .write()
            .map_err(|_| Error::DeviceError("lock poisoned"))?;
        if st.is_some() {
            return Err(Error::CryptokiAlreadyInitialized);
        }
        let cfg = Config::load().map_err(|_| Error::Injected(CKR_GENERAL_ERROR))?;
        *st = Some(Arc::new(Module::new(&cfg)?));
        Ok(())
    })
}

unsafe extern "C" fn C_Finalize(reserved: *mut c_void) -> CK_RV {
    guard(|| {
        if !reserved.is_null() {
            return Err(Error::ArgumentsBad);
        }
        let mut st = STATE
            .write()
            .map_err(|_| Error::DeviceError("lock poisoned"))?;
        st.take().map(|_| ()).ok_or(Error::CryptokiNotInitialized)
    })
}

unsafe extern "C" fn C_GetInfo(info: *mut CK_INFO) -> CK_RV {
    guard(|| {
        module()?;
        let i = CK_INFO {
            cryptokiVersion: CK_VERSION {
                major: 2,
                minor: 40,
            },
            manufacturerID: padded("keywarden"),
            flags: 0,
            libraryDescription: padded("keywarden hsm-sim"),
            libraryVersion: VERSION,
        };
        // SAFETY: `info` is null (rejected) or writable.
        unsafe { put(info, i) }
    })
}

unsafe extern "C" fn C_GetSlotList(
    present: CK_BBOOL,
    list: *mut CK_SLOT_ID,
    count: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        let m = module()?;
        let slots = if present == CK_FALSE {
            m.slot_list()
        } else {
            m.slots_with_token()
        };
        // SAFETY: pointers per the PKCS#11 contract, checked in put_list.
        unsafe { put_list(list, count, &slots) }
    })
}

unsafe extern "C" fn C_GetSlotInfo(slot: CK_SLOT_ID, info: *mut CK_SLOT_INFO) -> CK_RV {
    guard(|| {
        let m = module()?;
        let present = m.slot_present(slot)?;
        let i = CK_SLOT_INFO {
            slotDescription: padded("keywarden hsm-sim slot"),
            manufacturerID: padded("keywarden"),
            flags: if present { CKF_TOKEN_PRESENT } else { 0 },
            hardwareVersion: VERSION,
            firmwareVersion: VERSION,
        };
        // SAFETY: `info` is null (rejected) or writable.
        unsafe { put(info, i) }
    })
}

unsafe extern "C" fn C_GetTokenInfo(slot: CK_SLOT_ID, info: *mut CK_TOKEN_INFO) -> CK_RV {
    guard(|| {
        let m = module()?;
        let t = m.token_info(slot)?;
        let i = CK_TOKEN_INFO {
            label: t.label,
            manufacturerID: padded("keywarden"),
            model: padded("hsm-sim"),
            serialNumber: t.serial,
            flags: t.flags,
            ulMaxSessionCount: t.max_sessions as CK_ULONG,
            ulSessionCount: t.sessions as CK_ULONG,
            ulMaxRwSessionCount: t.max_sessions as CK_ULONG,
            ulRwSessionCount: t.rw_sessions as CK_ULONG,
            ulMaxPinLen: *token::PIN_LEN.end() as CK_ULONG,
            ulMinPinLen: *token::PIN_LEN.start() as CK_ULONG,
            ulTotalPublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulTotalPrivateMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePrivateMemory: CK_UNAVAILABLE_INFORMATION,
            hardwareVersion: VERSION,
            firmwareVersion: VERSION,
            utcTime: [b' '; 16],
        };
        // SAFETY: `info` is null (rejected) or writable.
        unsafe { put(info, i) }
    })
}

unsafe extern "C" fn C_GetMechanismList(
    slot: CK_SLOT_ID,
    list: *mut CK_MECHANISM_TYPE,
    count: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        let m = module()?;
        let l = m.mechanism_list(slot)?;
        // SAFETY: pointers per the PKCS#11 contract, checked in put_list.
        unsafe { put_list(list, count, &l) }
    })
}

unsafe extern "C" fn C_GetMechanismInfo(
    slot: CK_SLOT_ID,
    ty: CK_MECHANISM_TYPE,
    info: *mut CK_MECHANISM_INFO,
) -> CK_RV {
    guard(|| {
        let m = module()?;
        let (min, max, flags) = m.mechanism_info(slot, ty)?;
        // SAFETY: `info` is null (rejected) or writable.
        unsafe {
            put(
                info,
                CK_MECHANISM_INFO {
                    ulMinKeySize: min,
                    ulMaxKeySize: max,
                    flags,
                },
            )
        }
    })
}

unsafe extern "C" fn C_InitToken(
    slot: CK_SLOT_ID,
    pin: *mut CK_UTF8CHAR,
    pin_len: CK_ULONG,
    label: *mut CK_UTF8CHAR,
) -> CK_RV {
    guard(|| {
        let m = module()?;
        // SAFETY: pin points to pin_len bytes.
        let p = token::pin(unsafe { bytes(pin, pin_len) }?);
        if label.is_null() {
            return Err(Error::ArgumentsBad);
        }
        // SAFETY: the label is 32 bytes, blank padded (PKCS#11 contract).
        let l: [u8; 32] = unsafe { ptr::read_unaligned(label as *const [u8; 32]) };
        m.init_token(slot, &p, &l)
    })
}

unsafe extern "C" fn C_InitPIN(
    h: CK_SESSION_HANDLE,
    pin: *mut CK_UTF8CHAR,
    pin_len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let m = module()?;
        // SAFETY: pin points to pin_len bytes.
        let p = token::pin(unsafe { bytes(pin, pin_len) }?);
        m.init_pin(h, &p)
    })
}

unsafe extern "C" fn C_SetPIN(
    h: CK_SESSION_HANDLE,
    old: *mut CK_UTF8CHAR,
    old_len: CK_ULONG,
    new: *mut CK_UTF8CHAR,
    new_len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let m = module()?;
        // SAFETY: each pointer points to its length in bytes.
        let (o, n) = unsafe {
            (
                token::pin(bytes(old, old_len)?),
                token::pin(bytes(new, new_len)?),
            )
        };
        m.set_pin(h, &o, &n)
    })
}

// ---- sessions ----

unsafe extern "C" fn C_OpenSession(
    slot: CK_SLOT_ID,
    flags: CK_FLAGS,
    _app: *mut c_void,
    _notify: CK_NOTIFY,
    out: *mut CK_SESSION_HANDLE,
) -> CK_RV {
    guard(|| {
        let m = module()?;
        if out.is_null() {
            return Err(Error::ArgumentsBad);
        }
        let h = m.open_session(slot, flags)?;
        // SAFETY: non-null, writable per the caller.
        unsafe { put(out, h) }
    })
}

unsafe extern "C" fn C_CloseSession(h: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| module()?.close_session(h))
}

unsafe extern "C" fn C_CloseAllSessions(slot: CK_SLOT_ID) -> CK_RV {
    guard(|| module()?.close_all_sessions(slot))
}

unsafe extern "C" fn C_GetSessionInfo(h: CK_SESSION_HANDLE, info: *mut CK_SESSION_INFO) -> CK_RV {
    guard(|| {
        let i = module()?.session_info(h)?;
        let v = CK_SESSION_INFO {
            slotID: i.slot_id,
            state: i.state,
            flags: i.flags,
            ulDeviceError: 0,
        };
        // SAFETY: `info` is null (rejected) or writable.
        unsafe { put(info, v) }
    })
}

unsafe extern "C" fn C_Login(
    h: CK_SESSION_HANDLE,
    user: CK_USER_TYPE,
    pin: *mut CK_UTF8CHAR,
    pin_len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let m = module()?;
        // SAFETY: pin points to pin_len bytes.
        let p = token::pin(unsafe { bytes(pin, pin_len) }?);
        m.login(h, user, &p)
    })
}

unsafe extern "C" fn C_Logout(h: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| module()?.logout(h))
}

// ---- objects ----

unsafe extern "C" fn C_CreateObject(
    h: CK_SESSION_HANDLE,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
    out: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        let m = module()?;
        // SAFETY: t points to n attributes.
        let t = unsafe { template(t, n) }?;
        if out.is_null() {
            return Err(Error::ArgumentsBad);
        }
        let oh = m.create_object(h, &t)?;
        // SAFETY: non-null, writable per the caller.
        unsafe { put(out, oh) }
    })
}

unsafe extern "C" fn C_DestroyObject(h: CK_SESSION_HANDLE, oh: CK_OBJECT_HANDLE) -> CK_RV {
    guard(|| module()?.destroy_object(h, oh))
}

unsafe extern "C" fn C_GetObjectSize(
    h: CK_SESSION_HANDLE,
    oh: CK_OBJECT_HANDLE,
    size: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        let s = module()?.object_size(h, oh)?;
        // SAFETY: `size` is null (rejected) or writable.
        unsafe { put(size, s) }
    })
}

unsafe extern "C" fn C_GetAttributeValue(
    h: CK_SESSION_HANDLE,
    oh: CK_OBJECT_HANDLE,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let m = module()?;
        let n = to_usize(n)?;
        if t.is_null() {
            return if n == 0 {
                m.get_attributes(h, oh, &[]).map(|_| ())
            } else {
                Err(Error::ArgumentsBad)
            };
        }
        // SAFETY: t points to n writable attributes (PKCS#11 contract).
        let attrs = unsafe { std::slice::from_raw_parts_mut(t, n) };
        let types: Vec<CK_ATTRIBUTE_TYPE> = attrs.iter().map(|a| a.type_).collect();
        let values = m.get_attributes(h, oh, &types)?;
        let mut rv = Ok(());
        for (a, v) in attrs.iter_mut().zip(values) {
            match v {
                Ok(v) if a.pValue.is_null() => a.ulValueLen = v.len() as CK_ULONG,
                Ok(v) if to_usize(a.ulValueLen)? >= v.len() => {
                    // SAFETY: pValue has room for ulValueLen >= v.len() bytes.
                    unsafe { ptr::copy_nonoverlapping(v.as_ptr(), a.pValue as *mut u8, v.len()) };
                    a.ulValueLen = v.len() as CK_ULONG;
                }
                Ok(v) => {
                    a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                    rv = Err(Error::BufferTooSmall(v.len()));
                }
                Err(e) => {
                    a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                    rv = Err(e);
                }
            }
        }
        rv
    })
}

unsafe extern "C" fn C_SetAttributeValue(
    h: CK_SESSION_HANDLE,
    oh: CK_OBJECT_HANDLE,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let m = module()?;
        // SAFETY: t points to n attributes.
        let t = unsafe { template(t, n) }?;
        m.set_attributes(h, oh, &t)
    })
}

unsafe extern "C" fn C_FindObjectsInit(
    h: CK_SESSION_HANDLE,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let m = module()?;
        // SAFETY: t points to n attributes.
        let t = unsafe { template(t, n) }?;
        m.find_init(h, &t)
    })
}

unsafe extern "C" fn C_FindObjects(
    h: CK_SESSION_HANDLE,
    out: *mut CK_OBJECT_HANDLE,
    max: CK_ULONG,
    count: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        let m = module()?;
        if out.is_null() || count.is_null() {
            return Err(Error::ArgumentsBad);
        }
        let found = m.find(h, to_usize(max)?)?;
        // SAFETY: `out` has room for `max >= found.len()` handles; `count` is writable.
        unsafe {
            ptr::copy_nonoverlapping(found.as_ptr(), out, found.len());
            *count = found.len() as CK_ULONG;
        }
        Ok(())
    })
}

unsafe extern "C" fn C_FindObjectsFinal(h: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| module()?.find_final(h))
}

// ---- digest, sign, verify ----

unsafe extern "C" fn C_DigestInit(h: CK_SESSION_HANDLE, mech: *mut CK_MECHANISM) -> CK_RV {
    guard(|| {
        let m = module()?;
        // SAFETY: mech is null (rejected) or valid.
        let mech = unsafe { mechanism(mech) }?;
        m.digest_init(h, &mech)
    })
}

unsafe extern "C" fn C_Digest(
    h: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    len: CK_ULONG,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        let m = module()?;
        // SAFETY: buffers per the PKCS#11 contract.
        unsafe {
            let d = bytes(data, len)?;
            let cap = capacity(out, out_len)?;
            put_output(out, out_len, m.digest(h, d, cap))
        }
    })
}

unsafe extern "C" fn C_DigestUpdate(
    h: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let m = module()?;
        // SAFETY: data points to len bytes.
        let d = unsafe { bytes(data, len) }?;
        m.digest_update(h, d)
    })
}

unsafe extern "C" fn C_DigestFinal(
    h: CK_SESSION_HANDLE,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        let m = module()?;
        // SAFETY: buffers per the PKCS#11 contract.
        unsafe {
            let cap = capacity(out, out_len)?;
            put_output(out, out_len, m.digest_final(h, cap))
        }
    })
}

unsafe extern "C" fn C_SignInit(
    h: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        let m = module()?;
        // SAFETY: mech is null (rejected) or valid.
        let mech = unsafe { mechanism(mech) }?;
        m.sign_init(h, &mech, key)
    })
}

unsafe extern "C" fn C_Sign(
    h: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    len: CK_ULONG,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        let m = module()?;
        // SAFETY: buffers per the PKCS#11 contract.
        unsafe {
            let d = bytes(data, len)?;
            let cap = capacity(out, out_len)?;
            put_output(out, out_len, m.sign(h, d, cap))
        }
    })
}

unsafe extern "C" fn C_SignUpdate(
    h: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let m = module()?;
        // SAFETY: data points to len bytes.
        let d = unsafe { bytes(data, len) }?;
        m.sign_update(h, d)
    })
}

unsafe extern "C" fn C_SignFinal(
    h: CK_SESSION_HANDLE,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        let m = module()?;
        // SAFETY: buffers per the PKCS#11 contract.
        unsafe {
            let cap = capacity(out, out_len)?;
            put_output(out, out_len, m.sign_final(h, cap))
        }
    })
}

unsafe extern "C" fn C_VerifyInit(
    h: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        let m = module()?;
        // SAFETY: mech is null (rejected) or valid.
        let mech = unsafe { mechanism(mech) }?;
        m.verify_init(h, &mech, key)
    })
}

unsafe extern "C" fn C_Verify(
    h: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    len: CK_ULONG,
    sig: *mut CK_BYTE,
    sig_len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let m = module()?;
        // SAFETY: each pointer points to its length in bytes.
        let (d, s) = unsafe { (bytes(data, len)?, bytes(sig, sig_len)?) };
        m.verify(h, d, s)
    })
}

unsafe extern "C" fn C_VerifyUpdate(
    h: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let m = module()?;
        // SAFETY: data points to len bytes.
        let d = unsafe { bytes(data, len) }?;
        m.verify_update(h, d)
    })
}

unsafe extern "C" fn C_VerifyFinal(
    h: CK_SESSION_HANDLE,
    sig: *mut CK_BYTE,
    sig_len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let m = module()?;
        // SAFETY: sig points to sig_len bytes.
        let s = unsafe { bytes(sig, sig_len) }?;
        m.verify_final(h, s)
    })
}

// ---- keys and random ----

unsafe extern "C" fn C_GenerateKeyPair(
    h: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    pub_t: *mut CK_ATTRIBUTE,
    pub_n: CK_ULONG,
    priv_t: *mut CK_ATTRIBUTE,
    priv_n: CK_ULONG,
    pub_out: *mut CK_OBJECT_HANDLE,
    priv_out: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        let m = module()?;
        // SAFETY: the mechanism and templates are valid per the PKCS#11 contract.
        let (mech, pt, kt) = unsafe {
            (
                mechanism(mech)?,
                template(pub_t, pub_n)?,
                template(priv_t, priv_n)?,
            )
        };
        if pub_out.is_null() || priv_out.is_null() {
            return Err(Error::ArgumentsBad);
        }
        let (ph, kh) = m.generate_key_pair(h, &mech, &pt, &kt)?;
        // SAFETY: both non-null and writable per the caller.
        unsafe {
            put(pub_out, ph)?;
            put(priv_out, kh)
        }
    })
}

unsafe extern "C" fn C_DeriveKey(
    h: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    base: CK_OBJECT_HANDLE,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
    out: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        let m = module()?;
        // SAFETY: the mechanism and template are valid per the PKCS#11 contract.
        let (mech, t) = unsafe { (mechanism(mech)?, template(t, n)?) };
        if out.is_null() {
            return Err(Error::ArgumentsBad);
        }
        let k = m.derive_key(h, &mech, base, &t)?;
        // SAFETY: non-null and writable per the caller.
        unsafe { put(out, k) }
    })
}

unsafe extern "C" fn C_SeedRandom(
    h: CK_SESSION_HANDLE,
    _seed: *mut CK_BYTE,
    _len: CK_ULONG,
) -> CK_RV {
    guard(|| module()?.seed_random(h))
}

unsafe extern "C" fn C_GenerateRandom(
    h: CK_SESSION_HANDLE,
    out: *mut CK_BYTE,
    len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let m = module()?;
        let n = to_usize(len)?;
        if out.is_null() && n > 0 {
            return Err(Error::ArgumentsBad);
        }
        let mut buf = vec![0u8; n];
        m.generate_random(h, &mut buf)?;
        // SAFETY: `out` has room for `len` bytes (non-null when len > 0).
        unsafe { ptr::copy_nonoverlapping(buf.as_ptr(), out, n) };
        Ok(())
    })
}

// ---- functions the token does not implement ----

/// Defines entry points that validate the session and answer `CKR_FUNCTION_NOT_SUPPORTED`.
macro_rules! unsupported_session_fns {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        unsafe extern "C" fn $name(h: CK_SESSION_HANDLE $(, $arg: $ty)*) -> CK_RV {
            $(let _ = $arg;)*
            guard(|| module()?.unsupported(h, stringify!($name)))
        }
    )*};
}

unsupported_session_fns! {
    C_GetOperationState(a: *mut CK_BYTE, b: *mut CK_ULONG);
    C_SetOperationState(a: *mut CK_BYTE, b: CK_ULONG, c: CK_OBJECT_HANDLE, d: CK_OBJECT_HANDLE);
    C_CopyObject(a: CK_OBJECT_HANDLE, b: *mut CK_ATTRIBUTE, c: CK_ULONG, d: *mut CK_OBJECT_HANDLE);
    C_EncryptInit(a: *mut CK_MECHANISM, b: CK_OBJECT_HANDLE);
    C_Encrypt(a: *mut CK_BYTE, b: CK_ULONG, c: *mut CK_BYTE, d: *mut CK_ULONG);
    C_EncryptUpdate(a: *mut CK_BYTE, b: CK_ULONG, c: *mut CK_BYTE, d: *mut CK_ULONG);
    C_EncryptFinal(a: *mut CK_BYTE, b: *mut CK_ULONG);
    C_DecryptInit(a: *mut CK_MECHANISM, b: CK_OBJECT_HANDLE);
    C_Decrypt(a: *mut CK_BYTE, b: CK_ULONG, c: *mut CK_BYTE, d: *mut CK_ULONG);
    C_DecryptUpdate(a: *mut CK_BYTE, b: CK_ULONG, c: *mut CK_BYTE, d: *mut CK_ULONG);
    C_DecryptFinal(a: *mut CK_BYTE, b: *mut CK_ULONG);
    C_DigestKey(a: CK_OBJECT_HANDLE);
    C_SignRecoverInit(a: *mut CK_MECHANISM, b: CK_OBJECT_HANDLE);
    C_SignRecover(a: *mut CK_BYTE, b: CK_ULONG, c: *mut CK_BYTE, d: *mut CK_ULONG);
    C_VerifyRecoverInit(a: *mut CK_MECHANISM, b: CK_OBJECT_HANDLE);
    C_VerifyRecover(a: *mut CK_BYTE, b: CK_ULONG, c: *mut CK_BYTE, d: *mut CK_ULONG);
    C_DigestEncryptUpdate(a: *mut CK_BYTE, b: CK_ULONG, c: *mut CK_BYTE, d: *mut CK_ULONG);
    C_DecryptDigestUpdate(a: *mut CK_BYTE, b: CK_ULONG, c: *mut CK_BYTE, d: *mut CK_ULONG);
    C_SignEncryptUpdate(a: *mut CK_BYTE, b: CK_ULONG, c: *mut CK_BYTE, d: *mut CK_ULONG);
    C_DecryptVerifyUpdate(a: *mut CK_BYTE, b: CK_ULONG, c: *mut CK_BYTE, d: *mut CK_ULONG);
    C_GenerateKey(a: *mut CK_MECHANISM, b: *mut CK_ATTRIBUTE, c: CK_ULONG, d: *mut CK_OBJECT_HANDLE);
    C_WrapKey(a: *mut CK_MECHANISM, b: CK_OBJECT_HANDLE, c: CK_OBJECT_HANDLE, d: *mut CK_BYTE, e: *mut CK_ULONG);
    C_UnwrapKey(a: *mut CK_MECHANISM, b: CK_OBJECT_HANDLE, c: *mut CK_BYTE, d: CK_ULONG, e: *mut CK_ATTRIBUTE, f: CK_ULONG, g: *mut CK_OBJECT_HANDLE);
}

/// Legacy parallel-function calls: the standard's answer for a token without them.
unsafe extern "C" fn C_GetFunctionStatus(_h: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| module().and(Err(Error::Injected(CKR_FUNCTION_NOT_PARALLEL))))
}

unsafe extern "C" fn C_CancelFunction(_h: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| module().and(Err(Error::Injected(CKR_FUNCTION_NOT_PARALLEL))))
}

unsafe extern "C" fn C_WaitForSlotEvent(
    _flags: CK_FLAGS,
    _slot: *mut CK_SLOT_ID,
    _r: *mut c_void,
) -> CK_RV {
    guard(|| module().and(Err(Error::FunctionNotSupported)))
}

// ---- entry points ----

static FUNCTION_LIST: CK_FUNCTION_LIST = CK_FUNCTION_LIST {
    version: CK_VERSION {
        major: 2,
        minor: 40,
    },
    C_Initialize: Some(C_Initialize),
    C_Finalize: Some(C_Finalize),
    C_GetInfo: Some(C_GetInfo),
    C_GetFunctionList: Some(C_GetFunctionList),
    C_GetSlotList: Some(C_GetSlotList),
    C_GetSlotInfo: Some(C_GetSlotInfo),
    C_GetTokenInfo: Some(C_GetTokenInfo),
    C_GetMechanismList: Some(C_GetMechanismList),
    C_GetMechanismInfo: Some(C_GetMechanismInfo),
    C_InitToken: Some(C_InitToken),
    C_InitPIN: Some(C_InitPIN),
    C_SetPIN: Some(C_SetPIN),
    C_OpenSession: Some(C_OpenSession),
    C_CloseSession: Some(C_CloseSession),
    C_CloseAllSessions: Some(C_CloseAllSessions),
    C_GetSessionInfo: Some(C_GetSessionInfo),
    C_GetOperationState: Some(C_GetOperationState),
    C_SetOperationState: Some(C_SetOperationState),
    C_Login: Some(C_Login),
    C_Logout: Some(C_Logout),
    C_CreateObject: Some(C_CreateObject),
    C_CopyObject: Some(C_CopyObject),
    C_DestroyObject: Some(C_DestroyObject),
    C_GetObjectSize: Some(C_GetObjectSize),
    C_GetAttributeValue: Some(C_GetAttributeValue),
    C_SetAttributeValue: Some(C_SetAttributeValue),
    C_FindObjectsInit: Some(C_FindObjectsInit),
    C_FindObjects: Some(C_FindObjects),
    C_FindObjectsFinal: Some(C_FindObjectsFinal),
    C_EncryptInit: Some(C_EncryptInit),
    C_Encrypt: Some(C_Encrypt),
    C_EncryptUpdate: Some(C_EncryptUpdate),
    C_EncryptFinal: Some(C_EncryptFinal),
    C_DecryptInit: Some(C_DecryptInit),
    C_Decrypt: Some(C_Decrypt),
    C_DecryptUpdate: Some(C_DecryptUpdate),
    C_DecryptFinal: Some(C_DecryptFinal),
    C_DigestInit: Some(C_DigestInit),
    C_Digest: Some(C_Digest),
    C_DigestUpdate: Some(C_DigestUpdate),
    C_DigestKey: Some(C_DigestKey),
    C_DigestFinal: Some(C_DigestFinal),
    C_SignInit: Some(C_SignInit),
    C_Sign: Some(C_Sign),
    C_SignUpdate: Some(C_SignUpdate),
    C_SignFinal: Some(C_SignFinal),
    C_SignRecoverInit: Some(C_SignRecoverInit),
    C_SignRecover: Some(C_SignRecover),
    C_VerifyInit: Some(C_VerifyInit),
    C_Verify: Some(C_Verify),
    C_VerifyUpdate: Some(C_VerifyUpdate),
    C_VerifyFinal: Some(C_VerifyFinal),
    C_VerifyRecoverInit: Some(C_VerifyRecoverInit),
    C_VerifyRecover: Some(C_VerifyRecover),
    C_DigestEncryptUpdate: Some(C_DigestEncryptUpdate),
    C_DecryptDigestUpdate: Some(C_DecryptDigestUpdate),
    C_SignEncryptUpdate: Some(C_SignEncryptUpdate),
    C_DecryptVerifyUpdate: Some(C_DecryptVerifyUpdate),
    C_GenerateKey: Some(C_GenerateKey),
    C_GenerateKeyPair: Some(C_GenerateKeyPair),
    C_WrapKey: Some(C_WrapKey),
    C_UnwrapKey: Some(C_UnwrapKey),
    C_DeriveKey: Some(C_DeriveKey),
    C_SeedRandom: Some(C_SeedRandom),
    C_GenerateRandom: Some(C_GenerateRandom),
    C_GetFunctionStatus: Some(C_GetFunctionStatus),
    C_CancelFunction: Some(C_CancelFunction),
    C_WaitForSlotEvent: Some(C_WaitForSlotEvent),
};

/// `"PKCS 11"`, NUL-terminated: the name of the one interface.
static INTERFACE_NAME: [u8; 8] = *b"PKCS 11\0";

/// A `CK_INTERFACE` in a static.
struct Interface(CK_INTERFACE);

// SAFETY: the pointers inside point to immutable statics (`INTERFACE_NAME`, `FUNCTION_LIST`)
// that are never written through; sharing them between threads is sound.
unsafe impl Sync for Interface {}

static INTERFACE: Interface = Interface(CK_INTERFACE {
    pInterfaceName: INTERFACE_NAME.as_ptr() as *mut CK_UTF8CHAR,
    pFunctionList: &FUNCTION_LIST as *const CK_FUNCTION_LIST as *mut c_void,
    flags: 0,
});

/// The PKCS#11 v2 entry point.
///
/// # Safety
/// `list` must be null or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetFunctionList(list: *mut *mut CK_FUNCTION_LIST) -> CK_RV {
    // The list is immutable; callers receive `*mut` only because the C signature says so.
    let p = &FUNCTION_LIST as *const CK_FUNCTION_LIST as *mut CK_FUNCTION_LIST;
    // SAFETY: `list` is null (rejected) or writable per the caller.
    guard(|| unsafe { put(list, p) })
}

/// The PKCS#11 v3 interface list: one interface, "PKCS 11" with the v2.40 function list.
///
/// # Safety
/// `count` must be valid for reads and writes; `list`, if non-null, must have room for `*count`
/// interfaces.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetInterfaceList(
    list: *mut CK_INTERFACE,
    count: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        if count.is_null() {
            return Err(Error::ArgumentsBad);
        }
        // SAFETY: `count` non-null, readable and writable per the caller.
        let cap = unsafe { *count };
        // SAFETY: as above.
        unsafe { *count = 1 };
        if list.is_null() {
            return Ok(());
        }
        if cap < 1 {
            return Err(Error::BufferTooSmall(1));
        }
        // SAFETY: `list` has room for at least one interface.
        unsafe { list.write(CK_INTERFACE { ..INTERFACE.0 }) };
        Ok(())
    })
}

/// The PKCS#11 v3 entry point: the "PKCS 11" interface (v2.40 function list).
///
/// # Safety
/// `name` must be null or a NUL-terminated string; `version` null or readable; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetInterface(
    name: *mut CK_UTF8CHAR,
    version: *mut CK_VERSION,
    out: *mut *mut CK_INTERFACE,
    _flags: CK_FLAGS,
) -> CK_RV {
    guard(|| {
        if out.is_null() {
            return Err(Error::ArgumentsBad);
        }
        if !name.is_null() {
            // SAFETY: a non-null name is NUL-terminated per the caller.
            let n = unsafe { std::ffi::CStr::from_ptr(name as *const std::ffi::c_char) };
            if n.to_bytes() != b"PKCS 11" {
                return Err(Error::ArgumentsBad);
            }
        }
        if !version.is_null() {
            // SAFETY: non-null, readable per the caller.
            let v = unsafe { *version };
            if (v.major, v.minor) != (2, 40) {
                return Err(Error::ArgumentsBad);
            }
        }
        let p = &INTERFACE.0 as *const CK_INTERFACE as *mut CK_INTERFACE;
        // SAFETY: `out` non-null and writable per the caller.
        unsafe { put(out, p) }
    })
}
