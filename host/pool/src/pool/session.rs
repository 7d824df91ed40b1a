//! Sessions: a session id pinned to one worker, opened on request or on first use (the
//! scheduler re-pins one whose worker is gone), and expired past its TTL by a sweeper task
//! that tells the worker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lookout_core::Event;
use serde::Serialize;

use super::Pool;
use super::request::{ErrorKind, ExecError, ExecRequest};
use super::snapshot::WorkerState;
use super::state::{Assignment, Inner, Session, State};

/// A session as opening it answers.
#[derive(Clone, Debug, Serialize)]
pub struct SessionInfo {
    pub session_id: String,
    pub worker: String,
    pub ttl_s: u64,
    /// False when the session already existed.
    pub created: bool,
}

impl Pool {
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
            trace: crate::trace::Trace::new_root(),
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
}

impl Inner {
    /// A new session pinned to `worker`, announced by `session.created`.
    pub(super) fn create_session(
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
}

/// Expires sessions past their TTL, tells their workers, and reports each sweep that
/// expired something.
pub(super) async fn sweep_sessions(inner: Arc<Inner>) {
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
