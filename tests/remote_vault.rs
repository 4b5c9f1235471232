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
