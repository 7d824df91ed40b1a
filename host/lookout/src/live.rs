//! The running configuration, changeable without a restart through one path — the API
//! (`PUT`/`PATCH /api/v1/config`), `lookout config apply` and the watched config file all
//! call [`LiveConfig::apply`]. A new configuration is checked whole (every invalid field
//! named); settings that only take effect at start are refused with that reason; the steps
//! that can still fail — plugins turned back on (loaded from the folder) and the sanitizer,
//! if it changed — run first, and a failure undoes them both. Only then is everything else
//! applied, the version bumped, and one `config.changed` event and log line published per
//! changed field.

use std::collections::BTreeSet;
use std::sync::Arc;

use lookout_core::{Bus, Event};
use lookout_server::{Applied, Change, ConfigControl, Health, Invalid, MetricGroups};
use lookout_wasm::PluginRegistry;
use parking_lot::Mutex;
use serde_json::{Map, Value};

use crate::config::Config;
use crate::logging::LogLevel;

/// What the command line and the environment set over the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub log_format: Option<crate::logging::LogFormat>,
}

impl Overrides {
    pub fn apply(&self, config: &mut Config) {
        if let Some(listen) = &self.listen {
            config.server.listen = listen.clone();
        }
        if let Some(format) = self.log_format {
            config.log.format = format;
        }
    }
}

/// The running pieces a configuration change reaches.
pub struct Parts {
    pub bus: Bus,
    pub plugins: Arc<PluginRegistry>,
    pub log: LogLevel,
    pub health: Health,
    pub metric_groups: Arc<parking_lot::RwLock<MetricGroups>>,
    pub pools: Arc<lookout_pool::Pools>,
    /// Whether the dashboard is served (`server.dashboard`).
    pub dashboard: Arc<std::sync::atomic::AtomicBool>,
    /// Where plugins turned on again are loaded from.
    pub plugin_dir: Option<Arc<crate::watch::PluginDir>>,
}

pub struct LiveConfig {
    current: Mutex<(u64, Config)>,
    overrides: Overrides,
    bus: Bus,
    plugins: Arc<PluginRegistry>,
    log: LogLevel,
    health: Health,
    metric_groups: Arc<parking_lot::RwLock<MetricGroups>>,
    pools: Arc<lookout_pool::Pools>,
    dashboard: Arc<std::sync::atomic::AtomicBool>,
    plugin_dir: Option<Arc<crate::watch::PluginDir>>,
}

impl std::fmt::Debug for LiveConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveConfig")
            .field("version", &self.current.lock().0)
            .finish_non_exhaustive()
    }
}

/// Settings read only at start: changing them needs a restart, and a change says so.
const AT_START: &[&str] = &[
    "server.listen",
    "server.max_body_bytes",
    "server.max_plugin_bytes",
    "server.admin_token",
    "bus.ingress_capacity",
    "plugins.cache",
    "plugins.cache_dir",
    "plugins.dir",
    "plugins.state_dir",
    "log.format",
    "nats",
];

/// Keys whose values are secrets: shown as `***`.
fn is_secret(path: &str) -> bool {
    let last = path.rsplit('.').next().unwrap_or(path).to_ascii_lowercase();
    path.contains(".env.")
        || ["token", "secret", "password", "hash_key", "key"]
            .iter()
            .any(|s| last.contains(s) && last != "keep_numbers")
}

/// `config` as dotted paths → values, secrets masked.
fn flatten(config: &Config) -> Map<String, Value> {
    fn walk(prefix: &str, value: &Value, out: &mut Map<String, Value>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&path, v, out);
                }
            }
            // Tables in arrays (`[[pools]]`) by name (`pools.demo.size`), so a pool added,
            // removed or moved changes only its own fields; by position when nameless.
            Value::Array(items) if items.iter().any(Value::is_object) => {
                for (i, v) in items.iter().enumerate() {
                    let key = v["name"]
                        .as_str()
                        .map_or_else(|| i.to_string(), str::to_string);
                    walk(&format!("{prefix}.{key}"), v, out);
                }
            }
            other => {
                let shown = if is_secret(prefix) && !other.is_null() {
                    Value::String("***".into())
                } else {
                    other.clone()
                };
                out.insert(prefix.to_string(), shown);
            }
        }
    }
    let mut out = Map::new();
    walk(
        "",
        &serde_json::to_value(config).unwrap_or_default(),
        &mut out,
    );
    out
}

/// `config` as JSON with secrets masked.
fn masked(config: &Config) -> Value {
    fn walk(prefix: &str, value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&path, v);
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter_mut().enumerate() {
                    walk(&format!("{prefix}.{i}"), v);
                }
            }
            other if is_secret(prefix) && !other.is_null() => {
                *other = Value::String("***".into());
            }
            _ => {}
        }
    }
    let mut value = serde_json::to_value(config).unwrap_or_default();
    walk("", &mut value);
    value
}

/// RFC 7396: `patch` merged into `target`.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (k, v) in patch {
                if v.is_null() {
                    target.remove(k);
                } else {
                    merge(target.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A configuration that did not parse, as the field at fault (`config` when the text itself
/// is broken) and why.
fn parse_error(e: crate::config::ParseError) -> Vec<Invalid> {
    let field = if e.field.is_empty() {
        "config".to_string()
    } else {
        e.field
    };
    vec![invalid(field, e.reason)]
}

impl LiveConfig {
    pub fn new(config: Config, overrides: Overrides, parts: Parts) -> LiveConfig {
        LiveConfig {
            current: Mutex::new((1, config)),
            overrides,
            bus: parts.bus,
            plugins: parts.plugins,
            log: parts.log,
            health: parts.health,
            metric_groups: parts.metric_groups,
            pools: parts.pools,
            dashboard: parts.dashboard,
            plugin_dir: parts.plugin_dir,
        }
    }

    /// Checks `new` whole, then applies it; on any problem nothing changes.
    pub fn apply(&self, mut new: Config, source: &str) -> Result<Applied, Vec<Invalid>> {
        self.overrides.apply(&mut new);
        let mut current = self.current.lock();
        let old = &current.1;
        let mut problems: Vec<Invalid> = new
            .problems()
            .into_iter()
            .map(|(field, reason)| invalid(field, reason))
            .collect();
        let (before, after) = (flatten(old), flatten(&new));
        let mut changed: Vec<Change> = Vec::new();
        for field in before
            .keys()
            .chain(after.keys().filter(|k| !before.contains_key(*k)))
        {
            let (from, to) = (
                before.get(field).cloned().unwrap_or(Value::Null),
                after.get(field).cloned().unwrap_or(Value::Null),
            );
            // Masked values compare equal: compare the real ones for secrets.
            if from != to || (is_secret(field) && self.secret_changed(old, &new, field)) {
                changed.push(Change {
                    field: field.clone(),
                    from,
                    to,
                });
            }
        }
        for change in &changed {
            if AT_START
                .iter()
                .any(|p| change.field == *p || change.field.starts_with(&format!("{p}.")))
            {
                problems.push(invalid(
                    change.field.clone(),
                    "takes effect only at start: restart lookout to change it",
                ));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        if changed.is_empty() {
            return Ok(Applied {
                version: current.0,
                changed,
            });
        }
        // The plugin budget first: a push below (a plugin turned on, the sanitizer) is checked
        // against the new one. Refused if the running plugins do not fit it; put back if a
        // later step fails.
        let old_budget = self.plugins.budget();
        if changed
            .iter()
            .any(|c| c.field.starts_with("plugins.budget."))
        {
            self.plugins
                .set_budget(new.plugins.budget)
                .map_err(|reason| vec![invalid("plugins.budget", reason)])?;
        }
        let undo_budget = || {
            if let Err(reason) = self.plugins.set_budget(old_budget) {
                tracing::error!(%reason, "the plugin budget could not be put back after a refused change");
            }
        };
        // Plugins turned on again are loaded from the folder (a failure undoes it), then the
        // newly turned off are removed. Undone if the sanitizer below fails to load.
        let mut undo_plugins: Option<(BTreeSet<String>, BTreeSet<String>)> = None;
        if changed.iter().any(|c| c.field == "plugins.disabled") {
            let new_off: BTreeSet<String> = new.plugins.disabled.iter().cloned().collect();
            let old_off: BTreeSet<String> = old.plugins.disabled.iter().cloned().collect();
            let turned_on: BTreeSet<String> = old_off.difference(&new_off).cloned().collect();
            let fail = |e: String| {
                undo_budget();
                vec![invalid("plugins.disabled", e)]
            };
            self.plugins
                .set_disabled(old_off.intersection(&new_off).cloned().collect(), source)
                .map_err(|e| fail(e.to_string()))?;
            if let Some(dir) = &self.plugin_dir
                && let Err(e) = dir.install_named(&turned_on, &format!("config:{source}"))
            {
                let _ = self.plugins.set_disabled(old_off, source);
                return Err(fail(format!("{e:#}")));
            }
            let removed = self
                .plugins
                .set_disabled(new_off, &format!("config:{source}"))
                .map_err(|e| fail(e.to_string()))?;
            undo_plugins = Some((old_off, removed.into_iter().collect()));
        }
        // The sanitizer next: loading it is the last step that can still fail, and a failure
        // leaves everything as it was.
        if changed.iter().any(|c| c.field.starts_with("sanitizer.")) {
            let loaded = new
                .sanitizer()
                .map_err(|e| vec![invalid("sanitizer.plugin", format!("{e:#}"))])
                .and_then(|(manifest, wasm)| {
                    self.plugins
                        .install(manifest, &wasm, &format!("config:{source}"))
                        .map_err(|e| vec![invalid("sanitizer", e.to_string())])
                });
            if loaded.is_ok()
                && let Some(store) = self.plugins.store()
                && let Err(e) = store.forget(lookout_wasm::World::Sanitizer, "")
            {
                // The configuration now names the sanitizer; one the API pushed before is
                // superseded.
                tracing::warn!(target: "lookout::plugin", error = %e, "cannot drop the API-pushed sanitizer kept on disk; it may come back at the next start");
            }
            if let Err(problems) = loaded {
                if let Some((old_off, removed)) = undo_plugins {
                    // Back as they were: the turned-on removed again, the turned-off reloaded.
                    let _ = self.plugins.set_disabled(old_off, source);
                    if let Some(dir) = &self.plugin_dir {
                        let _ = dir.install_named(&removed, source);
                    }
                }
                undo_budget();
                return Err(problems);
            }
        }
        // New pools next (starting one can still fail: then those just started are removed
        // again), then changed ones; removed ones last, once nothing can fail any more.
        let running = |name: &str| old.pools.iter().any(|p| p.name == name);
        let mut started: Vec<&str> = Vec::new();
        for pool in new.pools.iter().filter(|p| !running(&p.name)) {
            if let Err(reason) = self.pools.add(pool.clone()) {
                for name in started {
                    self.pools.remove(name, "configuration refused");
                }
                undo_budget();
                return Err(vec![invalid(format!("pools.{}", pool.name), reason)]);
            }
            started.push(&pool.name);
        }
        for pool in new.pools.iter().filter(|p| running(&p.name)) {
            let prefix = format!("pools.{}.", pool.name);
            if changed.iter().any(|c| c.field.starts_with(&prefix))
                && let Some(running) = self.pools.get(&pool.name)
            {
                running
                    .reconfigure(pool.clone())
                    .map_err(|reason| vec![invalid(format!("pools.{}", pool.name), reason)])?;
            }
        }
        for pool in &old.pools {
            if !new.pools.iter().any(|p| p.name == pool.name) {
                self.pools.remove(
                    &pool.name,
                    &format!("removed from the configuration ({source})"),
                );
            }
        }
        if changed.iter().any(|c| c.field == "server.dashboard") {
            self.dashboard
                .store(new.server.dashboard, std::sync::atomic::Ordering::Relaxed);
        }
        if changed.iter().any(|c| c.field.starts_with("bus.")) {
            self.bus
                .set_config(new.bus.clone())
                .map_err(|e| vec![invalid("bus", e.to_string())])?;
        }
        if changed.iter().any(|c| c.field == "log.level") {
            self.log
                .set_level(&new.log.level)
                .map_err(|reason| vec![invalid("log.level", reason)])?;
        }
        if changed.iter().any(|c| c.field.starts_with("health.")) {
            self.health.set_settings(new.health.settings());
        }
        if changed.iter().any(|c| c.field.starts_with("metrics.")) {
            *self.metric_groups.write() = new.metrics;
        }
        current.0 += 1;
        current.1 = new;
        let version = current.0;
        drop(current);
        for change in &changed {
            tracing::info!(target: "lookout::config", field = %change.field, from = %change.from, to = %change.to, version, source, "configuration changed");
            self.bus.publish(
                Event::new("config.changed")
                    .field("field", change.field.as_str())
                    .field("from", change.from.to_string())
                    .field("to", change.to.to_string())
                    .field("version", version as i64)
                    .field("source", source),
            );
        }
        Ok(Applied { version, changed })
    }

    fn secret_changed(&self, old: &Config, new: &Config, field: &str) -> bool {
        let value = |c: &Config| {
            let mut v = serde_json::to_value(c).unwrap_or_default();
            for part in field.split('.') {
                v = v.get(part).cloned().unwrap_or_default();
            }
            v
        };
        value(old) != value(new)
    }

    /// Applies a config file's text (for the watched file).
    pub fn apply_toml(&self, text: &str, source: &str) -> Result<Applied, Vec<Invalid>> {
        let new = Config::from_toml(text).map_err(parse_error)?;
        self.apply(new, source)
    }
}

impl ConfigControl for LiveConfig {
    fn current(&self) -> (u64, Value) {
        let current = self.current.lock();
        (current.0, masked(&current.1))
    }

    fn replace(&self, text: &str, json: bool, source: &str) -> Result<Applied, Vec<Invalid>> {
        if json {
            let value: Value = serde_json::from_str(text)
                .map_err(|e| vec![invalid("config", format!("not JSON: {e}"))])?;
            let new = Config::from_json(value).map_err(parse_error)?;
            self.apply(new, source)
        } else {
            self.apply_toml(text, source)
        }
    }

    fn patch(&self, patch: Value, source: &str) -> Result<Applied, Vec<Invalid>> {
        let mut value = serde_json::to_value(&self.current.lock().1).unwrap_or_default();
        merge(&mut value, &patch);
        let new = Config::from_json(value).map_err(parse_error)?;
        self.apply(new, source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_and_patches_merge() {
        let mut config = Config::default();
        config.server.admin_token = Some("a-very-long-admin-token".into());
        config
            .sanitizer
            .config
            .insert("hash_key".into(), "0123456789abcdef".into());
        config.pools[0]
            .env
            .insert("DB_PASSWORD".into(), "hunter2".into());
        let shown = masked(&config).to_string();
        assert!(!shown.contains("a-very-long-admin-token"), "{shown}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let flat = flatten(&config);
        assert_eq!(flat["server.admin_token"], "***");
        assert_eq!(flat["log.level"], "info");

        let mut value = serde_json::json!({"a": {"b": 1, "c": 2}, "d": 3});
        merge(
            &mut value,
            &serde_json::json!({"a": {"b": 5, "c": null}, "e": 4}),
        );
        assert_eq!(value, serde_json::json!({"a": {"b": 5}, "d": 3, "e": 4}));
    }
}
