//! Who is calling: what the kernel says about the peer of a Unix socket, or what a verified
//! client certificate says on the TLS listener; never what the client says about itself.

use std::sync::Arc;

use serde::Serialize;

pub use crate::service::tls::RemoteCaller;

/// A caller: a local process on the Unix socket, or a client on the mutual-TLS listener.
///
/// In the audit log a local caller is `{"uid":…,"gid":…,"pid":…,"exe":…}` and a remote one
/// `{"identity":…,"subject":…,"issuer":…,"fingerprint":…,…}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Caller {
    /// A process on this host (Cedar principal `Keywarden::Caller::"uid:<uid>"`).
    Local(LocalCaller),
    /// A TLS client (Cedar principal `Keywarden::Client::"<identity>"`).
    Remote(Arc<RemoteCaller>),
}

impl Caller {
    /// A local caller from peer credentials.
    pub fn from_peer(uid: u32, gid: u32, pid: Option<i32>) -> Self {
        Self::Local(LocalCaller::from_peer(uid, gid, pid))
    }

    /// This process, for in-process use (benchmarks, embedded service).
    pub fn this_process() -> Self {
        Self::Local(LocalCaller::this_process())
    }

    /// How error messages and logs name the caller: `uid 1000` or `client spiffe://…`.
    pub fn describe(&self) -> String {
        match self {
            Self::Local(c) => format!("uid {}", c.uid),
            Self::Remote(c) => format!("client {}", c.identity),
        }
    }
}

/// A local caller, identified by the kernel (`SO_PEERCRED`) and `/proc/<pid>/exe`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LocalCaller {
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
    /// Process id (0 if the kernel did not report one).
    pub pid: i32,
    /// The executable, or `unknown` if it cannot be read.
    pub exe: String,
}

impl LocalCaller {
    /// Builds a caller from peer credentials.
    pub fn from_peer(uid: u32, gid: u32, pid: Option<i32>) -> Self {
        let pid = pid.unwrap_or(0);
        let exe = if pid > 0 {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "unknown".into())
        } else {
            "unknown".into()
        };
        Self { uid, gid, pid, exe }
    }

    /// This process, for in-process use (benchmarks, embedded service).
    pub fn this_process() -> Self {
        Self::from_peer(
            current_uid(),
            current_gid(),
            i32::try_from(std::process::id()).ok(),
        )
    }
}

/// The effective uid of this process.
pub fn current_uid() -> u32 {
    // Reads /proc/self/status ("Uid:\treal\teffective…") to stay free of unsafe code.
    proc_status_field("Uid:").unwrap_or(u32::MAX)
}

/// The effective gid of this process.
pub fn current_gid() -> u32 {
    proc_status_field("Gid:").unwrap_or(u32::MAX)
}

fn proc_status_field(name: &str) -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(name))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_read_from_the_kernel() {
        let me = LocalCaller::this_process();
        assert_eq!(me.pid, i32::try_from(std::process::id()).unwrap());
        assert!(me.exe.contains("keywarden"), "{me:?}");
        assert_ne!(me.uid, u32::MAX);
    }
}
