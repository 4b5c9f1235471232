//! `keywarden`: the key service and its command-line client.

// A command-line tool: printing results on stdout is its job.
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use keywarden::client::{Client, Target, TlsFiles};
use keywarden::proto::v1 as pb;
use keywarden::service::hardening::{self, HardeningOptions};
use keywarden::service::{audit, config, policy, server};
use keywarden_vault::{Algorithm, PublicKey, Signature};

#[derive(Parser)]
#[command(
    name = "keywarden",
    version,
    about = "HSM-backed key service: keys stay in hardware, callers get handles"
)]
struct Cli {
    /// The service socket (default: $KEYWARDEN_SOCKET, else <data dir>/keywarden.sock).
    #[arg(long, global = true, env = "KEYWARDEN_SOCKET")]
    socket: Option<PathBuf>,
    /// Talk to a remote service over mutual TLS instead of the socket: https://host:port.
    /// Needs --tls-ca, --tls-cert and --tls-key.
    #[arg(long, global = true, env = "KEYWARDEN_ENDPOINT", value_name = "URL")]
    endpoint: Option<String>,
    /// The CA (PEM) that issued the service's TLS certificate.
    #[arg(long, global = true, env = "KEYWARDEN_TLS_CA", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// This client's certificate (PEM); its URI SAN or subject is the Cedar principal.
    #[arg(long, global = true, env = "KEYWARDEN_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// This client's private key (PEM).
    #[arg(long, global = true, env = "KEYWARDEN_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the key service.
    Serve {
        /// TOML configuration file (default: everything in $KEYWARDEN_HOME or ./.keywarden).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Validate the configuration (open backends, parse policies) and exit.
        #[arg(long)]
        check_config: bool,
        /// Run even as root (refused otherwise: a key service runs as its own user).
        #[arg(long, env = "KEYWARDEN_ALLOW_ROOT")]
        allow_root: bool,
        /// Lock all memory (mlockall, on fault) so that secrets are never swapped out.
        #[arg(long, env = "KEYWARDEN_MLOCK")]
        mlock: bool,
        /// Serve Prometheus metrics on this address (GET /metrics), e.g. 127.0.0.1:9464.
        /// Off by default; overrides `metrics` in the config. No authentication: keep it on
        /// loopback.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
    },
    /// Ask the running service whether it and its backends are healthy (exit 0 if so).
    Health,
    /// Manage and use keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Cedar policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Secure channels (Noise XX, static keys in the key service).
    #[command(subcommand)]
    Channel(ChannelCommand),
    /// Measure signing through the socket against the same backend in-process.
    Bench {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Concurrent clients to try.
        #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
        clients: Vec<usize>,
        /// A service config whose backends to use (default: the embedded hsm-sim).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create a key owned by the caller.
    Create {
        name: String,
        #[arg(long, value_parser = ["ecdsa-p256", "ecdh-p256", "ed25519"])]
        alg: String,
        #[arg(long)]
        backend: Option<String>,
        /// A label `key=value` (repeatable).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Expiry, RFC 3339 (e.g. 2027-01-01T00:00:00Z).
        #[arg(long)]
        expires: Option<String>,
    },
    /// List keys.
    List {
        /// Include destroyed keys.
        #[arg(long)]
        all: bool,
    },
    /// Show one key.
    Show { name: String },
    /// Print a public key.
    Public {
        name: String,
        #[arg(long, default_value_t = 0)]
        version: u32,
        #[arg(long, value_enum, default_value_t = PublicFormat::Pem)]
        format: PublicFormat,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Sign a file with the newest version.
    Sign {
        name: String,
        #[arg(long = "in")]
        input: PathBuf,
        #[arg(long)]
        out: Option<PathBuf>,
        /// ECDSA: der (default, what OpenSSL verifies) or raw r||s. Ed25519 is always raw.
        #[arg(long, value_enum, default_value_t = SigFormat::Der)]
        format: SigFormat,
    },
    /// Verify a signature against every version of a key.
    Verify {
        name: String,
        #[arg(long = "in")]
        input: PathBuf,
        #[arg(long)]
        signature: PathBuf,
    },
    /// Add a version; new signatures use it, old ones still verify.
    Rotate { name: String },
    /// Refuse all use of a key until it is enabled again.
    Disable { name: String },
    /// Allow use of a disabled key again.
    Enable { name: String },
    /// Destroy a disabled key's HSM objects; the registry keeps a tombstone.
    Destroy { name: String },
}

/// The keys a channel end uses: both are key-service keys (through the socket).
#[derive(Args)]
struct ChannelKeys {
    /// Name of the identity key (ecdsa-p256 or ed25519) in the key service.
    #[arg(long)]
    identity: String,
    /// Name of the static Noise key (ecdh-p256) in the key service.
    #[arg(long = "static")]
    static_key: String,
}

/// Who may be on the other end: nothing is trusted by default.
#[derive(Args)]
struct ChannelTrust {
    /// Accept this peer identifier (`kwid1…`, see `keywarden channel id`); repeatable.
    #[arg(long = "allow-peer")]
    allow_peers: Vec<String>,
    /// A Cedar policy file deciding on the peer (principal `Peer::"kwid1…"`, action
    /// `connect`, resource `Channel::"<name>"`, verified attributes in the context).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Trust credentials signed by this authority identifier; repeatable.
    #[arg(long = "trust-authority")]
    authorities: Vec<String>,
    /// Handshake timeout in seconds.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
}

#[derive(Subcommand)]
enum ChannelCommand {
    /// Print the identifier of an identity key.
    Id {
        #[command(flatten)]
        keys: ChannelKeys,
    },
    /// Listen on TCP and pipe the first accepted channel to stdin/stdout.
    Listen {
        #[command(flatten)]
        keys: ChannelKeys,
        #[command(flatten)]
        trust: ChannelTrust,
        /// Address to listen on, e.g. 127.0.0.1:4100.
        #[arg(long)]
        bind: std::net::SocketAddr,
        /// The listener's worker name.
        #[arg(long, default_value = "channel")]
        name: String,
    },
    /// Connect over TCP (through relays) and pipe stdin/stdout over the channel.
    Connect {
        #[command(flatten)]
        keys: ChannelKeys,
        #[command(flatten)]
        trust: ChannelTrust,
        /// The first hop's TCP address.
        #[arg(long)]
        peer: std::net::SocketAddr,
        /// Worker names after the first hop: relays, then the listener (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "channel")]
        route: Vec<String>,
    },
    /// Run a relay worker that forwards to the next TCP hop (it sees only ciphertext).
    Relay {
        #[arg(long)]
        bind: std::net::SocketAddr,
        #[arg(long)]
        name: String,
        #[arg(long)]
        next: std::net::SocketAddr,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain; names the first broken or missing line.
    Verify {
        /// The log (default: <data dir>/audit.log).
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy directory against the schema.
    Check(PolicyDir),
}

#[derive(Args)]
struct PolicyDir {
    /// The directory (default: <data dir>/policies).
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum PublicFormat {
    Pem,
    Der,
    Raw,
}

#[derive(Clone, Copy, ValueEnum)]
enum SigFormat {
    Der,
    Raw,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("label {s:?} must be key=value"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KEYWARDEN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the chain of causes, outermost first.
            let reason: Vec<String> = e.chain().map(ToString::to_string).collect();
            eprintln!("error: {}", reason.join(": "));
            ExitCode::FAILURE
        }
    }
}

fn socket_path(cli: &Cli) -> PathBuf {
    cli.socket
        .clone()
        .unwrap_or_else(|| config::default_socket(&config::default_data_dir()))
}

/// The service this invocation talks to: --endpoint (mutual TLS) or the socket.
fn target(cli: &Cli) -> Result<Target> {
    let Some(endpoint) = &cli.endpoint else {
        if cli.tls_ca.is_some() || cli.tls_cert.is_some() || cli.tls_key.is_some() {
            bail!("--tls-ca/--tls-cert/--tls-key need --endpoint https://host:port");
        }
        return Ok(Target::Socket(socket_path(cli)));
    };
    let need = |v: &Option<PathBuf>, flag: &str| {
        v.clone()
            .with_context(|| format!("--endpoint needs {flag} (mutual TLS)"))
    };
    Ok(Target::Tls {
        endpoint: endpoint.clone(),
        files: TlsFiles {
            ca: need(&cli.tls_ca, "--tls-ca")?,
            cert: need(&cli.tls_cert, "--tls-cert")?,
            key: need(&cli.tls_key, "--tls-key")?,
        },
    })
}

async fn connect(cli: &Cli) -> Result<Client> {
    Ok(Client::connect_to(&target(cli)?).await?)
}

async fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Serve {
            config: path,
            check_config,
            allow_root,
            mlock,
            metrics,
        } => {
            let hardening = HardeningOptions {
                allow_root: *allow_root,
                mlock: *mlock,
            };
            serve(
                path.as_deref(),
                *check_config,
                cli.socket.clone(),
                *metrics,
                hardening,
            )
            .await
        }
        Command::Health => {
            println!("{}", hardening::health(&target(&cli)?).await?);
            Ok(())
        }
        Command::Key(cmd) => {
            let client = connect(&cli).await?;
            key(&client, cmd, cli.json).await
        }
        Command::Audit(AuditCommand::Verify { file }) => {
            let path = file
                .clone()
                .unwrap_or_else(|| config::default_data_dir().join("audit.log"));
            let v = audit::verify(&path)?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "lines": v.lines, "trailing_partial_bytes": v.trailing_partial})
                );
            } else {
                println!(
                    "audit log {}: {} lines, chain intact",
                    path.display(),
                    v.lines
                );
                if v.trailing_partial > 0 {
                    println!(
                        "note: {} bytes after the last complete line (a write cut short by a crash)",
                        v.trailing_partial
                    );
                }
            }
            Ok(())
        }
        Command::Channel(cmd) => channel(&cli, cmd).await,
        Command::Bench {
            seconds,
            clients,
            config: path,
        } => {
            let config = match path {
                Some(p) => Some(config::Config::load(Some(p))?),
                None => None,
            };
            let rows = keywarden::bench::run(config, *seconds, clients)
                .await
                .map_err(anyhow::Error::msg)?;
            if cli.json {
                println!("{}", serde_json::to_string(&rows)?);
                return Ok(());
            }
            println!(
                "{:<11} {:>7} {:>12} {:>10} {:>10} {:>10}",
                "mode", "clients", "signs/s", "p50 us", "p99 us", "vs in-proc"
            );
            for r in &rows {
                let base = rows
                    .iter()
                    .find(|b| b.mode == "in-process" && b.clients == r.clients);
                let ratio = match (r.mode, base) {
                    ("socket" | "service" | "mtls", Some(b)) if b.ops_per_sec > 0.0 => {
                        format!("{:.1}%", 100.0 * r.ops_per_sec / b.ops_per_sec)
                    }
                    _ => String::new(),
                };
                println!(
                    "{:<11} {:>7} {:>12.0} {:>10.1} {:>10.1} {:>10}",
                    r.mode, r.clients, r.ops_per_sec, r.p50_us, r.p99_us, ratio
                );
            }
            Ok(())
        }
        Command::Policy(PolicyCommand::Check(PolicyDir { dir })) => {
            let dir = dir
                .clone()
                .unwrap_or_else(|| config::default_data_dir().join("policies"));
            let schema = policy::schema()?;
            let (set, files) = policy::load_dir(&dir, &schema)?;
            let n = set.policies().count();
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "policies": n, "files": files})
                );
            } else {
                println!(
                    "{}: {n} policies in {} files validate against the schema",
                    dir.display(),
                    files.len()
                );
            }
            Ok(())
        }
    }
}

async fn serve(
    path: Option<&Path>,
    check: bool,
    socket: Option<PathBuf>,
    metrics: Option<std::net::SocketAddr>,
    hardening: HardeningOptions,
) -> Result<()> {
    let mut config = config::Config::load(path)?;
    if let Some(s) = socket {
        config.socket = s;
    }
    if metrics.is_some() {
        config.metrics = metrics;
    }
    if check {
        server::build(&config).await?;
        println!("configuration OK: {}", server::describe(&config));
        return Ok(());
    }
    server::run(config, &hardening).await?;
    Ok(())
}

fn write_out(out: Option<&Path>, bytes: &[u8]) -> Result<()> {
    match out {
        Some(p) => {
            std::fs::write(p, bytes).with_context(|| format!("cannot write {}", p.display()))
        }
        None => {
            std::io::stdout().write_all(bytes)?;
            Ok(())
        }
    }
}

fn time_text(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

fn key_json(k: &pb::Key) -> serde_json::Value {
    serde_json::json!({
        "name": k.name,
        "algorithm": k.algorithm,
        "backend": k.backend,
        "owner_uid": k.owner_uid,
        "labels": k.labels.iter().collect::<BTreeMap<_, _>>(),
        "state": k.state,
        "created_at": time_text(k.created_at),
        "expires_at": k.expires_at.map(time_text),
        "versions": k.versions.iter().map(|v| serde_json::json!({
            "version": v.version,
            "state": v.state,
            "created_at": time_text(v.created_at),
        })).collect::<Vec<_>>(),
    })
}

fn print_key(k: &pb::Key, json: bool) {
    if json {
        println!("{}", key_json(k));
        return;
    }
    let sorted: BTreeMap<_, _> = k.labels.iter().collect();
    let labels: Vec<String> = sorted.iter().map(|(a, b)| format!("{a}={b}")).collect();
    let latest = k
        .versions
        .iter()
        .rev()
        .find(|v| v.state == "ready")
        .map_or(0, |v| v.version);
    println!(
        "{}\t{}\t{}\tv{}\towner={}\tbackend={}{}{}",
        k.name,
        k.algorithm,
        k.state,
        latest,
        k.owner_uid,
        k.backend,
        if labels.is_empty() {
            String::new()
        } else {
            format!("\t{}", labels.join(","))
        },
        k.expires_at
            .map(|t| format!("\texpires={}", time_text(t)))
            .unwrap_or_default(),
    );
}

async fn key(client: &Client, cmd: &KeyCommand, json: bool) -> Result<()> {
    let mut rpc = client.rpc();
    let name_req = |n: &str| pb::KeyName { name: n.to_owned() };
    match cmd {
        KeyCommand::Create {
            name,
            alg,
            backend,
            labels,
            expires,
        } => {
            let expires_at = match expires {
                None => None,
                Some(s) => Some(
                    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                        .with_context(|| format!("--expires {s:?} is not an RFC 3339 time"))?
                        .unix_timestamp(),
                ),
            };
            let k = rpc
                .create_key(pb::CreateKeyRequest {
                    name: name.clone(),
                    algorithm: alg.clone(),
                    backend: backend.clone().unwrap_or_default(),
                    labels: labels.iter().cloned().collect(),
                    expires_at,
                })
                .await
                .map_err(status)?
                .into_inner();
            print_key(&k, json);
        }
        KeyCommand::List { all } => {
            let keys = rpc
                .list_keys(pb::ListKeysRequest {
                    include_destroyed: *all,
                })
                .await
                .map_err(status)?
                .into_inner()
                .keys;
            if json {
                println!(
                    "{}",
                    serde_json::Value::Array(keys.iter().map(key_json).collect())
                );
            } else {
                for k in &keys {
                    print_key(k, false);
                }
            }
        }
        KeyCommand::Show { name } => {
            let k = rpc
                .get_key(name_req(name))
                .await
                .map_err(status)?
                .into_inner();
            print_key(&k, json);
        }
        KeyCommand::Public {
            name,
            version,
            format,
            out,
        } => {
            let pk = rpc
                .get_public_key(pb::GetPublicKeyRequest {
                    name: name.clone(),
                    version: *version,
                })
                .await
                .map_err(status)?
                .into_inner();
            let key = PublicKey::from_spki_der(&pk.spki_der)?;
            let bytes = match format {
                PublicFormat::Pem => key.to_pem().into_bytes(),
                PublicFormat::Der => key.to_spki_der(),
                PublicFormat::Raw => key.as_bytes().to_vec(),
            };
            if json {
                println!(
                    "{}",
                    serde_json::json!({"name": pk.name, "version": pk.version, "algorithm": pk.algorithm, "pem": key.to_pem()})
                );
            } else {
                write_out(out.as_deref(), &bytes)?;
            }
        }
        KeyCommand::Sign {
            name,
            input,
            out,
            format,
        } => {
            let message =
                std::fs::read(input).with_context(|| format!("cannot read {}", input.display()))?;
            let r = rpc
                .sign(pb::SignRequest {
                    name: name.clone(),
                    message,
                })
                .await
                .map_err(status)?
                .into_inner();
            let algorithm: Algorithm = r.algorithm.parse()?;
            let sig = Signature::from_bytes(algorithm, &r.signature)?;
            let bytes = match (algorithm, format) {
                (Algorithm::EcdsaP256Sha256, SigFormat::Der) => sig.to_der().unwrap_or_default(),
                _ => sig.as_bytes().to_vec(),
            };
            if json {
                println!(
                    "{}",
                    serde_json::json!({"name": name, "version": r.version, "algorithm": r.algorithm, "signature_hex": hex::encode(&bytes)})
                );
                if let Some(p) = out {
                    write_out(Some(p), &bytes)?;
                }
            } else {
                write_out(out.as_deref(), &bytes)?;
            }
        }
        KeyCommand::Verify {
            name,
            input,
            signature,
        } => {
            let message =
                std::fs::read(input).with_context(|| format!("cannot read {}", input.display()))?;
            let signature = std::fs::read(signature)
                .with_context(|| format!("cannot read {}", signature.display()))?;
            let r = rpc
                .verify(pb::VerifyRequest {
                    name: name.clone(),
                    message,
                    signature,
                })
                .await
                .map_err(status)?
                .into_inner();
            if json {
                println!(
                    "{}",
                    serde_json::json!({"valid": r.valid, "version": r.version})
                );
            } else if r.valid {
                println!("valid (version {})", r.version);
            }
            if !r.valid {
                bail!("signature does not verify with any version of key {name:?}");
            }
        }
        KeyCommand::Rotate { name } => print_key(
            &rpc.rotate_key(name_req(name))
                .await
                .map_err(status)?
                .into_inner(),
            json,
        ),
        KeyCommand::Disable { name } => print_key(
            &rpc.disable_key(name_req(name))
                .await
                .map_err(status)?
                .into_inner(),
            json,
        ),
        KeyCommand::Enable { name } => print_key(
            &rpc.enable_key(name_req(name))
                .await
                .map_err(status)?
                .into_inner(),
            json,
        ),
        KeyCommand::Destroy { name } => print_key(
            &rpc.destroy_key(name_req(name))
                .await
                .map_err(status)?
                .into_inner(),
            json,
        ),
    }
    Ok(())
}

/// A service error as one line.
fn status(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", s.message())
}

async fn channel_identity(
    cli: &Cli,
    keys: &ChannelKeys,
) -> Result<keywarden_channel::ChannelIdentity> {
    let client = connect(cli).await?;
    let vault: std::sync::Arc<dyn keywarden_vault::Vault> =
        std::sync::Arc::new(keywarden::client::RemoteVault::new(client).await?);
    Ok(keywarden_channel::cli::open_identity(
        vault,
        &keys.identity,
        &keys.static_key,
        keywarden_channel::cli::DEFAULT_ATTESTATION_VALIDITY,
    )
    .await?)
}

fn channel_options(trust: &ChannelTrust, name: &str) -> Result<keywarden_channel::ChannelOptions> {
    let mut options = keywarden_channel::ChannelOptions::new()
        .handshake_timeout(std::time::Duration::from_secs(trust.timeout));
    for a in &trust.authorities {
        options = options.trust_authority(
            a.parse()
                .with_context(|| format!("--trust-authority {a:?}"))?,
        );
    }
    match (&trust.policy, trust.allow_peers.is_empty()) {
        (Some(_), false) => bail!("give either --policy or --allow-peer, not both"),
        (Some(file), true) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            options =
                options.with_policy(keywarden_channel::policy::CedarPolicy::new(&text, name)?);
        }
        (None, false) => {
            let ids = trust
                .allow_peers
                .iter()
                .map(|p| p.parse().with_context(|| format!("--allow-peer {p:?}")))
                .collect::<Result<_>>()?;
            options = options.with_policy(keywarden_channel::policy::AllowIdentifiers(ids));
        }
        (None, true) => bail!("nobody is trusted by default: give --allow-peer or --policy"),
    }
    Ok(options)
}

async fn channel(cli: &Cli, cmd: &ChannelCommand) -> Result<()> {
    use keywarden_channel::cli as ch;
    match cmd {
        ChannelCommand::Id { keys } => {
            let me = channel_identity(cli, keys).await?;
            println!("{}", me.identifier());
        }
        ChannelCommand::Listen {
            keys,
            trust,
            bind,
            name,
        } => {
            let me = channel_identity(cli, keys).await?;
            let options = channel_options(trust, name)?;
            let mut listening = ch::listen(&me, *bind, name, options).await?;
            eprintln!(
                "listening on {} as {} (worker {name})",
                listening.local_addr,
                me.identifier()
            );
            loop {
                match listening.listener.accept().await {
                    Ok(channel) => {
                        ch::pipe(channel, tokio::io::stdin(), tokio::io::stdout()).await?;
                        return Ok(());
                    }
                    Err(keywarden_channel::Error::Closed) => bail!("the node shut down"),
                    Err(e) => eprintln!("refused a channel: {e}"),
                }
            }
        }
        ChannelCommand::Connect {
            keys,
            trust,
            peer,
            route,
        } => {
            let me = channel_identity(cli, keys).await?;
            let last = route.last().cloned().unwrap_or_default();
            let options = channel_options(trust, &last)?;
            let hops: Vec<&str> = route.iter().map(String::as_str).collect();
            let (_node, channel) = ch::connect(&me, *peer, &hops, options).await?;
            ch::pipe(channel, tokio::io::stdin(), tokio::io::stdout()).await?;
        }
        ChannelCommand::Relay { bind, name, next } => {
            let (_node, local) = ch::relay(*bind, name, *next).await?;
            eprintln!("relay {name} on {local} forwarding to {next}");
            tokio::signal::ctrl_c().await?;
        }
    }
    Ok(())
}
