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
