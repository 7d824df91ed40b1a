//! Runtime configuration: `GET /api/v1/config` (the effective configuration, secrets masked,
//! and its version), `PUT /api/v1/config` (a whole new one, TOML or JSON) and `PATCH
//! /api/v1/config` (a JSON merge patch), both admin. The watched config file and `lookout
//! config apply` take the same path. A change is checked whole first; if anything in it is
//! wrong the answer is 422 naming every invalid field and nothing changes. Otherwise it is
//! applied and the answer lists what changed, from what to what.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{ApiError, AppState};

/// One field that changed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Change {
    pub field: String,
    pub from: Value,
    pub to: Value,
}

/// One field that is wrong, and why: the one shape every check in lookout reports in.
pub use lookout_core::Invalid;

/// A change that was applied.
#[derive(Clone, Debug, Serialize)]
pub struct Applied {
    pub version: u64,
    pub changed: Vec<Change>,
}

/// The host's configuration, changeable while it runs (implemented by the binary, which
/// knows the whole configuration).
pub trait ConfigControl: Send + Sync + std::fmt::Debug {
    /// The version (1 at start, +1 per applied change) and the effective configuration with
    /// secrets masked.
    fn current(&self) -> (u64, Value);
    /// Replaces the whole configuration with `text` (TOML, or JSON when `json`).
    fn replace(&self, text: &str, json: bool, source: &str) -> Result<Applied, Vec<Invalid>>;
    /// Merges a JSON merge patch (RFC 7396) into the current configuration and applies it.
    fn patch(&self, patch: Value, source: &str) -> Result<Applied, Vec<Invalid>>;
}

fn answer(result: Result<Applied, Vec<Invalid>>) -> Response {
    match result {
        Ok(applied) => Json(applied).into_response(),
        Err(invalid) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "error": "invalid configuration; nothing was changed",
                "invalid": invalid,
            })),
        )
            .into_response(),
    }
}

fn not_changeable() -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "this host's configuration cannot be changed while it runs",
    )
    .into_response()
}

pub(crate) async fn get_config(State(state): State<Arc<AppState>>) -> Response {
    match &state.config {
        Some(control) => {
            let (version, config) = control.current();
            Json(json!({"version": version, "config": config})).into_response()
        }
        None => not_changeable(),
    }
}

pub(crate) async fn put_config(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(control) = state.config.clone() else {
        return not_changeable();
    };
    let Ok(text) = String::from_utf8(body.to_vec()) else {
        return ApiError::new(StatusCode::BAD_REQUEST, "the body is not UTF-8").into_response();
    };
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    // Applying may load a plugin: off the async workers.
    answer(lookout_core::blocking(|| {
        control.replace(&text, json, "api")
    }))
}

pub(crate) async fn patch_config(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let Some(control) = state.config.clone() else {
        return not_changeable();
    };
    let patch: Value = match serde_json::from_slice(&body) {
        Ok(Value::Object(map)) => Value::Object(map),
        Ok(_) => {
            return ApiError::new(StatusCode::BAD_REQUEST, "the body must be a JSON object")
                .into_response();
        }
        Err(e) => {
            return ApiError::new(StatusCode::BAD_REQUEST, format!("invalid body: {e}"))
                .into_response();
        }
    };
    answer(lookout_core::blocking(|| control.patch(patch, "api")))
}
