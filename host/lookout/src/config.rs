//! The host's configuration file (TOML). Every section and key is optional; with no file at
//! all, lookout runs with the defaults below, the embedded `redact` sanitizer and the
//! embedded dashboard. Unknown keys are errors, so a typo never silently does nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use lookout_core::{BusConfig, FailurePolicy, Invalid};
use lookout_wasm::{Budget, Limits, Manifest, World};
use serde::{Deserialize, Serialize};

/// Default listen address: loopback only, so a fresh install exposes nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub bus: BusConfig,
    pub sanitizer: SanitizerConfig,
    pub plugins: PluginsConfig,
    pub log: LogConfig,
    pub health: HealthConfig,
    pub metrics: lookout_server::MetricGroups,
    /// Sharing sanitized events with other hosts through NATS (off by default).
    pub nats: lookout_nats::NatsConfig,
    /// Exporting sanitized spans and events to an OpenTelemetry collector (OTLP; off by
    /// default).
    pub otlp: lookout_otlp::OtlpConfig,
    /// Worker pools. A config file runs exactly the pools it lists (none if it lists none);
    /// without a file, lookout runs the `demo` pool (the embedded demo app, `python3`).
    #[serde(default)]
    pub pools: Vec<lookout_pool::PoolConfig>,
}

impl Default for Config {
    fn default() -> Self {
        let mut demo = lookout_pool::PoolConfig::new("demo", &[]);
        demo.app = Some("demo".into());
        Config {
            server: ServerConfig::default(),
            bus: BusConfig::default(),
            sanitizer: SanitizerConfig::default(),
            plugins: PluginsConfig::default(),
            log: LogConfig::default(),
            health: HealthConfig::default(),
            metrics: lookout_server::MetricGroups::default(),
            nats: lookout_nats::NatsConfig::default(),
            otlp: lookout_otlp::OtlpConfig::default(),
            pools: vec![demo],
        }
    }
}

/// How plugins are kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// Keep compiled plugins on disk, so a restart does not recompile them.
    pub cache: bool,
    /// Where; default `$XDG_CACHE_HOME/lookout/wasm` or `$HOME/.cache/lookout/wasm`.
    pub cache_dir: Option<PathBuf>,
    /// The plugin folder (`<name>.wasm` + `<name>.toml` pairs), loaded at start and watched;
    /// `--plugins` overrides it.
    pub dir: Option<PathBuf>,
    /// Plugins turned off by name: removed if running, not loaded from the folder or the API
    /// until taken off this list (changeable while running). Not the sanitizer.
    pub disabled: Vec<String>,
    /// Keep the plugins installed through the API (and the version before each) here, so a
    /// restart brings them back; without it they last until the host stops.
    pub state_dir: Option<PathBuf>,
    /// What all plugins together may take from the host, and the most a manifest may ask for
    /// in the fields that act on the whole host (changeable while running; a change the
    /// running plugins do not fit is refused, saying by how much).
    pub budget: Budget,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            cache: true,
            cache_dir: None,
            dir: None,
            disabled: Vec::new(),
            state_dir: None,
            budget: Budget::default(),
        }
    }
}

impl PluginsConfig {
    /// The cache folder to use, if any.
    pub fn cache_dir(&self) -> Option<PathBuf> {
        if !self.cache {
            return None;
        }
        self.cache_dir.clone().or_else(|| {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
            Some(base.join("lookout/wasm"))
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on; `--listen` overrides it.
    pub listen: String,
    /// Largest `POST /api/v1/events` body, in bytes; larger ones get 413.
    pub max_body_bytes: usize,
    /// Serve the dashboard at `/`.
    pub dashboard: bool,
    /// Bearer token for the mutating admin routes (plugin swaps); at least 16 characters.
    /// Without one they accept loopback clients only. `LOOKOUT_ADMIN_TOKEN` overrides it.
    pub admin_token: Option<String>,
    /// Largest plugin upload (manifest + component), in bytes.
    pub max_plugin_bytes: usize,
    /// On SIGTERM/SIGINT: how long requests in flight, then the bus and its consumers, may
    /// take to finish; what is left then is counted and logged. Pools stop within their own
    /// `stop_grace_ms`.
    pub shutdown_grace_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN.into(),
            max_body_bytes: lookout_server::DEFAULT_MAX_BODY_BYTES,
            dashboard: true,
            admin_token: None,
            max_plugin_bytes: lookout_server::DEFAULT_MAX_PLUGIN_BYTES,
            shutdown_grace_ms: 10_000,
        }
    }
}

/// The sanitizer every event passes before any consumer, log or API sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SanitizerConfig {
    /// An embedded sanitizer (`redact`, `allowlist`) or a path to a `.wasm` component of the
    /// `sanitizer` world.
    pub plugin: String,
    /// Handed to the plugin's `init`.
    pub config: BTreeMap<String, String>,
    pub limits: Limits,
    /// What happens to a batch the sanitizer failed on: `redact` every field, or `drop` it.
    pub on_failure: FailurePolicy,
}

impl Default for SanitizerConfig {
    fn default() -> Self {
        SanitizerConfig {
            plugin: "redact".into(),
            config: BTreeMap::new(),
            limits: Limits::default(),
            on_failure: FailurePolicy::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: `info`, `warn,lookout=debug`, …; `RUST_LOG` overrides it.
    pub level: String,
    /// `json` (one object a line) or `pretty` (for a terminal); `--log-format` overrides it.
    pub format: crate::logging::LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: crate::logging::LogFormat::Json,
        }
    }
}

/// How readiness is judged; each pool's criteria are in its `[pools.health]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// A check's new state must hold this long before it counts (no flapping on one slow
    /// request).
    pub hold_ms: u64,
    /// How often the checks run (transitions are reported from there).
    pub interval_ms: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            hold_ms: 5_000,
            interval_ms: 1_000,
        }
    }
}

impl HealthConfig {
    pub fn settings(&self) -> lookout_server::HealthSettings {
        lookout_server::HealthSettings {
            hold: std::time::Duration::from_millis(self.hold_ms),
            interval: std::time::Duration::from_millis(self.interval_ms),
        }
    }
}

/// A configuration that did not parse: the dotted path of the key at fault (`pools.0.size`,
/// `bus.sampling.defualt_rate`; empty when the text itself is broken) and why.
fn parse_error(path: &serde_path_to_error::Path, reason: &str) -> Invalid {
    let field = path.to_string();
    // serde_path_to_error says `.` for the root.
    let field = if field == "." { String::new() } else { field };
    Invalid::new(field, one_line(reason))
}

/// A TOML error on one line: its message, then where (the quoted source lines dropped).
fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    match lines.split_first() {
        Some((first, rest)) if first.starts_with("TOML parse error at ") => {
            let what: Vec<&str> = rest.iter().filter(|l| !l.contains('|')).copied().collect();
            format!(
                "{} ({})",
                what.join(" "),
                first.trim_start_matches("TOML parse error at ")
            )
        }
        _ => lines.join(" "),
    }
}

impl Config {
    /// Parses TOML; an error names the key path at fault.
    pub fn from_toml(text: &str) -> Result<Config, Invalid> {
        let document = toml::Deserializer::parse(text)
            .map_err(|e| Invalid::new("", one_line(&e.to_string())))?;
        serde_path_to_error::deserialize(document)
            .map_err(|e| parse_error(e.path(), &e.inner().to_string()))
    }

    /// Parses JSON (a whole configuration, or one merged from a patch); an error names the
    /// key path at fault.
    pub fn from_json(value: serde_json::Value) -> Result<Config, Invalid> {
        serde_path_to_error::deserialize(value)
            .map_err(|e| parse_error(e.path(), &e.inner().to_string()))
    }

    /// Reads and checks a config file; the error names the file and the offending key.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let config = Config::from_toml(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        config
            .validate()
            .with_context(|| format!("invalid config file {}", path.display()))?;
        Ok(config)
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        let problems = self.problems();
        if problems.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = problems.iter().map(Invalid::to_string).collect();
        bail!("invalid config {}", list.join("; "))
    }

    /// Every problem serde cannot see, each naming its field.
    pub fn problems(&self) -> Vec<Invalid> {
        let mut problems: Vec<Invalid> = self.nats.problems();
        problems.extend(self.otlp.problems());
        let mut bad = |field: &str, reason: &str| problems.push(Invalid::new(field, reason));
        let sanitizer = self.sanitizer_name();
        if self.plugins.disabled.contains(&sanitizer) {
            bad(
                "plugins.disabled",
                &format!(
                    "`{sanitizer}` is the sanitizer and cannot be turned off (events would go out unsanitized); choose another with `sanitizer.plugin`"
                ),
            );
        }
        for invalid in self.plugins.budget.problems() {
            let invalid = invalid.under("plugins.budget");
            bad(&invalid.field, &invalid.reason);
        }
        let budget = &self.plugins.budget;
        if self.sanitizer.limits.call_timeout_ms > budget.max_sanitizer_timeout_ms {
            bad(
                "sanitizer.limits.call_timeout_ms",
                &format!(
                    "at most {} (plugins.budget.max_sanitizer_timeout_ms): every publisher waits on the sanitizer",
                    budget.max_sanitizer_timeout_ms
                ),
            );
        }
        if self.sanitizer.limits.max_memory_mib > budget.total_memory_mib {
            bad(
                "sanitizer.limits.max_memory_mib",
                &format!(
                    "at most {} (plugins.budget.total_memory_mib)",
                    budget.total_memory_mib
                ),
            );
        }
        if self.server.listen.parse::<SocketAddr>().is_err() {
            bad(
                "server.listen",
                &format!(
                    "`{}` is not an address like 127.0.0.1:8787",
                    self.server.listen
                ),
            );
        }
        if self.server.max_body_bytes < 1024 || self.server.max_body_bytes > 256 << 20 {
            bad(
                "server.max_body_bytes",
                "must be between 1024 and 268435456",
            );
        }
        if self.server.shutdown_grace_ms > 600_000 {
            bad("server.shutdown_grace_ms", "at most 600000 (10 minutes)");
        }
        if self.server.max_plugin_bytes < 1024 || self.server.max_plugin_bytes > 256 << 20 {
            bad(
                "server.max_plugin_bytes",
                "must be between 1024 and 268435456",
            );
        }
        if self
            .server
            .admin_token
            .as_ref()
            .is_some_and(|t| t.len() < 16)
        {
            bad("server.admin_token", "use at least 16 characters");
        }
        for invalid in self.bus.problems() {
            bad(&invalid.field, &invalid.reason);
        }
        if self.health.interval_ms == 0 || self.health.interval_ms > 60_000 {
            bad("health.interval_ms", "must be 1–60000");
        }
        if self.health.hold_ms > 600_000 {
            bad("health.hold_ms", "must be at most 600000");
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            bad(
                "log.level",
                &format!("`{}` is not a level filter: {e}", self.log.level),
            );
        }
        let mut names = std::collections::BTreeSet::new();
        for pool in &self.pools {
            for invalid in pool.problems() {
                bad(&invalid.field, &invalid.reason);
            }
            if !names.insert(pool.name.as_str()) {
                bad("pools", &format!("two pools are named `{}`", pool.name));
            }
        }
        problems
    }

    pub fn listen_addr(&self) -> anyhow::Result<SocketAddr> {
        self.server.listen.parse().with_context(|| {
            format!(
                "invalid config `server.listen`: `{}` is not an address like 127.0.0.1:8787",
                self.server.listen
            )
        })
    }

    /// The sanitizer's manifest and bytes: an embedded plugin by name, or one read from a path.
    /// The name the sanitizer runs under: the embedded plugin's, or the file's stem.
    pub fn sanitizer_name(&self) -> String {
        let plugin = self.sanitizer.plugin.as_str();
        match lookout_artifacts::plugins::by_name(plugin) {
            Some(_) => plugin.to_string(),
            None => PathBuf::from(plugin)
                .file_stem()
                .map_or_else(|| "sanitizer".into(), |s| s.to_string_lossy().into_owned()),
        }
    }

    pub fn sanitizer(&self) -> anyhow::Result<(Manifest, Vec<u8>)> {
        let plugin = self.sanitizer.plugin.as_str();
        let name = self.sanitizer_name();
        let wasm = match lookout_artifacts::plugins::by_name(plugin) {
            Some(bytes) => bytes.to_vec(),
            None => std::fs::read(plugin).with_context(|| {
                format!("invalid config `sanitizer.plugin`: cannot read {plugin}")
            })?,
        };
        if wasm.is_empty() {
            bail!(
                "the embedded `{name}` plugin is empty: this binary was built with LOOKOUT_SKIP_WASM_BUILD=1"
            );
        }
        let mut manifest = Manifest::new(&name, World::Sanitizer);
        manifest.config = self.sanitizer.config.clone();
        manifest.limits = self.sanitizer.limits;
        manifest.on_failure = self.sanitizer.on_failure;
        Ok((manifest, wasm))
    }

    /// The admin token: `LOOKOUT_ADMIN_TOKEN`, else `server.admin_token`.
    pub fn admin_token(&self) -> Option<String> {
        std::env::var("LOOKOUT_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .or_else(|| self.server.admin_token.clone())
    }
}
