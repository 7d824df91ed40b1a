//! A pool: worker slots, a bounded queue, sessions pinned to workers, and the lifecycle
//! events of all of it. One task per slot owns its worker process; the scheduling state is
//! one mutex-guarded struct, held only for bookkeeping (never across an await).
//!
//! This file holds the [`Pool`] handle and its lifecycle (start, reconfigure, recycle, stop);
//! each other concern has its own file:
//!
//! | file | what |
//! |---|---|
//! | `request.rs` | the request, the reply, the failure and its [`ErrorKind`] |
//! | `snapshot.rs` | [`WorkerState`], [`PoolStatus`] and the snapshots the API shows |
//! | `state.rs` | the state the pool's tasks share, and the helpers on it |
//! | `queue.rs` | a request refused, queued with its deadline, or timed out waiting |
//! | `scheduler.rs` | which waiting request runs on which worker; saturation |
//! | `slot.rs` | a slot's life: start, serve, replace its worker |
//! | `job.rs` | one request on one worker: outcome, metrics, events |
//! | `session.rs` | sessions: open, pin, expire (the scheduler re-pins) |
//! | `window.rs` | recent outcomes and the health windows over them |
//! | `events.rs` | `pool.started`, `request.completed`, arguments as fields |
//! | `failure.rs` | a failed request's words through the sanitizer |

mod events;
mod failure;
mod job;
mod queue;
mod request;
mod scheduler;
mod session;
mod slot;
mod snapshot;
mod state;
mod window;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use arc_swap::ArcSwap;
use lookout_core::{Bus, Event};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};

pub use events::args_fields;
pub(crate) use events::field_value;
pub use failure::CleanFailure;
pub use request::{ErrorKind, ExecError, ExecRequest, Executed};
pub use session::SessionInfo;
pub use snapshot::{PoolSnapshot, PoolStatus, WorkerSnapshot, WorkerState};
pub use window::{MAX_WINDOW, WindowStats};

use self::session::sweep_sessions;
use self::slot::run_slot;
use self::state::{Assignment, Inner, Slot, State};
use crate::config::PoolConfig;
use crate::error::{Error, Result};
use crate::metrics::PoolMetrics;

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
    pub fn start(config: PoolConfig, bus: Bus, metrics: PoolMetrics) -> Result<Pool> {
        Error::check(&config)?;
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

    /// Applies a new configuration of this pool. Workers started from now on use it (recycle
    /// them to apply it to all at once); timeouts, limits, recycling, session and health
    /// settings apply at once. A new `size` starts workers, or stops the highest slots'
    /// workers gracefully (each after its current request). Publishes `pool.reconfigured`.
    pub fn reconfigure(&self, new: PoolConfig) -> Result<()> {
        let inner = &self.inner;
        if new.name != inner.name {
            return Err(Error::Renamed {
                name: new.name,
                running: inner.name.clone(),
            });
        }
        Error::check(&new)?;
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
