//! Two (and more) real identities: the CLI runs as other uids through setpriv, and the service
//! decides by what the kernel says about them.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Service, write};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn the_creator_may_sign_another_uid_may_not_and_the_denial_is_audited() {
    let s = Service::start();
    let msg = write(s.dir.path(), "m", b"owned by 4001");
    let m = msg.to_str().unwrap();

    let out = s.cli_as(
        4001,
        4001,
        &["key", "create", "mine", "--alg", "ecdsa-p256"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = s.cli_as(4001, 4001, &["key", "sign", "mine", "--in", m]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = s.cli_as(4002, 4002, &["key", "sign", "mine", "--in", m]);
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out).trim(),
        "error: permission denied: Sign on key \"mine\" is not permitted for uid 4002"
    );
    // 4002 does not even see the key in a listing.
    let out = s.cli_as(4002, 4002, &["--json", "key", "list"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    // Root (the service's own uid here) may.
    s.ok(&["key", "sign", "mine", "--in", m]);

    let audit = std::fs::read_to_string(s.audit_log()).unwrap();
    let denial = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["decision"] == "deny")
        .expect("a deny line");
    assert_eq!(denial["caller"]["uid"], 4002);
    assert_eq!(denial["action"], "Sign");
    assert_eq!(denial["key"], "mine");
    assert!(
        denial["result"]
            .as_str()
            .unwrap()
            .contains("permission denied")
    );
    let allowed = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["action"] == "Sign" && v["caller"]["uid"] == 4001)
        .unwrap();
    assert_eq!(allowed["policies"], serde_json::json!(["owner"]));
    assert_eq!(allowed["version"], 1);
}

fn wait_for_log(s: &Service, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if s.log().contains(needle) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("log never said {needle:?}: {}", s.log());
}

#[test]
fn a_label_policy_grants_exactly_what_it_says_and_a_bad_reload_keeps_it() {
    let s = Service::start();
    let msg = write(s.dir.path(), "m", b"team message");
    let m = msg.to_str().unwrap();
    s.ok(&[
        "key",
        "create",
        "pay",
        "--alg",
        "ecdsa-p256",
        "--label",
        "team=payments",
    ]);
    s.ok(&[
        "key",
        "create",
        "ops",
        "--alg",
        "ecdsa-p256",
        "--label",
        "team=ops",
    ]);
    s.ok(&[
        "key",
        "create",
        "paydh",
        "--alg",
        "ecdh-p256",
        "--label",
        "team=payments",
    ]);

    // Before the team policy, a payments member may do nothing with root's keys.
    assert!(
        !s.cli_as(4003, 2000, &["key", "sign", "pay", "--in", m])
            .status
            .success()
    );

    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/policies/examples/team-labels.cedar"
        ),
        s.data().join("policies/team.cedar"),
    )
    .unwrap();
    Command::new("kill")
        .args(["-HUP", &s.pid().to_string()])
        .status()
        .unwrap();
    wait_for_log(&s, "policies reloaded");

    let member = |args: &[&str]| s.cli_as(4003, 2000, args);
    assert!(member(&["key", "sign", "pay", "--in", m]).status.success());
    assert!(member(&["key", "public", "pay"]).status.success());
    let no = member(&["key", "sign", "ops", "--in", m]);
    assert!(stderr(&no).contains("permission denied"), "{}", stderr(&no));
    let no = member(&["key", "rotate", "pay"]);
    assert!(stderr(&no).contains("permission denied"), "{}", stderr(&no));
    let no = s.cli_as(4004, 2001, &["key", "sign", "pay", "--in", m]);
    assert!(stderr(&no).contains("permission denied"), "{}", stderr(&no));

    // A broken policy file on reload: the service says so and keeps the last good set.
    std::fs::write(
        s.data().join("policies/zz-broken.cedar"),
        "permit (principal, action, resource",
    )
    .unwrap();
    Command::new("kill")
        .args(["-HUP", &s.pid().to_string()])
        .status()
        .unwrap();
    wait_for_log(&s, "policy reload failed");
    assert!(member(&["key", "sign", "pay", "--in", m]).status.success());
    assert!(!member(&["key", "sign", "ops", "--in", m]).status.success());
}

#[test]
fn an_unedited_default_from_the_previous_release_is_upgraded_and_an_edited_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("data/policies");
    std::fs::create_dir_all(&policies).unwrap();
    let previous = include_str!("../policies/previous/default-0.1.cedar");
    std::fs::write(policies.join("default.cedar"), previous).unwrap();
    let (ok, err) = common::check_config(dir.path(), "");
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read_to_string(policies.join("default.cedar")).unwrap(),
        keywarden::service::policy::DEFAULT_POLICIES
    );
    // Edited by someone: left alone, and the reason it fails is named.
    std::fs::write(
        policies.join("default.cedar"),
        format!("{previous}\n// local change\n"),
    )
    .unwrap();
    let (ok, err) = common::check_config(dir.path(), "");
    assert!(
        !ok && err.contains("principal is Keywarden::Caller"),
        "{err}"
    );
}
