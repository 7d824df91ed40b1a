//! The event bus: a non-blocking `publish`, one pipeline thread that drains the ingress
//! queue in batches (sample → rate-limit → sanitize → fan-out), and one task per consumer
//! with its own bounded queue.
//!
//! It must never block a publisher and never lose an event unaccounted: every event ends
//! in one outcome of [`crate::metrics`]. It must never hand a consumer an event that did not
//! pass the sanitizer.

use std::collections::HashMap;
use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use parking_lot::Mutex;
use prometheus::Registry;
use tokio::sync::{mpsc as tmpsc, oneshot};

use crate::Invalid;
use crate::config::{BusConfig, lookup};
use crate::error::{Error, Result};
use crate::event::{Event, Severity, now_ns};
use crate::metrics::{BusMetrics, ConsumerCounters, KindCounters};
use crate::sanitize::{FailurePolicy, Sanitizer, redact_everything};

/// A sanitized batch, shared by every consumer without copying.
#[derive(Clone, Debug)]
pub struct Batch(Arc<Vec<Event>>);

impl Deref for Batch {
    type Target = [Event];
    fn deref(&self) -> &[Event] {
        &self.0
    }
}

/// Why a consumer did not take a batch.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// The batch could not be handled; counted `failed`, the consumer stays registered.
    #[error("{0}")]
    Failed(String),
    /// The consumer is gone for good (e.g. a client hung up); the batch and everything still
    /// queued for it are counted `dropped` and the consumer is unregistered.
    #[error("consumer closed")]
    Closed,
}

/// Something that receives sanitized events. Each consumer runs on its own task, one batch
/// at a time; a slow consumer only fills (and drops from) its own queue.
pub trait Consumer: Send + 'static {
    fn handle(&mut self, batch: Batch) -> impl Future<Output = Result<(), ConsumerError>> + Send;
}

/// What a bounded shutdown could not finish.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Events the pipeline had not reached when the grace ran out (no outcome).
    pub unprocessed: u64,
    /// Events consumers had been given and not handled (counted `dropped` for them).
    pub undelivered: u64,
}

/// Whether `publish` queued the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Published {
    Queued,
    /// The ingress queue was full or the bus shut down; counted `dropped`.
    Dropped,
    /// Events are turned off (`bus.enabled = false`): nothing was done or counted.
    Off,
}

struct ConsumerSlot {
    id: u64,
    /// The name its counters are kept under.
    name: Arc<str>,
    tx: tmpsc::Sender<Batch>,
    counters: ConsumerCounters,
    /// Events queued for this consumer and not yet handled.
    in_flight: Arc<AtomicU64>,
}

/// A consumer's task and what shutdown needs to count what it left.
type ConsumerTask = (
    tokio::task::JoinHandle<()>,
    Arc<AtomicU64>,
    ConsumerCounters,
);

struct Inner {
    ingress: SyncSender<Event>,
    next_id: AtomicU64,
    /// Events queued into ingress and events the pipeline has finished with.
    enqueued: AtomicU64,
    processed: AtomicU64,
    closed: AtomicBool,
    config: ArcSwap<BusConfig>,
    sanitizer: ArcSwap<Box<dyn Sanitizer>>,
    consumers: ArcSwap<Vec<Arc<ConsumerSlot>>>,
    consumers_edit: Mutex<()>,
    /// Every consumer's task (removed ones too, until shutdown), with what shutdown needs to
    /// count what it did not handle. Not the slot: its sender must go when the list drops it,
    /// or the task would wait for more for ever.
    consumer_tasks: Mutex<Vec<ConsumerTask>>,
    next_consumer: AtomicU64,
    metrics: BusMetrics,
    runtime: tokio::runtime::Handle,
    pipeline_done: Mutex<Option<oneshot::Receiver<()>>>,
}

/// A handle to the bus; clones share it.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").finish_non_exhaustive()
    }
}

/// The name of the live stream's bus consumers (one per SSE client).
pub const LIVE_STREAM_CONSUMER: &str = "live_stream";
/// The name of the consumer that keeps the dashboard's recent errors.
pub const RECENT_ERRORS_CONSUMER: &str = "recent_errors";
/// The name of the NATS sink's consumer.
pub const NATS_SINK_CONSUMER: &str = "nats_sink";
/// The name of the OTLP exporter's consumer.
pub const OTLP_CONSUMER: &str = "otlp";
/// Every name lookout's own consumers register under, whether or not they run now (a live
/// stream consumer exists only while a client is connected). Consumers' books and health
/// checks are kept by name, so a plugin may not take one of these.
pub const BUILT_IN_CONSUMERS: [&str; 4] = [
    LIVE_STREAM_CONSUMER,
    RECENT_ERRORS_CONSUMER,
    NATS_SINK_CONSUMER,
    OTLP_CONSUMER,
];

/// A registered consumer; dropping it leaves the consumer registered.
#[derive(Debug)]
pub struct ConsumerHandle {
    bus: Bus,
    id: u64,
}

impl ConsumerHandle {
    /// Stops sending new batches to the consumer; what is already queued is still handled.
    pub fn unregister(self) {
        self.bus.remove_consumer(self.id);
    }
}

impl Bus {
    /// Starts the pipeline thread. Must be called inside a tokio runtime: consumers run on it.
    pub fn start(
        config: BusConfig,
        registry: &Registry,
        sanitizer: Box<dyn Sanitizer>,
    ) -> Result<Bus> {
        config.validate()?;
        let (tx, rx) = mpsc::sync_channel(config.ingress_capacity);
        let (done_tx, done_rx) = oneshot::channel();
        let inner = Arc::new(Inner {
            ingress: tx,
            next_id: AtomicU64::new(1),
            enqueued: AtomicU64::new(0),
            processed: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            config: ArcSwap::from_pointee(config),
            sanitizer: ArcSwap::from_pointee(sanitizer),
            consumers: ArcSwap::from_pointee(Vec::new()),
            consumers_edit: Mutex::new(()),
            consumer_tasks: Mutex::new(Vec::new()),
            next_consumer: AtomicU64::new(1),
            metrics: BusMetrics::new(registry)?,
            runtime: tokio::runtime::Handle::current(),
            pipeline_done: Mutex::new(Some(done_rx)),
        });
        let pipeline = Pipeline {
            inner: inner.clone(),
            kinds: HashMap::new(),
            config: inner.config.load_full(),
        };
        std::thread::Builder::new()
            .name("lookout-bus".into())
            .spawn(move || {
                pipeline.run(rx);
                let _ = done_tx.send(());
            })
            .map_err(|e| {
                Error::Config(Invalid::new(
                    "bus",
                    format!("cannot start the pipeline thread: {e}"),
                ))
            })?;
        Ok(Bus { inner })
    }

    /// Queues an event without ever blocking; stamps its id and, if unset, its timestamp.
    pub fn publish(&self, mut event: Event) -> Published {
        if !self.inner.config.load().enabled {
            return Published::Off;
        }
        let counters = self.inner.metrics.kind(&event.kind);
        counters.published.inc();
        if self.inner.closed.load(Ordering::Acquire) {
            counters.dropped.inc();
            return Published::Dropped;
        }
        event.id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        if event.timestamp_ns == 0 {
            event.timestamp_ns = now_ns();
        }
        // Count before sending so the pipeline can never see `processed > enqueued`.
        self.inner.enqueued.fetch_add(1, Ordering::AcqRel);
        match self.inner.ingress.try_send(event) {
            Ok(()) => {
                self.inner.metrics.ingress_length.inc();
                Published::Queued
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.inner.enqueued.fetch_sub(1, Ordering::AcqRel);
                counters.dropped.inc();
                Published::Dropped
            }
        }
    }

    /// Registers a consumer under `name` (its metric label; several consumers may share one).
    pub fn register<C: Consumer>(&self, name: &str, mut consumer: C) -> Result<ConsumerHandle> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::BusClosed);
        }
        let capacity = self.inner.config.load().consumer_capacity;
        let (tx, mut rx) = tmpsc::channel::<Batch>(capacity);
        let id = self.inner.next_consumer.fetch_add(1, Ordering::Relaxed);
        let counters = self.inner.metrics.consumer(name);
        let in_flight = Arc::new(AtomicU64::new(0));
        let slot = Arc::new(ConsumerSlot {
            id,
            name: name.into(),
            tx,
            counters: counters.clone(),
            in_flight: in_flight.clone(),
        });
        {
            let _edit = self.inner.consumers_edit.lock();
            let mut list = Vec::clone(&self.inner.consumers.load());
            list.push(slot.clone());
            self.inner.consumers.store(Arc::new(list));
        }
        let bus = self.clone();
        let task = self.inner.runtime.spawn(async move {
            let mut gone = false;
            while let Some(batch) = rx.recv().await {
                let n = batch.len() as u64;
                if gone {
                    counters.dropped.inc_by(n);
                } else {
                    match consumer.handle(batch).await {
                        Ok(()) => counters.delivered.inc_by(n),
                        Err(ConsumerError::Failed(reason)) => {
                            tracing::warn!(target: "lookout::bus", consumer = id, %reason, "consumer failed a batch");
                            counters.failed.inc_by(n);
                        }
                        Err(ConsumerError::Closed) => {
                            counters.dropped.inc_by(n);
                            bus.remove_consumer(id);
                            gone = true;
                        }
                    }
                }
                in_flight.fetch_sub(n, Ordering::AcqRel);
                counters.queued.sub(n as i64);
            }
        });
        self.inner.consumer_tasks.lock().push((
            task,
            slot.in_flight.clone(),
            slot.counters.clone(),
        ));
        Ok(ConsumerHandle {
            bus: self.clone(),
            id,
        })
    }

    /// The names of the consumers registered now (a name appears once however many use it).
    pub fn consumer_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .inner
            .consumers
            .load()
            .iter()
            .map(|s| s.name.to_string())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    fn remove_consumer(&self, id: u64) {
        let _edit = self.inner.consumers_edit.lock();
        let list: Vec<_> = self
            .inner
            .consumers
            .load()
            .iter()
            .filter(|s| s.id != id)
            .cloned()
            .collect();
        self.inner.consumers.store(Arc::new(list));
    }

    /// Replaces the sanitizer; the next batch uses the new one, a batch in flight finishes on
    /// the old one.
    pub fn set_sanitizer(&self, sanitizer: Box<dyn Sanitizer>) {
        // Its failure counter exists from the start, at 0, so `rate()` and alerts see it.
        self.inner
            .metrics
            .sanitizer_failures
            .with_label_values(&[sanitizer.name()]);
        self.inner.sanitizer.store(Arc::new(sanitizer));
    }

    /// `events` through the current sanitizer, outside the pipeline and its accounting: for
    /// what leaves the host by another way than the bus (an error response's arguments, a log
    /// line). Fails closed: if the sanitizer fails, every field comes back redacted. Runs the
    /// sanitizer where a plugin may block (see [`blocking`](crate::blocking)).
    pub fn sanitize_copy(&self, mut events: Vec<Event>) -> Vec<Event> {
        let sanitizer = self.inner.sanitizer.load_full();
        let before = events.clone();
        crate::blocking(|| {
            if sanitizer.sanitize(&mut events).is_err() {
                events = before;
                crate::sanitize::redact_everything(&mut events);
            }
        });
        events
    }

    /// The current sanitizer's name.
    /// The bus's books, read from its own counters: per kind, per consumer, sanitizer
    /// failures and time in the pipeline.
    pub fn books(&self) -> crate::metrics::Books {
        self.inner.metrics.books()
    }

    pub fn sanitizer_name(&self) -> String {
        self.inner.sanitizer.load().name().to_string()
    }

    /// Applies a new config from the next batch on. The ingress capacity is fixed at start.
    pub fn set_config(&self, config: BusConfig) -> Result<()> {
        config.validate()?;
        let current = self.inner.config.load();
        if config.ingress_capacity != current.ingress_capacity {
            return Err(Error::Config(Invalid::new(
                "bus.ingress_capacity",
                "takes effect only at start; restart lookout to change it",
            )));
        }
        self.inner.config.store(Arc::new(config));
        Ok(())
    }

    pub fn config(&self) -> Arc<BusConfig> {
        self.inner.config.load_full()
    }

    /// Waits until every event queued so far has been through the pipeline and every
    /// consumer has handled what it was given, or `timeout` passes. True when drained.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let pipeline_idle = self.inner.processed.load(Ordering::Acquire)
                >= self.inner.enqueued.load(Ordering::Acquire);
            let consumers_idle = self
                .inner
                .consumers
                .load()
                .iter()
                .all(|s| s.in_flight.load(Ordering::Acquire) == 0);
            if pipeline_idle && consumers_idle {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Stops taking events, lets the pipeline drain what is queued, then lets every consumer
    /// handle what it was given. Events published after this are counted `dropped`.
    pub async fn shutdown(&self) {
        self.shutdown_within(Duration::from_secs(3600)).await;
    }

    /// [`shutdown`](Self::shutdown) within `grace`: consumers still busy when it runs out are
    /// stopped, and the events they had not handled are counted `dropped` for them.
    pub async fn shutdown_within(&self, grace: Duration) -> ShutdownReport {
        let deadline = tokio::time::Instant::now() + grace;
        self.inner.closed.store(true, Ordering::Release);
        let done = self.inner.pipeline_done.lock().take();
        if let Some(done) = done {
            let _ = tokio::time::timeout_at(deadline, done).await;
        }
        // Still in the ingress queue if the pipeline ran out of time (a sanitizer at its
        // deadline batch after batch): published, never given an outcome.
        let unprocessed = self
            .inner
            .enqueued
            .load(Ordering::Acquire)
            .saturating_sub(self.inner.processed.load(Ordering::Acquire));
        {
            let _edit = self.inner.consumers_edit.lock();
            self.inner.consumers.store(Arc::new(Vec::new()));
        }
        let tasks: Vec<_> = std::mem::take(&mut *self.inner.consumer_tasks.lock());
        let mut undelivered = 0;
        for (mut task, in_flight, counters) in tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
                let _ = task.await;
            }
            // Left in its queue (or in the batch it was cut off in): never delivered.
            let left = in_flight.swap(0, Ordering::AcqRel);
            if left > 0 {
                counters.dropped.inc_by(left);
                counters.queued.sub(left as i64);
                undelivered += left;
            }
        }
        ShutdownReport {
            unprocessed,
            undelivered,
        }
    }
}

/// Per-kind decisions, resolved once per config.
struct KindState {
    counters: Arc<KindCounters>,
    /// Keep when the correlation hash is below this (u64::MAX keeps all).
    threshold: u64,
    limiter: Option<DefaultDirectRateLimiter>,
}

struct Pipeline {
    inner: Arc<Inner>,
    kinds: HashMap<String, KindState>,
    config: Arc<BusConfig>,
}

/// Upper bound on per-kind pipeline state; past it, the map is cleared and rebuilt.
const MAX_KIND_STATES: usize = 4096;

impl Pipeline {
    fn run(mut self, rx: mpsc::Receiver<Event>) {
        let mut batch = Vec::new();
        // Start parked: nothing flows yet.
        let mut idle_polls = IDLE_POLLS;
        loop {
            let batch_size = self.inner.config.load().batch_size;
            // While events flow the queue is polled, not waited on: a receiver parked on it
            // makes every publish pay a wake-up syscall (several µs, most of what a publish
            // would cost). Polling costs at most one `POLL` of latency; after `IDLE_POLLS`
            // empty polls the thread parks again.
            let next = if idle_polls < IDLE_POLLS {
                match rx.try_recv() {
                    Ok(event) => Ok(event),
                    Err(mpsc::TryRecvError::Empty) => {
                        idle_polls += 1;
                        std::thread::sleep(POLL);
                        Err(RecvTimeoutError::Timeout)
                    }
                    Err(mpsc::TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
                }
            } else {
                rx.recv_timeout(Duration::from_millis(20))
            };
            match next {
                Ok(event) => {
                    idle_polls = 0;
                    batch.push(event);
                }
                Err(RecvTimeoutError::Timeout) => {
                    if self.inner.closed.load(Ordering::Acquire) {
                        // Closed and nothing arrived within the timeout: take the stragglers.
                        while let Ok(event) = rx.try_recv() {
                            batch.push(event);
                            if batch.len() >= batch_size {
                                self.process(std::mem::take(&mut batch));
                            }
                        }
                        if !batch.is_empty() {
                            self.process(std::mem::take(&mut batch));
                        }
                        return;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while batch.len() < batch_size {
                match rx.try_recv() {
                    Ok(event) => batch.push(event),
                    Err(_) => break,
                }
            }
            self.process(std::mem::take(&mut batch));
        }
    }

    fn kind_state(&mut self, kind: &str) -> &mut KindState {
        if !self.kinds.contains_key(kind) {
            if self.kinds.len() >= MAX_KIND_STATES {
                self.kinds.clear();
            }
            let config = &self.config;
            let threshold = crate::sampling::threshold(config.sampling.rate(kind));
            let limiter = lookup(&config.rate_limits, kind).map(|l| {
                let per_second =
                    std::num::NonZeroU32::new(l.per_second).unwrap_or(std::num::NonZeroU32::MIN);
                let burst = l
                    .burst
                    .and_then(std::num::NonZeroU32::new)
                    .unwrap_or(per_second);
                RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst))
            });
            let state = KindState {
                counters: self.inner.metrics.kind(kind),
                threshold,
                limiter,
            };
            self.kinds.insert(kind.to_string(), state);
        }
        self.kinds.get_mut(kind).expect("inserted above")
    }

    fn process(&mut self, batch: Vec<Event>) {
        let taken = batch.len() as u64;
        self.inner.metrics.ingress_length.sub(taken as i64);
        let current = self.inner.config.load_full();
        if !Arc::ptr_eq(&current, &self.config) {
            self.config = current;
            self.kinds.clear();
        }
        let keep_errors = self.config.sampling.keep_errors;

        // Admission in two passes, each timed: sampling, then the token bucket. Sampling
        // first so a sampled-out event never spends a token. `meta` runs parallel to `events`.
        let started = Instant::now();
        let mut sampled = Vec::with_capacity(batch.len());
        for event in batch {
            let state = self.kind_state(&event.kind);
            let sampled_in = state.threshold == u64::MAX
                || (keep_errors && event.severity >= Severity::Error)
                || sample_hash(&event) < state.threshold;
            if sampled_in {
                // Its counters travel with it: the next pass needs no second lookup.
                sampled.push((event, state.counters.clone()));
            } else {
                state.counters.sampled_out.inc();
            }
        }
        let sampled_at = Instant::now();
        self.inner
            .metrics
            .stages
            .sample
            .observe((sampled_at - started).as_secs_f64());

        let mut events = Vec::with_capacity(sampled.len());
        let mut meta = Vec::with_capacity(sampled.len());
        let limits = !self.config.rate_limits.is_empty();
        for (event, counters) in sampled {
            if limits
                && self
                    .kind_state(&event.kind)
                    .limiter
                    .as_ref()
                    .is_some_and(|l| l.check().is_err())
            {
                counters.rate_limited.inc();
            } else {
                meta.push((event.id, counters));
                events.push(event);
            }
        }
        let admitted = Instant::now();
        self.inner
            .metrics
            .stages
            .rate_limit
            .observe((admitted - sampled_at).as_secs_f64());

        if !events.is_empty() {
            self.sanitize(&mut events, &meta);
        }
        let cleaned = Instant::now();
        self.inner
            .metrics
            .stages
            .sanitize
            .observe((cleaned - admitted).as_secs_f64());

        if !events.is_empty() {
            let batch = Batch(Arc::new(events));
            let n = batch.len() as u64;
            for slot in self.inner.consumers.load().iter() {
                slot.in_flight.fetch_add(n, Ordering::AcqRel);
                slot.counters.queued.add(n as i64);
                if slot.tx.try_send(batch.clone()).is_err() {
                    slot.in_flight.fetch_sub(n, Ordering::AcqRel);
                    slot.counters.queued.sub(n as i64);
                    slot.counters.dropped.inc_by(n);
                }
            }
        }
        self.inner
            .metrics
            .stages
            .fan_out
            .observe(cleaned.elapsed().as_secs_f64());
        self.inner.processed.fetch_add(taken, Ordering::AcqRel);
    }

    /// Runs the sanitizer and counts each admitted event once: `accepted`, `filtered` (left
    /// out by the sanitizer) or `dropped` (the sanitizer broke its contract). Fails closed.
    fn sanitize(&mut self, events: &mut Vec<Event>, meta: &[(u64, Arc<KindCounters>)]) {
        let sanitizer = self.inner.sanitizer.load();
        let failure = match sanitizer.sanitize(events) {
            Ok(()) => match kept_positions(events, meta) {
                Some(kept) => {
                    let mut kept = kept.into_iter().peekable();
                    for (i, (_, counters)) in meta.iter().enumerate() {
                        if kept.peek() == Some(&i) {
                            kept.next();
                            counters.accepted.inc();
                        } else {
                            counters.filtered.inc();
                        }
                    }
                    return;
                }
                None => {
                    // Garbage out: nothing of it may be trusted, so nothing of it is sent.
                    events.clear();
                    "returned events that were not in its batch, or reordered them".to_string()
                }
            },
            Err(e) => e.to_string(),
        };
        tracing::error!(target: "lookout::bus", sanitizer = sanitizer.name(), reason = %failure, events = meta.len(), "sanitizer failed; batch failed closed");
        self.inner
            .metrics
            .sanitizer_failures
            .with_label_values(&[sanitizer.name()])
            .inc();
        match sanitizer.failure_policy() {
            FailurePolicy::Redact => redact_everything(events),
            FailurePolicy::Drop => events.clear(),
        }
        let mut left = events.iter().map(|e| e.id).peekable();
        for (id, counters) in meta {
            if left.peek() == Some(id) {
                left.next();
                counters.accepted.inc();
            } else {
                counters.dropped.inc();
            }
        }
        if left.peek().is_some() {
            // Events the bus never admitted: not ours to send.
            events.clear();
        }
    }
}

/// Positions in `meta` of the events a sanitizer kept, if its output is an ordered subset
/// of its input (same ids, same order); `None` otherwise.
fn kept_positions(out: &[Event], meta: &[(u64, Arc<KindCounters>)]) -> Option<Vec<usize>> {
    let mut positions = Vec::with_capacity(out.len());
    let mut next = 0;
    for event in out {
        let offset = meta[next..].iter().position(|(id, _)| *id == event.id)?;
        positions.push(next + offset);
        next += offset + 1;
    }
    Some(positions)
}

/// How often the pipeline polls its queue while events flow.
const POLL: Duration = Duration::from_millis(1);
/// Empty polls (≈ 50 ms) before the pipeline parks until the next event.
const IDLE_POLLS: u32 = 50;

/// The sampling key: the correlation id, so one request's events share a fate; else the id.
/// The same decision as `SamplingConfig::keeps` (sampling.rs), which worker libraries copy.
fn sample_hash(event: &Event) -> u64 {
    match &event.correlation_id {
        Some(c) => crate::sampling::key_hash(c.as_bytes()),
        None => crate::sampling::mix(event.id),
    }
}
