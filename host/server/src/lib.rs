//! lookout's HTTP surface (axum). One router, built by [`router`], that delegates each
//! endpoint family to a file of its own:
//!
//! | route | what | file |
//! |---|---|---|
//! | `POST /api/v1/events` | ingest a JSON array or NDJSON of events; 202 `{"accepted","dropped"}`, 400 naming the line and field, 413 when too big | [`events`](crate::events) |
//! | `GET /api/v1/events/stream` | Server-Sent Events: one sanitized event (JSON) a message; `?kind=` prefix filter, `?origin=` host filter (`local` or a host name) | [`events`](crate::events) |
//! | `GET /metrics` | Prometheus text exposition | [`metrics`](crate::metrics) |
//! | `GET /health` | liveness: 200 `{"status":"ok"}` while the host runs | [`health`](crate::health) |
//! | `GET /health/ready` | readiness: 200, or 503 naming the failing checks | [`health`](crate::health) |
//! | `GET /health/detailed` | every check with its value, threshold and status; pools, plugins, uptime, version (503 when not ready) | [`health`](crate::health) |
//! | `GET /livez`, `GET /readyz` | the same for Kubernetes, in its text format (`?verbose` lists the checks) | [`health`](crate::health) |
//! | `GET /` | the dashboard (and its `/assets/…`) | [`dashboard`](crate::dashboard) |
//! | `/api/v1/plugins…` | the plugin admin API | [`admin`](crate::admin) |
//! | `/api/v1/pools…` | run commands on worker pools, look at them | [`pools`](crate::pools) |
//! | `GET`, `PUT`, `PATCH /api/v1/config` | the effective configuration; change it while running | [`config`](crate::config) |
//! | `GET /api/v1/overview`, `GET /api/v1/overview/stream` | the dashboard's picture: host, health, bus, pools, plugins, swaps, recent errors; once, or pushed every second (SSE); its types are `lookout-api`'s | [`overview`](crate::overview) |
//!
//! Mutating routes (plugin swaps, `execute`, sessions, recycle, config changes) pass
//! [`admin`](crate::admin)'s guard. Anything else answers 404 with a JSON error.
//!
//! Every event a response carries has passed the bus's sanitizer: this crate only ever reads
//! events from a bus consumer, never from the ingest path.

mod admin;
mod config;
mod dashboard;
mod events;
mod health;
mod metrics;
mod overview;
mod pools;

pub use overview::{ErrorGroup, RecentErrors};

pub use config::{Applied, Change, ConfigControl, Invalid};
pub use dashboard::DashboardAssets;
pub use health::{Check, Health, HealthSettings, Report};
pub use metrics::MetricGroups;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use lookout_core::Bus;
use prometheus::Registry;
use serde_json::json;

pub use events::{
    IngestError, Location, MAX_EVENTS_PER_REQUEST, MAX_FIELDS, MAX_KEY_LEN, parse_body,
};

/// Default largest accepted ingest body, in bytes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
/// Default largest plugin upload (manifest + component), in bytes.
pub const DEFAULT_MAX_PLUGIN_BYTES: usize = 64 << 20;

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
    /// The OTLP exporter, when on (its queues go in `/health/detailed`).
    pub otlp: Option<Arc<lookout_otlp::Otlp>>,
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
            post(events::ingest).layer(DefaultBodyLimit::max(max_body)),
        )
        .route("/api/v1/events/stream", get(events::stream))
        .route("/metrics", get(metrics::exposition))
        .route("/health", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/health/detailed", get(health::detailed))
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/", get(dashboard::index))
        .route("/assets/lookout_dashboard.js", get(dashboard::app_js))
        .route(
            "/assets/lookout_dashboard_bg.wasm",
            get(dashboard::app_wasm),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .with_state(state)
}
