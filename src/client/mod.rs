//! Talking to a running key service: [`Client`] for the whole API, [`RemoteVault`] for the
//! [`Vault`](keywarden_vault::Vault) trait over it.

mod remote;

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};

use crate::proto::v1::key_service_client::KeyServiceClient;
use crate::service::api::MAX_REQUEST_BYTES;

pub use remote::RemoteVault;

/// Client errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The service could not be reached.
    #[error("cannot reach the keywarden service at {target}: {reason}")]
    Connect {
        /// The socket path or endpoint URL.
        target: String,
        /// Why.
        reason: String,
    },
    /// A TLS file (CA, certificate, key) is missing or unusable.
    #[error("TLS {what} {}: {reason}", path.display())]
    TlsFile {
        /// Which file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The service answered with an error.
    #[error("{}", .0.message())]
    Status(#[from] tonic::Status),
}

/// The files a client needs for the mutual-TLS listener.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The CA (PEM) that issued the service's certificate.
    pub ca: PathBuf,
    /// This client's certificate chain (PEM).
    pub cert: PathBuf,
    /// This client's private key (PEM). Read when connecting; never logged.
    pub key: PathBuf,
}

/// Where a client finds the service.
#[derive(Clone, Debug)]
pub enum Target {
    /// The Unix socket (local callers, identified by the kernel).
    Socket(PathBuf),
    /// The mutual-TLS listener, `https://host:port`.
    Tls {
        /// The endpoint URL.
        endpoint: String,
        /// CA, client certificate and key.
        files: TlsFiles,
    },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Socket(p) => write!(f, "{}", p.display()),
            Self::Tls { endpoint, .. } => f.write_str(endpoint),
        }
    }
}

/// How long establishing a TLS connection may take.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A connection to the service.
#[derive(Clone, Debug)]
pub struct Client {
    rpc: KeyServiceClient<Channel>,
    target: String,
}

/// Every cause of an error on one line: tonic's transport errors say little on their own.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

impl Client {
    fn new(channel: Channel, target: String) -> Self {
        Self {
            rpc: KeyServiceClient::new(channel)
                .max_decoding_message_size(MAX_REQUEST_BYTES)
                .max_encoding_message_size(MAX_REQUEST_BYTES),
            target,
        }
    }

    /// Connects to `target`.
    pub async fn connect_to(target: &Target) -> Result<Self, ClientError> {
        match target {
            Target::Socket(path) => Self::connect(path).await,
            Target::Tls { endpoint, files } => Self::connect_tls(endpoint, files).await,
        }
    }

    /// Connects to the service's Unix socket.
    pub async fn connect(socket: &Path) -> Result<Self, ClientError> {
        let fail = |reason: String| ClientError::Connect {
            target: socket.display().to_string(),
            reason,
        };
        // Fail early with the OS's words (no such file, permission denied).
        UnixStream::connect(socket)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let path = socket.to_path_buf();
        // The URI is required by the API but unused: every connection goes to the socket.
        let channel =
            Endpoint::try_from("http://keywarden.local")
                .map_err(|e| fail(e.to_string()))?
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                    }
                }))
                .await
                .map_err(|e| fail(e.to_string()))?;
        Ok(Self::new(channel, socket.display().to_string()))
    }

    /// Connects to the service's mutual-TLS listener, `https://host:port`. The service's
    /// certificate must be issued by `files.ca` for `host`; this client presents `files.cert`.
    pub async fn connect_tls(endpoint: &str, files: &TlsFiles) -> Result<Self, ClientError> {
        let fail = |reason: String| ClientError::Connect {
            target: endpoint.to_owned(),
            reason,
        };
        let uri: Uri = endpoint
            .parse()
            .map_err(|e| fail(format!("not a URL: {e}")))?;
        if uri.scheme_str() != Some("https") {
            return Err(fail(
                "the remote listener speaks mutual TLS only: use https://host:port".into(),
            ));
        }
        if uri.host().is_none() || uri.port_u16().is_none() {
            return Err(fail("give the host and the port: https://host:port".into()));
        }
        let read = |what: &'static str, path: &Path| {
            std::fs::read(path)
                .map(zeroize::Zeroizing::new)
                .map_err(|e| ClientError::TlsFile {
                    what,
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })
        };
        let ca = read("CA", &files.ca)?;
        let cert = read("certificate", &files.cert)?;
        let key = read("private key", &files.key)?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca.as_slice()))
            .identity(Identity::from_pem(cert.as_slice(), key.as_slice()));
        let channel = Endpoint::from(uri)
            .tls_config(tls)
            .map_err(|e| fail(causes(&e)))?
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .connect()
            .await
            .map_err(|e| fail(causes(&e)))?;
        Ok(Self::new(channel, endpoint.to_owned()))
    }

    /// The generated gRPC client, for every call of the API.
    pub fn rpc(&self) -> KeyServiceClient<Channel> {
        self.rpc.clone()
    }

    /// Where this client connects: the socket path or the endpoint URL.
    pub fn target(&self) -> &str {
        &self.target
    }
}
