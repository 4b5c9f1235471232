//! Every refusal is a clear error and leaves no channel: untrusted authority, expired
//! credential, expired / forged attestation, attested key ≠ Noise static key, policy denial,
//! a stalling peer.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use keywarden_channel::testing::agreement_key;
use keywarden_channel::{
    Address, Attestation, ChannelIdentity, ChannelOptions, Error, Node, Route, SecureChannel,
};

/// Runs a handshake; returns (initiator result, listener result).
async fn attempt(
    alice: &ChannelIdentity,
    a_opts: ChannelOptions,
    bob: &ChannelIdentity,
    b_opts: ChannelOptions,
) -> (Result<SecureChannel, Error>, Result<SecureChannel, Error>) {
    let node = Node::new();
    let mut listener = node
        .create_secure_channel_listener(bob, Address::new("bob").unwrap(), b_opts)
        .unwrap();
    let route = Route::parse(["bob"]).unwrap();
    let init = node.create_secure_channel(alice, route, a_opts).await;
    let resp = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("the listener reports every handshake");
    (init, resp)
}

struct World {
    alice: ChannelIdentity,
    bob: ChannelIdentity,
    ca: keywarden_channel::Identity,
}

async fn world() -> World {
    World {
        alice: identity_in(software_vault(), "alice").await,
        bob: identity_in(software_vault(), "bob").await,
        ca: authority().await,
    }
}

impl World {
    async fn bob_opts(&self) -> ChannelOptions {
        let c = credential(
            &self.ca,
            self.bob.identifier(),
            &[("role", "server")],
            in_an_hour(),
        )
        .await;
        options(&self.ca, c, "client")
    }
    async fn alice_opts(&self) -> ChannelOptions {
        let c = credential(
            &self.ca,
            self.alice.identifier(),
            &[("role", "client")],
            in_an_hour(),
        )
        .await;
        options(&self.ca, c, "server")
    }
}

fn refused_by_listener(init: &Result<SecureChannel, Error>, needle: &str) {
    match init {
        Err(Error::PeerRefused(reason)) => assert!(reason.contains(needle), "{reason}"),
        other => panic!("expected a refusal mentioning {needle:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_good_handshake_for_reference() {
    let w = world().await;
    let (i, r) = attempt(&w.alice, w.alice_opts().await, &w.bob, w.bob_opts().await).await;
    assert!(i.is_ok() && r.is_ok(), "{i:?} {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn untrusted_authority() {
    let w = world().await;
    let rogue = authority().await;
    let c = credential(
        &rogue,
        w.alice.identifier(),
        &[("role", "client")],
        in_an_hour(),
    )
    .await;
    let (i, r) = attempt(
        &w.alice,
        options(&w.ca, c, "server"),
        &w.bob,
        w.bob_opts().await,
    )
    .await;
    assert_eq!(
        r.unwrap_err(),
        Error::UntrustedAuthority(rogue.identifier())
    );
    refused_by_listener(&i, "untrusted authority");

    // And the other way round: the initiator refuses a listener vouched for by a rogue.
    let c = credential(
        &rogue,
        w.bob.identifier(),
        &[("role", "server")],
        in_an_hour(),
    )
    .await;
    let (i, r) = attempt(
        &w.alice,
        w.alice_opts().await,
        &w.bob,
        options(&w.ca, c, "client"),
    )
    .await;
    assert_eq!(
        i.unwrap_err(),
        Error::UntrustedAuthority(rogue.identifier())
    );
    assert!(matches!(r.unwrap_err(), Error::PeerRefused(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_is_trusted_by_default() {
    let w = world().await;
    let c = credential(
        &w.ca,
        w.alice.identifier(),
        &[("role", "client")],
        in_an_hour(),
    )
    .await;
    let (i, r) = attempt(
        &w.alice,
        open_options().with_credential(c),
        &w.bob,
        ChannelOptions::new(),
    )
    .await;
    assert_eq!(r.unwrap_err(), Error::UntrustedAuthority(w.ca.identifier()));
    refused_by_listener(&i, "untrusted authority");
    // No credentials at all and default options: the default policy denies.
    let (i, r) = attempt(
        &w.alice,
        ChannelOptions::new(),
        &w.bob,
        ChannelOptions::new(),
    )
    .await;
    assert!(matches!(i.unwrap_err(), Error::PolicyDenied { .. }));
    assert!(r.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_credential() {
    let w = world().await;
    let past = SystemTime::now() - Duration::from_secs(1);
    let c = credential(&w.ca, w.alice.identifier(), &[("role", "client")], past).await;
    let (i, r) = attempt(
        &w.alice,
        options(&w.ca, c, "server"),
        &w.bob,
        w.bob_opts().await,
    )
    .await;
    assert!(matches!(r.unwrap_err(), Error::CredentialExpired { .. }));
    refused_by_listener(&i, "expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credential_about_someone_else() {
    let w = world().await;
    let c = credential(
        &w.ca,
        w.bob.identifier(),
        &[("role", "client")],
        in_an_hour(),
    )
    .await;
    let (i, r) = attempt(
        &w.alice,
        options(&w.ca, c, "server"),
        &w.bob,
        w.bob_opts().await,
    )
    .await;
    assert!(matches!(
        r.unwrap_err(),
        Error::CredentialSubjectMismatch { .. }
    ));
    assert!(i.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_attestation() {
    let w = world().await;
    let vault = software_vault();
    let id = keywarden_channel::Identity::new(
        keywarden_channel::testing::signing_key(vault.clone(), "id").await,
    );
    let dh = agreement_key(vault, "dh").await;
    let att = id
        .attest(dh.public_key(), SystemTime::now() - Duration::from_secs(1))
        .await
        .unwrap();
    let stale = ChannelIdentity::with_attestation(id.clone(), dh, att);
    let c = credential(&w.ca, id.identifier(), &[("role", "client")], in_an_hour()).await;
    let (i, r) = attempt(
        &stale,
        options(&w.ca, c, "server"),
        &w.bob,
        w.bob_opts().await,
    )
    .await;
    assert_eq!(r.unwrap_err(), Error::AttestationExpired(id.identifier()));
    refused_by_listener(&i, "expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_attestation() {
    let w = world().await;
    let vault = software_vault();
    let id = keywarden_channel::Identity::new(
        keywarden_channel::testing::signing_key(vault.clone(), "id").await,
    );
    let dh = agreement_key(vault, "dh").await;
    let good = id.attest(dh.public_key(), in_an_hour()).await.unwrap();
    let mut bytes = good.to_bytes();
    let last = bytes.len() - 1;
    bytes[last] ^= 1; // the signature's last byte
    let forged = Attestation::from_bytes(&bytes).unwrap();
    let fake = ChannelIdentity::with_attestation(id.clone(), dh, forged);
    let c = credential(&w.ca, id.identifier(), &[("role", "server")], in_an_hour()).await;
    // The listener presents it; the initiator refuses before its vault does any DH.
    let (i, r) = attempt(
        &w.alice,
        w.alice_opts().await,
        &fake,
        options(&w.ca, c, "client"),
    )
    .await;
    assert_eq!(i.unwrap_err(), Error::AttestationForged(id.identifier()));
    assert!(matches!(r.unwrap_err(), Error::PeerRefused(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attested_key_is_not_the_noise_static_key() {
    let w = world().await;
    let vault = software_vault();
    let id = keywarden_channel::Identity::new(
        keywarden_channel::testing::signing_key(vault.clone(), "id").await,
    );
    let used = agreement_key(vault.clone(), "used").await;
    let attested = agreement_key(vault, "attested").await;
    let att = id
        .attest(attested.public_key(), in_an_hour())
        .await
        .unwrap();
    let liar = ChannelIdentity::with_attestation(id.clone(), used, att);
    let c = credential(&w.ca, id.identifier(), &[("role", "client")], in_an_hour()).await;
    let (i, r) = attempt(
        &liar,
        options(&w.ca, c, "server"),
        &w.bob,
        w.bob_opts().await,
    )
    .await;
    assert_eq!(r.unwrap_err(), Error::AttestedKeyMismatch(id.identifier()));
    refused_by_listener(&i, "static key other than");

    // Replaying Bob's genuine attestation with another static key fails the same way.
    let bob_att = w.bob.attestation_for_tests().await;
    let thief_key = agreement_key(software_vault(), "thief").await;
    let thief = ChannelIdentity::with_attestation(w.bob.identity().clone(), thief_key, bob_att);
    let (i, _) = attempt(&w.alice, w.alice_opts().await, &thief, w.bob_opts().await).await;
    assert_eq!(
        i.unwrap_err(),
        Error::AttestedKeyMismatch(w.bob.identifier())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn policy_denies_the_attributes() {
    let w = world().await;
    let c = credential(
        &w.ca,
        w.alice.identifier(),
        &[("role", "intern")],
        in_an_hour(),
    )
    .await;
    let (i, r) = attempt(
        &w.alice,
        options(&w.ca, c, "server"),
        &w.bob,
        w.bob_opts().await,
    )
    .await;
    match r.unwrap_err() {
        Error::PolicyDenied { peer, reason } => {
            assert_eq!(peer, w.alice.identifier());
            assert!(reason.contains("\"intern\""), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    refused_by_listener(&i, "policy denied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_listener_that_stalls_times_the_initiator_out() {
    let node = Node::new();
    let alice = identity_in(software_vault(), "alice").await;
    // A worker that swallows everything.
    let _sink = node.register(Address::new("sink").unwrap(), 16).unwrap();
    let t = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let err = node
        .create_secure_channel(
            &alice,
            Route::parse(["sink"]).unwrap(),
            open_options().handshake_timeout(t),
        )
        .await
        .unwrap_err();
    assert_eq!(err, Error::HandshakeTimeout(t));
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_initiator_that_stalls_times_the_listener_out() {
    let node = Node::new();
    let bob = identity_in(software_vault(), "bob").await;
    let t = Duration::from_secs(2);
    let mut listener = node
        .create_secure_channel_listener(
            &bob,
            Address::new("bob").unwrap(),
            open_options().handshake_timeout(t),
        )
        .unwrap();
    // Send a valid message 1 from a raw mailbox, then never answer message 2.
    let mut raw = node.register(Address::new("raw").unwrap(), 16).unwrap();
    let (_, m1) = keywarden_channel::noise::Initiator::new(
        bob.static_public_key(),
        keywarden_channel::PROLOGUE,
    )
    .unwrap()
    .write_message_1(&[])
    .unwrap();
    let mut payload = vec![0x01];
    payload.extend_from_slice(&m1);
    node.send(keywarden_channel::Message {
        onward: Route::parse(["bob"]).unwrap(),
        return_route: Route::parse(["raw"]).unwrap(),
        payload,
    })
    .await
    .unwrap();
    let m2 = raw.recv().await.unwrap();
    assert_eq!(m2.payload[0], 0x02);
    assert_eq!(
        listener.accept().await.unwrap_err(),
        Error::HandshakeTimeout(t)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cedar_policy_decides_on_verified_attributes() {
    use keywarden_channel::policy::CedarPolicy;
    let w = world().await;
    let policy = r#"
        permit (principal, action == Action::"connect", resource == Channel::"bob")
        when { context.attributes has role && context.attributes.role == "client" };
        @id("no-interns")
        forbid (principal, action, resource)
        when { context.attributes has level && context.attributes.level == "intern" };
    "#;
    let bob_cred = credential(
        &w.ca,
        w.bob.identifier(),
        &[("role", "server")],
        in_an_hour(),
    )
    .await;
    let bob_opts = || {
        ChannelOptions::new()
            .trust_authority(w.ca.identifier())
            .with_credential(bob_cred.clone())
            .with_policy(CedarPolicy::new(policy, "bob").unwrap())
    };
    let ok = credential(
        &w.ca,
        w.alice.identifier(),
        &[("role", "client")],
        in_an_hour(),
    )
    .await;
    let (i, r) = attempt(&w.alice, options(&w.ca, ok, "server"), &w.bob, bob_opts()).await;
    assert!(i.is_ok() && r.is_ok(), "{i:?} {r:?}");

    let intern = credential(
        &w.ca,
        w.alice.identifier(),
        &[("role", "client"), ("level", "intern")],
        in_an_hour(),
    )
    .await;
    let (i, r) = attempt(
        &w.alice,
        options(&w.ca, intern, "server"),
        &w.bob,
        bob_opts(),
    )
    .await;
    match r.unwrap_err() {
        Error::PolicyDenied { reason, .. } => assert!(reason.contains("no-interns"), "{reason}"),
        other => panic!("{other:?}"),
    }
    refused_by_listener(&i, "no-interns");
}
