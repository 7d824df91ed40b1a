//! The worker-pool API: run a command on a pool, look at pools, recycle a worker.
//!
//! | route | what |
//! |---|---|
//! | `POST /api/v1/pools/{pool}/execute` | `{command, args?, session_id?, timeout_ms?}` → 200 `{result, worker, duration_ms, queue_wait_ms, correlation_id}`; errors below; admin |
//! | `GET /api/v1/pools` | every pool: workers (id, pid, state, uptime, requests, memory), queue, sessions |
//! | `GET /api/v1/pools/{pool}` | one pool |
//! | `POST /api/v1/pools/{pool}/sessions` | open a session `{session_id?, metadata?}` → 201 `{session_id, worker, ttl_s, created}`; admin |
//! | `POST /api/v1/pools/{pool}/workers/{worker}/recycle` | recycle a worker once it is idle; admin |
//!
//! Errors carry `{error: {kind, worker_kind?, message, traceback?, stderr_tail?},
//! correlation_id, pool, command, worker?, session_id?, duration_ms, queue_wait_ms, args}`,
//! everything but the ids passed through the sanitizer: 500 the command failed (`worker`),
//! 502 the worker died or broke the protocol, 503 queue full or pool unavailable (with
//! `Retry-After`), 504 timeout or a hung worker, 404 no such pool, 400 a bad body or correlation id.
//! `x-correlation-id` is taken from the request (or made up) and returned on every answer.
//! A W3C `traceparent` on `execute` joins the request to the caller's trace (an invalid one is
//! ignored; without one lookout starts a trace); the answer's `traceparent` names lookout's
//! span for the request, and the body carries `trace_id`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lookout_pool::{CleanFailure, ErrorKind, ExecError, ExecRequest};
use serde::Deserialize;
use serde_json::json;

use crate::{ApiError, AppState};

const CORRELATION_HEADER: &str = "x-correlation-id";
const TRACEPARENT_HEADER: &str = "traceparent";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecuteBody {
    command: String,
    #[serde(default)]
    args: serde_json::Value,
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// The caller's `x-correlation-id`, or a new one (`lk-` and 16 hex digits); 400 when the
/// caller's is not a plain identifier.
#[allow(clippy::result_large_err)]
fn correlation_id(headers: &HeaderMap) -> Result<String, Response> {
    match headers.get(CORRELATION_HEADER) {
        None => Ok(lookout_core::new_id("lk-")),
        Some(value) => {
            let id = value.to_str().unwrap_or_default();
            lookout_core::validate_correlation_id(id).map_err(|reason| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("header `{CORRELATION_HEADER}`: {reason}"),
                )
                .into_response()
            })?;
            Ok(id.to_string())
        }
    }
}

/// What every pool request starts with: its correlation id (the caller's, checked, or a new
/// one) and the pool it names — or the answer that says why not (400, or 404 with the id).
#[allow(clippy::result_large_err)]
fn request_of(
    state: &AppState,
    pool_name: &str,
    headers: &HeaderMap,
) -> Result<(String, lookout_pool::Pool), Response> {
    let correlation_id = correlation_id(headers)?;
    match state.pools.get(pool_name) {
        Some(pool) => Ok((correlation_id, pool)),
        None => Err(with_correlation(
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no pool named `{pool_name}`"),
            )
            .into_response(),
            &correlation_id,
        )),
    }
}

fn with_correlation(mut response: Response, correlation_id: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(correlation_id) {
        response.headers_mut().insert(CORRELATION_HEADER, value);
    }
    response
}

pub(crate) async fn execute(
    State(state): State<Arc<AppState>>,
    Path(pool_name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (correlation_id, pool) = match request_of(&state, &pool_name, &headers) {
        Ok(found) => found,
        Err(response) => return response,
    };
    let trace = lookout_pool::Trace::start(
        headers
            .get(TRACEPARENT_HEADER)
            .and_then(|v| v.to_str().ok()),
    );
    let trace_id = trace.trace_id_hex();
    let answer = |response: Response| {
        let mut response = with_correlation(response, &correlation_id);
        if let Ok(value) = HeaderValue::from_str(&trace.traceparent()) {
            response.headers_mut().insert(TRACEPARENT_HEADER, value);
        }
        response
    };
    let body: ExecuteBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return answer(
                ApiError::new(StatusCode::BAD_REQUEST, format!("invalid body: {e}"))
                    .into_response(),
            );
        }
    };
    if body.command.is_empty() || body.command.len() > 256 {
        return answer(
            ApiError::new(StatusCode::BAD_REQUEST, "`command`: 1–256 characters").into_response(),
        );
    }
    if let Some(session) = &body.session_id
        && let Err(reason) = lookout_core::validate_correlation_id(session)
    {
        return answer(
            ApiError::new(StatusCode::BAD_REQUEST, format!("`session_id`: {reason}"))
                .into_response(),
        );
    }
    if body.timeout_ms == Some(0) {
        return answer(
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "`timeout_ms`: must be greater than 0",
            )
            .into_response(),
        );
    }
    let request = ExecRequest {
        command: body.command,
        args: body.args,
        session_id: body.session_id,
        timeout: body.timeout_ms.map(Duration::from_millis),
        correlation_id: correlation_id.clone(),
        trace,
    };
    let args = request.args.clone();
    match pool.execute(request).await {
        Ok(done) => answer(
            Json(json!({
                "result": done.result,
                "worker": done.worker,
                "duration_ms": done.duration_ms,
                "queue_wait_ms": done.queue_wait_ms,
                "correlation_id": correlation_id,
                "trace_id": trace_id,
            }))
            .into_response(),
        ),
        Err(e) => answer(error_response(
            &state,
            e,
            &args,
            &correlation_id,
            Some(&trace_id),
        )),
    }
}

/// The error, its context and the request's arguments, sanitized like events are.
fn error_response(
    state: &AppState,
    e: ExecError,
    args: &serde_json::Value,
    correlation_id: &str,
    trace_id: Option<&str>,
) -> Response {
    let status = match e.kind {
        ErrorKind::Worker => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorKind::WorkerCrashed | ErrorKind::ProtocolError => StatusCode::BAD_GATEWAY,
        ErrorKind::Timeout | ErrorKind::Hung => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::QueueFull | ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    };
    let clean = CleanFailure::of(&state.bus, &e, args);
    let body = json!({
        "error": {
            "kind": e.kind,
            "worker_kind": e.worker_kind,
            "message": clean.message,
            "traceback": clean.traceback,
            "stderr_tail": clean.stderr_tail,
        },
        "correlation_id": correlation_id,
        "trace_id": trace_id,
        "pool": e.pool,
        "command": e.command,
        "worker": e.worker,
        "session_id": e.session_id,
        "duration_ms": e.duration_ms,
        "queue_wait_ms": e.queue_wait_ms,
        "args": clean.args,
    });
    let mut response = (status, Json(body)).into_response();
    let retry_after = match e.kind {
        ErrorKind::QueueFull => Some("1"),
        ErrorKind::Unavailable => Some("5"),
        _ => None,
    };
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static(seconds));
    }
    response
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionBody {
    #[serde(default)]
    session_id: Option<String>,
    /// Anything the caller wants on `session.created` (sanitized there).
    #[serde(default)]
    metadata: Option<serde_json::Value>,
}

/// Opens a session explicitly (a request naming an unknown session opens one too): pinned
/// to the live worker with the fewest sessions. 201 with `{session_id, worker, ttl_s}`; 200
/// with the same for a session that already exists.
pub(crate) async fn create_session(
    State(state): State<Arc<AppState>>,
    Path(pool_name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (correlation_id, pool) = match request_of(&state, &pool_name, &headers) {
        Ok(found) => found,
        Err(response) => return response,
    };
    let answer = |response: Response| with_correlation(response, &correlation_id);
    let body: SessionBody = if body.is_empty() {
        SessionBody {
            session_id: None,
            metadata: None,
        }
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return answer(
                    ApiError::new(StatusCode::BAD_REQUEST, format!("invalid body: {e}"))
                        .into_response(),
                );
            }
        }
    };
    if let Some(session) = &body.session_id
        && let Err(reason) = lookout_core::validate_correlation_id(session)
    {
        return answer(
            ApiError::new(StatusCode::BAD_REQUEST, format!("`session_id`: {reason}"))
                .into_response(),
        );
    }
    match pool.open_session(body.session_id, body.metadata, &correlation_id) {
        Ok(session) => {
            let status = if session.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            answer((status, Json(session)).into_response())
        }
        Err(e) => answer(error_response(
            &state,
            e,
            &serde_json::Value::Null,
            &correlation_id,
            None,
        )),
    }
}

pub(crate) async fn list(State(state): State<Arc<AppState>>) -> Response {
    let pools: Vec<_> = state.pools.all().iter().map(|p| p.snapshot()).collect();
    Json(json!({ "pools": pools })).into_response()
}

pub(crate) async fn get_one(
    State(state): State<Arc<AppState>>,
    Path(pool_name): Path<String>,
) -> Response {
    match state.pools.get(&pool_name) {
        Some(pool) => Json(pool.snapshot()).into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no pool named `{pool_name}`"),
        )
        .into_response(),
    }
}

pub(crate) async fn recycle(
    State(state): State<Arc<AppState>>,
    Path((pool_name, worker)): Path<(String, String)>,
) -> Response {
    let Some(pool) = state.pools.get(&pool_name) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no pool named `{pool_name}`"),
        )
        .into_response();
    };
    if pool.recycle(&worker) {
        (
            StatusCode::ACCEPTED,
            Json(json!({ "recycling": worker, "pool": pool_name })),
        )
            .into_response()
    } else {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no running worker `{worker}` in pool `{pool_name}`"),
        )
        .into_response()
    }
}
