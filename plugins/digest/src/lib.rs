//! `digest`: watches `request.completed` and `worker.crashed` and, every `every` events it
//! has counted, writes one digest line through the host's `log` import:
//! `digest: 100 requests (97 ok, 3 failed, p50 12.0 ms, max 48.5 ms), 1 worker crash`.
//!
//! Config: `every` — how many counted events between digests (default 100).

use std::cell::RefCell;

use lookout_plugin_sdk::consumer::Guest;
use lookout_plugin_sdk::{Batch, Config, Severity, config_value, host, reject_unknown_keys};

#[derive(Default)]
struct Tally {
    every: u64,
    ok: u64,
    failed: u64,
    crashes: u64,
    durations: Vec<f64>,
}

thread_local! {
    static TALLY: RefCell<Tally> = RefCell::new(Tally { every: 100, ..Tally::default() });
}

impl Tally {
    fn counted(&self) -> u64 {
        self.ok + self.failed + self.crashes
    }

    fn flush(&mut self) {
        self.durations.sort_by(f64::total_cmp);
        let p50 = self
            .durations
            .get(self.durations.len() / 2)
            .copied()
            .unwrap_or(0.0);
        let max = self.durations.last().copied().unwrap_or(0.0);
        let level = if self.failed + self.crashes > 0 {
            Severity::Warn
        } else {
            Severity::Info
        };
        host::log(
            level,
            &format!(
                "digest: {} requests ({} ok, {} failed, p50 {p50:.1} ms, max {max:.1} ms), {} worker crash{}",
                self.ok + self.failed,
                self.ok,
                self.failed,
                self.crashes,
                if self.crashes == 1 { "" } else { "es" }
            ),
        );
        *self = Tally {
            every: self.every,
            ..Tally::default()
        };
    }
}

struct Digest;

impl Guest for Digest {
    fn init(config: Config) -> Result<(), String> {
        reject_unknown_keys(&config, &["every"])?;
        let every = match config_value(&config, "every") {
            None => 100,
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or(format!("config `every`: `{v}` is not a positive integer"))?,
        };
        TALLY.with(|t| t.borrow_mut().every = every);
        // stderr is captured by the host and becomes log lines (for consumers and metrics plugins).
        eprintln!("digest plugin ready: a digest every {every} events");
        Ok(())
    }

    fn handle(batch: Batch) -> Result<(), String> {
        TALLY.with(|t| {
            let mut t = t.borrow_mut();
            for event in batch.events() {
                match event.kind() {
                    "request.completed" => {
                        if event.get("success").and_then(|v| v.as_bool()) == Some(true) {
                            t.ok += 1
                        } else {
                            t.failed += 1
                        }
                        if let Some(ms) = event.get("duration_ms").and_then(|v| v.as_f64()) {
                            t.durations.push(ms);
                        }
                    }
                    "worker.crashed" => t.crashes += 1,
                    _ => continue,
                }
                if t.counted() >= t.every {
                    t.flush();
                }
            }
        });
        Ok(())
    }
}

lookout_plugin_sdk::consumer::export_consumer!(Digest);
