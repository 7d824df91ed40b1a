//! One request on one worker: the call with its deadline, its outcome as a reply or an
//! [`ExecError`], and what it leaves behind (metrics, `request.started`/`request.completed`,
//! the sanitized failure log line). Whether the worker can go on is the slot's to act on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lookout_core::{Event, Severity, now_ns};

use super::events::completed_event;
use super::failure::CleanFailure;
use super::request::{ErrorKind, ExecError, Executed};
use super::snapshot::WorkerState;
use super::state::{Inner, Job};
use crate::process::{Process, Ran, RunTrace};
use crate::telemetry::{SpanFields, span_event};
use crate::trace::{hex, new_span_id};

/// How a worker's life ended (a job that leaves the worker unusable ends it).
pub(super) enum End {
    Stop,
    Retire,
    Recycle(&'static str),
    Crashed(String),
    /// Silent past the heartbeat timeout while running this request; killed.
    Hung {
        correlation_id: String,
        silent_ms: f64,
    },
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
    let trace = &request.trace;
    let trace_id = hex(&trace.trace_id);
    let execute_span = new_span_id();
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
        .field("queue_wait_ms", queue_wait_ms)
        .field("trace_id", trace_id.as_str());
    if let Some(session) = &request.session_id {
        started = started.field("session_id", session.as_str());
    }
    inner.publish(started);
    tracing::info!(target: "lookout::pool", pool, worker = %process.id, command = %request.command, correlation_id = cid, trace_id = %trace_id, "request started");

    let began = Instant::now();
    let deadline = tokio::time::Instant::now() + remaining;
    let ran = process
        .run(
            &config,
            cid,
            &request.command,
            &request.args,
            request.session_id.as_deref(),
            &RunTrace {
                trace_id: trace.trace_id,
                execute_span,
                sampled: trace.sampled,
            },
            deadline,
        )
        .await;
    let duration = began.elapsed();
    let total = job.enqueued.elapsed();
    let ended_ns = now_ns();
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
        Ran::Hung(silent) => {
            let silent_ms = silent.as_secs_f64() * 1e3;
            let mut err = error(
                ErrorKind::Hung,
                format!(
                    "worker {} wrote nothing for {silent_ms:.0} ms (heartbeat_timeout_ms = {}); it was killed and is being replaced",
                    process.id, config.heartbeat_timeout_ms
                ),
            );
            err.stderr_tail = process.tail();
            (
                Err(err),
                Some(End::Hung {
                    correlation_id: cid.to_string(),
                    silent_ms,
                }),
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
            ErrorKind::Hung => "hung",
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
    let mut completed = completed_event(
        pool,
        request,
        &outcome,
        &process.id,
        duration_ms,
        queue_wait_ms,
    )
    .field("trace_id", trace_id.as_str());
    if process.telemetry.in_request > 0 {
        completed = completed.field("telemetry_dropped", process.telemetry.in_request as i64);
    }
    inner.publish(completed);
    publish_spans(
        inner,
        &job,
        &process.id,
        status,
        &outcome,
        HostTimes {
            execute_span,
            ended_ns,
            total,
            execute: duration,
        },
    );
    match &outcome {
        Ok(_) => {
            tracing::info!(target: "lookout::pool", pool, worker = %process.id, command = %request.command, correlation_id = cid, trace_id = %trace_id, duration_ms, "request completed")
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
                trace_id = %trace_id,
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

/// When the host's spans of a request were.
struct HostTimes {
    execute_span: [u8; 8],
    ended_ns: u64,
    /// Enqueue to reply.
    total: Duration,
    /// Dispatch to reply.
    execute: Duration,
}

/// The host's spans of one request, as `trace.span` events: `request <command>` (enqueue to
/// reply; its parent is the caller's span, when it sent a `traceparent`), and beneath it
/// `queue_wait` (enqueue to dispatch) and `execute` (dispatch to reply, the parent of the
/// worker's spans).
fn publish_spans(
    inner: &Inner,
    job: &Job,
    worker: &str,
    status: &str,
    outcome: &Result<Executed, ExecError>,
    t: HostTimes,
) {
    let request = &job.request;
    // What the bus would sample out is not even built: the same decision, made here (all of
    // a request's spans share its fate, errors aside).
    let severity = if outcome.is_err() {
        Severity::Error
    } else {
        Severity::Info
    };
    let bus = inner.bus.config();
    if !bus.enabled
        || !bus
            .sampling
            .keeps("trace.span", severity, &request.correlation_id)
    {
        return;
    }
    let trace = &request.trace;
    let pool = inner.name.as_str();
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let start = t.ended_ns.saturating_sub(nanos(t.total));
    let dispatched = t.ended_ns.saturating_sub(nanos(t.execute));
    // The span's status message: the error's class and message (sanitized on the bus, as
    // every span is).
    let error = outcome
        .as_ref()
        .err()
        .map(|e| format!("{}: {}", e.kind.as_str(), e.message));
    let error = error.as_deref();
    let name = format!("request {}", request.command);
    let queue_span = new_span_id();
    let span = |span_id, parent, name, start_unix_nano, end_unix_nano, error| SpanFields {
        correlation_id: &request.correlation_id,
        trace_id: &trace.trace_id,
        span_id,
        parent,
        name,
        start_unix_nano,
        end_unix_nano,
        error,
    };
    let spans = [
        span(
            &trace.span_id,
            trace.parent_span_id.as_ref(),
            &name,
            start,
            t.ended_ns,
            error,
        ),
        span(
            &queue_span,
            Some(&trace.span_id),
            "queue_wait",
            start,
            dispatched,
            None,
        ),
        span(
            &t.execute_span,
            Some(&trace.span_id),
            "execute",
            dispatched,
            t.ended_ns,
            error,
        ),
    ];
    for (i, fields) in spans.into_iter().enumerate() {
        let mut event = span_event(fields)
            .field("origin", "host")
            .field("pool", pool)
            .field("worker", worker)
            .field("command", request.command.as_str());
        if i == 0 {
            event = event
                .field("span_kind", "server")
                .field("attr.pool", pool)
                .field("attr.command", request.command.as_str())
                .field("attr.worker", worker)
                .field("attr.status", status)
                .field("attr.correlation_id", request.correlation_id.as_str());
            if let Some(session) = &request.session_id {
                event = event.field("attr.session_id", session.as_str());
            }
        }
        inner.publish(event);
    }
}
