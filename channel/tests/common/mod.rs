//! Shared fixtures: identities in software or SoftHSM2 vaults, authorities, options.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use keywarden_channel::policy::{AllowAnyAuthenticated, RequireAttributes};
use keywarden_channel::testing::{SoftwareVault, agreement_key, signing_key};
use keywarden_channel::{ChannelIdentity, ChannelOptions, Credential, Identifier, Identity};
use keywarden_pkcs11::Pkcs11Vault;
use keywarden_pkcs11::testing::SoftHsm;
use keywarden_vault::Vault;

pub const HOUR: Duration = Duration::from_secs(3600);

pub fn software_vault() -> Arc<dyn Vault> {
    SoftwareVault::new()
}

/// A vault on a fresh SoftHSM2 token; keep the token alive as long as the vault.
pub fn softhsm_vault() -> (Arc<dyn Vault>, SoftHsm) {
    let mut v = softhsm_vaults(1);
    v.remove(0)
}

/// Vaults on `n` fresh SoftHSM2 tokens. SoftHSM2 reads its token directory once per process
/// (at `C_Initialize`), so every token is created before the first vault opens.
pub fn softhsm_vaults(n: usize) -> Vec<(Arc<dyn Vault>, SoftHsm)> {
    let tokens: Vec<SoftHsm> = (0..n).map(|_| SoftHsm::new()).collect();
    tokens
        .into_iter()
        .map(|t| {
            let vault: Arc<dyn Vault> = Arc::new(Pkcs11Vault::open(t.config()).unwrap());
            (vault, t)
        })
        .collect()
}

pub async fn identity_in(vault: Arc<dyn Vault>, name: &str) -> ChannelIdentity {
    let id = Identity::new(signing_key(vault.clone(), &format!("{name}-id")).await);
    let static_key = agreement_key(vault, &format!("{name}-dh")).await;
    ChannelIdentity::new(id, static_key, HOUR).await.unwrap()
}

pub async fn authority() -> Identity {
    Identity::new(signing_key(software_vault(), "authority").await)
}

pub fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub async fn credential(
    authority: &Identity,
    subject: Identifier,
    pairs: &[(&str, &str)],
    expires: SystemTime,
) -> Credential {
    authority
        .issue_credential(&subject, attrs(pairs), expires)
        .await
        .unwrap()
}

/// Options that trust `authority` and require `role` = `want_role` from the peer, presenting
/// `mine`.
pub fn options(authority: &Identity, mine: Credential, want_role: &str) -> ChannelOptions {
    ChannelOptions::new()
        .trust_authority(authority.identifier())
        .with_credential(mine)
        .with_policy(RequireAttributes::default().with("role", want_role))
        .handshake_timeout(Duration::from_secs(5))
}

/// Options that accept any authenticated peer.
pub fn open_options() -> ChannelOptions {
    ChannelOptions::new()
        .with_policy(AllowAnyAuthenticated)
        .handshake_timeout(Duration::from_secs(5))
}

pub fn in_an_hour() -> SystemTime {
    SystemTime::now() + HOUR
}

pub const HSM_SIM_USER_PIN: &str = "hsm-sim-user-1234";

/// The hsm-sim PKCS#11 module (`target/<profile>/libkeywarden_hsm_sim.so`), built if missing.
pub fn hsm_sim_lib() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let so = target.join("libkeywarden_hsm_sim.so");
    if !so.exists() {
        let st = std::process::Command::new(env!("CARGO"))
            .args(["build", "-p", "keywarden-hsm-sim", "--lib"])
            .args(if cfg!(debug_assertions) {
                &[][..]
            } else {
                &["--release"][..]
            })
            .status()
            .unwrap();
        assert!(st.success(), "building the hsm-sim cdylib failed");
    }
    so
}

/// A vault on a fresh hsm-sim token (labelled `test`) in `dir`, loaded as a `.so` through
/// keywarden-pkcs11. hsm-sim reads its configuration at `C_Initialize` from
/// `KEYWARDEN_HSM_SIM_CONFIG`, so call this once per test process, before other threads use
/// the environment.
pub fn hsm_sim_vault(dir: &std::path::Path) -> Arc<dyn Vault> {
    use keywarden_hsm_sim::{Config, KdfParams, Module, SlotConfig};
    let slot = SlotConfig {
        slot_id: None,
        token_dir: Some(dir.join("token")),
        max_pin_retries: None,
        kdf: Some(KdfParams {
            m_kib: 64,
            t: 1,
            p: 1,
        }),
        faults: None,
    };
    let cfg = Config { slots: vec![slot] };
    let m = Module::new(&cfg).unwrap();
    let so = keywarden_hsm_sim::token::pin(b"hsm-sim-so-5678");
    let mut label = [b' '; 32];
    label[..4].copy_from_slice(b"test");
    m.init_token(0, &so, &label).unwrap();
    // CKF_SERIAL_SESSION | CKF_RW_SESSION; CKU_SO = 0.
    let h = m.open_session(0, 0x4 | 0x2).unwrap();
    m.login(h, 0, &so).unwrap();
    m.init_pin(
        h,
        &keywarden_hsm_sim::token::pin(HSM_SIM_USER_PIN.as_bytes()),
    )
    .unwrap();
    m.close_session(h).unwrap();
    drop(m);
    let path = dir.join("hsm-sim.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    #[allow(unsafe_code)]
    // SAFETY: nextest runs each test in its own process; this runs before the module is
    // loaded and before any other thread reads the environment.
    unsafe {
        std::env::set_var("KEYWARDEN_HSM_SIM_CONFIG", &path)
    };
    let config = keywarden_pkcs11::Pkcs11Config::new(
        hsm_sim_lib(),
        keywarden_pkcs11::TokenSelector::Label("test".into()),
        keywarden_pkcs11::PinSource::Value(secrecy::SecretString::from(HSM_SIM_USER_PIN)),
    );
    Arc::new(Pkcs11Vault::open(config).unwrap())
}
