//! `serve`: the receivers, the admission check and the API listener, until the shutdown
//! future resolves; and the quota refresher, a thread that reads quota usage back from the
//! store.

use std::{
    future::Future,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::Context;
use axum::{
    extract::State,
    http::StatusCode,
    response::IntoResponse,
    routing::{get, post},
    Json, Router,
};
use tracing::{error, info, warn};

use crate::{
    accounts::Accounts,
    api::{self, scope::ApiTokens, ApiState},
    config::CollectorConfig,
    quota::{self, admission::Admission, ext_authz::Authorization, Alerter},
    rate::PriceBook,
    receive::{self, auth::Auth, now_ns, Ingestor},
    store::{self, SidePolicy, Store},
};

/// Everything `serve` runs, made outside any tokio runtime: the PostgreSQL client runs one
/// of its own, which must not be started or dropped inside another. Keep it until the
/// server's runtime is gone.
pub struct Prepared {
    pub ingestor: Arc<Ingestor>,
    pub api: ApiState,
    pub admission: Arc<Admission>,
    pub alerter: Arc<Alerter>,
    refresher: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

/// Loads what the config names (errors say which file and what is wrong), opens the store
/// and starts the quota refresher.
pub fn prepare(config: &CollectorConfig) -> anyhow::Result<Prepared> {
    let book = PriceBook::load(&config.price_book)?;
    let accounts = match &config.accounts {
        Some(path) => Accounts::load(path)?,
        None => Accounts::default(),
    };
    let quotas = match &config.quotas {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the quotas {}", path.display()))?;
            quota::parse(&text, &accounts)?
        }
        None => Vec::new(),
    };
    let admission = Arc::new(Admission::new(&config.admission, accounts.clone(), quotas)?);
    let alerter = Arc::new(Alerter::default());
    let refresher = if admission.quotas().is_empty() {
        None
    } else {
        let store = store::open(&config.database)?;
        let stop = Arc::new(AtomicBool::new(false));
        let every = Duration::from_millis(config.admission.refresh_ms.max(100));
        let thread = {
            let (admission, alerter, stop) = (admission.clone(), alerter.clone(), stop.clone());
            let (book, accounts, policy) = (book.clone(), accounts.clone(), config.side_policy);
            std::thread::Builder::new()
                .name("quota-refresher".into())
                .spawn(move || {
                    refresh(
                        store, &admission, &alerter, &book, &accounts, policy, every, &stop,
                    )
                })?
        };
        Some((stop, thread))
    };
    let tokens = match &config.api.tokens_file {
        Some(path) => ApiTokens::parse(
            &std::fs::read_to_string(path)
                .with_context(|| format!("reading api.tokens_file {}", path.display()))?,
        )
        .map_err(anyhow::Error::msg)?,
        None => ApiTokens::default(),
    };
    let api = ApiState {
        tokens,
        store: Arc::new(std::sync::Mutex::new(store::open(&config.database)?)),
        book: Arc::new(book.clone()),
        accounts: Arc::new(accounts.clone()),
        admission: admission.clone(),
        policy: config.side_policy,
    };
    let store = store::open(&config.database)?;
    Ok(Prepared {
        ingestor: Ingestor::new(store, book, accounts),
        api,
        admission,
        alerter,
        refresher,
    })
}

#[allow(clippy::too_many_arguments)]
fn refresh(
    mut store: Box<dyn Store>,
    admission: &Admission,
    alerter: &Alerter,
    book: &PriceBook,
    accounts: &Accounts,
    policy: SidePolicy,
    every: Duration,
    stop: &AtomicBool,
) {
    let mut failing = false;
    while !stop.load(Ordering::Relaxed) {
        let now = now_ns();
        match quota::evaluate(
            admission.quotas(),
            store.as_mut(),
            book,
            accounts,
            policy,
            now,
        ) {
            Ok(states) => {
                alerter.check(admission.quotas(), &states, store.as_mut(), now);
                admission.update(states);
                failing = false;
            }
            // The last reading stays in force: admission neither opens nor closes blindly.
            Err(e) if !failing => {
                error!(%e, "reading quota usage failed; the last reading stays in force");
                failing = true;
            }
            Err(_) => {}
        }
        std::thread::sleep(every);
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.refresher.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = thread.join();
        }
    }
}

/// `POST /v1/admission` with `{"headers": {...}}` (the request's headers) or
/// `{"attributes": {...}}`: 200 with the decision, or 429 when a hard quota is spent.
async fn admit(
    State(admission): State<Arc<Admission>>,
    Json(body): Json<serde_json::Value>,
) -> impl IntoResponse {
    let strings = |key: &str| -> Vec<(String, String)> {
        body[key]
            .as_object()
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    };
    let headers = strings("headers");
    let mut attributes =
        admission.attributes(headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    attributes.extend(strings("attributes"));
    let decision = admission.decide(&attributes);
    let status = if decision.allowed {
        StatusCode::OK
    } else {
        StatusCode::TOO_MANY_REQUESTS
    };
    (status, Json(decision))
}

pub async fn serve(
    config: CollectorConfig,
    prepared: &Prepared,
    ready_file: Option<&Path>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let ingestor = prepared.ingestor.clone();
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
    let grpc_router = receive::grpc::router(ingestor.clone(), auth.clone(), max)
        .add_service(Authorization::new(prepared.admission.clone()))
        .into_axum_router();
    let http_router = receive::http::router(ingestor.clone(), auth, max);
    let (admission, alerter) = (prepared.admission.clone(), prepared.alerter.clone());
    let api_router = Router::new()
        .route(
            "/metrics",
            get(move || async move {
                let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
                let mut text = ingestor.render_metrics();
                for (name, help, value) in [
                    (
                        "tokenmeter_collector_admission_allowed_total",
                        "Admission checks allowed.",
                        get(&admission.allowed),
                    ),
                    (
                        "tokenmeter_collector_admission_denied_total",
                        "Admission checks denied by a hard quota.",
                        get(&admission.denied),
                    ),
                    (
                        "tokenmeter_collector_quota_alerts_total",
                        "Quota alerts sent (once per quota and window).",
                        get(&alerter.sent),
                    ),
                    (
                        "tokenmeter_collector_quota_webhook_failures_total",
                        "Quota webhooks that failed.",
                        get(&alerter.webhook_failures),
                    ),
                ] {
                    receive::counter_text(&mut text, name, help, value);
                }
                text
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/admission", post(admit))
        .with_state(prepared.admission.clone())
        .merge(api::router(prepared.api.clone()));
    if let Some(path) = ready_file {
        std::fs::write(path, serde_json::to_vec(&addresses)?)
            .with_context(|| format!("writing the ready file {}", path.display()))?;
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    fn spawn<L>(
        listener: L,
        router: Router,
        stopped: impl Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<std::io::Result<()>>
    where
        L: axum::serve::Listener,
        L::Addr: std::fmt::Debug,
    {
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stopped)
                .await
        })
    }
    let mut servers = Vec::new();
    match &config.receiver.tls {
        Some(tls) => {
            let acceptor = receive::tls::acceptor(tls)?;
            info!(
                mutual = tls.client_ca_file.is_some(),
                "the OTLP receivers speak TLS"
            );
            let grpc = receive::tls::TlsListener::new(grpc, acceptor.clone())?;
            let http = receive::tls::TlsListener::new(http, acceptor)?;
            servers.push(spawn(grpc, grpc_router, until_stopped(stopped.clone())));
            servers.push(spawn(http, http_router, until_stopped(stopped.clone())));
        }
        None => {
            servers.push(spawn(grpc, grpc_router, until_stopped(stopped.clone())));
            servers.push(spawn(http, http_router, until_stopped(stopped.clone())));
        }
    }
    servers.push(spawn(api, api_router, until_stopped(stopped)));
    shutdown.await;
    info!("shutting down");
    let _ = stop.send(true);
    for server in servers {
        server.await??;
    }
    Ok(())
}
