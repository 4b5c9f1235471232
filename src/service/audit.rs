//! The tamper-evident audit log.
//!
//! One JSON object per line, one line per request. Each line carries the SHA-256 (hex) of the
//! previous line in `prev` (the first line: 64 zeros) and a sequence number `seq`, so editing,
//! deleting or reordering any line breaks the chain at that line. A small `<log>.head` file,
//! rewritten after every append, records the last sequence number and line hash, so cutting
//! lines off the end is detected too.
//!
//! A line is written and flushed to the kernel before the answer is sent; if it cannot be
//! written, the request fails. `fsync = true` also forces it to disk (slower). Nothing secret is
//! ever logged: no PIN, no shared secret, no message; a message appears only as its SHA-256.

use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::service::identity::Caller;

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Errors writing or verifying the audit log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The log could not be opened or written.
    #[error("audit log {}: {reason}", path.display())]
    Io {
        /// The log.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The chain is broken at a line (1-based).
    #[error("audit log {}: line {line}: {reason}", path.display())]
    Broken {
        /// The log.
        path: PathBuf,
        /// The first bad line, counting from 1.
        line: u64,
        /// What is wrong with it.
        reason: String,
    },
}

/// One request as the log records it.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    /// The caller.
    pub caller: &'a Caller,
    /// The operation.
    pub action: &'a str,
    /// The key name, if any.
    pub key: Option<&'a str>,
    /// The key version used, if any.
    pub version: Option<u32>,
    /// `allow` or `deny`.
    pub decision: &'a str,
    /// The policies that decided.
    pub policies: &'a [String],
    /// `ok`, or `error: <reason>`.
    pub result: &'a str,
    /// SHA-256 (hex) of the message signed or verified, if any.
    pub message_sha256: Option<&'a str>,
}

#[derive(Serialize)]
struct Line<'a> {
    seq: u64,
    time: String,
    #[serde(flatten)]
    entry: &'a Entry<'a>,
    prev: &'a str,
}

struct State {
    file: File,
    head: File,
    seq: u64,
    prev: String,
}

/// The open log.
pub struct AuditLog {
    path: PathBuf,
    fsync: bool,
    state: Mutex<State>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .finish()
    }
}

fn head_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".head");
    PathBuf::from(p)
}

fn hash_hex(line: &[u8]) -> String {
    hex::encode(Sha256::digest(line))
}

/// What a verification found.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    /// Complete lines checked.
    pub lines: u64,
    /// Bytes after the last complete line (a write cut short by a crash), not checked.
    pub trailing_partial: u64,
    /// Hash of the last complete line.
    pub last_hash: String,
}

/// Verifies the chain of the log at `path` (and its head file, if present).
pub fn verify(path: &Path) -> Result<Verified, AuditError> {
    let io = |e: std::io::Error| AuditError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let broken = |line: u64, reason: String| AuditError::Broken {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let file = File::open(path).map_err(io)?;
    let mut reader = BufReader::new(file);
    let mut prev = GENESIS.to_string();
    let mut n = 0u64;
    let mut buf = Vec::new();
    let mut trailing_partial = 0;
    loop {
        buf.clear();
        let read = reader.read_until(b'\n', &mut buf).map_err(io)?;
        if read == 0 {
            break;
        }
        if buf.last() != Some(&b'\n') {
            trailing_partial = buf.len() as u64;
            break;
        }
        n += 1;
        let line = &buf[..buf.len() - 1];
        let value: serde_json::Value = serde_json::from_slice(line)
            .map_err(|e| broken(n, format!("not a JSON record ({e})")))?;
        let seq = value.get("seq").and_then(serde_json::Value::as_u64);
        if seq != Some(n) {
            return Err(broken(
                n,
                format!(
                    "sequence number is {seq:?}, expected {n} (a line was deleted, inserted or moved)"
                ),
            ));
        }
        let claimed = value
            .get("prev")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("");
        if claimed != prev {
            return Err(broken(
                n,
                "prev does not match the hash of the line before it (this or the previous line was edited)".into(),
            ));
        }
        prev = hash_hex(line);
    }
    let head = head_path(path);
    if let Ok(text) = std::fs::read_to_string(&head) {
        let mut parts = text.split_whitespace();
        let seq: Option<u64> = parts.next().and_then(|s| s.parse().ok());
        let hash = parts.next().unwrap_or("");
        match seq {
            Some(seq) if seq > n => {
                return Err(broken(
                    n + 1,
                    format!(
                        "missing: the log ends after line {n} but {} records line {seq}",
                        head.display()
                    ),
                ));
            }
            // The head may lag one line behind the log (a crash between the two writes).
            Some(seq) if seq == n && hash != prev => {
                return Err(broken(
                    n,
                    format!("last line's hash differs from {}", head.display()),
                ));
            }
            Some(_) => {}
            None => {
                return Err(broken(0, format!("{} is unreadable", head.display())));
            }
        }
    }
    Ok(Verified {
        lines: n,
        trailing_partial,
        last_hash: prev,
    })
}

impl AuditLog {
    /// Opens (or creates, mode 0600) the log, verifies what is there, and cuts off a trailing
    /// partial line left by a crash. A log whose chain is broken is refused: run
    /// `keywarden audit verify` and move the log aside.
    pub fn open(path: &Path, fsync: bool) -> Result<Self, AuditError> {
        let io = |e: std::io::Error| AuditError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        let verified = verify(path)?;
        if verified.trailing_partial > 0 {
            let len = file.seek(SeekFrom::End(0)).map_err(io)?;
            file.set_len(len - verified.trailing_partial).map_err(io)?;
            tracing::warn!(log = %path.display(), bytes = verified.trailing_partial, "audit log: removed a partial last line left by a crash");
        }
        let head = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .mode(0o600)
            .open(head_path(path))
            .map_err(io)?;
        let log = Self {
            path: path.to_path_buf(),
            fsync,
            state: Mutex::new(State {
                file,
                head,
                seq: verified.lines,
                prev: verified.last_hash,
            }),
        };
        {
            let st = log.lock();
            write_head(&st.head, st.seq, &st.prev).map_err(io)?;
        }
        Ok(log)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic mid-append leaves at worst a partial line, which verify() tolerates and
        // open() repairs; the state itself is only updated after a successful write.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends one record; returns once it is in the kernel (and on disk with `fsync`).
    pub fn append(&self, entry: &Entry<'_>) -> Result<(), AuditError> {
        let io = |e: std::io::Error| AuditError::Io {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let time = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let mut st = self.lock();
        let seq = st.seq + 1;
        let line = serde_json::to_vec(&Line {
            seq,
            time,
            entry,
            prev: &st.prev,
        })
        .map_err(|e| io(std::io::Error::other(e)))?;
        let mut out = line.clone();
        out.push(b'\n');
        st.file.write_all(&out).map_err(io)?;
        if self.fsync {
            st.file.sync_data().map_err(io)?;
        }
        st.seq = seq;
        st.prev = hash_hex(&line);
        write_head(&st.head, st.seq, &st.prev).map_err(io)?;
        Ok(())
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn write_head(head: &File, seq: u64, hash: &str) -> std::io::Result<()> {
    // Fixed width, so an overwrite in place never leaves stale bytes behind.
    let text = format!("{seq:020} {hash}\n");
    head.write_all_at(text.as_bytes(), 0)?;
    head.set_len(text.len() as u64)
}

/// Reads the whole log (for tests and tools).
pub fn read_lines(path: &Path) -> std::io::Result<Vec<String>> {
    let mut s = String::new();
    File::open(path)?.read_to_string(&mut s)?;
    Ok(s.lines().map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Caller {
        Caller::Local(crate::service::identity::LocalCaller {
            uid: 1000,
            gid: 1000,
            pid: 7,
            exe: "/bin/x".into(),
        })
    }

    fn write_n(path: &Path, n: usize) {
        let log = AuditLog::open(path, false).unwrap();
        let c = caller();
        for i in 0..n {
            let key = format!("k{i}");
            log.append(&Entry {
                caller: &c,
                action: "Sign",
                key: Some(&key),
                version: Some(1),
                decision: "allow",
                policies: &["owner".into()],
                result: "ok",
                message_sha256: Some("ab"),
            })
            .unwrap();
        }
    }

    #[test]
    fn chain_verifies_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        write_n(&path, 3);
        write_n(&path, 2);
        let v = verify(&path).unwrap();
        assert_eq!(v.lines, 5);
        let lines = read_lines(&path).unwrap();
        assert!(lines[0].contains(r#""prev":"0000"#), "{}", lines[0]);
        assert!(lines[4].contains(r#""seq":5"#));
    }

    #[test]
    fn edits_deletions_reorders_and_truncation_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        write_n(&path, 5);
        let lines = read_lines(&path).unwrap();
        let write = |ls: &[String]| std::fs::write(&path, ls.join("\n") + "\n").unwrap();

        let mut edited = lines.clone();
        edited[2] = edited[2].replace("k2", "k9");
        write(&edited);
        let e = verify(&path).unwrap_err();
        assert!(e.to_string().contains("line 4:"), "{e}"); // line 4's prev no longer matches line 3

        let mut deleted = lines.clone();
        deleted.remove(1);
        write(&deleted);
        let e = verify(&path).unwrap_err();
        assert!(e.to_string().contains("line 2: sequence number"), "{e}");

        let mut swapped = lines.clone();
        swapped.swap(1, 2);
        write(&swapped);
        assert!(verify(&path).unwrap_err().to_string().contains("line 2:"));

        write(&lines[..3]);
        let e = verify(&path).unwrap_err();
        assert!(e.to_string().contains("line 4: missing"), "{e}");

        write(&lines);
        assert_eq!(verify(&path).unwrap().lines, 5);
    }

    #[test]
    fn a_partial_last_line_is_tolerated_and_repaired_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        write_n(&path, 2);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"seq":3,"time":"#).unwrap();
        let v = verify(&path).unwrap();
        assert_eq!((v.lines, v.trailing_partial > 0), (2, true));
        write_n(&path, 1);
        assert_eq!(
            verify(&path).unwrap(),
            Verified {
                lines: 3,
                trailing_partial: 0,
                last_hash: verify(&path).unwrap().last_hash
            }
        );
    }

    #[test]
    fn a_broken_log_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        write_n(&path, 2);
        let text = std::fs::read_to_string(&path).unwrap().replace("k0", "kX");
        std::fs::write(&path, text).unwrap();
        assert!(AuditLog::open(&path, false).is_err());
    }

    #[test]
    fn unwritable_log_is_an_error() {
        let e = AuditLog::open(Path::new("/nonexistent-dir/audit.log"), false).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("audit log /nonexistent-dir/audit.log:"),
            "{e}"
        );
    }
}
