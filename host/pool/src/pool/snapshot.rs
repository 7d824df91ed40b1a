//! A pool as the API shows it: worker states, each slot's worker, and the pool's status.
//! Read-only views built under the state lock; nothing here changes the pool.

use std::sync::atomic::Ordering;

use serde::Serialize;

use super::Pool;

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

/// A pool's status as the API shows it (`status` in a [`PoolSnapshot`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolStatus {
    /// Every slot has a live worker.
    Ok,
    /// Some slots have no live worker.
    Degraded,
    /// No slot has a live worker.
    Unavailable,
    /// The pool is stopping.
    Stopping,
}

/// A pool as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct PoolSnapshot {
    pub name: String,
    pub status: PoolStatus,
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

impl Pool {
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
            PoolStatus::Stopping
        } else if live == 0 {
            PoolStatus::Unavailable
        } else if live < workers.len() {
            PoolStatus::Degraded
        } else {
            PoolStatus::Ok
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
}
