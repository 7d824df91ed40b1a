//! What a caller hands a pool and what it gets back: the request, the reply, and the failure
//! with its whole context. Plain data, shared by the queue, the slots and the HTTP API; no
//! logic that runs a request lives here.

use std::time::Duration;

use serde::Serialize;

use crate::trace::Trace;

/// What to run.
#[derive(Clone, Debug)]
pub struct ExecRequest {
    pub command: String,
    pub args: serde_json::Value,
    pub session_id: Option<String>,
    /// Shorter than the pool's `request_timeout_ms`, if the caller wants.
    pub timeout: Option<Duration>,
    pub correlation_id: String,
    /// The trace it belongs to and the host's span for it (`Trace::start` joins a caller's
    /// `traceparent`; `Trace::new_root()` starts a trace).
    pub trace: Trace,
}

/// A reply from a worker.
#[derive(Clone, Debug, Serialize)]
pub struct Executed {
    pub result: serde_json::Value,
    pub worker: String,
    pub duration_ms: f64,
    pub queue_wait_ms: f64,
}

/// Why a request failed, with its whole context.
#[derive(Clone, Debug, Serialize)]
pub struct ExecError {
    pub kind: ErrorKind,
    /// The worker's own error kind (`ValueError`) for [`ErrorKind::Worker`].
    pub worker_kind: Option<String>,
    pub message: String,
    pub traceback: Option<String>,
    pub pool: String,
    pub command: String,
    pub worker: Option<String>,
    pub session_id: Option<String>,
    pub duration_ms: f64,
    pub queue_wait_ms: f64,
    /// The worker's last stderr lines, for crashes and protocol errors.
    pub stderr_tail: Vec<String>,
}

/// The classes of failure a caller can act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The command ran and failed (an exception in the worker).
    Worker,
    /// The worker process died while running it.
    WorkerCrashed,
    /// The worker broke the protocol (garbage on stdout); it was replaced.
    ProtocolError,
    /// Past its deadline, running or waiting.
    Timeout,
    /// The worker went silent past `heartbeat_timeout_ms` while running it; it was replaced.
    Hung,
    /// Every worker busy and the queue full.
    QueueFull,
    /// The pool is stopping, or has no worker and none coming.
    Unavailable,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Worker => "worker",
            ErrorKind::WorkerCrashed => "worker_crashed",
            ErrorKind::ProtocolError => "protocol_error",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Hung => "hung",
            ErrorKind::QueueFull => "queue_full",
            ErrorKind::Unavailable => "unavailable",
        }
    }
}
