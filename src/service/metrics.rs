//! Prometheus metrics: what the service counts, and the small HTTP endpoint that serves them.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `keywarden_requests_total` | counter | `operation`, `backend`, `result` (`ok`, `denied`, `error`) |
//! | `keywarden_request_duration_seconds` | histogram | `operation`, `backend` |
//! | `keywarden_policy_denials_total` | counter | `operation` |
//! | `keywarden_audit_write_seconds` | histogram | |
//! | `keywarden_backend_up` | gauge | `backend` (1 answers, 0 does not; probed when scraped) |
//! | `keywarden_tls_refused_total` | counter | `reason` (`handshake`, `timeout`, `identity`, `limit`) |
//!
//! The endpoint is off unless `--metrics ADDR` or `metrics = "ADDR"` in the config names an
//! address. It answers `GET /metrics` in the Prometheus text format (0.0.4) and 404 elsewhere,
//! without authentication: keep it on loopback or behind something that authenticates.
//! Metrics carry operation, backend and result, never key names, callers or messages.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use super::Service;

/// The `Content-Type` of what `/metrics` serves.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// How a request ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// Answered.
    Ok,
    /// Refused by policy.
    Denied,
    /// Failed (backend, registry, state, audit, invalid request…).
    Error,
}

impl Outcome {
    /// The `result` label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Denied => "denied",
            Self::Error => "error",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: &'static str,
    backend: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    operation: &'static str,
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn request_histogram() -> Histogram {
    // 0.5 ms … 16 s: a software token answers in well under a millisecond, a network HSM or
    // a TPM in tens to hundreds.
    Histogram::new(exponential_buckets(0.000_5, 2.0, 16))
}

fn audit_histogram() -> Histogram {
    // 50 µs … 1.6 s: an appended line without fsync is microseconds, with fsync milliseconds.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// How often at most a scrape probes the backends; scrapes in between reuse the last answer,
/// so that whoever can reach the endpoint cannot keep the HSM busy.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// How long one backend probe may take before the backend counts as down.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The service's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: HistogramFamily<LatencyLabels>,
    denials: Family<OperationLabels, Counter>,
    audit_writes: Histogram,
    backend_up: Family<BackendLabels, Gauge>,
    tls_refused: Family<ReasonLabels, Counter>,
    last_probe: tokio::sync::Mutex<Option<Instant>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let durations: HistogramFamily<LatencyLabels> =
            Family::new_with_constructor(request_histogram);
        let denials = Family::<OperationLabels, Counter>::default();
        let audit_writes = audit_histogram();
        let backend_up = Family::<BackendLabels, Gauge>::default();
        let tls_refused = Family::<ReasonLabels, Counter>::default();
        // Counters get their `_total` suffix from the encoder.
        registry.register(
            "keywarden_requests",
            "Requests by operation, backend and result (ok, denied, error)",
            requests.clone(),
        );
        registry.register(
            "keywarden_request_duration_seconds",
            "Request latency by operation and backend, policy and audit included",
            durations.clone(),
        );
        registry.register(
            "keywarden_policy_denials",
            "Requests the Cedar policies denied, by operation",
            denials.clone(),
        );
        registry.register(
            "keywarden_audit_write_seconds",
            "Time to append one line to the audit log",
            audit_writes.clone(),
        );
        registry.register(
            "keywarden_backend_up",
            "1 if the backend answered its last health probe, 0 if not",
            backend_up.clone(),
        );
        registry.register(
            "keywarden_tls_refused",
            "Connections the mutual-TLS listener turned away, by reason",
            tls_refused.clone(),
        );
        Self {
            registry,
            requests,
            durations,
            denials,
            audit_writes,
            backend_up,
            tls_refused,
            last_probe: tokio::sync::Mutex::new(None),
        }
    }

    /// Counts one finished request and its latency.
    pub fn request(
        &self,
        operation: &'static str,
        backend: &str,
        outcome: Outcome,
        elapsed: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                operation,
                backend: backend.to_owned(),
                result: outcome.label(),
            })
            .inc();
        self.durations
            .get_or_create(&LatencyLabels {
                operation,
                backend: backend.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
        if outcome == Outcome::Denied {
            self.denials
                .get_or_create(&OperationLabels { operation })
                .inc();
        }
    }

    /// Counts one connection the TLS listener refused.
    pub fn tls_refused(&self, reason: &'static str) {
        self.tls_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Records the time one audit append took.
    pub fn audit_write(&self, elapsed: Duration) {
        self.audit_writes.observe(elapsed.as_secs_f64());
    }

    /// Sets a backend's health gauge.
    pub fn backend_up(&self, backend: &str, up: bool) {
        self.backend_up
            .get_or_create(&BackendLabels {
                backend: backend.to_owned(),
            })
            .set(i64::from(up));
    }

    /// The exposition text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail; an encoder error would be a bug in the encoder,
        // and a partial page is still better than none.
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
        {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        text
    }
}

/// Probes every backend (unless that was done less than [`PROBE_INTERVAL`] ago) and sets
/// `keywarden_backend_up`.
pub async fn probe_backends(service: &Service) {
    let metrics = service.metrics();
    let mut last = metrics.last_probe.lock().await;
    if last.is_some_and(|at| at.elapsed() < PROBE_INTERVAL) {
        return;
    }
    for (name, backend) in service.backends() {
        let up = tokio::time::timeout(PROBE_TIMEOUT, Service::backend_healthy(backend))
            .await
            .unwrap_or(false);
        metrics.backend_up(name, up);
    }
    *last = Some(Instant::now());
}

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("metrics endpoint {addr}: cannot bind: {reason}")]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// Why.
    pub reason: String,
}

/// Binds the metrics address (a clear error naming it if that fails).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|e| BindError {
        addr,
        reason: e.to_string(),
    })
}

/// At most this many scrapes are answered at once; further connections wait.
const MAX_CONNECTIONS: usize = 16;

/// How long a client may take to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

async fn answer(
    service: Arc<Service>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let plain = |status: StatusCode, text: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *r.status_mut() = status;
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    if request.uri().path() != "/metrics" {
        return Ok(plain(StatusCode::NOT_FOUND, "not found: try /metrics\n"));
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n");
        r.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET, HEAD"),
        );
        return Ok(r);
    }
    probe_backends(&service).await;
    let mut r = Response::new(Full::new(Bytes::from(service.metrics().encode())));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(CONTENT_TYPE),
    );
    Ok(r)
}

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub async fn serve(service: Arc<Service>, listener: TcpListener) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = Arc::clone(&service);
        tokio::spawn(async move {
            let _permit = permit;
            let handler = hyper::service::service_fn(move |req| answer(Arc::clone(&service), req));
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), handler)
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "metrics connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn sample<'a>(text: &'a str, name_and_labels: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
    }

    #[test]
    fn counts_requests_denials_audit_writes_and_backend_health() {
        let m = Metrics::new();
        m.request("Sign", "sim", Outcome::Ok, Duration::from_millis(2));
        m.request("Sign", "sim", Outcome::Ok, Duration::from_millis(3));
        m.request("Sign", "sim", Outcome::Denied, Duration::from_micros(100));
        m.request("CreateKey", "hsm", Outcome::Error, Duration::from_secs(1));
        m.audit_write(Duration::from_micros(70));
        m.backend_up("sim", true);
        m.backend_up("hsm", false);
        let text = m.encode();

        let total = "keywarden_requests_total";
        assert_eq!(
            sample(
                &text,
                &format!("{total}{{operation=\"Sign\",backend=\"sim\",result=\"ok\"}}")
            ),
            Some("2"),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                &format!("{total}{{operation=\"Sign\",backend=\"sim\",result=\"denied\"}}")
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                &format!("{total}{{operation=\"CreateKey\",backend=\"hsm\",result=\"error\"}}")
            ),
            Some("1")
        );
        assert_eq!(
            sample(&text, "keywarden_policy_denials_total{operation=\"Sign\"}"),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                "keywarden_request_duration_seconds_count{operation=\"Sign\",backend=\"sim\"}"
            ),
            Some("3")
        );
        // 100 µs, 2 ms and 3 ms: one at or below 1 ms, all three at or below 4 ms.
        assert_eq!(
            sample(
                &text,
                "keywarden_request_duration_seconds_bucket{operation=\"Sign\",backend=\"sim\",le=\"0.001\"}"
            ),
            Some("1"),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                "keywarden_request_duration_seconds_bucket{operation=\"Sign\",backend=\"sim\",le=\"0.004\"}"
            ),
            Some("3")
        );
        assert_eq!(
            sample(&text, "keywarden_audit_write_seconds_count"),
            Some("1")
        );
        assert_eq!(
            sample(&text, "keywarden_backend_up{backend=\"sim\"}"),
            Some("1")
        );
        assert_eq!(
            sample(&text, "keywarden_backend_up{backend=\"hsm\"}"),
            Some("0")
        );
        assert!(
            text.contains("# TYPE keywarden_requests_total counter"),
            "{text}"
        );
        assert!(text.contains("# TYPE keywarden_request_duration_seconds histogram"));
        assert!(text.contains("# TYPE keywarden_backend_up gauge"));
    }

    #[test]
    fn an_independent_parser_reads_every_line() {
        let m = Metrics::new();
        m.request("Verify", "sim", Outcome::Ok, Duration::from_millis(1));
        m.audit_write(Duration::from_millis(1));
        let text = m.encode();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            assert!(
                matches!(
                    prometheus_parse::LineInfo::parse(line),
                    prometheus_parse::LineInfo::Sample { .. }
                ),
                "not a sample line: {line}"
            );
        }
        let scrape =
            prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
        let verify = scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == "keywarden_requests_total"
                    && s.labels.get("operation") == Some("Verify")
            })
            .unwrap();
        assert_eq!(verify.value, prometheus_parse::Value::Counter(1.0));
    }
}
