//! The C ABI's edges, called raw: NULL pointers, calls before `C_Initialize`, double
//! initialisation, the two-call list convention, `C_GetInterface`, locking arguments. None may
//! crash; each has its standard return value.

#![allow(clippy::unwrap_used, clippy::expect_used, unsafe_code)]

mod common;

use std::ptr;

use common::*;
use cryptoki_sys::*;

fn raw() -> (tempfile::TempDir, Raw) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = hsm_sim_token(dir.path(), None, None);
    // SAFETY: one test per process (nextest); set before the module is loaded.
    unsafe { std::env::set_var("KEYWARDEN_HSM_SIM_CONFIG", &cfg) };
    (dir, Raw::load(&hsm_sim_lib()))
}

#[test]
fn lifecycle_and_null_arguments() {
    let (_dir, r) = raw();
    let f = &r.f;
    // SAFETY: every call passes either valid pointers or NULL on purpose; the module must
    // check them.
    unsafe {
        let mut info: CK_INFO = std::mem::zeroed();
        assert_eq!(
            f.C_GetInfo.unwrap()(&mut info),
            CKR_CRYPTOKI_NOT_INITIALIZED
        );
        assert_eq!(
            f.C_Finalize.unwrap()(ptr::null_mut()),
            CKR_CRYPTOKI_NOT_INITIALIZED
        );
        let mut bad = CK_C_INITIALIZE_ARGS {
            CreateMutex: None,
            DestroyMutex: None,
            LockMutex: None,
            UnlockMutex: None,
            flags: 0,
            pReserved: ptr::dangling_mut(),
        };
        assert_eq!(
            f.C_Initialize.unwrap()(&mut bad as *mut _ as *mut _),
            CKR_ARGUMENTS_BAD
        );
        let mut args = CK_C_INITIALIZE_ARGS {
            pReserved: ptr::null_mut(),
            flags: CKF_OS_LOCKING_OK,
            ..bad
        };
        assert_eq!(
            f.C_Initialize.unwrap()(&mut args as *mut _ as *mut _),
            CKR_OK
        );
        assert_eq!(
            f.C_Initialize.unwrap()(ptr::null_mut()),
            CKR_CRYPTOKI_ALREADY_INITIALIZED
        );

        assert_eq!(f.C_GetInfo.unwrap()(ptr::null_mut()), CKR_ARGUMENTS_BAD);
        assert_eq!(f.C_GetInfo.unwrap()(&mut info), CKR_OK);
        assert_eq!(
            (info.cryptokiVersion.major, info.cryptokiVersion.minor),
            (2, 40)
        );

        // Two-call slot list.
        let mut n: CK_ULONG = 0;
        assert_eq!(
            f.C_GetSlotList.unwrap()(CK_TRUE, ptr::null_mut(), &mut n),
            CKR_OK
        );
        assert_eq!(n, 1);
        let mut slots = [0 as CK_SLOT_ID; 1];
        let mut zero: CK_ULONG = 0;
        assert_eq!(
            f.C_GetSlotList.unwrap()(CK_TRUE, slots.as_mut_ptr(), &mut zero),
            CKR_BUFFER_TOO_SMALL
        );
        assert_eq!(zero, 1);
        assert_eq!(
            f.C_GetSlotList.unwrap()(CK_TRUE, slots.as_mut_ptr(), &mut n),
            CKR_OK
        );
        assert_eq!(
            f.C_GetSlotList.unwrap()(CK_TRUE, slots.as_mut_ptr(), ptr::null_mut()),
            CKR_ARGUMENTS_BAD
        );
        let mut ti: CK_TOKEN_INFO = std::mem::zeroed();
        assert_eq!(f.C_GetTokenInfo.unwrap()(99, &mut ti), CKR_SLOT_ID_INVALID);
        assert_eq!(f.C_GetTokenInfo.unwrap()(slots[0], &mut ti), CKR_OK);
        assert_eq!(&ti.label[..5], b"test ");

        let mut h: CK_SESSION_HANDLE = 0;
        let flags = CKF_SERIAL_SESSION | CKF_RW_SESSION;
        assert_eq!(
            f.C_OpenSession.unwrap()(slots[0], flags, ptr::null_mut(), None, ptr::null_mut()),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            f.C_OpenSession.unwrap()(slots[0], flags, ptr::null_mut(), None, &mut h),
            CKR_OK
        );
        // A PIN pointer that is NULL with a length.
        assert_eq!(
            f.C_Login.unwrap()(h, CKU_USER, ptr::null_mut(), 4),
            CKR_ARGUMENTS_BAD
        );
        // Sign with a NULL length pointer, NULL mechanism, NULL templates.
        assert_eq!(
            f.C_SignInit.unwrap()(h, ptr::null_mut(), 1),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            f.C_Sign.unwrap()(h, ptr::null_mut(), 0, ptr::null_mut(), ptr::null_mut()),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            f.C_FindObjectsInit.unwrap()(h, ptr::null_mut(), 3),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(f.C_FindObjectsInit.unwrap()(h, ptr::null_mut(), 0), CKR_OK);
        assert_eq!(
            f.C_FindObjects.unwrap()(h, ptr::null_mut(), 1, ptr::null_mut()),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(f.C_FindObjectsFinal.unwrap()(h), CKR_OK);
        // Functions the token does not have.
        assert_eq!(
            f.C_EncryptInit.unwrap()(h, ptr::null_mut(), 0),
            CKR_FUNCTION_NOT_SUPPORTED
        );
        assert_eq!(
            f.C_WrapKey.unwrap()(h, ptr::null_mut(), 0, 0, ptr::null_mut(), ptr::null_mut()),
            CKR_FUNCTION_NOT_SUPPORTED
        );
        assert_eq!(
            f.C_EncryptInit.unwrap()(0xdead, ptr::null_mut(), 0),
            CKR_SESSION_HANDLE_INVALID
        );
        assert_eq!(f.C_GetFunctionStatus.unwrap()(h), CKR_FUNCTION_NOT_PARALLEL);
        assert_eq!(f.C_CancelFunction.unwrap()(h), CKR_FUNCTION_NOT_PARALLEL);
        assert_eq!(
            f.C_WaitForSlotEvent.unwrap()(0, ptr::null_mut(), ptr::null_mut()),
            CKR_FUNCTION_NOT_SUPPORTED
        );
        let mut mi: CK_MECHANISM_INFO = std::mem::zeroed();
        assert_eq!(
            f.C_GetMechanismInfo.unwrap()(slots[0], CKM_RSA_PKCS, &mut mi),
            CKR_MECHANISM_INVALID
        );
        assert_eq!(
            f.C_GetMechanismInfo.unwrap()(slots[0], CKM_ECDSA, &mut mi),
            CKR_OK
        );
        assert_eq!(mi.ulMinKeySize, 256);
        // Random with a zero length and NULL buffer is fine.
        assert_eq!(f.C_GenerateRandom.unwrap()(h, ptr::null_mut(), 0), CKR_OK);

        assert_eq!(
            f.C_Finalize.unwrap()(ptr::dangling_mut()),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(f.C_Finalize.unwrap()(ptr::null_mut()), CKR_OK);
        assert_eq!(f.C_CloseSession.unwrap()(h), CKR_CRYPTOKI_NOT_INITIALIZED);
    }
}

unsafe extern "C" fn create_mutex(_m: *mut *mut std::ffi::c_void) -> CK_RV {
    CKR_OK
}
unsafe extern "C" fn mutex_op(_m: *mut std::ffi::c_void) -> CK_RV {
    CKR_OK
}

#[test]
fn application_mutexes_without_os_locking_are_refused() {
    let (_dir, r) = raw();
    let mut args = CK_C_INITIALIZE_ARGS {
        CreateMutex: Some(create_mutex),
        DestroyMutex: Some(mutex_op),
        LockMutex: Some(mutex_op),
        UnlockMutex: Some(mutex_op),
        flags: 0,
        pReserved: ptr::null_mut(),
    };
    // SAFETY: a valid CK_C_INITIALIZE_ARGS.
    unsafe {
        assert_eq!(
            r.f.C_Initialize.unwrap()(&mut args as *mut _ as *mut _),
            CKR_CANT_LOCK
        );
        args.flags = CKF_OS_LOCKING_OK;
        assert_eq!(
            r.f.C_Initialize.unwrap()(&mut args as *mut _ as *mut _),
            CKR_OK
        );
        args.UnlockMutex = None;
        assert_eq!(r.f.C_Finalize.unwrap()(ptr::null_mut()), CKR_OK);
        assert_eq!(
            r.f.C_Initialize.unwrap()(&mut args as *mut _ as *mut _),
            CKR_ARGUMENTS_BAD
        );
    }
}

#[test]
fn get_interface() {
    let (_dir, _r) = raw();
    // SAFETY: loading the module, then calling its v3 entry points with valid or NULL pointers.
    unsafe {
        let lib = cryptoki_sys::Pkcs11::new(hsm_sim_lib()).unwrap();
        let mut iface: *mut CK_INTERFACE = ptr::null_mut();
        assert_eq!(
            lib.C_GetInterface(ptr::null_mut(), ptr::null_mut(), &mut iface, 0),
            CKR_OK
        );
        let name = std::ffi::CStr::from_ptr((*iface).pInterfaceName as *const _);
        assert_eq!(name.to_bytes(), b"PKCS 11");
        let list = (*iface).pFunctionList as *const CK_FUNCTION_LIST;
        assert_eq!(((*list).version.major, (*list).version.minor), (2, 40));
        let mut other = *b"Vendor X\0";
        assert_eq!(
            lib.C_GetInterface(other.as_mut_ptr(), ptr::null_mut(), &mut iface, 0),
            CKR_ARGUMENTS_BAD
        );
        let mut v3 = CK_VERSION { major: 3, minor: 0 };
        assert_eq!(
            lib.C_GetInterface(ptr::null_mut(), &mut v3, &mut iface, 0),
            CKR_ARGUMENTS_BAD
        );
        let mut n: CK_ULONG = 0;
        assert_eq!(lib.C_GetInterfaceList(ptr::null_mut(), &mut n), CKR_OK);
        assert_eq!(n, 1);
        let mut one: [CK_INTERFACE; 1] = std::mem::zeroed();
        assert_eq!(lib.C_GetInterfaceList(one.as_mut_ptr(), &mut n), CKR_OK);
        assert_eq!(one[0].pFunctionList, list as *mut _);
        assert_eq!(lib.C_GetFunctionList(ptr::null_mut()), CKR_ARGUMENTS_BAD);
    }
}
