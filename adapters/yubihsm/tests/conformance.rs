//! The shared conformance suite against MockHsm, in process and over HTTP.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use keywarden_vault::testing::{Check, Harness};
use keywarden_yubihsm::yubihsm::Connector;
use keywarden_yubihsm::{Config, ConnectorConfig, YubiHsmVault};

/// Why ECDH cannot be checked here.
const NO_ECDH: &str = "MockHsm (yubihsm 0.42) does not implement Derive ECDH (0x57) and panics on \
     it; covered instead by unit tests of the request/response against the YubiHSM 2 command \
     specification (keywarden_yubihsm::ecdh) and end to end against a fake YubiHSM 2 over \
     HTTP + SCP03, where this same check passes (tests/ecdh_wire.rs)";

/// A fresh MockHsm, in process.
async fn harness() -> Harness {
    let (vault, connector) = common::mock_vault().await;
    let probe = common::export_probe(&connector);
    Harness::new(Arc::new(vault), connector)
        .with_export_probe(probe)
        .untestable(Check::Agreement, NO_ECDH)
}

keywarden_vault::conformance_tests!(harness);

/// The same suite through the adapter's `http` connector, to a fresh MockHsm served over HTTP
/// on a loopback port by yubihsm's `http-server` (what yubihsm-connector speaks).
mod over_http {
    use super::*;

    async fn http_harness() -> Harness {
        let mock = Connector::mockhsm();
        let port = common::serve_http(&mock);
        let config = Config::new(
            ConnectorConfig::http(format!("http://127.0.0.1:{port}")),
            common::MOCK_PASSWORD,
        );
        let vault = YubiHsmVault::open(&config).await.expect("open over HTTP");
        assert_eq!(
            keywarden_vault::Vault::info(&vault).name,
            format!("yubihsm:http://127.0.0.1:{port}")
        );
        let probe = common::export_probe(&mock);
        Harness::new(Arc::new(vault), mock)
            .with_export_probe(probe)
            .untestable(Check::Agreement, NO_ECDH)
    }

    keywarden_vault::conformance_tests!(http_harness);
}
