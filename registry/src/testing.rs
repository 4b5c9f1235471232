//! The shared suite: one set of checks every [`Registry`] implementation runs.
//!
//! An implementation's test file builds a [`Harness`] (a fresh, empty registry plus whatever
//! keeps it alive, and optionally a way to open a second, independent handle on the same
//! store) and expands [`registry_tests!`](crate::registry_tests):
//!
//! ```ignore
//! async fn harness() -> keywarden_registry::testing::Harness { /* fresh registry */ }
//! keywarden_registry::registry_tests!(harness);
//! ```
//!
//! Each check becomes its own `#[tokio::test]`, so a failure names the check. A harness
//! without [`Harness::with_reopen`] cannot run the checks that need a second handle; they print
//! `registry suite: NOT TESTED …` instead of passing silently.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::{Error, KeyState, NewKey, Registry, VersionState};

#[cfg(feature = "postgres")]
pub mod postgres;

/// Opens another handle on the same store, as a second process would.
pub type Reopen =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Arc<dyn Registry>> + Send>> + Send + Sync>;

/// A registry under test and what keeps its store alive.
pub struct Harness {
    /// A fresh, empty registry.
    pub registry: Arc<dyn Registry>,
    /// Opens another independent handle on the same store (another connection, as another
    /// process would have), if the implementation has such a thing.
    pub reopen: Option<Reopen>,
    guard: Box<dyn Any + Send + Sync>,
}

impl Harness {
    /// A harness for `registry`, keeping `guard` (temporary directories, database clusters)
    /// alive as long as the harness.
    pub fn new(registry: Arc<dyn Registry>, guard: impl Any + Send + Sync) -> Self {
        Self {
            registry,
            reopen: None,
            guard: Box::new(guard),
        }
    }

    /// Adds the way to open a second handle on the same store.
    pub fn with_reopen<F, Fut>(mut self, reopen: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Arc<dyn Registry>> + Send + 'static,
    {
        self.reopen = Some(Arc::new(move || Box::pin(reopen())));
        self
    }

    /// The guard, for harnesses that need to reach it.
    pub fn guard(&self) -> &(dyn Any + Send + Sync) {
        self.guard.as_ref()
    }

    async fn second(&self, test: &str) -> Option<Arc<dyn Registry>> {
        match &self.reopen {
            Some(reopen) => Some(reopen().await),
            None => {
                println!(
                    "registry suite: NOT TESTED on {:?}: {test}: the harness has no second handle",
                    self.registry
                );
                None
            }
        }
    }
}

/// Expands to one `#[tokio::test]` per check, each calling `$harness().await` for a fresh
/// registry. The calling crate needs `tokio` with `macros` and `rt-multi-thread`.
#[macro_export]
macro_rules! registry_tests {
    ($harness:path) => {
        $crate::registry_tests!(@each $harness;
            full_lifecycle,
            records_round_trip,
            list_is_sorted_and_complete,
            create_conflicts_are_refused,
            concurrent_creates_of_one_name,
            concurrent_rotations_are_gap_free,
            concurrent_rotations_from_two_handles,
            wrong_state_transitions,
            tombstones_keep_names,
            pending_lists_every_pending_version,
            abort_of_first_version_removes_the_key,
            abort_of_a_rotation,
            complete_checks_the_version,
            unknown_keys_are_not_found,
            invalid_names_are_refused,
            persists_across_reopen,
        );
    };
    (@each $harness:path; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                let harness = $harness().await;
                $crate::testing::$check(&harness).await;
            }
        )*
    };
}

/// A key description for tests: algorithm `ecdsa-p256`, backend `sim`, owner 1000.
pub fn new_key(name: &str) -> NewKey {
    NewKey {
        name: name.to_owned(),
        algorithm: "ecdsa-p256".to_owned(),
        backend: "sim".to_owned(),
        owner_uid: 1000,
        labels: BTreeMap::new(),
        expires_at: None,
        hsm_label: format!("kw-{name}-1"),
        now: 1_700_000_000,
    }
}

/// The fake backend reference a test stores for an HSM label.
pub fn key_ref_for(hsm_label: &str) -> Vec<u8> {
    format!("ref:{hsm_label}").into_bytes()
}

/// The fake public key a test stores for an HSM label.
pub fn public_key_for(hsm_label: &str) -> Vec<u8> {
    format!("spki:{hsm_label}").into_bytes()
}

/// Creates `name` and completes version 1.
pub async fn create_ready(reg: &dyn Registry, name: &str) -> crate::KeyRecord {
    let p = reg.begin_create(new_key(name)).await.unwrap();
    reg.complete(
        name,
        p.version,
        &key_ref_for(&p.hsm_label),
        &public_key_for(&p.hsm_label),
    )
    .await
    .unwrap()
}

/// Rotates `name` and completes the new version; returns its number.
pub async fn rotate_ready(reg: &dyn Registry, name: &str, label: String) -> u32 {
    let p = reg.begin_rotate(name, label, 1_700_000_100).await.unwrap();
    let rec = reg
        .complete(
            name,
            p.version,
            &key_ref_for(&p.hsm_label),
            &public_key_for(&p.hsm_label),
        )
        .await
        .unwrap();
    assert_eq!(rec.version(p.version).unwrap().state, VersionState::Ready);
    p.version
}

/// Asserts versions 1..=n, all Ready, each holding the reference made for its own label.
fn assert_gap_free_ready(rec: &crate::KeyRecord, n: u32) {
    let numbers: Vec<u32> = rec.versions.iter().map(|v| v.version).collect();
    assert_eq!(
        numbers,
        (1..=n).collect::<Vec<_>>(),
        "versions of {}",
        rec.name
    );
    let mut labels = BTreeSet::new();
    for v in &rec.versions {
        assert_eq!(v.state, VersionState::Ready, "version {}", v.version);
        assert_eq!(v.key_ref.as_deref(), Some(&key_ref_for(&v.hsm_label)[..]));
        assert_eq!(
            v.public_key.as_deref(),
            Some(&public_key_for(&v.hsm_label)[..])
        );
        assert!(labels.insert(v.hsm_label.clone()), "label twice");
    }
}

pub async fn full_lifecycle(h: &Harness) {
    let reg = h.registry.as_ref();
    let p = reg.begin_create(new_key("app.signing")).await.unwrap();
    assert_eq!(p.name, "app.signing");
    assert_eq!(p.version, 1);
    assert_eq!(p.hsm_label, "kw-app.signing-1");
    assert_eq!(p.backend, "sim");
    assert_eq!(p.algorithm, "ecdsa-p256");

    // Pending: visible, but nothing to sign with yet.
    let rec = reg.get("app.signing").await.unwrap();
    assert_eq!(rec.state, KeyState::Enabled);
    assert_eq!(rec.versions.len(), 1);
    assert_eq!(rec.versions[0].state, VersionState::Pending);
    assert_eq!(rec.versions[0].key_ref, None);
    assert_eq!(rec.versions[0].public_key, None);
    assert!(rec.latest_ready().is_none());

    let rec = reg
        .complete("app.signing", 1, b"ref-1", b"spki-1")
        .await
        .unwrap();
    let v1 = rec.latest_ready().unwrap();
    assert_eq!(v1.version, 1);
    assert_eq!(v1.key_ref.as_deref(), Some(&b"ref-1"[..]));
    assert_eq!(v1.public_key.as_deref(), Some(&b"spki-1"[..]));
    assert_eq!(v1.created_at, 1_700_000_000);
    assert_eq!(reg.get("app.signing").await.unwrap(), rec);

    // Rotate: v2 pending while v1 still signs, then v2 is the newest.
    let p2 = reg
        .begin_rotate("app.signing", "kw-app.signing-2".into(), 1_700_000_500)
        .await
        .unwrap();
    assert_eq!(p2.version, 2);
    assert_eq!(p2.hsm_label, "kw-app.signing-2");
    let mid = reg.get("app.signing").await.unwrap();
    assert_eq!(mid.latest_ready().unwrap().version, 1);
    assert_eq!(mid.version(2).unwrap().state, VersionState::Pending);
    let rec = reg
        .complete("app.signing", 2, b"ref-2", b"spki-2")
        .await
        .unwrap();
    assert_eq!(rec.latest_ready().unwrap().version, 2);
    assert_eq!(rec.version(2).unwrap().created_at, 1_700_000_500);
    assert_eq!(rec.version(1).unwrap().state, VersionState::Ready);

    // Disable, enable, disable, destroy.
    let rec = reg
        .set_state("app.signing", KeyState::Disabled)
        .await
        .unwrap();
    assert_eq!(rec.state, KeyState::Disabled);
    let rec = reg
        .set_state("app.signing", KeyState::Enabled)
        .await
        .unwrap();
    assert_eq!(rec.state, KeyState::Enabled);
    reg.set_state("app.signing", KeyState::Disabled)
        .await
        .unwrap();
    let before = reg.destroy("app.signing").await.unwrap();
    assert_eq!(before.state, KeyState::Disabled);
    assert_eq!(before.versions.len(), 2);
    assert!(
        before
            .versions
            .iter()
            .all(|v| v.state == VersionState::Ready)
    );
    let refs: Vec<_> = before
        .versions
        .iter()
        .map(|v| v.key_ref.clone().unwrap())
        .collect();
    assert_eq!(refs, vec![b"ref-1".to_vec(), b"ref-2".to_vec()]);

    // The tombstone keeps everything for audit, and nothing is usable.
    let tomb = reg.get("app.signing").await.unwrap();
    assert_eq!(tomb.state, KeyState::Destroyed);
    assert!(tomb.latest_ready().is_none());
    assert_eq!(tomb.versions.len(), 2);
    for (v, b) in tomb.versions.iter().zip(&before.versions) {
        assert_eq!(v.state, VersionState::Destroyed);
        assert_eq!(v.key_ref, b.key_ref);
        assert_eq!(v.public_key, b.public_key);
        assert_eq!(v.hsm_label, b.hsm_label);
    }
    assert!(reg.pending().await.unwrap().is_empty());
}

pub async fn records_round_trip(h: &Harness) {
    let reg = h.registry.as_ref();
    let labels: BTreeMap<String, String> = [
        ("team", "payments"),
        ("env", "prod"),
        ("quote\"s", "uni ✓ code"),
        ("", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let new = NewKey {
        name: "Ed_25519-key.v2".into(),
        algorithm: "ed25519".into(),
        backend: "tpm-main".into(),
        owner_uid: u32::MAX,
        labels: labels.clone(),
        expires_at: Some(4_102_444_800),
        hsm_label: "label with spaces/and slashes".into(),
        now: 1_234_567_890,
    };
    reg.begin_create(new).await.unwrap();
    let key_ref = (0..=255u8).collect::<Vec<_>>();
    let rec = reg
        .complete("Ed_25519-key.v2", 1, &key_ref, &[0x30, 0x00, 0xff])
        .await
        .unwrap();
    for rec in [rec, reg.get("Ed_25519-key.v2").await.unwrap()] {
        assert_eq!(rec.name, "Ed_25519-key.v2");
        assert_eq!(rec.algorithm, "ed25519");
        assert_eq!(rec.backend, "tpm-main");
        assert_eq!(rec.owner_uid, u32::MAX);
        assert_eq!(rec.labels, labels);
        assert_eq!(rec.created_at, 1_234_567_890);
        assert_eq!(rec.expires_at, Some(4_102_444_800));
        let v = rec.latest_ready().unwrap();
        assert_eq!(v.hsm_label, "label with spaces/and slashes");
        assert_eq!(v.key_ref.as_deref(), Some(&key_ref[..]));
        assert_eq!(v.public_key.as_deref(), Some(&[0x30, 0x00, 0xff][..]));
    }
    // Owner 0 and no expiry round-trip too.
    let mut root = new_key("root-key");
    root.owner_uid = 0;
    reg.begin_create(root).await.unwrap();
    let rec = reg.get("root-key").await.unwrap();
    assert_eq!(rec.owner_uid, 0);
    assert_eq!(rec.expires_at, None);
    assert!(rec.labels.is_empty());
}

pub async fn list_is_sorted_and_complete(h: &Harness) {
    let reg = h.registry.as_ref();
    assert!(reg.list().await.unwrap().is_empty());
    // Bytewise order: upper case before lower case, '-' before '.' before digits.
    for name in ["b", "a", "B", "a-1", "a.1", "a0", "_"] {
        create_ready(reg, name).await;
    }
    rotate_ready(reg, "b", "kw-b-2".into()).await;
    reg.begin_rotate("b", "kw-b-3".into(), 1).await.unwrap();
    reg.set_state("a0", KeyState::Disabled).await.unwrap();
    reg.destroy("a0").await.unwrap();
    let list = reg.list().await.unwrap();
    let names: Vec<&str> = list.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["B", "_", "a", "a-1", "a.1", "a0", "b"]);
    for rec in &list {
        assert_eq!(rec, &reg.get(&rec.name).await.unwrap());
    }
    let b = list.last().unwrap();
    let states: Vec<_> = b.versions.iter().map(|v| (v.version, v.state)).collect();
    assert_eq!(
        states,
        [
            (1, VersionState::Ready),
            (2, VersionState::Ready),
            (3, VersionState::Pending)
        ]
    );
    assert_eq!(list[5].state, KeyState::Destroyed);
}

pub async fn create_conflicts_are_refused(h: &Harness) {
    let reg = h.registry.as_ref();
    create_ready(reg, "dup").await;
    let mut other = new_key("dup");
    other.algorithm = "ed25519".into();
    other.hsm_label = "kw-dup-other".into();
    let err = reg.begin_create(other).await.unwrap_err();
    assert!(
        matches!(&err, Error::AlreadyExists(n) if n == "dup"),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "key \"dup\" already exists");
    // The first key is untouched, and a pending one conflicts as well.
    let rec = reg.get("dup").await.unwrap();
    assert_eq!(rec.algorithm, "ecdsa-p256");
    assert_eq!(rec.versions.len(), 1);
    reg.begin_create(new_key("half")).await.unwrap();
    assert!(matches!(
        reg.begin_create(new_key("half")).await,
        Err(Error::AlreadyExists(_))
    ));
    assert_eq!(reg.pending().await.unwrap().len(), 1);
}

pub async fn concurrent_creates_of_one_name(h: &Harness) {
    let mut tasks = Vec::new();
    for i in 0..16 {
        let reg = Arc::clone(&h.registry);
        tasks.push(tokio::spawn(async move {
            let mut k = new_key("contested");
            k.hsm_label = format!("kw-contested-{i}");
            reg.begin_create(k).await
        }));
    }
    let mut won = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(p) => won.push(p),
            Err(Error::AlreadyExists(n)) => assert_eq!(n, "contested"),
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one create wins");
    let rec = h.registry.get("contested").await.unwrap();
    assert_eq!(rec.versions.len(), 1);
    assert_eq!(rec.versions[0].hsm_label, won[0].hsm_label);
}

async fn rotate_concurrently(regs: &[Arc<dyn Registry>], name: &str, n: usize) -> Vec<u32> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let reg = Arc::clone(&regs[i % regs.len()]);
        let name = name.to_owned();
        tasks.push(tokio::spawn(async move {
            rotate_ready(reg.as_ref(), &name, format!("kw-{name}-task-{i}")).await
        }));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap());
    }
    got.sort_unstable();
    got
}

pub async fn concurrent_rotations_are_gap_free(h: &Harness) {
    create_ready(h.registry.as_ref(), "busy").await;
    let got = rotate_concurrently(&[Arc::clone(&h.registry)], "busy", 50).await;
    assert_eq!(
        got,
        (2..=51).collect::<Vec<_>>(),
        "each rotation its own version"
    );
    let rec = h.registry.get("busy").await.unwrap();
    assert_gap_free_ready(&rec, 51);
    assert!(h.registry.pending().await.unwrap().is_empty());
}

pub async fn concurrent_rotations_from_two_handles(h: &Harness) {
    let Some(second) = h.second("concurrent_rotations_from_two_handles").await else {
        return;
    };
    create_ready(h.registry.as_ref(), "shared").await;
    let regs = [Arc::clone(&h.registry), Arc::clone(&second)];
    let got = rotate_concurrently(&regs, "shared", 50).await;
    assert_eq!(
        got,
        (2..=51).collect::<Vec<_>>(),
        "each rotation its own version"
    );
    for reg in regs {
        let rec = reg.get("shared").await.unwrap();
        assert_gap_free_ready(&rec, 51);
    }
}

pub async fn wrong_state_transitions(h: &Harness) {
    let reg = h.registry.as_ref();
    create_ready(reg, "k").await;

    let err = reg.destroy("k").await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::WrongState { name, state: KeyState::Enabled, action: "destroy", .. } if name == "k"
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "key \"k\" is enabled; destroy needs it disabled"
    );
    assert_eq!(reg.get("k").await.unwrap().state, KeyState::Enabled);

    let err = reg.set_state("k", KeyState::Destroyed).await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::WrongState {
                state: KeyState::Enabled,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("destroy()"), "{err}");

    // Same-state changes are no-ops.
    assert_eq!(
        reg.set_state("k", KeyState::Enabled).await.unwrap().state,
        KeyState::Enabled
    );
    reg.set_state("k", KeyState::Disabled).await.unwrap();
    assert_eq!(
        reg.set_state("k", KeyState::Disabled).await.unwrap().state,
        KeyState::Disabled
    );

    let err = reg.begin_rotate("k", "x".into(), 0).await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::WrongState {
                state: KeyState::Disabled,
                action: "rotate",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "key \"k\" is disabled; rotate needs it enabled"
    );
    assert_eq!(reg.get("k").await.unwrap().versions.len(), 1);

    reg.destroy("k").await.unwrap();
    for (target, action, needs) in [
        (KeyState::Enabled, "enable", "disabled"),
        (KeyState::Disabled, "disable", "enabled"),
    ] {
        let err = reg.set_state("k", target).await.unwrap_err();
        assert!(
            matches!(
                &err,
                Error::WrongState {
                    state: KeyState::Destroyed,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("key \"k\" is destroyed; {action} needs it {needs}")
        );
    }
    let err = reg.destroy("k").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "key \"k\" is destroyed; destroy needs it disabled"
    );
    let err = reg.begin_rotate("k", "x".into(), 0).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "key \"k\" is destroyed; rotate needs it enabled"
    );
    assert_eq!(reg.get("k").await.unwrap().state, KeyState::Destroyed);
}

pub async fn tombstones_keep_names(h: &Harness) {
    let reg = h.registry.as_ref();
    create_ready(reg, "gone").await;
    reg.set_state("gone", KeyState::Disabled).await.unwrap();
    reg.destroy("gone").await.unwrap();
    let err = reg.begin_create(new_key("gone")).await.unwrap_err();
    assert!(
        matches!(&err, Error::AlreadyExists(n) if n == "gone"),
        "{err:?}"
    );
    let list = reg.list().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].state, KeyState::Destroyed);
    assert_eq!(list[0].versions[0].state, VersionState::Destroyed);
    assert!(list[0].versions[0].key_ref.is_some());
}

pub async fn pending_lists_every_pending_version(h: &Harness) {
    let reg = h.registry.as_ref();
    assert!(reg.pending().await.unwrap().is_empty());
    let mut k = new_key("zeta");
    k.backend = "pkcs11-a".into();
    k.algorithm = "ecdh-p256".into();
    let pz = reg.begin_create(k).await.unwrap();
    create_ready(reg, "alpha").await;
    let pa2 = reg
        .begin_rotate("alpha", "kw-alpha-2".into(), 5)
        .await
        .unwrap();
    let pa3 = reg
        .begin_rotate("alpha", "kw-alpha-3".into(), 6)
        .await
        .unwrap();
    assert_eq!((pa2.version, pa3.version), (2, 3));
    let pending = reg.pending().await.unwrap();
    assert_eq!(pending, vec![pa2.clone(), pa3.clone(), pz.clone()]);
    assert_eq!(pending[2].backend, "pkcs11-a");
    assert_eq!(pending[2].algorithm, "ecdh-p256");
    // When each was begun, for multi-node recovery to tell in-flight rows from leftovers.
    let begun: Vec<_> = pending.iter().map(|p| p.created_at).collect();
    assert_eq!(begun, [5, 6, 1_700_000_000]);

    reg.complete("alpha", 3, b"r3", b"p3").await.unwrap();
    reg.abort("zeta", 1).await.unwrap();
    assert_eq!(reg.pending().await.unwrap(), vec![pa2]);
    // The newest ready version is 3 even though 2 is still pending.
    let rec = reg.get("alpha").await.unwrap();
    assert_eq!(rec.latest_ready().unwrap().version, 3);

    // Destroying a key leaves none of its versions pending.
    reg.set_state("alpha", KeyState::Disabled).await.unwrap();
    let before = reg.destroy("alpha").await.unwrap();
    assert_eq!(before.version(2).unwrap().state, VersionState::Pending);
    assert!(reg.pending().await.unwrap().is_empty());
    // …and a late completion of it is refused, so the caller destroys that HSM object.
    let err = reg.complete("alpha", 2, b"r2", b"p2").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::VersionWrongState {
                state: VersionState::Destroyed,
                action: "complete",
                ..
            }
        ),
        "{err:?}"
    );
}

pub async fn abort_of_first_version_removes_the_key(h: &Harness) {
    let reg = h.registry.as_ref();
    reg.begin_create(new_key("never")).await.unwrap();
    reg.abort("never", 1).await.unwrap();
    assert!(matches!(reg.get("never").await, Err(Error::NotFound(n)) if n == "never"));
    assert!(reg.list().await.unwrap().is_empty());
    assert!(reg.pending().await.unwrap().is_empty());
    // The name is free again.
    create_ready(reg, "never").await;
    assert_eq!(reg.get("never").await.unwrap().versions.len(), 1);
    // Aborting twice, or aborting a ready version, is refused.
    let err = reg.abort("never", 1).await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::VersionWrongState {
                version: 1,
                state: VersionState::Ready,
                action: "abort",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "version 1 of key \"never\" is ready; abort needs it pending"
    );
    assert!(matches!(
        reg.abort("never", 2).await,
        Err(Error::NoSuchVersion { version: 2, .. })
    ));
    assert!(matches!(
        reg.abort("nobody", 1).await,
        Err(Error::NotFound(_))
    ));
}

pub async fn abort_of_a_rotation(h: &Harness) {
    let reg = h.registry.as_ref();
    create_ready(reg, "rot").await;
    // Newest pending version: dropped, and the number is free for the next rotation.
    let p = reg.begin_rotate("rot", "kw-rot-a".into(), 1).await.unwrap();
    assert_eq!(p.version, 2);
    reg.abort("rot", 2).await.unwrap();
    let rec = reg.get("rot").await.unwrap();
    assert_eq!(rec.versions.len(), 1);
    assert_eq!(rec.latest_ready().unwrap().version, 1);
    // A pending version with a newer one above: kept as Destroyed, so no gap appears.
    let p2 = reg.begin_rotate("rot", "kw-rot-b".into(), 2).await.unwrap();
    let p3 = reg.begin_rotate("rot", "kw-rot-c".into(), 3).await.unwrap();
    assert_eq!((p2.version, p3.version), (2, 3));
    reg.abort("rot", 2).await.unwrap();
    reg.complete("rot", 3, b"r3", b"p3").await.unwrap();
    let rec = reg.get("rot").await.unwrap();
    let states: Vec<_> = rec.versions.iter().map(|v| (v.version, v.state)).collect();
    assert_eq!(
        states,
        [
            (1, VersionState::Ready),
            (2, VersionState::Destroyed),
            (3, VersionState::Ready)
        ]
    );
    assert_eq!(rec.version(2).unwrap().key_ref, None);
    assert_eq!(
        reg.begin_rotate("rot", "d".into(), 4)
            .await
            .unwrap()
            .version,
        4
    );
    assert_eq!(rec.state, KeyState::Enabled);
}

pub async fn complete_checks_the_version(h: &Harness) {
    let reg = h.registry.as_ref();
    reg.begin_create(new_key("c")).await.unwrap();
    let err = reg.complete("c", 2, b"r", b"p").await.unwrap_err();
    assert!(
        matches!(&err, Error::NoSuchVersion { name, version: 2 } if name == "c"),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "key \"c\" has no version 2");
    let first = reg.complete("c", 1, b"r", b"p").await.unwrap();
    // A retry with the same bytes (the first answer was lost) succeeds and changes nothing.
    assert_eq!(reg.complete("c", 1, b"r", b"p").await.unwrap(), first);
    // Different bytes on a ready version are refused; the stored ones stay.
    let err = reg.complete("c", 1, b"other", b"p").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::VersionWrongState {
                version: 1,
                state: VersionState::Ready,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(reg.get("c").await.unwrap(), first);
    assert!(matches!(
        reg.complete("nobody", 1, b"r", b"p").await,
        Err(Error::NotFound(_))
    ));
    // A key disabled while its version was pending can still record the HSM key it got.
    reg.begin_rotate("c", "kw-c-2".into(), 9).await.unwrap();
    reg.set_state("c", KeyState::Disabled).await.unwrap();
    let rec = reg.complete("c", 2, b"r2", b"p2").await.unwrap();
    assert_eq!(rec.state, KeyState::Disabled);
    assert_eq!(rec.latest_ready().unwrap().version, 2);
}

pub async fn unknown_keys_are_not_found(h: &Harness) {
    let reg = h.registry.as_ref();
    let nf = |r: Result<(), Error>| match r {
        Err(Error::NotFound(n)) => assert_eq!(n, "ghost"),
        other => panic!("expected NotFound, got {other:?}"),
    };
    nf(reg.get("ghost").await.map(drop));
    nf(reg.begin_rotate("ghost", "l".into(), 0).await.map(drop));
    nf(reg.complete("ghost", 1, b"r", b"p").await.map(drop));
    nf(reg.abort("ghost", 1).await);
    nf(reg.set_state("ghost", KeyState::Disabled).await.map(drop));
    nf(reg.destroy("ghost").await.map(drop));
    assert_eq!(
        reg.get("ghost").await.unwrap_err().to_string(),
        "no key named \"ghost\""
    );
}

pub async fn invalid_names_are_refused(h: &Harness) {
    let reg = h.registry.as_ref();
    let long = "k".repeat(65);
    for bad in [
        "",
        long.as_str(),
        "a/b",
        "a b",
        "naïve",
        "x\0y",
        "semi;colon",
        "'",
    ] {
        let check = |r: Result<(), Error>| match r {
            Err(Error::InvalidName(n)) => assert_eq!(n, bad),
            other => panic!("{bad:?}: expected InvalidName, got {other:?}"),
        };
        check(reg.begin_create(new_key(bad)).await.map(drop));
        check(reg.get(bad).await.map(drop));
        check(reg.begin_rotate(bad, "l".into(), 0).await.map(drop));
        check(reg.complete(bad, 1, b"r", b"p").await.map(drop));
        check(reg.abort(bad, 1).await);
        check(reg.set_state(bad, KeyState::Disabled).await.map(drop));
        check(reg.destroy(bad).await.map(drop));
    }
    assert!(reg.list().await.unwrap().is_empty());
    let err = reg.get("a b").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid key name \"a b\": names are 1-64 characters of a-z A-Z 0-9 . _ -"
    );
    // The longest name is fine.
    create_ready(reg, &"k".repeat(64)).await;
}

pub async fn persists_across_reopen(h: &Harness) {
    let reg = h.registry.as_ref();
    create_ready(reg, "kept").await;
    rotate_ready(reg, "kept", "kw-kept-2".into()).await;
    reg.begin_rotate("kept", "kw-kept-3".into(), 7)
        .await
        .unwrap();
    create_ready(reg, "off").await;
    reg.set_state("off", KeyState::Disabled).await.unwrap();
    let before = reg.list().await.unwrap();
    let Some(second) = h.second("persists_across_reopen").await else {
        return;
    };
    assert_eq!(second.list().await.unwrap(), before);
    assert_eq!(second.pending().await.unwrap().len(), 1);
    // Writes through the second handle are seen by the first.
    second.complete("kept", 3, b"r3", b"p3").await.unwrap();
    assert_eq!(
        reg.get("kept")
            .await
            .unwrap()
            .latest_ready()
            .unwrap()
            .version,
        3
    );
}
