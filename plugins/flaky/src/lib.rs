//! `flaky` (tests only): a consumer that traps — panics, which the host sees as a trap and
//! answers with a fresh instance — on any batch holding an event of kind `trap_on` (default
//! `soak.trap`), and otherwise counts what it is given and reports the count on stderr every
//! `every` events (default 10000). On a batch holding an event of kind `sleep_on` (none by
//! default) it first sleeps `sleep_ms` (default 1000; a WASI clock wait, which the host
//! cuts at the call's deadline). The soak test uses it to show that a consumer's traps and
//! sleeps cost only that consumer's deliveries.

use std::cell::Cell;

use lookout_plugin_sdk::consumer::Guest;
use lookout_plugin_sdk::{Batch, Config, config_value, reject_unknown_keys};

thread_local! {
    static TRAP_ON: std::cell::RefCell<String> = std::cell::RefCell::new("soak.trap".into());
    static EVERY: Cell<u64> = const { Cell::new(10_000) };
    static SLEEP_ON: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    static SLEEP_MS: Cell<u64> = const { Cell::new(1_000) };
    static SEEN: Cell<u64> = const { Cell::new(0) };
}

struct Flaky;

impl Guest for Flaky {
    fn init(config: Config) -> Result<(), String> {
        reject_unknown_keys(&config, &["trap_on", "every", "sleep_on", "sleep_ms"])?;
        if let Some(kind) = config_value(&config, "sleep_on") {
            SLEEP_ON.with(|t| *t.borrow_mut() = kind.to_string());
        }
        if let Some(ms) = config_value(&config, "sleep_ms") {
            let ms = ms
                .parse::<u64>()
                .map_err(|_| format!("config `sleep_ms`: `{ms}` is not a whole number"))?;
            SLEEP_MS.with(|s| s.set(ms));
        }
        if let Some(kind) = config_value(&config, "trap_on") {
            TRAP_ON.with(|t| *t.borrow_mut() = kind.to_string());
        }
        if let Some(every) = config_value(&config, "every") {
            let every = every.parse::<u64>().ok().filter(|n| *n > 0).ok_or(format!(
                "config `every`: `{every}` is not a positive integer"
            ))?;
            EVERY.with(|e| e.set(every));
        }
        Ok(())
    }

    fn handle(batch: Batch) -> Result<(), String> {
        let trap = TRAP_ON.with(|t| {
            let t = t.borrow();
            batch.events().any(|e| e.kind() == t.as_str())
        });
        if trap {
            panic!("flaky: trapping on purpose");
        }
        let sleep = SLEEP_ON.with(|t| {
            let t = t.borrow();
            batch.events().any(|e| e.kind() == t.as_str())
        });
        if sleep {
            std::thread::sleep(std::time::Duration::from_millis(SLEEP_MS.with(Cell::get)));
        }
        for _ in batch.events() {
            let seen = SEEN.with(|s| {
                s.set(s.get() + 1);
                s.get()
            });
            if seen % EVERY.with(Cell::get) == 0 {
                eprintln!("flaky: {seen} events since the last trap");
            }
        }
        Ok(())
    }
}

lookout_plugin_sdk::consumer::export_consumer!(Flaky);
