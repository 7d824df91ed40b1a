//! The plugin registry: the one code path every plugin change goes through, whether it comes
//! from the admin API, the CLI or start-up.
//!
//! A swap is: check the manifest, compile the component off the hot path, check it implements
//! its world, instantiate it, run `init`, run the manifest's fixtures — and only then switch
//! atomically. Anything failing before the switch leaves the running version in place and says
//! exactly what failed. Each batch runs wholly on one version (the bus loads the sanitizer once
//! per batch); a batch in flight finishes on the old one. The previous version is kept warm, so
//! rollback is one call and instant. Every attempt is recorded in the swap history.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use lookout_core::{Bus, Event, FailurePolicy, SanitizeError, Sanitizer};
use parking_lot::Mutex;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::manifest::{Manifest, World};
use crate::runtime::{Limits, Runtime};
use crate::sanitizer::WasmSanitizer;

/// Swap attempts remembered for `history`.
const HISTORY_LEN: usize = 100;

/// One loaded version of a plugin.
struct Installed {
    version: u64,
    manifest: Manifest,
    sha256: String,
    installed_at_ms: u64,
    sanitizer: Arc<WasmSanitizer>,
}

/// What the API and CLI show of a plugin.
#[derive(Clone, Debug, Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub world: World,
    /// The host's number for this load (1, 2, …), not the author's version.
    pub version: u64,
    pub author_version: String,
    pub sha256: String,
    pub installed_at_ms: u64,
    pub on_failure: FailurePolicy,
    pub limits: Limits,
    /// The version a rollback would return to.
    pub previous: Option<PreviousInfo>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PreviousInfo {
    pub name: String,
    pub version: u64,
    pub sha256: String,
}

/// One swap attempt.
#[derive(Clone, Debug, Serialize)]
pub struct SwapRecord {
    pub at_ms: u64,
    pub plugin: String,
    /// The version that was made current, when one was.
    pub version: Option<u64>,
    pub sha256: String,
    /// `installed`, `rolled_back`, or `rejected`.
    pub outcome: &'static str,
    /// Where the request came from: `startup`, `api`, `cli`.
    pub source: String,
    pub error: Option<String>,
}

/// Hands the bus a shared, warm sanitizer (the registry keeps its own handle for rollback).
struct Current(Arc<WasmSanitizer>);

impl Sanitizer for Current {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn sanitize(&self, batch: &mut Vec<Event>) -> std::result::Result<(), SanitizeError> {
        self.0.sanitize(batch)
    }
    fn failure_policy(&self) -> FailurePolicy {
        self.0.failure_policy()
    }
}

struct State {
    sanitizer: Option<Arc<Installed>>,
    previous: Option<Arc<Installed>>,
    next_version: u64,
    history: VecDeque<SwapRecord>,
}

/// The plugins loaded into one host.
pub struct PluginRegistry {
    runtime: Runtime,
    bus: Bus,
    state: Mutex<State>,
    swaps: IntCounterVec,
    info: IntGaugeVec,
}

impl std::fmt::Debug for PluginRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRegistry").finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl PluginRegistry {
    /// A registry that swaps `bus`'s sanitizer; registers its metrics in `registry`.
    pub fn new(runtime: Runtime, bus: Bus, registry: &Registry) -> Result<PluginRegistry> {
        let err = |e: prometheus::Error| Error::Runtime(format!("plugin registry metrics: {e}"));
        let swaps = IntCounterVec::new(
            Opts::new(
                "lookout_plugin_swaps_total",
                "Plugin swap attempts by plugin and outcome (installed, rolled_back, rejected).",
            ),
            &["plugin", "outcome"],
        )
        .map_err(err)?;
        let info = IntGaugeVec::new(
            Opts::new(
                "lookout_plugin_info",
                "1 for each plugin version currently running.",
            ),
            &["plugin", "world", "version", "sha256"],
        )
        .map_err(err)?;
        registry.register(Box::new(swaps.clone())).map_err(err)?;
        registry.register(Box::new(info.clone())).map_err(err)?;
        Ok(PluginRegistry {
            runtime,
            bus,
            state: Mutex::new(State {
                sanitizer: None,
                previous: None,
                next_version: 1,
                history: VecDeque::new(),
            }),
            swaps,
            info,
        })
    }

    /// Loads a plugin and, if every check passes, makes it current. On error nothing changes.
    pub fn install(&self, manifest: Manifest, wasm: &[u8], source: &str) -> Result<PluginInfo> {
        let sha256 = sha256_hex(wasm);
        let name = manifest.name.clone();
        // The slow part — compile, instantiate, init, fixtures — runs before the lock.
        let loaded = match manifest.world {
            World::Sanitizer => WasmSanitizer::from_manifest(&self.runtime, &manifest, wasm),
            other => Err(Error::Conflict {
                plugin: name.clone(),
                reason: format!(
                    "the `{}` world is defined but this host does not run it yet",
                    other.as_str()
                ),
            }),
        };
        let sanitizer = match loaded {
            Ok(s) => Arc::new(s),
            Err(e) => {
                self.record(SwapRecord {
                    at_ms: now_ms(),
                    plugin: name.clone(),
                    version: None,
                    sha256,
                    outcome: "rejected",
                    source: source.into(),
                    error: Some(e.to_string()),
                });
                tracing::warn!(target: "lookout::plugin", plugin = %name, error = %e, "plugin swap rejected; the running version stays");
                return Err(e);
            }
        };
        let mut state = self.state.lock();
        let version = state.next_version;
        state.next_version += 1;
        let installed = Arc::new(Installed {
            version,
            manifest,
            sha256: sha256.clone(),
            installed_at_ms: now_ms(),
            sanitizer,
        });
        self.bus
            .set_sanitizer(Box::new(Current(installed.sanitizer.clone())));
        if let Some(old) = state.sanitizer.replace(installed.clone()) {
            self.set_info(&old, false);
            state.previous = Some(old);
        }
        self.set_info(&installed, true);
        let record = SwapRecord {
            at_ms: now_ms(),
            plugin: name.clone(),
            version: Some(version),
            sha256,
            outcome: "installed",
            source: source.into(),
            error: None,
        };
        Self::push_history(&mut state, record, &self.swaps);
        tracing::info!(target: "lookout::plugin", plugin = %name, version, "plugin installed");
        Ok(Self::info_of(&installed, state.previous.as_deref()))
    }

    /// Makes the previous version current again (and the current one previous).
    pub fn rollback(&self, name: &str, source: &str) -> Result<PluginInfo> {
        let mut state = self.state.lock();
        let current = state
            .sanitizer
            .clone()
            .filter(|c| c.manifest.name == name)
            .ok_or_else(|| Error::NotFound {
                plugin: name.into(),
            })?;
        let Some(previous) = state.previous.clone() else {
            return Err(Error::Conflict {
                plugin: name.into(),
                reason: "there is no previous version to roll back to".into(),
            });
        };
        self.bus
            .set_sanitizer(Box::new(Current(previous.sanitizer.clone())));
        self.set_info(&current, false);
        self.set_info(&previous, true);
        state.sanitizer = Some(previous.clone());
        state.previous = Some(current);
        let record = SwapRecord {
            at_ms: now_ms(),
            plugin: previous.manifest.name.clone(),
            version: Some(previous.version),
            sha256: previous.sha256.clone(),
            outcome: "rolled_back",
            source: source.into(),
            error: None,
        };
        Self::push_history(&mut state, record, &self.swaps);
        tracing::info!(target: "lookout::plugin", from = %name, to = %previous.manifest.name, version = previous.version, "plugin rolled back");
        Ok(Self::info_of(&previous, state.previous.as_deref()))
    }

    /// Removes a plugin. The sanitizer cannot be removed: events would go out unsanitized.
    pub fn remove(&self, name: &str) -> Result<()> {
        let state = self.state.lock();
        match &state.sanitizer {
            Some(s) if s.manifest.name == name => Err(Error::Conflict {
                plugin: name.into(),
                reason: "the sanitizer cannot be removed (events would go out unsanitized); install another policy instead".into(),
            }),
            _ => Err(Error::NotFound { plugin: name.into() }),
        }
    }

    /// Every running plugin.
    pub fn list(&self) -> Vec<PluginInfo> {
        let state = self.state.lock();
        state
            .sanitizer
            .iter()
            .map(|s| Self::info_of(s, state.previous.as_deref()))
            .collect()
    }

    /// Swap attempts, oldest first (the last [`HISTORY_LEN`]).
    pub fn history(&self) -> Vec<SwapRecord> {
        self.state.lock().history.iter().cloned().collect()
    }

    fn record(&self, record: SwapRecord) {
        Self::push_history(&mut self.state.lock(), record, &self.swaps);
    }

    fn push_history(state: &mut State, record: SwapRecord, swaps: &IntCounterVec) {
        swaps
            .with_label_values(&[&record.plugin, record.outcome])
            .inc();
        if state.history.len() == HISTORY_LEN {
            state.history.pop_front();
        }
        state.history.push_back(record);
    }

    fn set_info(&self, installed: &Installed, running: bool) {
        let version = installed.version.to_string();
        let labels = [
            installed.manifest.name.as_str(),
            installed.manifest.world.as_str(),
            &version,
            &installed.sha256,
        ];
        if running {
            self.info.with_label_values(&labels).set(1);
        } else {
            let _ = self.info.remove_label_values(&labels);
        }
    }

    fn info_of(installed: &Installed, previous: Option<&Installed>) -> PluginInfo {
        PluginInfo {
            name: installed.manifest.name.clone(),
            world: installed.manifest.world,
            version: installed.version,
            author_version: installed.manifest.version.clone(),
            sha256: installed.sha256.clone(),
            installed_at_ms: installed.installed_at_ms,
            on_failure: installed.manifest.on_failure,
            limits: installed.manifest.limits,
            previous: previous.map(|p| PreviousInfo {
                name: p.manifest.name.clone(),
                version: p.version,
                sha256: p.sha256.clone(),
            }),
        }
    }
}
