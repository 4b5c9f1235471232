//! Putting the service on a Unix socket: start-up, signals, shutdown.

use std::future::Future;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::Path;
use std::sync::Arc;

use keywarden_registry::SqliteRegistry;
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;

use crate::proto::v1::key_service_server::KeyServiceServer;
use crate::service::api::{Api, MAX_REQUEST_BYTES};
use crate::service::audit::AuditLog;
use crate::service::backends::{self, sim_pin_path};
use crate::service::config::{BackendConfig, Config};
use crate::service::hardening::{self, HardeningError, HardeningOptions};
use crate::service::identity::current_uid;
use crate::service::metrics;
use crate::service::policy::{DEFAULT_POLICIES, Policy};
use crate::service::tls;
use crate::service::{Service, ServiceError};

/// Start-up and serving errors, each naming the file or setting at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The data directory could not be prepared.
    #[error("data directory {}: {reason}", path.display())]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// A backend did not open.
    #[error(transparent)]
    Backend(#[from] backends::BackendError),
    /// The registry did not open.
    #[error("registry: {0}")]
    Registry(#[from] keywarden_registry::Error),
    /// The policies are invalid.
    #[error(transparent)]
    Policy(#[from] crate::service::policy::PolicyError),
    /// The audit log is unusable.
    #[error(transparent)]
    Audit(#[from] crate::service::audit::AuditError),
    /// Recovery of interrupted work failed.
    #[error("recovery: {0}")]
    Recovery(#[from] ServiceError),
    /// The socket could not be bound.
    #[error("socket {}: {reason}", path.display())]
    Socket {
        /// The socket path.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// The gRPC server failed.
    #[error("server: {0}")]
    Serve(String),
    /// Process hardening or socket activation failed.
    #[error(transparent)]
    Hardening(#[from] HardeningError),
    /// The metrics endpoint could not be bound.
    #[error(transparent)]
    Metrics(#[from] metrics::BindError),
    /// A configured secret could not be read.
    #[error(transparent)]
    Config(#[from] crate::service::config::ConfigError),
    /// The mutual-TLS listener could not be set up.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

fn prepare_data_dir(config: &Config) -> Result<(), ServerError> {
    let fail = |path: &Path, e: std::io::Error| ServerError::DataDir {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.data_dir)
        .map_err(|e| fail(&config.data_dir, e))?;
    if !config.policy_dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&config.policy_dir)
            .map_err(|e| fail(&config.policy_dir, e))?;
        let default = config.policy_dir.join("default.cedar");
        std::fs::write(&default, DEFAULT_POLICIES).map_err(|e| fail(&default, e))?;
    }
    // An unedited default from an earlier release no longer validates (local rules must now
    // say `principal is Keywarden::Caller`): replace it, atomically, and say so.
    let default = config.policy_dir.join("default.cedar");
    if std::fs::read_to_string(&default)
        .is_ok_and(|t| crate::service::policy::is_previous_default(&t))
    {
        let fresh = config.policy_dir.join(".default.cedar.new");
        std::fs::write(&fresh, DEFAULT_POLICIES).map_err(|e| fail(&fresh, e))?;
        std::fs::rename(&fresh, &default).map_err(|e| fail(&default, e))?;
        tracing::warn!(
            file = %default.display(),
            "replaced the unedited default policies of an earlier release with this release's (same rules for local callers, none for TLS clients)"
        );
    }
    Ok(())
}

/// Opens everything the configuration names and finishes interrupted work; binds nothing.
/// This is what `keywarden serve --check-config` runs.
pub async fn build(config: &Config) -> Result<Arc<Service>, ServerError> {
    prepare_data_dir(config)?;
    if let Some(t) = &config.tls {
        // Read and checked here too, so that --check-config catches a bad certificate.
        tls::server_config(t)?;
    }
    let policy = Policy::open(&config.policy_dir, current_uid())?;
    let backends = backends::open_all(config).await?;
    let registry: Arc<dyn keywarden_registry::Registry> = if config.shared_registry() {
        open_shared_registry(config).await?
    } else {
        Arc::new(SqliteRegistry::open(&config.registry_path())?)
    };
    let audit = AuditLog::open(&config.audit_log, config.audit_fsync)?;
    let service = Service::new(
        backends,
        config.default_backend.clone(),
        registry,
        policy,
        audit,
        config.shared_registry(),
    )
    .await?;
    Ok(Arc::new(service))
}

#[cfg(feature = "postgres")]
async fn open_shared_registry(
    config: &Config,
) -> Result<Arc<dyn keywarden_registry::Registry>, ServerError> {
    let password = match &config.registry_password {
        Some(source) => Some(source.read("registry_password")?),
        None => None,
    };
    let options = keywarden_registry::PostgresOptions {
        password,
        tls_ca: config.registry_tls_ca.clone(),
        ..Default::default()
    };
    Ok(Arc::new(
        keywarden_registry::PostgresRegistry::connect_with_options(&config.registry, options)
            .await?,
    ))
}

#[cfg(not(feature = "postgres"))]
async fn open_shared_registry(
    _config: &Config,
) -> Result<Arc<dyn keywarden_registry::Registry>, ServerError> {
    // Config::resolve refuses postgres:// without the feature; this is unreachable in practice.
    Err(ServerError::Serve(
        "this build has no PostgreSQL support".into(),
    ))
}

/// Binds the socket: refuses if another service answers on it, replaces a stale one.
pub async fn bind(path: &Path, mode: u32) -> Result<UnixListener, ServerError> {
    let fail = |reason: String| ServerError::Socket {
        path: path.to_path_buf(),
        reason,
    };
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(fail(
                "another keywarden service is already serving on it".into(),
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| fail(format!("stale socket cannot be removed: {e}")))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| fail(format!("cannot bind: {e}")))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| fail(format!("cannot set mode {mode:o}: {e}")))?;
    Ok(listener)
}

/// Serves `service` on `listener` until `shutdown` completes, then removes the socket.
pub async fn serve(
    service: Arc<Service>,
    listener: UnixListener,
    socket: &Path,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    serve_and_remove(service, listener, Some(socket), shutdown).await
}

fn api(service: Arc<Service>) -> KeyServiceServer<Api> {
    KeyServiceServer::new(Api::new(service))
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .max_encoding_message_size(MAX_REQUEST_BYTES)
}

/// Serves until `shutdown`; then removes `socket` unless it is `None` (socket activation:
/// the socket file is systemd's).
async fn serve_and_remove(
    service: Arc<Service>,
    listener: UnixListener,
    socket: Option<&Path>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let result = tonic::transport::Server::builder()
        .add_service(api(service))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .map_err(|e| ServerError::Serve(e.to_string()));
    if let Some(socket) = socket {
        let _ = std::fs::remove_file(socket);
    }
    result
}

/// Requests in flight on one TLS connection at most.
pub const REMOTE_STREAMS_PER_CONNECTION: u32 = 64;
/// How long one remote request may take.
pub const REMOTE_REQUEST_TIMEOUT_SECS: u64 = 30;

/// Serves `service` to mutual-TLS clients on `listener` until `shutdown` completes; new
/// connections use the settings `tls` holds at the time.
pub async fn serve_tls(
    service: Arc<Service>,
    listener: tokio::net::TcpListener,
    tls: &tls::Reloadable,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let counter = Arc::clone(&service);
    let incoming = tls::incoming(
        listener,
        tls.subscribe(),
        tls::Limits::of(tls.config()),
        Arc::new(move |why: tls::Refusal| counter.metrics().tls_refused(why.label())),
    );
    let secs = std::time::Duration::from_secs;
    tonic::transport::Server::builder()
        // Remote peers can vanish without a FIN; find out within a minute.
        .http2_keepalive_interval(Some(secs(30)))
        .http2_keepalive_timeout(Some(secs(20)))
        // Revocation and expiry are checked at the handshake: bound how long one lasts, and
        // how long its last requests may take after that.
        // At the maximum age the server asks the client to go away (GOAWAY) and lets its
        // requests finish; the connection itself closes close_grace_secs later in any case
        // (tls::TlsConnection). tonic's own grace would skip the GOAWAY.
        .max_connection_age(secs(tls.config().max_connection_age_secs))
        // What one verified client can hold: tonic otherwise lifts hyper's and h2's limits.
        .max_concurrent_streams(Some(REMOTE_STREAMS_PER_CONNECTION))
        .concurrency_limit_per_connection(REMOTE_STREAMS_PER_CONNECTION as usize)
        .http2_max_pending_accept_reset_streams(Some(20))
        .http2_max_local_error_reset_streams(Some(1024))
        .http2_max_header_list_size(Some(16 * 1024))
        .timeout(secs(REMOTE_REQUEST_TIMEOUT_SECS))
        .add_service(api(service))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| ServerError::Serve(e.to_string()))
}

/// A one-line description of where everything is, logged at start.
pub fn describe(config: &Config) -> String {
    let backends: Vec<String> = config
        .backends
        .iter()
        .map(|(n, b)| match b {
            BackendConfig::Sim { .. } => format!(
                "{n} (embedded hsm-sim, PIN file {})",
                sim_pin_path(&config.data_dir).display()
            ),
            BackendConfig::Pkcs11(p) => format!("{n} (pkcs11 {})", p.module.display()),
            #[allow(unreachable_patterns)]
            other => format!("{n} ({})", other.kind()),
        })
        .collect();
    let mut metrics = match config.metrics {
        Some(addr) => format!("; metrics on http://{addr}/metrics"),
        None => String::new(),
    };
    if let Some(t) = &config.tls {
        metrics.push_str(&format!(
            "; mutual TLS on {} (client CA {})",
            t.listen,
            t.client_ca.display()
        ));
    }
    format!(
        "keywarden serving on {} (mode {:o}); data {}; registry {}; audit log {}; policies {}; backends: {}; default backend {}{metrics}",
        config.socket.display(),
        config.socket_mode,
        config.data_dir.display(),
        match &config.registry_tls_ca {
            Some(ca) => format!(
                "{} over TLS (CA {})",
                crate::service::config::redact_registry(&config.registry),
                ca.display()
            ),
            None => crate::service::config::redact_registry(&config.registry),
        },
        config.audit_log.display(),
        config.policy_dir.display(),
        backends.join(", "),
        config.default_backend,
    )
}

/// The whole `keywarden serve`: harden the process, build, bind (or take the socket systemd
/// passed), tell systemd it is ready, reload policies on SIGHUP, stop on SIGINT/SIGTERM.
pub async fn run(config: Config, hardening: &HardeningOptions) -> Result<(), ServerError> {
    let report = hardening::harden(hardening)?;
    tracing::info!("{report}");
    let service = build(&config).await?;
    // Bound before the socket, so that a taken address stops start-up with nothing to undo.
    let metrics_listener = match config.metrics {
        Some(addr) => {
            if !addr.ip().is_loopback() {
                tracing::warn!(%addr, "the metrics endpoint has no authentication and listens beyond loopback");
            }
            Some(metrics::bind(addr).await?)
        }
        None => None,
    };
    let tls_listener = match &config.tls {
        Some(t) => Some((
            tls::bind(t.listen).await?,
            Arc::new(tls::Reloadable::new(t)?),
        )),
        None => None,
    };
    let tls_settings = tls_listener.as_ref().map(|(_, r)| Arc::clone(r));
    let (listener, own_socket) = match hardening::activated_listener()? {
        Some(l) => {
            let l = UnixListener::from_std(l).map_err(|e| ServerError::Socket {
                path: config.socket.clone(),
                reason: format!("socket from systemd: {e}"),
            })?;
            tracing::info!("listening on the socket systemd passed (socket activation)");
            (l, None)
        }
        None => (
            bind(&config.socket, config.socket_mode).await?,
            Some(config.socket.as_path()),
        ),
    };
    tracing::info!("{}", describe(&config));
    if let Some(l) = metrics_listener {
        tokio::spawn(metrics::serve(Arc::clone(&service), l));
    }
    {
        let service = Arc::clone(&service);
        tokio::spawn(async move {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                return;
            };
            while hup.recv().await.is_some() {
                let _ = hardening::notify("RELOADING=1");
                match service.policy().reload() {
                    Ok(n) => tracing::info!(policies = n, "policies reloaded"),
                    Err(e) => {
                        tracing::error!(error = %e, "policy reload failed; keeping the previous policies")
                    }
                }
                if let Some(settings) = &tls_settings {
                    match settings.reload() {
                        Ok(()) => tracing::info!(
                            "TLS certificate, client CAs and CRLs reloaded (new connections use them)"
                        ),
                        Err(e) => tracing::error!(
                            error = %e,
                            "TLS reload failed; keeping the previous certificate and CRLs"
                        ),
                    }
                }
                let _ = hardening::notify("READY=1");
            }
        });
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let tls_server = match tls_listener {
        Some((l, settings)) => {
            let (service, mut stopped) = (Arc::clone(&service), stopped.clone());
            Some(tokio::spawn(async move {
                let shutdown = async move {
                    let _ = stopped.wait_for(|s| *s).await;
                };
                serve_tls(service, l, &settings, shutdown).await
            }))
        }
        None => None,
    };
    drop(stopped);
    let shutdown = async move {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        tracing::info!("shutting down");
        let _ = hardening::notify("STOPPING=1");
        let _ = stop.send(true);
    };
    if let Err(e) = hardening::notify("READY=1\nSTATUS=serving") {
        tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
    // If the TLS listener stops on its own, the whole service stops (and its manager restarts
    // it) rather than serve half of its callers.
    let (tls_failed_tx, tls_failed) = tokio::sync::oneshot::channel::<String>();
    let tls_server = tls_server.map(|task| {
        tokio::spawn(async move {
            let outcome = match task.await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            };
            let _ = tls_failed_tx.send(outcome);
        })
    });
    let failure = Arc::new(std::sync::Mutex::new(None::<String>));
    let shutdown = {
        let failure = Arc::clone(&failure);
        async move {
            tokio::select! {
                () = shutdown => {}
                Ok(why) = tls_failed => {
                    tracing::error!(error = %why, "the TLS listener stopped; stopping the service");
                    let _ = hardening::notify("STOPPING=1");
                    *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                }
            }
        }
    };
    let unix = serve_and_remove(service, listener, own_socket, shutdown).await;
    if let Some(why) = failure.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(ServerError::Serve(format!(
            "the TLS listener stopped: {why}"
        )));
    }
    if let Some(task) = tls_server {
        // Connections get max_connection_age_grace to finish; do not wait past that.
        let grace = std::time::Duration::from_secs(
            config
                .tls
                .as_ref()
                .map_or(0, |t| t.close_grace_secs)
                .max(REMOTE_REQUEST_TIMEOUT_SECS)
                + 5,
        );
        if tokio::time::timeout(grace, task).await.is_err() {
            tracing::warn!("TLS connections still open after the grace period; closing them");
        }
    }
    unix
}
