//! Building blocks for `keywarden channel listen|connect|relay`: each helper takes vault
//! handles and socket addresses, so the CLI only parses arguments and opens vaults.
//!
//! ```no_run
//! # async fn demo(vault: std::sync::Arc<dyn keywarden_vault::Vault>) -> keywarden_channel::Result<()> {
//! use keywarden_channel::cli;
//! use keywarden_channel::policy::AllowAnyAuthenticated;
//! use keywarden_channel::ChannelOptions;
//!
//! // Keys named by label in any vault (PKCS#11, TPM, YubiHSM, RemoteVault).
//! let me = cli::open_identity(vault, "web-identity", "web-channel", cli::DEFAULT_ATTESTATION_VALIDITY).await?;
//! let options = ChannelOptions::new().with_policy(AllowAnyAuthenticated);
//!
//! // Server: listen on TCP, accept channels at the worker address "echo".
//! let mut server = cli::listen(&me, "127.0.0.1:4100".parse().unwrap(), "echo", options.clone()).await?;
//! // Client: through a relay worker "relay" on the node at 127.0.0.1:4100.
//! let (_node, channel) = cli::connect(&me, "127.0.0.1:4100".parse().unwrap(), &["echo"], options).await?;
//! cli::pipe(channel, tokio::io::empty(), tokio::io::sink()).await?;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use keywarden_vault::{AgreementKey, SigningKey, Vault};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::channel::{ChannelIdentity, ChannelOptions, SecureChannel, SecureChannelListener};
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::node::{Address, Node, Route};

/// Default lifetime of an attestation the CLI signs: one day (re-signed automatically).
pub const DEFAULT_ATTESTATION_VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// Largest chunk [`pipe`] reads from its input before sending it as one message.
pub const PIPE_CHUNK: usize = 16 * 1024;

/// Opens the identity key and the static DH key by label in `vault` and signs an
/// attestation binding them, valid for `validity`.
pub async fn open_identity(
    vault: Arc<dyn Vault>,
    identity_label: &str,
    static_label: &str,
    validity: Duration,
) -> Result<ChannelIdentity> {
    let keys = vault.list().await?;
    let find = |label: &str| {
        keys.iter()
            .find(|k| k.label == label)
            .cloned()
            .ok_or_else(|| Error::Vault(keywarden_vault::Error::KeyNotFound(label.to_string())))
    };
    let signing = SigningKey::from_info(vault.clone(), find(identity_label)?)?;
    let agreement = AgreementKey::from_info(vault, find(static_label)?)?;
    ChannelIdentity::new(Identity::new(signing), agreement, validity).await
}

/// A node listening on TCP with a secure-channel listener.
#[derive(Debug)]
pub struct Listening {
    /// The node (shut it down to stop everything).
    pub node: Node,
    /// The bound TCP address.
    pub local_addr: SocketAddr,
    /// The channel listener.
    pub listener: SecureChannelListener,
}

/// Listens on `bind` and accepts secure channels at the worker address `name`.
pub async fn listen(
    identity: &ChannelIdentity,
    bind: SocketAddr,
    name: &str,
    options: ChannelOptions,
) -> Result<Listening> {
    let node = Node::new();
    let listener = node.create_secure_channel_listener(identity, Address::new(name)?, options)?;
    let local_addr = node.tcp_listen(bind).await?;
    Ok(Listening {
        node,
        local_addr,
        listener,
    })
}

/// Connects over TCP to `peer` and opens a secure channel along `route` (addresses on the
/// far side: relay names, then the listener's name).
pub async fn connect(
    identity: &ChannelIdentity,
    peer: SocketAddr,
    route: &[&str],
    options: ChannelOptions,
) -> Result<(Node, SecureChannel)> {
    let node = Node::new();
    let first = node.tcp_connect(peer).await?;
    let mut hops = vec![first];
    for r in route {
        hops.push(Address::new(r)?);
    }
    let channel = node
        .create_secure_channel(identity, Route::from_vec(hops)?, options)
        .await?;
    Ok((node, channel))
}

/// Runs a relay: listens on `bind`, and forwards whatever reaches worker `name` over a TCP
/// connection to `next`. Returns the node and the bound address.
pub async fn relay(bind: SocketAddr, name: &str, next: SocketAddr) -> Result<(Node, SocketAddr)> {
    let node = Node::new();
    let conn = node.tcp_connect(next).await?;
    node.create_relay(Address::new(name)?, Route::from_vec(vec![conn])?)?;
    let local = node.tcp_listen(bind).await?;
    Ok((node, local))
}

/// Copies `input` into the channel (chunks of up to [`PIPE_CHUNK`] bytes, one message each)
/// and the channel's messages to `output`, until the input ends (then closes the channel)
/// and the peer closes.
pub async fn pipe<R, W>(channel: SecureChannel, mut input: R, mut output: W) -> Result<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let (mut tx, mut rx) = channel.split();
    let sending = tokio::spawn(async move {
        let mut buf = vec![0u8; PIPE_CHUNK];
        loop {
            let n = input.read(&mut buf).await?;
            if n == 0 {
                return tx.close().await;
            }
            tx.send(&buf[..n]).await?;
        }
    });
    while let Some(msg) = rx.recv().await? {
        output.write_all(&msg).await?;
        output.flush().await?;
    }
    sending
        .await
        .map_err(|e| Error::Io(format!("pipe input task: {e}")))?
}
