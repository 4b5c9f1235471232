//! One initialized context per PKCS#11 module per process.
//!
//! `C_Initialize` may be called once per process and `C_Finalize` ends the module for every
//! user in it, so two vaults on the same module must share one context. Contexts live until the
//! process exits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};

use crate::error::Error;

static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();

/// The process-wide, initialized context for the module at `path` (loaded on first use with
/// `CKF_OS_LOCKING_OK`). Share it with any other code in the process that uses the module.
pub fn load(path: &Path) -> Result<Pkcs11, Error> {
    let canonical = path
        .canonicalize()
        .map_err(|_| Error::ModuleNotFound(path.to_path_buf()))?;
    let modules = MODULES.get_or_init(|| Mutex::new(HashMap::new()));
    // Lookups and inserts only; a poisoned map is still consistent.
    let mut modules = modules.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(ctx) = modules.get(&canonical) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(&canonical).map_err(|e| Error::ModuleLoad {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    initialize(&ctx, path)?;
    modules.insert(canonical, ctx.clone());
    Ok(ctx)
}

/// The name under which [`load_self`] registers the running executable's own module.
pub const SELF_MODULE: &str = "<self>";

/// The PKCS#11 module linked into the running executable (`C_GetFunctionList` exported by the
/// binary itself, as keywarden does with its embedded hsm-sim token).
pub fn load_self() -> Result<Pkcs11, Error> {
    let key = PathBuf::from(SELF_MODULE);
    let modules = MODULES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut modules = modules.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(ctx) = modules.get(&key) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new_from_self().map_err(|e| Error::ModuleLoad {
        path: key.clone(),
        reason: format!("{e} (is C_GetFunctionList exported by this executable?)"),
    })?;
    initialize(&ctx, &key)?;
    modules.insert(key, ctx.clone());
    Ok(ctx)
}

fn initialize(ctx: &Pkcs11, path: &Path) -> Result<(), Error> {
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => Err(Error::ModuleLoad {
            path: path.to_path_buf(),
            reason: format!("C_Initialize: {}", Error::ck(e)),
        }),
    }
}
