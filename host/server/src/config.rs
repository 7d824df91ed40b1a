//! Runtime configuration: `PATCH /api/v1/config` (admin).
//!
//! The body is a partial configuration; today it may hold `log.level` (a tracing filter such
//! as `info` or `warn,lookout::pool=debug`). Everything in it is checked first; if anything is
//! wrong the answer is 422 naming every invalid field and nothing changes. Otherwise it is
//! applied and the answer says what changed, from what to what.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::{ApiError, AppState};

/// The running logger's level filter.
pub trait LogControl: Send + Sync + std::fmt::Debug {
    fn level(&self) -> String;
    /// Whether `filter` is one, without applying it.
    fn check_level(&self, filter: &str) -> Result<(), String>;
    /// Applies a new filter, or says why it is not one.
    fn set_level(&self, filter: &str) -> Result<(), String>;
}

pub(crate) async fn patch_config(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let body: Value = match serde_json::from_slice(&body) {
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
    let mut invalid: Vec<Value> = Vec::new();
    let mut new_level = None;
    for (section, value) in body.as_object().into_iter().flatten() {
        match (section.as_str(), value) {
            ("log", Value::Object(log)) => {
                for (key, value) in log {
                    match (key.as_str(), value) {
                        ("level", Value::String(level)) => new_level = Some(level.clone()),
                        ("level", _) => invalid
                            .push(json!({"field": "log.level", "reason": "must be a string"})),
                        (other, _) => invalid.push(json!({
                            "field": format!("log.{other}"),
                            "reason": "unknown, or not changeable while running",
                        })),
                    }
                }
            }
            (other, _) => invalid.push(json!({
                "field": other,
                "reason": "unknown, or not changeable while running (changeable: log.level)",
            })),
        }
    }
    let log = state.log.as_ref();
    if let Some(level) = &new_level {
        match log {
            None => invalid
                .push(json!({"field": "log.level", "reason": "this host's log level is fixed"})),
            Some(log) => {
                if let Err(reason) = log.check_level(level) {
                    invalid.push(json!({"field": "log.level", "reason": reason}));
                }
            }
        }
    }
    if !invalid.is_empty() {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(
                json!({"error": "invalid configuration; nothing was changed", "invalid": invalid}),
            ),
        )
            .into_response();
    }
    let mut changed = Vec::new();
    if let (Some(level), Some(log)) = (new_level, log) {
        let before = log.level();
        if let Err(reason) = log.set_level(&level) {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(
                    json!({"error": "invalid configuration; nothing was changed",
                            "invalid": [{"field": "log.level", "reason": reason}]}),
                ),
            )
                .into_response();
        }
        if before != level {
            tracing::info!(target: "lookout::config", field = "log.level", from = %before, to = %level, "configuration changed");
            state.bus.publish(
                lookout_core::Event::new("config.changed")
                    .field("field", "log.level")
                    .field("from", before.as_str())
                    .field("to", level.as_str()),
            );
            changed.push(json!({"field": "log.level", "from": before, "to": level}));
        }
    }
    Json(json!({"changed": changed})).into_response()
}
