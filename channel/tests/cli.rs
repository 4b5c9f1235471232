//! The CLI building blocks end to end: listen, relay, connect by key labels, pipe.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::*;
use keywarden_channel::cli;
use keywarden_channel::testing::{agreement_key, signing_key};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listen_relay_connect_pipe() {
    let server_vault = software_vault();
    signing_key(server_vault.clone(), "srv-id").await;
    agreement_key(server_vault.clone(), "srv-dh").await;
    let client_vault = software_vault();
    signing_key(client_vault.clone(), "cli-id").await;
    agreement_key(client_vault.clone(), "cli-dh").await;
    let server = cli::open_identity(server_vault, "srv-id", "srv-dh", HOUR)
        .await
        .unwrap();
    let client = cli::open_identity(client_vault.clone(), "cli-id", "cli-dh", HOUR)
        .await
        .unwrap();
    assert!(
        cli::open_identity(client_vault, "nope", "cli-dh", HOUR)
            .await
            .is_err()
    );

    let localhost = "127.0.0.1:0".parse().unwrap();
    let mut srv = cli::listen(&server, localhost, "echo", open_options())
        .await
        .unwrap();
    let echo = tokio::spawn(async move {
        let mut ch = srv.listener.accept().await.unwrap();
        while let Some(m) = ch.recv().await.unwrap() {
            ch.send(&m).await.unwrap();
        }
        ch.close().await.unwrap();
        ch.peer_identifier()
    });
    let (_relay, relay_addr) = cli::relay(localhost, "relay", srv.local_addr)
        .await
        .unwrap();
    let (_node, channel) = cli::connect(&client, relay_addr, &["relay", "echo"], open_options())
        .await
        .unwrap();
    let input: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let mut output = Vec::new();
    cli::pipe(channel, std::io::Cursor::new(input.clone()), &mut output)
        .await
        .unwrap();
    assert_eq!(output, input);
    assert_eq!(echo.await.unwrap(), client.identifier());
}
