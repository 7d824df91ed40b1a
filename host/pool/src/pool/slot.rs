//! A slot's life: one task per slot starts its worker, serves its assignments, and replaces
//! it when it crashes, is recycled or the pool shrinks, until the pool stops. The task owns
//! the worker process; the shared state only records what the slot is doing.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use lookout_core::{Event, Severity};
use tokio::sync::{mpsc, oneshot, watch};

use super::job::{End, run_job};
use super::request::ErrorKind;
use super::snapshot::WorkerState;
use super::state::{Assignment, Inner, SlotWorker};
use crate::process::{Process, StartError};

/// Most distinct `command` label values per pool; the rest are `other`.
const MAX_COMMAND_LABELS: usize = 64;

/// One slot: starts a worker, serves its assignments, replaces it when it ends, until the
/// pool stops.
pub(super) async fn run_slot(
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
        let process = Process::start(&config, id.clone(), &inner.bus, &inner.metrics).await;
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
            End::Hung {
                correlation_id,
                silent_ms,
            } => {
                let how = format!("silent for {silent_ms:.0} ms while busy; killed");
                tracing::error!(target: "lookout::pool", pool, worker = %id, pid, correlation_id, silent_ms, "worker hung");
                inner.publish(
                    lifecycle("worker.hung")
                        .severity(Severity::Error)
                        .correlation_id(correlation_id.as_str())
                        .field("silent_ms", silent_ms)
                        .field("heartbeat_timeout_ms", config.heartbeat_timeout_ms as i64),
                );
                inner.worker_exit("hung");
                let mut state = inner.state.lock();
                state.slots[index].last_error = Some(how);
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
            how = process.idle() => return End::Crashed(how),
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
