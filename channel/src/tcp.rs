//! The TCP transport: each connection is a worker; messages are length-prefixed frames.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

use crate::error::Result;
use crate::node::{Address, DEFAULT_MAILBOX_CAPACITY, MAX_ROUTE_LEN, Mailbox, Node};
use crate::wire::{MAX_WIRE_FRAME_LEN, MessageDecoder, encode_message};

/// How many bytes the writer gathers from its mailbox before one `write`.
const WRITE_BATCH: usize = 256 * 1024;

impl Node {
    /// Listens on `bind` (e.g. `127.0.0.1:0`); every accepted connection becomes a worker.
    /// Returns the bound socket address.
    pub async fn tcp_listen(&self, bind: SocketAddr) -> Result<SocketAddr> {
        let listener = TcpListener::bind(bind).await?;
        let local = listener.local_addr()?;
        let node = self.clone();
        self.spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        if let Err(e) = node.start_connection(stream) {
                            tracing::warn!("tcp {local}: connection from {peer}: {e}");
                        }
                    }
                    Err(e) => {
                        tracing::warn!("tcp {local}: accept: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }
        });
        Ok(local)
    }

    /// Connects to `peer`; returns the address of the connection worker, the first hop of
    /// routes through it.
    pub async fn tcp_connect(&self, peer: SocketAddr) -> Result<Address> {
        let stream = TcpStream::connect(peer).await?;
        self.start_connection(stream)
    }

    fn start_connection(&self, stream: TcpStream) -> Result<Address> {
        stream.set_nodelay(true)?;
        let mailbox = self.register_fresh("tcp", DEFAULT_MAILBOX_CAPACITY)?;
        let address = mailbox.address().clone();
        let (r, w) = stream.into_split();
        self.spawn(write_loop(self.clone(), mailbox, w));
        self.spawn(read_loop(self.clone(), address.clone(), r));
        Ok(address)
    }

    fn tap(&self, bytes: &[u8]) {
        if !self
            .inner
            .has_tap
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return;
        }
        if let Ok(t) = self.inner.wire_tap.read()
            && let Some(tap) = t.as_ref()
        {
            tap(bytes);
        }
    }
}

async fn write_loop(node: Node, mut mailbox: Mailbox, mut w: OwnedWriteHalf) {
    let mut buf = Vec::with_capacity(WRITE_BATCH + 70_000);
    while let Some(msg) = mailbox.recv().await {
        encode_message(&msg, 1, &mut buf);
        while buf.len() < WRITE_BATCH {
            match mailbox.try_recv() {
                Some(m) => encode_message(&m, 1, &mut buf),
                None => break,
            }
        }
        node.tap(&buf);
        if let Err(e) = w.write_all(&buf).await {
            tracing::debug!("tcp {}: write: {e}", mailbox.address());
            return;
        }
        buf.clear();
    }
}

async fn read_loop(node: Node, address: Address, r: OwnedReadHalf) {
    let mut r = BufReader::with_capacity(WRITE_BATCH, r);
    let mut decoder = MessageDecoder::default();
    let mut cached: Option<(Address, tokio::sync::mpsc::Sender<crate::node::Message>)> = None;
    while let Ok(len) = r.read_u32().await {
        let len = len as usize;
        if len > MAX_WIRE_FRAME_LEN {
            tracing::warn!("tcp {address}: frame of {len} bytes; closing");
            break;
        }
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).await.is_err() {
            break;
        }
        node.tap(&(len as u32).to_be_bytes());
        node.tap(&body);
        let mut msg = match decoder.decode(body) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!("tcp {address}: {e}");
                continue;
            }
        };
        if msg.return_route.len() >= MAX_ROUTE_LEN {
            continue;
        }
        msg.return_route.push_front(address.clone());
        // Most frames on a connection go to the same worker: keep its mailbox.
        let Some(next) = msg.onward.next().cloned() else {
            continue;
        };
        let tx = match &cached {
            Some((a, tx)) if *a == next && !tx.is_closed() => tx.clone(),
            _ => match node.resolve(&next) {
                Ok(tx) => {
                    cached = Some((next.clone(), tx.clone()));
                    tx
                }
                Err(e) => {
                    tracing::debug!("tcp {address}: {e}");
                    continue;
                }
            },
        };
        if tx.send(msg).await.is_err() {
            tracing::debug!("tcp {address}: {next} is gone");
            cached = None;
        }
    }
    // The peer is gone: free the address so routes through it fail fast.
    node.unregister_public(&address);
}
