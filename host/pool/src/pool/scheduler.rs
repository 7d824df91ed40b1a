//! The scheduler: which waiting request runs on which worker. It matches the queue to
//! available slots (a session's request only to its pinned worker while that lives), hands
//! each job to its slot, and reports saturation. Called with the state locked; never awaits.

use std::time::Instant;

use lookout_core::{Event, Severity};
use tokio::sync::mpsc;

use super::request::ErrorKind;
use super::snapshot::WorkerState;
use super::state::{Assignment, Inner, Job, State};

impl Inner {
    /// Hands waiting requests to available workers. Called with the state locked whenever
    /// a request arrives or a worker becomes available.
    pub(super) fn dispatch(&self, state: &mut State) {
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
