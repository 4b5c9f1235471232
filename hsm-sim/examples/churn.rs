//! Generates and destroys token keys in an endless loop, printing one line per round: the
//! child process of the crash test (which SIGKILLs it at a random moment).
//!
//! Configuration as for the module (`KEYWARDEN_HSM_SIM_CONFIG`); the user PIN is the first
//! argument.

use cryptoki_sys::*;
use keywarden_hsm_sim::attr::Attr;
use keywarden_hsm_sim::module::Mechanism;
use keywarden_hsm_sim::{Config, Module, token};
use std::io::Write;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pin = std::env::args().nth(1).ok_or("usage: churn <user-pin>")?;
    let m = Module::new(&Config::load()?)?;
    let slot = m.slot_list()[0];
    let h = m.open_session(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION)?;
    m.login(h, CKU_USER, &token::pin(pin.as_bytes()))?;
    let mut keys = std::collections::VecDeque::new();
    let mut out = std::io::stdout();
    for round in 0u64.. {
        // Unique across restarts of this process: pid and round.
        let mut id = std::process::id().to_be_bytes().to_vec();
        id.extend_from_slice(&round.to_be_bytes());
        let pub_t = vec![
            Attr::bytes(CKA_EC_PARAMS, keywarden_hsm_sim::crypto::P256_PARAMS_OID),
            Attr::bool(CKA_TOKEN, true),
            Attr::bool(CKA_PRIVATE, false),
            Attr::bytes(CKA_ID, &id),
        ];
        let priv_t = vec![
            Attr::bool(CKA_TOKEN, true),
            Attr::bool(CKA_SIGN, true),
            Attr::bytes(CKA_ID, &id),
        ];
        let pair = m.generate_key_pair(h, &Mechanism::new(CKM_EC_KEY_PAIR_GEN), &pub_t, &priv_t)?;
        keys.push_back(pair);
        if keys.len() > 4
            && let Some((p, k)) = keys.pop_front()
        {
            m.destroy_object(h, k)?;
            m.destroy_object(h, p)?;
        }
        writeln!(out, "round {round}")?;
        out.flush()?;
    }
    Ok(())
}
