//! `error-counter`: counts failed requests per command through the host's metric import.
//! Its manifest declares the metric it updates:
//!
//! ```toml
//! [[metrics]]
//! name = "errors_total"
//! help = "Failed requests by command."
//! kind = "counter"
//! labels = ["command"]
//! ```
//!
//! A request failed when its `request.completed` event has `success = false`.

use lookout_plugin_sdk::consumer::Guest;
use lookout_plugin_sdk::{Batch, Config, host, reject_unknown_keys};

struct ErrorCounter;

impl Guest for ErrorCounter {
    fn init(config: Config) -> Result<(), String> {
        reject_unknown_keys(&config, &[])
    }

    fn handle(batch: Batch) -> Result<(), String> {
        for event in batch.events().filter(|e| e.kind() == "request.completed") {
            if event.get("success").and_then(|v| v.as_bool()) != Some(false) {
                continue;
            }
            let command = event.get("command").and_then(|v| v.as_str());
            let command = command.unwrap_or("unknown").to_string();
            // A refusal (e.g. the series cap) is the host's to count; the batch is still handled.
            let _ = host::update_metric("errors_total", &[command], 1.0);
        }
        Ok(())
    }
}

lookout_plugin_sdk::consumer::export_consumer!(ErrorCounter);
