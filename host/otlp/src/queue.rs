//! One signal's bounded export queue, between the bus consumer (the only one that adds) and
//! the signal's exporter task (the only one that takes). It never makes the consumer wait:
//! what does not fit is dropped and counted at once. An item is counted once when it comes
//! (`received`) and once when it leaves (`exported` or `dropped{reason}`); until then it is
//! `queued`, whether waiting or in the request being sent.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::metrics::{DropReason, SignalMetrics};

pub(crate) struct SignalQueue<T> {
    state: Mutex<State<T>>,
    capacity: usize,
    wake: Notify,
    pub metrics: SignalMetrics,
}

struct State<T> {
    waiting: VecDeque<T>,
    /// When the oldest waiting item came: its batch is due `flush_interval` later.
    oldest: Option<Instant>,
    /// Items taken for the request being sent, not yet settled.
    in_flight: usize,
}

impl<T> State<T> {
    fn held(&self) -> usize {
        self.waiting.len() + self.in_flight
    }
}

impl<T> SignalQueue<T> {
    pub fn new(capacity: usize, metrics: SignalMetrics) -> SignalQueue<T> {
        SignalQueue {
            state: Mutex::new(State {
                waiting: VecDeque::new(),
                oldest: None,
                in_flight: 0,
            }),
            capacity,
            wake: Notify::new(),
            metrics,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Items held: waiting, or in the request being sent.
    pub fn held(&self) -> usize {
        self.state.lock().held()
    }

    /// How many more items fit now. Only the consumer adds, so the room it reads can only
    /// grow until it adds.
    pub fn room(&self) -> usize {
        self.capacity.saturating_sub(self.held())
    }

    /// Counts `items`, `invalid` and `full` as received; queues `items` (what no longer fits
    /// is dropped as `queue_full` with `full`), counts `invalid` dropped as such.
    pub fn push(&self, items: Vec<T>, invalid: u64, full: u64) {
        let received = items.len() as u64 + invalid + full;
        if received == 0 {
            return;
        }
        let mut full = full;
        let added = {
            let mut state = self.state.lock();
            let room = self.capacity.saturating_sub(state.held());
            let offered = items.len();
            if state.waiting.is_empty() && offered > 0 {
                state.oldest = Some(Instant::now());
            }
            state.waiting.extend(items.into_iter().take(room));
            let added = offered.min(room);
            full += (offered - added) as u64;
            // All counted at once, under the lock the exporter settles under.
            self.metrics.received.inc_by(received);
            if full > 0 {
                self.metrics.dropped(DropReason::QueueFull).inc_by(full);
            }
            if invalid > 0 {
                self.metrics.dropped(DropReason::Invalid).inc_by(invalid);
            }
            self.metrics.queued.set(state.held() as i64);
            added
        };
        if added > 0 {
            self.wake.notify_one();
        }
    }

    /// Waits for the next batch and takes it (it stays counted `queued` until [`settle`]d):
    /// `batch_max` items as soon as they are there, else what is waiting once the oldest has
    /// waited `flush_interval`, else — while `flushing` — whatever is waiting.
    ///
    /// [`settle`]: SignalQueue::settle
    pub async fn next_batch(
        &self,
        batch_max: usize,
        flush_interval: Duration,
        flushing: &AtomicBool,
    ) -> Vec<T> {
        loop {
            let due = {
                let mut state = self.state.lock();
                let ready = !state.waiting.is_empty()
                    && (state.waiting.len() >= batch_max
                        || flushing.load(Ordering::Acquire)
                        || state
                            .oldest
                            .is_some_and(|at| at.elapsed() >= flush_interval));
                if ready {
                    let n = state.waiting.len().min(batch_max);
                    let batch: Vec<T> = state.waiting.drain(..n).collect();
                    state.in_flight += n;
                    // What is left waited less than the oldest; it starts its own wait now.
                    state.oldest = (!state.waiting.is_empty()).then(Instant::now);
                    return batch;
                }
                state.oldest.map(|at| at + flush_interval)
            };
            match due {
                Some(at) => {
                    let _ = tokio::time::timeout_at(at, self.wake.notified()).await;
                }
                None => self.wake.notified().await,
            }
        }
    }

    /// The request for `n` taken items is over: `exported` of them were accepted, the rest
    /// are dropped for `reason`.
    pub fn settle(&self, n: usize, exported: usize, reason: DropReason) {
        let exported = exported.min(n);
        let mut state = self.state.lock();
        state.in_flight = state.in_flight.saturating_sub(n);
        self.metrics.exported.inc_by(exported as u64);
        if n > exported {
            self.metrics.dropped(reason).inc_by((n - exported) as u64);
        }
        self.metrics.queued.set(state.held() as i64);
    }

    /// Wakes the exporter (a flush was asked for).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Drops everything held, waiting or in flight, for `reason` (call once the exporter
    /// task has stopped); how many.
    pub fn drop_all(&self, reason: DropReason) -> usize {
        let mut state = self.state.lock();
        let n = state.held();
        state.waiting.clear();
        state.oldest = None;
        state.in_flight = 0;
        if n > 0 {
            self.metrics.dropped(reason).inc_by(n as u64);
        }
        self.metrics.queued.set(0);
        n
    }
}
