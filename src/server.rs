//! Starting and stopping the whole gateway: bind both ports, load the models, serve HTTP and
//! gRPC until one shutdown signal, then drain within the grace period.

use crate::api::tls::Tls;
use crate::config::Config;
use crate::gateway::{self, Gateway};
use crate::shutdown::{self, ShutdownTrigger};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {address} ({key}): {source}")]
    Bind {
        key: &'static str,
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Gateway(#[from] gateway::StartError),
    #[error(transparent)]
    Tls(#[from] crate::api::tls::TlsError),
}

pub struct Server {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    trigger: ShutdownTrigger,
    tasks: Vec<JoinHandle<()>>,
    grace: Duration,
}

impl Server {
    /// Binds the configured addresses (port 0 picks a free port; see `http_addr`/`grpc_addr`)
    /// and starts serving.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        let bind = |key: &'static str, address: SocketAddr| async move {
            TcpListener::bind(address)
                .await
                .map_err(|source| StartError::Bind {
                    key,
                    address,
                    source,
                })
        };
        let http_listener = bind("server.http_addr", config.server.http_addr).await?;
        let grpc_listener = bind("server.grpc_addr", config.server.grpc_addr).await?;
        let local = |listener: &TcpListener, key, fallback| {
            listener.local_addr().map_err(|source| StartError::Bind {
                key,
                address: fallback,
                source,
            })
        };
        let http_addr = local(&http_listener, "server.http_addr", config.server.http_addr)?;
        let grpc_addr = local(&grpc_listener, "server.grpc_addr", config.server.grpc_addr)?;
        let grace = Duration::from_millis(config.server.shutdown_grace_ms);
        let tls = match (&config.server.tls_cert_path, &config.server.tls_key_path) {
            (Some(cert), Some(key)) => Some(Tls::load(cert, key)?),
            _ => None,
        };
        let (trigger, shutdown) = shutdown::channel();
        let gateway = Arc::new(Gateway::start(config, shutdown.clone())?);
        gateway
            .metering
            .join_fleet()
            .await
            .map_err(gateway::StartError::Fleet)?;
        let mut tasks = vec![
            tokio::spawn(crate::api::http::serve(
                http_listener,
                gateway.clone(),
                shutdown.clone(),
                tls.clone(),
            )),
            tokio::spawn(crate::api::grpc::serve(
                grpc_listener,
                gateway.clone(),
                shutdown.clone(),
                tls.clone(),
            )),
        ];
        crate::api::deferred::runner::start(gateway.clone(), shutdown.clone());
        tasks.push(tokio::spawn(reload_on_hangup(
            gateway.clone(),
            tls,
            shutdown,
        )));
        announce(&gateway, http_addr, grpc_addr);
        Ok(Server {
            http_addr,
            grpc_addr,
            gateway,
            trigger,
            tasks,
            grace,
        })
    }

    /// Stops accepting, lets in-flight requests finish (up to the grace period), and returns.
    pub async fn stop(self) {
        self.trigger.trigger();
        let all = futures_join(self.tasks);
        if tokio::time::timeout(self.grace + Duration::from_secs(1), all)
            .await
            .is_err()
        {
            tracing::warn!("servers did not stop within the grace period");
        }
        // After the servers: every answered request's record is queued by now.
        self.gateway.finish().await;
    }
}

/// One line that says what this gateway enforces and where its records go, so a wrong config
/// shows at start rather than on the first bill.
fn announce(gateway: &Gateway, http_addr: SocketAddr, grpc_addr: SocketAddr) {
    let config = &gateway.config;
    let identities = &gateway.metering.identities();
    let auth = if identities.auth_required() {
        "required"
    } else {
        "off (calls without a known key are billed to `anonymous`)"
    };
    tracing::info!(
        %http_addr,
        %grpc_addr,
        auth,
        tenants = config.tenants.len(),
        models = gateway.models.snapshot().all().count(),
        ledger = %config.ledger.path.display(),
        durability = config.ledger.durability.as_str(),
        cache = config.cache.enabled,
        shared_cache = config.cache.redis_url.as_ref().map(|u| u.to_string()),
        fleet = config.fleet.redis_url.as_ref().map(|u| u.to_string()),
        dashboard = %format_args!("{http_addr}/dashboard"),
        "Tollgate is serving KServe V2 over HTTP and gRPC"
    );
    if !identities.admin_configured() {
        tracing::warn!("server.admin_token_blake3 is not set: the /dashboard, /v1 admin and cost endpoints are open to every caller");
    }
}

async fn futures_join(tasks: Vec<JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}

/// On each SIGHUP until shutdown: the TLS certificate and key read again (renewed files reach
/// new connections), and the config file read again (`Gateway::reload`). Whatever does not
/// read is logged and leaves the running part serving.
async fn reload_on_hangup(
    gateway: Arc<Gateway>,
    tls: Option<Arc<Tls>>,
    shutdown: shutdown::Shutdown,
) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        tracing::warn!("cannot listen for SIGHUP; the config and TLS files are read at start only");
        return;
    };
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = hangups.recv() => {}
            _ = &mut stop => return,
        }
        if let Some(tls) = &tls {
            match tls.reload() {
                Ok(()) => tracing::info!("SIGHUP: TLS certificate and key read again"),
                Err(error) => {
                    tracing::error!(%error, "SIGHUP: TLS files not reloaded; the old ones keep serving")
                }
            }
        }
        if gateway.config.source.is_some() {
            if let Err(error) = gateway.reload().await {
                tracing::error!(%error, "SIGHUP: config not reloaded");
            }
        }
    }
}
