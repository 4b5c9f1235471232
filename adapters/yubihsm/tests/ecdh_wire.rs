//! ECDH end to end through the yubihsm crate's real client, against a fake YubiHSM 2 written
//! from the protocol description (MockHsm cannot do Derive ECDH). Checks the bytes of the
//! Derive ECDH command on the wire, the shared secret against software ECDH, and the refusal
//! paths on both sides of the wire.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod fake_yubihsm;

use std::sync::Arc;

use fake_yubihsm::{CAP_DERIVE_ECDH, CMD_DERIVE_ECDH, FakeYubiHsm};
use keywarden_vault::testing::{Harness, software_ecdh, software_p256};
use keywarden_vault::{Algorithm, Error, KeyInfo, KeySpec, Vault};
use keywarden_yubihsm::{Config, ConnectorConfig, YubiHsmVault};

const PASSWORD: &str = "fake-device-password";

async fn open(fake: &FakeYubiHsm) -> YubiHsmVault {
    let config = Config::new(ConnectorConfig::http(fake.url()), PASSWORD);
    YubiHsmVault::open(&config)
        .await
        .expect("open the fake YubiHSM")
}

async fn ecdh_key(vault: &YubiHsmVault) -> KeyInfo {
    vault
        .generate(&KeySpec::new(Algorithm::EcdhP256, "ecdh-wire").unwrap())
        .await
        .unwrap()
}

fn id_of(key: &KeyInfo) -> u16 {
    u16::from_be_bytes(key.key_ref.as_bytes().try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derive_ecdh_on_the_wire_and_its_answer() {
    let fake = FakeYubiHsm::start(PASSWORD);
    let vault = open(&fake).await;
    assert!(vault.info().supports(Algorithm::EcdhP256));
    let key = ecdh_key(&vault).await;
    {
        let state = fake.state.lock().unwrap();
        let on_device = &state.keys[&id_of(&key)];
        assert_eq!(on_device.capabilities, CAP_DERIVE_ECDH, "derive-ecdh only");
        assert_eq!(&on_device.label[..9], b"ecdh-wire");
        assert!(on_device.label[9..].iter().all(|b| *b == 0));
    }

    let (eph_secret, eph_public) = software_p256();
    let ours = vault.agree(&key.key_ref, &eph_public).await.unwrap();
    assert_eq!(
        ours.expose_secret(),
        &software_ecdh(&eph_secret, &key.public_key)[..],
        "the adapter's answer is the x-coordinate of the shared point"
    );

    // The command as the device received it (after SCP03 decryption):
    // 0x57 || length 0x0043 || object id (BE) || 04 || x || y.
    let sent = fake.commands(CMD_DERIVE_ECDH);
    assert_eq!(sent.len(), 1);
    let mut expected = vec![CMD_DERIVE_ECDH, 0x00, 0x43];
    expected.extend_from_slice(&id_of(&key).to_be_bytes());
    expected.extend_from_slice(eph_public.as_bytes());
    assert_eq!(eph_public.as_bytes()[0], 0x04);
    assert_eq!(sent[0], expected);
    assert_eq!(
        sent[0],
        [
            &[CMD_DERIVE_ECDH, 0x00, 0x43][..],
            &keywarden_yubihsm::ecdh::request_data(id_of(&key), &eph_public).unwrap()
        ]
        .concat(),
        "ecdh::request_data describes what goes on the wire"
    );
}

/// The conformance suite's own ECDH check, run against the fake device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_ecdh_check_passes_on_the_fake_device() {
    let fake = FakeYubiHsm::start(PASSWORD);
    let harness = Harness::new(Arc::new(open(&fake).await), fake.clone());
    keywarden_vault::testing::ecdh_matches_software(&harness).await;
    assert_eq!(fake.commands(CMD_DERIVE_ECDH).len(), 3);
}

/// The adapter refuses before sending (nothing reaches the device), and the device's own
/// refusal (an authentication key without `derive-ecdh`) maps to the same `PermissionDenied`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_on_both_sides_of_the_wire() {
    let fake = FakeYubiHsm::start(PASSWORD);
    let vault = open(&fake).await;
    let signer = vault
        .generate(&KeySpec::new(Algorithm::EcdsaP256Sha256, "signer").unwrap())
        .await
        .unwrap();
    let agreer = ecdh_key(&vault).await;
    let (_, peer) = software_p256();

    let e = vault.agree(&signer.key_ref, &peer).await.unwrap_err();
    assert!(matches!(e, Error::PermissionDenied(_)), "{e:?}");
    assert!(e.to_string().contains("refused before sending"), "{e}");
    let e = vault.sign(&agreer.key_ref, b"m").await.unwrap_err();
    assert!(matches!(e, Error::PermissionDenied(_)), "{e:?}");
    assert!(
        fake.commands(CMD_DERIVE_ECDH).is_empty() && fake.commands(0x56).is_empty(),
        "a refused operation reached the device"
    );

    fake.state.lock().unwrap().refuse_derive = true;
    let e = vault.agree(&agreer.key_ref, &peer).await.unwrap_err();
    assert!(matches!(e, Error::PermissionDenied(_)), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("YHR_DEVICE_INSUFFICIENT_PERMISSIONS"), "{msg}");
    assert!(msg.contains("the YubiHSM refused"), "{msg}");
    assert_eq!(fake.commands(CMD_DERIVE_ECDH).len(), 1);

    // The session survives a refusal.
    fake.state.lock().unwrap().refuse_derive = false;
    assert_eq!(vault.agree(&agreer.key_ref, &peer).await.unwrap().len(), 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_answer_is_a_backend_error() {
    let fake = FakeYubiHsm::start(PASSWORD);
    let vault = open(&fake).await;
    let key = ecdh_key(&vault).await;
    fake.state.lock().unwrap().malformed_derive_answer = true;
    let (_, peer) = software_p256();
    let e = vault.agree(&key.key_ref, &peer).await.unwrap_err();
    match &e {
        Error::Backend { code, message, .. } => {
            assert_eq!(code, "DERIVE_ECDH_RESPONSE");
            assert!(message.contains("65 bytes"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_checks_the_password_like_a_device() {
    let fake = FakeYubiHsm::start(PASSWORD);
    let config = Config::new(ConnectorConfig::http(fake.url()), "wrong");
    let e = YubiHsmVault::open(&config).await.unwrap_err();
    assert!(matches!(e, Error::AuthenticationFailed(_)), "{e:?}");
}
