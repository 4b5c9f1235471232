//! Attestations and credentials: canonical, versioned, domain-separated encodings, with
//! signatures checked independently (keywarden_vault::verify uses the `p256` crate, the
//! channel uses aws-lc-rs) and made by SoftHSM2 as well as in software.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::SystemTime;

use common::*;
use keywarden_channel::testing::{agreement_key, signing_key};
use keywarden_channel::{Attestation, Credential, Error, Identifier, Identity};
use keywarden_vault::{Algorithm, KeySpec, SigningKey, verify};

const ATT_DOMAIN: &[u8] = b"keywarden-channel/attestation/v1\n";
const CRED_DOMAIN: &[u8] = b"keywarden-channel/credential/v1\n";

fn split_sig(bytes: &[u8]) -> (&[u8], &[u8]) {
    bytes.split_at(bytes.len() - 64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attestation_signed_in_softhsm_verifies_independently() {
    let (vault, _token) = softhsm_vault();
    let key = signing_key(vault.clone(), "id").await;
    let dh = agreement_key(vault, "dh").await;
    let id = Identity::new(key.clone());
    let att = id.attest(dh.public_key(), in_an_hour()).await.unwrap();
    let bytes = att.to_bytes();
    let (body, sig) = split_sig(&bytes);
    assert_eq!(&body[..2], &[0x01, 0x01], "kind and version lead the body");
    let msg = [ATT_DOMAIN, body].concat();
    verify::verify_raw(key.public_key(), &msg, sig).unwrap();
    let back = Attestation::from_bytes(&bytes).unwrap();
    assert_eq!(back, att);
    assert_eq!(back.identifier(), id.identifier());
    assert_eq!(
        back.verify(dh.public_key(), SystemTime::now()).unwrap(),
        id.identifier()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signature_over_one_kind_never_verifies_as_another() {
    let vault = software_vault();
    let key = signing_key(vault.clone(), "id").await;
    let dh = agreement_key(vault, "dh").await;
    let id = Identity::new(key.clone());
    let att = id.attest(dh.public_key(), in_an_hour()).await.unwrap();
    let bytes = att.to_bytes();
    let (body, _) = split_sig(&bytes);

    // The same identity signs the attestation's body under the credential domain (as if
    // tricked into signing a credential with those bytes): it does not verify as an
    // attestation.
    let cross = key.sign(&[CRED_DOMAIN, body].concat()).await.unwrap();
    let forged = Attestation::from_bytes(&[body, cross.as_bytes()].concat()).unwrap();
    assert_eq!(
        forged
            .verify(dh.public_key(), SystemTime::now())
            .unwrap_err(),
        Error::AttestationForged(id.identifier())
    );
    // A bare signature over the body (no domain) does not verify either.
    let bare = key.sign(body).await.unwrap();
    let forged = Attestation::from_bytes(&[body, bare.as_bytes()].concat()).unwrap();
    assert!(forged.verify(dh.public_key(), SystemTime::now()).is_err());
    // Under its own domain it does (the control).
    let right = key.sign(&[ATT_DOMAIN, body].concat()).await.unwrap();
    let ok = Attestation::from_bytes(&[body, right.as_bytes()].concat()).unwrap();
    assert!(ok.verify(dh.public_key(), SystemTime::now()).is_ok());

    // Objects of one kind do not even parse as the other.
    let cred = id
        .issue_credential(&id.identifier(), attrs(&[("a", "b")]), in_an_hour())
        .await
        .unwrap();
    assert!(matches!(
        Attestation::from_bytes(&cred.to_bytes()),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(
        Credential::from_bytes(&bytes),
        Err(Error::Malformed { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credentials_round_trip_and_tampering_is_caught() {
    let vault = software_vault();
    let authority = Identity::new(signing_key(vault.clone(), "ca").await);
    let subject = Identifier::from_bytes([9; 32]);
    let cred = authority
        .issue_credential(
            &subject,
            attrs(&[("role", "db"), ("env", "prod")]),
            in_an_hour(),
        )
        .await
        .unwrap();
    let bytes = cred.to_bytes();
    let (body, sig) = split_sig(&bytes);
    verify::verify_raw(authority.public_key(), &[CRED_DOMAIN, body].concat(), sig).unwrap();
    let back = Credential::from_bytes(&bytes).unwrap();
    assert_eq!(back, cred);
    let trusted = [authority.identifier()];
    assert_eq!(
        back.verify(&trusted, &subject, SystemTime::now()).unwrap(),
        &attrs(&[("env", "prod"), ("role", "db")])
    );
    // Change "prod" to "prxd": still parses, no longer verifies.
    let pos = bytes.windows(4).position(|w| w == b"prod").unwrap();
    let mut bad = bytes.clone();
    bad[pos + 2] = b'x';
    let bad = Credential::from_bytes(&bad).unwrap();
    assert_eq!(
        bad.verify(&trusted, &subject, SystemTime::now())
            .unwrap_err(),
        Error::CredentialForged {
            issuer: authority.identifier()
        }
    );
    // Every truncation and every extension is refused.
    for len in 0..bytes.len() {
        assert!(Credential::from_bytes(&bytes[..len]).is_err() || len == bytes.len());
    }
    let mut longer = body.to_vec();
    longer.push(0);
    longer.extend_from_slice(sig);
    assert!(Credential::from_bytes(&longer).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn non_canonical_attribute_order_is_refused() {
    let vault = software_vault();
    let key = signing_key(vault, "ca").await;
    // Hand-built body with attributes out of order, correctly signed.
    let spki = key.public_key().to_spki_der();
    let mut body = vec![0x02, 0x01];
    body.extend_from_slice(&[7; 32]);
    body.extend_from_slice(&(spki.len() as u16).to_be_bytes());
    body.extend_from_slice(&spki);
    body.extend_from_slice(&u64::MAX.to_be_bytes());
    body.extend_from_slice(&2u16.to_be_bytes());
    for (k, v) in [("z", "1"), ("a", "2")] {
        body.extend_from_slice(&(k.len() as u16).to_be_bytes());
        body.extend_from_slice(k.as_bytes());
        body.extend_from_slice(&(v.len() as u16).to_be_bytes());
        body.extend_from_slice(v.as_bytes());
    }
    let sig = key.sign(&[CRED_DOMAIN, &body].concat()).await.unwrap();
    let err = Credential::from_bytes(&[&body[..], sig.as_bytes()].concat()).unwrap_err();
    assert!(err.to_string().contains("ascending"), "{err}");
    // A future version is refused, not misread.
    let mut v2 = body.clone();
    v2[1] = 2;
    let err = Credential::from_bytes(&[&v2[..], sig.as_bytes()].concat()).unwrap_err();
    assert!(err.to_string().contains("version"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ed25519_identities_work_too() {
    let vault = software_vault();
    let info = vault
        .generate(&KeySpec::new(Algorithm::Ed25519, "ed").unwrap())
        .await
        .unwrap();
    let key = SigningKey::from_info(vault.clone(), info).unwrap();
    let dh = agreement_key(vault, "dh").await;
    let id = Identity::new(key.clone());
    let att = id.attest(dh.public_key(), in_an_hour()).await.unwrap();
    let bytes = att.to_bytes();
    let (body, sig) = split_sig(&bytes);
    verify::verify_raw(key.public_key(), &[ATT_DOMAIN, body].concat(), sig).unwrap();
    let back = Attestation::from_bytes(&bytes).unwrap();
    assert_eq!(
        back.verify(dh.public_key(), SystemTime::now()).unwrap(),
        id.identifier()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attribute_bounds_are_enforced_when_issuing() {
    let authority = Identity::new(signing_key(software_vault(), "ca").await);
    let subject = Identifier::from_bytes([1; 32]);
    let long = "x".repeat(keywarden_channel::MAX_ATTRIBUTE_VALUE_LEN + 1);
    let err = authority
        .issue_credential(&subject, attrs(&[("k", &long)]), in_an_hour())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)));
    let err = authority
        .issue_credential(&subject, attrs(&[("", "v")]), in_an_hour())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)));
}
