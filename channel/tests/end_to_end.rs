//! Channels end to end: in one node, and over TCP through two relays with the static keys in
//! SoftHSM2, with every byte the relays forwarded inspected for plaintext.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use keywarden_channel::{Address, Node, Route};

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_one_node_messages_flow_both_ways_and_close_is_orderly() {
    let node = Node::new();
    let alice = identity_in(software_vault(), "alice").await;
    let bob = identity_in(software_vault(), "bob").await;
    let mut listener = node
        .create_secure_channel_listener(&bob, Address::new("bob").unwrap(), open_options())
        .unwrap();
    let route = Route::parse(["bob"]).unwrap();
    let (a, b) = tokio::join!(
        node.create_secure_channel(&alice, route, open_options()),
        listener.accept()
    );
    let (mut a, mut b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.peer_identifier(), bob.identifier());
    assert_eq!(b.peer_identifier(), alice.identifier());
    for i in 0..100u32 {
        a.send(&i.to_be_bytes()).await.unwrap();
        assert_eq!(b.recv().await.unwrap().unwrap(), i.to_be_bytes());
        b.send(format!("reply {i}").as_bytes()).await.unwrap();
        assert_eq!(
            a.recv().await.unwrap().unwrap(),
            format!("reply {i}").as_bytes()
        );
    }
    a.send(b"").await.unwrap();
    assert_eq!(b.recv().await.unwrap().unwrap(), b"");
    a.close().await.unwrap();
    assert_eq!(b.recv().await.unwrap(), None);
    assert!(a.send(b"after close").await.is_err());
    assert_eq!(a.rejected_frames().0, 0);
    assert_eq!(b.rejected_frames().0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_tcp_through_two_relays_softhsm_to_hsm_sim_relays_see_only_ciphertext() {
    // Alice's identity and static key in SoftHSM2, Bob's in hsm-sim (both through
    // keywarden-pkcs11, each a PKCS#11 module loaded as a shared library).
    let sim_dir = tempfile::tempdir().unwrap();
    let bob_vault = hsm_sim_vault(sim_dir.path());
    let (alice_vault, _t1) = softhsm_vault();
    let alice = identity_in(alice_vault, "alice").await;
    let bob = identity_in(bob_vault, "bob").await;
    let ca = authority().await;
    let alice_cred = credential(
        &ca,
        alice.identifier(),
        &[("role", "client"), ("secret-attr", "ATTRIBUTE-PLAINTEXT")],
        in_an_hour(),
    )
    .await;
    let bob_cred = credential(&ca, bob.identifier(), &[("role", "server")], in_an_hour()).await;

    let (a_node, r1, r2, b_node) = (Node::new(), Node::new(), Node::new(), Node::new());
    let seen: Arc<Mutex<Vec<u8>>> = Arc::default();
    for relay in [&r1, &r2] {
        let seen = seen.clone();
        relay.set_wire_tap(Some(Arc::new(move |bytes: &[u8]| {
            seen.lock().unwrap().extend_from_slice(bytes)
        })));
    }
    let localhost = "127.0.0.1:0".parse().unwrap();
    let b_addr = b_node.tcp_listen(localhost).await.unwrap();
    let r2_addr = r2.tcp_listen(localhost).await.unwrap();
    let r1_addr = r1.tcp_listen(localhost).await.unwrap();
    let r2_to_b = r2.tcp_connect(b_addr).await.unwrap();
    r2.create_relay(
        Address::new("relay").unwrap(),
        Route::from_vec(vec![r2_to_b]).unwrap(),
    )
    .unwrap();
    let r1_to_r2 = r1.tcp_connect(r2_addr).await.unwrap();
    r1.create_relay(
        Address::new("relay").unwrap(),
        Route::from_vec(vec![r1_to_r2]).unwrap(),
    )
    .unwrap();
    let a_to_r1 = a_node.tcp_connect(r1_addr).await.unwrap();

    let mut listener = b_node
        .create_secure_channel_listener(
            &bob,
            Address::new("bob").unwrap(),
            options(&ca, bob_cred, "client"),
        )
        .unwrap();
    let route = Route::from_vec(vec![
        a_to_r1,
        Address::new("relay").unwrap(),
        Address::new("relay").unwrap(),
        Address::new("bob").unwrap(),
    ])
    .unwrap();
    let (a, b) = tokio::join!(
        a_node.create_secure_channel(&alice, route, options(&ca, alice_cred, "server")),
        listener.accept()
    );
    let (mut a, mut b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.peer_identifier(), bob.identifier());
    assert_eq!(
        a.peer().attributes.get("role").map(String::as_str),
        Some("server")
    );
    assert_eq!(
        b.peer().attributes.get("role").map(String::as_str),
        Some("client")
    );
    // The return path runs through both relay nodes' connections, not around them.
    assert_eq!(a.peer_route().len(), 4, "{}", a.peer_route());

    let secrets: Vec<Vec<u8>> = (0..50)
        .map(|i| format!("PLAINTEXT-SECRET-{i:04}-from-alice").into_bytes())
        .collect();
    for s in &secrets {
        a.send(s).await.unwrap();
        assert_eq!(&b.recv().await.unwrap().unwrap(), s);
        let mut reply = s.clone();
        reply.extend_from_slice(b"-REPLIED");
        b.send(&reply).await.unwrap();
        assert_eq!(a.recv().await.unwrap().unwrap(), reply);
    }
    let big = vec![b'Z'; 60_000];
    a.send(&big).await.unwrap();
    assert_eq!(b.recv().await.unwrap().unwrap(), big);
    a.close().await.unwrap();
    assert_eq!(b.recv().await.unwrap(), None);

    let wire = seen.lock().unwrap().clone();
    assert!(
        wire.len() > 50 * 2 * 2 * 40,
        "the relays forwarded {} bytes",
        wire.len()
    );
    for s in &secrets {
        assert!(!contains(&wire, s), "plaintext on a relay");
    }
    assert!(!contains(&wire, b"PLAINTEXT"));
    assert!(!contains(&wire, b"REPLIED"));
    assert!(!contains(&wire, &[b'Z'; 32]));
    assert!(
        !contains(&wire, b"ATTRIBUTE-PLAINTEXT"),
        "credentials travel encrypted"
    );
    assert!(!contains(&wire, b"server"));
    // XX hides both static keys and both identities from the relays.
    for key in [alice.static_public_key(), bob.static_public_key()] {
        assert!(!contains(&wire, key.as_bytes()), "static key in the clear");
    }
    for id in [alice.identity().public_key(), bob.identity().public_key()] {
        assert!(
            !contains(&wire, &id.as_bytes()[1..33]),
            "identity key in the clear"
        );
    }
    for n in [a_node, r1, r2, b_node] {
        n.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_linked_in_process() {
    let (a_node, b_node) = (Node::new(), Node::new());
    let (a_to_b, _) = a_node.link_in_process(&b_node).unwrap();
    let alice = identity_in(software_vault(), "alice").await;
    let bob = identity_in(software_vault(), "bob").await;
    let mut listener = b_node
        .create_secure_channel_listener(&bob, Address::new("bob").unwrap(), open_options())
        .unwrap();
    let route = Route::from_vec(vec![a_to_b, Address::new("bob").unwrap()]).unwrap();
    let (a, b) = tokio::join!(
        a_node.create_secure_channel(&alice, route, open_options()),
        listener.accept()
    );
    let (mut a, mut b) = (a.unwrap(), b.unwrap());
    b.send(b"hello over the link").await.unwrap();
    assert_eq!(a.recv().await.unwrap().unwrap(), b"hello over the link");
    a.send(b"and back").await.unwrap();
    assert_eq!(b.recv().await.unwrap().unwrap(), b"and back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credentials_refresh_inside_the_channel() {
    let node = Node::new();
    let alice = identity_in(software_vault(), "alice").await;
    let bob = identity_in(software_vault(), "bob").await;
    let ca = authority().await;
    let a1 = credential(
        &ca,
        alice.identifier(),
        &[("role", "client"), ("tier", "1")],
        in_an_hour(),
    )
    .await;
    let b1 = credential(&ca, bob.identifier(), &[("role", "server")], in_an_hour()).await;
    let mut listener = node
        .create_secure_channel_listener(
            &bob,
            Address::new("bob").unwrap(),
            options(&ca, b1, "client"),
        )
        .unwrap();
    let (a, b) = tokio::join!(
        node.create_secure_channel(
            &alice,
            Route::parse(["bob"]).unwrap(),
            options(&ca, a1, "server")
        ),
        listener.accept()
    );
    let (mut a, mut b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        b.peer().attributes.get("tier").map(String::as_str),
        Some("1")
    );

    let a2 = credential(
        &ca,
        alice.identifier(),
        &[("role", "client"), ("tier", "2")],
        in_an_hour(),
    )
    .await;
    a.refresh_credentials(&[a2]).await.unwrap();
    a.send(b"after refresh").await.unwrap();
    assert_eq!(b.recv().await.unwrap().unwrap(), b"after refresh");
    assert_eq!(
        b.peer().attributes.get("tier").map(String::as_str),
        Some("2")
    );

    // A refresh from an untrusted authority is ignored; the verified attributes stay.
    let rogue = authority().await;
    let bad = credential(
        &rogue,
        alice.identifier(),
        &[("role", "client"), ("tier", "9")],
        in_an_hour(),
    )
    .await;
    a.refresh_credentials(&[bad]).await.unwrap();
    a.send(b"still here").await.unwrap();
    assert_eq!(b.recv().await.unwrap().unwrap(), b"still here");
    assert_eq!(
        b.peer().attributes.get("tier").map(String::as_str),
        Some("2")
    );

    // A refresh that no longer satisfies the policy ends the channel.
    let demoted = credential(&ca, alice.identifier(), &[("role", "guest")], in_an_hour()).await;
    a.refresh_credentials(&[demoted]).await.unwrap();
    let err = b.recv().await.unwrap_err();
    assert!(err.to_string().contains("policy denied"), "{err}");
    assert_eq!(b.recv().await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_static_keys_in_softhsm_over_tcp() {
    let mut tokens = softhsm_vaults(2);
    let (bob_vault, _t2) = tokens.pop().unwrap();
    let (alice_vault, _t1) = tokens.pop().unwrap();
    assert!(alice_vault.info().hardware_resident);
    let alice = identity_in(alice_vault, "alice").await;
    let bob = identity_in(bob_vault, "bob").await;
    let (a_node, b_node) = (Node::new(), Node::new());
    let b_addr = b_node
        .tcp_listen("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut listener = b_node
        .create_secure_channel_listener(&bob, Address::new("bob").unwrap(), open_options())
        .unwrap();
    let conn = a_node.tcp_connect(b_addr).await.unwrap();
    let route = Route::from_vec(vec![conn, Address::new("bob").unwrap()]).unwrap();
    let (a, b) = tokio::join!(
        a_node.create_secure_channel(&alice, route, open_options()),
        listener.accept()
    );
    let (mut a, mut b) = (a.unwrap(), b.unwrap());
    a.send(b"ping").await.unwrap();
    assert_eq!(b.recv().await.unwrap().unwrap(), b"ping");
    b.send(b"pong").await.unwrap();
    assert_eq!(a.recv().await.unwrap().unwrap(), b"pong");
}
