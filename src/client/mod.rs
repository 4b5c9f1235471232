//! Talking to a running key service: [`Client`] for the whole API, [`RemoteVault`] for the
//! [`Vault`](keywarden_vault::Vault) trait over it.

mod remote;

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::proto::v1::key_service_client::KeyServiceClient;
use crate::service::api::MAX_REQUEST_BYTES;

pub use remote::RemoteVault;

/// Client errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The service could not be reached.
    #[error("cannot reach the keywarden service at {}: {reason}", socket.display())]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// Why.
        reason: String,
    },
    /// The service answered with an error.
    #[error("{}", .0.message())]
    Status(#[from] tonic::Status),
}

/// A connection to the service.
#[derive(Clone, Debug)]
pub struct Client {
    rpc: KeyServiceClient<Channel>,
    socket: PathBuf,
}

impl Client {
    /// Connects to the service's Unix socket.
    pub async fn connect(socket: &Path) -> Result<Self, ClientError> {
        let fail = |reason: String| ClientError::Connect {
            socket: socket.to_path_buf(),
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
        Ok(Self {
            rpc: KeyServiceClient::new(channel)
                .max_decoding_message_size(MAX_REQUEST_BYTES)
                .max_encoding_message_size(MAX_REQUEST_BYTES),
            socket: socket.to_path_buf(),
        })
    }

    /// The generated gRPC client, for every call of the API.
    pub fn rpc(&self) -> KeyServiceClient<Channel> {
        self.rpc.clone()
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}
