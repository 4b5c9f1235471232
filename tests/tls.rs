//! The mutual-TLS listener: who gets in, who does not, and who Cedar sees.
//!
//! Each test makes its own PKI with rcgen (a client CA, a server certificate, client
//! certificates), starts `keywarden serve` with a `[tls]` section on a free loopback port and
//! talks to it with the CLI, the `Client` library and raw tonic/rustls clients.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::Service;
use keywarden::client::{Client, RemoteVault, TlsFiles};
use keywarden::proto::v1 as pb;
use keywarden::testing::{Ca, ExtendedKeyUsagePurpose, Leaf, Pki, SanType, write_pair};
use keywarden_vault::{Algorithm, KeySpec, Vault as _};
use p256::ecdsa::signature::Verifier as _;

const API: &str = "spiffe://example.org/payments/api";
const OTHER: &str = "spiffe://example.org/ops/other";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A service with a TLS listener (its own PKI) and the policies below.
struct Remote {
    service: Service,
    pki: Pki,
    endpoint: String,
    metrics: u16,
}

const POLICY: &str = r#"
@id("payments-api")
permit (principal == Keywarden::Client::"spiffe://example.org/payments/api", action, resource);

@id("batch-by-subject")
permit (
  principal == Keywarden::Client::"O=Example Payments,CN=batch-signer",
  action in [Keywarden::Action::"read", Keywarden::Action::"use"],
  resource
);
"#;

impl Remote {
    /// Starts a service whose TLS listener trusts a fresh client CA; `revoked` serials go on
    /// its CRL.
    fn start(revoked: &[u64]) -> Self {
        Self::start_aged(revoked, None)
    }

    /// [`Remote::start`] with connections that last at most `max_age` seconds.
    fn start_aged(revoked: &[u64], max_age: Option<u64>) -> Self {
        Self::start_tuned(revoked, max_age, None)
    }

    /// [`Remote::start_aged`], and connections closed `grace` seconds after their age.
    fn start_tuned(revoked: &[u64], max_age: Option<u64>, grace: Option<u64>) -> Self {
        let (port, metrics) = (free_port(), free_port());
        let mut pki = Pki::new(([127, 0, 0, 1], port).into(), revoked);
        if let Some(age) = max_age {
            pki.server.max_connection_age_secs = age;
        }
        if let Some(grace) = grace {
            pki.server.close_grace_secs = grace;
        }
        let policies = pki.dir.path().join("policies");
        std::fs::create_dir(&policies).unwrap();
        std::fs::write(
            policies.join("default.cedar"),
            keywarden::service::policy::DEFAULT_POLICIES,
        )
        .unwrap();
        std::fs::write(policies.join("remote.cedar"), POLICY).unwrap();
        let service = Service::start_with(&format!(
            "policy_dir = \"{}\"\nmetrics = \"127.0.0.1:{metrics}\"\n{}",
            policies.display(),
            pki.toml()
        ));
        Self {
            service,
            pki,
            endpoint: format!("https://127.0.0.1:{port}"),
            metrics,
        }
    }

    fn client_files(&self, name: &str, leaf: Leaf) -> TlsFiles {
        self.pki.client(name, &leaf)
    }

    /// Runs the CLI against the TLS endpoint (no socket in reach: a bogus one is named).
    fn cli(&self, files: &TlsFiles, args: &[&str]) -> std::process::Output {
        std::process::Command::new(common::BIN)
            .args(["--socket", "/nonexistent/keywarden.sock", "--endpoint"])
            .arg(&self.endpoint)
            .arg("--tls-ca")
            .arg(&files.ca)
            .arg("--tls-cert")
            .arg(&files.cert)
            .arg("--tls-key")
            .arg(&files.key)
            .args(args)
            .output()
            .unwrap()
    }

    fn audit(&self) -> String {
        std::fs::read_to_string(self.service.audit_log()).unwrap_or_default()
    }

    fn metric(&self, name: &str, label: &str) -> f64 {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.metrics)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
        let lines = body.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && s.labels.values().any(|v| v == label))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    }
}

fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_valid_client_is_answered_and_the_cedar_principal_is_its_spiffe_id() {
    let r = Remote::start(&[]);
    let api = r.client_files("api", Leaf::client(API, 10));
    let other = r.client_files("other", Leaf::client(OTHER, 11));

    stdout(&r.cli(&api, &["key", "create", "pay", "--alg", "ecdsa-p256"]));
    let shown: serde_json::Value =
        serde_json::from_str(&stdout(&r.cli(&api, &["--json", "key", "show", "pay"]))).unwrap();
    assert_eq!(shown["labels"]["keywarden.creator"], API, "{shown}");
    assert_eq!(
        shown["owner_uid"],
        u64::from(u32::MAX),
        "no local account owns it"
    );
    // A client cannot forge the creator tag (nor any keywarden.* label) itself.
    let out = r.cli(
        &api,
        &[
            "key",
            "create",
            "forged",
            "--alg",
            "ecdsa-p256",
            "--label",
            "keywarden.creator=spiffe://example.org/someone-else",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("reserved for the service"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Sign over TLS; verify with p256 against the public key fetched over TLS.
    let msg = r.pki.dir.path().join("msg");
    std::fs::write(&msg, b"remote signing over mutual TLS").unwrap();
    let sig = r.pki.dir.path().join("sig");
    let pem = r.pki.dir.path().join("pub.pem");
    stdout(&r.cli(
        &api,
        &["key", "public", "pay", "--out", pem.to_str().unwrap()],
    ));
    stdout(&r.cli(
        &api,
        &[
            "key",
            "sign",
            "pay",
            "--in",
            msg.to_str().unwrap(),
            "--out",
            sig.to_str().unwrap(),
        ],
    ));
    let vk = <p256::ecdsa::VerifyingKey as p256::pkcs8::DecodePublicKey>::from_public_key_pem(
        &std::fs::read_to_string(&pem).unwrap(),
    )
    .unwrap();
    let sig = p256::ecdsa::Signature::from_der(&std::fs::read(&sig).unwrap()).unwrap();
    vk.verify(b"remote signing over mutual TLS", &sig).unwrap();

    // Another valid certificate is another principal: the policy names only the first.
    let out = r.cli(
        &other,
        &["key", "sign", "pay", "--in", msg.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("permission denied") && err.contains(&format!("client {OTHER}")),
        "{err}"
    );
    let out = r.cli(&other, &["key", "create", "mine", "--alg", "ecdsa-p256"]);
    assert!(
        !out.status.success(),
        "default policies grant remote clients nothing"
    );

    // The audit log names the certificate identity, subject, issuer and fingerprint.
    let audit = r.audit();
    let lines: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let sign = lines
        .iter()
        .find(|l| l["action"] == "Sign" && l["decision"] == "allow")
        .expect("an allowed Sign line");
    assert_eq!(sign["caller"]["identity"], API, "{sign}");
    assert_eq!(sign["caller"]["issuer"], "CN=keywarden test client CA");
    assert_eq!(sign["caller"]["fingerprint"].as_str().unwrap().len(), 64);
    assert_eq!(sign["policies"], serde_json::json!(["payments-api"]));
    let denied = lines
        .iter()
        .find(|l| l["action"] == "Sign" && l["decision"] == "deny")
        .expect("a denied Sign line");
    assert_eq!(denied["caller"]["identity"], OTHER);
    assert!(
        lines.iter().all(|l| l["caller"].get("uid").is_none()),
        "no request over TLS may be taken for a local uid: {audit}"
    );
}

#[test]
fn without_a_uri_san_the_subject_dn_is_the_principal() {
    let r = Remote::start(&[]);
    let api = r.client_files("api", Leaf::client(API, 10));
    stdout(&r.cli(&api, &["key", "create", "batch", "--alg", "ecdsa-p256"]));
    let batch = r.client_files(
        "batch",
        Leaf {
            cn: Some("batch-signer".into()),
            org: Some("Example Payments".into()),
            sans: vec![SanType::DnsName("batch.example.org".try_into().unwrap())],
            usage: ExtendedKeyUsagePurpose::ClientAuth,
            serial: 12,
            expired: false,
        },
    );
    let msg = r.pki.dir.path().join("msg");
    std::fs::write(&msg, b"batch").unwrap();
    stdout(&r.cli(
        &batch,
        &["key", "sign", "batch", "--in", msg.to_str().unwrap()],
    ));
    // read and use only: the policy does not let this subject manage keys.
    let out = r.cli(&batch, &["key", "disable", "batch"]);
    assert!(!out.status.success());
    let audit = r.audit();
    let line: serde_json::Value = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l["action"] == "Sign")
        .unwrap();
    assert_eq!(
        line["caller"]["identity"],
        "O=Example Payments,CN=batch-signer"
    );
    assert_eq!(
        line["caller"]["dns_names"],
        serde_json::json!(["batch.example.org"])
    );
    assert_eq!(line["policies"], serde_json::json!(["batch-by-subject"]));
}

/// A health call through `client`, which must not be answered.
async fn refused(result: Result<Client, keywarden::client::ClientError>) -> String {
    let client = match result {
        Err(e) => return e.to_string(),
        Ok(c) => c,
    };
    match client.rpc().health(pb::HealthRequest {}).await {
        Ok(answer) => panic!("answered: {answer:?}"),
        Err(status) => format!("{status:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_certificate_another_ca_expired_revoked_or_plaintext_are_refused() {
    let r = Remote::start(&[13]);
    let valid = r.client_files("valid", Leaf::client(API, 10));

    // A valid certificate: answered (so the refusals below are about the certificates).
    let client = Client::connect_tls(&r.endpoint, &valid).await.unwrap();
    client.rpc().health(pb::HealthRequest {}).await.unwrap();

    // 1. No client certificate at all (rustls client that offers none).
    let ca = tonic::transport::Certificate::from_pem(std::fs::read(&r.pki.server_ca_pem).unwrap());
    let no_cert = async {
        let channel = tonic::transport::Endpoint::from_shared(r.endpoint.clone())
            .unwrap()
            .tls_config(tonic::transport::ClientTlsConfig::new().ca_certificate(ca))
            .unwrap()
            .connect()
            .await
            .map_err(|e| keywarden::client::ClientError::Connect {
                target: r.endpoint.clone(),
                reason: e.to_string(),
            })?;
        let rpc = pb::key_service_client::KeyServiceClient::new(channel);
        match rpc.clone().health(pb::HealthRequest {}).await {
            Ok(a) => panic!("answered without a certificate: {a:?}"),
            Err(s) => Err(keywarden::client::ClientError::Status(s)),
        }
    };
    let e: Result<Client, _> = no_cert.await;
    eprintln!("no certificate: {}", refused(e).await);

    // 2. Certificates from other CAs, with the very identity the policy permits: one CA
    //    with another name, one that copies the trusted CA's name (but not its key).
    for (name, ca_name) in [
        ("stranger", "some other CA"),
        ("impostor", "keywarden test client CA"),
    ] {
        let files = write_pair(
            r.pki.dir.path(),
            name,
            &r.pki.server_ca_pem,
            Ca::new(ca_name).issue(&Leaf::client(API, 10)),
        );
        eprintln!(
            "{name}: {}",
            refused(Client::connect_tls(&r.endpoint, &files).await).await
        );
    }

    // 3. Expired.
    let mut leaf = Leaf::client(API, 14);
    leaf.expired = true;
    let expired = r.client_files("expired", leaf);
    eprintln!(
        "expired: {}",
        refused(Client::connect_tls(&r.endpoint, &expired).await).await
    );

    // 4. Revoked (serial 13 is on the CRL).
    let revoked = r.client_files("revoked", Leaf::client(API, 13));
    eprintln!(
        "revoked: {}",
        refused(Client::connect_tls(&r.endpoint, &revoked).await).await
    );

    // 5. A server certificate used as a client certificate (no clientAuth usage).
    let mut leaf = Leaf::client(API, 15);
    leaf.usage = ExtendedKeyUsagePurpose::ServerAuth;
    let wrong_usage = r.client_files("wrong-usage", leaf);
    eprintln!(
        "serverAuth only: {}",
        refused(Client::connect_tls(&r.endpoint, &wrong_usage).await).await
    );

    // 6. Plaintext HTTP/2 to the TLS port.
    let plain = tonic::transport::Endpoint::from_shared(r.endpoint.replace("https", "http"))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plain {
        let answer = pb::key_service_client::KeyServiceClient::new(channel)
            .health(pb::HealthRequest {})
            .await;
        assert!(answer.is_err(), "plaintext answered: {answer:?}");
    }

    // 7. Two SPIFFE IDs: the certificate verifies, but names no single identity.
    let mut leaf = Leaf::client(API, 16);
    leaf.sans.push(SanType::URI(OTHER.try_into().unwrap()));
    let ambiguous = r.client_files("ambiguous", leaf);
    eprintln!(
        "two SPIFFE IDs: {}",
        refused(Client::connect_tls(&r.endpoint, &ambiguous).await).await
    );

    // The service says why, and counts each refusal.
    let log = r.service.log();
    for reason in [
        "peer sent no certificates",
        "UnknownIssuer",
        "BadSignature",
        "certificate expired",
        "Revoked",
        "does not allow extended key usage for client authentication",
        "InvalidContentType",
        "2 SPIFFE IDs; its identity would be ambiguous",
    ] {
        assert!(log.contains(reason), "no {reason:?} in the log: {log}");
    }
    let handshakes = r.metric("keywarden_tls_refused_total", "handshake");
    assert!(
        handshakes >= 7.0,
        "handshake refusals counted: {handshakes}"
    );
    // (≥: a client whose connection is dropped may try again.)
    assert!(r.metric("keywarden_tls_refused_total", "identity") >= 1.0);
    // Nothing reached the service: not one audit line, although every refused certificate
    // but one claimed the permitted identity.
    assert_eq!(r.audit(), "", "a refused client left an audit line");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_vault_over_tls_signs_and_agrees_like_a_local_one() {
    let r = Remote::start(&[]);
    let api = r.client_files("api", Leaf::client(API, 10));
    let vault = RemoteVault::new(Client::connect_tls(&r.endpoint, &api).await.unwrap())
        .await
        .unwrap();
    assert!(vault.info().name.contains(&r.endpoint));
    let signer = vault
        .generate(&KeySpec::new(Algorithm::EcdsaP256Sha256, "tls-signer").unwrap())
        .await
        .unwrap();
    let sig = vault.sign(&signer.key_ref, b"over tls").await.unwrap();
    assert!(keywarden_vault::testing::independent_verify(
        &signer.public_key,
        b"over tls",
        &sig
    ));

    let agreer = vault
        .generate(&KeySpec::new(Algorithm::EcdhP256, "tls-agreer").unwrap())
        .await
        .unwrap();
    let (peer_secret, peer_public) = keywarden_vault::testing::software_p256();
    let shared = vault.agree(&agreer.key_ref, &peer_public).await.unwrap();
    let expected = keywarden_vault::testing::software_ecdh(&peer_secret, &agreer.public_key);
    assert_eq!(shared.expose_secret(), expected.as_slice());

    // Concurrency over one TLS connection (HTTP/2 streams).
    let vault = Arc::new(vault);
    let tasks: Vec<_> = (0..16u8)
        .map(|i| {
            let (vault, key) = (Arc::clone(&vault), signer.key_ref.clone());
            tokio::spawn(async move { (i, vault.sign(&key, &[i + 1; 32]).await.unwrap()) })
        })
        .collect();
    for t in tasks {
        let (i, sig) = t.await.unwrap();
        assert!(keywarden_vault::testing::independent_verify(
            &signer.public_key,
            &[i + 1; 32],
            &sig
        ));
    }
}

#[test]
fn bad_tls_files_stop_start_up_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("ca");
    let ca_pem = dir.path().join("ca.crt");
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    let server = write_pair(dir.path(), "server", &ca_pem, ca.issue(&Leaf::server(1)));
    let other = write_pair(
        dir.path(),
        "other",
        &ca_pem,
        ca.issue(&Leaf::client(API, 2)),
    );
    let check = |cert: &Path, key: &Path, client_ca: &Path| {
        common::check_config(
            dir.path(),
            &format!(
                "[tls]\nlisten = \"127.0.0.1:1\"\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n",
                cert.display(),
                key.display(),
                client_ca.display()
            ),
        )
    };
    let (ok, err) = check(&server.cert, &server.key, &ca_pem);
    assert!(ok, "{err}");
    let missing = dir.path().join("missing.crt");
    let (ok, err) = check(&missing, &server.key, &ca_pem);
    assert!(!ok && err.contains("missing.crt"), "{err}");
    let (ok, err) = check(&server.cert, &other.key, &ca_pem);
    assert!(
        !ok && err.contains("does not belong to the certificate"),
        "{err}"
    );
    let (ok, err) = check(&server.cert, &server.key, &server.key);
    assert!(!ok && err.contains("client CA"), "{err}");
    // The key's contents never appear in an error: not when the key file is read as a CA
    // file (above: server.key as client_ca), not when a key does not match.
    let key_text = std::fs::read_to_string(&server.key).unwrap();
    let body: String = key_text.lines().nth(1).unwrap().chars().take(20).collect();
    assert!(!err.contains(&body), "{err}");
    let (_, err) = check(&server.cert, &other.key, &ca_pem);
    for key in [&server.key, &other.key] {
        let text = std::fs::read_to_string(key).unwrap();
        let body: String = text.lines().nth(1).unwrap().chars().take(20).collect();
        assert!(!err.contains(&body), "{err}");
    }
}

#[test]
fn the_cli_refuses_an_endpoint_without_its_files_or_without_https() {
    let out = std::process::Command::new(common::BIN)
        .args(["--endpoint", "https://127.0.0.1:1", "key", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-ca"));
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x");
    std::fs::write(&f, "x").unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["--endpoint", "http://127.0.0.1:1", "key", "list"])
        .args(["--tls-ca", f.to_str().unwrap()])
        .args(["--tls-cert", f.to_str().unwrap()])
        .args(["--tls-key", f.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("https://host:port"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// SIGHUP and wait for the service to log `line` (counting from `before` occurrences).
fn hup_and_wait(r: &Remote, line: &str) {
    let before = r.service.log().matches(line).count();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &r.service.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while r.service.log().matches(line).count() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "no {line:?} after SIGHUP: {}",
            r.service.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_picks_up_a_new_crl_and_a_broken_one_keeps_the_old() {
    let r = Remote::start_aged(&[], Some(2));
    let (a, b) = (
        r.client_files("a", Leaf::client(API, 20)),
        r.client_files("b", Leaf::client(API, 21)),
    );
    for files in [&a, &b] {
        let c = Client::connect_tls(&r.endpoint, files).await.unwrap();
        c.rpc().health(pb::HealthRequest {}).await.unwrap();
    }
    let connected_a = Client::connect_tls(&r.endpoint, &a).await.unwrap();
    connected_a
        .rpc()
        .health(pb::HealthRequest {})
        .await
        .unwrap();
    let b_client = Client::connect_tls(&r.endpoint, &b).await.unwrap();
    b_client.rpc().health(pb::HealthRequest {}).await.unwrap();

    // Revoke a: once reloaded, a new connection with a is refused, b still gets in.
    let crl = r.pki.server.crls[0].clone();
    std::fs::write(&crl, r.pki.client_ca.crl(&[20])).unwrap();
    hup_and_wait(&r, "TLS certificate, client CAs and CRLs reloaded");
    eprintln!(
        "revoked after reload: {}",
        refused(Client::connect_tls(&r.endpoint, &a).await).await
    );
    let c = Client::connect_tls(&r.endpoint, &b).await.unwrap();
    c.rpc().health(pb::HealthRequest {}).await.unwrap();
    // a's connection from before the reload ends at its maximum age (2 s); the client's
    // reconnection is then refused.
    // (Not merely a recycled connection: the service logs one more revoked certificate.)
    let revoked_before = r.service.log().matches("Revoked").count();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match connected_a.rpc().health(pb::HealthRequest {}).await {
            Err(_) if r.service.log().matches("Revoked").count() > revoked_before => break,
            Err(_) => {
                assert!(std::time::Instant::now() < deadline, "no refusal logged");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Ok(_) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "a revoked client's old connection still answered after 20 s"
                );
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }

    // A CRL file that does not parse: the reload fails, the last good settings stay.
    std::fs::write(
        &crl,
        "-----BEGIN X509 CRL-----\nnot base64\n-----END X509 CRL-----\n",
    )
    .unwrap();
    hup_and_wait(&r, "TLS reload failed");
    let c = Client::connect_tls(&r.endpoint, &b).await.unwrap();
    c.rpc().health(pb::HealthRequest {}).await.unwrap();
    refused(Client::connect_tls(&r.endpoint, &a).await).await;
    assert!(r.service.log().contains("Revoked"));

    // A CRL past its next update is not evidence: b is refused until a fresh one comes.
    std::fs::write(&crl, r.pki.client_ca.crl_updated(&[20], true)).unwrap();
    hup_and_wait(&r, "TLS certificate, client CAs and CRLs reloaded");
    refused(Client::connect_tls(&r.endpoint, &b).await).await;
    assert!(r.service.log().contains("CRL"), "{}", r.service.log());
    std::fs::write(&crl, r.pki.client_ca.crl(&[20])).unwrap();
    hup_and_wait(&r, "TLS certificate, client CAs and CRLs reloaded");
    let c = Client::connect_tls(&r.endpoint, &b).await.unwrap();
    c.rpc().health(pb::HealthRequest {}).await.unwrap();
    // b's long-lived client outlived several maximum ages (and a refusal) and answers again
    // (clients reconnect transparently); nothing in the service panicked on the way.
    b_client.rpc().health(pb::HealthRequest {}).await.unwrap();
    assert!(!r.service.log().contains("panicked"), "{}", r.service.log());
}

/// A client that ignores GOAWAY and keeps a request open forever (headers sent, body never)
/// cannot keep its connection, and so its once-verified certificate, past the maximum age
/// plus the grace period: the server closes it (without the hard close, tonic would wait for
/// the request's 30 s timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_ignores_goaway_is_cut_off_after_the_grace_period() {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

    let r = Remote::start_tuned(&[], Some(1), Some(1));
    let files = r.client_files("stuck", Leaf::client(API, 30));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&files.ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let chain: Vec<_> = CertificateDer::pem_file_iter(&files.cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&files.key).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let port: u16 = r.endpoint.rsplit(':').next().unwrap().parse().unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
            tcp,
        )
        .await
        .unwrap();
    let (send, connection) = h2::client::handshake(tls).await.unwrap();
    let started = std::time::Instant::now();
    let connection = tokio::spawn(connection);
    let mut send = send.ready().await.unwrap();
    let request = http::Request::post("/keywarden.v1.KeyService/Sign")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (_response, _body) = send.send_request(request, false).unwrap();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(15), connection).await;
    assert!(ended.is_ok(), "the connection was still open after 15 s");
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(1500) && took < std::time::Duration::from_secs(10),
        "closed after {took:?}; expected about 2 s (age 1 s + grace 1 s)"
    );
    assert!(!r.service.log().contains("panicked"));
}
