//! What changed between two configurations, decided on the typed values, section by section
//! (the way Vector's `ConfigDiff` does it): pools by name (added / changed / removed), then
//! each section that a running piece reads. Secrets are compared on their real values; they
//! are masked only in the [`Change`]s that are shown (log, `config.changed`, API answer).

use lookout_pool::PoolConfig;
use lookout_server::Change;
use serde_json::{Map, Value};

use crate::config::Config;

/// The difference between the running configuration and a new one.
#[derive(Debug)]
pub struct ConfigDiff<'a> {
    /// Every changed setting, as a dotted path with its old and new value (secrets masked).
    pub changes: Vec<Change>,
    /// Settings read only at start that changed: each refuses the change, by name.
    pub at_start: Vec<String>,
    pub pools: PoolsDiff<'a>,
    pub sections: Sections,
}

/// Pools by name.
#[derive(Debug, Default)]
pub struct PoolsDiff<'a> {
    pub added: Vec<&'a PoolConfig>,
    /// The new configuration of each pool whose settings changed.
    pub changed: Vec<&'a PoolConfig>,
    pub removed: Vec<&'a str>,
}

/// Which live sections changed (each is applied to its running piece as a whole).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Sections {
    pub bus: bool,
    pub sanitizer: bool,
    pub plugins_disabled: bool,
    pub plugins_budget: bool,
    pub log_level: bool,
    pub health: bool,
    pub metrics: bool,
    pub dashboard: bool,
}

impl<'a> ConfigDiff<'a> {
    pub fn between(old: &'a Config, new: &'a Config) -> ConfigDiff<'a> {
        let changes = changes(old, new);
        let sections = Sections {
            bus: old.bus != new.bus,
            sanitizer: old.sanitizer != new.sanitizer,
            plugins_disabled: old.plugins.disabled != new.plugins.disabled,
            plugins_budget: old.plugins.budget != new.plugins.budget,
            log_level: old.log.level != new.log.level,
            health: old.health != new.health,
            metrics: old.metrics != new.metrics,
            dashboard: old.server.dashboard != new.server.dashboard,
        };
        // Read once at start, by the piece named: the listener, the body limits, the admin
        // routes' guard, the ingress queue, the plugin cache and folders, the log writer and
        // the NATS connection and the OTLP exporter.
        let start_only: [(&str, bool); 12] = [
            ("server.listen", old.server.listen != new.server.listen),
            (
                "server.max_body_bytes",
                old.server.max_body_bytes != new.server.max_body_bytes,
            ),
            (
                "server.max_plugin_bytes",
                old.server.max_plugin_bytes != new.server.max_plugin_bytes,
            ),
            (
                "server.admin_token",
                old.server.admin_token != new.server.admin_token,
            ),
            (
                "bus.ingress_capacity",
                old.bus.ingress_capacity != new.bus.ingress_capacity,
            ),
            ("plugins.cache", old.plugins.cache != new.plugins.cache),
            (
                "plugins.cache_dir",
                old.plugins.cache_dir != new.plugins.cache_dir,
            ),
            ("plugins.dir", old.plugins.dir != new.plugins.dir),
            (
                "plugins.state_dir",
                old.plugins.state_dir != new.plugins.state_dir,
            ),
            ("log.format", old.log.format != new.log.format),
            ("nats", old.nats != new.nats),
            ("otlp", old.otlp != new.otlp),
        ];
        let mut at_start = Vec::new();
        for (path, changed) in start_only {
            if !changed {
                continue;
            }
            // Named by the settings that changed under it (`nats.url`), or by itself.
            let under: Vec<String> = changes
                .iter()
                .filter(|c| c.field == path || c.field.starts_with(&format!("{path}.")))
                .map(|c| c.field.clone())
                .collect();
            if under.is_empty() {
                at_start.push(path.to_string());
            } else {
                at_start.extend(under);
            }
        }
        let running = |name: &str| old.pools.iter().find(|p| p.name == name);
        let pools = PoolsDiff {
            added: new
                .pools
                .iter()
                .filter(|p| running(&p.name).is_none())
                .collect(),
            changed: new
                .pools
                .iter()
                .filter(|p| running(&p.name).is_some_and(|old| old != *p))
                .collect(),
            removed: old
                .pools
                .iter()
                .filter(|p| !new.pools.iter().any(|n| n.name == p.name))
                .map(|p| p.name.as_str())
                .collect(),
        };
        ConfigDiff {
            changes,
            at_start,
            pools,
            sections,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// Whether the setting at `path` holds a secret: shown as `***`.
pub fn is_secret(path: &str) -> bool {
    let last = path.rsplit('.').next().unwrap_or(path).to_ascii_lowercase();
    // A pool's environment is where its workers' credentials go, the OTLP headers where the
    // collector's are: every value is masked.
    path.contains(".env.")
        || path.starts_with("otlp.headers.")
        || ["token", "secret", "password", "hash_key", "key"]
            .iter()
            .any(|s| last.contains(s) && last != "keep_numbers")
}

/// `config` as JSON with secrets masked.
pub fn masked(config: &Config) -> Value {
    fn walk(prefix: &str, value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    walk(&join(prefix, k), v);
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter_mut().enumerate() {
                    // Pools by name, as in the change list.
                    let key = v["name"]
                        .as_str()
                        .map_or_else(|| i.to_string(), str::to_string);
                    walk(&join(prefix, &key), v);
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

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Every leaf that differs, compared on the real values, shown masked.
fn changes(old: &Config, new: &Config) -> Vec<Change> {
    let (before, after) = (leaves(old), leaves(new));
    let shown = |path: &str, value: Option<&Value>| match value {
        None => Value::Null,
        Some(v) if is_secret(path) && !v.is_null() => Value::String("***".into()),
        Some(v) => v.clone(),
    };
    before
        .keys()
        .chain(after.keys().filter(|k| !before.contains_key(*k)))
        .filter(|path| before.get(*path) != after.get(*path))
        .map(|path| Change {
            field: path.clone(),
            from: shown(path, before.get(path)),
            to: shown(path, after.get(path)),
        })
        .collect()
}

/// `config` as dotted paths → real values. Tables in arrays (`[[pools]]`) go by name
/// (`pools.demo.size`), so a pool added, removed or moved changes only its own fields.
fn leaves(config: &Config) -> Map<String, Value> {
    fn walk(prefix: &str, value: &Value, out: &mut Map<String, Value>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    walk(&join(prefix, k), v, out);
                }
            }
            Value::Array(items) if items.iter().any(Value::is_object) => {
                for (i, v) in items.iter().enumerate() {
                    let key = v["name"]
                        .as_str()
                        .map_or_else(|| i.to_string(), str::to_string);
                    walk(&join(prefix, &key), v, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.clone());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pool_env(config: &mut Config, key: &str, value: &str) {
        config.pools[0].env.insert(key.into(), value.into());
    }

    #[test]
    fn a_rotated_secret_is_a_change_shown_masked() {
        let mut old = Config::default();
        pool_env(&mut old, "DB_PASSWORD", "old-password");
        pool_env(&mut old, "MODE", "a");
        let mut new = old.clone();
        pool_env(&mut new, "DB_PASSWORD", "new-password");
        pool_env(&mut new, "MODE", "b");
        let diff = ConfigDiff::between(&old, &new);
        let fields: Vec<&str> = diff.changes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            ["pools.demo.env.DB_PASSWORD", "pools.demo.env.MODE"]
        );
        for change in &diff.changes {
            assert_eq!((&change.from, &change.to), (&"***".into(), &"***".into()));
        }
        assert_eq!(diff.pools.changed.len(), 1);
        assert!(diff.at_start.is_empty());
        let shown = serde_json::to_string(&diff.changes).unwrap();
        assert!(!shown.contains("password\""), "{shown}");
        assert!(!shown.contains("new-password"), "{shown}");
    }

    #[test]
    fn start_only_settings_are_named_and_sections_are_typed() {
        let old = Config::default();
        let mut new = old.clone();
        new.server.listen = "127.0.0.1:9999".into();
        new.server.admin_token = Some("a-brand-new-admin-token".into());
        new.bus.sampling.default_rate = 0.5;
        let diff = ConfigDiff::between(&old, &new);
        assert_eq!(diff.at_start, ["server.listen", "server.admin_token"]);
        assert!(diff.sections.bus);
        assert!(!diff.sections.health);
        let token = diff
            .changes
            .iter()
            .find(|c| c.field == "server.admin_token")
            .unwrap();
        assert_eq!(token.to, "***");
    }

    #[test]
    fn otlp_is_start_only_and_its_headers_are_secrets() {
        let mut old = Config::default();
        old.otlp
            .headers
            .insert("authorization".into(), "Bearer old-collector-key".into());
        let mut new = old.clone();
        new.otlp
            .headers
            .insert("authorization".into(), "Bearer new-collector-key".into());
        new.otlp.batch_max = 100;
        let diff = ConfigDiff::between(&old, &new);
        assert_eq!(
            diff.at_start,
            ["otlp.batch_max", "otlp.headers.authorization"]
        );
        let shown = format!("{:?} {}", diff.changes, masked(&new));
        assert!(!shown.contains("collector-key"), "{shown}");
        assert!(shown.contains("***"), "{shown}");
    }

    #[test]
    fn pools_go_by_name() {
        let old = Config::default();
        let mut new = old.clone();
        let mut extra = old.pools[0].clone();
        extra.name = "billing".into();
        new.pools.insert(0, extra);
        let diff = ConfigDiff::between(&old, &new);
        // Moving `demo` to the second place changes nothing about it.
        assert_eq!(
            diff.pools
                .added
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>(),
            ["billing"]
        );
        assert!(diff.pools.changed.is_empty() && diff.pools.removed.is_empty());
        assert!(
            diff.changes
                .iter()
                .all(|c| c.field.starts_with("pools.billing."))
        );

        let diff = ConfigDiff::between(&new, &old);
        assert_eq!(diff.pools.removed, ["billing"]);
    }

    #[test]
    fn masked_hides_every_secret() {
        let mut config = Config::default();
        config.server.admin_token = Some("a-very-long-admin-token".into());
        config
            .sanitizer
            .config
            .insert("hash_key".into(), "0123456789abcdef".into());
        pool_env(&mut config, "DB_PASSWORD", "hunter2");
        pool_env(&mut config, "PLAIN", "visible-only-by-key");
        let shown = masked(&config).to_string();
        for secret in [
            "a-very-long-admin-token",
            "0123456789abcdef",
            "hunter2",
            "visible-only-by-key",
        ] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("\"level\":\"info\""), "{shown}");
    }
}
