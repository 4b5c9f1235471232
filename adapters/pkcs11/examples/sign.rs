//! Sign a message with a key that lives on a SoftHSM2 token, and verify it in software.
//!
//! Run with `cargo run -p keywarden-pkcs11 --features testing --example sign -- "message"`
//! (after `scripts/setup`, which installs softhsm2). The example makes a throw-away token in a
//! temporary directory, so it touches nothing of the system's SoftHSM2 configuration.
#![allow(clippy::print_stdout)]

use std::sync::Arc;

use keywarden_pkcs11::Pkcs11Vault;
use keywarden_pkcs11::testing::SoftHsm;
use keywarden_vault::{Algorithm, KeySpec, SigningKey, Vault};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let message = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "hello from keywarden".into());

    let token = SoftHsm::new();
    let vault: Arc<dyn Vault> = Arc::new(Pkcs11Vault::open(token.config())?);
    println!("backend: {:?}", vault.info());

    let key = vault
        .generate(&KeySpec::new(
            Algorithm::EcdsaP256Sha256,
            "example-signing",
        )?)
        .await?;
    // From here on, only a signing handle: it can sign and show its public key, nothing else.
    let signer = SigningKey::from_info(vault, key)?;
    let signature = signer.sign(message.as_bytes()).await?;

    keywarden_vault::verify::verify(signer.public_key(), message.as_bytes(), &signature)?;
    println!("key:       {} ({})", signer.key_ref(), signer.algorithm());
    println!("public:\n{}", signer.public_key().to_pem());
    println!("message:   {message:?}");
    println!(
        "signature: {}",
        hex::encode(signature.to_der().unwrap_or_default())
    );
    println!("verified with the p256 crate: ok");
    Ok(())
}
