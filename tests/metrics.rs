//! The Prometheus endpoint of a running `keywarden serve`: scraped over plain TCP, read by an
//! independent parser, and counting the requests this test makes.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::{BIN, Service, write};
use prometheus_parse::{LineInfo, Sample, Scrape, Value};

/// A loopback port nobody listens on (the OS picked it; the listener is closed again).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

struct Reply {
    status: String,
    headers: String,
    body: String,
}

/// One HTTP/1.1 request, answered until the server closes.
fn http_get(addr: SocketAddr, path: &str) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    Reply {
        status: status.to_owned(),
        headers: headers.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

/// Scrapes `/metrics` and parses it; every sample line must be one the parser understands.
fn scrape(addr: SocketAddr) -> Scrape {
    let r = http_get(addr, "/metrics");
    assert_eq!(r.status, "HTTP/1.1 200 OK", "{}", r.body);
    assert!(
        r.headers
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{}",
        r.headers
    );
    for line in r
        .body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        assert!(
            matches!(LineInfo::parse(line), LineInfo::Sample { .. }),
            "the parser does not read {line:?} as a sample"
        );
    }
    Scrape::parse(r.body.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

fn find<'a>(scrape: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
}

/// A counter's value (0 when the series does not exist yet).
fn counter(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    match find(scrape, metric, labels).map(|s| &s.value) {
        None => 0.0,
        Some(Value::Counter(v)) => *v,
        Some(other) => panic!("{metric} {labels:?} is not a counter: {other:?}"),
    }
}

/// A histogram's observation count (its `+Inf` bucket; 0 when it does not exist yet).
fn histogram_count(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    match find(scrape, metric, labels).map(|s| &s.value) {
        None => 0.0,
        Some(Value::Histogram(buckets)) => {
            let inf = buckets
                .iter()
                .find(|b| b.less_than.is_infinite())
                .expect("a +Inf bucket");
            inf.count
        }
        Some(other) => panic!("{metric} is not a histogram: {other:?}"),
    }
}

#[test]
fn the_endpoint_serves_parsable_text_and_counts_sign_requests() {
    let addr = free_port();
    let s = Service::start_with(&format!("metrics = \"{addr}\"\n"));
    let msg = write(s.dir.path(), "m", b"counted");
    let m = msg.to_str().unwrap();
    s.ok(&["key", "create", "counted", "--alg", "ecdsa-p256"]);

    let before = scrape(addr);
    s.ok(&["key", "sign", "counted", "--in", m]);
    let out = s.cli_as(4002, 4002, &["key", "sign", "counted", "--in", m]);
    assert!(!out.status.success(), "uid 4002 may not sign root's key");
    let after = scrape(addr);

    let sign = |result| {
        [
            ("operation", "Sign"),
            ("backend", "sim"),
            ("result", result),
        ]
    };
    let total = "keywarden_requests_total";
    assert_eq!(
        counter(&after, total, &sign("ok")) - counter(&before, total, &sign("ok")),
        1.0
    );
    assert_eq!(
        counter(&after, total, &sign("denied")) - counter(&before, total, &sign("denied")),
        1.0
    );
    assert_eq!(counter(&after, total, &sign("error")), 0.0);
    assert_eq!(
        counter(
            &after,
            total,
            &[
                ("operation", "CreateKey"),
                ("backend", "sim"),
                ("result", "ok")
            ]
        ),
        1.0
    );
    let denials = [("operation", "Sign")];
    assert_eq!(
        counter(&after, "keywarden_policy_denials_total", &denials)
            - counter(&before, "keywarden_policy_denials_total", &denials),
        1.0
    );
    let latency = [("operation", "Sign"), ("backend", "sim")];
    assert_eq!(
        histogram_count(&after, "keywarden_request_duration_seconds", &latency)
            - histogram_count(&before, "keywarden_request_duration_seconds", &latency),
        2.0
    );
    // Both signing requests wrote an audit line.
    let audit = "keywarden_audit_write_seconds";
    assert!(
        histogram_count(&after, audit, &[]) >= histogram_count(&before, audit, &[]) + 2.0,
        "audit writes: before {}, after {}",
        histogram_count(&before, audit, &[]),
        histogram_count(&after, audit, &[])
    );
    let up = find(&after, "keywarden_backend_up", &[("backend", "sim")]).expect("backend_up");
    assert_eq!(up.value, Value::Gauge(1.0));

    // Anything but /metrics is not found.
    let r = http_get(addr, "/");
    assert_eq!(r.status, "HTTP/1.1 404 Not Found");
}

#[test]
fn metrics_flag_on_a_taken_address_is_a_start_up_error_naming_it() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keywarden.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\nsocket = \"{}\"\n",
            dir.path().join("data").display(),
            dir.path().join("kw.sock").display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--allow-root", "--config"])
        .arg(&config)
        .args(["--metrics", &addr.to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("metrics endpoint {addr}: cannot bind")),
        "{err}"
    );
    assert!(
        !dir.path().join("kw.sock").exists(),
        "no socket is left behind"
    );
}
