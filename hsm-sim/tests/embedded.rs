//! The token embedded in an executable and reached with `Pkcs11::new_from_self()`
//! (`examples/embedded.rs`), as `keywarden serve` uses it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

#[test]
fn embedded_token_works_through_new_from_self() {
    let exe = common::target_dir().join("examples/embedded");
    let mtime = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if mtime(&exe) < mtime(&std::env::current_exe().unwrap()) {
        let st = Command::new(env!("CARGO"))
            .args(["build", "-p", "keywarden-hsm-sim", "--example", "embedded"])
            .status()
            .unwrap();
        assert!(st.success());
    }
    let out = Command::new(&exe).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("embedded: ok"), "{text}");
}
