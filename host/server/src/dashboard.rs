//! The dashboard's files: `GET /` (its page) and `/assets/…` (its JS glue and wasm), served
//! from the binary, gzipped to a client that accepts it. Nothing here reads the host's state
//! but whether the dashboard is on (`server.dashboard`); what the page shows comes from the
//! overview.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::{ApiError, AppState};

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

pub(crate) async fn index(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    asset(
        &state,
        &headers,
        |d| (d.index_html, d.index_html_gz),
        "text/html; charset=utf-8",
    )
}

pub(crate) async fn app_js(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    asset(
        &state,
        &headers,
        |d| (d.app_js, d.app_js_gz),
        "text/javascript; charset=utf-8",
    )
}

pub(crate) async fn app_wasm(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    asset(
        &state,
        &headers,
        |d| (d.app_wasm, d.app_wasm_gz),
        "application/wasm",
    )
}
