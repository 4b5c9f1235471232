//! Configuration: which slots exist, where each token lives, its faults.
//!
//! Read at `C_Initialize` from, in order: a configuration set by [`set_config`] (embedding),
//! the JSON file named by `KEYWARDEN_HSM_SIM_CONFIG`, the directory named by
//! `KEYWARDEN_HSM_SIM_DIR` (one slot; faults from the JSON in `KEYWARDEN_HSM_SIM_FAULTS`), or
//! else one slot whose token lives in `$HOME/.local/share/keywarden-hsm-sim/token`.

use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::fault::FaultConfig;
use crate::seal::KdfParams;

/// Environment variable naming a JSON configuration file.
pub const ENV_CONFIG: &str = "KEYWARDEN_HSM_SIM_CONFIG";
/// Environment variable naming a token directory (single slot).
pub const ENV_DIR: &str = "KEYWARDEN_HSM_SIM_DIR";
/// Environment variable holding a fault configuration as JSON (with `KEYWARDEN_HSM_SIM_DIR`).
pub const ENV_FAULTS: &str = "KEYWARDEN_HSM_SIM_FAULTS";

/// One slot and its token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotConfig {
    /// The slot id (default: its index).
    #[serde(default)]
    pub slot_id: Option<u64>,
    /// Token directory; `null` for a token that lives in memory only.
    #[serde(default)]
    pub token_dir: Option<PathBuf>,
    /// Wrong PINs in a row before the PIN locks (default 3).
    #[serde(default)]
    pub max_pin_retries: Option<u32>,
    /// Argon2id cost used when `C_InitToken` initialises this token.
    #[serde(default)]
    pub kdf: Option<KdfParams>,
    /// Faults (none by default: a healthy token).
    #[serde(default)]
    pub faults: Option<FaultConfig>,
}

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The slots, in order.
    pub slots: Vec<SlotConfig>,
}

static OVERRIDE: Mutex<Option<Config>> = Mutex::new(None);

/// Sets the configuration used by the next `C_Initialize` in this process (for embedding the
/// token in a program, e.g. behind `Pkcs11::new_from_self`). `None` returns to the environment.
pub fn set_config(cfg: Option<Config>) {
    let mut g = match OVERRIDE.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    *g = cfg;
}

impl Config {
    /// The configuration in force (see the module documentation).
    pub fn load() -> Result<Config, String> {
        let over = match OVERRIDE.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        if let Some(c) = over {
            return Ok(c);
        }
        if let Some(path) = std::env::var_os(ENV_CONFIG) {
            let bytes = std::fs::read(&path)
                .map_err(|e| format!("{}: {e}", PathBuf::from(&path).display()))?;
            return serde_json::from_slice(&bytes).map_err(|e| format!("{ENV_CONFIG}: {e}"));
        }
        let dir = match std::env::var_os(ENV_DIR) {
            Some(d) => PathBuf::from(d),
            None => {
                let home = std::env::var_os("HOME").ok_or("neither a config nor HOME is set")?;
                PathBuf::from(home).join(".local/share/keywarden-hsm-sim/token")
            }
        };
        let faults = match std::env::var(ENV_FAULTS) {
            Ok(j) => Some(serde_json::from_str(&j).map_err(|e| format!("{ENV_FAULTS}: {e}"))?),
            Err(_) => None,
        };
        Ok(Config {
            slots: vec![SlotConfig {
                token_dir: Some(dir),
                faults,
                ..Default::default()
            }],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_documented_example() {
        let j = r#"{"slots":[{"slot_id":7,"token_dir":"/tmp/t","max_pin_retries":5,
            "kdf":{"m_kib":64,"t":1,"p":1},
            "faults":{"seed":42,"latency_ms":{"C_Sign":1},
              "errors":{"C_Sign":{"rate":0.01,"rv":"CKR_DEVICE_ERROR"}},
              "session_invalidate_after_ops":100,
              "device_removed":[{"after_ops":500,"for_ops":20},{"start_ms":1000,"duration_ms":200}],
              "max_sessions":8}}]}"#;
        let c: Config = serde_json::from_str(j).unwrap();
        assert_eq!(c.slots[0].slot_id, Some(7));
        assert_eq!(c.slots[0].faults.as_ref().unwrap().max_sessions, Some(8));
        assert!(serde_json::from_str::<Config>(r#"{"slots":[{"nope":1}]}"#).is_err());
    }
}
