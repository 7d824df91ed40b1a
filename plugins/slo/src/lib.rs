//! `slo`: a latency objective per command. Every `request.completed` is judged `good`
//! (succeeded within `threshold_ms`) or `bad`, and counted in
//! `lookout_plugin_slo_requests_total{command, verdict}`; its duration goes into
//! `lookout_plugin_slo_duration_ms{command}`.
//!
//! Config: `threshold_ms` (default 250).

use std::cell::Cell;

use lookout_plugin_sdk::metrics::Guest;
use lookout_plugin_sdk::{
    Batch, Config, MetricKind, MetricSpec, config_value, host, reject_unknown_keys,
};

thread_local! {
    static THRESHOLD_MS: Cell<f64> = const { Cell::new(250.0) };
}

struct Slo;

impl Guest for Slo {
    fn init(config: Config) -> Result<(), String> {
        reject_unknown_keys(&config, &["threshold_ms"])?;
        if let Some(v) = config_value(&config, "threshold_ms") {
            let ms = v.parse::<f64>().ok().filter(|ms| *ms > 0.0).ok_or(format!(
                "config `threshold_ms`: `{v}` is not a positive number"
            ))?;
            THRESHOLD_MS.with(|t| t.set(ms));
        }
        Ok(())
    }

    fn describe() -> Vec<MetricSpec> {
        vec![
            MetricSpec {
                name: "requests_total".into(),
                help: "Completed requests by command and SLO verdict (good: succeeded within the threshold).".into(),
                kind: MetricKind::Counter,
                labels: vec!["command".into(), "verdict".into()],
                buckets: vec![],
            },
            MetricSpec {
                name: "duration_ms".into(),
                help: "Request duration by command, in milliseconds.".into(),
                kind: MetricKind::Histogram,
                labels: vec!["command".into()],
                buckets: vec![5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0],
            },
        ]
    }

    fn observe(batch: Batch) {
        let threshold = THRESHOLD_MS.with(Cell::get);
        for event in batch.events().filter(|e| e.kind() == "request.completed") {
            let command = event.get("command").and_then(|v| v.as_str());
            let command = command.unwrap_or("unknown").to_string();
            let duration = event.get("duration_ms").and_then(|v| v.as_f64());
            let success = event.get("success").and_then(|v| v.as_bool()) == Some(true);
            let good = success && duration.is_some_and(|d| d <= threshold);
            let verdict = if good { "good" } else { "bad" };
            let _ = host::update_metric("requests_total", &[command.clone(), verdict.into()], 1.0);
            if let Some(d) = duration {
                let _ = host::update_metric("duration_ms", &[command], d);
            }
        }
    }
}

lookout_plugin_sdk::metrics::export_metrics!(Slo);
