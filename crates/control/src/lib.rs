//! The control plane: wires the store, the process driver, one gateway per environment, the
//! controller and the HTTP API into `rollgate serve`.
//!
//! Start-up order matters for crash safety: open the store (exclusively), reap the processes
//! a crashed predecessor left, bind every listener (so address errors come first), bring the
//! aliases' versions back up and route them, resolve interrupted rollouts, and only then serve.

pub mod api;
pub mod artifacts;
pub mod controller;
pub mod edge_keys;
pub mod error;
pub mod notify;
pub mod secrets;
pub mod smoke;

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rollgate_core::Config;
use rollgate_gateway::{Gateway, GatewayConfig};
use rollgate_runtime::ProcessDriver;
use rollgate_store::{SqliteStore, Store};
use serde::{Deserialize, Serialize};

pub use controller::Controller;

/// Name of the file in the data directory that tells clients where a running server listens.
pub const SERVE_FILE: &str = "serve.json";
/// Name of the file in the data directory that holds the control API's bearer token.
pub const TOKEN_FILE: &str = "token";

/// Errors that stop the control plane from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] rollgate_store::StoreError),
    #[error("{what}: cannot listen on {addr}: {source}")]
    Bind {
        what: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("environment {env}: {message}")]
    Gateway { env: String, message: String },
    #[error("{0}")]
    Token(String),
    #[error("process driver: {0}")]
    Runtime(String),
    /// The master key is missing or wrong, or the secret service cannot start.
    #[error("secrets: {0}")]
    Secrets(#[from] secrets::SecretsError),
}

/// Where a running server can be reached; written to `serve.json` in the data directory.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServeInfo {
    /// `http://ADDR` of the control API.
    pub control: String,
    /// Gateway address of each environment.
    pub gateways: BTreeMap<String, String>,
    pub pid: u32,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ServerError + '_ {
    move |source| ServerError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Reads the token from the data directory, creating it (mode 0600) on first start.
pub fn ensure_token(data_dir: &Path) -> Result<String, ServerError> {
    let path = data_dir.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&path)(e)),
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| io_err(&path)(std::io::Error::other(e)))?;
    let token = hex::encode(bytes);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_err(&path))?;
    f.write_all(format!("{token}\n").as_bytes())
        .map_err(io_err(&path))?;
    f.sync_all().map_err(io_err(&path))?;
    Ok(token)
}

/// Runs the control plane until `shutdown` resolves; `on_ready` is called once everything
/// listens and the state is recovered.
pub async fn serve(
    config: Config,
    data_dir: PathBuf,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(&ServeInfo),
) -> Result<(), ServerError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&data_dir)
        .map_err(io_err(&data_dir))?;
    for sub in ["logs", "run", "artifacts"] {
        let p = data_dir.join(sub);
        std::fs::create_dir_all(&p).map_err(io_err(&p))?;
    }
    let token = ensure_token(&data_dir)?;
    let mut limited = Vec::new();
    for (i, t) in config.server.tokens.iter().enumerate() {
        let value = std::env::var(&t.token_env).unwrap_or_default();
        if value.trim().len() < 16 {
            return Err(ServerError::Token(format!(
                "server.tokens[{i}].token_env: the variable {} must hold the token of {:?} (at least 16 characters)",
                t.token_env, t.name
            )));
        }
        limited.push((t.name.clone(), value.trim().to_string(), t.may.clone()));
    }
    let api_tokens = api::ApiTokens {
        admin: token,
        limited,
    };
    let sqlite = Arc::new(SqliteStore::open(&data_dir.join("state.db"))?);
    let store: Arc<dyn Store> = Arc::clone(&sqlite) as Arc<dyn Store>;
    // Before anything runs: a wrong master key must stop the start with nothing changed.
    let (master_key, key_source) = secrets::load_master_key(&config, &data_dir, &*sqlite)?;
    let driver = Arc::new(
        ProcessDriver::new(data_dir.join("run"))
            .map_err(|e| ServerError::Runtime(e.to_string()))?,
    );
    let reaped = driver
        .reap_orphans()
        .map_err(|e| ServerError::Runtime(e.to_string()))?;
    if reaped > 0 {
        tracing::warn!(
            count = reaped,
            "stopped instances left running by a previous control plane"
        );
    }

    let mut gateways = BTreeMap::new();
    let mut bound = Vec::new();
    // Gateways that authenticate also take keys from the secret store (`edge-key.<id>`).
    let mut key_sources: Vec<Arc<edge_keys::SecretKeys>> = Vec::new();
    for env in config.envs.values() {
        let gateway_error = |message: String| ServerError::Gateway {
            env: env.name.clone(),
            message,
        };
        let gw_config = GatewayConfig {
            env: env.name.clone(),
            listen: env.listen,
            access_log: Some(
                data_dir
                    .join("logs")
                    .join(format!("access-{}.log", env.name)),
            ),
            override_header: env
                .override_header
                .as_deref()
                .and_then(|h| http::HeaderName::from_bytes(h.as_bytes()).ok()),
            workers: config.server.gateway_workers.unwrap_or(0),
            ..GatewayConfig::default()
        }
        // [env.NAME.edge]: request limits, IP lists, rate limit, WAF, auth (docs/edge.md).
        .with_edge_keys(env.edge.as_ref(), {
            let source = env
                .edge
                .as_ref()
                .filter(|e| e.auth.is_some())
                .map(|_| Arc::new(edge_keys::SecretKeys::new(&env.name)));
            key_sources.extend(source.clone());
            source.map(|s| s as Arc<dyn rollgate_gateway::KeySource>)
        })
        .map_err(|e| gateway_error(e.to_string()))?;
        let gw = Gateway::bind(gw_config)
            .await
            .map_err(|e| gateway_error(e.to_string()))?;
        gateways.insert(
            env.name.clone(),
            controller::EnvGateway {
                addr: gw.local_addr(),
                routes: gw.routes(),
                metrics: gw.metrics(),
            },
        );
        bound.push(gw);
    }
    let control = tokio::net::TcpListener::bind(config.server.control)
        .await
        .map_err(|source| ServerError::Bind {
            what: "control API (server.control)".to_string(),
            addr: config.server.control,
            source,
        })?;
    let control_addr = control.local_addr().map_err(io_err(&data_dir))?;

    let config = Arc::new(config);
    let controller = Controller::new(
        Arc::clone(&config),
        Arc::clone(&store),
        Arc::clone(&driver),
        artifacts::ArtifactStore::new(data_dir.join("artifacts")),
        data_dir.join("logs"),
        gateways.clone(),
    );
    controller.set_secrets(secrets::SecretService::new(
        Arc::clone(&config),
        sqlite,
        Arc::clone(&store),
        master_key,
        key_source,
        &data_dir,
    )?);
    // Keys first, so the first request a gateway serves already knows them.
    if let Some(service) = controller.secrets() {
        for source in &key_sources {
            if let Err(e) = source.refresh(service) {
                tracing::error!(error = %e, "cannot load gateway keys from the secret store");
            }
        }
    }
    controller.recover().await?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for gw in bound {
        let mut rx = stop_rx.clone();
        tasks.spawn(async move {
            let env = gw.local_addr();
            if let Err(e) = gw
                .serve(async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await
            {
                tracing::error!(gateway = %env, error = %e, "gateway stopped with an error");
            }
        });
    }
    let refresher = tokio::spawn(Arc::clone(&controller).route_refresher());
    let alarms = tokio::spawn(Arc::clone(&controller).alarm_loop());
    let rotations = tokio::spawn(secrets::rotation_loop(Arc::clone(&controller)));
    // A rotated or new key reaches the gateways within a few seconds.
    let key_refresh = {
        let controller = Arc::clone(&controller);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tick.tick().await;
                let Some(service) = controller.secrets() else {
                    continue;
                };
                for source in &key_sources {
                    match source.refresh(service) {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(
                            changed = n,
                            "gateway keys updated from the secret store"
                        ),
                        Err(e) => tracing::warn!(error = %e, "cannot refresh gateway keys"),
                    }
                }
            }
        })
    };
    let app = api::router(Arc::clone(&controller), api_tokens);
    let mut rx = stop_rx.clone();
    tasks.spawn(async move {
        let r = axum::serve(control, app)
            .with_graceful_shutdown(async move {
                let _ = rx.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "control API stopped with an error");
        }
    });

    let info = ServeInfo {
        control: format!("http://{control_addr}"),
        gateways: gateways
            .iter()
            .map(|(k, g)| (k.clone(), g.addr.to_string()))
            .collect(),
        pid: std::process::id(),
    };
    write_serve_file(&data_dir, &info)?;
    on_ready(&info);

    shutdown.await;
    tracing::info!("shutting down: draining gateways, then stopping instances");
    let _ = stop_tx.send(true);
    refresher.abort();
    alarms.abort();
    rotations.abort();
    key_refresh.abort();
    let drained = tokio::time::timeout(Duration::from_secs(15), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("listeners did not drain within 15s");
    }
    controller.stop_all().await;
    let _ = std::fs::remove_file(data_dir.join(SERVE_FILE));
    Ok(())
}

fn write_serve_file(data_dir: &Path, info: &ServeInfo) -> Result<(), ServerError> {
    let path = data_dir.join(SERVE_FILE);
    let tmp = data_dir.join(format!("{SERVE_FILE}.tmp"));
    let text =
        serde_json::to_string_pretty(info).map_err(|e| io_err(&path)(std::io::Error::other(e)))?;
    std::fs::write(&tmp, text).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err(&path))
}
