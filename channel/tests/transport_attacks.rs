//! Attacks on an established channel by a worker on the path: flipped bits, replays,
//! reordering beyond the window, truncation. Each frame is refused and counted; the channel
//! keeps working, including past rekeys.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use common::*;
use keywarden_channel::transport::{REPLAY_WINDOW, TransportConfig};
use keywarden_channel::{Address, FrameError, Mailbox, Message, Node, Route, SecureChannel};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Attack {
    Flip(usize),
    Replay,
    Truncate(usize),
    Hold,
    ReleaseHeld,
}

type Plan = Arc<Mutex<VecDeque<Attack>>>;

/// A man in the middle between two nodes: a hand-written in-process transport whose
/// forward direction applies the next planned attack to each transport frame.
fn mitm(a: &Node, b: &Node, plan: Plan) -> Address {
    let fwd = a.register(Address::new("mitm-a").unwrap(), 4096).unwrap();
    let back = b.register(Address::new("mitm-b").unwrap(), 4096).unwrap();
    async fn pump(mut mb: Mailbox, to: Node, via: &'static str, plan: Option<Plan>) {
        let mut held: Vec<Message> = Vec::new();
        while let Some(mut msg) = mb.recv().await {
            msg.onward.pop_front();
            msg.return_route.push_front(Address::new(via).unwrap());
            let is_frame = msg.payload.first() == Some(&0x04);
            let attack = match (&plan, is_frame) {
                (Some(p), true) => p.lock().unwrap().pop_front(),
                _ => None,
            };
            match attack {
                None => to.send(msg).await.unwrap(),
                Some(Attack::Flip(bit)) => {
                    let mut bad = msg.clone();
                    let i = 1 + (bit / 8) % (bad.payload.len() - 1);
                    bad.payload[i] ^= 1 << (bit % 8);
                    to.send(bad).await.unwrap();
                    to.send(msg).await.unwrap();
                }
                Some(Attack::Replay) => {
                    to.send(msg.clone()).await.unwrap();
                    to.send(msg).await.unwrap();
                }
                Some(Attack::Truncate(n)) => {
                    let mut bad = msg.clone();
                    let keep = bad.payload.len().saturating_sub(n).max(1);
                    bad.payload.truncate(keep);
                    to.send(bad).await.unwrap();
                    to.send(msg).await.unwrap();
                }
                Some(Attack::Hold) => {
                    held.push(msg.clone());
                    to.send(msg).await.unwrap();
                }
                Some(Attack::ReleaseHeld) => {
                    to.send(msg).await.unwrap();
                    for h in held.drain(..) {
                        to.send(h).await.unwrap();
                    }
                }
            }
        }
    }
    tokio::spawn(pump(fwd, b.clone(), "mitm-b", Some(plan)));
    tokio::spawn(pump(back, a.clone(), "mitm-a", None));
    Address::new("mitm-a").unwrap()
}

async fn channel_through_mitm(plan: Plan) -> (SecureChannel, SecureChannel, Vec<Node>) {
    let (a_node, b_node) = (Node::new(), Node::new());
    let first = mitm(&a_node, &b_node, plan);
    let alice = identity_in(software_vault(), "alice").await;
    let bob = identity_in(software_vault(), "bob").await;
    let config = TransportConfig {
        rekey_interval: REPLAY_WINDOW,
        max_frame_len: 65535,
    };
    let mut listener = b_node
        .create_secure_channel_listener(
            &bob,
            Address::new("bob").unwrap(),
            open_options().transport(config),
        )
        .unwrap();
    let route = Route::from_vec(vec![first, Address::new("bob").unwrap()]).unwrap();
    let (a, b) = tokio::join!(
        a_node.create_secure_channel(&alice, route, open_options().transport(config)),
        listener.accept()
    );
    (a.unwrap(), b.unwrap(), vec![a_node, b_node])
}

fn plan(attacks: &[Attack]) -> Plan {
    Arc::new(Mutex::new(attacks.iter().copied().collect()))
}

/// Sends `n` numbered messages and checks each arrives once, in order.
async fn flow(a: &mut SecureChannel, b: &mut SecureChannel, from: u32, n: u32) {
    for i in from..from + n {
        a.send(&i.to_be_bytes()).await.unwrap();
        assert_eq!(
            b.recv().await.unwrap().unwrap(),
            i.to_be_bytes(),
            "message {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flipped_bits_are_refused_and_the_channel_lives_on() {
    let attacks: Vec<Attack> = (0..40).map(|i| Attack::Flip(i * 13)).collect();
    let p = plan(&attacks);
    let (mut a, mut b, _n) = channel_through_mitm(p.clone()).await;
    flow(&mut a, &mut b, 0, 60).await;
    let (rejected, last) = b.rejected_frames();
    assert_eq!(rejected, 40);
    // A flip in the nonce shows as a bad nonce (too far ahead, too old) or a failed tag.
    assert!(last.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replays_are_refused() {
    let p = plan(&[Attack::Replay, Attack::Replay, Attack::Replay]);
    let (mut a, mut b, _n) = channel_through_mitm(p).await;
    flow(&mut a, &mut b, 0, 10).await;
    let (rejected, last) = b.rejected_frames();
    assert_eq!(rejected, 3);
    assert!(matches!(last, Some(FrameError::Replay(_))), "{last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn truncated_frames_are_refused() {
    let attacks: Vec<Attack> = [1, 5, 16, 17, 20, 30, 1000].map(Attack::Truncate).to_vec();
    let p = plan(&attacks);
    let (mut a, mut b, _n) = channel_through_mitm(p).await;
    flow(&mut a, &mut b, 0, 10).await;
    let (rejected, last) = b.rejected_frames();
    assert_eq!(rejected, 7);
    assert!(
        matches!(
            last,
            Some(FrameError::Truncated(_) | FrameError::Authentication)
        ),
        "{last:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reordering_beyond_the_window_is_refused_and_rekeys_pass() {
    // Hold a copy of message 0, deliver it again after more than a window (and a rekey).
    let p = plan(&[Attack::Hold]);
    let (mut a, mut b, _n) = channel_through_mitm(p.clone()).await;
    flow(&mut a, &mut b, 0, (REPLAY_WINDOW + 5) as u32).await;
    // Release the copy of message 0 after message REPLAY_WINDOW + 5.
    {
        let mut q = p.lock().unwrap();
        q.push_back(Attack::ReleaseHeld);
    }
    flow(&mut a, &mut b, (REPLAY_WINDOW + 5) as u32, 1).await;
    // Messages keep flowing across several more rekey intervals.
    flow(
        &mut a,
        &mut b,
        (REPLAY_WINDOW + 6) as u32,
        (REPLAY_WINDOW * 3) as u32,
    )
    .await;
    let (rejected, last) = b.rejected_frames();
    assert_eq!(rejected, 1);
    assert_eq!(last, Some(FrameError::TooOld(0)));
    // And the other direction crossed no rekey trouble either.
    b.send(b"back").await.unwrap();
    assert_eq!(a.recv().await.unwrap().unwrap(), b"back");
}
