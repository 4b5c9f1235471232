//! The remote listener: gRPC over TCP with mutual TLS (rustls, aws-lc-rs).
//!
//! Nothing is answered without a client certificate that chains to the configured client CA,
//! is within its validity period, carries the `clientAuth` extended key usage and is not on a
//! configured CRL. The certificate's identity is the Cedar principal
//! (`Keywarden::Client::"<identity>"`):
//!
//! - its SPIFFE ID (a URI SAN `spiffe://trust-domain/path`, checked against the SPIFFE
//!   specification: no `..`, no percent-encoding, lowercase trust domain);
//! - otherwise its subject distinguished name as an RFC 4514 string (last RDN first, special
//!   characters escaped: `O=Example Payments,CN=batch-signer`).
//!
//! TLS 1.3 only (under 1.2 the client certificate travels in clear). With `crls`, every client
//! CA needs a CRL there, and a CRL past its `nextUpdate` makes its CA's clients refused until
//! a fresh one is installed (and SIGHUP sent): an out-of-date CRL is not evidence.
//!
//! The two forms cannot collide (a DN string never starts with `spiffe://`). A certificate
//! with several SPIFFE IDs, a malformed one, a name that is not a UTF-8 string, more than 32
//! SANs, or no clientAuth extended key usage is refused. Every CA in `client_ca` can vouch
//! for every identity: give the listener only CAs you trust for all of them. The identity is worked out once per connection, right after the handshake, and
//! travels with every request on that connection. Session resumption is off, so that every
//! connection is checked against the current time and CRLs.
//!
//! ```toml
//! [tls]
//! listen = "0.0.0.0:7443"
//! cert = "/etc/keywarden/tls/server.crt"        # PEM, leaf first, then intermediates
//! key = "/etc/keywarden/tls/server.key"         # PEM (PKCS#8, SEC1 or PKCS#1)
//! client_ca = "/etc/keywarden/tls/clients.crt"  # PEM bundle: the CAs that issue client certs
//! crls = ["/etc/keywarden/tls/clients.crl"]     # optional, PEM
//! handshake_timeout_secs = 10                   # optional
//! max_connection_age_secs = 600                 # optional: reconnect (and re-verify) after
//! max_connections = 1024                        # optional: more are closed at once
//! close_grace_secs = 30                         # optional: after the age, then closed
//! ```
//!
//! On SIGHUP the files are read again (a renewed certificate, a fresh CRL); new connections
//! use them, and existing ones end within `max_connection_age_secs`.

use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::{NoServerSessionStorage, ServerConfig, WebPkiClientVerifier};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

/// The default time a client has to finish the TLS handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT_SECS: u64 = 10;

/// At most this many handshakes run at once; further connections wait in the kernel's backlog.
const MAX_PENDING_HANDSHAKES: usize = 256;

/// The longest identity, subject, issuer or SAN accepted (they go into every audit line of
/// the connection).
pub const MAX_IDENTITY_LEN: usize = 1024;

/// The `[tls]` section of the configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Address to listen on, e.g. `0.0.0.0:7443`.
    pub listen: SocketAddr,
    /// The server's certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
    /// The CAs whose client certificates are accepted (PEM bundle).
    pub client_ca: PathBuf,
    /// Certificate revocation lists for client certificates (PEM).
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    /// Seconds a client has to complete the handshake.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_secs: u64,
    /// Seconds after which a connection is closed (gracefully; clients reconnect), so that a
    /// certificate revoked or expired since its handshake is refused within this time.
    #[serde(default = "default_max_connection_age")]
    pub max_connection_age_secs: u64,
    /// Connections open at once; a connection beyond it is closed at once (and counted as
    /// refused, reason `limit`), so that clients cannot exhaust the service's descriptors.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds a connection past its maximum age gets for its last requests before it is
    /// closed whatever it is doing.
    #[serde(default = "default_close_grace")]
    pub close_grace_secs: u64,
}

fn default_close_grace() -> u64 {
    CLOSE_GRACE_SECS
}

fn default_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}

/// The default [`TlsConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

fn default_handshake_timeout() -> u64 {
    DEFAULT_HANDSHAKE_TIMEOUT_SECS
}

fn default_max_connection_age() -> u64 {
    DEFAULT_MAX_CONNECTION_AGE_SECS
}

/// The default [`TlsConfig::max_connection_age_secs`].
pub const DEFAULT_MAX_CONNECTION_AGE_SECS: u64 = 600;

/// Errors setting up the listener, each naming the file or address at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate, key or CRL file is missing or unusable.
    #[error("TLS {what} {}: {reason}", path.display())]
    File {
        /// Which file (`certificate`, `private key`, `client CA`, `CRL`).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The pieces do not make a TLS configuration (for example, key and certificate differ).
    #[error("TLS configuration: {0}")]
    Config(String),
    /// The address could not be bound.
    #[error("TLS listener {addr}: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// A caller on the TLS listener, as its verified certificate describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RemoteCaller {
    /// The Cedar principal's id: the SPIFFE ID, else the subject DN (RFC 4514).
    pub identity: String,
    /// The subject distinguished name (may be empty when a URI SAN is the identity).
    pub subject: String,
    /// The issuer distinguished name.
    pub issuer: String,
    /// Every URI SAN.
    pub uris: Vec<String>,
    /// Every DNS SAN.
    pub dns_names: Vec<String>,
    /// SHA-256 of the certificate (DER), hex.
    pub fingerprint: String,
    /// The peer's address.
    pub address: String,
}

/// Reads the files and builds the rustls server configuration. Also what `serve
/// --check-config` runs, so a bad file stops start-up rather than the first client.
pub fn server_config(config: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = read_certs(&config.cert, "certificate")?;
    let key = read_key(&config.key)?;
    let roots = read_roots(&config.client_ca)?;
    let mut crls = Vec::new();
    for path in &config.crls {
        crls.extend(read_crls(path)?);
    }
    check_key_matches(&provider, chain.clone(), key.clone_key(), config)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .with_crls(crls)
        // A CRL past its nextUpdate is no longer evidence: refuse rather than trust it forever.
        .enforce_revocation_expiration()
        // Do not tell unauthenticated peers which CAs we trust.
        .clear_root_hint_subjects()
        .build()
        .map_err(|e| TlsError::Config(format!("client certificate verifier: {e}")))?;
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        // TLS 1.3 only: under 1.2 the client certificate, and so its identity, travels in clear.
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(format!("server certificate and key: {e}")))?;
    // Every connection gets a full handshake: a resumed session would skip the expiry and
    // CRL checks of the client certificate.
    server.session_storage = Arc::new(NoServerSessionStorage {});
    server.send_tls13_tickets = 0;
    server.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(server))
}

fn check_key_matches(
    provider: &CryptoProvider,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    config: &TlsConfig,
) -> Result<(), TlsError> {
    let mismatch = |e: rustls::Error| {
        TlsError::Config(match e {
            rustls::Error::InconsistentKeys(_) => format!(
                "the key in {} does not belong to the certificate in {}",
                config.key.display(),
                config.cert.display()
            ),
            e => format!(
                "{} and {}: {e}",
                config.cert.display(),
                config.key.display()
            ),
        })
    };
    rustls::sign::CertifiedKey::from_der(chain, key, provider)
        .map_err(mismatch)?
        .keys_match()
        .map_err(mismatch)
}

fn file_error(what: &'static str, path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        what,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(what, path, e))?;
    if certs.is_empty() {
        return Err(file_error(
            what,
            path,
            "no PEM CERTIFICATE block in the file",
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    crate::service::config::warn_if_shared(path, "TLS private key");
    // The parser's error never contains key material.
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error("private key", path, e))
}

fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path, "client CA")? {
        roots
            .add(cert)
            .map_err(|e| file_error("client CA", path, e))?;
    }
    Ok(roots)
}

fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let crls = CertificateRevocationListDer::pem_file_iter(path)
        .map_err(|e| file_error("CRL", path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error("CRL", path, e))?;
    if crls.is_empty() {
        return Err(file_error("CRL", path, "no PEM X509 CRL block in the file"));
    }
    Ok(crls)
}

/// Most subject alternative names a client certificate may carry.
const MAX_SANS: usize = 32;

/// Works out who a verified leaf certificate names (see the module documentation).
pub fn identify(leaf: &[u8], address: SocketAddr) -> Result<RemoteCaller, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| format!("client certificate does not parse: {e}"))?;
    // webpki accepts a certificate without any EKU extension for client authentication; a
    // certificate made for something else is not a client certificate here.
    let client_auth = cert
        .extended_key_usage()
        .map_err(|e| format!("client certificate extendedKeyUsage: {e}"))?
        .is_some_and(|eku| eku.value.client_auth);
    if !client_auth {
        return Err("client certificate does not have the clientAuth extended key usage".into());
    }
    let mut uris = Vec::new();
    let mut dns_names = Vec::new();
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("client certificate subjectAltName: {e}"))?;
    if let Some(san) = san {
        if san.value.general_names.len() > MAX_SANS {
            return Err(format!(
                "client certificate has more than {MAX_SANS} subject alternative names"
            ));
        }
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) => uris.push(checked_text("URI SAN", u)?),
                GeneralName::DNSName(d) => dns_names.push(checked_text("DNS SAN", d)?),
                _ => {}
            }
        }
    }
    let subject = checked_text("subject", &dn_string(cert.subject())?)?;
    let issuer = checked_text("issuer", &dn_string(cert.issuer())?)?;
    let spiffe: Vec<&String> = uris
        .iter()
        .filter(|u| {
            u.split_once(':')
                .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("spiffe"))
        })
        .collect();
    let identity = match spiffe.as_slice() {
        [one] => {
            check_spiffe_id(one)?;
            (*one).clone()
        }
        [] if !subject.is_empty() => subject.clone(),
        [] => return Err("client certificate has neither a SPIFFE ID nor a subject".into()),
        many => {
            return Err(format!(
                "client certificate has {} SPIFFE IDs; its identity would be ambiguous",
                many.len()
            ));
        }
    };
    Ok(RemoteCaller {
        identity,
        subject,
        issuer,
        uris,
        dns_names,
        fingerprint: hex::encode(Sha256::digest(leaf)),
        address: address.to_string(),
    })
}

/// `text`, if it is short and has no control or invisible formatting characters (it goes
/// into Cedar and into every audit line of the connection).
fn checked_text(what: &str, text: &str) -> Result<String, String> {
    let invisible = |c: char| {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
    };
    if text.len() > MAX_IDENTITY_LEN || text.chars().any(invisible) {
        return Err(format!(
            "client certificate {what} is longer than {MAX_IDENTITY_LEN} bytes or has control \
             or invisible characters"
        ));
    }
    Ok(text.to_owned())
}

/// A SPIFFE ID as the SPIFFE specification defines it: `spiffe://<trust domain>[/<path>]`,
/// trust domain of lowercase letters, digits, `.`, `-`, `_`; path segments of letters, digits,
/// `.`, `-`, `_`, none empty, `.` or `..`. Nothing percent-encoded, no query, fragment,
/// user or port: one string per workload, so policies can compare and match it safely.
pub fn check_spiffe_id(id: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("client certificate SPIFFE ID {id:?}: {why}"));
    let Some(rest) = id.strip_prefix("spiffe://") else {
        return bad("must start with spiffe:// (lowercase)");
    };
    if id.len() > 2048 {
        return bad("longer than 2048 bytes");
    }
    let (domain, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if domain.is_empty()
        || !domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
    {
        return bad("the trust domain must be lowercase letters, digits, '.', '-' or '_'");
    }
    if path.is_empty() {
        return Ok(());
    }
    for segment in path[1..].split('/') {
        let allowed = segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
        if segment.is_empty() || segment == "." || segment == ".." || !allowed {
            return bad(
                "path segments must be non-empty letters, digits, '.', '-' or '_' (not . or ..)",
            );
        }
    }
    Ok(())
}

/// A distinguished name as an RFC 4514 string: the last RDN first, attribute types by their
/// RFC 4514 names (others as dotted OIDs), multi-valued RDNs joined by `+`, and the special
/// characters of values escaped, so that two different names never give one string. A value
/// that is not a UTF-8-decodable string type is refused rather than shown some other way.
pub fn dn_string(name: &x509_parser::x509::X509Name<'_>) -> Result<String, String> {
    let mut rdns = Vec::new();
    for rdn in name.iter_rdn() {
        let mut parts = Vec::new();
        for atv in rdn.iter() {
            let oid = atv.attr_type().to_id_string();
            let ty = match oid.as_str() {
                "2.5.4.3" => "CN",
                "2.5.4.7" => "L",
                "2.5.4.8" => "ST",
                "2.5.4.10" => "O",
                "2.5.4.11" => "OU",
                "2.5.4.6" => "C",
                "2.5.4.9" => "STREET",
                "0.9.2342.19200300.100.1.25" => "DC",
                "0.9.2342.19200300.100.1.1" => "UID",
                other => other,
            };
            let value = atv.as_str().map_err(|_| {
                format!("a name attribute ({ty}) is not a UTF-8 string; refusing to guess")
            })?;
            parts.push(format!("{ty}={}", escape_dn_value(value)));
        }
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    Ok(rdns.join(","))
}

/// RFC 4514 section 2.4 escaping of an attribute value.
fn escape_dn_value(value: &str) -> String {
    let last = value.chars().count().saturating_sub(1);
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' | ' ' if i == 0 => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// The listener's TLS settings, replaceable while it serves: on SIGHUP the service re-reads
/// the certificate, key, client CA and CRLs, and new connections use them (a renewed
/// certificate, a fresh CRL). If the files do not make a valid configuration, the previous
/// one stays in force.
#[derive(Debug)]
pub struct Reloadable {
    config: TlsConfig,
    current: tokio::sync::watch::Sender<Arc<ServerConfig>>,
}

impl Reloadable {
    /// Reads the files once.
    pub fn new(config: &TlsConfig) -> Result<Self, TlsError> {
        let (current, _) = tokio::sync::watch::channel(server_config(config)?);
        Ok(Self {
            config: config.clone(),
            current,
        })
    }

    /// Re-reads the files; on error the previous configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = server_config(&self.config)?;
        self.current.send_replace(fresh);
        Ok(())
    }

    /// The settings as they change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<ServerConfig>> {
        self.current.subscribe()
    }

    /// The configuration this was made from.
    pub fn config(&self) -> &TlsConfig {
        &self.config
    }
}

/// Binds the listener's address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, TlsError> {
    TcpListener::bind(addr).await.map_err(|e| TlsError::Bind {
        addr,
        reason: e.to_string(),
    })
}

/// What a request on a TLS connection carries in its extensions: the verified caller.
#[derive(Clone, Debug)]
pub struct TlsPeer(pub Arc<RemoteCaller>);

/// One accepted, verified, identified connection.
#[derive(Debug)]
pub struct TlsConnection {
    stream: TlsStream<TcpStream>,
    peer: TlsPeer,
    /// When the connection is closed whatever it is doing: its maximum age (at which the
    /// server already asked the client to go away) plus a grace period.
    close_at: Pin<Box<tokio::time::Sleep>>,
    /// This connection's place under [`TlsConfig::max_connections`], freed when it closes.
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Connected for TlsConnection {
    type ConnectInfo = TlsPeer;

    fn connect_info(&self) -> TlsPeer {
        self.peer.clone()
    }
}

impl TlsConnection {
    fn expired(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        // The server always has a read pending on a live connection, so polling the deadline
        // here is enough for it to wake the connection when it passes.
        match self.close_at.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "maximum connection age and grace period passed",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.expired(cx)?;
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.expired(cx)?;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.expired(cx)?;
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Handshakes in flight from one address at most.
const MAX_PENDING_HANDSHAKES_PER_IP: usize = 16;

/// One address's place among the handshakes in flight; given back when dropped.
struct PerIp {
    counts: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    ip: std::net::IpAddr,
}

impl PerIp {
    fn take(
        counts: &Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
        ip: std::net::IpAddr,
    ) -> Option<Self> {
        let mut map = counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= MAX_PENDING_HANDSHAKES_PER_IP {
            return None;
        }
        *n += 1;
        Some(Self {
            counts: Arc::clone(counts),
            ip,
        })
    }
}

impl Drop for PerIp {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Refusals need no certificate, so their log lines are rationed: at most
/// [`REFUSAL_LOG_LINES_PER_SECOND`] a second, then one line saying how many went unlogged (the
/// metric counts every one).
#[derive(Debug, Default)]
struct RefusalLog {
    /// (second, lines logged in it, lines not logged).
    window: std::sync::Mutex<(u64, u32, u64)>,
}

/// See [`RefusalLog`].
const REFUSAL_LOG_LINES_PER_SECOND: u32 = 20;

impl RefusalLog {
    fn refused(&self, peer: SocketAddr, reason: &str) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if w.0 != now {
            if w.2 > 0 {
                tracing::info!(
                    unlogged = w.2,
                    "more TLS clients refused than logged in the last second"
                );
            }
            *w = (now, 0, 0);
        }
        if w.1 < REFUSAL_LOG_LINES_PER_SECOND {
            w.1 += 1;
            tracing::info!(peer = %peer, reason = %reason, "TLS client refused");
        } else {
            w.2 += 1;
        }
    }
}

/// Why a connection was turned away (the `reason` label of `keywarden_tls_refused_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The handshake failed: no certificate, unknown CA, expired, revoked, not TLS…
    Handshake,
    /// The client did not finish the handshake in time.
    Timeout,
    /// The certificate verified but names no usable identity.
    Identity,
    /// [`TlsConfig::max_connections`] connections were already open, or too many handshakes
    /// were in flight (in all, or from the client's address).
    Limit,
}

impl Refusal {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Handshake => "handshake",
            Self::Timeout => "timeout",
            Self::Identity => "identity",
            Self::Limit => "limit",
        }
    }
}

/// The default [`TlsConfig::close_grace_secs`].
pub const CLOSE_GRACE_SECS: u64 = 30;

/// Bounds on the listener's work.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Time a client has to finish its handshake.
    pub handshake_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// Time after which a connection is closed whatever it is doing.
    pub close_after: Duration,
}

impl Limits {
    /// The limits a configuration sets.
    pub fn of(config: &TlsConfig) -> Self {
        Self {
            handshake_timeout: Duration::from_secs(config.handshake_timeout_secs),
            max_connections: config.max_connections,
            close_after: Duration::from_secs(
                config
                    .max_connection_age_secs
                    .saturating_add(config.close_grace_secs),
            ),
        }
    }
}

/// Accepts connections on `listener`, runs each handshake on its own task (so a slow client
/// holds up nobody) and yields the connections that verified and named an identity. Refusals
/// are logged and reported to `refused`. Stops when the returned stream is dropped.
pub fn incoming(
    listener: TcpListener,
    configs: tokio::sync::watch::Receiver<Arc<ServerConfig>>,
    limits: Limits,
    refused: Arc<dyn Fn(Refusal) + Send + Sync>,
) -> ReceiverStream<io::Result<TlsConnection>> {
    let Limits {
        handshake_timeout,
        max_connections,
        close_after,
    } = limits;
    let (tx, rx) = mpsc::channel(64);
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    let open = Arc::new(Semaphore::new(max_connections.max(1)));
    let per_ip = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let log = Arc::new(RefusalLog::default());
    tokio::spawn(async move {
        loop {
            let (tcp, address) = tokio::select! {
                () = tx.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "TLS listener: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            // Handshakes in flight are bounded globally and per source address, and a
            // connection over either bound is closed at once: accepting never stops, so peers
            // that open connections and say nothing cannot starve the others.
            let (Ok(permit), Some(per_ip)) = (
                Arc::clone(&pending).try_acquire_owned(),
                PerIp::take(&per_ip, address.ip()),
            ) else {
                log.refused(address, "too many handshakes in flight");
                refused(Refusal::Limit);
                continue;
            };
            let Ok(slot) = Arc::clone(&open).try_acquire_owned() else {
                log.refused(address, "connection limit reached");
                refused(Refusal::Limit);
                continue;
            };
            // The settings in force when the connection arrived (SIGHUP may replace them).
            let acceptor = TlsAcceptor::from(Arc::clone(&configs.borrow()));
            let (tx, refused, log) = (tx.clone(), Arc::clone(&refused), Arc::clone(&log));
            tokio::spawn(async move {
                let _permit = permit;
                let _per_ip = per_ip;
                let _ = tcp.set_nodelay(true);
                let refuse = |why: Refusal, reason: String| {
                    log.refused(address, &reason);
                    refused(why);
                };
                let stream =
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => return refuse(Refusal::Handshake, e.to_string()),
                        Err(_) => {
                            return refuse(
                                Refusal::Timeout,
                                format!("no handshake within {}s", handshake_timeout.as_secs()),
                            );
                        }
                    };
                let leaf = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first());
                // The verifier requires a certificate, so a completed handshake has one.
                let Some(leaf) = leaf else {
                    return refuse(Refusal::Handshake, "no client certificate".into());
                };
                match identify(leaf, address) {
                    Ok(caller) => {
                        tracing::debug!(peer = %address, identity = %caller.identity, "TLS client accepted");
                        let conn = TlsConnection {
                            stream,
                            peer: TlsPeer(Arc::new(caller)),
                            close_at: Box::pin(tokio::time::sleep(close_after)),
                            _slot: slot,
                        };
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Err(reason) => refuse(Refusal::Identity, reason),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    /// A client certificate: subject `CN=<cn>` then `O=Example` (DER order), these SANs.
    fn cert(cn: Option<&str>, sans: Vec<SanType>) -> Vec<u8> {
        cert_with(
            cn.map(|cn| {
                vec![
                    (DnType::CommonName, cn.into()),
                    (DnType::OrganizationName, "Example".into()),
                ]
            })
            .unwrap_or_default(),
            sans,
            true,
        )
    }

    fn cert_with(
        name: Vec<(DnType, rcgen::DnValue)>,
        sans: Vec<SanType>,
        client_auth: bool,
    ) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (ty, value) in name {
            params.distinguished_name.push(ty, value);
        }
        params.subject_alt_names = sans;
        if client_auth {
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        }
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn uri(u: &str) -> SanType {
        SanType::URI(u.try_into().unwrap())
    }

    fn addr() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    #[test]
    fn the_spiffe_id_is_the_identity() {
        let der = cert(
            Some("w"),
            vec![
                uri("https://example.org/docs"),
                uri("spiffe://example.org/a"),
            ],
        );
        let c = identify(&der, addr()).unwrap();
        assert_eq!(c.identity, "spiffe://example.org/a");
        assert_eq!(c.subject, "O=Example,CN=w", "RFC 4514: last RDN first");
        assert_eq!(c.uris.len(), 2);
        assert_eq!(c.fingerprint, hex::encode(Sha256::digest(&der)));
        assert_eq!(c.address, "127.0.0.1:5000");
    }

    #[test]
    fn without_a_spiffe_id_the_rfc4514_subject_is_the_identity() {
        let der = cert(
            Some("batch"),
            vec![
                SanType::DnsName("b.example.org".try_into().unwrap()),
                uri("https://not-an-identity.example"),
            ],
        );
        let c = identify(&der, addr()).unwrap();
        assert_eq!(c.identity, "O=Example,CN=batch");
        assert_eq!(c.dns_names, vec!["b.example.org".to_string()]);
    }

    #[test]
    fn names_that_print_alike_give_different_identities() {
        // One CN holding ", O=Example" against two RDNs; "+" inside a value against a
        // multi-valued RDN can only be told apart by escaping.
        let tricky = cert_with(
            vec![(DnType::CommonName, "batch,O=Example".into())],
            vec![],
            true,
        );
        let plain = cert(Some("batch"), vec![]);
        let (a, b) = (
            identify(&tricky, addr()).unwrap().identity,
            identify(&plain, addr()).unwrap().identity,
        );
        assert_eq!(a, "CN=batch\\,O=Example");
        assert_ne!(a, b);
        let spaced = cert_with(
            vec![(DnType::CommonName, " #lead+trail ".into())],
            vec![],
            true,
        );
        assert_eq!(
            identify(&spaced, addr()).unwrap().identity,
            "CN=\\ #lead\\+trail\\ "
        );
    }

    #[test]
    fn ambiguous_malformed_or_empty_identities_are_refused() {
        let refused = |der: Vec<u8>, why: &str| {
            let e = identify(&der, addr()).unwrap_err();
            assert!(e.contains(why), "{e}");
        };
        refused(
            cert(Some("w"), vec![uri("spiffe://a/x"), uri("spiffe://a/y")]),
            "2 SPIFFE IDs",
        );
        refused(
            cert_with(
                vec![],
                vec![SanType::DnsName("only-dns.example".try_into().unwrap())],
                true,
            ),
            "neither a SPIFFE ID nor a subject",
        );
        for bad in [
            "spiffe://example.org/payments/../admin",
            "spiffe://example.org/payments/%61dmin",
            "spiffe://example.org//x",
            "spiffe://Example.org/x",
            "spiffe://example.org/x?y",
            "spiffe://example.org:443/x",
            "SPIFFE://example.org/x",
            "spiffe:///x",
        ] {
            refused(cert(Some("w"), vec![uri(bad)]), "SPIFFE ID");
        }
        refused(
            cert(Some("w"), vec![uri("spiffe://example.org/x\n")]),
            "control or invisible",
        );
        refused(
            cert(Some("w\u{202e}gpj.exe"), vec![]),
            "control or invisible",
        );
        refused(
            cert_with(
                vec![(
                    DnType::CommonName,
                    rcgen::DnValue::TeletexString(
                        rcgen::string::TeletexString::try_from("Jose").unwrap(),
                    ),
                )],
                vec![],
                true,
            ),
            "not a UTF-8 string",
        );
        refused(
            cert_with(
                vec![(DnType::CommonName, "w".into())],
                vec![uri("spiffe://example.org/w")],
                false,
            ),
            "clientAuth",
        );
        refused(
            cert(
                Some("w"),
                (0..33)
                    .map(|i| SanType::DnsName(format!("h{i}.example").try_into().unwrap()))
                    .collect(),
            ),
            "more than 32",
        );
        assert!(identify(b"not a certificate", addr()).is_err());
    }

    type Listening = (
        tempfile::TempDir,
        SocketAddr,
        mpsc::UnboundedReceiver<Refusal>,
        ReceiverStream<io::Result<TlsConnection>>,
    );

    /// A listener with a throw-away certificate and `max_connections`; refusals arrive on the
    /// returned channel.
    async fn listening(max_connections: usize) -> Listening {
        let pki = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let (c, k) = (pki.path().join("c.pem"), pki.path().join("k.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        let config = TlsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert: c.clone(),
            key: k,
            client_ca: c,
            crls: vec![],
            handshake_timeout_secs: 1,
            max_connection_age_secs: DEFAULT_MAX_CONNECTION_AGE_SECS,
            max_connections,
            close_grace_secs: CLOSE_GRACE_SECS,
        };
        let server = Reloadable::new(&config).unwrap();
        let listener = bind(config.listen).await.unwrap();
        let at = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let incoming = incoming(
            listener,
            server.subscribe(),
            Limits {
                handshake_timeout: Duration::from_millis(200),
                max_connections,
                close_after: Duration::from_secs(60),
            },
            Arc::new(move |why| {
                let _ = tx.send(why);
            }),
        );
        (pki, at, rx, incoming)
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_the_handshake_is_dropped_at_the_timeout() {
        let (_pki, at, mut rx, _incoming) = listening(1).await;
        let started = std::time::Instant::now();
        let _silent = TcpStream::connect(at).await.unwrap();
        // The first holds the only slot (even before its handshake): the second is turned
        // away at once.
        let _second = TcpStream::connect(at).await.unwrap();
        assert_eq!(rx.recv().await, Some(Refusal::Limit));
        assert!(started.elapsed() < Duration::from_millis(200));
        assert_eq!(rx.recv().await, Some(Refusal::Timeout));
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn one_address_cannot_hold_more_than_its_share_of_pending_handshakes() {
        let (_pki, at, mut rx, _incoming) = listening(1000).await;
        let mut silent = Vec::new();
        for _ in 0..MAX_PENDING_HANDSHAKES_PER_IP {
            silent.push(TcpStream::connect(at).await.unwrap());
        }
        let started = std::time::Instant::now();
        let _one_more = TcpStream::connect(at).await.unwrap();
        assert_eq!(rx.recv().await, Some(Refusal::Limit));
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "refused at once"
        );
        // Then the silent ones time out and the address's share is free again.
        for _ in 0..MAX_PENDING_HANDSHAKES_PER_IP {
            assert_eq!(rx.recv().await, Some(Refusal::Timeout));
        }
        drop(silent);
        let _again = TcpStream::connect(at).await.unwrap();
        assert_eq!(
            rx.recv().await,
            Some(Refusal::Timeout),
            "accepted, then timed out"
        );
    }
}
