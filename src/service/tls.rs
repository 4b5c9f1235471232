//! The remote listener: gRPC over TCP with mutual TLS (rustls, aws-lc-rs).
//!
//! Nothing is answered without a client certificate that chains to the configured client CA,
//! is within its validity period, carries the `clientAuth` extended key usage and is not on a
//! configured CRL. The certificate's identity is the Cedar principal
//! (`Keywarden::Client::"<identity>"`):
//!
//! - its URI subject alternative name, if it has exactly one (a SPIFFE ID such as
//!   `spiffe://example.org/payments`);
//! - otherwise its subject distinguished name in RFC 4514 order (`CN=…, O=…`).
//!
//! A certificate with several URI SANs is refused: keywarden will not choose between
//! identities. The identity is worked out once per connection, right after the handshake, and
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
//! ```
//!
//! On SIGHUP the files are read again (a renewed certificate, a fresh CRL); new connections
//! use them, and existing ones end within `max_connection_age_secs`.

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

/// The longest identity accepted (it is written into every audit line of the connection).
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
    /// The Cedar principal's id: the single URI SAN, else the subject DN.
    pub identity: String,
    /// The subject distinguished name (may be empty when a URI SAN is the identity).
    pub subject: String,
    /// The issuer distinguished name.
    pub issuer: String,
    /// Every URI SAN (zero or one: several are refused).
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
        .build()
        .map_err(|e| TlsError::Config(format!("client certificate verifier: {e}")))?;
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
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
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "the TLS private key is readable by group or others; chmod 600 it"
            );
        }
    }
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

/// Works out who a verified leaf certificate names (see the module documentation).
pub fn identify(leaf: &[u8], address: SocketAddr) -> Result<RemoteCaller, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| format!("client certificate does not parse: {e}"))?;
    let mut uris = Vec::new();
    let mut dns_names = Vec::new();
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("client certificate subjectAltName: {e}"))?;
    if let Some(san) = san {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) => uris.push((*u).to_owned()),
                GeneralName::DNSName(d) => dns_names.push((*d).to_owned()),
                _ => {}
            }
        }
    }
    let subject = cert.subject().to_string();
    let identity = match uris.as_slice() {
        [uri] => uri.clone(),
        [] if !subject.is_empty() => subject.clone(),
        [] => return Err("client certificate has neither a URI SAN nor a subject".into()),
        many => {
            return Err(format!(
                "client certificate has {} URI SANs; its identity would be ambiguous",
                many.len()
            ));
        }
    };
    if identity.len() > MAX_IDENTITY_LEN || identity.chars().any(char::is_control) {
        return Err(format!(
            "client certificate identity is longer than {MAX_IDENTITY_LEN} bytes or has control characters"
        ));
    }
    Ok(RemoteCaller {
        identity,
        subject,
        issuer: cert.issuer().to_string(),
        uris,
        dns_names,
        fingerprint: hex::encode(Sha256::digest(leaf)),
        address: address.to_string(),
    })
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
    /// This connection's place under [`TlsConfig::max_connections`], freed when it closes.
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Connected for TlsConnection {
    type ConnectInfo = TlsPeer;

    fn connect_info(&self) -> TlsPeer {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
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
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
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
    /// [`TlsConfig::max_connections`] connections were already open.
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

/// Bounds on the listener's work.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Time a client has to finish its handshake.
    pub handshake_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

impl Limits {
    /// The limits a configuration sets.
    pub fn of(config: &TlsConfig) -> Self {
        Self {
            handshake_timeout: Duration::from_secs(config.handshake_timeout_secs),
            max_connections: config.max_connections,
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
    } = limits;
    let (tx, rx) = mpsc::channel(64);
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    let open = Arc::new(Semaphore::new(max_connections.max(1)));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = Arc::clone(&pending).acquire_owned().await else {
                return;
            };
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
            let Ok(slot) = Arc::clone(&open).try_acquire_owned() else {
                tracing::warn!(peer = %address, max_connections, "TLS client refused: connection limit reached");
                refused(Refusal::Limit);
                continue;
            };
            // The settings in force when the connection arrived (SIGHUP may replace them).
            let acceptor = TlsAcceptor::from(Arc::clone(&configs.borrow()));
            let (tx, refused) = (tx.clone(), Arc::clone(&refused));
            tokio::spawn(async move {
                let _permit = permit;
                let _ = tcp.set_nodelay(true);
                let refuse = |why: Refusal, reason: String| {
                    tracing::info!(peer = %address, reason = %reason, "TLS client refused");
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

    fn cert(cn: Option<&str>, sans: Vec<SanType>) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
            params
                .distinguished_name
                .push(DnType::OrganizationName, "Example");
        }
        params.subject_alt_names = sans;
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
    fn the_single_uri_san_is_the_identity() {
        let der = cert(Some("w"), vec![uri("spiffe://example.org/a")]);
        let c = identify(&der, addr()).unwrap();
        assert_eq!(c.identity, "spiffe://example.org/a");
        assert_eq!(c.subject, "CN=w, O=Example");
        assert_eq!(c.uris, vec!["spiffe://example.org/a".to_string()]);
        assert_eq!(c.fingerprint, hex::encode(Sha256::digest(&der)));
        assert_eq!(c.address, "127.0.0.1:5000");
    }

    #[test]
    fn without_a_uri_san_the_subject_is_the_identity() {
        let der = cert(
            Some("batch"),
            vec![SanType::DnsName("b.example.org".try_into().unwrap())],
        );
        let c = identify(&der, addr()).unwrap();
        assert_eq!(c.identity, "CN=batch, O=Example");
        assert_eq!(c.dns_names, vec!["b.example.org".to_string()]);
    }

    #[test]
    fn ambiguous_or_empty_identities_are_refused() {
        let two = cert(Some("w"), vec![uri("spiffe://a/x"), uri("spiffe://a/y")]);
        assert!(identify(&two, addr()).unwrap_err().contains("2 URI SANs"));
        let none = cert(
            None,
            vec![SanType::DnsName("only-dns.example".try_into().unwrap())],
        );
        assert!(
            identify(&none, addr())
                .unwrap_err()
                .contains("neither a URI SAN nor a subject")
        );
        let control = cert(Some("w"), vec![uri("spiffe://a/x%0A")]);
        assert!(
            identify(&control, addr()).is_ok(),
            "percent-encoding is not a control"
        );
        assert!(identify(b"not a certificate", addr()).is_err());
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_the_handshake_is_dropped_at_the_timeout() {
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
            max_connections: 1,
        };
        let server = Reloadable::new(&config).unwrap();
        let listener = bind(config.listen).await.unwrap();
        let at = listener.local_addr().unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _incoming = incoming(
            listener,
            server.subscribe(),
            Limits {
                handshake_timeout: Duration::from_millis(200),
                max_connections: 1,
            },
            Arc::new(move |why| {
                let _ = tx.send(why);
            }),
        );
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
}
