//! The circuit breaker every plugin call goes through. After `after_failures` failures within
//! `window_ms`, the plugin is quarantined: it is not called at all (a sanitizer's batches fail
//! closed, a consumer's are counted failed) until a backoff has passed. Then one call is let
//! through: a success closes the breaker, a failure quarantines it again with the backoff
//! doubled, up to `max_backoff_ms`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use crate::limits::QuarantinePolicy;
use crate::plugin_metrics::PluginMetrics;

/// Whether a plugin is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Running,
    /// Not called until its retry: a sanitizer's batches fail closed, a consumer's fail.
    Quarantined,
}

impl BreakerState {
    /// As in the JSON: `running` or `quarantined`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Running => "running",
            BreakerState::Quarantined => "quarantined",
        }
    }
}

/// What the breaker says about a plugin right now.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BreakerStatus {
    pub state: BreakerState,
    /// Milliseconds until the next retry while quarantined.
    pub retry_in_ms: Option<u64>,
    pub last_error: Option<String>,
    pub quarantines: u64,
}

struct State {
    failures: VecDeque<Instant>,
    quarantined_until: Option<Instant>,
    backoff: Duration,
    last_error: Option<String>,
    quarantines: u64,
}

pub(crate) struct Breaker {
    policy: QuarantinePolicy,
    state: Mutex<State>,
}

/// What `Breaker::record_failure` did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Tripped {
    No,
    /// The plugin was just quarantined for this long.
    For(Duration),
}

impl Breaker {
    pub(crate) fn new(policy: QuarantinePolicy) -> Breaker {
        let backoff = Duration::from_millis(policy.backoff_ms);
        Breaker {
            policy,
            state: Mutex::new(State {
                failures: VecDeque::new(),
                quarantined_until: None,
                backoff,
                last_error: None,
                quarantines: 0,
            }),
        }
    }

    /// Whether a call may go ahead now.
    pub(crate) fn allow(&self) -> bool {
        self.allow_at(Instant::now())
    }

    /// Whether a call may go ahead at `now` (the clock is a parameter so tests need not wait).
    fn allow_at(&self, now: Instant) -> bool {
        let state = self.state.lock();
        state.quarantined_until.is_none_or(|until| now >= until)
    }

    pub(crate) fn record_success(&self) {
        let mut state = self.state.lock();
        if state.quarantined_until.take().is_some() {
            state.failures.clear();
            state.backoff = Duration::from_millis(self.policy.backoff_ms);
        }
    }

    pub(crate) fn record_failure(&self, error: &str) -> Tripped {
        self.record_failure_at(error, Instant::now())
    }

    fn record_failure_at(&self, error: &str, now: Instant) -> Tripped {
        let mut state = self.state.lock();
        state.last_error = Some(error.to_string());
        let retrying = state.quarantined_until.is_some();
        if retrying {
            // The retry after a quarantine failed: back off longer.
            let next = (state.backoff * 2).min(Duration::from_millis(self.policy.max_backoff_ms));
            state.backoff = next;
        } else {
            let window = Duration::from_millis(self.policy.window_ms);
            state.failures.push_back(now);
            while state
                .failures
                .front()
                .is_some_and(|t| now.duration_since(*t) > window)
            {
                state.failures.pop_front();
            }
            if state.failures.len() < self.policy.after_failures as usize {
                return Tripped::No;
            }
        }
        let backoff = state.backoff;
        state.quarantined_until = Some(now + backoff);
        state.quarantines += 1;
        Tripped::For(backoff)
    }

    pub(crate) fn status(&self) -> BreakerStatus {
        let state = self.state.lock();
        let now = Instant::now();
        let retry_in = state
            .quarantined_until
            .map(|u| u.saturating_duration_since(now).as_millis() as u64);
        BreakerStatus {
            state: if state.quarantined_until.is_some() {
                BreakerState::Quarantined
            } else {
                BreakerState::Running
            },
            retry_in_ms: retry_in,
            last_error: state.last_error.clone(),
            quarantines: state.quarantines,
        }
    }
}

impl Breaker {
    /// Runs `call` unless the plugin is quarantined, records how it went, and keeps the
    /// plugin's quarantine metrics and log lines in step.
    pub(crate) fn guard<T>(
        &self,
        plugin: &str,
        metrics: &PluginMetrics,
        call: impl FnOnce() -> std::result::Result<T, String>,
    ) -> std::result::Result<T, String> {
        if !self.allow() {
            let status = self.status();
            return Err(format!(
                "quarantined (retry in {} ms); last error: {}",
                status.retry_in_ms.unwrap_or(0),
                status.last_error.unwrap_or_default()
            ));
        }
        match call() {
            Ok(v) => {
                if self.status().state == BreakerState::Quarantined {
                    tracing::info!(target: "lookout::plugin", plugin, "plugin recovered; quarantine lifted");
                    metrics.quarantined.with_label_values(&[plugin]).set(0);
                }
                self.record_success();
                Ok(v)
            }
            Err(error) => {
                if let Tripped::For(backoff) = self.record_failure(&error) {
                    tracing::error!(target: "lookout::plugin", plugin, %error, backoff_ms = backoff.as_millis() as u64, "plugin quarantined after repeated failures");
                    metrics.quarantined.with_label_values(&[plugin]).set(1);
                    metrics.quarantines.with_label_values(&[plugin]).inc();
                }
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantines_after_n_failures_then_retries_with_growing_backoff() {
        let b = Breaker::new(QuarantinePolicy {
            after_failures: 2,
            window_ms: 60_000,
            backoff_ms: 20,
            max_backoff_ms: 50,
        });
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(b.record_failure_at("trap", at(0)), Tripped::No);
        assert!(b.allow_at(at(1)));
        assert_eq!(
            b.record_failure_at("trap", at(1)),
            Tripped::For(Duration::from_millis(20))
        );
        assert!(!b.allow_at(at(20)));
        assert_eq!(b.status().state, BreakerState::Quarantined);
        assert!(b.allow_at(at(21)), "one retry after the backoff");
        assert_eq!(
            b.record_failure_at("trap again", at(21)),
            Tripped::For(Duration::from_millis(40))
        );
        assert!(!b.allow_at(at(60)), "the backoff doubled");
        assert_eq!(
            b.record_failure_at("and again", at(61)),
            Tripped::For(Duration::from_millis(50)),
            "capped"
        );
        b.record_success();
        assert_eq!(b.status().state, BreakerState::Running);
        assert_eq!(b.status().last_error.as_deref(), Some("and again"));
        assert_eq!(
            b.record_failure("x"),
            Tripped::No,
            "a success starts the count afresh"
        );
    }
}
