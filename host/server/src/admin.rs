//! The plugin admin API and the guard on every mutating route.
//!
//! | route | what |
//! |---|---|
//! | `GET /api/v1/plugins` | running plugins (name, world, version, sha256, limits, previous) and the swap history |
//! | `PUT /api/v1/plugins/{name}` | multipart `manifest` (TOML) + `wasm`: check, then swap; 422 with the reason if any check fails |
//! | `POST /api/v1/plugins/{name}/rollback` | back to the previous version |
//! | `DELETE /api/v1/plugins/{name}` | remove (the sanitizer cannot be removed: 409) |
//!
//! Mutating routes need `Authorization: Bearer <token>` when a token is configured; without
//! one they accept loopback clients only.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Multipart, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lookout_wasm::{Error as PluginError, Manifest, Origin};
use serde_json::json;

use crate::{ApiError, AppState};

impl From<PluginError> for ApiError {
    fn from(e: PluginError) -> Self {
        let status = match &e {
            PluginError::NotFound { .. } => StatusCode::NOT_FOUND,
            PluginError::Conflict { .. } => StatusCode::CONFLICT,
            PluginError::Runtime(_) => StatusCode::INTERNAL_SERVER_ERROR,
            PluginError::InvalidComponent { .. }
            | PluginError::WrongWorld { .. }
            | PluginError::Init { .. }
            | PluginError::Trap { .. }
            | PluginError::Manifest { .. }
            | PluginError::Budget { .. }
            | PluginError::BudgetTooSmall { .. }
            | PluginError::Fixture { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::new(status, e.to_string())
    }
}

/// Equal-length byte comparison whose time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Lets a mutating request through only with the admin token, or from loopback when no token
/// is configured.
pub(crate) async fn require_admin(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    match &state.admin_token {
        Some(token) => {
            let presented = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            match presented {
                Some(p) if constant_time_eq(p.as_bytes(), token.as_bytes()) => {
                    next.run(request).await
                }
                Some(_) => {
                    ApiError::new(StatusCode::UNAUTHORIZED, "wrong admin token").into_response()
                }
                None => ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "this route needs `Authorization: Bearer <admin token>`",
                )
                .into_response(),
            }
        }
        None => {
            let loopback = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .is_some_and(|c| c.0.ip().is_loopback());
            if loopback {
                next.run(request).await
            } else {
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "no admin token is configured, so this route accepts loopback clients only",
                )
                .into_response()
            }
        }
    }
}

pub(crate) async fn list_plugins(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    Json(json!({ "plugins": state.plugins.list(), "history": state.plugins.history() }))
}

pub(crate) async fn put_plugin(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let mut multipart = multipart.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let mut manifest = None;
    let mut wasm = None;
    while let Some(field) = multipart.next_field().await.map_err(|e| {
        let status = e.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!("upload is larger than {} bytes", state.max_plugin_bytes)
        } else {
            format!("reading the upload: {}", e.body_text())
        };
        ApiError::new(status, message)
    })? {
        let part = field.name().unwrap_or_default().to_string();
        let bytes = field.bytes().await.map_err(|e| {
            ApiError::new(
                e.status(),
                format!("reading part `{part}`: {}", e.body_text()),
            )
        })?;
        match part.as_str() {
            "manifest" => {
                let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "part `manifest` is not UTF-8 TOML",
                    )
                })?;
                manifest = Some(text);
            }
            "wasm" => wasm = Some(bytes.to_vec()),
            other => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("unexpected part `{other}` (expected `manifest` and `wasm`)"),
                ));
            }
        }
    }
    let (Some(manifest), Some(wasm)) = (manifest, wasm) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the upload needs two parts: `manifest` (TOML) and `wasm`",
        ));
    };
    let manifest_text = manifest;
    let manifest = Manifest::parse(&manifest_text)?;
    if manifest.name != name {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "the URL names plugin `{name}` but its manifest says `{}`",
                manifest.name
            ),
        ));
    }
    // Compiling and running fixtures takes tens of milliseconds: off the async workers. The
    // registry keeps what the API installs (`plugins.state_dir`).
    let plugins = state.plugins.clone();
    let info = tokio::task::spawn_blocking(move || {
        let origin = Origin::Api {
            manifest_text: &manifest_text,
        };
        plugins.install_from(manifest, &wasm, origin, "api")
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("swap task failed: {e}"),
        )
    })??;
    Ok(Json(info))
}

pub(crate) async fn rollback_plugin(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(state.plugins.rollback(&name, "api")?))
}

pub(crate) async fn delete_plugin(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    state.plugins.delete(&name, "api")?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret-token", b"secret-token"));
        assert!(!constant_time_eq(b"secret-token", b"secret-tokeN"));
        assert!(!constant_time_eq(b"secret", b"secret-token"));
    }
}
