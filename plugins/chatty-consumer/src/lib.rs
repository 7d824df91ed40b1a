//! `chatty-consumer` (tests only): a consumer that says too much. Its config picks what it
//! does with each batch:
//!
//! - `mode = "huge-error"`: `handle` fails with a message of `bytes` bytes (default 20 MiB)
//!   that starts with `password=<secret>` and an AWS key id.
//! - `mode = "long-labels"`: for each event, adds 1 to the metric `seen_total` (declare it in
//!   the manifest with one label) with a label value of `bytes` bytes (default 256 KiB), made
//!   distinct by the event's `n` field, so every event asks for a new series. A refusal
//!   fails the batch with the host's reason (`update-metric refused: …`).
//! - `mode = "log-fields"`: logs every field it sees, `key=value`, one line each.
//!
//! `secret` (default `CANARY-chatty-7f3a9c`) is the secret it quotes. `init_label = "<value>"`
//! makes `init` add 1 to `seen_total` with that label value (a refusal is ignored: the host
//! counts it) — `init_repeat = "<n>"` times (default 1) —, and `fail_init = "1"` makes
//! `init` fail after that — a push whose `init` touched its metrics and is then refused.

use std::cell::{Cell, RefCell};

use lookout_plugin_sdk::consumer::Guest;
use lookout_plugin_sdk::{
    Batch, Config, FieldValue, Severity, config_value, host, reject_unknown_keys,
};

thread_local! {
    static MODE: RefCell<String> = RefCell::new("huge-error".into());
    static SECRET: RefCell<String> = RefCell::new("CANARY-chatty-7f3a9c".into());
    static BYTES: Cell<usize> = const { Cell::new(0) };
}

struct ChattyConsumer;

fn text(value: FieldValue<'_>) -> String {
    match value {
        FieldValue::Str(s) => s.to_string(),
        FieldValue::Int(i) => i.to_string(),
        FieldValue::Float(x) => x.to_string(),
        FieldValue::Bool(b) => b.to_string(),
    }
}

impl Guest for ChattyConsumer {
    fn init(config: Config) -> Result<(), String> {
        reject_unknown_keys(
            &config,
            &[
                "mode",
                "bytes",
                "secret",
                "init_label",
                "init_repeat",
                "fail_init",
            ],
        )?;
        let mode = config_value(&config, "mode").unwrap_or("huge-error");
        let default_bytes = match mode {
            "huge-error" => 20 << 20,
            "long-labels" => 256 << 10,
            "log-fields" => 0,
            other => return Err(format!("config `mode`: unknown mode `{other}`")),
        };
        let bytes = config_value(&config, "bytes")
            .map_or(Ok(default_bytes), str::parse::<usize>)
            .map_err(|e| format!("config `bytes`: {e}"))?;
        MODE.with(|m| *m.borrow_mut() = mode.to_string());
        BYTES.with(|b| b.set(bytes));
        if let Some(secret) = config_value(&config, "secret") {
            SECRET.with(|s| *s.borrow_mut() = secret.to_string());
        }
        if let Some(label) = config_value(&config, "init_label") {
            let repeat: u32 = match config_value(&config, "init_repeat") {
                Some(n) => n
                    .parse()
                    .map_err(|_| format!("config `init_repeat`: `{n}` is not a count"))?,
                None => 1,
            };
            for _ in 0..repeat {
                let _ = host::update_metric("seen_total", &[label.to_string()], 1.0);
            }
        }
        if config_value(&config, "fail_init") == Some("1") {
            return Err("init failed on purpose (fail_init)".into());
        }
        Ok(())
    }

    fn handle(batch: Batch) -> Result<(), String> {
        let bytes = BYTES.with(Cell::get);
        match MODE.with(|m| m.borrow().clone()).as_str() {
            "huge-error" => {
                let secret = SECRET.with(|s| s.borrow().clone());
                let mut message =
                    format!("handle failed: password={secret} aws AKIAIOSFODNN7EXAMPLE and then ");
                let filler = bytes.saturating_sub(message.len()) / 11 + 1;
                message.push_str(&"more words ".repeat(filler));
                Err(message)
            }
            "long-labels" => {
                for event in batch.events() {
                    let n = event.get("n").map(text).unwrap_or_default();
                    let mut label = format!("{n}-");
                    label.extend(std::iter::repeat_n('x', bytes.saturating_sub(label.len())));
                    // The host's refusal is handed back, so a test sees what the plugin got.
                    host::update_metric("seen_total", &[label], 1.0)
                        .map_err(|e| format!("update-metric refused: {e}"))?;
                }
                Ok(())
            }
            _ => {
                for event in batch.events() {
                    for field in event.fields() {
                        let line = format!(
                            "chatty saw {}: {}={}",
                            event.kind(),
                            field.key,
                            text(field.value)
                        );
                        host::log(Severity::Info, &line);
                    }
                }
                Ok(())
            }
        }
    }
}

lookout_plugin_sdk::consumer::export_consumer!(ChattyConsumer);
