//! `RemoteVault` (the `Vault` trait over the service API) passes the same conformance suite
//! as every local backend, with the service and its embedded hsm-sim token behind it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::Arc;

use keywarden::client::{Client, RemoteVault};
use keywarden::proto::v1 as pb;
use keywarden_vault::KeyRef;
use keywarden_vault::testing::{ExportAttempt, Harness};

/// Over the service API, the only ways to read anything about a key are GetKey, GetPublicKey
/// and ListKeys; each must return nothing but public keys. (Non-exportability of the token
/// itself is checked by hsm-sim's own conformance run.)
fn export_probe(
    socket: std::path::PathBuf,
) -> impl Fn(&KeyRef) -> Vec<ExportAttempt> + Send + Sync {
    move |key: &KeyRef| {
        let socket = socket.clone();
        let name = String::from_utf8(key.as_bytes().to_vec()).unwrap();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut rpc = Client::connect(&socket).await.unwrap().rpc();
                let key = rpc
                    .get_key(pb::KeyName { name: name.clone() })
                    .await
                    .unwrap()
                    .into_inner();
                let public = rpc
                    .get_public_key(pb::GetPublicKeyRequest {
                        name: name.clone(),
                        version: 0,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let only_public =
                    |spki: &[u8]| keywarden_vault::PublicKey::from_spki_der(spki).is_ok();
                vec![
                    ExportAttempt {
                        method: "KeyService.GetKey".into(),
                        outcome: if key.versions.iter().all(|v| only_public(&v.public_key)) {
                            Err("returns SubjectPublicKeyInfo only".into())
                        } else {
                            Ok(key
                                .versions
                                .iter()
                                .flat_map(|v| v.public_key.clone())
                                .collect())
                        },
                    },
                    ExportAttempt {
                        method: "KeyService.GetPublicKey".into(),
                        outcome: if only_public(&public.spki_der) {
                            Err("returns SubjectPublicKeyInfo only".into())
                        } else {
                            Ok(public.spki_der)
                        },
                    },
                ]
            })
        })
        .join()
        .unwrap()
    }
}

async fn harness() -> Harness {
    let service = tokio::task::spawn_blocking(common::Service::start)
        .await
        .unwrap();
    let client = Client::connect(&service.socket).await.unwrap();
    let vault = RemoteVault::new(client).await.unwrap();
    let probe = export_probe(service.socket.clone());
    Harness::new(Arc::new(vault), service).with_export_probe(Arc::new(probe))
}

keywarden_vault::conformance_tests!(harness);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_service_is_a_clear_error() {
    let e = Client::connect(std::path::Path::new("/nonexistent/keywarden.sock"))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot reach the keywarden service at /nonexistent/keywarden.sock: No such file or directory (os error 2)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_peer_keys_and_oversized_messages_are_refused_over_the_api() {
    let service = tokio::task::spawn_blocking(common::Service::start)
        .await
        .unwrap();
    let mut rpc = Client::connect(&service.socket).await.unwrap().rpc();
    rpc.create_key(pb::CreateKeyRequest {
        name: "dh".into(),
        algorithm: "ecdh-p256".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    // Off the curve: the generator with its last byte changed.
    let mut bad = hex::decode("046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c2964fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5").unwrap();
    bad[64] ^= 1;
    for (peer, why) in [
        (bad, "not on the curve"),
        (vec![0x04; 10], "got 10 bytes"),
        (
            vec![0x30, 0x03, 0x01, 0x01, 0x00],
            "not a DER SubjectPublicKeyInfo",
        ),
    ] {
        let e = rpc
            .agree(pb::AgreeRequest {
                name: "dh".into(),
                peer_public_key: peer,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(why), "{}", e.message());
    }
    rpc.create_key(pb::CreateKeyRequest {
        name: "s".into(),
        algorithm: "ecdsa-p256".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let e = rpc
        .sign(pb::SignRequest {
            name: "s".into(),
            message: vec![1; keywarden_vault::MAX_MESSAGE_LEN + 1],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("limit is 1048576 bytes"),
        "{}",
        e.message()
    );
    // A request far beyond the decoder's limit (2 MiB + 64 KiB) is refused by the transport,
    // and the service lives on.
    let far = rpc
        .sign(pb::SignRequest {
            name: "s".into(),
            message: vec![1; 3 * 1024 * 1024],
        })
        .await;
    assert!(far.is_err());
    // Still serving.
    rpc.sign(pb::SignRequest {
        name: "s".into(),
        message: b"ok".to_vec(),
    })
    .await
    .unwrap();
}
