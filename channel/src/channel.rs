//! Secure channels over routes: the handshake drivers, the channel handles and the listener.

use core::fmt;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use keywarden_vault::{AgreementKey, PublicKey};
use tokio::sync::{Semaphore, mpsc};

use crate::attestation::Attestation;
use crate::credential::Credential;
use crate::error::{Error, FrameError, Result};
use crate::identity::{Identifier, Identity};
use crate::node::{Address, DEFAULT_MAILBOX_CAPACITY, Mailbox, Message, Node, Route};
use crate::noise::{Initiator, Responder};
use crate::policy::{AccessPolicy, Decision, DenyAll, PeerInfo};
use crate::transport::{self, Opener, Sealer, TransportConfig};
use crate::wire::{self, IdentityPayload, MAX_CREDENTIALS, inner, kind};

/// The Noise prologue of keywarden channels, version 1.
pub const PROLOGUE: &[u8] = b"keywarden-channel/v1";

/// What one side brings to a channel: its identity, its static DH key (in a vault) and an
/// attestation binding the two, re-signed automatically before it expires.
#[derive(Clone)]
pub struct ChannelIdentity {
    inner: Arc<IdentityInner>,
}

struct IdentityInner {
    identity: Identity,
    static_key: AgreementKey,
    /// `None`: the attestation was given and is never re-signed.
    validity: Option<Duration>,
    attestation: tokio::sync::Mutex<Attestation>,
}

impl ChannelIdentity {
    /// Binds `static_key` to `identity` with an attestation valid for `validity`; it is
    /// re-signed when less than a quarter of `validity` remains.
    pub async fn new(
        identity: Identity,
        static_key: AgreementKey,
        validity: Duration,
    ) -> Result<Self> {
        let att = identity
            .attest(static_key.public_key(), SystemTime::now() + validity)
            .await?;
        Ok(Self {
            inner: Arc::new(IdentityInner {
                identity,
                static_key,
                validity: Some(validity),
                attestation: tokio::sync::Mutex::new(att),
            }),
        })
    }

    /// Uses a given attestation as is, never re-signing it. It is not checked here: the
    /// peer checks it (signature, expiry, that it names `static_key`).
    pub fn with_attestation(
        identity: Identity,
        static_key: AgreementKey,
        attestation: Attestation,
    ) -> Self {
        Self {
            inner: Arc::new(IdentityInner {
                identity,
                static_key,
                validity: None,
                attestation: tokio::sync::Mutex::new(attestation),
            }),
        }
    }

    /// The identifier.
    pub fn identifier(&self) -> Identifier {
        self.inner.identity.identifier()
    }

    /// The identity.
    pub fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    /// The static DH public key.
    pub fn static_public_key(&self) -> &PublicKey {
        self.inner.static_key.public_key()
    }

    /// The current attestation (tests use it to build impostors).
    #[doc(hidden)]
    pub async fn attestation_for_tests(&self) -> Attestation {
        self.inner.attestation.lock().await.clone()
    }

    async fn attestation(&self) -> Result<Attestation> {
        let mut att = self.inner.attestation.lock().await;
        if let Some(validity) = self.inner.validity {
            let now = crate::signed::unix(SystemTime::now());
            if att.expires_unix().saturating_sub(now) < validity.as_secs() / 4 {
                *att = self
                    .inner
                    .identity
                    .attest(
                        self.inner.static_key.public_key(),
                        SystemTime::now() + validity,
                    )
                    .await?;
            }
        }
        Ok(att.clone())
    }
}

impl fmt::Debug for ChannelIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelIdentity")
            .field("identifier", &self.identifier())
            .field("static_key", &self.inner.static_key)
            .finish()
    }
}

/// Who a side trusts, what it presents, and its limits. Nothing is trusted by default: no
/// authority, and the [`DenyAll`] policy.
#[derive(Clone, Debug)]
pub struct ChannelOptions {
    trusted_authorities: Vec<Identifier>,
    credentials: Vec<Credential>,
    policy: Arc<dyn AccessPolicy>,
    handshake_timeout: Duration,
    transport: TransportConfig,
    mailbox_capacity: usize,
    max_pending_handshakes: usize,
    /// Shared by clones (a listener's handshakes): a repeat peer's attestation and
    /// credential signatures are not verified again (everything else is).
    signatures: Arc<crate::signed::SignatureCache>,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        Self {
            trusted_authorities: Vec::new(),
            credentials: Vec::new(),
            policy: Arc::new(DenyAll),
            handshake_timeout: Duration::from_secs(10),
            transport: TransportConfig::default(),
            mailbox_capacity: DEFAULT_MAILBOX_CAPACITY,
            max_pending_handshakes: 64,
            signatures: Arc::default(),
        }
    }
}

impl ChannelOptions {
    /// Trust nothing, deny everyone (add authorities and a policy).
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts credentials issued by `authority`.
    pub fn trust_authority(mut self, authority: Identifier) -> Self {
        self.trusted_authorities.push(authority);
        self
    }

    /// Presents `credential` to the peer.
    pub fn with_credential(mut self, credential: Credential) -> Self {
        self.credentials.push(credential);
        self
    }

    /// Decides who may connect with `policy`.
    pub fn with_policy(mut self, policy: impl AccessPolicy + 'static) -> Self {
        self.policy = Arc::new(policy);
        self
    }

    /// Decides with a shared policy.
    pub fn with_shared_policy(mut self, policy: Arc<dyn AccessPolicy>) -> Self {
        self.policy = policy;
        self
    }

    /// How long a handshake may take end to end (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Transport parameters (both sides must agree on the rekey interval).
    pub fn transport(mut self, config: TransportConfig) -> Self {
        self.transport = config;
        self
    }

    /// Mailbox capacity of each channel end, in messages (default 1024).
    pub fn mailbox_capacity(mut self, capacity: usize) -> Self {
        self.mailbox_capacity = capacity;
        self
    }

    /// Most handshakes a listener runs at once; further first messages are dropped
    /// (default 64). Each costs one DH with the static key.
    pub fn max_pending_handshakes(mut self, n: usize) -> Self {
        self.max_pending_handshakes = n;
        self
    }

    fn validate(&self) -> Result<()> {
        self.transport.validate()?;
        if self.credentials.len() > MAX_CREDENTIALS {
            return Err(Error::InvalidInput(format!(
                "{} credentials; at most {MAX_CREDENTIALS} fit a handshake",
                self.credentials.len()
            )));
        }
        if self.mailbox_capacity == 0 || self.max_pending_handshakes == 0 {
            return Err(Error::InvalidInput(
                "mailbox capacity and pending handshakes must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// Verifies credentials about `peer` and returns the merged attributes.
    fn verify_credentials(
        &self,
        peer: &Identifier,
        credentials: &[Credential],
        now: SystemTime,
    ) -> Result<PeerInfo> {
        let mut attributes = BTreeMap::new();
        let mut authorities = BTreeSet::new();
        for c in credentials {
            let attrs =
                c.verify_with(&self.trusted_authorities, peer, now, Some(&self.signatures))?;
            authorities.insert(c.issuer());
            for (k, v) in attrs {
                if let Some(prev) = attributes.insert(k.clone(), v.clone())
                    && &prev != v
                {
                    return Err(Error::PolicyDenied {
                        peer: *peer,
                        reason: format!("credentials disagree on attribute {k:?}"),
                    });
                }
            }
        }
        Ok(PeerInfo {
            identifier: *peer,
            attributes,
            authorities,
        })
    }

    fn decide(&self, info: &PeerInfo) -> Result<()> {
        match self.policy.decide(info) {
            Decision::Allow => Ok(()),
            Decision::Deny(reason) => Err(Error::PolicyDenied {
                peer: info.identifier,
                reason,
            }),
        }
    }

    /// Everything a side checks about the peer's handshake payload.
    fn verify_peer(&self, payload: &[u8], noise_static: &PublicKey) -> Result<PeerInfo> {
        let now = SystemTime::now();
        let p = IdentityPayload::from_bytes(payload)?;
        let id = p
            .attestation
            .verify_with(noise_static, now, Some(&self.signatures))?;
        let info = self.verify_credentials(&id, &p.credentials, now)?;
        self.decide(&info)?;
        Ok(info)
    }
}

fn prefixed(k: u8, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(body.len() + 1);
    v.push(k);
    v.extend_from_slice(body);
    v
}

/// Waits for a message of kind `want`; an unauthenticated refusal ends the wait.
async fn next_of_kind(mailbox: &mut Mailbox, want: u8) -> Result<Message> {
    loop {
        let msg = mailbox.recv().await.ok_or(Error::Closed)?;
        match msg.payload.first() {
            Some(&k) if k == want => return Ok(msg),
            Some(&kind::REFUSED) => {
                let reason = String::from_utf8_lossy(&msg.payload[1..]).into_owned();
                return Err(Error::PeerRefused(reason));
            }
            _ => tracing::debug!("{}: unexpected message during handshake", mailbox.address()),
        }
    }
}

fn seal_control(sealer: &mut Sealer, k: u8, body: &[u8]) -> Result<Vec<u8>> {
    let mut payload = vec![kind::FRAME];
    sealer.seal_parts(&[&[k], body], &mut payload)?;
    Ok(payload)
}

struct Established {
    sealer: Sealer,
    opener: Opener,
    peer: PeerInfo,
    peer_route: Route,
    handshake_hash: [u8; 32],
}

impl Node {
    /// Opens a secure channel to the listener at the end of `route`, as `identity`.
    ///
    /// Returns once both sides have verified each other (attestation bound to the Noise
    /// static key, credentials from trusted authorities, policy) and the listener has
    /// accepted. Every failure is an error and leaves no channel.
    pub async fn create_secure_channel(
        &self,
        identity: &ChannelIdentity,
        route: Route,
        options: ChannelOptions,
    ) -> Result<SecureChannel> {
        options.validate()?;
        let mut mailbox = self.register_fresh("sc", options.mailbox_capacity)?;
        let timeout = options.handshake_timeout;
        let est = tokio::time::timeout(
            timeout,
            self.initiate(identity, route, &options, &mut mailbox),
        )
        .await
        .map_err(|_| Error::HandshakeTimeout(timeout))??;
        Ok(SecureChannel::new(self.clone(), mailbox, est, options))
    }

    async fn initiate(
        &self,
        identity: &ChannelIdentity,
        route: Route,
        options: &ChannelOptions,
        mailbox: &mut Mailbox,
    ) -> Result<Established> {
        let own = Route::from_vec(vec![mailbox.address().clone()])?;
        let my_payload = IdentityPayload {
            attestation: identity.attestation().await?,
            credentials: options.credentials.clone(),
        }
        .to_bytes();
        let (hs, m1) =
            Initiator::new(identity.static_public_key(), PROLOGUE)?.write_message_1(&[])?;
        self.send(Message {
            onward: route,
            return_route: own.clone(),
            payload: prefixed(kind::HANDSHAKE_1, &m1),
        })
        .await?;

        let m2 = next_of_kind(mailbox, kind::HANDSHAKE_2).await?;
        let peer_route = m2.return_route;
        let (hs, payload) = hs.read_message_2(&m2.payload[1..])?;
        // Check the responder before asking the vault for anything.
        let peer = match options.verify_peer(&payload, hs.peer_static()) {
            Ok(p) => p,
            Err(e) => {
                let _ = self
                    .send(Message {
                        onward: peer_route,
                        return_route: own,
                        payload: prefixed(kind::REFUSED, b"initiator refused the responder"),
                    })
                    .await;
                return Err(e);
            }
        };
        let se = identity.inner.static_key.agree(hs.peer_ephemeral()).await?;
        let (m3, done) = hs.write_message_3(&se, &my_payload)?;
        drop(se);
        self.send(Message {
            onward: peer_route.clone(),
            return_route: own,
            payload: prefixed(kind::HANDSHAKE_3, &m3),
        })
        .await?;
        let handshake_hash = done.handshake_hash;
        let (sealer, mut opener) = transport::split(done.keys, options.transport);

        // The responder's verdict on us, authenticated under the new keys.
        loop {
            let mut msg = next_of_kind(mailbox, kind::FRAME).await?;
            let Ok(pt) = opener.open(&mut msg.payload[1..]) else {
                continue;
            };
            match pt.first() {
                Some(&inner::ACCEPT) => break,
                Some(&inner::REFUSE) => {
                    return Err(Error::PeerRefused(
                        String::from_utf8_lossy(&pt[1..]).into_owned(),
                    ));
                }
                _ => continue,
            }
        }
        Ok(Established {
            sealer,
            opener,
            peer,
            peer_route,
            handshake_hash,
        })
    }

    /// Listens for secure channels at `address` (reach it over TCP with a route ending in
    /// it), as `identity`. Each handshake runs in its own task; [`SecureChannelListener::accept`]
    /// yields the channels and the refusals.
    pub fn create_secure_channel_listener(
        &self,
        identity: &ChannelIdentity,
        address: Address,
        options: ChannelOptions,
    ) -> Result<SecureChannelListener> {
        options.validate()?;
        let mut mailbox = self.register(address.clone(), options.mailbox_capacity)?;
        let (tx, rx) = mpsc::channel(options.max_pending_handshakes);
        let pending = Arc::new(Semaphore::new(options.max_pending_handshakes));
        let node = self.clone();
        let identity = identity.clone();
        self.spawn(async move {
            while let Some(msg) = mailbox.recv().await {
                if msg.payload.first() != Some(&kind::HANDSHAKE_1) {
                    continue;
                }
                let Ok(permit) = pending.clone().try_acquire_owned() else {
                    tracing::warn!(
                        "listener {}: too many pending handshakes",
                        mailbox.address()
                    );
                    continue;
                };
                let (node2, identity, options, tx) =
                    (node.clone(), identity.clone(), options.clone(), tx.clone());
                node.spawn(async move {
                    let result = node2.respond(&identity, &options, msg).await;
                    if let Err(e) = &result {
                        tracing::info!("secure channel refused: {e}");
                    }
                    let _ = tx.send(result).await;
                    drop(permit);
                });
            }
        });
        Ok(SecureChannelListener { address, rx })
    }

    async fn respond(
        &self,
        identity: &ChannelIdentity,
        options: &ChannelOptions,
        m1: Message,
    ) -> Result<SecureChannel> {
        let mut mailbox = self.register_fresh("sc", options.mailbox_capacity)?;
        let timeout = options.handshake_timeout;
        let est = tokio::time::timeout(
            timeout,
            self.respond_inner(identity, options, m1, &mut mailbox),
        )
        .await
        .map_err(|_| Error::HandshakeTimeout(timeout))??;
        Ok(SecureChannel::new(
            self.clone(),
            mailbox,
            est,
            options.clone(),
        ))
    }

    async fn respond_inner(
        &self,
        identity: &ChannelIdentity,
        options: &ChannelOptions,
        m1: Message,
        mailbox: &mut Mailbox,
    ) -> Result<Established> {
        let own = Route::from_vec(vec![mailbox.address().clone()])?;
        let peer_route = m1.return_route;
        let (hs, _) = Responder::new(identity.static_public_key(), PROLOGUE)
            .read_message_1(&m1.payload[1..])?;
        // The vault computes `es` (possibly a round trip to an HSM) while this task makes
        // the ephemeral key and `ee`.
        let es_task = {
            let key = identity.inner.static_key.clone();
            let re = hs.peer_ephemeral().clone();
            tokio::spawn(async move { key.agree(&re).await })
        };
        let prepared = hs.prepare_message_2();
        let my_payload = IdentityPayload {
            attestation: identity.attestation().await?,
            credentials: options.credentials.clone(),
        }
        .to_bytes();
        let es = es_task
            .await
            .map_err(|e| Error::Io(format!("static DH task: {e}")))??;
        let (hs, m2) = prepared?.write_message_2(&es, &my_payload)?;
        drop(es);
        self.send(Message {
            onward: peer_route.clone(),
            return_route: own.clone(),
            payload: prefixed(kind::HANDSHAKE_2, &m2),
        })
        .await?;
        let m3 = next_of_kind(mailbox, kind::HANDSHAKE_3).await?;
        let (done, payload) = match hs.read_message_3(&m3.payload[1..]) {
            Ok(x) => x,
            Err(e) => {
                let _ = self
                    .send(Message {
                        onward: peer_route,
                        return_route: own,
                        payload: prefixed(kind::REFUSED, e.to_string().as_bytes()),
                    })
                    .await;
                return Err(e.into());
            }
        };
        let handshake_hash = done.handshake_hash;
        let (mut sealer, opener) = transport::split(done.keys, options.transport);
        let verdict = options.verify_peer(&payload, &done.peer_static);
        let reply = match &verdict {
            Ok(_) => seal_control(&mut sealer, inner::ACCEPT, &[])?,
            Err(e) => seal_control(&mut sealer, inner::REFUSE, e.to_string().as_bytes())?,
        };
        self.send(Message {
            onward: peer_route.clone(),
            return_route: own,
            payload: reply,
        })
        .await?;
        Ok(Established {
            sealer,
            opener,
            peer: verdict?,
            peer_route,
            handshake_hash,
        })
    }
}

/// Incoming secure channels at one address.
#[derive(Debug)]
pub struct SecureChannelListener {
    address: Address,
    rx: mpsc::Receiver<Result<SecureChannel>>,
}

impl SecureChannelListener {
    /// The listener's address.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The next handshake's outcome: a channel, or the reason it was refused (the listener
    /// keeps listening). [`Error::Closed`] once the node has shut down.
    pub async fn accept(&mut self) -> Result<SecureChannel> {
        self.rx.recv().await.unwrap_or(Err(Error::Closed))
    }
}

/// A secure channel to one authenticated peer.
#[derive(Debug)]
pub struct SecureChannel {
    sender: ChannelSender,
    receiver: ChannelReceiver,
}

/// The sending half of a channel.
pub struct ChannelSender {
    node: Node,
    route: Route,
    own: Route,
    next_hop: Option<mpsc::Sender<Message>>,
    sealer: Sealer,
    closed: bool,
}

/// The receiving half of a channel.
pub struct ChannelReceiver {
    mailbox: Mailbox,
    opener: Opener,
    options: ChannelOptions,
    peer: Arc<RwLock<PeerInfo>>,
    rejected: u64,
    last_rejection: Option<FrameError>,
    closed: bool,
}

impl SecureChannel {
    fn new(node: Node, mailbox: Mailbox, est: Established, options: ChannelOptions) -> Self {
        let own = Route::from_vec(vec![mailbox.address().clone()]).unwrap_or_default();
        let next_hop = est.peer_route.next().and_then(|a| node.resolve(a).ok());
        let peer = Arc::new(RwLock::new(est.peer));
        let _ = est.handshake_hash;
        Self {
            sender: ChannelSender {
                node,
                route: est.peer_route,
                own,
                next_hop,
                sealer: est.sealer,
                closed: false,
            },
            receiver: ChannelReceiver {
                mailbox,
                opener: est.opener,
                options,
                peer,
                rejected: 0,
                last_rejection: None,
                closed: false,
            },
        }
    }

    /// The peer's identifier.
    pub fn peer_identifier(&self) -> Identifier {
        self.receiver.peer_identifier()
    }

    /// The peer's identifier and verified attributes (updated by credential refreshes).
    pub fn peer(&self) -> PeerInfo {
        self.receiver.peer()
    }

    /// This end's address.
    pub fn address(&self) -> &Address {
        self.receiver.mailbox.address()
    }

    /// The route to the peer's end.
    pub fn peer_route(&self) -> &Route {
        &self.sender.route
    }

    /// Sends one message (at most the transport's plaintext limit minus one byte).
    pub async fn send(&mut self, data: &[u8]) -> Result<()> {
        self.sender.send(data).await
    }

    /// Receives the next message; `None` after the peer closed the channel.
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>> {
        self.receiver.recv().await
    }

    /// Sends fresh credentials about this side; the peer verifies them and updates the
    /// attributes its policy sees.
    pub async fn refresh_credentials(&mut self, credentials: &[Credential]) -> Result<()> {
        self.sender.refresh_credentials(credentials).await
    }

    /// Closes the channel: the peer's `recv` returns `None`.
    pub async fn close(&mut self) -> Result<()> {
        self.sender.close().await
    }

    /// Frames refused so far (tampered, replayed, too old, truncated), and the last reason.
    pub fn rejected_frames(&self) -> (u64, Option<FrameError>) {
        (self.receiver.rejected, self.receiver.last_rejection)
    }

    /// Splits into halves that can be used from different tasks.
    pub fn split(self) -> (ChannelSender, ChannelReceiver) {
        (self.sender, self.receiver)
    }
}

impl ChannelSender {
    async fn deliver(&mut self, payload: Vec<u8>) -> Result<()> {
        let msg = Message {
            onward: self.route.clone(),
            return_route: self.own.clone(),
            payload,
        };
        if let Some(tx) = &self.next_hop {
            if let Err(mpsc::error::SendError(msg)) = tx.send(msg).await {
                self.next_hop = None;
                return self.node.send(msg).await;
            }
            return Ok(());
        }
        self.node.send(msg).await
    }

    /// Sends one message.
    pub async fn send(&mut self, data: &[u8]) -> Result<()> {
        if self.closed {
            return Err(Error::Closed);
        }
        let mut payload = Vec::with_capacity(data.len() + 2 + transport::FRAME_OVERHEAD);
        payload.push(kind::FRAME);
        self.sealer
            .seal_parts(&[&[inner::DATA], data], &mut payload)?;
        self.deliver(payload).await
    }

    /// Sends fresh credentials about this side.
    pub async fn refresh_credentials(&mut self, credentials: &[Credential]) -> Result<()> {
        if credentials.len() > MAX_CREDENTIALS {
            return Err(Error::InvalidInput(format!(
                "at most {MAX_CREDENTIALS} credentials"
            )));
        }
        let body = wire::encode_credentials(credentials);
        let payload = seal_control(&mut self.sealer, inner::CREDENTIALS, &body)?;
        self.deliver(payload).await
    }

    /// Closes the channel.
    pub async fn close(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let payload = seal_control(&mut self.sealer, inner::CLOSE, &[])?;
        self.deliver(payload).await
    }
}

impl ChannelReceiver {
    /// The peer's identifier.
    pub fn peer_identifier(&self) -> Identifier {
        self.peer().identifier
    }

    /// The peer's identifier and verified attributes.
    pub fn peer(&self) -> PeerInfo {
        match self.peer.read() {
            Ok(p) => p.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn reject(&mut self, e: FrameError) {
        self.rejected += 1;
        self.last_rejection = Some(e);
        tracing::debug!("{}: frame refused: {e}", self.mailbox.address());
    }

    /// Receives the next message; `None` after the peer closed the channel. Refused frames
    /// are counted and skipped; they never end the channel.
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>> {
        loop {
            if self.closed {
                return Ok(None);
            }
            let Some(mut msg) = self.mailbox.recv().await else {
                return Err(Error::Closed);
            };
            if msg.payload.first() != Some(&kind::FRAME) {
                continue;
            }
            let (k, len) = match self.opener.open(&mut msg.payload[1..]) {
                Ok(pt) if !pt.is_empty() => (pt[0], pt.len()),
                Ok(_) => continue,
                Err(e) => {
                    self.reject(e);
                    continue;
                }
            };
            // payload = FRAME | nonce (8) | kind | body… | tag
            let body_start = 1 + transport::NONCE_LEN + 1;
            let body_end = 1 + transport::NONCE_LEN + len;
            match k {
                inner::DATA => {
                    msg.payload.truncate(body_end);
                    msg.payload.drain(..body_start);
                    return Ok(Some(msg.payload));
                }
                inner::CLOSE => {
                    self.closed = true;
                    return Ok(None);
                }
                inner::CREDENTIALS => {
                    self.refresh(&msg.payload[body_start..body_end])?;
                }
                _ => {}
            }
        }
    }

    fn refresh(&mut self, body: &[u8]) -> Result<()> {
        let id = self.peer_identifier();
        let verified = wire::decode_credentials(body).and_then(|creds| {
            self.options
                .verify_credentials(&id, &creds, SystemTime::now())
        });
        match verified {
            Ok(info) => {
                if let Err(e) = self.options.decide(&info) {
                    // The peer no longer qualifies: end the channel.
                    self.closed = true;
                    return Err(e);
                }
                match self.peer.write() {
                    Ok(mut p) => *p = info,
                    Err(p) => *p.into_inner() = info,
                }
                Ok(())
            }
            Err(e) => {
                tracing::info!(
                    "{}: credential refresh refused: {e}",
                    self.mailbox.address()
                );
                Ok(())
            }
        }
    }
}

impl fmt::Debug for ChannelSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelSender")
            .field("route", &self.route)
            .field("sealer", &self.sealer)
            .finish()
    }
}

impl fmt::Debug for ChannelReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelReceiver")
            .field("address", self.mailbox.address())
            .field("opener", &self.opener)
            .field("rejected", &self.rejected)
            .finish()
    }
}
