//! `allowlist`: the strict policy. Only fields whose key is listed keep their value; every
//! other field's value becomes `[REDACTED]` (the key stays, so people can see what was there).
//!
//! Config: `allow` — comma-separated keys (exact, case-sensitive), required;
//! `keep_numbers` — `true` to let numbers and booleans through under any key (default `false`).

use std::cell::RefCell;
use std::collections::HashSet;

use lookout_plugin_sdk::sanitizer::Guest;
use lookout_plugin_sdk::{Batch, Config, FieldValue, Verdict, config_value, reject_unknown_keys};

struct Policy {
    allow: HashSet<String>,
    keep_numbers: bool,
}

thread_local! {
    static POLICY: RefCell<Option<Policy>> = const { RefCell::new(None) };
}

struct Allowlist;

impl Guest for Allowlist {
    fn init(config: Config) -> Result<(), String> {
        reject_unknown_keys(&config, &["allow", "keep_numbers"])?;
        let allow: HashSet<String> = config_value(&config, "allow")
            .ok_or("config `allow` is required: the comma-separated keys that keep their values")?
            .split(',')
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
            .collect();
        let keep_numbers = match config_value(&config, "keep_numbers") {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(format!(
                    "config `keep_numbers`: expected true or false, got `{other}`"
                ));
            }
        };
        POLICY.with(|p| {
            *p.borrow_mut() = Some(Policy {
                allow,
                keep_numbers,
            })
        });
        Ok(())
    }

    fn sanitize(batch: Batch) -> Verdict {
        POLICY.with(|p| {
            let policy = p.borrow();
            // Without a policy (init never ran) nothing is allowed: fail closed.
            let (allow, keep_numbers) = match policy.as_ref() {
                Some(p) => (Some(&p.allow), p.keep_numbers),
                None => (None, false),
            };
            let mut verdict = Verdict::new();
            for event in batch.events() {
                for field in event.fields() {
                    let listed = allow.is_some_and(|a| a.contains(field.key));
                    let harmless = keep_numbers && !matches!(field.value, FieldValue::Str(_));
                    if !listed && !harmless {
                        verdict.replace(field.index, "[REDACTED]");
                    }
                }
            }
            verdict
        })
    }
}

lookout_plugin_sdk::sanitizer::export_sanitizer!(Allowlist);
