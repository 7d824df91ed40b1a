//! The state a pool's tasks share: the slots, the queue, the sessions, all behind one mutex
//! held only for bookkeeping (never across an await), and the small helpers every part of
//! the pool uses on it (gauges, error context, sanitized log text).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use lookout_core::{Bus, Event, FieldValue};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};

use super::request::{ErrorKind, ExecError, ExecRequest, Executed};
use super::snapshot::WorkerState;
use crate::config::PoolConfig;
use crate::metrics::PoolMetrics;

pub(super) struct Job {
    pub(super) id: u64,
    pub(super) request: ExecRequest,
    pub(super) enqueued: Instant,
    pub(super) deadline: Instant,
    pub(super) reply: oneshot::Sender<Result<Executed, ExecError>>,
}

pub(super) enum Assignment {
    Run(Job, Duration),
    EndSession(String),
    /// Replace the worker once it is idle, for this reason (`manual`, `config_changed`).
    Recycle(&'static str),
    /// The pool shrank: stop this worker gracefully and leave the slot empty.
    Retire,
}

pub(super) struct Slot {
    /// Removed by a smaller `size`: no worker, not shown, not counted.
    pub(super) retired: bool,
    pub(super) state: WorkerState,
    pub(super) worker: Option<SlotWorker>,
    pub(super) tx: mpsc::Sender<Assignment>,
    pub(super) last_error: Option<String>,
}

#[derive(Clone)]
pub(super) struct SlotWorker {
    pub(super) id: String,
    pub(super) pid: u32,
    pub(super) started: Instant,
    pub(super) served: u64,
}

/// One request as a caller saw it (the health windows read these).
#[derive(Clone, Copy)]
pub(super) struct Outcome {
    pub(super) at: Instant,
    pub(super) seconds: f32,
    pub(super) ok: bool,
}

/// A pinned session: which worker holds it and how it has been used.
pub(super) struct Session {
    pub(super) worker: String,
    pub(super) created: Instant,
    pub(super) last_used: Instant,
    pub(super) requests: u64,
}

pub(super) struct State {
    pub(super) slots: Vec<Slot>,
    pub(super) queue: VecDeque<Job>,
    pub(super) sessions: HashMap<String, Session>,
    pub(super) saturated_since: Option<Instant>,
    pub(super) stopping: bool,
    pub(super) commands: HashSet<String>,
}

pub(super) struct Inner {
    /// The pool's name (fixed: a renamed pool is another pool).
    pub(super) name: String,
    pub(super) config: ArcSwap<PoolConfig>,
    pub(super) bus: Bus,
    pub(super) metrics: PoolMetrics,
    pub(super) state: Mutex<State>,
    pub(super) started: Instant,
    pub(super) stop: watch::Sender<bool>,
    pub(super) next_worker: AtomicU64,
    pub(super) next_job: AtomicU64,
    pub(super) tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Where slot tasks run (a resize may come from a thread outside the runtime).
    pub(super) runtime: tokio::runtime::Handle,
    /// Recent request outcomes, for health windows.
    pub(super) recent: Mutex<VecDeque<Outcome>>,
    /// Requests answered, and of those failed, since the pool started.
    pub(super) answered: AtomicU64,
    pub(super) failed: AtomicU64,
}

impl Inner {
    pub(super) fn config(&self) -> Arc<PoolConfig> {
        self.config.load_full()
    }

    pub(super) fn publish(&self, event: Event) {
        self.bus.publish(event);
    }

    /// `text` as the sanitizer leaves it: for log lines that quote what a worker said.
    pub(super) fn clean(&self, text: &str) -> String {
        let event = Event::new("pool.log").field("text", text);
        match self.bus.sanitize_copy(vec![event]).pop() {
            Some(e) => match e.get("text") {
                Some(FieldValue::Str(s)) => s.clone(),
                _ => String::new(),
            },
            None => String::new(),
        }
    }

    pub(super) fn error(
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
    pub(super) fn command_label<'a>(&self, command: &'a str) -> &'a str {
        let state = self.state.lock();
        if state.commands.contains(command) {
            command
        } else {
            "other"
        }
    }

    pub(super) fn set_slot(&self, index: usize, state: WorkerState) {
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

    pub(super) fn refresh_gauges(&self, state: &State) {
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

    pub(super) fn worker_exit(&self, reason: &str) {
        self.metrics
            .worker_exits
            .with_label_values(&[&self.config().name, reason])
            .inc();
    }
}
