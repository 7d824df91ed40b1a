//! The wire format between lookout and a worker: JSON, one object a line, over the worker's
//! stdin (lookout → worker) and stdout (worker → lookout). Written down in
//! docs/worker-protocol.md.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

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

/// Reads a worker's first line: a ready message speaking our protocol, or why not.
pub(crate) fn ready(line: &str) -> Result<Ready, String> {
    let ready = serde_json::from_str::<Ready>(line)
        .ok()
        .filter(|r| r.kind == "ready")
        .ok_or_else(|| format!("its first line is not a ready message: {}", cut(line, 200)))?;
    if let Some(protocol) = ready.protocol.filter(|&p| p != PROTOCOL) {
        return Err(format!(
            "speaks protocol {protocol}; lookout speaks {PROTOCOL}"
        ));
    }
    Ok(ready)
}

/// Reads a worker's answer to request `id`: anything else breaks the protocol.
pub(crate) fn reply(line: &str, id: u64) -> Result<Reply, String> {
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

/// One line from a worker's stdout, at most [`MAX_LINE`] bytes; `None` at EOF.
pub(crate) async fn next_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
) -> std::io::Result<Option<String>> {
    let mut line = Vec::new();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return if line.is_empty() {
                Ok(None)
            } else {
                Err(std::io::Error::other(
                    "stdout closed in the middle of a line",
                ))
            };
        }
        match available.iter().position(|&b| b == b'\n') {
            Some(i) => {
                line.extend_from_slice(&available[..i]);
                reader.consume(i + 1);
                break;
            }
            None => {
                let n = available.len();
                line.extend_from_slice(available);
                reader.consume(n);
            }
        }
        if line.len() > MAX_LINE {
            return Err(std::io::Error::other(format!(
                "a line longer than {MAX_LINE} bytes"
            )));
        }
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| std::io::Error::other("a line that is not UTF-8"))
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
/// 1, 2, 3… until EOF or the first line that breaks the protocol. For the fuzz target
/// (`tests/fuzz`): whatever a worker writes, this returns a verdict and never panics.
#[doc(hidden)]
pub fn read_worker_stdout(stdout: &[u8]) -> Result<usize, String> {
    let mut reader = stdout;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        match next_line(&mut reader).await {
            Ok(Some(line)) => ready(&line)?,
            Ok(None) => return Err("closed stdout before it was ready".to_string()),
            Err(e) => return Err(format!("unreadable ready line: {e}")),
        };
        let mut replies = 0;
        loop {
            match next_line(&mut reader).await {
                Ok(Some(line)) => {
                    reply(&line, replies as u64 + 1)?;
                    replies += 1;
                }
                Ok(None) => return Ok(replies),
                Err(e) => return Err(format!("wrote an unreadable line: {e}")),
            }
        }
    })
}
