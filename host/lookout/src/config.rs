//! The host's configuration file (TOML). Every section and key is optional; with no file at
//! all, lookout runs with the defaults below, the embedded `redact` sanitizer and the
//! embedded dashboard. Unknown keys are errors, so a typo never silently does nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use lookout_core::BusConfig;
use lookout_wasm::Limits;
use serde::{Deserialize, Serialize};

/// Default listen address: loopback only, so a fresh install exposes nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub bus: BusConfig,
    pub sanitizer: SanitizerConfig,
    pub log: LogConfig,
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN.into(),
            max_body_bytes: lookout_server::DEFAULT_MAX_BODY_BYTES,
            dashboard: true,
        }
    }
}

/// The sanitizer every event passes before any consumer, log or API sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SanitizerConfig {
    /// `redact` (embedded) or a path to a `.wasm` component of the `sanitizer` world.
    pub plugin: String,
    /// Handed to the plugin's `init`.
    pub config: BTreeMap<String, String>,
    pub limits: Limits,
}

impl Default for SanitizerConfig {
    fn default() -> Self {
        SanitizerConfig {
            plugin: "redact".into(),
            config: BTreeMap::new(),
            limits: Limits::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: `info`, `warn,lookout=debug`, …; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
        }
    }
}

impl Config {
    /// Reads and checks a config file; the error names the file and the offending key.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let config: Config = toml::from_str(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        config
            .validate()
            .with_context(|| format!("invalid config file {}", path.display()))?;
        Ok(config)
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.listen_addr()?;
        if self.server.max_body_bytes < 1024 || self.server.max_body_bytes > 256 << 20 {
            bail!("invalid config `server.max_body_bytes`: must be between 1024 and 268435456");
        }
        self.bus.validate()?;
        Ok(())
    }

    pub fn listen_addr(&self) -> anyhow::Result<SocketAddr> {
        self.server.listen.parse().with_context(|| {
            format!(
                "invalid config `server.listen`: `{}` is not an address like 127.0.0.1:8787",
                self.server.listen
            )
        })
    }

    /// The sanitizer plugin's bytes: embedded by name, or read from a path.
    pub fn sanitizer_wasm(&self) -> anyhow::Result<(String, Vec<u8>)> {
        match self.sanitizer.plugin.as_str() {
            "redact" => Ok(("redact".into(), lookout_artifacts::plugins::REDACT.to_vec())),
            path => {
                let path = PathBuf::from(path);
                let bytes = std::fs::read(&path).with_context(|| {
                    format!(
                        "invalid config `sanitizer.plugin`: cannot read {}",
                        path.display()
                    )
                })?;
                let name = path
                    .file_stem()
                    .map_or_else(|| "sanitizer".into(), |s| s.to_string_lossy().into_owned());
                Ok((name, bytes))
            }
        }
    }
}
