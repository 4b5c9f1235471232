//! The token directory: `token.json` (label, wrapped data keys, PIN failure counters) and one
//! file per token object under `objects/`. Every write is atomic and durable: a temporary file
//! is written and fsynced, renamed over the target, and the directory fsynced.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::seal::{KdfParams, WrappedKey};

/// `token.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenFile {
    /// Format version.
    pub version: u32,
    /// Token label (at most 32 bytes).
    pub label: String,
    /// Serial number shown in `CK_TOKEN_INFO`.
    pub serial: String,
    /// KDF cost for both PINs.
    pub kdf: KdfParams,
    /// The data key under the SO PIN.
    pub so: WrappedKey,
    /// The data key under the user PIN, once set.
    pub user: Option<WrappedKey>,
    /// Consecutive wrong SO PINs.
    pub so_failures: u32,
    /// Consecutive wrong user PINs.
    pub user_failures: u32,
}

/// One token object on disk: public attributes in clear, the secret value sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectFile {
    /// Attribute type (hex) to value (hex).
    pub attrs: BTreeMap<String, String>,
    /// `seal(dek, file name, secret)`, hex.
    pub sealed: Option<String>,
}

/// Where the token lives: a directory, or nowhere (an in-memory token, for tests).
#[derive(Debug, Clone)]
pub struct Store {
    dir: Option<PathBuf>,
}

const IO: Error = Error::DeviceError("token storage I/O");

impl Store {
    /// A store in `dir` (created if missing), or in memory.
    pub fn new(dir: Option<PathBuf>) -> Result<Self> {
        if let Some(d) = &dir {
            fs::create_dir_all(d.join("objects")).map_err(|_| IO)?;
        }
        Ok(Store { dir })
    }

    /// Whether the token is persisted.
    pub fn is_persistent(&self) -> bool {
        self.dir.is_some()
    }

    /// Reads `token.json`; `None` for an uninitialised token.
    pub fn load_token(&self) -> Result<Option<TokenFile>> {
        let Some(d) = &self.dir else { return Ok(None) };
        match fs::read(d.join("token.json")) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|_| Error::TokenNotRecognized),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(_) => Err(IO),
        }
    }

    /// Writes `token.json` atomically.
    pub fn save_token(&self, t: &TokenFile) -> Result<()> {
        let Some(d) = &self.dir else { return Ok(()) };
        let bytes = serde_json::to_vec_pretty(t).map_err(|_| IO)?;
        atomic_write(d, "token.json", &bytes)
    }

    /// Every object file, by id. Leftover temporary files from a crash are removed.
    pub fn load_objects(&self) -> Result<Vec<(String, ObjectFile)>> {
        let Some(d) = &self.dir else {
            return Ok(Vec::new());
        };
        let od = d.join("objects");
        let mut out = Vec::new();
        for e in fs::read_dir(&od).map_err(|_| IO)? {
            let e = e.map_err(|_| IO)?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                // An interrupted atomic write: never renamed, so never part of the token.
                let _ = fs::remove_file(e.path());
                continue;
            }
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            let bytes = fs::read(e.path()).map_err(|_| IO)?;
            let obj: ObjectFile =
                serde_json::from_slice(&bytes).map_err(|_| Error::TokenNotRecognized)?;
            out.push((id.to_owned(), obj));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Writes one object atomically.
    pub fn save_object(&self, id: &str, o: &ObjectFile) -> Result<()> {
        let Some(d) = &self.dir else { return Ok(()) };
        let bytes = serde_json::to_vec(o).map_err(|_| IO)?;
        atomic_write(&d.join("objects"), &format!("{id}.json"), &bytes)
    }

    /// Removes one object durably.
    pub fn delete_object(&self, id: &str) -> Result<()> {
        let Some(d) = &self.dir else { return Ok(()) };
        let od = d.join("objects");
        match fs::remove_file(od.join(format!("{id}.json"))) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => return Err(IO),
        }
        sync_dir(&od)
    }

    /// Removes every object (token re-initialisation).
    pub fn wipe_objects(&self) -> Result<()> {
        for (id, _) in self.load_objects()? {
            self.delete_object(&id)?;
        }
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|f| f.sync_all()).map_err(|_| IO)
}

/// Writes `name` in `dir` so that a crash leaves either the old or the new content.
pub fn atomic_write(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let mut rnd = [0u8; 8];
    crate::crypto::random(&mut rnd)?;
    let tmp = dir.join(format!(".{name}.{}.tmp", hex::encode(rnd)));
    let res = (|| -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, dir.join(name))
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
        return Err(IO);
    }
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_round_trip_and_temp_files_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::new(Some(dir.path().to_path_buf())).unwrap();
        assert_eq!(s.load_token().unwrap(), None);
        let o = ObjectFile {
            attrs: BTreeMap::from([("1".into(), "00".into())]),
            sealed: None,
        };
        s.save_object("ab", &o).unwrap();
        fs::write(dir.path().join("objects/.cd.json.123.tmp"), b"{half").unwrap();
        let all = s.load_objects().unwrap();
        assert_eq!(all, vec![("ab".to_string(), o)]);
        assert!(!dir.path().join("objects/.cd.json.123.tmp").exists());
        s.delete_object("ab").unwrap();
        assert!(s.load_objects().unwrap().is_empty());
    }
}
