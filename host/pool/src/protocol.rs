//! The wire format between lookout and a worker: JSON, one object a line, over the worker's
//! stdin (lookout → worker) and stdout (worker → lookout). Written down in
//! docs/worker-protocol.md.

use serde::{Deserialize, Serialize};

/// The protocol version lookout speaks.
pub const PROTOCOL: u64 = 1;

/// Longest line lookout reads from a worker's stdout; a longer one breaks the protocol.
pub const MAX_LINE: usize = 16 << 20;

/// The first line a worker writes.
#[derive(Debug, Deserialize)]
pub(crate) struct Ready {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub protocol: Option<u64>,
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub python: Option<String>,
    /// The commands it serves: the set that bounds the `command` metric label.
    #[serde(default)]
    pub commands: Vec<String>,
}

/// A request.
#[derive(Debug, Serialize)]
pub(crate) struct Request<'a> {
    pub id: u64,
    pub correlation_id: &'a str,
    pub command: &'a str,
    pub args: &'a serde_json::Value,
    pub session_id: Option<&'a str>,
}

/// A control message: the session ended, drop its state.
#[derive(Debug, Serialize)]
pub(crate) struct SessionEnd<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub session_id: &'a str,
}

/// A reply.
#[derive(Debug, Deserialize)]
pub(crate) struct Reply {
    pub id: Option<u64>,
    pub ok: bool,
    #[serde(default)]
    pub result: serde_json::Value,
    #[serde(default)]
    pub error: Option<ReplyError>,
}

/// What a worker says went wrong.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct ReplyError {
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub traceback: Option<String>,
}
