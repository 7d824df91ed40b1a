//! `redact`: lookout's default sanitizer policy.
//!
//! Config (`init`), every key optional:
//! - `mode`: `redact` (default) or `hash` (keyed HMAC-SHA256, so equal secrets stay matchable);
//! - `hash_key`: the key for `hash` mode, at least 16 bytes; required in that mode;
//! - `extra_keys`: comma-separated fragments that also mark a key sensitive (`ssn,iban`);
//! - `rules`: more rules in gitleaks' TOML format (`[[rules]]` with `id`, `regex`,
//!   `keywords`, `secretGroup`, `entropy`, `allowlists`), beside the built-in ones; a rule
//!   with a built-in rule's id replaces it;
//! - `disabled_rules`: comma-separated ids of rules to turn off;
//! - `pattern.<name>`: a regex; each match inside a string becomes `[REDACTED:<name>]`.

use std::cell::RefCell;

use lookout_plugin_sdk::sanitizer::Guest;
use lookout_plugin_sdk::{Batch, Config, FieldValue, Verdict};
pub use redact_rules::{Mode, Policy, Rule, RuleSet, Value};

thread_local! {
    static POLICY: RefCell<Option<Policy>> = const { RefCell::new(None) };
}

const KNOWN: &str = "mode, hash_key, extra_keys, rules, disabled_rules, pattern.<name>";

/// Builds a policy from a plugin config; the error names the offending key (and, for
/// `rules`, the rule and its field).
pub fn policy_from_config(config: &Config) -> Result<Policy, String> {
    let mut rules = RuleSet::builtin();
    let mut extra_keys = Vec::new();
    let mut disabled = Vec::new();
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
                extra_keys = value
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
            "rules" => {
                let mine = RuleSet::from_toml(value).map_err(|e| format!("config `rules`: {e}"))?;
                rules.extend(mine);
            }
            "disabled_rules" => {
                disabled = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
            }
            k if k.starts_with("pattern.") && k.len() > "pattern.".len() => {
                let name = &k["pattern.".len()..];
                let rule = Rule::pattern(name, value).map_err(|e| format!("config `{k}`: {e}"))?;
                rules.push(rule);
            }
            other => {
                return Err(format!("unknown config key `{other}` (known: {KNOWN})"));
            }
        }
    }
    let disabled: Vec<&str> = disabled.iter().map(String::as_str).collect();
    let mode = if hash_mode {
        let key = hash_key.ok_or("config `hash_key` is required when `mode` is `hash`")?;
        if key.len() < 16 {
            return Err("config `hash_key` must be at least 16 bytes".to_string());
        }
        Mode::Hash(key)
    } else {
        Mode::Redact
    };
    Policy::new(mode, extra_keys, rules)
        .disable(&disabled)
        .map_err(|e| e.to_string())
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
        POLICY.with(|p| *p.borrow_mut() = Some(policy));
        Ok(())
    }

    fn sanitize(batch: Batch) -> Verdict {
        POLICY.with(|p| {
            let mut slot = p.borrow_mut();
            // A host calls `init` first; without it, the default policy applies.
            let policy = slot.get_or_insert_with(Policy::default);
            sanitize_batch(policy, &batch)
        })
    }
}

lookout_plugin_sdk::sanitizer::export_sanitizer!(Redact);
