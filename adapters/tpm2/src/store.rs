//! The key directory: one file per key holding its label, algorithm, TPM public area and
//! encrypted private area. Written atomically and durably: temporary file, fsync, rename,
//! fsync of the directory.
//!
//! The private area in the file is the TPM's `TPM2B_PRIVATE`: the key's sensitive part
//! encrypted and integrity-protected under a key derived from the parent's seed, so only
//! the TPM that made it, under the same parent, can load it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use keywarden_vault::{Algorithm, KeyRef};
use serde::{Deserialize, Serialize};

use crate::error::Tpm2Error;

/// The length of a key reference: 16 random bytes, 32 hex digits as a file name.
pub(crate) const KEY_REF_LEN: usize = 16;
const EXTENSION: &str = "tpmkey";
const FORMAT: &str = "keywarden-tpm2/1";

/// One key's file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct KeyFile {
    format: String,
    /// The algorithm's stable name.
    pub(crate) algorithm: String,
    pub(crate) label: String,
    /// Marshalled `TPMT_PUBLIC`, hex.
    pub(crate) public: String,
    /// `TPM2B_PRIVATE` buffer (encrypted by the TPM), hex.
    pub(crate) private: String,
}

/// A decoded key file.
pub(crate) struct StoredKey {
    pub(crate) algorithm: Algorithm,
    pub(crate) label: String,
    pub(crate) public: Vec<u8>,
    pub(crate) private: Vec<u8>,
}

/// The key directory.
#[derive(Debug)]
pub(crate) struct KeyStore {
    dir: PathBuf,
}

impl KeyStore {
    /// Opens (creating if needed) the key directory.
    pub(crate) fn open(dir: &Path) -> Result<Self, Tpm2Error> {
        // Owner-only: the private areas are encrypted by the TPM, but labels and the set of
        // keys are nobody else's business.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Tpm2Error::io("create the key directory", dir, e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// A fresh random key reference.
    pub(crate) fn new_ref() -> Result<KeyRef, Tpm2Error> {
        let mut id = [0u8; KEY_REF_LEN];
        getrandom::fill(&mut id).map_err(|e| Tpm2Error::Internal(format!("OS RNG: {e}")))?;
        Ok(KeyRef::new(id.to_vec()))
    }

    fn path(&self, key: &KeyRef) -> Option<PathBuf> {
        // Only references we could have made name a file: no path tricks through a KeyRef.
        (key.as_bytes().len() == KEY_REF_LEN).then(|| self.dir.join(format!("{key}.{EXTENSION}")))
    }

    /// Writes a new key file atomically and durably.
    pub(crate) fn write(&self, key: &KeyRef, stored: &StoredKey) -> Result<(), Tpm2Error> {
        let path = self
            .path(key)
            .ok_or_else(|| Tpm2Error::Internal("malformed new key reference".into()))?;
        let file = KeyFile {
            format: FORMAT.into(),
            algorithm: stored.algorithm.name().into(),
            label: stored.label.clone(),
            public: hex::encode(&stored.public),
            private: hex::encode(&stored.private),
        };
        let bytes = serde_json::to_vec_pretty(&file)
            .map_err(|e| Tpm2Error::Internal(format!("encode key file: {e}")))?;
        let tmp = self.dir.join(format!(".{key}.{EXTENSION}.tmp"));
        let write = || -> io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Tpm2Error::io("write the key file", &path, e)
        })
    }

    /// Reads one key file; `KeyNotFound` when there is none.
    pub(crate) fn read(&self, key: &KeyRef) -> Result<StoredKey, Tpm2Error> {
        let path = self
            .path(key)
            .ok_or_else(|| Tpm2Error::KeyNotFound(key.clone()))?;
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Tpm2Error::KeyNotFound(key.clone()));
            }
            Err(e) => return Err(Tpm2Error::io("read the key file", &path, e)),
        };
        decode(&bytes).map_err(|why| Tpm2Error::CorruptBlob { path, why })
    }

    /// Removes a key file durably; `KeyNotFound` when there is none.
    pub(crate) fn remove(&self, key: &KeyRef) -> Result<(), Tpm2Error> {
        let path = self
            .path(key)
            .ok_or_else(|| Tpm2Error::KeyNotFound(key.clone()))?;
        match fs::remove_file(&path) {
            Ok(()) => File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| Tpm2Error::io("sync the key directory", &self.dir, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(Tpm2Error::KeyNotFound(key.clone()))
            }
            Err(e) => Err(Tpm2Error::io("remove the key file", &path, e)),
        }
    }

    /// Every key reference with a file, in name order.
    pub(crate) fn refs(&self) -> Result<Vec<KeyRef>, Tpm2Error> {
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| Tpm2Error::io("list the key directory", &self.dir, e))?;
        let mut refs = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Tpm2Error::io("list the key directory", &self.dir, e))?;
            let name = entry.file_name();
            let Some(stem) = name
                .to_str()
                .and_then(|n| n.strip_suffix(&format!(".{EXTENSION}")))
            else {
                continue;
            };
            if let Ok(r) = KeyRef::from_hex(stem)
                && r.as_bytes().len() == KEY_REF_LEN
            {
                refs.push(r);
            }
        }
        refs.sort();
        Ok(refs)
    }
}

fn decode(bytes: &[u8]) -> Result<StoredKey, String> {
    let file: KeyFile =
        serde_json::from_slice(bytes).map_err(|e| format!("not a key file: {e}"))?;
    if file.format != FORMAT {
        return Err(format!(
            "unknown format {:?} (expected {FORMAT:?})",
            file.format
        ));
    }
    let algorithm: Algorithm = file
        .algorithm
        .parse()
        .map_err(|e| format!("bad algorithm: {e}"))?;
    keywarden_vault::check_label(&file.label).map_err(|e| format!("bad label: {e}"))?;
    let public = hex::decode(&file.public).map_err(|e| format!("public area is not hex: {e}"))?;
    let private =
        hex::decode(&file.private).map_err(|e| format!("private area is not hex: {e}"))?;
    Ok(StoredKey {
        algorithm,
        label: file.label,
        public,
        private,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn files_are_owner_only_and_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        let store = KeyStore::open(&dir).unwrap();
        let key = KeyStore::new_ref().unwrap();
        let stored = StoredKey {
            algorithm: Algorithm::EcdhP256,
            label: "perm".into(),
            public: vec![1, 2, 3],
            private: vec![4, 5],
        };
        store.write(&key, &stored).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(format!("{key}.{EXTENSION}"))), 0o600);
        let back = store.read(&key).unwrap();
        assert_eq!(
            (
                back.algorithm,
                back.label.as_str(),
                back.public,
                back.private
            ),
            (Algorithm::EcdhP256, "perm", vec![1, 2, 3], vec![4, 5])
        );
        assert_eq!(store.refs().unwrap(), vec![key.clone()]);
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        store.remove(&key).unwrap();
        assert!(matches!(store.read(&key), Err(Tpm2Error::KeyNotFound(_))));
        assert!(matches!(store.remove(&key), Err(Tpm2Error::KeyNotFound(_))));
        // A reference of another length never names a file.
        let odd = KeyRef::new(vec![0u8; 3]);
        assert!(matches!(store.read(&odd), Err(Tpm2Error::KeyNotFound(_))));
    }
}
