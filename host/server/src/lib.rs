//! lookout's HTTP surface (axum). One router, built by [`router`]:
//!
//! | route | what |
//! |---|---|
//! | `POST /api/v1/events` | ingest a JSON array or NDJSON of events; 202 `{"accepted","dropped"}`, 400 naming the line and field, 413 when too big |
//! | `GET /api/v1/events/stream` | Server-Sent Events: one sanitized event (JSON) a message; `?kind=` prefix filter, `?origin=` host filter (`local` or a host name) |
//! | `GET /metrics` | Prometheus text exposition |
//! | `GET /health` | liveness: 200 `{"status":"ok"}` while the host runs |
//! | `GET /health/ready` | readiness: 200, or 503 naming the failing checks |
//! | `GET /health/detailed` | every check with its value, threshold and status; pools, plugins, uptime, version (503 when not ready) |
//! | `GET /livez`, `GET /readyz` | the same for Kubernetes, in its text format (`?verbose` lists the checks) |
//! | `GET /` | the dashboard (and its `/assets/…`) |
//! | `/api/v1/plugins…` | the plugin admin API: see [`admin`](crate::admin) |
//! | `/api/v1/pools…` | run commands on worker pools, look at them: see [`pools`](crate::pools) |
//! | `GET`, `PUT`, `PATCH /api/v1/config` | the effective configuration; change it while running: see [`config`](crate::config) |
//! | `GET /api/v1/overview`, `GET /api/v1/overview/stream` | the dashboard's picture: host, health, bus, pools, plugins, swaps, recent errors; once, or pushed every second (SSE) |
//!
//! Every event a response carries has passed the bus's sanitizer: this crate only ever reads
//! events from a bus consumer, never from the ingest path.

mod admin;
mod config;
mod health;
mod ingest;
mod overview;
mod pools;

pub use overview::{ErrorGroup, RecentErrors};

pub use config::{Applied, Change, ConfigControl, Invalid};
pub use health::{Check, Health, HealthSettings, Report};

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures_util::stream::{Stream, StreamExt};
use lookout_core::{Batch, Bus, Consumer, ConsumerError, Published};
use prometheus::{Encoder, Registry, TextEncoder};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub use ingest::{
    IngestError, Location, MAX_EVENTS_PER_REQUEST, MAX_FIELDS, MAX_KEY_LEN, parse_body,
};

/// Default largest accepted ingest body, in bytes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
/// Default largest plugin upload (manifest + component), in bytes.
pub const DEFAULT_MAX_PLUGIN_BYTES: usize = 64 << 20;
/// Batches buffered per live-stream client before its bus queue starts dropping.
const STREAM_BUFFER: usize = 16;

/// The dashboard's files, embedded in the binary.
#[derive(Clone, Copy, Debug)]
pub struct DashboardAssets {
    pub index_html: &'static [u8],
    pub app_js: &'static [u8],
    pub app_wasm: &'static [u8],
    /// The same, gzipped (empty when not available): served to clients that accept gzip.
    pub index_html_gz: &'static [u8],
    pub app_js_gz: &'static [u8],
    pub app_wasm_gz: &'static [u8],
}

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    pub bus: Bus,
    pub registry: Registry,
    pub dashboard: Option<DashboardAssets>,
    /// Whether the dashboard is served now (`server.dashboard`, changeable while running).
    pub dashboard_on: Arc<std::sync::atomic::AtomicBool>,
    pub max_body_bytes: usize,
    pub plugins: Arc<lookout_wasm::PluginRegistry>,
    pub pools: Arc<lookout_pool::Pools>,
    /// The running configuration, for `/api/v1/config` (`None`: not changeable).
    pub config: Option<Arc<dyn ConfigControl>>,
    /// When set, mutating routes need `Authorization: Bearer <token>`; when not, loopback only.
    pub admin_token: Option<String>,
    pub max_plugin_bytes: usize,
    /// When the host started, for the uptime `/health/detailed` reports.
    pub started: std::time::Instant,
    pub health: Health,
    /// Changeable while running (the config path writes it).
    pub metric_groups: Arc<parking_lot::RwLock<MetricGroups>>,
    /// The latest failures, for the dashboard (register it on the bus).
    pub recent_errors: RecentErrors,
    /// The NATS link, when on (its status goes in `/health/detailed` and the overview).
    pub nats: Option<Arc<lookout_nats::Nats>>,
}

impl AppState {
    fn evaluate_health(&self) -> Report {
        self.health.evaluate(&self.pools, &self.plugins, &self.bus)
    }
}

/// An error response: a status and a JSON body that says what was wrong.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: serde_json::Value,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: json!({ "error": message.into() }),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        let mut body = json!({ "error": e.reason });
        match e.at {
            Location::Body => {}
            Location::Line(n) => body["line"] = json!(n),
            Location::Index(i) => body["index"] = json!(i),
        }
        if let Some(field) = e.field {
            body["field"] = json!(field);
        }
        ApiError {
            status: StatusCode::BAD_REQUEST,
            body,
        }
    }
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let max_body = state.max_body_bytes;
    let max_plugin = state.max_plugin_bytes;
    let state = Arc::new(state);
    let admin = Router::new()
        .route(
            "/api/v1/plugins/{name}",
            put(admin::put_plugin)
                .delete(admin::delete_plugin)
                .layer(DefaultBodyLimit::max(max_plugin)),
        )
        .route(
            "/api/v1/plugins/{name}/rollback",
            post(admin::rollback_plugin),
        )
        .route(
            "/api/v1/pools/{pool}/execute",
            post(pools::execute).layer(DefaultBodyLimit::max(max_body)),
        )
        .route(
            "/api/v1/pools/{pool}/workers/{worker}/recycle",
            post(pools::recycle),
        )
        .route(
            "/api/v1/pools/{pool}/sessions",
            post(pools::create_session).layer(DefaultBodyLimit::max(max_body)),
        )
        .route(
            "/api/v1/config",
            axum::routing::patch(config::patch_config)
                .put(config::put_config)
                .layer(DefaultBodyLimit::max(max_body)),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admin::require_admin,
        ));
    Router::new()
        .merge(admin)
        .route("/api/v1/plugins", get(admin::list_plugins))
        .route("/api/v1/pools", get(pools::list))
        .route("/api/v1/config", get(config::get_config))
        .route("/api/v1/overview", get(overview::get_overview))
        .route("/api/v1/overview/stream", get(overview::overview_stream))
        .route("/api/v1/pools/{pool}", get(pools::get_one))
        .route(
            "/api/v1/events",
            post(ingest_events).layer(DefaultBodyLimit::max(max_body)),
        )
        .route("/api/v1/events/stream", get(stream_events))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/health/ready", get(health_ready))
        .route("/health/detailed", get(health_detailed))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/", get(dashboard_index))
        .route("/assets/lookout_dashboard.js", get(dashboard_js))
        .route("/assets/lookout_dashboard_bg.wasm", get(dashboard_wasm))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .with_state(state)
}

async fn ingest_events(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                format!(
                    "body is larger than {} bytes; split it into several requests",
                    state.max_body_bytes
                ),
            )
        } else {
            ApiError::new(status, rejection.body_text())
        }
    })?;
    let events = parse_body(&body)?;
    let (mut accepted, mut dropped, mut off) = (0u64, 0u64, 0u64);
    for event in events {
        match state.bus.publish(event) {
            Published::Queued => accepted += 1,
            Published::Dropped => dropped += 1,
            Published::Off => off += 1,
        }
    }
    let mut body = json!({ "accepted": accepted, "dropped": dropped });
    if off > 0 {
        // Events are turned off on this host: say so rather than pretend they were taken.
        body["off"] = json!(off);
    }
    Ok((StatusCode::ACCEPTED, Json(body)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamQuery {
    /// Only events whose kind starts with this.
    kind: Option<String>,
    /// Only events from this host: `local` for this host's own, or another host's name (its
    /// events arrive over NATS). All hosts when absent.
    origin: Option<String>,
}

/// Forwards sanitized batches to one live-stream client.
struct StreamClient {
    tx: mpsc::Sender<Batch>,
}

impl Consumer for StreamClient {
    async fn handle(&mut self, batch: Batch) -> Result<(), ConsumerError> {
        // A slow client makes this wait, so its own bus queue fills and drops (counted).
        self.tx.send(batch).await.map_err(|_| ConsumerError::Closed)
    }
}

async fn stream_events(
    State(state): State<Arc<AppState>>,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let (tx, rx) = mpsc::channel::<Batch>(STREAM_BUFFER);
    // When the client goes, the response stream (and `rx` in it) is dropped; the consumer's
    // next send fails, it answers `Closed` and the bus unregisters it.
    state
        .bus
        .register(lookout_core::LIVE_STREAM_CONSUMER, StreamClient { tx })
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let prefix = query.kind.unwrap_or_default();
    let origin = query.origin;
    let from = move |e: &lookout_core::Event| match origin.as_deref() {
        None => true,
        Some("local") => e.origin.is_none(),
        Some(host) => e.origin.as_deref() == Some(host),
    };
    let stream = ReceiverStream::new(rx).flat_map(move |batch| {
        let messages: Vec<Result<SseEvent, Infallible>> = batch
            .iter()
            .filter(|e| e.kind.starts_with(&prefix) && from(e))
            .map(|e| Ok(SseEvent::default().data(serde_json::to_string(e).unwrap_or_default())))
            .collect();
        futures_util::stream::iter(messages)
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Which groups of metrics `/metrics` exposes: `[metrics]` in the config. A group turned off
/// is not exported (its numbers are still kept: health and the API use them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricGroups {
    /// `process_*`: resident memory, CPU seconds, open file descriptors, threads, start time.
    pub process: bool,
    /// `lookout_events_*`, `lookout_consumer_*`, `lookout_bus_*`, `lookout_sanitizer_*`.
    pub bus: bool,
    /// `lookout_plugin_calls_total` and the other built-in plugin metrics, with
    /// `lookout_redactions_total`.
    pub plugins: bool,
    /// Plugins' own metrics (`lookout_plugin_<plugin>_<name>`).
    pub custom: bool,
    /// `lookout_requests_*`, `lookout_request_*`, `lookout_queue_*`, `lookout_workers`,
    /// `lookout_sessions_*`, `lookout_worker_*`.
    pub pools: bool,
}

impl Default for MetricGroups {
    fn default() -> Self {
        MetricGroups {
            process: true,
            bus: true,
            plugins: true,
            custom: true,
            pools: true,
        }
    }
}

impl MetricGroups {
    /// Whether a family of the host's own registry is exported.
    pub fn exports(&self, family: &str) -> bool {
        let any = |prefixes: &[&str]| prefixes.iter().any(|p| family.starts_with(p));
        if any(&["process_"]) {
            self.process
        } else if any(&[
            "lookout_events_",
            "lookout_consumer_",
            "lookout_bus_",
            "lookout_sanitizer_",
        ]) {
            self.bus
        } else if any(&["lookout_plugin_", "lookout_redactions_"]) {
            self.plugins
        } else if any(&[
            "lookout_requests_",
            "lookout_request_",
            "lookout_queue_",
            "lookout_workers",
            "lookout_sessions_",
            "lookout_worker_",
        ]) {
            self.pools
        } else {
            true
        }
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Result<impl IntoResponse, ApiError> {
    let groups = *state.metric_groups.read();
    let mut families = state.registry.gather();
    families.retain(|f| groups.exports(f.name()));
    // Plugins' custom metrics live in registries of their own (one per plugin version).
    if groups.custom {
        families.extend(state.plugins.gather_custom());
    }
    let mut buffer = Vec::new();
    TextEncoder::new()
        .encode(&families, &mut buffer)
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("encoding metrics: {e}"),
            )
        })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        buffer,
    ))
}

async fn health() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// Readiness: 200 when every check that affects readiness holds, else 503 naming the failing
/// ones.
async fn health_ready(State(state): State<Arc<AppState>>) -> Response {
    let report = state.evaluate_health();
    let failing: Vec<_> = report.failing().collect();
    let body = json!({
        "status": if report.ready { "ready" } else { "not_ready" },
        "failing": failing,
    });
    let code = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// Every check with its value, threshold and status; the pools with their workers and recent
/// window; the plugins; uptime and version. 200 when ready, 503 when not.
async fn health_detailed(State(state): State<Arc<AppState>>) -> Response {
    let report = state.evaluate_health();
    let pools: Vec<_> = state
        .pools
        .all()
        .iter()
        .map(|p| {
            let window_s = p.config().health.window_s;
            json!({
                "pool": p.snapshot(),
                "window": p.window(std::time::Duration::from_secs(window_s)),
                "window_s": window_s,
            })
        })
        .collect();
    let plugins: Vec<_> = state
        .plugins
        .list()
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "world": p.world,
                "version": p.version,
                "state": p.status.state,
                "retry_in_ms": p.status.retry_in_ms,
                "quarantines": p.status.quarantines,
                "last_error": p.status.last_error,
            })
        })
        .collect();
    let code = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": report.status,
        "ready": report.ready,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs_f64(),
        "checks": report.checks,
        "observability_cost": overview::observability_cost(&state),
        "pools": pools,
        "plugins": plugins,
        "nats": state.nats.as_ref().map(|n| n.status()),
    });
    (code, Json(body)).into_response()
}

#[derive(Debug, serde::Deserialize)]
struct Verbose {
    verbose: Option<String>,
}

/// Kubernetes-style liveness: `ok`, or with `?verbose` the checks it ran.
async fn livez(Query(q): Query<Verbose>) -> Response {
    if q.verbose.is_some() {
        "[+]ping ok\nlivez check passed\n".into_response()
    } else {
        "ok".into_response()
    }
}

/// Kubernetes-style readiness: `ok` / 503, or with `?verbose` a line per check.
async fn readyz(State(state): State<Arc<AppState>>, Query(q): Query<Verbose>) -> Response {
    let report = state.evaluate_health();
    let code = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if q.verbose.is_none() {
        let text = if report.ready { "ok" } else { "not ready" };
        return (code, text).into_response();
    }
    let mut text = String::new();
    for c in &report.checks {
        if c.status == "ok" {
            text.push_str(&format!("[+]{} ok\n", c.name));
        } else {
            text.push_str(&format!(
                "[-]{} failed: {} (must be {} {}){}\n",
                c.name,
                c.value,
                c.rule.replace('_', " "),
                c.threshold,
                if c.affects_readiness {
                    ""
                } else {
                    " [does not affect readiness]"
                }
            ));
        }
    }
    text.push_str(if report.ready {
        "readyz check passed\n"
    } else {
        "readyz check failed\n"
    });
    (code, text).into_response()
}

/// A dashboard file, gzipped when the client accepts it.
fn asset(
    state: &AppState,
    headers: &HeaderMap,
    pick: fn(&DashboardAssets) -> (&'static [u8], &'static [u8]),
    content_type: &'static str,
) -> Response {
    let gzip_ok = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    if !state
        .dashboard_on
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "the dashboard is turned off (server.dashboard = false)",
        )
        .into_response();
    }
    match state.dashboard.as_ref().map(pick) {
        Some((_, gz)) if gzip_ok && !gz.is_empty() => (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, "no-cache"),
                (header::CONTENT_ENCODING, "gzip"),
                (header::VARY, "accept-encoding"),
            ],
            gz,
        )
            .into_response(),
        Some((bytes, _)) if !bytes.is_empty() => (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, "no-cache"),
                (header::VARY, "accept-encoding"),
            ],
            bytes,
        )
            .into_response(),
        _ => ApiError::new(
            StatusCode::NOT_FOUND,
            "the dashboard is not part of this build",
        )
        .into_response(),
    }
}

async fn dashboard_index(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    asset(
        &state,
        &headers,
        |d| (d.index_html, d.index_html_gz),
        "text/html; charset=utf-8",
    )
}

async fn dashboard_js(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    asset(
        &state,
        &headers,
        |d| (d.app_js, d.app_js_gz),
        "text/javascript; charset=utf-8",
    )
}

async fn dashboard_wasm(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    asset(
        &state,
        &headers,
        |d| (d.app_wasm, d.app_wasm_gz),
        "application/wasm",
    )
}
