//! What the conformance suite does not cover: capabilities on the device, refusals before
//! sending, bad credentials and ids, an unreachable or restarting connector, lost sessions.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use keywarden_vault::testing::{independent_verify, software_p256};
use keywarden_vault::{Algorithm, Error, KeyRef, KeySpec, Vault};
use keywarden_yubihsm::yubihsm::{Capability, Connector, Domain, object};
use keywarden_yubihsm::{
    Config, ConnectorConfig, EXPORTABLE_ATTRIBUTE, MAX_ED25519_MESSAGE_LEN, YubiHsmVault,
};

fn spec(algorithm: Algorithm, label: &str) -> KeySpec {
    KeySpec::new(algorithm, label).unwrap()
}

fn id(key: &KeyRef) -> u16 {
    u16::from_be_bytes(key.as_bytes().try_into().unwrap())
}

fn device_info(connector: &Connector, key: &KeyRef) -> object::Info {
    common::side_client(connector)
        .get_object_info(id(key), object::Type::AsymmetricKey)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_has_only_its_capability_its_label_and_the_domains() {
    let (vault, connector) = common::mock_vault().await;
    let label40 = "l".repeat(40);
    for (algorithm, cap, label) in [
        (
            Algorithm::EcdsaP256Sha256,
            Capability::SIGN_ECDSA,
            "payments-signing",
        ),
        (
            Algorithm::EcdhP256,
            Capability::DERIVE_ECDH,
            "channel-static",
        ),
        (Algorithm::Ed25519, Capability::SIGN_EDDSA, label40.as_str()),
    ] {
        let key = vault.generate(&spec(algorithm, label)).await.unwrap();
        assert_eq!(key.key_ref.as_bytes().len(), 2, "object id as KeyRef");
        let info = device_info(&connector, &key.key_ref);
        assert_eq!(info.object_id, id(&key.key_ref));
        assert_eq!(info.capabilities, cap, "{algorithm}: exactly {cap:?}");
        assert!(
            !info
                .capabilities
                .contains(Capability::EXPORTABLE_UNDER_WRAP)
        );
        assert_eq!(info.domains, Domain::DOM1);
        assert_eq!(
            info.label.try_as_str().unwrap(),
            label,
            "label on the device"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_domains_and_extra_capabilities_reach_the_device() {
    let connector = Connector::mockhsm();
    let mut config = common::mock_config();
    config.domains = vec![2, 5];
    config.key_capabilities = vec!["sign-attestation-certificate".into()];
    let vault = YubiHsmVault::open_with_connector(&config, connector.clone())
        .await
        .unwrap();
    let key = vault
        .generate(&spec(Algorithm::EcdsaP256Sha256, "extra"))
        .await
        .unwrap();
    let info = device_info(&connector, &key.key_ref);
    assert_eq!(info.domains, Domain::DOM2 | Domain::DOM5);
    assert_eq!(
        info.capabilities,
        Capability::SIGN_ECDSA | Capability::SIGN_ATTESTATION_CERTIFICATE
    );

    // A vault on other domains does not see (or touch) the key.
    let other = YubiHsmVault::open_with_connector(&common::mock_config(), connector.clone())
        .await
        .unwrap();
    let e = other.sign(&key.key_ref, b"m").await.unwrap_err();
    assert!(matches!(e, Error::KeyNotFound(_)), "{e:?}");
    assert!(
        e.to_string().contains("outside this vault's domains"),
        "{e}"
    );
    assert!(other.list().await.unwrap().is_empty());
    assert!(other.destroy(&key.key_ref).await.is_err());
    assert!(vault.describe(&key.key_ref).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exportable_under_wrap_only_when_the_spec_asks() {
    let (vault, connector) = common::mock_vault().await;
    let probe = common::export_probe(&connector);
    let exportable = vault
        .generate(
            &spec(Algorithm::EcdsaP256Sha256, "exportable")
                .with_attribute(EXPORTABLE_ATTRIBUTE, "true"),
        )
        .await
        .unwrap();
    let info = device_info(&connector, &exportable.key_ref);
    assert_eq!(
        info.capabilities,
        Capability::SIGN_ECDSA | Capability::EXPORTABLE_UNDER_WRAP
    );
    // Positive control: the probe does get an exportable key out, so its refusals below mean
    // something.
    let attempts = probe(&exportable.key_ref);
    assert!(
        attempts[0].outcome.is_ok(),
        "{}: {:?}",
        attempts[0].method,
        attempts[0].outcome
    );
    for algorithm in [
        Algorithm::EcdsaP256Sha256,
        Algorithm::EcdhP256,
        Algorithm::Ed25519,
    ] {
        let key = vault.generate(&spec(algorithm, "sealed")).await.unwrap();
        for attempt in probe(&key.key_ref) {
            assert!(
                attempt.outcome.is_err(),
                "{algorithm}: {} exported the key",
                attempt.method
            );
        }
    }
    let e = vault
        .generate(
            &spec(Algorithm::EcdsaP256Sha256, "bad").with_attribute(EXPORTABLE_ATTRIBUTE, "1"),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
}

/// MockHsm does not enforce capabilities: a side client signs with an ECDH key. The adapter
/// must therefore refuse before sending, and does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapter_refuses_what_the_capabilities_do_not_allow_before_sending() {
    let (vault, connector) = common::mock_vault().await;
    let signer = vault
        .generate(&spec(Algorithm::EcdsaP256Sha256, "signer"))
        .await
        .unwrap();
    let agreer = vault
        .generate(&spec(Algorithm::EcdhP256, "agreer"))
        .await
        .unwrap();

    // The quirk: MockHsm signs with a derive-ecdh-only key when asked directly.
    let digest = [7u8; 32];
    assert!(
        common::side_client(&connector)
            .sign_ecdsa_prehash_raw(id(&agreer.key_ref), digest.to_vec())
            .is_ok(),
        "MockHsm now enforces capabilities: add a device-path test here"
    );

    let e = vault.sign(&agreer.key_ref, b"m").await.unwrap_err();
    assert!(matches!(e, Error::PermissionDenied(_)), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("derive-ecdh") && msg.contains("refused before sending"),
        "{msg}"
    );

    // Had it been sent, MockHsm would have panicked on Derive ECDH (a Backend error).
    let (_, peer) = software_p256();
    let e = vault.agree(&signer.key_ref, &peer).await.unwrap_err();
    assert!(matches!(e, Error::PermissionDenied(_)), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("sign-ecdsa") && msg.contains("cannot do ECDH"),
        "{msg}"
    );

    // Both keys still work for what they are for.
    let sig = vault.sign(&signer.key_ref, b"still").await.unwrap();
    assert!(independent_verify(&signer.public_key, b"still", &sig));
}

/// An object that is not a keywarden key (here an EC P-256 key with no operation capability,
/// made by someone else) is not used, listed or destroyed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_objects_are_left_alone() {
    let (vault, connector) = common::mock_vault().await;
    common::side_client(&connector)
        .generate_asymmetric_key(
            0x0777,
            "foreign".into(),
            Domain::DOM1,
            Capability::SIGN_ATTESTATION_CERTIFICATE,
            keywarden_yubihsm::yubihsm::asymmetric::Algorithm::EcP256,
        )
        .unwrap();
    let foreign = KeyRef::new(vec![0x07, 0x77]);
    assert!(vault.list().await.unwrap().is_empty());
    let e = vault.destroy(&foreign).await.unwrap_err();
    assert!(matches!(e, Error::KeyNotFound(_)), "{e:?}");
    assert!(e.to_string().contains("not a keywarden key"), "{e}");
    let e = vault.sign(&foreign, b"m").await.unwrap_err();
    assert!(matches!(e, Error::KeyNotFound(_)), "{e:?}");
    // Still there.
    common::side_client(&connector)
        .get_object_info(0x0777, object::Type::AsymmetricKey)
        .unwrap();
}

/// MockHsm panics on Derive ECDH; the device thread survives and reports it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_panic_is_an_error_not_a_dead_vault() {
    let (vault, _connector) = common::mock_vault().await;
    let agreer = vault
        .generate(&spec(Algorithm::EcdhP256, "agreer"))
        .await
        .unwrap();
    let (_, peer) = software_p256();
    let e = vault.agree(&agreer.key_ref, &peer).await.unwrap_err();
    match &e {
        Error::Backend { code, message, .. } => {
            assert_eq!(code, "DRIVER_PANIC");
            assert!(message.contains("DeriveEcdh"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // The thread is alive: it answers (MockHsm's state lock is poisoned by the panic, so the
    // answer is an error, but an answer).
    let e = vault.list().await.unwrap_err();
    assert!(!e.to_string().contains("device thread"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ed25519_messages_up_to_the_frame_limit() {
    let (vault, _connector) = common::mock_vault().await;
    let key = vault
        .generate(&spec(Algorithm::Ed25519, "ed"))
        .await
        .unwrap();
    let max = vec![0x42; MAX_ED25519_MESSAGE_LEN];
    let sig = vault.sign(&key.key_ref, &max).await.unwrap();
    assert!(independent_verify(&key.public_key, &max, &sig));
    let e = vault
        .sign(&key.key_ref, &vec![0x42; MAX_ED25519_MESSAGE_LEN + 1])
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
    assert!(e.to_string().contains("at most 2026 bytes"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_authentication_failed() {
    let secret = "not-the-password-5a7c";
    let mut config = Config::new(ConnectorConfig::MockHsm, secret);
    let e = YubiHsmVault::open_with_connector(&config, Connector::mockhsm())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::AuthenticationFailed(_)), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("authentication key 1"), "{msg}");
    assert!(msg.contains("wrong password"), "{msg}");
    assert!(
        !msg.contains(secret) && !format!("{e:?}").contains(secret),
        "{msg}"
    );

    // Over HTTP too.
    let mock = Connector::mockhsm();
    let port = common::serve_http(&mock);
    config.connector = ConnectorConfig::http(format!("http://127.0.0.1:{port}"));
    let e = YubiHsmVault::open(&config).await.unwrap_err();
    assert!(matches!(e, Error::AuthenticationFailed(_)), "{e:?}");
    assert!(!e.to_string().contains(secret));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_object_id_is_key_not_found() {
    let (vault, _connector) = common::mock_vault().await;
    let r = KeyRef::new(vec![0x12, 0x34]);
    let e = vault.describe(&r).await.unwrap_err();
    assert!(matches!(e, Error::KeyNotFound(_)), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("1234") && msg.contains("YHR_DEVICE_OBJECT_NOT_FOUND"),
        "{msg}"
    );
    for bad in [vec![0x12], vec![0, 0], vec![1, 2, 3]] {
        let r = KeyRef::new(bad);
        let e = vault.sign(&r, b"m").await.unwrap_err();
        assert!(matches!(e, Error::KeyNotFound(_)), "{e:?}");
        assert!(e.to_string().contains("not a YubiHSM object id"), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_connector_is_device_unavailable() {
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let config = Config::new(ConnectorConfig::http(url.clone()), "password");
    let e = YubiHsmVault::open(&config).await.unwrap_err();
    assert!(matches!(e, Error::DeviceUnavailable(_)), "{e:?}");
    assert!(e.is_retryable());
    let msg = e.to_string();
    assert!(msg.contains("cannot reach the YubiHSM through"), "{msg}");
    assert!(msg.contains(&url), "{msg}");

    let bad = Config::new(ConnectorConfig::http("https://127.0.0.1:12345"), "password");
    let e = YubiHsmVault::open(&bad).await.unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
    assert!(e.to_string().contains("https is not supported"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vault_never_prints_the_password() {
    let connector = Connector::mockhsm();
    let vault = YubiHsmVault::open_with_connector(&common::mock_config(), connector)
        .await
        .unwrap();
    let shown = format!("{vault:?} {vault:#?} {:?}", vault.info());
    assert!(shown.contains("yubihsm:mockhsm"), "{shown}");
    assert!(!shown.contains(common::MOCK_PASSWORD), "{shown}");
}

/// No YubiHSM 2 is plugged into a test machine: opening one over USB is a clear, retryable
/// error, not a panic.
#[cfg(feature = "usb")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usb_without_a_device_is_device_unavailable() {
    let config = Config::new(ConnectorConfig::Usb { serial: None }, "password");
    let e = YubiHsmVault::open(&config).await.unwrap_err();
    assert!(matches!(e, Error::DeviceUnavailable(_)), "{e:?}");
    assert!(e.to_string().contains("yubihsm:usb"), "{e}");
}

#[cfg(not(feature = "usb"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usb_without_the_feature_says_so() {
    let config = Config::new(ConnectorConfig::Usb { serial: None }, "password");
    let e = YubiHsmVault::open(&config).await.unwrap_err();
    assert!(e.to_string().contains("lacks the `usb` feature"), "{e}");
}

/// The device forgets the session (here: a reset wipes MockHsm's sessions): the next command
/// opens a new session by itself instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_session_is_reopened() {
    let (vault, connector) = common::mock_vault().await;
    vault
        .generate(&spec(Algorithm::EcdsaP256Sha256, "before"))
        .await
        .unwrap();
    common::side_client(&connector).reset_device().unwrap();
    // The reset also wiped the keys; what matters is that the call works at once.
    assert!(vault.list().await.unwrap().is_empty());
    let key = vault
        .generate(&spec(Algorithm::EcdsaP256Sha256, "after"))
        .await
        .unwrap();
    let sig = vault.sign(&key.key_ref, b"after reset").await.unwrap();
    assert!(independent_verify(&key.public_key, b"after reset", &sig));
}

/// yubihsm-connector goes away and comes back on the same port: calls in between fail with a
/// retryable `DeviceUnavailable` naming the connector; afterwards the vault works again
/// without being reopened. A restart between two calls is not even noticed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_connector_restart() {
    let mock = Connector::mockhsm();
    let backend = common::serve_http(&mock);
    let proxy = common::Proxy::start(backend);
    let config = Config::new(ConnectorConfig::http(proxy.url()), common::MOCK_PASSWORD);
    let vault = YubiHsmVault::open(&config).await.unwrap();
    let key = vault
        .generate(&spec(Algorithm::EcdsaP256Sha256, "restart"))
        .await
        .unwrap();
    vault.sign(&key.key_ref, b"before").await.unwrap();

    // Down.
    proxy.take_down();
    let e = vault.sign(&key.key_ref, b"while down").await.unwrap_err();
    assert!(matches!(e, Error::DeviceUnavailable(_)), "{e:?}");
    assert!(e.is_retryable());
    assert!(e.to_string().contains(&proxy.url()), "{e}");

    // Back.
    proxy.bring_up();
    let sig = vault.sign(&key.key_ref, b"after").await.unwrap();
    assert!(independent_verify(&key.public_key, b"after", &sig));

    // A quick restart between two calls: the cut connection is replaced transparently.
    proxy.take_down();
    proxy.bring_up();
    let sig = vault.sign(&key.key_ref, b"again").await.unwrap();
    assert!(independent_verify(&key.public_key, b"again", &sig));
}

/// The connector now fronts another device that never saw our session: the adapter opens a
/// new session there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_device_behind_the_connector_gets_a_new_session() {
    let first = Connector::mockhsm();
    let proxy = common::Proxy::start(common::serve_http(&first));
    let config = Config::new(ConnectorConfig::http(proxy.url()), common::MOCK_PASSWORD);
    let vault = YubiHsmVault::open(&config).await.unwrap();
    vault
        .generate(&spec(Algorithm::Ed25519, "on-first"))
        .await
        .unwrap();
    assert_eq!(vault.list().await.unwrap().len(), 1);

    let second = Connector::mockhsm();
    proxy.retarget(common::serve_http(&second));
    proxy.take_down();
    proxy.bring_up();
    assert!(
        vault.list().await.unwrap().is_empty(),
        "talking to the second device"
    );
    let key = vault
        .generate(&spec(Algorithm::Ed25519, "on-second"))
        .await
        .unwrap();
    let sig = vault.sign(&key.key_ref, b"second").await.unwrap();
    assert!(independent_verify(&key.public_key, b"second", &sig));
}
