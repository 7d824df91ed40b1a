//! Health windows: the recent outcomes of requests as callers saw them, and the counts and
//! percentiles over a window that the health checks judge. Only a record of what callers
//! saw: nothing schedules by it.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Pool;
use super::state::{Inner, Outcome};

/// Most outcomes kept; past it a window covers only the latest.
const RECENT_OUTCOMES: usize = 20_000;
/// Longest window kept.
pub const MAX_WINDOW: Duration = Duration::from_secs(3600);

/// Requests over a recent window, as callers saw them (queue wait included; refusals and
/// timeouts count as failed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct WindowStats {
    pub requests: u64,
    pub failed: u64,
    /// Median time to an answer, when there were requests.
    pub p50_ms: Option<f64>,
    /// 95th percentile of the time to an answer, when there were requests.
    pub p95_ms: Option<f64>,
}

impl WindowStats {
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.failed as f64 / self.requests as f64
        }
    }
}

impl Pool {
    /// Requests answered since the pool started (refusals and failures included).
    pub fn requests_total(&self) -> u64 {
        self.inner.answered.load(Ordering::Relaxed)
    }

    /// Requests answered within the last `window` (at most an hour).
    pub fn window(&self, window: Duration) -> WindowStats {
        let window = window.min(MAX_WINDOW);
        let mut recent = self.inner.recent.lock();
        while recent.front().is_some_and(|o| o.at.elapsed() > MAX_WINDOW) {
            recent.pop_front();
        }
        let mut seconds: Vec<f32> = Vec::new();
        let mut stats = WindowStats::default();
        for o in recent.iter().rev().take_while(|o| o.at.elapsed() <= window) {
            stats.requests += 1;
            stats.failed += u64::from(!o.ok);
            seconds.push(o.seconds);
        }
        if !seconds.is_empty() {
            seconds.sort_by(f32::total_cmp);
            let quantile = |q: f64| {
                let at = ((seconds.len() as f64 * q).ceil() as usize).clamp(1, seconds.len()) - 1;
                f64::from(seconds[at]) * 1e3
            };
            stats.p50_ms = Some(quantile(0.5));
            stats.p95_ms = Some(quantile(0.95));
        }
        stats
    }
}

impl Inner {
    /// Counts one answered request and keeps its outcome for the windows.
    pub(super) fn record(&self, began: Instant, ok: bool) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        let mut recent = self.recent.lock();
        if recent.len() >= RECENT_OUTCOMES {
            recent.pop_front();
        }
        recent.push_back(Outcome {
            at: Instant::now(),
            seconds: began.elapsed().as_secs_f32(),
            ok,
        });
    }
}
