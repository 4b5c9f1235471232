//! End-to-end: the real binary, driven through its CLI, with results checked by OpenSSL and
//! the `p256` crate.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::process::Command;

use common::{Service, write};

fn openssl_verify(pub_pem: &std::path::Path, sig: &std::path::Path, msg: &std::path::Path) -> bool {
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(pub_pem)
        .arg("-signature")
        .arg(sig)
        .arg(msg)
        .output()
        .expect("openssl (scripts/setup installs it)");
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Verified OK")
}

#[test]
fn lifecycle_through_the_cli_verified_by_openssl() {
    let s = Service::start();
    let d = s.dir.path();
    let created: serde_json::Value = serde_json::from_str(&s.ok(&[
        "--json",
        "key",
        "create",
        "release",
        "--alg",
        "ecdsa-p256",
        "--label",
        "team=payments",
    ]))
    .unwrap();
    assert_eq!(created["name"], "release");
    assert_eq!(created["state"], "enabled");
    assert_eq!(created["labels"]["team"], "payments");
    assert_eq!(created["versions"].as_array().unwrap().len(), 1);

    let msg = write(d, "msg", b"release v1.2.3\n");
    let pub1 = d.join("pub1.pem");
    s.ok(&["key", "public", "release", "--out", pub1.to_str().unwrap()]);
    let sig1 = d.join("sig1");
    s.ok(&[
        "key",
        "sign",
        "release",
        "--in",
        msg.to_str().unwrap(),
        "--out",
        sig1.to_str().unwrap(),
    ]);
    assert!(
        openssl_verify(&pub1, &sig1, &msg),
        "openssl rejects the signature"
    );

    // The p256 crate agrees (raw format).
    let raw = d.join("sig1.raw");
    s.ok(&[
        "key",
        "sign",
        "release",
        "--in",
        msg.to_str().unwrap(),
        "--out",
        raw.to_str().unwrap(),
        "--format",
        "raw",
    ]);
    let pk =
        keywarden_vault::PublicKey::from_pem(&std::fs::read_to_string(&pub1).unwrap()).unwrap();
    keywarden_vault::verify::verify_raw(
        &pk,
        &std::fs::read(&msg).unwrap(),
        &std::fs::read(&raw).unwrap(),
    )
    .unwrap();

    // Rotate: new signatures use v2; v1 signatures still verify.
    let rotated: serde_json::Value =
        serde_json::from_str(&s.ok(&["--json", "key", "rotate", "release"])).unwrap();
    assert_eq!(rotated["versions"].as_array().unwrap().len(), 2);
    let pub2 = d.join("pub2.pem");
    s.ok(&["key", "public", "release", "--out", pub2.to_str().unwrap()]);
    assert_ne!(std::fs::read(&pub1).unwrap(), std::fs::read(&pub2).unwrap());
    let sig2 = d.join("sig2");
    s.ok(&[
        "key",
        "sign",
        "release",
        "--in",
        msg.to_str().unwrap(),
        "--out",
        sig2.to_str().unwrap(),
    ]);
    assert!(openssl_verify(&pub2, &sig2, &msg));
    assert!(!openssl_verify(&pub1, &sig2, &msg));
    let v: serde_json::Value = serde_json::from_str(&s.ok(&[
        "--json",
        "key",
        "verify",
        "release",
        "--in",
        msg.to_str().unwrap(),
        "--signature",
        sig1.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(
        (v["valid"].as_bool(), v["version"].as_u64()),
        (Some(true), Some(1))
    );
    let old_pub = d.join("pub-v1.pem");
    s.ok(&[
        "key",
        "public",
        "release",
        "--version",
        "1",
        "--out",
        old_pub.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read(&old_pub).unwrap(),
        std::fs::read(&pub1).unwrap()
    );

    // Disable: signing refused, verification still works; enable again.
    s.ok(&["key", "disable", "release"]);
    let e = s.fails(&["key", "sign", "release", "--in", msg.to_str().unwrap()]);
    assert!(e.contains("is disabled; signing refused"), "{e}");
    s.ok(&[
        "key",
        "verify",
        "release",
        "--in",
        msg.to_str().unwrap(),
        "--signature",
        sig2.to_str().unwrap(),
    ]);
    s.ok(&["key", "enable", "release"]);
    s.ok(&[
        "key",
        "sign",
        "release",
        "--in",
        msg.to_str().unwrap(),
        "--out",
        sig2.to_str().unwrap(),
    ]);

    // Destroy needs a disabled key, and leaves a tombstone.
    let e = s.fails(&["key", "destroy", "release"]);
    assert!(e.contains("disable it before destroying it"), "{e}");
    s.ok(&["key", "disable", "release"]);
    s.ok(&["key", "destroy", "release"]);
    let list: serde_json::Value = serde_json::from_str(&s.ok(&["--json", "key", "list"])).unwrap();
    assert!(list.as_array().unwrap().is_empty(), "{list}");
    let all: serde_json::Value =
        serde_json::from_str(&s.ok(&["--json", "key", "list", "--all"])).unwrap();
    assert_eq!(all[0]["state"], "destroyed");
    let e = s.fails(&["key", "create", "release", "--alg", "ecdsa-p256"]);
    assert!(e.contains("already exists"), "{e}");

    // Everything above is in the audit log, and it verifies.
    let out = s.ok(&["audit", "verify", s.audit_log().to_str().unwrap()]);
    assert!(out.contains("chain intact"), "{out}");
}

#[test]
fn ed25519_and_ecdh_keys() {
    let s = Service::start();
    let d = s.dir.path();
    s.ok(&["key", "create", "ed", "--alg", "ed25519"]);
    let msg = write(d, "m", b"ed25519 message");
    let sig = d.join("ed.sig");
    s.ok(&[
        "key",
        "sign",
        "ed",
        "--in",
        msg.to_str().unwrap(),
        "--out",
        sig.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&sig).unwrap().len(), 64);
    let pub_pem = d.join("ed.pem");
    s.ok(&["key", "public", "ed", "--out", pub_pem.to_str().unwrap()]);
    // OpenSSL verifies Ed25519 with pkeyutl -rawin.
    let ok = Command::new("openssl")
        .args(["pkeyutl", "-verify", "-pubin", "-inkey"])
        .arg(&pub_pem)
        .arg("-rawin")
        .arg("-in")
        .arg(&msg)
        .arg("-sigfile")
        .arg(&sig)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains("Signature Verified Successfully"),
        "{ok:?}"
    );

    s.ok(&["key", "create", "dh", "--alg", "ecdh-p256"]);
    let e = s.fails(&["key", "sign", "dh", "--in", msg.to_str().unwrap()]);
    assert!(e.contains("cannot sign"), "{e}");
}

#[test]
fn bad_input_gets_a_clear_error_and_the_service_keeps_serving() {
    let s = Service::start();
    let d = s.dir.path();
    s.ok(&["key", "create", "k", "--alg", "ecdsa-p256"]);
    let big = write(d, "big", &vec![7u8; keywarden_vault::MAX_MESSAGE_LEN + 1]);
    let e = s.fails(&["key", "sign", "k", "--in", big.to_str().unwrap()]);
    assert!(e.contains("limit is 1048576 bytes"), "{e}");
    let empty = write(d, "empty", b"");
    let e = s.fails(&["key", "sign", "k", "--in", empty.to_str().unwrap()]);
    assert!(e.contains("empty"), "{e}");
    let e = s.fails(&["key", "show", "nope"]);
    assert_eq!(e.trim(), "error: no key named \"nope\"");
    let e = s.fails(&["key", "create", "bad name!", "--alg", "ecdsa-p256"]);
    assert!(e.contains("invalid key name"), "{e}");
    let e = s.fails(&[
        "key",
        "create",
        "x",
        "--alg",
        "ecdsa-p256",
        "--backend",
        "nope",
    ]);
    assert!(e.contains("unknown backend \"nope\""), "{e}");
    let e = s.fails(&[
        "key",
        "create",
        "x",
        "--alg",
        "ecdsa-p256",
        "--expires",
        "2001-01-01T00:00:00Z",
    ]);
    assert!(e.contains("in the past"), "{e}");
    let e = s.fails(&[
        "key",
        "create",
        "x",
        "--alg",
        "ecdsa-p256",
        "--expires",
        "tomorrow",
    ]);
    assert!(e.contains("not an RFC 3339 time"), "{e}");
    // Still serving.
    let msg = write(d, "m", b"still here");
    s.ok(&["key", "sign", "k", "--in", msg.to_str().unwrap()]);
}

#[test]
fn a_second_service_on_the_same_socket_is_refused() {
    let s = Service::start();
    let out = Command::new(common::BIN)
        .args(["serve", "--allow-root", "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another keywarden service is already serving on it"),
        "{err}"
    );
    s.ok(&["key", "list"]);
}

#[test]
fn config_errors_name_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("k.toml");
    std::fs::write(
        &cfg,
        format!("data_dir = \"{}\"\nsokcet = \"/x\"\n", dir.path().display()),
    )
    .unwrap();
    let out = Command::new(common::BIN)
        .args(["serve", "--check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("line 2") && err.contains("sokcet"),
        "{err}"
    );

    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{}\"\nsocket = \"/proc/keywarden.sock\"\n",
            dir.path().join("d").display()
        ),
    )
    .unwrap();
    let out = Command::new(common::BIN)
        .args(["serve", "--allow-root", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("socket /proc/keywarden.sock: cannot bind"),
        "{err}"
    );

    // A malformed policy stops the service from starting, naming the file.
    let data = dir.path().join("p");
    std::fs::create_dir_all(data.join("policies")).unwrap();
    std::fs::write(
        data.join("policies/broken.cedar"),
        "permit (principal, action, resource) when {",
    )
    .unwrap();
    std::fs::write(&cfg, format!("data_dir = \"{}\"\n", data.display())).unwrap();
    let out = Command::new(common::BIN)
        .args(["serve", "--check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("broken.cedar"),
        "{err}"
    );
    let out = Command::new(common::BIN)
        .args(["policy", "check", "--dir"])
        .arg(data.join("policies"))
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("broken.cedar"));
}

#[test]
fn tampering_with_the_audit_log_is_detected_and_named() {
    let s = Service::start();
    let d = s.dir.path();
    for i in 0..4 {
        s.ok(&["key", "create", &format!("k{i}"), "--alg", "ecdsa-p256"]);
    }
    let log = s.audit_log();
    let original = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    assert_eq!(lines.len(), 4);
    let check = |text: String| {
        let copy = d.join("copy.log");
        std::fs::write(&copy, text).unwrap();
        let head = std::fs::read(format!("{}.head", log.display())).unwrap();
        std::fs::write(format!("{}.head", copy.display()), head).unwrap();
        s.cli(&["audit", "verify", copy.to_str().unwrap()])
    };
    let edited = original.replace("\"k1\"", "\"kX\"");
    let out = check(edited);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 3:"),
        "{out:?}"
    );
    let deleted = [lines[0], lines[2], lines[3]].join("\n") + "\n";
    let out = check(deleted);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 2: sequence number"),
        "{out:?}"
    );
    let reordered = [lines[0], lines[2], lines[1], lines[3]].join("\n") + "\n";
    assert!(String::from_utf8_lossy(&check(reordered).stderr).contains("line 2:"));
    let truncated = lines[..2].join("\n") + "\n";
    let out = check(truncated);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 3: missing"),
        "{out:?}"
    );
    assert!(check(original).status.success());
}

#[test]
fn secrets_never_reach_the_audit_log_or_the_service_log() {
    let s = Service::start();
    let d = s.dir.path();
    s.ok(&["key", "create", "k", "--alg", "ecdsa-p256"]);
    let msg = write(d, "secret-msg", b"TOP-SECRET-MESSAGE-CONTENT");
    s.ok(&["key", "sign", "k", "--in", msg.to_str().unwrap()]);
    let pin = std::fs::read_to_string(s.data().join("hsm-sim-user-pin")).unwrap();
    let audit = std::fs::read_to_string(s.audit_log()).unwrap();
    let log = s.log();
    for text in [&audit, &log] {
        assert!(!text.contains(pin.trim()), "PIN leaked");
        assert!(!text.contains("TOP-SECRET"), "message leaked");
    }
    // The digest is there instead.
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        b"TOP-SECRET-MESSAGE-CONTENT",
    ));
    assert!(audit.contains(&digest));
    assert!(
        log.contains("hsm-sim-user-pin"),
        "the PIN file's path is logged: {log}"
    );
}
