//! Opening the configured backends.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cryptoki::session::UserType;
use keywarden_pkcs11::{PinSource, Pkcs11Config, Pkcs11Vault, TokenSelector, module};
use secrecy::SecretString;

use crate::service::Backend;
use crate::service::config::{BackendConfig, Config};

/// The token label of the embedded hsm-sim token.
pub const SIM_TOKEN_LABEL: &str = "keywarden-sim";

/// Errors opening a backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The PKCS#11 layer refused.
    #[error("backend {name:?}: {source}")]
    Pkcs11 {
        /// Backend name.
        name: String,
        /// Why.
        #[source]
        source: keywarden_pkcs11::Error,
    },
    /// Another backend failed to open.
    #[error("backend {name:?}: {reason}")]
    Other {
        /// Backend name.
        name: String,
        /// Why.
        reason: String,
    },
    /// Setting up the embedded token failed.
    #[error("backend {name:?} (embedded hsm-sim): {reason}")]
    Sim {
        /// Backend name.
        name: String,
        /// Why.
        reason: String,
    },
}

/// Opens every backend of `config`.
pub async fn open_all(config: &Config) -> Result<BTreeMap<String, Backend>, BackendError> {
    let mut out = BTreeMap::new();
    for (name, backend) in &config.backends {
        let vault: Arc<dyn keywarden_vault::Vault> = match backend {
            BackendConfig::Pkcs11(p) => {
                let p = p.clone();
                let opened = tokio::task::spawn_blocking(move || Pkcs11Vault::open(p))
                    .await
                    .map_err(|e| task_failed(name, e))?;
                Arc::new(opened.map_err(|source| BackendError::Pkcs11 {
                    name: name.clone(),
                    source,
                })?)
            }
            BackendConfig::Sim { token_dir } => {
                let dir = token_dir
                    .clone()
                    .unwrap_or_else(|| config.data_dir.join("hsm-sim"));
                let (n, data) = (name.clone(), config.data_dir.clone());
                let opened = tokio::task::spawn_blocking(move || open_sim(&n, &data, &dir))
                    .await
                    .map_err(|e| task_failed(name, e))?;
                Arc::new(opened?)
            }
            #[cfg(feature = "tpm2")]
            BackendConfig::Tpm2(c) => Arc::new(
                keywarden_tpm2::Tpm2Vault::open(c.clone())
                    .await
                    .map_err(|e| BackendError::Other {
                        name: name.clone(),
                        reason: e.to_string(),
                    })?,
            ),
            #[cfg(feature = "yubihsm")]
            BackendConfig::Yubihsm(c) => Arc::new(
                keywarden_yubihsm::YubiHsmVault::open(c)
                    .await
                    .map_err(|e| BackendError::Other {
                        name: name.clone(),
                        reason: e.to_string(),
                    })?,
            ),
        };
        out.insert(
            name.clone(),
            Backend {
                vault,
                kind: backend.kind(),
            },
        );
    }
    Ok(out)
}

fn task_failed(name: &str, e: tokio::task::JoinError) -> BackendError {
    BackendError::Other {
        name: name.to_owned(),
        reason: format!("start-up task failed: {e}"),
    }
}

/// Where the embedded token's user PIN is kept.
pub fn sim_pin_path(data_dir: &Path) -> PathBuf {
    data_dir.join("hsm-sim-user-pin")
}

/// Opens the hsm-sim token linked into this executable, initializing it on first use with
/// random PINs written (mode 0600) into the data directory.
fn open_sim(name: &str, data_dir: &Path, token_dir: &Path) -> Result<Pkcs11Vault, BackendError> {
    let err = |reason: String| BackendError::Sim {
        name: name.to_owned(),
        reason,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(token_dir)
        .map_err(|e| err(format!("cannot create {}: {e}", token_dir.display())))?;
    keywarden_hsm_sim::config::set_config(Some(keywarden_hsm_sim::config::Config {
        slots: vec![keywarden_hsm_sim::config::SlotConfig {
            token_dir: Some(token_dir.to_path_buf()),
            ..Default::default()
        }],
    }));
    // Linking note: referencing the entry point keeps hsm-sim's C ABI in the executable;
    // build.rs exports it so that cryptoki's `new_from_self` finds it.
    let _entry = std::hint::black_box(keywarden_hsm_sim::ffi::C_GetFunctionList as *const ());
    let ctx = module::load_self().map_err(|e| err(e.to_string()))?;
    let slot = *ctx
        .get_slots_with_token()
        .map_err(|e| err(format!("C_GetSlotList: {e}")))?
        .first()
        .ok_or_else(|| err("the embedded token has no slot".into()))?;
    let info = ctx
        .get_token_info(slot)
        .map_err(|e| err(format!("C_GetTokenInfo: {e}")))?;
    let pin_path = sim_pin_path(data_dir);
    if !info.token_initialized() {
        let user_pin = random_pin().map_err(&err)?;
        let so_pin = random_pin().map_err(&err)?;
        // The PINs are on disk before the token exists, so a crash can never leave a token
        // nobody can log in to.
        write_secret(&data_dir.join("hsm-sim-so-pin"), &so_pin).map_err(&err)?;
        write_secret(&pin_path, &user_pin).map_err(&err)?;
        let so = SecretString::from(so_pin);
        ctx.init_token(slot, &so, SIM_TOKEN_LABEL)
            .map_err(|e| err(format!("C_InitToken: {e}")))?;
        let session = ctx
            .open_rw_session(slot)
            .map_err(|e| err(format!("C_OpenSession: {e}")))?;
        session
            .login(UserType::So, Some(&so))
            .map_err(|e| err(format!("C_Login(SO): {e}")))?;
        session
            .init_pin(&SecretString::from(user_pin))
            .map_err(|e| err(format!("C_InitPIN: {e}")))?;
        let _ = session.logout();
        tracing::info!(pin_file = %pin_path.display(), token_dir = %token_dir.display(), "initialized the embedded hsm-sim token");
    } else if !pin_path.exists() {
        return Err(err(format!(
            "the token in {} is initialized but its PIN file {} is missing",
            token_dir.display(),
            pin_path.display()
        )));
    }
    let config = Pkcs11Config::new(
        module::SELF_MODULE,
        TokenSelector::Label(SIM_TOKEN_LABEL.into()),
        PinSource::File(pin_path),
    );
    Pkcs11Vault::open_with(ctx, config).map_err(|e| err(e.to_string()))
}

fn random_pin() -> Result<String, String> {
    let mut bytes = zeroize::Zeroizing::new([0u8; 16]);
    getrandom::fill(bytes.as_mut()).map_err(|e| format!("random source: {e}"))?;
    Ok(hex::encode(bytes.as_ref()))
}

/// Writes a secret file atomically with mode 0600 (temp file, fsync, rename, fsync dir).
fn write_secret(path: &Path, secret: &str) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    f.write_all(secret.as_bytes()).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(fail)?;
    Ok(())
}
