//! `serve`: the receivers and the API listener, until the shutdown future resolves.

use std::{future::Future, path::Path, sync::Arc};

use anyhow::Context;
use axum::{routing::get, Router};
use tracing::{info, warn};

use crate::{
    accounts::Accounts,
    config::CollectorConfig,
    rate::PriceBook,
    receive::{self, auth::Auth, Ingestor},
    store,
};

/// Loads what the config names; errors say which file and what is wrong.
pub fn ingestor(config: &CollectorConfig) -> anyhow::Result<Arc<Ingestor>> {
    let book = PriceBook::load(&config.price_book)?;
    let accounts = match &config.accounts {
        Some(path) => Accounts::load(path)?,
        None => Accounts::default(),
    };
    let store = store::open(&config.database)?;
    Ok(Ingestor::new(store, book, accounts))
}

/// Serves until `shutdown`. The ingestor is made outside the runtime (see [`ingestor`]): the
/// PostgreSQL client runs its own, which must not be started or dropped inside another, so
/// the caller also keeps a handle until the runtime is gone.
pub async fn serve(
    config: CollectorConfig,
    ingestor: Arc<Ingestor>,
    ready_file: Option<&Path>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let auth = Auth::new(config.tokens()?);
    if auth.is_open() {
        warn!("no receiver.token_file: any client may send usage (fine for a local demo only)");
    }
    let max = config.receiver.max_request_bytes;
    let bind = |addr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))
    };
    let grpc = bind(config.receiver.grpc_listen).await?;
    let http = bind(config.receiver.http_listen).await?;
    let api = bind(config.api.listen).await?;
    let addresses = serde_json::json!({
        "grpc": grpc.local_addr()?.to_string(),
        "http": http.local_addr()?.to_string(),
        "api": api.local_addr()?.to_string(),
    });
    info!(%addresses, database = %config.database, "collector listening");
    let grpc_router = receive::grpc::router(ingestor.clone(), auth.clone(), max).into_axum_router();
    let http_router = receive::http::router(ingestor.clone(), auth, max);
    let metrics = ingestor.clone();
    let api_router = Router::new()
        .route(
            "/metrics",
            get(move || async move { metrics.render_metrics() }),
        )
        .route("/healthz", get(|| async { "ok" }));
    if let Some(path) = ready_file {
        std::fs::write(path, serde_json::to_vec(&addresses)?)
            .with_context(|| format!("writing the ready file {}", path.display()))?;
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let run = |listener, router, stopped| async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(until_stopped(stopped))
            .await
    };
    let servers = [
        tokio::spawn(run(grpc, grpc_router, stopped.clone())),
        tokio::spawn(run(http, http_router, stopped.clone())),
        tokio::spawn(run(api, api_router, stopped)),
    ];
    shutdown.await;
    info!("shutting down");
    let _ = stop.send(true);
    for server in servers {
        server.await??;
    }
    Ok(())
}
