//! `keywarden channel id|listen|connect`: a secure channel between two processes whose static
//! keys live in the key service, carrying stdin to the peer's stdout both ways.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};

use common::{BIN, Service};

#[test]
fn two_processes_talk_over_a_channel_with_service_keys() {
    let s = Service::start();
    for (name, alg) in [
        ("a-id", "ecdsa-p256"),
        ("a-dh", "ecdh-p256"),
        ("b-id", "ed25519"),
        ("b-dh", "ecdh-p256"),
    ] {
        s.ok(&["key", "create", name, "--alg", alg]);
    }
    let id_a = s
        .ok(&["channel", "id", "--identity", "a-id", "--static", "a-dh"])
        .trim()
        .to_owned();
    let id_b = s
        .ok(&["channel", "id", "--identity", "b-id", "--static", "b-dh"])
        .trim()
        .to_owned();
    assert!(
        id_a.starts_with("kwid1") && id_b.starts_with("kwid1") && id_a != id_b,
        "{id_a} {id_b}"
    );

    // Nothing is trusted by default.
    let e = s.fails(&[
        "channel",
        "listen",
        "--identity",
        "b-id",
        "--static",
        "b-dh",
        "--bind",
        "127.0.0.1:0",
    ]);
    assert!(e.contains("nobody is trusted by default"), "{e}");

    let mut listener = Command::new(BIN)
        .arg("--socket")
        .arg(&s.socket)
        .args([
            "channel",
            "listen",
            "--identity",
            "b-id",
            "--static",
            "b-dh",
            "--bind",
            "127.0.0.1:0",
        ])
        .args(["--allow-peer", &id_a])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(listener.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let addr = line
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    // Keep draining the listener's stderr (a full pipe would block it) and keep it for the
    // failure message.
    let listener_err = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut rest);
        rest
    });
    listener
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello from b\n")
        .unwrap();

    let mut connect = Command::new(BIN)
        .arg("--socket")
        .arg(&s.socket)
        .args([
            "channel",
            "connect",
            "--identity",
            "a-id",
            "--static",
            "a-dh",
            "--peer",
            &addr,
        ])
        .args(["--allow-peer", &id_b])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    connect
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello from a\n")
        .unwrap();
    // A hang must fail this test with what the two ends said, not stall the suite: after 60 s
    // both are killed.
    let pids = [listener.id(), connect.id()];
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if finished
            .recv_timeout(std::time::Duration::from_secs(60))
            .is_err()
        {
            for pid in pids {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
            return true;
        }
        false
    });
    let a_out = connect.wait_with_output().unwrap();
    let b_out = listener.wait_with_output().unwrap();
    let _ = done.send(());
    let hung = watchdog.join().unwrap();
    let b_err = listener_err.join().unwrap();
    assert!(
        !hung,
        "the channel ends hung and were killed after 60 s; connect said: {}; listen said: {b_err}",
        String::from_utf8_lossy(&a_out.stderr)
    );
    assert!(
        a_out.status.success(),
        "connect: {}",
        String::from_utf8_lossy(&a_out.stderr)
    );
    assert!(b_out.status.success(), "listen: {b_err}");
    assert_eq!(String::from_utf8_lossy(&a_out.stdout), "hello from b\n");
    assert_eq!(String::from_utf8_lossy(&b_out.stdout), "hello from a\n");
}
