//! Workers, addresses, routes and the node that delivers messages between them.
//!
//! A worker is a tokio task with an [`Address`] and a bounded mailbox. A [`Message`] carries
//! an onward route (where it goes: the first address is the next worker) and a return route
//! (how to answer). Transport workers (TCP connections, in-process links) pop their own
//! address when they send and push it onto the return route when they receive, so every
//! address a route holds is local to the node that uses it; a reply simply follows the
//! return route back.

use core::fmt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::mpsc;

use crate::error::{Error, Result};

/// The longest address, in bytes.
pub const MAX_ADDRESS_LEN: usize = 255;
/// The most addresses in a route.
pub const MAX_ROUTE_LEN: usize = 32;
/// Default mailbox capacity, in messages.
pub const DEFAULT_MAILBOX_CAPACITY: usize = 1024;

/// A worker's name on its node.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(Arc<str>);

impl Address {
    /// An address; 1 to [`MAX_ADDRESS_LEN`] bytes.
    pub fn new(s: impl AsRef<str>) -> Result<Self> {
        let s = s.as_ref();
        if s.is_empty() || s.len() > MAX_ADDRESS_LEN {
            return Err(Error::InvalidInput(format!(
                "address must be 1 to {MAX_ADDRESS_LEN} bytes, got {}",
                s.len()
            )));
        }
        Ok(Self(s.into()))
    }

    /// The address as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

/// A list of addresses, first hop first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Route(Vec<Address>);

impl Route {
    /// An empty route.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Parses addresses.
    pub fn parse<I, S>(addresses: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let v = addresses
            .into_iter()
            .map(Address::new)
            .collect::<Result<Vec<_>>>()?;
        Self::from_vec(v)
    }

    /// From addresses; at most [`MAX_ROUTE_LEN`].
    pub fn from_vec(v: Vec<Address>) -> Result<Self> {
        if v.len() > MAX_ROUTE_LEN {
            return Err(Error::InvalidInput(format!(
                "route has {} hops; the limit is {MAX_ROUTE_LEN}",
                v.len()
            )));
        }
        Ok(Self(v))
    }

    /// Appends an address.
    pub fn append(mut self, a: Address) -> Self {
        self.0.push(a);
        self
    }

    /// The addresses.
    pub fn addresses(&self) -> &[Address] {
        &self.0
    }

    /// The next hop.
    pub fn next(&self) -> Option<&Address> {
        self.0.first()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of hops.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Removes and returns the first address (a transport worker does this when it sends).
    pub fn pop_front(&mut self) -> Option<Address> {
        if self.0.is_empty() {
            None
        } else {
            Some(self.0.remove(0))
        }
    }

    /// Puts `a` first (a transport worker does this to the return route when it receives).
    pub fn push_front(&mut self, a: Address) {
        self.0.insert(0, a);
    }

    pub(crate) fn prepend(&mut self, route: &Route) {
        let mut v = route.0.clone();
        v.append(&mut self.0);
        self.0 = v;
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<&str> = self.0.iter().map(Address::as_str).collect();
        write!(f, "[{}]", parts.join(" => "))
    }
}

/// A message between workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Where it goes; the first address is the worker it is delivered to.
    pub onward: Route,
    /// How to answer it.
    pub return_route: Route,
    /// The bytes.
    pub payload: Vec<u8>,
}

/// Called with every byte a TCP connection of the node reads or writes (diagnostics, tests).
pub type WireTap = Arc<dyn Fn(&[u8]) + Send + Sync>;

pub(crate) struct NodeInner {
    workers: RwLock<HashMap<Address, mpsc::Sender<Message>>>,
    next: AtomicU64,
    pub(crate) wire_tap: RwLock<Option<WireTap>>,
    pub(crate) has_tap: std::sync::atomic::AtomicBool,
    pub(crate) tasks: tokio_util_shim::TaskSet,
}

/// Owns a set of workers and delivers messages between them.
///
/// Cloning is cheap (all clones are the same node). [`Node::shutdown`] stops every worker.
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<NodeInner>,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.inner.workers.read().map(|w| w.len()).unwrap_or(0);
        f.debug_struct("Node").field("workers", &n).finish()
    }
}

impl Default for Node {
    fn default() -> Self {
        Self::new()
    }
}

/// A registered worker's receiving end. Dropping it frees the address.
pub struct Mailbox {
    address: Address,
    rx: mpsc::Receiver<Message>,
    node: Node,
}

impl Mailbox {
    /// The worker's address.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The next message, or `None` once the node has shut down.
    pub async fn recv(&mut self) -> Option<Message> {
        self.rx.recv().await
    }

    /// The next message if one is waiting.
    pub fn try_recv(&mut self) -> Option<Message> {
        self.rx.try_recv().ok()
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        self.node.unregister(&self.address);
    }
}

impl fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mailbox({})", self.address)
    }
}

impl Node {
    /// A node with no workers.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(NodeInner {
                workers: RwLock::new(HashMap::new()),
                next: AtomicU64::new(0),
                wire_tap: RwLock::new(None),
                has_tap: std::sync::atomic::AtomicBool::new(false),
                tasks: tokio_util_shim::TaskSet::default(),
            }),
        }
    }

    /// Registers a worker at `address` with a mailbox of `capacity` messages.
    pub fn register(&self, address: Address, capacity: usize) -> Result<Mailbox> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let mut w = self.inner.workers.write().map_err(|_| Error::Closed)?;
        if w.contains_key(&address) {
            return Err(Error::AddressInUse(address.to_string()));
        }
        w.insert(address.clone(), tx);
        Ok(Mailbox {
            address,
            rx,
            node: self.clone(),
        })
    }

    /// Registers a worker at a fresh address `prefix#n`.
    pub fn register_fresh(&self, prefix: &str, capacity: usize) -> Result<Mailbox> {
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
        self.register(Address::new(format!("{prefix}#{n}"))?, capacity)
    }

    pub(crate) fn unregister_public(&self, address: &Address) {
        self.unregister(address);
    }

    fn unregister(&self, address: &Address) {
        if let Ok(mut w) = self.inner.workers.write() {
            w.remove(address);
        }
    }

    /// The mailbox of the worker at `address`.
    pub(crate) fn resolve(&self, address: &Address) -> Result<mpsc::Sender<Message>> {
        self.inner
            .workers
            .read()
            .map_err(|_| Error::Closed)?
            .get(address)
            .cloned()
            .ok_or_else(|| Error::NoRoute(address.to_string()))
    }

    /// Delivers `message` to the worker named by its onward route's first address, waiting
    /// while that mailbox is full.
    pub async fn send(&self, message: Message) -> Result<()> {
        let next = message
            .onward
            .next()
            .ok_or_else(|| Error::NoRoute("(empty route)".into()))?;
        let tx = self.resolve(next)?;
        let next = next.clone();
        tx.send(message)
            .await
            .map_err(|_| Error::NoRoute(next.to_string()))
    }

    /// Sets the wire tap (see [`WireTap`]).
    pub fn set_wire_tap(&self, tap: Option<WireTap>) {
        if let Ok(mut t) = self.inner.wire_tap.write() {
            self.inner.has_tap.store(tap.is_some(), Ordering::Release);
            *t = tap;
        }
    }

    pub(crate) fn spawn<F>(&self, fut: F)
    where
        F: core::future::Future<Output = ()> + Send + 'static,
    {
        self.inner.tasks.spawn(fut);
    }

    /// Stops every task the node started (listeners, connections, relays, handshakes) and
    /// frees every address.
    pub fn shutdown(&self) {
        self.inner.tasks.abort_all();
        if let Ok(mut w) = self.inner.workers.write() {
            w.clear();
        }
    }

    /// Starts a relay worker at `address`: a message delivered to it continues along `next`
    /// followed by the rest of its onward route. The relay forwards bytes; it holds no keys.
    pub fn create_relay(&self, address: Address, next: Route) -> Result<()> {
        let mut mailbox = self.register(address, DEFAULT_MAILBOX_CAPACITY)?;
        let node = self.clone();
        self.spawn(async move {
            while let Some(mut msg) = mailbox.recv().await {
                msg.onward.pop_front();
                msg.onward.prepend(&next);
                if msg.onward.len() > MAX_ROUTE_LEN {
                    tracing::debug!("relay {}: route too long, dropped", mailbox.address());
                    continue;
                }
                if let Err(e) = node.send(msg).await {
                    tracing::debug!("relay {}: {e}", mailbox.address());
                }
            }
        });
        Ok(())
    }

    /// Links two nodes in one process: returns the address on `self` that leads to `other`
    /// and the address on `other` that leads back.
    pub fn link_in_process(&self, other: &Node) -> Result<(Address, Address)> {
        let a = self.register_fresh("mem", DEFAULT_MAILBOX_CAPACITY)?;
        let b = other.register_fresh("mem", DEFAULT_MAILBOX_CAPACITY)?;
        let (aa, ba) = (a.address().clone(), b.address().clone());
        self.spawn(forward_link(a, other.clone(), ba.clone()));
        other.spawn(forward_link(b, self.clone(), aa.clone()));
        Ok((aa, ba))
    }
}

/// Moves messages from `mailbox` (on one node) to `to` (another node), arriving through its
/// link worker `arrive_via`.
async fn forward_link(mut mailbox: Mailbox, to: Node, arrive_via: Address) {
    while let Some(mut msg) = mailbox.recv().await {
        msg.onward.pop_front();
        msg.return_route.push_front(arrive_via.clone());
        if msg.return_route.len() > MAX_ROUTE_LEN {
            continue;
        }
        if let Err(e) = to.send(msg).await {
            tracing::debug!("link {}: {e}", mailbox.address());
        }
    }
}

/// A small set of abortable tasks (what `tokio_util::task::TaskTracker` would give, without
/// the dependency).
pub(crate) mod tokio_util_shim {
    use std::sync::Mutex;

    use tokio::task::AbortHandle;

    #[derive(Default)]
    pub(crate) struct TaskSet(Mutex<Vec<AbortHandle>>);

    impl TaskSet {
        pub(crate) fn spawn<F>(&self, fut: F)
        where
            F: core::future::Future<Output = ()> + Send + 'static,
        {
            let handle = tokio::spawn(fut).abort_handle();
            if let Ok(mut v) = self.0.lock() {
                v.retain(|h| !h.is_finished());
                v.push(handle);
            }
        }

        pub(crate) fn abort_all(&self) {
            if let Ok(mut v) = self.0.lock() {
                for h in v.drain(..) {
                    h.abort();
                }
            }
        }
    }
}
