//! A lookout consumer plugin: counts the events whose kind starts with `prefix` in
//! `lookout_plugin_my_plugin_events_total{kind}` and logs every 1000th one.
//! Replace the body of `handle` with what your consumer should do.

use std::cell::RefCell;

use lookout_plugin_sdk::consumer::Guest;
use lookout_plugin_sdk::{Batch, Config, Severity, config_value, host, reject_unknown_keys};

thread_local! {
    static STATE: RefCell<(String, u64)> = RefCell::new((String::new(), 0));
}

struct MyPlugin;

impl Guest for MyPlugin {
    fn init(config: Config) -> Result<(), String> {
        // A typo in the manifest's [config] is an error at swap time, not a silent default.
        reject_unknown_keys(&config, &["prefix"])?;
        let prefix = config_value(&config, "prefix").unwrap_or("").to_string();
        STATE.with(|s| s.borrow_mut().0 = prefix);
        Ok(())
    }

    fn handle(batch: Batch) -> Result<(), String> {
        STATE.with(|s| {
            let (prefix, seen) = &mut *s.borrow_mut();
            for event in batch
                .events()
                .filter(|e| e.kind().starts_with(prefix.as_str()))
            {
                // Refused updates (e.g. past the series cap) are counted by the host.
                let _ = host::update_metric("events_total", &[event.kind().to_string()], 1.0);
                *seen += 1;
                if seen.is_multiple_of(1000) {
                    host::log(Severity::Info, &format!("{seen} matching events so far"));
                }
            }
        });
        // Return Err("why") to have the batch counted as failed.
        Ok(())
    }
}

lookout_plugin_sdk::consumer::export_consumer!(MyPlugin);
