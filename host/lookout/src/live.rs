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
use lookout_server::{Applied, ConfigControl, Health, Invalid, MetricGroups};
use lookout_wasm::PluginRegistry;
use parking_lot::Mutex;
use serde_json::Value;

use crate::config::Config;
use crate::diff::{ConfigDiff, masked};
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

/// A configuration that did not parse, as the field at fault (`config` when the text itself
/// is broken) and why.
fn parse_error(e: Invalid) -> Vec<Invalid> {
    if e.field.is_empty() {
        vec![Invalid::new("config", e.reason)]
    } else {
        vec![e]
    }
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
        let mut problems: Vec<Invalid> = new.problems();
        let diff = ConfigDiff::between(old, &new);
        for field in &diff.at_start {
            problems.push(Invalid::new(
                field.clone(),
                "takes effect only at start: restart lookout to change it",
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        if diff.is_empty() {
            return Ok(Applied {
                version: current.0,
                changed: Vec::new(),
            });
        }
        let sections = diff.sections;
        // Every step that can still fail runs first, each undone (in reverse) if a later one
        // fails: the plugin budget, new pools, plugins turned on and off, the sanitizer.
        // What follows them was checked above and cannot fail.
        let mut undo = Undo::default();
        if sections.plugins_budget {
            // First: a push below (a plugin turned on, the sanitizer) is checked against the
            // new budget. Refused if the running plugins do not fit it.
            let old_budget = self.plugins.budget();
            self.plugins
                .set_budget(new.plugins.budget)
                .map_err(|e| vec![Invalid::new("plugins.budget", e.to_string())])?;
            undo.push(move || {
                if let Err(e) = self.plugins.set_budget(old_budget) {
                    tracing::error!(reason = %e, "the plugin budget could not be put back after a refused change");
                }
            });
        }
        for pool in &diff.pools.added {
            if let Err(reason) = self.pools.add((*pool).clone()) {
                undo.run();
                return Err(vec![Invalid::new(
                    format!("pools.{}", pool.name),
                    reason.to_string(),
                )]);
            }
            let name = pool.name.clone();
            undo.push(move || {
                self.pools.remove(&name, "configuration refused");
            });
        }
        if sections.plugins_disabled
            && let Err(problems) = self.apply_disabled(old, &new, source, &mut undo)
        {
            undo.run();
            return Err(problems);
        }
        if sections.sanitizer {
            // Last of the steps that can fail: nothing is left to undo it.
            let loaded = new
                .sanitizer()
                .map_err(|e| vec![Invalid::new("sanitizer.plugin", format!("{e:#}"))])
                .and_then(|(manifest, wasm)| {
                    // The configuration now names the sanitizer: one the API pushed before
                    // is superseded, and the registry forgets the version it kept.
                    self.plugins
                        .install_from(
                            manifest,
                            &wasm,
                            lookout_wasm::Origin::Config,
                            &format!("config:{source}"),
                        )
                        .map_err(|e| vec![Invalid::new("sanitizer", e.to_string())])
                });
            if let Err(problems) = loaded {
                undo.run();
                return Err(problems);
            }
        }
        undo.forget();
        for pool in &diff.pools.changed {
            if let Some(running) = self.pools.get(&pool.name)
                && let Err(reason) = running.reconfigure((*pool).clone())
            {
                // `problems()` checked the same as `reconfigure` does.
                tracing::error!(target: "lookout::config", pool = %pool.name, %reason, "a checked pool configuration was refused");
            }
        }
        for name in &diff.pools.removed {
            self.pools
                .remove(name, &format!("removed from the configuration ({source})"));
        }
        if sections.dashboard {
            self.dashboard
                .store(new.server.dashboard, std::sync::atomic::Ordering::Relaxed);
        }
        if sections.bus
            && let Err(e) = self.bus.set_config(new.bus.clone())
        {
            tracing::error!(target: "lookout::config", error = %e, "a checked bus configuration was refused");
        }
        if sections.log_level
            && let Err(reason) = self.log.set_level(&new.log.level)
        {
            tracing::error!(target: "lookout::config", %reason, "a checked log level was refused");
        }
        if sections.health {
            self.health.set_settings(new.health.settings());
        }
        if sections.metrics {
            *self.metric_groups.write() = new.metrics;
        }
        // `server.shutdown_grace_ms` is read from the stored configuration when the host
        // stops (`shutdown_grace`).
        let changed = diff.changes;
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

    /// `plugins.disabled`: plugins turned on again are loaded from the folder, then the newly
    /// turned off are removed; the undo puts both back.
    fn apply_disabled<'s>(
        &'s self,
        old: &Config,
        new: &Config,
        source: &str,
        undo: &mut Undo<'s>,
    ) -> Result<(), Vec<Invalid>> {
        let new_off: BTreeSet<String> = new.plugins.disabled.iter().cloned().collect();
        let old_off: BTreeSet<String> = old.plugins.disabled.iter().cloned().collect();
        let turned_on: BTreeSet<String> = old_off.difference(&new_off).cloned().collect();
        let fail = |e: String| vec![Invalid::new("plugins.disabled", e)];
        self.plugins
            .set_disabled(old_off.intersection(&new_off).cloned().collect(), source)
            .map_err(|e| fail(e.to_string()))?;
        if let Some(dir) = &self.plugin_dir
            && let Err(e) = dir.install_named(&turned_on, &format!("config:{source}"))
        {
            let _ = self.plugins.set_disabled(old_off, source);
            return Err(fail(format!("{e:#}")));
        }
        let removed: BTreeSet<String> = self
            .plugins
            .set_disabled(new_off, &format!("config:{source}"))
            .map_err(|e| fail(e.to_string()))?
            .into_iter()
            .collect();
        let source = source.to_string();
        undo.push(move || {
            // Back as they were: the turned-on removed again, the turned-off reloaded.
            let _ = self.plugins.set_disabled(old_off, &source);
            if let Some(dir) = &self.plugin_dir {
                let _ = dir.install_named(&removed, &source);
            }
        });
        Ok(())
    }

    /// `server.shutdown_grace_ms` of the running configuration.
    pub fn shutdown_grace(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.current.lock().1.server.shutdown_grace_ms)
    }

    /// Applies a config file's text (for the watched file).
    pub fn apply_toml(&self, text: &str, source: &str) -> Result<Applied, Vec<Invalid>> {
        let new = Config::from_toml(text).map_err(parse_error)?;
        self.apply(new, source)
    }
}

/// Steps done so far, to be undone in reverse if a later one fails.
#[derive(Default)]
struct Undo<'a>(Vec<Box<dyn FnOnce() + 'a>>);

impl<'a> Undo<'a> {
    fn push(&mut self, step: impl FnOnce() + 'a) {
        self.0.push(Box::new(step));
    }

    fn run(&mut self) {
        while let Some(step) = self.0.pop() {
            step();
        }
    }

    /// Everything that could fail has succeeded: nothing is to be undone.
    fn forget(&mut self) {
        self.0.clear();
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
                .map_err(|e| vec![Invalid::new("config", format!("not JSON: {e}"))])?;
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
    fn patches_merge() {
        let mut value = serde_json::json!({"a": {"b": 1, "c": 2}, "d": 3});
        merge(
            &mut value,
            &serde_json::json!({"a": {"b": 5, "c": null}, "e": 4}),
        );
        assert_eq!(value, serde_json::json!({"a": {"b": 5}, "d": 3, "e": 4}));
    }
}
