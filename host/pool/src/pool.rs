//! A pool: worker slots, a bounded queue, sessions pinned to workers, and the lifecycle
//! events of all of it. One task per slot owns its worker process; the scheduling state is
//! one mutex-guarded struct, held only for bookkeeping (never across an await).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use lookout_core::{Bus, Event, FieldValue, Severity};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::PoolConfig;
use crate::metrics::PoolMetrics;
use crate::process::{Process, Ran, StartError};

/// Most distinct `command` label values per pool; the rest are `other`.
const MAX_COMMAND_LABELS: usize = 64;

/// What to run.
#[derive(Clone, Debug)]
pub struct ExecRequest {
    pub command: String,
    pub args: serde_json::Value,
    pub session_id: Option<String>,
    /// Shorter than the pool's `request_timeout_ms`, if the caller wants.
    pub timeout: Option<Duration>,
    pub correlation_id: String,
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
            ErrorKind::QueueFull => "queue_full",
            ErrorKind::Unavailable => "unavailable",
        }
    }
}

/// A worker slot's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    Starting,
    Available,
    Busy,
    Stopping,
    /// No process: it failed to start and is waiting to retry, or the pool stopped.
    Down,
}

impl WorkerState {
    pub(crate) const ALL: [WorkerState; 5] = [
        WorkerState::Starting,
        WorkerState::Available,
        WorkerState::Busy,
        WorkerState::Stopping,
        WorkerState::Down,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Starting => "starting",
            WorkerState::Available => "available",
            WorkerState::Busy => "busy",
            WorkerState::Stopping => "stopping",
            WorkerState::Down => "down",
        }
    }
}

/// One worker slot as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct WorkerSnapshot {
    pub slot: usize,
    pub id: Option<String>,
    pub pid: Option<u32>,
    pub state: WorkerState,
    pub uptime_s: Option<f64>,
    pub requests_served: u64,
    pub memory_bytes: Option<u64>,
    pub last_error: Option<String>,
}

/// A session as opening it answers.
#[derive(Clone, Debug, Serialize)]
pub struct SessionInfo {
    pub session_id: String,
    pub worker: String,
    pub ttl_s: u64,
    /// False when the session already existed.
    pub created: bool,
}

/// A pool as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct PoolSnapshot {
    pub name: String,
    /// `ok` (every slot has a live worker), `degraded`, `unavailable` (none), `stopping`.
    pub status: &'static str,
    pub size: usize,
    pub uptime_s: f64,
    pub workers: Vec<WorkerSnapshot>,
    pub queue_length: usize,
    pub queue_limit: usize,
    pub sessions: usize,
    pub saturated: bool,
    /// Requests answered since the pool started (refusals and failures included).
    pub requests_total: u64,
    /// Of those, failed.
    pub failed_total: u64,
    pub config: serde_json::Value,
}

struct Job {
    id: u64,
    request: ExecRequest,
    enqueued: Instant,
    deadline: Instant,
    reply: oneshot::Sender<Result<Executed, ExecError>>,
}

enum Assignment {
    Run(Job, Duration),
    EndSession(String),
    /// Replace the worker once it is idle, for this reason (`manual`, `config_changed`).
    Recycle(&'static str),
    /// The pool shrank: stop this worker gracefully and leave the slot empty.
    Retire,
}

struct Slot {
    /// Removed by a smaller `size`: no worker, not shown, not counted.
    retired: bool,
    state: WorkerState,
    worker: Option<SlotWorker>,
    tx: mpsc::Sender<Assignment>,
    last_error: Option<String>,
}

#[derive(Clone)]
struct SlotWorker {
    id: String,
    pid: u32,
    started: Instant,
    served: u64,
}

struct Session {
    worker: String,
    created: Instant,
    last_used: Instant,
    requests: u64,
}

struct State {
    slots: Vec<Slot>,
    queue: VecDeque<Job>,
    sessions: HashMap<String, Session>,
    saturated_since: Option<Instant>,
    stopping: bool,
    commands: HashSet<String>,
}

struct Inner {
    /// The pool's name (fixed: a renamed pool is another pool).
    name: String,
    config: ArcSwap<PoolConfig>,
    bus: Bus,
    metrics: PoolMetrics,
    state: Mutex<State>,
    started: Instant,
    stop: watch::Sender<bool>,
    next_worker: AtomicU64,
    next_job: AtomicU64,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Where slot tasks run (a resize may come from a thread outside the runtime).
    runtime: tokio::runtime::Handle,
    /// Recent request outcomes, for health windows.
    recent: Mutex<VecDeque<Outcome>>,
    /// Requests answered, and of those failed, since the pool started.
    answered: AtomicU64,
    failed: AtomicU64,
}

/// One request as a caller saw it.
#[derive(Clone, Copy)]
struct Outcome {
    at: Instant,
    seconds: f32,
    ok: bool,
}

/// Most outcomes kept; past it a window covers only the latest.
const RECENT_OUTCOMES: usize = 20_000;
/// Longest window kept.
pub const MAX_WINDOW: Duration = Duration::from_secs(3600);

/// Requests over a recent window, as callers saw them (queue wait included; refusals and
/// timeouts count as failed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct WindowStats {
    pub requests: u64,
    pub failed: u64,
    /// Median time to an answer, when there were requests.
    pub p50_ms: Option<f64>,
    /// 95th percentile of the time to an answer, when there were requests.
    pub p95_ms: Option<f64>,
}

impl WindowStats {
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.failed as f64 / self.requests as f64
        }
    }
}

/// A running pool. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.inner.config().name)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Starts the pool's workers (in the background: this returns at once). `pool.started`
    /// is published when every slot has come up or failed its first start.
    pub fn start(config: PoolConfig, bus: Bus, metrics: PoolMetrics) -> Result<Pool, String> {
        if let Some((field, reason)) = config.problems().into_iter().next() {
            return Err(format!("{field}: {reason}"));
        }
        metrics.init(&config.name);
        let mut receivers = Vec::new();
        let slots = (0..config.size)
            .map(|_| {
                let (tx, rx) = mpsc::channel(16);
                receivers.push(rx);
                Slot {
                    retired: false,
                    state: WorkerState::Starting,
                    worker: None,
                    tx,
                    last_error: None,
                }
            })
            .collect();
        let inner = Arc::new(Inner {
            name: config.name.clone(),
            config: ArcSwap::from_pointee(config),
            bus,
            metrics,
            state: Mutex::new(State {
                slots,
                queue: VecDeque::new(),
                sessions: HashMap::new(),
                saturated_since: None,
                stopping: false,
                commands: HashSet::new(),
            }),
            started: Instant::now(),
            stop: watch::channel(false).0,
            next_worker: AtomicU64::new(0),
            next_job: AtomicU64::new(0),
            tasks: Mutex::new(Vec::new()),
            runtime: tokio::runtime::Handle::current(),
            recent: Mutex::new(VecDeque::new()),
            answered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        });
        inner.refresh_gauges(&inner.state.lock());
        let mut first_starts = Vec::new();
        let mut tasks = Vec::new();
        for (index, rx) in receivers.into_iter().enumerate() {
            let (done, first) = oneshot::channel();
            first_starts.push(first);
            tasks.push(tokio::spawn(run_slot(inner.clone(), index, rx, done)));
        }
        tasks.push(tokio::spawn(sweep_sessions(inner.clone())));
        {
            let inner = inner.clone();
            tasks.push(tokio::spawn(async move {
                for first in first_starts {
                    let _ = first.await;
                }
                inner.announce_started();
            }));
        }
        *inner.tasks.lock() = tasks;
        Ok(Pool { inner })
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Its configuration now (a change applies from here on).
    pub fn config(&self) -> Arc<PoolConfig> {
        self.inner.config()
    }

    /// Runs a request on a worker: the one its session is pinned to, or any available one,
    /// waiting in the queue if none is.
    pub async fn execute(&self, request: ExecRequest) -> Result<Executed, ExecError> {
        let began = Instant::now();
        let outcome = self.execute_inner(request).await;
        self.inner.answered.fetch_add(1, Ordering::Relaxed);
        if outcome.is_err() {
            self.inner.failed.fetch_add(1, Ordering::Relaxed);
        }
        let mut recent = self.inner.recent.lock();
        if recent.len() >= RECENT_OUTCOMES {
            recent.pop_front();
        }
        recent.push_back(Outcome {
            at: Instant::now(),
            seconds: began.elapsed().as_secs_f32(),
            ok: outcome.is_ok(),
        });
        outcome
    }

    /// Requests answered since the pool started (refusals and failures included).
    pub fn requests_total(&self) -> u64 {
        self.inner.answered.load(Ordering::Relaxed)
    }

    /// Requests answered within the last `window` (at most an hour).
    pub fn window(&self, window: Duration) -> WindowStats {
        let window = window.min(MAX_WINDOW);
        let mut recent = self.inner.recent.lock();
        while recent.front().is_some_and(|o| o.at.elapsed() > MAX_WINDOW) {
            recent.pop_front();
        }
        let mut seconds: Vec<f32> = Vec::new();
        let mut stats = WindowStats::default();
        for o in recent.iter().rev().take_while(|o| o.at.elapsed() <= window) {
            stats.requests += 1;
            stats.failed += u64::from(!o.ok);
            seconds.push(o.seconds);
        }
        if !seconds.is_empty() {
            seconds.sort_by(f32::total_cmp);
            let quantile = |q: f64| {
                let at = ((seconds.len() as f64 * q).ceil() as usize).clamp(1, seconds.len()) - 1;
                f64::from(seconds[at]) * 1e3
            };
            stats.p50_ms = Some(quantile(0.5));
            stats.p95_ms = Some(quantile(0.95));
        }
        stats
    }

    async fn execute_inner(&self, request: ExecRequest) -> Result<Executed, ExecError> {
        let inner = &self.inner;
        let config = inner.config();
        let timeout = request.timeout.map_or(config.request_timeout(), |t| {
            t.min(config.request_timeout())
        });
        let now = Instant::now();
        let (tx, rx) = oneshot::channel();
        let job_id = inner.next_job.fetch_add(1, Ordering::Relaxed);
        {
            let mut state = inner.state.lock();
            let refuse = |kind: ErrorKind, message: String| {
                inner
                    .metrics
                    .rejected
                    .with_label_values(&[&config.name, kind.as_str()])
                    .inc();
                Err(inner.error(&request, kind, message, None, now))
            };
            if state.stopping {
                return refuse(ErrorKind::Unavailable, "the pool is stopping".into());
            }
            if state
                .slots
                .iter()
                .filter(|s| !s.retired)
                .all(|s| s.state == WorkerState::Down)
            {
                let why = state
                    .slots
                    .iter()
                    .find_map(|s| s.last_error.clone())
                    .unwrap_or_default();
                return refuse(
                    ErrorKind::Unavailable,
                    format!("no worker is running (last start failed: {why})"),
                );
            }
            if state.queue.len() >= config.queue_limit {
                return refuse(
                    ErrorKind::QueueFull,
                    format!(
                        "all {} workers are busy and {} requests are waiting (queue_limit)",
                        config.size,
                        state.queue.len()
                    ),
                );
            }
            tracing::debug!(target: "lookout::pool", pool = %config.name, command = %request.command, correlation_id = %request.correlation_id, waiting = state.queue.len(), "request queued");
            state.queue.push_back(Job {
                id: job_id,
                request: request.clone(),
                enqueued: now,
                deadline: now + timeout,
                reply: tx,
            });
            inner.dispatch(&mut state);
        }
        let mut rx = rx;
        match tokio::time::timeout(timeout, &mut rx).await {
            Ok(Ok(outcome)) => return outcome,
            Ok(Err(_)) => {
                return Err(inner.error(
                    &request,
                    ErrorKind::Unavailable,
                    "the pool stopped before the request ran".into(),
                    None,
                    now,
                ));
            }
            Err(_) => {}
        }
        // The deadline passed. Still waiting in the queue: it never ran.
        {
            let mut state = inner.state.lock();
            if let Some(at) = state.queue.iter().position(|j| j.id == job_id) {
                state.queue.remove(at);
                inner.dispatch(&mut state);
                inner
                    .metrics
                    .rejected
                    .with_label_values(&[&config.name, "queue_timeout"])
                    .inc();
                return Err(inner.error(
                    &request,
                    ErrorKind::Timeout,
                    format!("no worker became free within {} ms", timeout.as_millis()),
                    None,
                    now,
                ));
            }
        }
        // Running: the worker's slot enforces the deadline and answers right after it.
        match tokio::time::timeout(Duration::from_secs(5), rx).await {
            Ok(Ok(outcome)) => outcome,
            _ => Err(inner.error(
                &request,
                ErrorKind::Timeout,
                format!("no reply within {} ms", timeout.as_millis()),
                None,
                now,
            )),
        }
    }

    /// Opens a session (or answers the existing one of that id): pinned to the live worker
    /// with the fewest sessions, announced by `session.created` with its metadata.
    pub fn open_session(
        &self,
        session_id: Option<String>,
        metadata: Option<serde_json::Value>,
        correlation_id: &str,
    ) -> Result<SessionInfo, ExecError> {
        let inner = &self.inner;
        let config = inner.config();
        let session_id = session_id.unwrap_or_else(|| lookout_core::new_id("s-"));
        let mut state = inner.state.lock();
        let request = ExecRequest {
            command: "session.open".into(),
            args: serde_json::Value::Null,
            session_id: Some(session_id.clone()),
            timeout: None,
            correlation_id: correlation_id.to_string(),
        };
        if state.stopping {
            return Err(inner.error(
                &request,
                ErrorKind::Unavailable,
                "the pool is stopping".into(),
                None,
                Instant::now(),
            ));
        }
        if let Some(existing) = state.sessions.get(&session_id) {
            return Ok(SessionInfo {
                session_id,
                worker: existing.worker.clone(),
                ttl_s: config.session_ttl_s,
                created: false,
            });
        }
        let pinned = |worker: &str| {
            state
                .sessions
                .values()
                .filter(|s| s.worker == worker)
                .count()
        };
        let worker = state
            .slots
            .iter()
            .filter(|s| matches!(s.state, WorkerState::Available | WorkerState::Busy))
            .filter_map(|s| s.worker.as_ref().map(|w| w.id.clone()))
            .min_by_key(|w| pinned(w));
        let Some(worker) = worker else {
            return Err(inner.error(
                &request,
                ErrorKind::Unavailable,
                "no worker is running to pin the session to".into(),
                None,
                Instant::now(),
            ));
        };
        inner.create_session(&mut state, &session_id, &worker, correlation_id, metadata);
        inner.refresh_gauges(&state);
        Ok(SessionInfo {
            session_id,
            worker,
            ttl_s: config.session_ttl_s,
            created: true,
        })
    }

    /// Applies a new configuration of this pool. Workers started from now on use it (recycle
    /// them to apply it to all at once); timeouts, limits, recycling, session and health
    /// settings apply at once. A new `size` starts workers, or stops the highest slots'
    /// workers gracefully (each after its current request). Publishes `pool.reconfigured`.
    pub fn reconfigure(&self, new: PoolConfig) -> Result<(), String> {
        let inner = &self.inner;
        if new.name != inner.name {
            return Err(format!(
                "pools.{}: a pool keeps its name (this is `{}`)",
                new.name, inner.name
            ));
        }
        if let Some((field, reason)) = new.problems().into_iter().next() {
            return Err(format!("{field}: {reason}"));
        }
        let old = inner.config();
        inner.config.store(Arc::new(new.clone()));
        let mut state = inner.state.lock();
        if state.stopping {
            return Ok(());
        }
        let active: Vec<usize> = (0..state.slots.len())
            .filter(|&i| !state.slots[i].retired)
            .collect();
        if new.size > active.len() {
            for _ in active.len()..new.size {
                let (tx, rx) = mpsc::channel(16);
                state.slots.push(Slot {
                    retired: false,
                    state: WorkerState::Starting,
                    worker: None,
                    tx,
                    last_error: None,
                });
                let index = state.slots.len() - 1;
                let (done, _) = oneshot::channel();
                let task = inner
                    .runtime
                    .spawn(run_slot(inner.clone(), index, rx, done));
                inner.tasks.lock().push(task);
            }
        } else {
            for &index in active.iter().rev().take(active.len() - new.size) {
                let slot = &mut state.slots[index];
                slot.retired = true;
                // Never picked again; the slot's task stops its worker and ends.
                slot.state = WorkerState::Stopping;
                let _ = slot.tx.try_send(Assignment::Retire);
            }
        }
        // A worker is started with its command, app, environment and folder: the running
        // ones are replaced once idle, so a rotated credential in `env` reaches every worker
        // (not only those started after some other failure).
        if old.command != new.command
            || old.app != new.app
            || old.env != new.env
            || old.cwd != new.cwd
        {
            // Slots that existed before (one still starting replaces its worker once up);
            // the ones just added start with the new settings.
            for &index in &active {
                let slot = &state.slots[index];
                if !slot.retired {
                    let _ = slot.tx.try_send(Assignment::Recycle("config_changed"));
                }
            }
        }
        inner.dispatch(&mut state);
        drop(state);
        tracing::info!(target: "lookout::pool", pool = %inner.name, size_from = old.size, size_to = new.size, "pool reconfigured");
        inner.publish(
            Event::new("pool.reconfigured")
                .field("pool", inner.name.as_str())
                .field("size_from", old.size as i64)
                .field("size_to", new.size as i64)
                .field("config", new.shown().to_string()),
        );
        Ok(())
    }

    /// Recycles a worker (by id) once it is idle. False when no such worker runs.
    pub fn recycle(&self, worker: &str) -> bool {
        let state = self.inner.state.lock();
        state
            .slots
            .iter()
            .find(|s| s.worker.as_ref().is_some_and(|w| w.id == worker))
            .is_some_and(|s| s.tx.try_send(Assignment::Recycle("manual")).is_ok())
    }

    pub fn snapshot(&self) -> PoolSnapshot {
        let inner = &self.inner;
        let state = inner.state.lock();
        let workers: Vec<WorkerSnapshot> = state
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.retired)
            .map(|(slot, s)| WorkerSnapshot {
                slot,
                id: s.worker.as_ref().map(|w| w.id.clone()),
                pid: s.worker.as_ref().map(|w| w.pid),
                state: s.state,
                uptime_s: s.worker.as_ref().map(|w| w.started.elapsed().as_secs_f64()),
                requests_served: s.worker.as_ref().map_or(0, |w| w.served),
                memory_bytes: s
                    .worker
                    .as_ref()
                    .and_then(|w| crate::process::memory_bytes(w.pid)),
                last_error: s.last_error.clone(),
            })
            .collect();
        let live = workers
            .iter()
            .filter(|w| matches!(w.state, WorkerState::Available | WorkerState::Busy))
            .count();
        let status = if state.stopping {
            "stopping"
        } else if live == 0 {
            "unavailable"
        } else if live < workers.len() {
            "degraded"
        } else {
            "ok"
        };
        PoolSnapshot {
            name: inner.config().name.clone(),
            status,
            size: inner.config().size,
            uptime_s: inner.started.elapsed().as_secs_f64(),
            workers,
            queue_length: state.queue.len(),
            queue_limit: inner.config().queue_limit,
            sessions: state.sessions.len(),
            saturated: state.saturated_since.is_some(),
            requests_total: inner.answered.load(Ordering::Relaxed),
            failed_total: inner.failed.load(Ordering::Relaxed),
            config: inner.config().shown(),
        }
    }

    /// Stops gracefully: new requests are refused and queued ones fail; running requests
    /// finish (or reach their deadline); each worker gets its stdin closed, then SIGTERM,
    /// then SIGKILL, `stop_grace_ms` apart. Publishes `pool.stopped` when all are down.
    pub async fn stop(&self, reason: &str) {
        let inner = &self.inner;
        {
            let mut state = inner.state.lock();
            if state.stopping {
                return;
            }
            state.stopping = true;
            for job in state.queue.drain(..) {
                let error = inner.error(
                    &job.request,
                    ErrorKind::Unavailable,
                    "the pool is stopping".into(),
                    None,
                    job.enqueued,
                );
                let _ = job.reply.send(Err(error));
            }
            inner.refresh_gauges(&state);
        }
        let _ = inner.stop.send(true);
        let tasks = std::mem::take(&mut *inner.tasks.lock());
        for task in tasks {
            let _ = task.await;
        }
        inner.publish(
            Event::new("pool.stopped")
                .field("pool", inner.config().name.as_str())
                .field("reason", reason)
                .field("uptime_s", inner.started.elapsed().as_secs_f64()),
        );
    }
}

impl Inner {
    fn config(&self) -> Arc<PoolConfig> {
        self.config.load_full()
    }

    fn publish(&self, event: Event) {
        self.bus.publish(event);
    }

    /// `text` as the sanitizer leaves it: for log lines that quote what a worker said.
    fn clean(&self, text: &str) -> String {
        let event = Event::new("pool.log").field("text", text);
        match self.bus.sanitize_copy(vec![event]).pop() {
            Some(e) => match e.get("text") {
                Some(FieldValue::Str(s)) => s.clone(),
                _ => String::new(),
            },
            None => String::new(),
        }
    }

    fn error(
        &self,
        request: &ExecRequest,
        kind: ErrorKind,
        message: String,
        worker: Option<&str>,
        enqueued: Instant,
    ) -> ExecError {
        ExecError {
            kind,
            worker_kind: None,
            message,
            traceback: None,
            pool: self.config().name.clone(),
            command: request.command.clone(),
            worker: worker.map(str::to_string),
            session_id: request.session_id.clone(),
            duration_ms: 0.0,
            queue_wait_ms: enqueued.elapsed().as_secs_f64() * 1e3,
            stderr_tail: Vec::new(),
        }
    }

    /// The metric label for a command: itself if a worker announced it, else `other`.
    fn command_label<'a>(&self, command: &'a str) -> &'a str {
        let state = self.state.lock();
        if state.commands.contains(command) {
            command
        } else {
            "other"
        }
    }

    fn announce_started(&self) {
        let state = self.state.lock();
        let ready = state.slots.iter().filter(|s| s.worker.is_some()).count();
        let last_error = state.slots.iter().find_map(|s| s.last_error.clone());
        drop(state);
        let mut event = Event::new("pool.started")
            .field("pool", self.config().name.as_str())
            .field("size", self.config().size as i64)
            .field("workers_ready", ready as i64)
            .field("startup_ms", self.started.elapsed().as_secs_f64() * 1e3)
            .field("config", self.config().shown().to_string());
        if ready == 0 {
            event = event.severity(Severity::Error);
        }
        if let Some(e) = last_error.filter(|_| ready < self.config().size) {
            event = event.field("last_error", e);
        }
        tracing::info!(target: "lookout::pool", pool = %self.config().name, size = self.config().size, workers_ready = ready, "pool started");
        self.publish(event);
    }

    /// Hands waiting requests to available workers. Called with the state locked whenever
    /// a request arrives or a worker becomes available.
    fn dispatch(&self, state: &mut State) {
        // Callers that gave up are not served.
        state.queue.retain(|j| !j.reply.is_closed());
        let mut i = 0;
        while i < state.queue.len() {
            match eligible_slot(state, &state.queue[i]) {
                Some(slot) => {
                    let job = state.queue.remove(i).expect("index in range");
                    self.assign(state, slot, job);
                }
                None => i += 1,
            }
        }
        let available = state
            .slots
            .iter()
            .any(|s| s.state == WorkerState::Available);
        let saturated = !state.queue.is_empty() && !available;
        match (saturated, state.saturated_since) {
            (true, None) => {
                state.saturated_since = Some(Instant::now());
                let busy = state
                    .slots
                    .iter()
                    .filter(|s| s.state == WorkerState::Busy)
                    .count();
                tracing::warn!(target: "lookout::pool", pool = %self.config().name, queue_length = state.queue.len(), "pool saturated");
                self.publish(
                    Event::new("pool.saturated")
                        .severity(Severity::Warn)
                        .field("pool", self.config().name.as_str())
                        .field("available", 0i64)
                        .field("busy", busy as i64)
                        .field("queue_length", state.queue.len() as i64),
                );
            }
            (false, Some(since)) if state.queue.is_empty() => {
                state.saturated_since = None;
                tracing::info!(target: "lookout::pool", pool = %self.config().name, "pool recovered");
                self.publish(
                    Event::new("pool.recovered")
                        .field("pool", self.config().name.as_str())
                        .field("saturated_ms", since.elapsed().as_secs_f64() * 1e3),
                );
            }
            _ => {}
        }
        self.refresh_gauges(state);
    }

    fn assign(&self, state: &mut State, slot: usize, job: Job) {
        let worker = state.slots[slot]
            .worker
            .as_ref()
            .map(|w| w.id.clone())
            .unwrap_or_default();
        if let Some(session_id) = &job.request.session_id {
            match state.sessions.get_mut(session_id) {
                None => self.create_session(
                    state,
                    session_id,
                    &worker,
                    &job.request.correlation_id,
                    None,
                ),
                Some(session) if session.worker != worker => {
                    tracing::warn!(target: "lookout::pool", pool = %self.config().name, session_id = %session_id, from = %session.worker, to = %worker, "session re-pinned: its worker is gone");
                    self.publish(
                        Event::new("session.repinned")
                            .severity(Severity::Warn)
                            .correlation_id(job.request.correlation_id.as_str())
                            .field("pool", self.config().name.as_str())
                            .field("session_id", session_id.as_str())
                            .field("from_worker", session.worker.as_str())
                            .field("worker", worker.as_str())
                            .field("reason", "its worker is gone; state kept on it is lost"),
                    );
                    session.worker = worker.clone();
                }
                Some(_) => {}
            }
            if let Some(session) = state.sessions.get_mut(session_id) {
                session.last_used = Instant::now();
                session.requests += 1;
            }
        }
        let remaining = job.deadline.saturating_duration_since(Instant::now());
        let s = &mut state.slots[slot];
        s.state = WorkerState::Busy;
        if let Err(e) = s.tx.try_send(Assignment::Run(job, remaining)) {
            s.state = WorkerState::Down;
            if let mpsc::error::TrySendError::Full(Assignment::Run(job, _))
            | mpsc::error::TrySendError::Closed(Assignment::Run(job, _)) = e
            {
                let error = self.error(
                    &job.request,
                    ErrorKind::Unavailable,
                    "the worker's slot is not taking requests".into(),
                    Some(&worker),
                    job.enqueued,
                );
                let _ = job.reply.send(Err(error));
            }
        }
    }

    /// A new session pinned to `worker`, announced by `session.created`.
    fn create_session(
        &self,
        state: &mut State,
        session_id: &str,
        worker: &str,
        correlation_id: &str,
        metadata: Option<serde_json::Value>,
    ) {
        state.sessions.insert(
            session_id.to_string(),
            Session {
                worker: worker.to_string(),
                created: Instant::now(),
                last_used: Instant::now(),
                requests: 0,
            },
        );
        let mut event = Event::new("session.created")
            .correlation_id(correlation_id)
            .field("pool", self.config().name.as_str())
            .field("session_id", session_id)
            .field("ttl_s", self.config().session_ttl_s as i64)
            .field("worker", worker);
        if let Some(metadata) = metadata {
            event = event.field("metadata", metadata.to_string());
        }
        self.publish(event);
    }

    fn set_slot(&self, index: usize, state: WorkerState) {
        let mut s = self.state.lock();
        // A retired slot takes no more requests, whatever its worker is doing.
        let state = if s.slots[index].retired && state == WorkerState::Available {
            WorkerState::Stopping
        } else {
            state
        };
        s.slots[index].state = state;
        if state == WorkerState::Available {
            self.dispatch(&mut s);
        } else {
            self.refresh_gauges(&s);
        }
    }

    fn refresh_gauges(&self, state: &State) {
        let pool = self.name.as_str();
        for ws in WorkerState::ALL {
            let n = state
                .slots
                .iter()
                .filter(|s| !s.retired && s.state == ws)
                .count();
            self.metrics
                .workers
                .with_label_values(&[pool, ws.as_str()])
                .set(n as i64);
        }
        self.metrics
            .queue_length
            .with_label_values(&[pool])
            .set(state.queue.len() as i64);
        self.metrics
            .sessions
            .with_label_values(&[pool])
            .set(state.sessions.len() as i64);
    }

    fn worker_exit(&self, reason: &str) {
        self.metrics
            .worker_exits
            .with_label_values(&[&self.config().name, reason])
            .inc();
    }
}

/// Where a job may run now: the worker its session is pinned to (if that worker still
/// lives), else any available worker.
fn eligible_slot(state: &State, job: &Job) -> Option<usize> {
    if let Some(session) = job
        .request
        .session_id
        .as_ref()
        .and_then(|id| state.sessions.get(id))
    {
        let pinned = state
            .slots
            .iter()
            .position(|s| s.worker.as_ref().is_some_and(|w| w.id == session.worker));
        if let Some(slot) = pinned {
            return (state.slots[slot].state == WorkerState::Available).then_some(slot);
        }
    }
    state
        .slots
        .iter()
        .position(|s| s.state == WorkerState::Available)
}

/// How a worker's life ended.
enum End {
    Stop,
    Retire,
    Recycle(&'static str),
    Crashed(String),
}

/// One slot: starts a worker, serves its assignments, replaces it when it ends, until the
/// pool stops.
async fn run_slot(
    inner: Arc<Inner>,
    index: usize,
    mut rx: mpsc::Receiver<Assignment>,
    first_start: oneshot::Sender<()>,
) {
    let pool = inner.name.clone();
    let pool = pool.as_str();
    let mut stop = inner.stop.subscribe();
    let mut first_start = Some(first_start);
    let mut backoff = Duration::from_millis(100);
    while !*stop.borrow() && !inner.state.lock().slots[index].retired {
        // Each worker starts with the configuration of its time.
        let config = inner.config();
        let id = format!(
            "{pool}-{}",
            inner.next_worker.fetch_add(1, Ordering::Relaxed) + 1
        );
        inner.set_slot(index, WorkerState::Starting);
        let starting = Instant::now();
        let process = Process::start(&config, id.clone(), &inner.bus).await;
        let mut process = match process {
            Ok(p) => p,
            Err(StartError { reason, pid, tail }) => {
                let clean = inner.clean(&reason);
                tracing::error!(target: "lookout::pool", pool, worker = %id, reason = %clean, "worker failed to start");
                let mut event = Event::new("worker.crashed")
                    .severity(Severity::Error)
                    .field("pool", pool)
                    .field("worker", id.as_str())
                    .field("reason", format!("failed to start: {reason}"))
                    .field("stderr_tail", tail.join("\n"))
                    .field("uptime_s", 0.0)
                    .field("requests_served", 0i64);
                if let Some(pid) = pid {
                    event = event.field("pid", i64::from(pid));
                }
                inner.publish(event);
                inner.worker_exit("failed_to_start");
                {
                    let mut state = inner.state.lock();
                    state.slots[index].state = WorkerState::Down;
                    state.slots[index].worker = None;
                    state.slots[index].last_error = Some(reason);
                    inner.refresh_gauges(&state);
                }
                if let Some(done) = first_start.take() {
                    let _ = done.send(());
                }
                fail_pending(&inner, &mut rx);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        let startup_ms = starting.elapsed().as_secs_f64() * 1e3;
        {
            let mut state = inner.state.lock();
            for command in &process.commands {
                if state.commands.len() < MAX_COMMAND_LABELS {
                    state.commands.insert(command.clone());
                }
            }
            let slot = &mut state.slots[index];
            slot.worker = Some(SlotWorker {
                id: id.clone(),
                pid: process.pid,
                started: process.started,
                served: 0,
            });
            slot.last_error = None;
        }
        tracing::info!(target: "lookout::pool", pool, worker = %id, pid = process.pid, startup_ms, "worker started");
        inner.publish(
            Event::new("worker.started")
                .field("pool", pool)
                .field("worker", id.as_str())
                .field("pid", i64::from(process.pid))
                .field("startup_ms", startup_ms),
        );
        if let Some(done) = first_start.take() {
            let _ = done.send(());
        }
        inner.set_slot(index, WorkerState::Available);

        let end = serve(&inner, index, &mut process, &mut rx, &mut stop).await;
        let (pid, served, uptime) = (
            process.pid,
            process.served as i64,
            process.started.elapsed().as_secs_f64(),
        );
        let lifecycle = |kind: &str| {
            Event::new(kind)
                .field("pool", pool)
                .field("worker", id.as_str())
                .field("pid", i64::from(pid))
                .field("uptime_s", uptime)
                .field("requests_served", served)
        };
        match end {
            End::Retire => {
                inner.set_slot(index, WorkerState::Stopping);
                let how = process.stop(config.stop_grace()).await;
                tracing::info!(target: "lookout::pool", pool, worker = %id, %how, "worker stopped: the pool shrank");
                inner.publish(
                    lifecycle("worker.stopped")
                        .field("exit", how)
                        .field("reason", "pool resized"),
                );
                inner.worker_exit("stopped");
                break;
            }
            End::Stop => {
                inner.set_slot(index, WorkerState::Stopping);
                fail_pending(&inner, &mut rx);
                let how = process.stop(config.stop_grace()).await;
                tracing::info!(target: "lookout::pool", pool, worker = %id, %how, "worker stopped");
                inner.publish(lifecycle("worker.stopped").field("exit", how));
                inner.worker_exit("stopped");
                break;
            }
            End::Recycle(reason) => {
                inner.set_slot(index, WorkerState::Stopping);
                let how = process.stop(config.stop_grace()).await;
                tracing::info!(target: "lookout::pool", pool, worker = %id, reason, %how, "worker recycled");
                inner.publish(
                    lifecycle("worker.recycled")
                        .field("reason", reason)
                        .field("exit", how),
                );
                inner.worker_exit(&format!("recycled_{reason}"));
            }
            End::Crashed(how) => {
                // Let the stderr reader catch up with the last lines before reporting them.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let tail = process.tail().join("\n");
                let sessions = inner
                    .state
                    .lock()
                    .sessions
                    .values()
                    .filter(|s| s.worker == id)
                    .count();
                let clean = inner.clean(&how);
                tracing::error!(target: "lookout::pool", pool, worker = %id, pid, how = %clean, "worker crashed");
                inner.publish(
                    lifecycle("worker.crashed")
                        .severity(Severity::Error)
                        .field("reason", how.as_str())
                        .field("stderr_tail", tail)
                        .field("sessions_pinned", sessions as i64),
                );
                inner.worker_exit("crashed");
                let mut state = inner.state.lock();
                state.slots[index].last_error = Some(how);
            }
        }
        let mut state = inner.state.lock();
        state.slots[index].worker = None;
        inner.refresh_gauges(&state);
    }
    let mut state = inner.state.lock();
    state.slots[index].state = WorkerState::Down;
    state.slots[index].worker = None;
    inner.refresh_gauges(&state);
}

/// Requests already handed to a slot whose worker is gone fail at once (they never ran).
fn fail_pending(inner: &Inner, rx: &mut mpsc::Receiver<Assignment>) {
    while let Ok(assignment) = rx.try_recv() {
        if let Assignment::Run(job, _) = assignment {
            let error = inner.error(
                &job.request,
                ErrorKind::Unavailable,
                "its worker went away before it ran".into(),
                None,
                job.enqueued,
            );
            let _ = job.reply.send(Err(error));
        }
    }
}

/// Serves one worker's assignments until it must end.
async fn serve(
    inner: &Arc<Inner>,
    index: usize,
    process: &mut Process,
    rx: &mut mpsc::Receiver<Assignment>,
    stop: &mut watch::Receiver<bool>,
) -> End {
    let config = inner.config();
    let max_age = (config.max_age_s > 0).then(|| {
        tokio::time::Instant::from_std(process.started) + Duration::from_secs(config.max_age_s)
    });
    loop {
        let assignment = tokio::select! {
            biased;
            _ = stop.changed() => return End::Stop,
            how = process.exit() => return End::Crashed(format!("exited while idle: {how}")),
            _ = async {
                match max_age {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => return End::Recycle("max_age"),
            assignment = rx.recv() => assignment,
        };
        let (job, remaining) = match assignment {
            None => return End::Stop,
            Some(Assignment::Recycle(reason)) => return End::Recycle(reason),
            Some(Assignment::Retire) => return End::Retire,
            Some(Assignment::EndSession(session)) => {
                process.end_session(&session).await;
                continue;
            }
            Some(Assignment::Run(job, remaining)) => (job, remaining),
        };
        if let Some(end) = run_job(inner, index, process, job, remaining).await {
            return end;
        }
        let recycle = if config.max_requests > 0 && process.served >= config.max_requests {
            Some("max_requests")
        } else if config.max_memory_mib > 0
            && process
                .memory_bytes()
                .is_some_and(|b| b > config.max_memory_mib << 20)
        {
            Some("memory")
        } else {
            None
        };
        if let Some(reason) = recycle {
            return End::Recycle(reason);
        }
        inner.set_slot(index, WorkerState::Available);
    }
}

/// Runs one request, answers its caller and publishes its events. `Some` when the worker
/// cannot go on.
async fn run_job(
    inner: &Arc<Inner>,
    index: usize,
    process: &mut Process,
    job: Job,
    remaining: Duration,
) -> Option<End> {
    let config = inner.config();
    let pool = config.name.as_str();
    let request = &job.request;
    let cid = request.correlation_id.as_str();
    let queue_wait = job.enqueued.elapsed();
    let queue_wait_ms = queue_wait.as_secs_f64() * 1e3;
    inner
        .metrics
        .queue_wait
        .with_label_values(&[pool])
        .observe(queue_wait.as_secs_f64());
    let mut started = Event::new("request.started")
        .correlation_id(cid)
        .field("pool", pool)
        .field("command", request.command.as_str())
        .field("worker", process.id.as_str())
        .field("queue_wait_ms", queue_wait_ms);
    if let Some(session) = &request.session_id {
        started = started.field("session_id", session.as_str());
    }
    inner.publish(started);
    tracing::info!(target: "lookout::pool", pool, worker = %process.id, command = %request.command, correlation_id = cid, "request started");

    let began = Instant::now();
    let deadline = tokio::time::Instant::now() + remaining;
    let ran = process
        .run(
            cid,
            &request.command,
            &request.args,
            request.session_id.as_deref(),
            deadline,
        )
        .await;
    let duration = began.elapsed();
    let duration_ms = duration.as_secs_f64() * 1e3;
    let error = |kind: ErrorKind, message: String| ExecError {
        kind,
        worker_kind: None,
        message,
        traceback: None,
        pool: pool.to_string(),
        command: request.command.clone(),
        worker: Some(process.id.clone()),
        session_id: request.session_id.clone(),
        duration_ms,
        queue_wait_ms,
        stderr_tail: Vec::new(),
    };
    let (outcome, end) = match ran {
        Ran::Replied(reply) if reply.ok => {
            process.served += 1;
            (
                Ok(Executed {
                    result: reply.result,
                    worker: process.id.clone(),
                    duration_ms,
                    queue_wait_ms,
                }),
                None,
            )
        }
        Ran::Replied(reply) => {
            process.served += 1;
            let e = reply.error.unwrap_or(crate::protocol::ReplyError {
                kind: None,
                message: None,
                traceback: None,
            });
            let mut err = error(
                ErrorKind::Worker,
                e.message
                    .unwrap_or_else(|| "the worker reported a failure".into()),
            );
            err.worker_kind = e.kind;
            err.traceback = e.traceback;
            (Err(err), None)
        }
        Ran::Crashed(how) => {
            let mut err = error(
                ErrorKind::WorkerCrashed,
                format!(
                    "worker {} (pid {}) died running `{}`: {how}",
                    process.id, process.pid, request.command
                ),
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            err.stderr_tail = process.tail();
            (Err(err), Some(End::Crashed(how)))
        }
        Ran::Protocol(what) => {
            let mut err = error(
                ErrorKind::ProtocolError,
                format!(
                    "worker {} broke the protocol: {what}; it was replaced",
                    process.id
                ),
            );
            err.stderr_tail = process.tail();
            (
                Err(err),
                Some(End::Crashed(format!("broke the protocol: {what}"))),
            )
        }
        Ran::TimedOut => {
            let err = error(
                ErrorKind::Timeout,
                format!(
                    "no reply within {} ms; worker {} was killed and is being replaced",
                    remaining.as_millis(),
                    process.id
                ),
            );
            (
                Err(err),
                Some(End::Crashed(format!(
                    "hung past the request deadline ({} ms); killed",
                    remaining.as_millis()
                ))),
            )
        }
    };
    {
        let mut state = inner.state.lock();
        let slot = &mut state.slots[index];
        if let Some(w) = slot.worker.as_mut() {
            w.served = process.served;
        }
        // A worker that cannot go on is not live from now on, before its caller hears back:
        // nobody should see it as busy (or count it healthy) while it is being replaced.
        // (`starting`, not `down`: requests keep queueing for the replacement.)
        if end.is_some() {
            slot.state = WorkerState::Starting;
            inner.refresh_gauges(&state);
        }
    }
    let status = match &outcome {
        Ok(_) => "ok",
        Err(e) => match e.kind {
            ErrorKind::Worker => "error",
            ErrorKind::WorkerCrashed => "crashed",
            ErrorKind::ProtocolError => "protocol_error",
            _ => "timeout",
        },
    };
    let label = inner.command_label(&request.command);
    inner
        .metrics
        .requests
        .with_label_values(&[pool, label, status])
        .inc();
    inner
        .metrics
        .duration
        .with_label_values(&[pool, label])
        .observe(duration.as_secs_f64());
    inner.publish(completed_event(
        pool,
        request,
        &outcome,
        &process.id,
        duration_ms,
        queue_wait_ms,
    ));
    match &outcome {
        Ok(_) => {
            tracing::info!(target: "lookout::pool", pool, worker = %process.id, command = %request.command, correlation_id = cid, duration_ms, "request completed")
        }
        Err(e) => {
            // Everything a worker said, and the arguments, through the sanitizer first.
            let clean = CleanFailure::of(&inner.bus, e, &request.args);
            let args = serde_json::Value::Object(clean.args).to_string();
            let worker_error_kind = e.worker_kind.as_deref().unwrap_or_default();
            tracing::error!(
                target: "lookout::pool",
                pool,
                worker = %process.id,
                command = %request.command,
                session_id = request.session_id.as_deref().unwrap_or_default(),
                correlation_id = cid,
                duration_ms,
                queue_wait_ms,
                error_kind = e.kind.as_str(),
                worker_error_kind,
                error_message = %clean.message,
                traceback = clean.traceback.as_deref().unwrap_or_default(),
                stderr_tail = clean.stderr_tail.as_deref().unwrap_or_default(),
                args = %args,
                "request failed"
            )
        }
    }
    let _ = job.reply.send(outcome);
    end
}

/// `request.completed`; a failed request carries its whole context, its arguments as
/// `args.<key>` fields (the sanitizer cleans them like any other field).
fn completed_event(
    pool: &str,
    request: &ExecRequest,
    outcome: &Result<Executed, ExecError>,
    worker: &str,
    duration_ms: f64,
    queue_wait_ms: f64,
) -> Event {
    let mut event = Event::new("request.completed")
        .correlation_id(request.correlation_id.as_str())
        .field("pool", pool)
        .field("command", request.command.as_str())
        .field("worker", worker)
        .field("duration_ms", duration_ms)
        .field("queue_wait_ms", queue_wait_ms)
        .field("success", outcome.is_ok());
    if let Some(session) = &request.session_id {
        event = event.field("session_id", session.as_str());
    }
    if let Err(e) = outcome {
        event = event
            .severity(Severity::Error)
            .field(
                "error_kind",
                e.worker_kind.as_deref().unwrap_or(e.kind.as_str()),
            )
            .field("error_class", e.kind.as_str())
            .field("error_message", e.message.as_str());
        if let Some(tb) = &e.traceback {
            event = event.field("traceback", tb.as_str());
        }
        if !e.stderr_tail.is_empty() {
            event = event.field("stderr_tail", e.stderr_tail.join("\n"));
        }
        for (key, value) in args_fields(&request.args) {
            event = event.field(key, value);
        }
    }
    event
}

/// A failed request's words as they may leave the host (an HTTP answer, a log line): its
/// message, traceback, stderr tail and arguments, through the bus's sanitizer in one call.
#[derive(Clone, Debug, Serialize)]
pub struct CleanFailure {
    pub message: String,
    pub traceback: Option<String>,
    pub stderr_tail: Option<String>,
    /// The arguments by top-level key (`""` for arguments that are not an object).
    pub args: serde_json::Map<String, serde_json::Value>,
}

impl CleanFailure {
    pub fn of(bus: &Bus, error: &ExecError, args: &serde_json::Value) -> CleanFailure {
        let mut event = Event::new("request.failure")
            .field("message", error.message.as_str())
            .field("stderr_tail", error.stderr_tail.join("\n"));
        if let Some(tb) = &error.traceback {
            event = event.field("traceback", tb.as_str());
        }
        for (key, value) in args_fields(args) {
            event = event.field(key, value);
        }
        let clean = bus
            .sanitize_copy(vec![event])
            .pop()
            .unwrap_or_else(|| Event::new("request.failure"));
        let text = |key: &str| match clean.get(key) {
            Some(FieldValue::Str(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        };
        let mut clean_args = serde_json::Map::new();
        for field in &clean.fields {
            let value = serde_json::to_value(&field.value).unwrap_or_default();
            if let Some(key) = field.key.strip_prefix("args.") {
                clean_args.insert(key.to_string(), value);
            } else if field.key == "args" {
                clean_args.insert(String::new(), value);
            }
        }
        CleanFailure {
            message: text("message").unwrap_or_default(),
            traceback: text("traceback"),
            stderr_tail: text("stderr_tail"),
            args: clean_args,
        }
    }
}

/// A request's arguments as event fields: `args.<key>` for each top-level key (nested values
/// as JSON text), or `args` for a non-object.
pub fn args_fields(args: &serde_json::Value) -> Vec<(String, FieldValue)> {
    let value = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => FieldValue::Str(s.clone()),
        serde_json::Value::Bool(b) => FieldValue::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => FieldValue::Int(i),
            None => FieldValue::Float(n.as_f64().unwrap_or_default()),
        },
        other => FieldValue::Str(other.to_string()),
    };
    match args {
        serde_json::Value::Null => Vec::new(),
        serde_json::Value::Object(map) => map
            .iter()
            .take(64)
            .map(|(k, v)| (format!("args.{k}"), value(v)))
            .collect(),
        other => vec![("args".to_string(), value(other))],
    }
}

/// Expires sessions past their TTL, tells their workers, and reports each sweep that
/// expired something.
async fn sweep_sessions(inner: Arc<Inner>) {
    let config = inner.config();
    let ttl = Duration::from_secs(config.session_ttl_s);
    let mut stop = inner.stop.subscribe();
    let mut tick = tokio::time::interval(Duration::from_millis(config.session_sweep_ms));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let began = Instant::now();
        let mut state = inner.state.lock();
        let expired: Vec<String> = state
            .sessions
            .iter()
            .filter(|(_, s)| s.last_used.elapsed() >= ttl)
            .map(|(id, _)| id.clone())
            .collect();
        if expired.is_empty() {
            continue;
        }
        for id in &expired {
            let Some(session) = state.sessions.remove(id) else {
                continue;
            };
            inner.publish(
                Event::new("session.expired")
                    .field("pool", config.name.as_str())
                    .field("session_id", id.as_str())
                    .field("ttl_s", config.session_ttl_s as i64)
                    .field("worker", session.worker.as_str())
                    .field("requests", session.requests as i64)
                    .field("age_s", session.created.elapsed().as_secs_f64()),
            );
            if let Some(slot) = state
                .slots
                .iter()
                .find(|s| s.worker.as_ref().is_some_and(|w| w.id == session.worker))
            {
                let _ = slot.tx.try_send(Assignment::EndSession(id.clone()));
            }
        }
        let remaining = state.sessions.len();
        inner.refresh_gauges(&state);
        drop(state);
        inner.publish(
            Event::new("session.cleanup")
                .field("pool", config.name.as_str())
                .field("expired", expired.len() as i64)
                .field("remaining", remaining as i64)
                .field("sweep_ms", began.elapsed().as_secs_f64() * 1e3),
        );
    }
}
