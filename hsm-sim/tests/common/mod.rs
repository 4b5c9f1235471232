//! Test fixtures: an hsm-sim or SoftHSM2 token in a fresh temporary directory, loaded through
//! cryptoki, plus a raw function list for the calls cryptoki does not expose (too-small buffers,
//! made-up handles).
//!
//! Each token's location reaches its module through an environment variable read at
//! `C_Initialize`, so every test must run in its own process: run them with `cargo nextest`.

#![allow(
    dead_code,
    unreachable_pub,
    unsafe_code,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use cryptoki_sys::*;
use keywarden_hsm_sim::{Config, FaultConfig, KdfParams, Module, SlotConfig};

pub const SO_PIN: &str = "12345678";
pub const USER_PIN: &str = "1234";
pub const SOFTHSM_LIB: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Cheap Argon2 so that tests (debug builds) log in quickly.
pub const TEST_KDF: KdfParams = KdfParams {
    m_kib: 64,
    t: 1,
    p: 1,
};

/// `target/<profile>/` of the running test executable (`target/<profile>/deps/<test>`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// The hsm-sim module, (re)built if missing or older than this test executable: a test build
/// compiles the library but does not refresh the `.so` in `target/<profile>/`.
pub fn hsm_sim_lib() -> PathBuf {
    let so = target_dir().join("libkeywarden_hsm_sim.so");
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let exe = std::env::current_exe().unwrap();
    let stale = match (mtime(&so), mtime(&exe)) {
        (Some(s), Some(e)) => s < e,
        _ => true,
    };
    if stale {
        let st = Command::new(env!("CARGO"))
            .args(["build", "-p", "keywarden-hsm-sim", "--lib"])
            .args(if cfg!(debug_assertions) {
                &[][..]
            } else {
                &["--release"][..]
            })
            .status()
            .unwrap();
        assert!(st.success(), "building the hsm-sim cdylib failed");
    }
    assert!(so.exists(), "{} missing", so.display());
    so
}

/// Which implementation a fixture runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    HsmSim,
    SoftHsm,
}

/// A token in a temporary directory, initialised with [`SO_PIN`] and [`USER_PIN`], loaded.
pub struct Fixture {
    pub kind: Kind,
    pub dir: tempfile::TempDir,
    pub lib: PathBuf,
    pub pkcs11: Pkcs11,
    pub slot: Slot,
    pub raw: Raw,
}

fn set_env(key: &str, value: &Path) {
    // SAFETY: each test runs in its own process (nextest) and sets the environment before any
    // other thread exists or a module is loaded.
    unsafe { std::env::set_var(key, value) };
}

/// Writes the hsm-sim configuration for one token in `dir` and initialises the token.
pub fn hsm_sim_token(
    dir: &Path,
    faults: Option<FaultConfig>,
    max_pin_retries: Option<u32>,
) -> PathBuf {
    let token_dir = dir.join("token");
    let slot = SlotConfig {
        slot_id: None,
        token_dir: Some(token_dir),
        max_pin_retries,
        kdf: Some(TEST_KDF),
        faults: None,
    };
    // Initialise without faults, like softhsm2-util does before the test starts.
    let m = Module::new(&Config {
        slots: vec![slot.clone()],
    })
    .unwrap();
    let so = keywarden_hsm_sim::token::pin(SO_PIN.as_bytes());
    let mut label = [b' '; 32];
    label[..4].copy_from_slice(b"test");
    m.init_token(0, &so, &label).unwrap();
    let h = m
        .open_session(0, CKF_SERIAL_SESSION | CKF_RW_SESSION)
        .unwrap();
    m.login(h, CKU_SO, &so).unwrap();
    m.init_pin(h, &keywarden_hsm_sim::token::pin(USER_PIN.as_bytes()))
        .unwrap();
    m.close_session(h).unwrap();
    let cfg = Config {
        slots: vec![SlotConfig { faults, ..slot }],
    };
    let path = dir.join("hsm-sim.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    path
}

impl Fixture {
    /// A healthy token of `kind`.
    pub fn new(kind: Kind) -> Self {
        Self::with(kind, None, None)
    }

    /// An hsm-sim token with faults and/or a PIN retry limit.
    pub fn with(kind: Kind, faults: Option<FaultConfig>, retries: Option<u32>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let lib = match kind {
            Kind::HsmSim => {
                let cfg = hsm_sim_token(dir.path(), faults, retries);
                set_env("KEYWARDEN_HSM_SIM_CONFIG", &cfg);
                hsm_sim_lib()
            }
            Kind::SoftHsm => {
                let tokens = dir.path().join("tokens");
                std::fs::create_dir_all(&tokens).unwrap();
                let conf = dir.path().join("softhsm2.conf");
                std::fs::write(
                    &conf,
                    format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", tokens.display()),
                )
                .unwrap();
                set_env("SOFTHSM2_CONF", &conf);
                let st = Command::new("softhsm2-util")
                    .args([
                        "--init-token",
                        "--free",
                        "--label",
                        "test",
                        "--so-pin",
                        SO_PIN,
                        "--pin",
                        USER_PIN,
                    ])
                    .env("SOFTHSM2_CONF", &conf)
                    .output()
                    .expect("softhsm2-util (package softhsm2) must be installed");
                assert!(
                    st.status.success(),
                    "{}",
                    String::from_utf8_lossy(&st.stderr)
                );
                PathBuf::from(SOFTHSM_LIB)
            }
        };
        let pkcs11 = Pkcs11::new(&lib).unwrap();
        pkcs11
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .unwrap();
        let slot = match kind {
            // hsm-sim has one slot; asking for token info would count as an operation.
            Kind::HsmSim => pkcs11.get_all_slots().unwrap()[0],
            Kind::SoftHsm => pkcs11.get_slots_with_initialized_token().unwrap()[0],
        };
        let raw = Raw::load(&lib);
        Fixture {
            kind,
            dir,
            lib,
            pkcs11,
            slot,
            raw,
        }
    }

    pub fn rw(&self) -> Session {
        self.pkcs11.open_rw_session(self.slot).unwrap()
    }

    pub fn user_rw(&self) -> Session {
        let s = self.rw();
        s.login(UserType::User, Some(&AuthPin::new(USER_PIN.into())))
            .unwrap();
        s
    }
}

/// A module's function list, for calls cryptoki does not let a test make.
pub struct Raw {
    _lib: cryptoki_sys::Pkcs11,
    pub f: CK_FUNCTION_LIST,
}

impl Raw {
    pub fn load(path: &Path) -> Self {
        // SAFETY: loading a PKCS#11 module runs its initialisers; both modules under test are
        // well-behaved, and the library is the same instance cryptoki already loaded.
        let lib = unsafe { cryptoki_sys::Pkcs11::new(path) }.unwrap();
        let mut p: *mut CK_FUNCTION_LIST = std::ptr::null_mut();
        // SAFETY: `p` is a valid out-pointer.
        let rv = unsafe { lib.C_GetFunctionList(&mut p) };
        assert_eq!(rv, CKR_OK);
        // SAFETY: on success `p` points to the module's static function list.
        let f = unsafe { *p };
        Raw { _lib: lib, f }
    }

    /// `C_Sign` with a given output capacity (`None`: NULL buffer): (rv, reported length).
    pub fn sign(
        &self,
        h: CK_SESSION_HANDLE,
        data: &[u8],
        cap: Option<usize>,
    ) -> (CK_RV, CK_ULONG, Vec<u8>) {
        let mut buf = vec![0u8; cap.unwrap_or(0)];
        let mut len = cap.unwrap_or(0) as CK_ULONG;
        let out = if cap.is_some() {
            buf.as_mut_ptr()
        } else {
            std::ptr::null_mut()
        };
        // SAFETY: data and buf are valid for their lengths for the duration of the call.
        let rv = unsafe {
            self.f.C_Sign.unwrap()(
                h,
                data.as_ptr() as *mut u8,
                data.len() as CK_ULONG,
                out,
                &mut len,
            )
        };
        (rv, len, buf)
    }

    /// `C_SignInit` with a parameterless mechanism.
    pub fn sign_init(
        &self,
        h: CK_SESSION_HANDLE,
        mech: CK_MECHANISM_TYPE,
        key: CK_OBJECT_HANDLE,
    ) -> CK_RV {
        let mut m = CK_MECHANISM {
            mechanism: mech,
            pParameter: std::ptr::null_mut(),
            ulParameterLen: 0,
        };
        // SAFETY: `m` is a valid mechanism for the duration of the call.
        unsafe { self.f.C_SignInit.unwrap()(h, &mut m, key) }
    }

    /// `C_DigestInit` with a parameterless mechanism.
    pub fn digest_init(&self, h: CK_SESSION_HANDLE, mech: CK_MECHANISM_TYPE) -> CK_RV {
        let mut m = CK_MECHANISM {
            mechanism: mech,
            pParameter: std::ptr::null_mut(),
            ulParameterLen: 0,
        };
        // SAFETY: `m` is a valid mechanism for the duration of the call.
        unsafe { self.f.C_DigestInit.unwrap()(h, &mut m) }
    }

    /// `C_Digest` with a given output capacity.
    pub fn digest(
        &self,
        h: CK_SESSION_HANDLE,
        data: &[u8],
        cap: Option<usize>,
    ) -> (CK_RV, CK_ULONG, Vec<u8>) {
        let mut buf = vec![0u8; cap.unwrap_or(0)];
        let mut len = cap.unwrap_or(0) as CK_ULONG;
        let out = if cap.is_some() {
            buf.as_mut_ptr()
        } else {
            std::ptr::null_mut()
        };
        // SAFETY: data and buf are valid for their lengths for the duration of the call.
        let rv = unsafe {
            self.f.C_Digest.unwrap()(
                h,
                data.as_ptr() as *mut u8,
                data.len() as CK_ULONG,
                out,
                &mut len,
            )
        };
        (rv, len, buf)
    }

    /// `C_GetAttributeValue` of one attribute with a given capacity: (rv, ulValueLen, value).
    pub fn attr(
        &self,
        h: CK_SESSION_HANDLE,
        o: CK_OBJECT_HANDLE,
        ty: CK_ATTRIBUTE_TYPE,
        cap: Option<usize>,
    ) -> (CK_RV, CK_ULONG, Vec<u8>) {
        let mut buf = vec![0u8; cap.unwrap_or(0)];
        let mut a = CK_ATTRIBUTE {
            type_: ty,
            pValue: if cap.is_some() {
                buf.as_mut_ptr() as *mut _
            } else {
                std::ptr::null_mut()
            },
            ulValueLen: cap.unwrap_or(0) as CK_ULONG,
        };
        // SAFETY: the template has one attribute whose buffer is valid for `cap` bytes.
        let rv = unsafe { self.f.C_GetAttributeValue.unwrap()(h, o, &mut a, 1) };
        if a.ulValueLen != CK_UNAVAILABLE_INFORMATION {
            buf.truncate(a.ulValueLen as usize);
        }
        (rv, a.ulValueLen, buf)
    }

    /// `C_FindObjects` (for calling it without `C_FindObjectsInit`).
    pub fn find(&self, h: CK_SESSION_HANDLE) -> CK_RV {
        let mut out = [0 as CK_OBJECT_HANDLE; 4];
        let mut n: CK_ULONG = 0;
        // SAFETY: `out` has room for 4 handles, `n` is writable.
        unsafe { self.f.C_FindObjects.unwrap()(h, out.as_mut_ptr(), 4, &mut n) }
    }

    /// `C_GetSessionInfo`'s return value.
    pub fn session_info_rv(&self, h: CK_SESSION_HANDLE) -> CK_RV {
        let mut i = CK_SESSION_INFO {
            slotID: 0,
            state: 0,
            flags: 0,
            ulDeviceError: 0,
        };
        // SAFETY: `i` is writable.
        unsafe { self.f.C_GetSessionInfo.unwrap()(h, &mut i) }
    }

    /// `C_CloseAllSessions`'s return value.
    pub fn close_all(&self, slot: CK_SLOT_ID) -> CK_RV {
        // SAFETY: plain value arguments.
        unsafe { self.f.C_CloseAllSessions.unwrap()(slot) }
    }

    /// `C_CloseSession`'s return value.
    pub fn close(&self, h: CK_SESSION_HANDLE) -> CK_RV {
        // SAFETY: plain value arguments.
        unsafe { self.f.C_CloseSession.unwrap()(h) }
    }
}

/// The `CKR_` of a cryptoki error (panics on non-PKCS#11 errors).
pub fn rv(e: cryptoki::error::Error) -> cryptoki::error::RvError {
    match e {
        cryptoki::error::Error::Pkcs11(r, _) => r,
        other => panic!("not a PKCS#11 error: {other:?}"),
    }
}

/// A `CK_RV` as cryptoki names it.
pub fn rv_of(code: CK_RV) -> cryptoki::error::Rv {
    cryptoki::error::Rv::from(code)
}

pub const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
pub const ED25519_OID: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

/// Strips the DER OCTET STRING around `CKA_EC_POINT`.
pub fn unwrap_point(p: &[u8]) -> &[u8] {
    assert_eq!(p[0], 0x04, "EC_POINT must be a DER OCTET STRING");
    assert_eq!(p[1] as usize, p.len() - 2);
    &p[2..]
}

/// The raw public point of a public key object.
pub fn public_point(s: &Session, h: cryptoki::object::ObjectHandle) -> Vec<u8> {
    use cryptoki::object::{Attribute, AttributeType};
    match &s.get_attributes(h, &[AttributeType::EcPoint]).unwrap()[0] {
        Attribute::EcPoint(p) => unwrap_point(p).to_vec(),
        other => panic!("{other:?}"),
    }
}

/// Generates a P-256 pair; `token`: persistent; `sign`/`derive`: usage of the private key.
pub fn gen_p256(
    s: &Session,
    token: bool,
    sign: bool,
    derive: bool,
    id: &[u8],
) -> (
    cryptoki::object::ObjectHandle,
    cryptoki::object::ObjectHandle,
) {
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::Attribute;
    let pub_t = vec![
        Attribute::EcParams(P256_OID.to_vec()),
        Attribute::Token(token),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Id(id.to_vec()),
    ];
    let priv_t = vec![
        Attribute::Token(token),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(sign),
        Attribute::Derive(derive),
        Attribute::Id(id.to_vec()),
    ];
    s.generate_key_pair(&Mechanism::EccKeyPairGen, &pub_t, &priv_t)
        .unwrap()
}

/// Verifies an r||s P-256 signature over `msg` with the `p256` crate.
pub fn p256_verify(point: &[u8], msg: &[u8], sig: &[u8]) {
    use p256::ecdsa::signature::Verifier;
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(point).unwrap();
    let sig = p256::ecdsa::Signature::from_slice(sig).unwrap();
    vk.verify(msg, &sig)
        .expect("signature must verify with p256");
}

/// Verifies an r||s P-256 signature over a SHA-256 `digest` with the `p256` crate.
pub fn p256_verify_prehash(point: &[u8], digest: &[u8], sig: &[u8]) {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(point).unwrap();
    let sig = p256::ecdsa::Signature::from_slice(sig).unwrap();
    vk.verify_prehash(digest, &sig)
        .expect("signature must verify with p256");
}
