//! One worker process: spawn, handshake, one request at a time, stop. Knows nothing of
//! queues or sessions.

use std::collections::VecDeque;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lookout_core::{Bus, BusConfig, Event, FieldValue};
use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::config::{PoolConfig, TelemetryLimits};
use crate::metrics::PoolMetrics;
use crate::protocol::{
    self, Configure, Line, Lines, Reply, Request, RequestTrace, SessionEnd, cut,
};
use crate::telemetry::{Serving, Telemetry};
use crate::trace::{hex, traceparent};

/// Lines of a worker's stderr kept for crash reports.
const STDERR_TAIL: usize = 20;
/// Longest stderr line kept or logged; the rest is cut.
const STDERR_LINE: usize = 1024;
/// Lines that follow each other this closely were written together: one stderr record.
const STDERR_RECORD_GAP: Duration = Duration::from_millis(5);
/// Most lines in one stderr record (a 4096-bit PEM key is ≈ 50).
const STDERR_RECORD_LINES: usize = 256;

/// The last lines a worker wrote to stderr.
pub(crate) type Tail = Arc<Mutex<VecDeque<String>>>;

/// The correlation id of the request a worker is running (and when it ended, if it has):
/// its stderr lines are logged with it, so one request can be followed through the log into
/// the worker.
type Current = Arc<Mutex<Option<Running>>>;

/// The request a worker runs (or ran last): its correlation id, its number, when it ended.
struct Running {
    correlation_id: String,
    request: u64,
    ended: Option<Instant>,
}

/// The request a stderr line read now belongs to: the one running, or the one that ended
/// within `STDERR_LAG` (the reader may be a little behind).
fn attributed(current: &Current) -> Option<(String, u64)> {
    current
        .lock()
        .as_ref()
        .filter(|r| r.ended.is_none_or(|at| at.elapsed() < STDERR_LAG))
        .map(|r| (r.correlation_id.clone(), r.request))
}

/// A stderr line read this soon after its request's reply still belongs to it: the reader
/// runs beside the request and may be a little behind.
const STDERR_LAG: Duration = Duration::from_millis(100);

pub(crate) struct Process {
    pub id: String,
    pub pid: u32,
    pub started: Instant,
    pub served: u64,
    /// The commands it announced.
    pub commands: Vec<String>,
    /// The protocol it speaks (1 or 2).
    pub protocol: u64,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    pub tail: Tail,
    current: Current,
    next_request: u64,
    /// Protocol 2: its events and spans, under its budget.
    pub telemetry: Telemetry,
    /// The request it serves, for its telemetry.
    serving: Option<Serving>,
    /// Protocol 2: how long it may stay silent while busy.
    heartbeat_timeout: Option<Duration>,
    bus: Bus,
    /// What the last `configure` said (sent again when any of it changes).
    configured: Option<(Arc<BusConfig>, Option<Duration>, TelemetryLimits)>,
}

/// How a worker failed to come up, with what it wrote to stderr.
#[derive(Debug)]
pub(crate) struct StartError {
    pub reason: String,
    pub pid: Option<u32>,
    pub tail: Vec<String>,
}

/// How a request ended on a worker.
pub(crate) enum Ran {
    Replied(Reply),
    /// The process exited (or closed stdout) before replying.
    Crashed(String),
    /// The worker wrote something that is not the reply; it was killed.
    Protocol(String),
    /// Past its deadline; the worker was killed.
    TimedOut,
    /// Silent for longer than the heartbeat timeout while busy; the worker was killed.
    Hung(Duration),
}

/// The trace of the request a worker runs: the trace and the host's `execute` span.
pub(crate) struct RunTrace {
    pub trace_id: [u8; 16],
    pub execute_span: [u8; 8],
    pub sampled: bool,
}

impl Process {
    /// Spawns the worker and waits for its ready line, up to the startup timeout.
    pub async fn start(
        config: &PoolConfig,
        id: String,
        bus: &Bus,
        metrics: &PoolMetrics,
    ) -> Result<Process, StartError> {
        let argv = config.argv();
        let mut command = Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .envs(&config.env)
            .env("LOOKOUT_POOL", &config.name)
            .env("LOOKOUT_WORKER", &id)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C in lookout's terminal reaches lookout, which
            // stops the workers gracefully, not the workers first. If lookout dies, their
            // stdin closes and the worker library exits.
            .process_group(0)
            .kill_on_drop(true);
        if let Some(cwd) = &config.cwd {
            command.current_dir(cwd);
        }
        let mut child = command.spawn().map_err(|e| StartError {
            reason: format!("cannot run `{}`: {e}", argv[0]),
            pid: None,
            tail: Vec::new(),
        })?;
        let pid = child.id().unwrap_or_default();
        let tail: Tail = Arc::default();
        let current: Current = Arc::default();
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(read_stderr(
                stderr,
                tail.clone(),
                current.clone(),
                bus.clone(),
                config.name.clone(),
                id.clone(),
            ));
        }
        let stdin = child.stdin.take();
        let mut stdout = Lines::new(BufReader::new(
            child.stdout.take().expect("stdout is piped"),
        ));
        let fail = |reason: String, tail: &Tail| StartError {
            reason,
            pid: Some(pid),
            tail: tail.lock().iter().cloned().collect(),
        };
        let timeout = Duration::from_millis(config.startup_timeout_ms);
        let line = tokio::select! {
            line = stdout.next() => line,
            status = child.wait() => {
                // Let the stderr reader catch up with the last lines.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Err(fail(format!("exited before it was ready ({})", describe_exit(status.ok())), &tail));
            }
            _ = tokio::time::sleep(timeout) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Err(fail(format!("not ready within {} ms; killed", config.startup_timeout_ms), &tail));
            }
        };
        let ready = match line {
            Ok(Some(line)) => protocol::ready(&line),
            Ok(None) => Err("closed stdout before it was ready".to_string()),
            Err(e) => Err(format!("unreadable ready line: {e}")),
        };
        let ready = match ready {
            Ok(r) => r,
            Err(reason) => {
                let _ = child.start_kill();
                return Err(fail(reason, &tail));
            }
        };
        let protocol = ready.protocol();
        tracing::debug!(target: "lookout::pool", pool = %config.name, worker = %id, pid, protocol, python = ?ready.python, "worker ready");
        let telemetry = Telemetry::new(bus, metrics, &config.name, &id, config.telemetry);
        let mut process = Process {
            id,
            pid: ready.pid.unwrap_or(pid),
            started: Instant::now(),
            served: 0,
            commands: ready.commands,
            protocol,
            child,
            stdin,
            stdout,
            tail,
            current,
            next_request: 1,
            telemetry,
            serving: None,
            heartbeat_timeout: config.heartbeat_timeout(),
            bus: bus.clone(),
            configured: None,
        };
        process.configure(config).await;
        Ok(process)
    }

    /// Protocol 2: takes the pool's current heartbeat timeout and budget (they change live),
    /// and tells the worker how to help (heartbeats, the bus's sampling, its budget) when it
    /// has not heard the current settings yet. A failed write shows on the next request, as
    /// a crash.
    async fn configure(&mut self, config: &PoolConfig) {
        self.heartbeat_timeout = config.heartbeat_timeout();
        self.telemetry.set_limits(config.telemetry);
        if self.protocol < 2 {
            return;
        }
        let bus = self.bus.config();
        if self
            .configured
            .as_ref()
            .is_some_and(|(sent, beat, limits)| {
                Arc::ptr_eq(sent, &bus)
                    && *beat == self.heartbeat_timeout
                    && *limits == config.telemetry
            })
        {
            return;
        }
        let message = Configure {
            kind: "configure",
            heartbeat_ms: self
                .heartbeat_timeout
                .map(|t| (t.as_millis() as u64 / 3).max(10)),
            sampling: &bus.sampling,
            limits: config.telemetry,
        };
        let mut line = serde_json::to_vec(&message).unwrap_or_default();
        line.push(b'\n');
        let _ = self.write(&line).await;
        self.configured = Some((bus, self.heartbeat_timeout, config.telemetry));
    }

    /// The last stderr lines.
    pub fn tail(&self) -> Vec<String> {
        self.tail.lock().iter().cloned().collect()
    }

    /// Sends one request and waits for its reply until `deadline`; a protocol-2 worker's
    /// telemetry meanwhile is the request's.
    #[allow(clippy::too_many_arguments)]
    pub async fn run(
        &mut self,
        config: &PoolConfig,
        correlation_id: &str,
        command: &str,
        args: &serde_json::Value,
        session_id: Option<&str>,
        trace: &RunTrace,
        deadline: tokio::time::Instant,
    ) -> Ran {
        self.configure(config).await;
        let id = self.next_request;
        self.next_request += 1;
        // Trace context and telemetry are protocol 2's: a protocol-1 worker's request costs
        // what it did.
        let v2 = self.protocol >= 2;
        let ids = v2.then(|| {
            (
                hex(&trace.trace_id),
                hex(&trace.execute_span),
                traceparent(&trace.trace_id, &trace.execute_span, trace.sampled),
            )
        });
        let request = Request {
            id,
            correlation_id,
            command,
            args,
            session_id,
            trace: ids
                .as_ref()
                .map(|(trace_id, span_id, parent)| RequestTrace {
                    trace_id,
                    span_id,
                    traceparent: parent,
                }),
        };
        let mut line = serde_json::to_vec(&request).unwrap_or_default();
        line.push(b'\n');
        self.telemetry.in_request = 0;
        self.serving = v2.then(|| Serving {
            correlation_id: correlation_id.to_string(),
            command: command.to_string(),
            trace_id: trace.trace_id,
            execute_span: trace.execute_span,
        });
        *self.current.lock() = Some(Running {
            correlation_id: correlation_id.to_string(),
            request: id,
            ended: None,
        });
        let ran = self.exchange(id, &line, deadline).await;
        self.serving = None;
        if let Some(running) = self.current.lock().as_mut() {
            running.ended = Some(Instant::now());
        }
        ran
    }

    async fn exchange(&mut self, id: u64, line: &[u8], deadline: tokio::time::Instant) -> Ran {
        if let Err(e) = self.write(line).await {
            return Ran::Crashed(
                self.exited(&format!("could not take the request: {e}"))
                    .await,
            );
        }
        let mut heard = tokio::time::Instant::now();
        loop {
            let silence = self.heartbeat_timeout.filter(|_| self.protocol >= 2);
            let read = tokio::select! {
                biased;
                line = self.stdout.next() => line,
                status = self.child.wait() => return Ran::Crashed(describe_exit(status.ok())),
                _ = tokio::time::sleep_until(deadline) => {
                    self.kill().await;
                    return Ran::TimedOut;
                }
                _ = async {
                    match silence {
                        Some(t) => tokio::time::sleep_until(heard + t).await,
                        None => std::future::pending().await,
                    }
                } => {
                    let silent = heard.elapsed();
                    self.kill().await;
                    return Ran::Hung(silent);
                }
            };
            heard = tokio::time::Instant::now();
            match read {
                Ok(Some(line)) => match protocol::line(&line, Some(id), self.protocol) {
                    Ok(Line::Reply(reply)) => return Ran::Replied(reply),
                    Ok(other) => self.take(line.len(), other),
                    Err(reason) => {
                        self.kill().await;
                        return Ran::Protocol(reason);
                    }
                },
                Ok(None) => return Ran::Crashed(self.exited("closed stdout").await),
                Err(e) => {
                    self.kill().await;
                    return Ran::Protocol(format!("wrote an unreadable line: {e}"));
                }
            }
        }
    }

    /// A telemetry line (protocol 2), for the request being served or none.
    fn take(&mut self, len: usize, line: Line) {
        let serving = self.serving.as_ref();
        match line {
            Line::Event(event) => self.telemetry.event(len, event, serving),
            Line::Span(span) => self.telemetry.span(len, span, serving),
            Line::Unreadable(why) => self.telemetry.invalid(&why),
            Line::Heartbeat | Line::Reply(_) => {}
        }
    }

    /// Tells the worker a session ended; a failure shows as a crash on the next request.
    pub async fn end_session(&mut self, session_id: &str) {
        let message = SessionEnd {
            kind: "session_end",
            session_id,
        };
        let mut line = serde_json::to_vec(&message).unwrap_or_default();
        line.push(b'\n');
        let _ = self.write(&line).await;
    }

    async fn write(&mut self, line: &[u8]) -> std::io::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| std::io::Error::other("stdin is closed"))?;
        stdin.write_all(line).await?;
        stdin.flush().await
    }

    /// While the worker is idle: takes its telemetry (protocol 2), and resolves when it
    /// exits on its own or breaks the protocol (then it is killed), saying how. Cancel-safe:
    /// an arriving request cancels it between lines.
    pub async fn idle(&mut self) -> String {
        loop {
            let read = tokio::select! {
                line = self.stdout.next() => line,
                status = self.child.wait() => return format!("exited while idle: {}", describe_exit(status.ok())),
            };
            let why = match read {
                Ok(Some(line)) => match protocol::line(&line, None, self.protocol) {
                    Ok(other) => {
                        self.take(line.len(), other);
                        continue;
                    }
                    Err(reason) => reason,
                },
                Ok(None) => return self.exited("closed stdout while idle").await,
                Err(e) => format!("wrote an unreadable line: {e}"),
            };
            self.kill().await;
            return format!("broke the protocol while idle: {why}");
        }
    }

    /// After a failed write or EOF: how it exited (waiting briefly for the status).
    async fn exited(&mut self, what: &str) -> String {
        match tokio::time::timeout(Duration::from_secs(1), self.child.wait()).await {
            Ok(status) => format!("{what}: {}", describe_exit(status.ok())),
            Err(_) => {
                self.kill().await;
                format!("{what}; killed")
            }
        }
    }

    async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Stops gracefully: stdin closed (the worker's read loop ends), then SIGTERM, then
    /// SIGKILL, each after `grace`. Returns how it ended.
    pub async fn stop(mut self, grace: Duration) -> String {
        drop(self.stdin.take());
        if let Ok(status) = tokio::time::timeout(grace, self.child.wait()).await {
            return describe_exit(status.ok());
        }
        let pid = nix::unistd::Pid::from_raw(self.pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        if let Ok(status) = tokio::time::timeout(grace, self.child.wait()).await {
            return format!("{} after SIGTERM", describe_exit(status.ok()));
        }
        self.kill().await;
        "killed (SIGKILL) after SIGTERM was ignored".to_string()
    }

    /// Resident memory, from /proc.
    pub fn memory_bytes(&self) -> Option<u64> {
        memory_bytes(self.pid)
    }
}

/// Resident memory of a process, from /proc (Linux); `None` where it cannot be read (the
/// process is gone, or no /proc). The host's own: `memory_bytes(std::process::id())`.
pub fn memory_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `exit code 3`, `signal 9 (SIGKILL)`.
pub(crate) fn describe_exit(status: Option<ExitStatus>) -> String {
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(signal)) => {
                let name = nix::sys::signal::Signal::try_from(signal)
                    .map(|s| s.as_str())
                    .unwrap_or("?");
                format!("signal {signal} ({name})")
            }
            _ => "ended".to_string(),
        },
        None => "ended (status unknown)".to_string(),
    }
}

/// Reads a worker's stderr. Lines written together (arriving within `STDERR_RECORD_GAP` of
/// each other) are one record: a traceback, or a private key spread over lines, is sanitized
/// as a whole — line by line, the middle of a PEM block looks like nothing — and logged as
/// one entry. Raw lines are kept in the tail for crash reports (which are sanitized whole,
/// too, wherever they go).
async fn read_stderr(
    stderr: tokio::process::ChildStderr,
    tail: Tail,
    current: Current,
    bus: Bus,
    pool: String,
    worker: String,
) {
    let mut lines = BufReader::new(stderr).lines();
    // A line read while collecting a record that belongs to another request starts the next.
    let mut pending: Option<String> = None;
    loop {
        let first = match pending.take() {
            Some(line) => line,
            None => match lines.next_line().await {
                Ok(Some(line)) => line,
                _ => break,
            },
        };
        // Attributed when its first line is read; it ends where another request's begin.
        let owner = attributed(&current);
        let owner_request = owner.as_ref().map(|(_, request)| *request);
        let mut record = vec![cut(&first, STDERR_LINE)];
        while record.len() < STDERR_RECORD_LINES {
            // `next_line` is cancel-safe: a line cut short by the timeout is read next time.
            match tokio::time::timeout(STDERR_RECORD_GAP, lines.next_line()).await {
                Ok(Ok(Some(line))) => {
                    if attributed(&current).map(|(_, request)| request) != owner_request {
                        pending = Some(line);
                        break;
                    }
                    record.push(cut(&line, STDERR_LINE));
                }
                _ => break,
            }
        }
        let text = record.join("\n");
        let event = Event::new("worker.stderr").field("text", text.as_str());
        let clean = bus
            .sanitize_copy(vec![event])
            .pop()
            .and_then(|e| match e.get("text") {
                Some(FieldValue::Str(s)) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        // The request that was running, if any (a line written between requests has none).
        match owner.map(|(cid, _)| cid) {
            Some(cid) => {
                tracing::info!(target: "lookout::worker", pool = %pool, worker = %worker, stream = "stderr", lines = record.len(), correlation_id = %cid, "{clean}")
            }
            None => {
                tracing::info!(target: "lookout::worker", pool = %pool, worker = %worker, stream = "stderr", lines = record.len(), "{clean}")
            }
        }
        let mut tail = tail.lock();
        for line in record {
            if tail.len() == STDERR_TAIL {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    }
}
