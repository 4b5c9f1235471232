//! Deterministic fault injection: latency, error rates, session invalidation, device removal
//! windows and a session limit, all driven by one seed so that a run can be replayed.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cryptoki_sys::CK_RV;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// An error injected into one function at a given rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorFault {
    /// Probability per call, 0.0 ..= 1.0.
    pub rate: f64,
    /// The `CKR_` name (e.g. `"CKR_DEVICE_ERROR"`) or hex value (`"0x30"`).
    pub rv: String,
}

/// A window during which the device is gone: by operation count, by time since
/// `C_Initialize`, or both (either one matching removes the device).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemovedWindow {
    /// First operation (counted over the whole token, from 0) of the window.
    pub after_ops: Option<u64>,
    /// Number of operations the window lasts.
    pub for_ops: Option<u64>,
    /// Start, in milliseconds since `C_Initialize`.
    pub start_ms: Option<u64>,
    /// Length in milliseconds.
    pub duration_ms: Option<u64>,
}

/// The fault configuration of one token. Everything is off by default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    /// Seed of the pseudo-random sequence behind error rates.
    #[serde(default)]
    pub seed: u64,
    /// Added latency in milliseconds per function name (`"C_Sign"`), or `"*"` for all.
    #[serde(default)]
    pub latency_ms: BTreeMap<String, u64>,
    /// Injected errors per function name, or `"*"` for all.
    #[serde(default)]
    pub errors: BTreeMap<String, ErrorFault>,
    /// A session is closed by the token after this many calls on it; the next call on it gets
    /// `CKR_SESSION_HANDLE_INVALID`.
    #[serde(default)]
    pub session_invalidate_after_ops: Option<u64>,
    /// Device-removed windows (`CKR_DEVICE_REMOVED`; open sessions are lost).
    #[serde(default)]
    pub device_removed: Vec<RemovedWindow>,
    /// At most this many open sessions (`CKR_SESSION_COUNT` beyond).
    #[serde(default)]
    pub max_sessions: Option<usize>,
}

/// The running state of a token's faults.
#[derive(Debug)]
pub struct Faults {
    cfg: FaultConfig,
    errors: BTreeMap<String, (f64, CK_RV)>,
    rng: Mutex<u64>,
    ops: AtomicU64,
    start: Instant,
}

impl Faults {
    /// Validates a configuration and starts its clock.
    pub fn new(cfg: FaultConfig) -> std::result::Result<Self, String> {
        let mut errors = BTreeMap::new();
        for (f, e) in &cfg.errors {
            let rv =
                Error::rv_from_name(&e.rv).ok_or_else(|| format!("unknown CKR code {:?}", e.rv))?;
            if !(0.0..=1.0).contains(&e.rate) {
                return Err(format!("error rate for {f} out of range"));
            }
            errors.insert(f.clone(), (e.rate, rv));
        }
        Ok(Faults {
            rng: Mutex::new(cfg.seed),
            errors,
            cfg,
            ops: AtomicU64::new(0),
            start: Instant::now(),
        })
    }

    /// The session limit.
    pub fn max_sessions(&self) -> Option<usize> {
        self.cfg.max_sessions
    }

    /// Calls after which a session is invalidated.
    pub fn session_limit(&self) -> Option<u64> {
        self.cfg.session_invalidate_after_ops
    }

    /// Whether the device is currently removed (does not count an operation).
    pub fn removed_now(&self) -> bool {
        self.removed_at(self.ops.load(Ordering::SeqCst))
    }

    fn removed_at(&self, op: u64) -> bool {
        let ms = self.start.elapsed().as_millis() as u64;
        self.cfg.device_removed.iter().any(|w| {
            let by_ops =
                matches!((w.after_ops, w.for_ops), (Some(a), Some(n)) if op >= a && op < a + n);
            let by_time =
                matches!((w.start_ms, w.duration_ms), (Some(s), Some(d)) if ms >= s && ms < s + d);
            by_ops || by_time
        })
    }

    /// splitmix64: small, fast, and the same sequence for the same seed everywhere.
    fn next_unit(&self) -> f64 {
        let mut s = match self.rng.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Runs the faults for one call of `function`: sleeps, then may fail it.
    /// `Err(DeviceRemoved)` tells the caller to drop the token's sessions.
    pub fn on_call(&self, function: &str) -> Result<()> {
        let op = self.ops.fetch_add(1, Ordering::SeqCst);
        let lat = self
            .cfg
            .latency_ms
            .get(function)
            .or_else(|| self.cfg.latency_ms.get("*"));
        if let Some(ms) = lat {
            std::thread::sleep(Duration::from_millis(*ms));
        }
        if self.removed_at(op) {
            return Err(Error::DeviceRemoved);
        }
        if let Some((rate, rv)) = self.errors.get(function).or_else(|| self.errors.get("*"))
            && self.next_unit() < *rate
        {
            return Err(Error::Injected(*rv));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(seed: u64) -> Vec<bool> {
        let cfg = FaultConfig {
            seed,
            errors: BTreeMap::from([(
                "C_Sign".into(),
                ErrorFault {
                    rate: 0.3,
                    rv: "CKR_DEVICE_ERROR".into(),
                },
            )]),
            ..Default::default()
        };
        let f = Faults::new(cfg).unwrap();
        (0..200).map(|_| f.on_call("C_Sign").is_err()).collect()
    }

    #[test]
    fn error_rate_is_seeded_and_replayable() {
        let a = errs(7);
        assert_eq!(a, errs(7));
        assert_ne!(a, errs(8));
        let n = a.iter().filter(|e| **e).count();
        assert!((30..90).contains(&n), "{n} errors of 200 at rate 0.3");
    }

    #[test]
    fn removal_window_by_ops() {
        let cfg = FaultConfig {
            device_removed: vec![RemovedWindow {
                after_ops: Some(2),
                for_ops: Some(3),
                ..Default::default()
            }],
            ..Default::default()
        };
        let f = Faults::new(cfg).unwrap();
        let r: Vec<bool> = (0..7).map(|_| f.on_call("C_Sign").is_err()).collect();
        assert_eq!(r, [false, false, true, true, true, false, false]);
    }

    #[test]
    fn bad_config_is_rejected() {
        let cfg = FaultConfig {
            errors: BTreeMap::from([(
                "*".into(),
                ErrorFault {
                    rate: 0.1,
                    rv: "CKR_NOPE".into(),
                },
            )]),
            ..Default::default()
        };
        assert!(Faults::new(cfg).is_err());
    }
}
