//! The wire format between lookout and a worker: JSON, one object a line, over the worker's
//! stdin (lookout → worker) and stdout (worker → lookout). Written down in
//! docs/worker-protocol.md.

use lookout_core::SamplingConfig;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::config::TelemetryLimits;

/// The newest protocol version lookout speaks; it speaks every one from 1.
pub const PROTOCOL: u64 = 2;

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
    /// Protocol 2: the request's trace, the host's `execute` span (the worker's spans'
    /// default parent) and both as a W3C `traceparent`.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub trace: Option<RequestTrace<'a>>,
}

/// A protocol-2 request's trace context.
#[derive(Debug, Serialize)]
pub(crate) struct RequestTrace<'a> {
    pub trace_id: &'a str,
    pub span_id: &'a str,
    pub traceparent: &'a str,
}

/// Protocol 2: what the worker needs to know to help — how often to beat while busy, the
/// bus's sampling (so it need not even serialise what would be sampled out) and its budget.
#[derive(Debug, Serialize)]
pub(crate) struct Configure<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub heartbeat_ms: Option<u64>,
    pub sampling: &'a SamplingConfig,
    pub limits: TelemetryLimits,
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

/// Protocol 2: an event from the worker's own code.
#[derive(Debug, Deserialize)]
pub(crate) struct WorkerEvent {
    pub kind: String,
    #[serde(default)]
    pub severity: Option<String>,
    #[serde(default)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// Protocol 2: a finished span of the worker's own work.
#[derive(Debug, Deserialize)]
pub(crate) struct WorkerSpan {
    pub name: String,
    pub span_id: String,
    #[serde(default)]
    pub parent_span_id: Option<String>,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

/// One line from a worker's stdout.
#[derive(Debug)]
pub(crate) enum Line {
    Reply(Reply),
    Event(WorkerEvent),
    Span(WorkerSpan),
    Heartbeat,
    /// Protocol 2 telemetry that cannot be read (a bad shape, an unknown `type`): dropped
    /// and counted, not a broken protocol — a bug in a worker's telemetry must not kill it.
    Unreadable(String),
}

/// Reads a worker's first line: a ready message speaking a protocol lookout speaks, or why
/// not. Returns the protocol (1 when it does not say).
pub(crate) fn ready(line: &str) -> Result<Ready, String> {
    let ready = serde_json::from_str::<Ready>(line)
        .ok()
        .filter(|r| r.kind == "ready")
        .ok_or_else(|| format!("its first line is not a ready message: {}", cut(line, 200)))?;
    if let Some(protocol) = ready.protocol.filter(|&p| !(1..=PROTOCOL).contains(&p)) {
        return Err(format!(
            "speaks protocol {protocol}; lookout speaks 1 to {PROTOCOL}"
        ));
    }
    Ok(ready)
}

impl Ready {
    pub(crate) fn protocol(&self) -> u64 {
        self.protocol.unwrap_or(1)
    }
}

/// Reads a line while request `id` runs (`None`: no request, the worker is idle). Protocol
/// 1 has only replies; protocol 2 adds telemetry (`type`: event, span, heartbeat). Anything
/// that is not JSON, or a reply to another request, breaks the protocol.
pub(crate) fn line(line: &str, id: Option<u64>, protocol: u64) -> Result<Line, String> {
    #[derive(Deserialize)]
    struct Tagged {
        #[serde(rename = "type")]
        kind: Option<String>,
    }
    if protocol >= 2 {
        let tagged = serde_json::from_str::<Tagged>(line).map_err(|e| {
            format!(
                "wrote a line that is not a protocol message ({e}): {}",
                cut(line, 200)
            )
        })?;
        if let Some(kind) = tagged.kind {
            let read = |r: Result<Line, serde_json::Error>, what: &str| {
                r.unwrap_or_else(|e| Line::Unreadable(format!("a {what} message: {e}")))
            };
            return Ok(match kind.as_str() {
                "heartbeat" => Line::Heartbeat,
                "event" => read(serde_json::from_str(line).map(Line::Event), "event"),
                "span" => read(serde_json::from_str(line).map(Line::Span), "span"),
                other => {
                    Line::Unreadable(format!("a message of unknown type `{}`", cut(other, 40)))
                }
            });
        }
    }
    let Some(id) = id else {
        return Err(format!(
            "wrote a line while no request was running: {}",
            cut(line, 200)
        ));
    };
    reply(line, id).map(Line::Reply)
}

/// Reads a worker's answer to request `id`: anything else breaks the protocol.
fn reply(line: &str, id: u64) -> Result<Reply, String> {
    match serde_json::from_str::<Reply>(line) {
        Ok(reply) if reply.id == Some(id) => Ok(reply),
        Ok(reply) => Err(format!(
            "replied to request {:?} while request {id} was running",
            reply.id
        )),
        Err(e) => Err(format!(
            "wrote a line that is not a reply ({e}): {}",
            cut(line, 200)
        )),
    }
}

/// A worker's stdout, a line at a time. Cancel-safe: what was read of a line before a
/// cancelled `next` stays in the buffer for the next call — an idle worker's stdout is read
/// inside a `select!` that an arriving request cancels.
pub(crate) struct Lines<R> {
    reader: R,
    partial: Vec<u8>,
}

impl<R: AsyncBufRead + Unpin> Lines<R> {
    pub(crate) fn new(reader: R) -> Lines<R> {
        Lines {
            reader,
            partial: Vec::new(),
        }
    }

    /// One line, at most [`MAX_LINE`] bytes; `None` at EOF.
    pub(crate) async fn next(&mut self) -> std::io::Result<Option<String>> {
        loop {
            let available = self.reader.fill_buf().await?;
            if available.is_empty() {
                return if self.partial.is_empty() {
                    Ok(None)
                } else {
                    Err(std::io::Error::other(
                        "stdout closed in the middle of a line",
                    ))
                };
            }
            match available.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.partial.extend_from_slice(&available[..i]);
                    self.reader.consume(i + 1);
                    break;
                }
                None => {
                    let n = available.len();
                    self.partial.extend_from_slice(available);
                    self.reader.consume(n);
                }
            }
            if self.partial.len() > MAX_LINE {
                break;
            }
        }
        if self.partial.len() > MAX_LINE {
            return Err(std::io::Error::other(format!(
                "a line longer than {MAX_LINE} bytes"
            )));
        }
        String::from_utf8(std::mem::take(&mut self.partial))
            .map(Some)
            .map_err(|_| std::io::Error::other("a line that is not UTF-8"))
    }
}

/// `s`, cut to at most `max` bytes on a character boundary (`…` marks a cut).
pub(crate) fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Reads `stdout` the way lookout reads a worker's: a ready line, then replies to requests
/// 1, 2, 3… (and, for protocol 2, telemetry between them) until EOF or the first line that
/// breaks the protocol. For the fuzz target (`tests/fuzz`): whatever a worker writes, this
/// returns a verdict and never panics.
#[doc(hidden)]
pub fn read_worker_stdout(stdout: &[u8]) -> Result<usize, String> {
    let mut lines = Lines::new(stdout);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let protocol = match lines.next().await {
            Ok(Some(l)) => ready(&l)?.protocol(),
            Ok(None) => return Err("closed stdout before it was ready".to_string()),
            Err(e) => return Err(format!("unreadable ready line: {e}")),
        };
        let mut replies = 0;
        loop {
            match lines.next().await {
                Ok(Some(l)) => {
                    if let Line::Reply(_) = line(&l, Some(replies as u64 + 1), protocol)? {
                        replies += 1;
                    }
                }
                Ok(None) => return Ok(replies),
                Err(e) => return Err(format!("wrote an unreadable line: {e}")),
            }
        }
    })
}
