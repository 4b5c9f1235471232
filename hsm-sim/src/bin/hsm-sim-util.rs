//! `hsm-sim-util`: creates and inspects hsm-sim tokens, like `softhsm2-util`.
//!
//! ```text
//! hsm-sim-util --init-token --label L --so-pin S --pin P [--slot N] [--dir D]
//!              [--kdf-memory-kib M] [--kdf-iterations T]
//! hsm-sim-util --show-slots [--dir D]
//! ```
//! Without `--dir`, the token directory comes from the usual configuration
//! (`KEYWARDEN_HSM_SIM_CONFIG` or `KEYWARDEN_HSM_SIM_DIR`).

use std::path::PathBuf;
use std::process::ExitCode;

use cryptoki_sys::{CKF_RW_SESSION, CKF_SERIAL_SESSION, CKU_SO};
use keywarden_hsm_sim::{Config, KdfParams, Module, SlotConfig, token};
use zeroize::Zeroizing;

#[derive(Default)]
struct Args {
    init: bool,
    show: bool,
    label: Option<String>,
    so_pin: Option<Zeroizing<String>>,
    pin: Option<Zeroizing<String>>,
    slot: Option<u64>,
    dir: Option<PathBuf>,
    kdf_m: Option<u32>,
    kdf_t: Option<u32>,
}

const USAGE: &str = "usage: hsm-sim-util --init-token --label L --so-pin S --pin P [--slot N] [--dir D] \
[--kdf-memory-kib M] [--kdf-iterations T]\n       hsm-sim-util --show-slots [--dir D]";

fn parse() -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--init-token" => a.init = true,
            "--show-slots" => a.show = true,
            "--label" => a.label = Some(val()?),
            "--so-pin" => a.so_pin = Some(Zeroizing::new(val()?)),
            "--pin" => a.pin = Some(Zeroizing::new(val()?)),
            "--slot" => a.slot = Some(val()?.parse().map_err(|_| "bad --slot")?),
            "--dir" => a.dir = Some(PathBuf::from(val()?)),
            "--kdf-memory-kib" => {
                a.kdf_m = Some(val()?.parse().map_err(|_| "bad --kdf-memory-kib")?)
            }
            "--kdf-iterations" => {
                a.kdf_t = Some(val()?.parse().map_err(|_| "bad --kdf-iterations")?)
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(a)
}

fn run(a: Args) -> Result<String, String> {
    let mut cfg = match &a.dir {
        Some(d) => Config {
            slots: vec![SlotConfig {
                token_dir: Some(d.clone()),
                ..Default::default()
            }],
        },
        None => Config::load()?,
    };
    if a.kdf_m.is_some() || a.kdf_t.is_some() {
        let d = KdfParams::default();
        let kdf = KdfParams {
            m_kib: a.kdf_m.unwrap_or(d.m_kib),
            t: a.kdf_t.unwrap_or(d.t),
            p: d.p,
        };
        for s in &mut cfg.slots {
            s.kdf = Some(kdf);
        }
    }
    let m = Module::new(&cfg).map_err(|e| e.to_string())?;
    if a.show {
        let mut out = String::new();
        for s in m.slot_list() {
            let t = m.token_info(s).map_err(|e| e.to_string())?;
            out.push_str(&format!(
                "slot {s}: label {:?} serial {:?} flags {:#x}\n",
                String::from_utf8_lossy(&t.label).trim_end(),
                String::from_utf8_lossy(&t.serial).trim_end(),
                t.flags
            ));
        }
        return Ok(out);
    }
    if !a.init {
        return Err(USAGE.into());
    }
    let label = a.label.ok_or("--label is required")?;
    if label.len() > 32 {
        return Err("label longer than 32 bytes".into());
    }
    let so = token::pin(a.so_pin.ok_or("--so-pin is required")?.as_bytes());
    let user = token::pin(a.pin.ok_or("--pin is required")?.as_bytes());
    let slot = match a.slot {
        Some(s) => s as cryptoki_sys::CK_SLOT_ID,
        None => *m.slot_list().first().ok_or("no slot configured")?,
    };
    let mut l = [b' '; 32];
    l[..label.len()].copy_from_slice(label.as_bytes());
    let e = |e: keywarden_hsm_sim::Error| e.to_string();
    m.init_token(slot, &so, &l).map_err(e)?;
    let h = m
        .open_session(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION)
        .map_err(e)?;
    m.login(h, CKU_SO, &so).map_err(e)?;
    m.init_pin(h, &user).map_err(e)?;
    m.close_session(h).map_err(e)?;
    Ok(format!("The token has been initialized on slot {slot}\n"))
}

fn main() -> ExitCode {
    match parse().and_then(run) {
        Ok(msg) => {
            #[allow(clippy::print_stdout)] // a CLI's output
            {
                print!("{msg}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hsm-sim-util: {e}");
            ExitCode::FAILURE
        }
    }
}
