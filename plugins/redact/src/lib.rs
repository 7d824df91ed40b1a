//! `redact`: lookout's default sanitizer policy.
//!
//! Config (`init`), every key optional:
//! - `mode`: `redact` (default) or `hash` (keyed HMAC-SHA256, so equal secrets stay matchable);
//! - `hash_key`: the key for `hash` mode, at least 16 bytes; required in that mode;
//! - `extra_keys`: comma-separated fragments that also mark a key sensitive (`ssn,iban`);
//! - `pattern.<name>`: a regex; each match inside a string becomes `[REDACTED:<name>]`.

use std::cell::RefCell;

use lookout_plugin_sdk::sanitizer::Guest;
use lookout_plugin_sdk::{Batch, Config, FieldValue, Verdict};
pub use redact_rules::{Mode, Pattern, Policy, Value};

thread_local! {
    static POLICY: RefCell<Policy> = RefCell::new(Policy::default());
}

/// Builds a policy from a plugin config; the error names the offending key.
pub fn policy_from_config(config: &Config) -> Result<Policy, String> {
    let mut policy = Policy::default();
    let mut hash_key = None;
    let mut hash_mode = false;
    for (key, value) in config {
        match key.as_str() {
            "mode" => match value.as_str() {
                "redact" => hash_mode = false,
                "hash" => hash_mode = true,
                other => {
                    return Err(format!(
                        "config `mode`: expected `redact` or `hash`, got `{other}`"
                    ));
                }
            },
            "hash_key" => hash_key = Some(value.as_bytes().to_vec()),
            "extra_keys" => {
                policy.extra_keys = value
                    .split(',')
                    .map(|k| {
                        k.chars()
                            .filter(char::is_ascii_alphanumeric)
                            .map(|c| c.to_ascii_lowercase())
                            .collect::<String>()
                    })
                    .filter(|k| !k.is_empty())
                    .collect();
            }
            k if k.starts_with("pattern.") && k.len() > "pattern.".len() => {
                let name = k["pattern.".len()..].to_string();
                let regex = regex_lite::Regex::new(value)
                    .map_err(|e| format!("config `{k}`: invalid regex: {e}"))?;
                policy.patterns.push(Pattern { name, regex });
            }
            other => {
                return Err(format!(
                    "unknown config key `{other}` (known: mode, hash_key, extra_keys, pattern.<name>)"
                ));
            }
        }
    }
    if hash_mode {
        let key = hash_key.ok_or("config `hash_key` is required when `mode` is `hash`")?;
        if key.len() < 16 {
            return Err("config `hash_key` must be at least 16 bytes".to_string());
        }
        policy.mode = Mode::Hash(key);
    }
    Ok(policy)
}

/// The policy's edits for one batch: a replacement for each field that carries a secret.
pub fn sanitize_batch(policy: &Policy, batch: &Batch) -> Verdict {
    let mut verdict = Verdict::new();
    for event in batch.events() {
        for field in event.fields() {
            let value = match field.value {
                FieldValue::Str(s) => Value::Str(s),
                FieldValue::Int(i) => Value::Int(i),
                FieldValue::Float(f) => Value::Float(f),
                FieldValue::Bool(b) => Value::Bool(b),
            };
            if let Some(clean) = policy.clean_field(field.key, value) {
                verdict.replace(field.index, clean);
            }
        }
    }
    verdict
}

struct Redact;

impl Guest for Redact {
    fn init(config: Config) -> Result<(), String> {
        let policy = policy_from_config(&config)?;
        POLICY.with(|p| *p.borrow_mut() = policy);
        Ok(())
    }

    fn sanitize(batch: Batch) -> Verdict {
        POLICY.with(|p| sanitize_batch(&p.borrow(), &batch))
    }
}

lookout_plugin_sdk::sanitizer::export_sanitizer!(Redact);
