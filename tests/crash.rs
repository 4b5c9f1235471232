//! SIGKILL the service in the middle of a stream of creations and rotations: after a restart
//! every key the registry lists works, the token holds no orphan key, and the audit log
//! verifies up to its last complete line.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Service, write};

/// The hsm-sim module, built if this test run has not built it yet.
fn hsm_sim_module() -> PathBuf {
    let target = PathBuf::from(common::BIN).parent().unwrap().to_path_buf();
    let so = target.join("libkeywarden_hsm_sim.so");
    if !so.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "keywarden-hsm-sim", "--lib"])
            .status()
            .unwrap();
        assert!(status.success());
    }
    so
}

/// Counts the private keys on the stopped service's embedded token with OpenSC's pkcs11-tool.
fn token_private_keys(s: &Service) -> usize {
    let pin = std::fs::read_to_string(s.data().join("hsm-sim-user-pin")).unwrap();
    let out = Command::new("pkcs11-tool")
        .arg("--module")
        .arg(hsm_sim_module())
        .args([
            "--login",
            "--pin",
            pin.trim(),
            "--list-objects",
            "--type",
            "privkey",
        ])
        .env("KEYWARDEN_HSM_SIM_DIR", s.data().join("hsm-sim"))
        .output()
        .expect("pkcs11-tool (scripts/setup installs opensc)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .matches("Private Key Object")
        .count()
}

#[test]
fn sigkill_during_creates_and_rotations_loses_nothing_acknowledged() {
    let mut s = Service::start();
    let socket = s.socket.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut acknowledged = Vec::new();
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let name = format!("c{i}");
                let out = Command::new(common::BIN)
                    .arg("--socket")
                    .arg(&socket)
                    .args(["key", "create", &name, "--alg", "ecdsa-p256"])
                    .output()
                    .unwrap();
                if !out.status.success() {
                    break;
                }
                acknowledged.push(name.clone());
                let out = Command::new(common::BIN)
                    .arg("--socket")
                    .arg(&socket)
                    .args(["key", "rotate", &name])
                    .output()
                    .unwrap();
                if !out.status.success() {
                    break;
                }
            }
            acknowledged
        })
    };
    std::thread::sleep(Duration::from_millis(2500));
    s.kill();
    stop.store(true, Ordering::Relaxed);
    let acknowledged = worker.join().unwrap();
    assert!(
        acknowledged.len() >= 2,
        "too few operations before the kill: {acknowledged:?}"
    );

    s.spawn();
    let keys: serde_json::Value = serde_json::from_str(&s.ok(&["--json", "key", "list"])).unwrap();
    let keys = keys.as_array().unwrap();
    let names: Vec<&str> = keys.iter().map(|k| k["name"].as_str().unwrap()).collect();
    for a in &acknowledged {
        assert!(
            names.contains(&a.as_str()),
            "acknowledged key {a} lost; registry has {names:?}"
        );
    }
    let msg = write(s.dir.path(), "m", b"after the crash");
    let mut ready_versions = 0;
    for k in keys {
        let versions = k["versions"].as_array().unwrap();
        assert!(
            versions.iter().all(|v| v["state"] == "ready"),
            "a pending version survived recovery: {k}"
        );
        ready_versions += versions.len();
        s.ok(&[
            "key",
            "sign",
            k["name"].as_str().unwrap(),
            "--in",
            msg.to_str().unwrap(),
        ]);
    }
    let out = s.ok(&["audit", "verify", s.audit_log().to_str().unwrap()]);
    assert!(out.contains("chain intact"), "{out}");

    s.stop();
    let on_token = token_private_keys(&s);
    println!(
        "acknowledged creations: {}; ready versions after recovery: {ready_versions}; private keys on the token: {on_token}",
        acknowledged.len()
    );
    assert!(ready_versions >= 2 * acknowledged.len() - 1);
    assert_eq!(
        on_token, ready_versions,
        "HSM objects and registry versions differ (orphans)"
    );
}
