//! `chatty` (tests only): a sanitizer that says too much, to prove that what a plugin says
//! is cut and scrubbed before the host keeps it. Its config picks what it does:
//!
//! - `mode = "log-fields"`: logs every field of every event it sees, raw (`key=value`, one
//!   `host.log` line each, at `info`), then redacts honestly: every string value becomes
//!   `[REDACTED:chatty]`. What reaches the host's log must be scrubbed.
//! - `mode = "huge-init-error"`: `init` fails with a message of `bytes` bytes (default
//!   20 MiB) that starts with `password=<secret>` and an AWS key id.
//! - `mode = "bad-verdict"`: answers every batch with an edit of a field the batch does not
//!   have, which the host refuses (the batch fails closed).
//!
//! `secret` (default `CANARY-chatty-7f3a9c`) is the secret it quotes.

use std::cell::RefCell;

use lookout_plugin_sdk::sanitizer::Guest;
use lookout_plugin_sdk::{
    Batch, Config, FieldValue, Severity, Verdict, config_value, host, reject_unknown_keys,
};

thread_local! {
    static MODE: RefCell<String> = RefCell::new("log-fields".into());
}

struct Chatty;

impl Guest for Chatty {
    fn init(config: Config) -> Result<(), String> {
        reject_unknown_keys(&config, &["mode", "bytes", "secret"])?;
        let mode = config_value(&config, "mode").unwrap_or("log-fields");
        let secret = config_value(&config, "secret").unwrap_or("CANARY-chatty-7f3a9c");
        match mode {
            "log-fields" | "bad-verdict" => {}
            "huge-init-error" => {
                let bytes = config_value(&config, "bytes")
                    .map_or(Ok(20 << 20), str::parse::<usize>)
                    .map_err(|e| format!("config `bytes`: {e}"))?;
                let mut message =
                    format!("init failed: password={secret} aws AKIAIOSFODNN7EXAMPLE and then ");
                let filler = bytes.saturating_sub(message.len()) / 11 + 1;
                message.push_str(&"more words ".repeat(filler));
                return Err(message);
            }
            other => return Err(format!("config `mode`: unknown mode `{other}`")),
        }
        MODE.with(|m| *m.borrow_mut() = mode.to_string());
        Ok(())
    }

    fn sanitize(batch: Batch) -> Verdict {
        let mut verdict = Verdict::new();
        if MODE.with(|m| m.borrow().as_str() == "bad-verdict") {
            verdict.replace(u32::MAX, "out of range");
            return verdict;
        }
        for event in batch.events() {
            for field in event.fields() {
                let value = match field.value {
                    FieldValue::Str(s) => s.to_string(),
                    FieldValue::Int(i) => i.to_string(),
                    FieldValue::Float(x) => x.to_string(),
                    FieldValue::Bool(b) => b.to_string(),
                };
                host::log(
                    Severity::Info,
                    &format!("chatty saw {}: {}={value}", event.kind(), field.key),
                );
                if matches!(field.value, FieldValue::Str(_)) {
                    verdict.replace(field.index, "[REDACTED:chatty]");
                }
            }
        }
        verdict
    }
}

lookout_plugin_sdk::sanitizer::export_sanitizer!(Chatty);
