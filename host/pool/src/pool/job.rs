//! One request on one worker: the call with its deadline, its outcome as a reply or an
//! [`ExecError`], and what it leaves behind (metrics, `request.started`/`request.completed`,
//! the sanitized failure log line). Whether the worker can go on is the slot's to act on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lookout_core::Event;

use super::events::completed_event;
use super::failure::CleanFailure;
use super::request::{ErrorKind, ExecError, Executed};
use super::snapshot::WorkerState;
use super::state::{Inner, Job};
use crate::process::{Process, Ran};

/// How a worker's life ended (a job that leaves the worker unusable ends it).
pub(super) enum End {
    Stop,
    Retire,
    Recycle(&'static str),
    Crashed(String),
}

/// Runs one request, answers its caller and publishes its events. `Some` when the worker
/// cannot go on.
pub(super) async fn run_job(
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
