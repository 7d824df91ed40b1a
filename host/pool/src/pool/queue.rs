//! A request's way in, on the caller's side: refused (stopping, no worker, queue full),
//! queued with its deadline, or timed out waiting. The scheduler hands it on; a slot runs it.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::Pool;
use super::request::{ErrorKind, ExecError, ExecRequest, Executed};
use super::snapshot::WorkerState;
use super::state::Job;

impl Pool {
    /// Runs a request on a worker: the one its session is pinned to, or any available one,
    /// waiting in the queue if none is.
    pub async fn execute(&self, request: ExecRequest) -> Result<Executed, ExecError> {
        let began = Instant::now();
        let outcome = self.execute_inner(request).await;
        self.inner.record(began, outcome.is_ok());
        outcome
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
}
