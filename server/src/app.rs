//! Builds the router and runs the relay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

use anyhow::Context;
use axum::extract::ConnectInfo;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Router;
use privcomm_protocol::limits::{MAX_AUTH_BODY_BYTES, MAX_KEYS_BODY_BYTES, MAX_SEND_BODY_BYTES};
use privcomm_protocol::ErrorCode;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::budget::ByteBudget;
use crate::bus::in_process::InProcessBus;
use crate::bus::redis::RedisBus;
use crate::bus::RoutingBus;
use crate::clock::Clock;
use crate::config::Config;
use crate::conn_limits::ConnectionLimits;
use crate::error::ApiError;
use crate::metrics::{method_label, Metrics, RouteLabels};
use crate::pepper::Pepper;
use crate::rate_limit::{Limit, RateLimits};
use crate::routes;
use crate::secrets::configured_secret;
use crate::serve::{serve, ServeSettings};
use crate::state::AppState;
use crate::storage_gauge::StorageGauge;

use crate::tokens::{load_or_create_secret, TokenIssuer};
use crate::writer::WriteQueue;
use crate::ws::registry::ConnectionRegistry;
use crate::{maintenance, ws};

/// Every route of the relay. Rate-limited routes count the request before its body is
/// read, and every route reads at most its own body limit.
pub fn router(state: AppState) -> Router {
    let request_ids = ServiceBuilder::new()
        .map_request(drop_unusable_request_id)
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span(state.instance_id.clone()))
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        );
    let limited =
        |limit: Limit| middleware::from_fn_with_state((state.clone(), limit), before_body);
    let body = |max: usize| {
        ServiceBuilder::new()
            .layer(middleware::from_fn_with_state(
                max,
                refuse_declared_oversize,
            ))
            .layer(DefaultBodyLimit::max(max))
    };
    Router::new()
        .route("/health", get(routes::health::health))
        .route("/metrics", get(routes::metrics::metrics))
        .route(
            "/auth/challenge",
            post(routes::auth::challenge)
                .layer(body(MAX_AUTH_BODY_BYTES))
                .route_layer(limited(Limit::Challenge)),
        )
        .route(
            "/auth/token",
            post(routes::auth::token)
                .layer(body(MAX_AUTH_BODY_BYTES))
                .route_layer(limited(Limit::Token)),
        )
        .route(
            "/api/v1/verification",
            post(routes::verification::request_code)
                .layer(body(MAX_AUTH_BODY_BYTES))
                .route_layer(limited(Limit::Verification)),
        )
        .route(
            "/api/v1/account/registration-lock",
            put(routes::account::set_lock)
                .delete(routes::account::remove_lock)
                .layer(body(MAX_AUTH_BODY_BYTES)),
        )
        .route(
            "/api/v1/register",
            post(routes::register::register)
                .layer(body(MAX_KEYS_BODY_BYTES))
                .route_layer(limited(Limit::Register)),
        )
        .route("/keys/{phone_hash}", get(routes::keys::bundle))
        .route("/api/v1/prekeys/count", get(routes::keys::count))
        .route(
            "/api/v1/prekeys",
            put(routes::keys::upload).layer(body(MAX_KEYS_BODY_BYTES)),
        )
        .route(
            "/api/v1/messages",
            post(routes::messages::send).layer(body(MAX_SEND_BODY_BYTES)),
        )
        .route("/api/v1/turn-credentials", get(routes::turn::credentials))
        .route("/ws", get(ws::ws_handler))
        .route_layer(middleware::from_fn_with_state(state.clone(), track_latency))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            request_timeout,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Routes without a body of their own read none beyond this.
        .layer(DefaultBodyLimit::max(MAX_AUTH_BODY_BYTES))
        .layer(request_ids)
        .with_state(state)
}

/// Longest client-chosen `X-Request-Id` kept (it is echoed and logged).
const MAX_REQUEST_ID_LEN: usize = 64;

/// Removes an `X-Request-Id` that is too long or holds anything but `[A-Za-z0-9-]`, so the
/// relay generates one instead of logging and echoing the client's.
fn drop_unusable_request_id<B>(mut req: Request<B>) -> Request<B> {
    let usable = req.headers().get_all("x-request-id").iter().count() <= 1
        && req.headers().get("x-request-id").is_none_or(|v| {
            let v = v.as_bytes();
            !v.is_empty()
                && v.len() <= MAX_REQUEST_ID_LEN
                && v.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        });
    if !usable {
        req.headers_mut().remove("x-request-id");
    }
    req
}

/// The span of one request: its id, method and route template. Never the URI, which may
/// carry a phone hash or a token, nor a method outside the fixed set.
fn request_span(instance: Arc<str>) -> impl Fn(&Request) -> tracing::Span + Clone {
    move |req| request_span_of(&instance, req)
}

fn request_span_of(instance: &str, req: &Request) -> tracing::Span {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
        .unwrap_or("unmatched");
    tracing::info_span!(
        "request",
        instance,
        request_id,
        method = method_label(req.method()),
        route
    )
}

async fn track_latency(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let labels = RouteLabels {
        method: method_label(req.method()).to_owned(),
        route: req
            .extensions()
            .get::<MatchedPath>()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
    };
    let started = Instant::now();
    let response = next.run(req).await;
    state
        .metrics
        .request_latency
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Answers 408 when a request, its body upload included, takes longer than the configured
/// request timeout (a WebSocket upgrade answers at once, so it is not affected).
async fn request_timeout(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = Duration::from_secs(state.config.request_timeout_secs);
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            ApiError::new(ErrorCode::RequestTimeout, "the request took too long").into_response()
        }
    }
}

/// Counts a request against its rate limit before its body is read, so a refused client
/// never makes the relay buffer a body.
async fn before_body(
    State((state, limit)): State<(AppState, Limit)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let client = state
        .config
        .trusted_proxies
        .client_key(peer.ip(), req.headers());
    match state.rate_limits.check_client(limit, client).await {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Answers 413 at once when the declared `Content-Length` is over the route's limit, instead
/// of reading up to the limit first.
async fn refuse_declared_oversize(State(max): State<usize>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > u64::try_from(max).unwrap_or(u64::MAX) => {
            ApiError::new(ErrorCode::PayloadTooLarge, "request body too large").into_response()
        }
        _ => next.run(req).await,
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this endpoint does not take this method",
    )
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such endpoint")
}

/// A running relay.
pub struct RelayServer {
    addr: SocketAddr,
    state: AppState,
    serve: tokio::task::JoinHandle<std::io::Result<()>>,
    maintenance: tokio::task::JoinHandle<()>,
    /// Stops the routing bus when dropped: after the connections in `shutdown`.
    bus_stop: tokio_util::sync::DropGuard,
}

impl RelayServer {
    /// Opens storage, binds `config.bind` and starts serving, with the code sender
    /// `config` names.
    pub async fn start(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        config.validate()?;
        let codes = crate::codes::from_config(&config)?;
        Self::start_with_codes(config, clock, codes).await
    }

    /// `start` with a code sender of the embedder's own (`None`: nobody can register).
    pub async fn start_with_codes(
        config: Config,
        clock: Arc<dyn Clock>,
        codes: Option<Arc<dyn crate::codes::CodeSender>>,
    ) -> anyhow::Result<Self> {
        config.validate()?;
        let instance_id: Arc<str> = config.effective_instance_id().into();
        // Every task the relay starts runs in this span: its logs name the instance.
        let span = tracing::info_span!("relay", instance = %instance_id);
        Self::start_instance(config, clock, codes, instance_id)
            .instrument(span)
            .await
    }

    async fn start_instance(
        config: Config,
        clock: Arc<dyn Clock>,
        codes: Option<Arc<dyn crate::codes::CodeSender>>,
        instance_id: Arc<str>,
    ) -> anyhow::Result<Self> {
        match &codes {
            Some(sender) => tracing::info!(sender = sender.kind(), "verification codes enabled"),
            None => tracing::warn!(
                "no verification code sender (PRIVCOMM_CODE_SENDER): nobody can register"
            ),
        }
        crate::files::create_private_dir(&config.data_dir)
            .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
        let secret = load_or_create_secret(config.jwt_secret.as_deref(), &config.data_dir)
            .context("loading the JWT secret")?;
        let previous_secret = configured_secret(
            config.jwt_previous_secret.as_deref(),
            "PRIVCOMM_JWT_PREVIOUS_SECRET",
        )?;
        let mut tokens = TokenIssuer::new(&secret, privcomm_protocol::limits::TOKEN_TTL_SECS);
        if let Some(previous) = &previous_secret {
            tokens = tokens.with_previous(previous);
        }
        let pepper = Arc::new(Pepper::load(
            config.phone_pepper.as_deref(),
            &config.data_dir,
        )?);
        if config.phone_pepper.is_none() && config.effective_database_url().starts_with("sqlite:") {
            tracing::warn!(
                "the phone pepper is kept in the data dir beside the database: a copy of the \
                 directory holds both, and with both every stored number can be guessed; set \
                 PRIVCOMM_PHONE_PEPPER from a secret store, or keep phone_pepper out of backups"
            );
        }
        let store = crate::store::open(
            &config.effective_database_url(),
            config.store_settings(),
            pepper.clone(),
        )
        .await
        .context("opening the database")?;
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .with_context(|| format!("binding {}", config.bind))?;
        let addr = listener.local_addr()?;
        let connections = Arc::new(ConnectionRegistry::new(config.max_connections));
        let clustered = config.effective_redis_url().is_some() || config.instance_id.is_some();
        let metrics = Arc::new(Metrics::for_instance(clustered.then_some(&*instance_id)));
        let shutdown = CancellationToken::new();
        // The bus outlives the connections: they release their users over it while the
        // relay shuts down.
        let bus_stop = CancellationToken::new();
        let mut shared_limits = None;
        let bus: Arc<dyn RoutingBus> = match config.effective_redis_url() {
            Some(url) => {
                let started = RedisBus::start(
                    url,
                    instance_id.to_string(),
                    metrics.clone(),
                    bus_stop.clone(),
                )?;
                tokio::spawn(
                    crate::bus::dispatch::run(
                        started.events,
                        connections.clone(),
                        shutdown.clone(),
                    )
                    .in_current_span(),
                );
                tokio::spawn(
                    crate::bus::reader::run(
                        started.wakes,
                        store.clone(),
                        connections.clone(),
                        metrics.clone(),
                        shutdown.clone(),
                    )
                    .in_current_span(),
                );
                let bus = started.bus;
                tracing::info!(instance = %instance_id, "routing bus: redis");
                shared_limits = Some(bus.clone());
                bus
            }
            None => Arc::new(InProcessBus),
        };
        let writes = WriteQueue::start(
            store.clone(),
            connections.clone(),
            bus.clone(),
            metrics.clone(),
            clock.clone(),
            config.mailbox_quota(),
        );
        let storage = Arc::new(StorageGauge::default());
        let marks = config.storage_marks();
        storage
            .measure(store.as_ref(), &config.data_dir, marks)
            .await;
        let state = AppState {
            store,
            writes,
            clock,
            codes,
            pepper,
            tokens: Arc::new(tokens),
            connections,
            bus,
            instance_id,
            metrics,
            rate_limits: Arc::new(RateLimits::with_shared(&config, shared_limits)),
            inflight: ByteBudget::new(config.max_inflight_mb.saturating_mul(1024 * 1024)),
            storage: storage.clone(),
            prekey_claims: Arc::default(),
            shutdown,
            tasks: TaskTracker::new(),
            config: Arc::new(config),
        };
        tokio::spawn(
            storage
                .run(
                    state.store.clone(),
                    state.config.data_dir.clone(),
                    marks,
                    Duration::from_secs(state.config.storage_check_secs.max(1)),
                    state.shutdown.clone(),
                )
                .in_current_span(),
        );
        let maintenance = tokio::spawn(
            maintenance::run_periodically(
                state.clone(),
                Duration::from_secs(state.config.maintenance_interval_secs),
            )
            .in_current_span(),
        );
        tokio::spawn(
            maintenance::scrub_periodically(state.clone(), maintenance::SCRUB_INTERVAL)
                .in_current_span(),
        );
        let open_file_limit = crate::serve::open_file_limit();
        let settings = ServeSettings {
            limits: ConnectionLimits::new(
                state.config.effective_max_sockets(open_file_limit),
                state.config.max_sockets_per_client,
                state.config.trusted_proxies.clone(),
            ),
            header_timeout: Duration::from_secs(state.config.header_timeout_secs.max(1)),
            metrics: state.metrics.clone(),
        };
        let serve = tokio::spawn(
            serve(
                listener,
                router(state.clone()),
                settings,
                state.shutdown.clone(),
            )
            .in_current_span(),
        );
        tracing::info!(%addr, "relay listening");
        Ok(Self {
            addr,
            state,
            serve,
            maintenance,
            bus_stop: bus_stop.drop_guard(),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Shared state (tests use it to reach storage and the clock-driven maintenance).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// A token that is cancelled when shutdown begins.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.state.shutdown.clone()
    }

    /// Stops accepting, closes every WebSocket with 1001 after its current frame, waits for
    /// them, and closes storage. Nothing acknowledged as stored is lost.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.state.shutdown.cancel();
        // Once the listener has stopped no new connection task can start, so the tracker
        // can then be closed and drained.
        let served = self.serve.await.context("server task panicked")?;
        self.state.tasks.close();
        self.state.tasks.wait().await;
        // Every connection has released its user: the bus may go.
        drop(self.bus_stop);
        let _ = self.maintenance.await;
        self.state.store.close().await;
        served.context("server failed")?;
        Ok(())
    }

    /// Resolves when the server task ends by itself (an I/O error).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.serve).await.context("server task panicked")??;
        Ok(())
    }
}

/// Runs a relay with `config` until SIGTERM or Ctrl-C, then shuts it down cleanly (what the
/// `privcomm-server` binary does; the benchmark harness runs the same in its own process).
pub async fn run_until_signal(config: Config) -> anyhow::Result<()> {
    crate::serve::raise_open_file_limit();
    let mut server = match RelayServer::start(config, Arc::new(crate::SystemClock)).await {
        Ok(server) => server,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "relay failed to start");
            return Err(e);
        }
    };
    tokio::select! {
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            server.shutdown().await?;
        }
        result = server.wait() => result?,
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
