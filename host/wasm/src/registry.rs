//! The plugin registry: the one code path every plugin change goes through, whether it comes
//! from the admin API, the CLI or start-up.
//!
//! A swap is: check the manifest, compile the component off the hot path, check it implements
//! its world, instantiate it, run `init` (and `describe` for metrics plugins), run the
//! manifest's fixtures — and only then switch atomically. Anything failing before the switch
//! leaves the running version in place and says exactly what failed. Each batch runs wholly on
//! one version: the bus loads the sanitizer once per batch, and a consumer plugin's bus
//! consumer loads its version once per batch. The previous version is kept warm, so rollback
//! is one call and instant. Every attempt is recorded in the swap history.
//!
//! There is one sanitizer slot (swapping a policy replaces it, whatever its name) and one slot
//! per `consumer`/`metrics` plugin name.
//!
//! Names are one namespace. A plugin's calls, events and quarantines are counted by its name
//! over all its versions, and consumers' books and health checks by consumer name, so a name
//! belongs to the world it was first installed in for the host's life, and the names of
//! lookout's own consumers and placeholder sanitizers are never a plugin's. The metric names
//! a plugin would expose must be free too: not one of lookout's own (asked of the host's
//! registry) nor another plugin's. A push that breaks either rule is refused, naming what it
//! collides with. A name is claimed only when a push is installed: a refused push claims
//! nothing and is counted nowhere (a sanitizer's fixtures run on books nobody reads), so it
//! leaves the registry as it was but for its line in the history.
//!
//! Memory is reserved per version held: `[plugins.budget] total_memory_mib` covers every
//! current version and every previous one kept warm for rollback, each at its manifest's
//! `limits.max_memory_mib`. A rollback copy's reservation goes when it is dropped (the
//! slot's next swap, or the plugin's removal).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use lookout_core::{
    BUILT_IN_CONSUMERS, Bus, ConsumerHandle, Event, FailurePolicy, PassThrough, RedactAll,
    SanitizeError, Sanitizer,
};
use parking_lot::Mutex;
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::breaker::BreakerStatus;
use crate::budget::Budget;
use crate::custom_metrics::RejectionCounters;
use crate::error::{Error, Result};
use crate::manifest::{Manifest, World};
use crate::runner::{PluginConsumer, Runner};
use crate::runtime::{Limits, PluginCounters, Runtime};
use crate::sanitizer::WasmSanitizer;
use crate::store::PluginStore;

/// Swap attempts remembered for `history`.
const HISTORY_LEN: usize = 100;

enum Loaded {
    Sanitizer(Arc<WasmSanitizer>),
    Runner(Arc<Runner>),
}

/// One loaded version of a plugin.
struct Installed {
    version: u64,
    manifest: Manifest,
    sha256: String,
    installed_at_ms: u64,
    loaded: Loaded,
}

/// A running version and the one before it.
struct Slot {
    current: Arc<Installed>,
    previous: Option<Arc<Installed>>,
}

/// A consumer or metrics plugin: its slot, the version its bus consumer runs, its registration.
struct RunnerSlot {
    slot: Slot,
    swap: Arc<ArcSwap<Runner>>,
    registration: ConsumerHandle,
}

/// What the API and CLI show of a plugin.
#[derive(Clone, Debug, Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub world: World,
    /// The host's load number for this version (1, 2, …), not the author's version.
    pub version: u64,
    pub author_version: String,
    pub sha256: String,
    pub installed_at_ms: u64,
    pub on_failure: FailurePolicy,
    pub limits: Limits,
    /// The version a rollback would return to.
    pub previous: Option<PreviousInfo>,
    /// Running or quarantined, when it retries, and the last error.
    pub status: BreakerStatus,
    /// Calls, failures, events in and time spent, over all its versions.
    pub counters: PluginCounters,
    /// A sanitizer's redactions by rule, over all its versions, read from the markers of
    /// the replacements it made (docs/plugins.md); absent for other worlds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redactions: Option<BTreeMap<String, u64>>,
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
    /// `installed`, `rolled_back`, `removed` or `rejected`.
    pub outcome: &'static str,
    /// Where the request came from: `startup`, `api`, `watch`, `config:…`, `restored`.
    pub source: String,
    pub error: Option<String>,
}

/// What `check` found: the plugin loads, implements its world and passes its fixtures.
#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    pub name: String,
    pub world: World,
    pub sha256: String,
    pub bytes: usize,
    pub fixtures_passed: usize,
    /// Custom metrics it may update, as exposed on `/metrics`.
    pub metrics: Vec<String>,
}

/// Runs every check a swap runs — world, `init`, `describe`, fixtures — without installing
/// anything. For `lookout plugin check`.
pub fn check(runtime: &Runtime, manifest: &Manifest, wasm: &[u8]) -> Result<CheckReport> {
    let metrics = match manifest.world {
        World::Sanitizer => {
            WasmSanitizer::from_manifest(runtime, manifest, wasm)?;
            Vec::new()
        }
        World::Consumer | World::Metrics => {
            let rejections = RejectionCounters::new(&Registry::new())?;
            let runner = Runner::load(runtime, manifest, wasm, &rejections, None)?;
            let prefix = format!("lookout_plugin_{}_", manifest.name.replace('-', "_"));
            runner
                .metric_set()
                .map(|set| {
                    set.decls()
                        .iter()
                        .map(|d| format!("{prefix}{}", d.name))
                        .collect()
                })
                .unwrap_or_default()
        }
    };
    Ok(CheckReport {
        name: manifest.name.clone(),
        world: manifest.world,
        sha256: sha256_hex(wasm),
        bytes: wasm.len(),
        fixtures_passed: manifest.fixtures.len(),
        metrics,
    })
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
    sanitizer: Option<Slot>,
    runners: BTreeMap<String, RunnerSlot>,
    next_version: u64,
    history: VecDeque<SwapRecord>,
    /// Names turned off by configuration (`plugins.disabled`): not installed from anywhere.
    disabled: BTreeSet<String>,
    /// The world each name was first pushed in: its counters are kept under that name.
    claims: BTreeMap<String, World>,
}

/// The plugins loaded into one host.
pub struct PluginRegistry {
    runtime: Runtime,
    bus: Bus,
    state: Mutex<State>,
    swaps: IntCounterVec,
    info: IntGaugeVec,
    rejections: RejectionCounters,
    /// The host's own metrics, which plugins' metric names must not collide with.
    host_metrics: Registry,
    /// Where what the API installs is kept across restarts (`plugins.state_dir`), if anywhere.
    store: std::sync::OnceLock<PluginStore>,
}

impl std::fmt::Debug for PluginRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRegistry").finish_non_exhaustive()
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every slot, the sanitizer's first.
fn slots(state: &State) -> impl Iterator<Item = &Slot> {
    state
        .sanitizer
        .iter()
        .chain(state.runners.values().map(|r| &r.slot))
}

/// The current version of every running plugin, the sanitizer first.
fn running(state: &State) -> impl Iterator<Item = &Installed> {
    slots(state).map(|s| &*s.current)
}

/// What a version reserves of `total_memory_mib`.
fn memory_mib(installed: &Installed) -> u64 {
    u64::from(installed.manifest.limits.max_memory_mib)
}

/// The rest of a memory refusal after the pushed plugin's own figure: what the others hold.
fn held_by_others(running: u64, warm: u64) -> String {
    if warm == 0 {
        return format!(" and the running plugins' {running} MiB");
    }
    format!(
        ", the running plugins' {running} MiB and the {warm} MiB of the previous versions kept \
         warm for rollback"
    )
}

/// Memory reserved now: by the current versions, and by the previous ones kept warm.
fn reserved_mib(state: &State) -> (u64, u64) {
    slots(state).fold((0, 0), |(current, warm), slot| {
        let previous = slot.previous.as_deref().map_or(0, memory_mib);
        (current + memory_mib(&slot.current), warm + previous)
    })
}

impl Installed {
    fn runner(&self) -> Option<&Arc<Runner>> {
        match &self.loaded {
            Loaded::Runner(r) => Some(r),
            Loaded::Sanitizer(_) => None,
        }
    }

    fn info(&self, previous: Option<&Installed>) -> PluginInfo {
        PluginInfo {
            name: self.manifest.name.clone(),
            world: self.manifest.world,
            version: self.version,
            author_version: self.manifest.version.clone(),
            sha256: self.sha256.clone(),
            installed_at_ms: self.installed_at_ms,
            on_failure: self.manifest.on_failure,
            limits: self.manifest.limits,
            status: match &self.loaded {
                Loaded::Sanitizer(s) => s.status(),
                Loaded::Runner(r) => r.status(),
            },
            previous: previous.map(|p| PreviousInfo {
                name: p.manifest.name.clone(),
                version: p.version,
                sha256: p.sha256.clone(),
            }),
            counters: PluginCounters::default(),
            redactions: (self.manifest.world == World::Sanitizer).then(BTreeMap::new),
        }
    }
}

impl PluginRegistry {
    /// A registry that runs plugins on `bus`; registers its metrics in `registry`.
    pub fn new(runtime: Runtime, bus: Bus, registry: &Registry) -> Result<PluginRegistry> {
        let err = |e: prometheus::Error| Error::Runtime(format!("plugin registry metrics: {e}"));
        let swaps = IntCounterVec::new(
            Opts::new(
                "lookout_plugin_swaps_total",
                "Plugin swap attempts by plugin and outcome (installed, rolled_back, removed, rejected).",
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
        let rejections = RejectionCounters::new(registry)?;
        Ok(PluginRegistry {
            runtime,
            bus,
            state: Mutex::new(State {
                sanitizer: None,
                runners: BTreeMap::new(),
                next_version: 1,
                history: VecDeque::new(),
                disabled: BTreeSet::new(),
                claims: BTreeMap::new(),
            }),
            swaps,
            info,
            rejections,
            host_metrics: registry.clone(),
            store: std::sync::OnceLock::new(),
        })
    }

    /// Keeps what the API installs in `store` from now on (set once, at start).
    pub fn keep_in(&self, store: PluginStore) {
        let _ = self.store.set(store);
    }

    /// The store of API-installed plugins, if there is one.
    pub fn store(&self) -> Option<&PluginStore> {
        self.store.get()
    }

    /// Records a version refused before it reached `install` (a kept file that is damaged):
    /// it shows in the swap history and `lookout_plugin_swaps_total{outcome="rejected"}` like
    /// any refused swap.
    pub fn record_rejected(&self, plugin: &str, source: &str, error: String) {
        let record = SwapRecord {
            at_ms: now_ms(),
            plugin: plugin.into(),
            version: None,
            sha256: String::new(),
            outcome: "rejected",
            source: source.into(),
            error: Some(error),
        };
        self.push_history(&mut self.state.lock(), record);
    }

    /// The world of the running plugin `name` (the sanitizer's, if it is the sanitizer).
    pub fn world_of(&self, name: &str) -> Option<World> {
        let state = self.state.lock();
        if state
            .sanitizer
            .as_ref()
            .is_some_and(|s| s.current.manifest.name == name)
        {
            return Some(World::Sanitizer);
        }
        state
            .runners
            .get(name)
            .map(|r| r.slot.current.manifest.world)
    }

    /// Loads a plugin and, if every check passes, makes it current. On error nothing changes.
    pub fn install(&self, manifest: Manifest, wasm: &[u8], source: &str) -> Result<PluginInfo> {
        let sha256 = sha256_hex(wasm);
        let name = manifest.name.clone();
        if self.state.lock().disabled.contains(&name) {
            return Err(Error::Conflict {
                plugin: name,
                reason: "turned off by the configuration (`plugins.disabled`)".into(),
            });
        }
        {
            let mut state = self.state.lock();
            if let Some(reason) = self.name_conflict(&state, &name, manifest.world) {
                return Err(self.refuse(&mut state, &name, &sha256, source, reason));
            }
            // Before compiling: a push that cannot fit costs nothing.
            if let Err(e) = self.fits_memory(&state, &manifest) {
                return Err(self.reject(&mut state, &name, &sha256, source, e));
            }
        }
        // The slow part — compile, instantiate, init, fixtures — runs outside the lock, and
        // counts nothing under the name: the name is not claimed until the switch.
        let loaded = match manifest.world {
            World::Sanitizer => WasmSanitizer::from_manifest(&self.runtime, &manifest, wasm)
                .map(|s| Loaded::Sanitizer(Arc::new(s))),
            World::Consumer | World::Metrics => {
                let reuse = self
                    .state
                    .lock()
                    .runners
                    .get(&name)
                    .and_then(|r| r.slot.current.runner()?.metric_set().cloned());
                Runner::load(&self.runtime, &manifest, wasm, &self.rejections, reuse)
                    .map(|r| Loaded::Runner(Arc::new(r)))
            }
        };
        let loaded = match loaded {
            Ok(loaded) => loaded,
            Err(e) => return Err(self.reject(&mut self.state.lock(), &name, &sha256, source, e)),
        };

        let mut state = self.state.lock();
        // Again at the switch: another push, of another world, may have taken the name.
        if let Some(reason) = self.name_conflict(&state, &name, manifest.world) {
            return Err(self.refuse(&mut state, &name, &sha256, source, reason));
        }
        if let Loaded::Runner(runner) = &loaded
            && let Some(reason) = self.metric_conflict(&state, &name, runner)
        {
            return Err(self.refuse(&mut state, &name, &sha256, source, reason));
        }
        // Again at the switch: another push may have been installed meanwhile.
        if let Err(e) = self.fits_memory(&state, &manifest) {
            return Err(self.reject(&mut state, &name, &sha256, source, e));
        }
        let version = state.next_version;
        state.next_version += 1;
        let installed = Arc::new(Installed {
            version,
            manifest,
            sha256: sha256.clone(),
            installed_at_ms: now_ms(),
            loaded,
        });
        let info = match &installed.loaded {
            Loaded::Sanitizer(s) => {
                self.bus.set_sanitizer(Box::new(Current(s.clone())));
                let previous = state.sanitizer.take().map(|old| old.current);
                let slot = Slot {
                    current: installed.clone(),
                    previous,
                };
                self.switch_info(slot.previous.as_deref(), &installed);
                let info = installed.info(slot.previous.as_deref());
                state.sanitizer = Some(slot);
                info
            }
            Loaded::Runner(runner) => {
                if let Some(existing) = state.runners.get_mut(&name) {
                    if existing.slot.current.manifest.world != installed.manifest.world {
                        drop(state);
                        return Err(Error::Conflict {
                            plugin: name,
                            reason: "a plugin of that name runs in another world; remove it first"
                                .into(),
                        });
                    }
                    existing.swap.store(runner.clone());
                    let old = std::mem::replace(&mut existing.slot.current, installed.clone());
                    existing.slot.previous = Some(old);
                    let previous = existing.slot.previous.clone();
                    self.switch_info(previous.as_deref(), &installed);
                    installed.info(previous.as_deref())
                } else {
                    let swap = Arc::new(ArcSwap::new(runner.clone()));
                    let registration = self
                        .bus
                        .register(
                            &name,
                            PluginConsumer {
                                current: swap.clone(),
                            },
                        )
                        .map_err(|e| Error::Runtime(e.to_string()))?;
                    self.switch_info(None, &installed);
                    let info = installed.info(None);
                    state.runners.insert(
                        name.clone(),
                        RunnerSlot {
                            slot: Slot {
                                current: installed.clone(),
                                previous: None,
                            },
                            swap,
                            registration,
                        },
                    );
                    info
                }
            }
        };
        // Installed: from now on its calls are counted under the name, in this world.
        state.claims.insert(name.clone(), installed.manifest.world);
        let record = SwapRecord {
            at_ms: now_ms(),
            plugin: name.clone(),
            version: Some(version),
            sha256,
            outcome: "installed",
            source: source.into(),
            error: None,
        };
        self.push_history(&mut state, record);
        tracing::info!(target: "lookout::plugin", plugin = %name, version, "plugin installed");
        Ok(info)
    }

    /// Makes the previous version current again (and the current one previous).
    pub fn rollback(&self, name: &str, source: &str) -> Result<PluginInfo> {
        let mut state = self.state.lock();
        let no_previous = || Error::Conflict {
            plugin: name.into(),
            reason: "there is no previous version to roll back to".into(),
        };
        let back_to = state
            .sanitizer
            .as_ref()
            .filter(|s| s.current.manifest.name == name)
            .and_then(|s| s.previous.clone())
            .or_else(|| state.runners.get(name)?.slot.previous.clone());
        if let Some(back_to) = back_to {
            // The budget may have been lowered since that version ran: it is checked again
            // (its memory is reserved already, as the rollback copy; the total is unchanged).
            self.runtime.budget().admit(&back_to.manifest)?;
            self.fits_memory(&state, &back_to.manifest)?;
        }
        let (from, to) = if let Some(slot) = state
            .sanitizer
            .as_mut()
            .filter(|s| s.current.manifest.name == name)
        {
            let previous = slot.previous.clone().ok_or_else(no_previous)?;
            let Loaded::Sanitizer(s) = &previous.loaded else {
                unreachable!("the sanitizer slot holds sanitizers")
            };
            self.bus.set_sanitizer(Box::new(Current(s.clone())));
            let current = std::mem::replace(&mut slot.current, previous.clone());
            slot.previous = Some(current.clone());
            (current, previous)
        } else if let Some(slot) = state.runners.get_mut(name) {
            let previous = slot.slot.previous.clone().ok_or_else(no_previous)?;
            let runner = previous
                .runner()
                .expect("runner slots hold runners")
                .clone();
            slot.swap.store(runner);
            let current = std::mem::replace(&mut slot.slot.current, previous.clone());
            slot.slot.previous = Some(current.clone());
            (current, previous)
        } else {
            return Err(Error::NotFound {
                plugin: name.into(),
            });
        };
        self.switch_info(Some(&from), &to);
        let record = SwapRecord {
            at_ms: now_ms(),
            plugin: to.manifest.name.clone(),
            version: Some(to.version),
            sha256: to.sha256.clone(),
            outcome: "rolled_back",
            source: source.into(),
            error: None,
        };
        self.push_history(&mut state, record);
        tracing::info!(target: "lookout::plugin", from = %name, to = %to.manifest.name, version = to.version, "plugin rolled back");
        Ok(to.info(Some(&from)))
    }

    /// Removes a consumer or metrics plugin: its bus consumer stops receiving (what it was
    /// given is still handled) and its metrics stop being exposed. The sanitizer cannot be
    /// removed: events would go out unsanitized.
    pub fn remove(&self, name: &str, source: &str) -> Result<()> {
        let mut state = self.state.lock();
        // A consumer or metrics plugin of that name is what is meant (names are one
        // namespace, so it is never also the sanitizer's).
        if !state.runners.contains_key(name)
            && state
                .sanitizer
                .as_ref()
                .is_some_and(|s| s.current.manifest.name == name)
        {
            return Err(Error::Conflict {
                plugin: name.into(),
                reason: "the sanitizer cannot be removed (events would go out unsanitized); install another policy instead".into(),
            });
        }
        let slot = state.runners.remove(name).ok_or_else(|| Error::NotFound {
            plugin: name.into(),
        })?;
        slot.registration.unregister();
        self.set_info(&slot.slot.current, false);
        let record = SwapRecord {
            at_ms: now_ms(),
            plugin: name.into(),
            version: None,
            sha256: slot.slot.current.sha256.clone(),
            outcome: "removed",
            source: source.into(),
            error: None,
        };
        self.push_history(&mut state, record);
        Ok(())
    }

    /// Turns plugins off by name (`plugins.disabled`): the running ones among them are
    /// removed, and installing one is refused until it is turned on again. Turning the
    /// sanitizer off is refused, and then nothing changes. Returns the names it removed.
    pub fn set_disabled(&self, names: BTreeSet<String>, source: &str) -> Result<Vec<String>> {
        let running: Vec<String> = {
            let mut state = self.state.lock();
            if let Some(sanitizer) = state
                .sanitizer
                .as_ref()
                .filter(|s| names.contains(&s.current.manifest.name))
            {
                return Err(Error::Conflict {
                    plugin: sanitizer.current.manifest.name.clone(),
                    reason: "the sanitizer cannot be turned off (events would go out unsanitized); choose another with `sanitizer.plugin`".into(),
                });
            }
            let running = names
                .iter()
                .filter(|n| state.runners.contains_key(*n))
                .cloned()
                .collect();
            state.disabled = names;
            running
        };
        for name in &running {
            self.remove(name, source)?;
        }
        Ok(running)
    }

    /// Whether `name` is turned off by the configuration.
    pub fn is_disabled(&self, name: &str) -> bool {
        self.state.lock().disabled.contains(name)
    }

    /// Every running plugin: the sanitizer first, then the others by name.
    pub fn list(&self) -> Vec<PluginInfo> {
        let state = self.state.lock();
        let sanitizer = state
            .sanitizer
            .iter()
            .map(|s| s.current.info(s.previous.as_deref()));
        let runners = state
            .runners
            .values()
            .map(|r| r.slot.current.info(r.slot.previous.as_deref()));
        let mut list: Vec<PluginInfo> = sanitizer.chain(runners).collect();
        for info in &mut list {
            info.counters = self.runtime.metrics.counters(&info.name);
            if let Some(redactions) = &mut info.redactions {
                *redactions = self.runtime.metrics.redactions.counts(&info.name);
            }
        }
        list
    }

    /// Swap attempts, oldest first (the last [`HISTORY_LEN`]).
    pub fn history(&self) -> Vec<SwapRecord> {
        self.state.lock().history.iter().cloned().collect()
    }

    /// The custom metrics of every running plugin, for `/metrics`.
    pub fn gather_custom(&self) -> Vec<MetricFamily> {
        let state = self.state.lock();
        state
            .runners
            .values()
            .filter_map(|r| r.slot.current.runner()?.metric_set().cloned())
            .flat_map(|set| set.gather())
            .collect()
    }

    /// Why `name` may not be used for a plugin of `world`, if it may not.
    fn name_conflict(&self, state: &State, name: &str, world: World) -> Option<String> {
        if BUILT_IN_CONSUMERS.contains(&name) {
            return Some(format!(
                "`{name}` is the name of one of lookout's own consumers ({}): its books and \
                 health check are kept under that name; choose another name",
                BUILT_IN_CONSUMERS.join(", ")
            ));
        }
        let placeholders = [RedactAll.name(), PassThrough.name()];
        if placeholders.contains(&name) {
            return Some(format!(
                "`{name}` is the name of one of lookout's own sanitizers ({}); choose another \
                 name",
                placeholders.join(", ")
            ));
        }
        if !state.runners.contains_key(name) && self.bus.consumer_names().iter().any(|c| c == name)
        {
            return Some(format!(
                "a consumer of this host that is not a plugin runs under the name `{name}`: \
                 its books are kept under that name; choose another name"
            ));
        }
        match state.claims.get(name) {
            Some(&claimed) if claimed != world => Some(format!(
                "the name `{name}` belongs to a {} plugin in this host (its calls and events \
                 are counted under it, over all its versions, until the host restarts): \
                 plugin names are one namespace across worlds; choose another name for this \
                 {} plugin",
                claimed.as_str(),
                world.as_str()
            )),
            _ => None,
        }
    }

    /// Why the metrics `runner` declares may not be exposed, if they may not: one of its
    /// names is lookout's own, or another plugin's (its running or its rollback version).
    fn metric_conflict(&self, state: &State, name: &str, runner: &Runner) -> Option<String> {
        let set = runner.metric_set()?;
        if let Some(ours) = set.collision_with(&self.host_metrics) {
            return Some(format!(
                "its metrics would collide with lookout's own metric `{ours}` on /metrics; \
                 rename the metric or the plugin"
            ));
        }
        let mine = set.exposed_names();
        for (other, slot) in state.runners.iter().filter(|(other, _)| *other != name) {
            let versions = std::iter::once(&slot.slot.current).chain(&slot.slot.previous);
            for installed in versions {
                let Some(theirs) = installed.runner().and_then(|r| r.metric_set()) else {
                    continue;
                };
                if let Some(both) = mine.intersection(&theirs.exposed_names()).next() {
                    return Some(format!(
                        "its metric `{both}` would collide with the same name of plugin \
                         `{other}` on /metrics; rename the metric or the plugin"
                    ));
                }
            }
        }
        None
    }

    /// Records a refused push of `plugin` in the history and the log, and hands back why.
    fn reject(
        &self,
        state: &mut State,
        plugin: &str,
        sha256: &str,
        source: &str,
        error: Error,
    ) -> Error {
        let record = SwapRecord {
            at_ms: now_ms(),
            plugin: plugin.into(),
            version: None,
            sha256: sha256.into(),
            outcome: "rejected",
            source: source.into(),
            error: Some(error.to_string()),
        };
        self.push_history(state, record);
        tracing::warn!(target: "lookout::plugin", plugin = %plugin, error = %error, "plugin swap rejected; the running version stays");
        error
    }

    /// Whether `manifest` fits the budget's memory of all plugins together once installed in
    /// its slot (the sanitizer's, or the one of its name): there it is current, the version
    /// it replaces is kept warm for rollback, and the copy kept before that is dropped.
    fn fits_memory(&self, state: &State, manifest: &Manifest) -> Result<()> {
        let budget = self.runtime.budget();
        let slot = match manifest.world {
            World::Sanitizer => state.sanitizer.as_ref(),
            World::Consumer | World::Metrics => state.runners.get(&manifest.name).map(|r| &r.slot),
        };
        let (mut running, mut warm) = reserved_mib(state);
        if let Some(slot) = slot {
            let replaced = memory_mib(&slot.current);
            running -= replaced;
            warm = warm - slot.previous.as_deref().map_or(0, memory_mib) + replaced;
        }
        let asked = u64::from(manifest.limits.max_memory_mib);
        let total = u64::from(budget.total_memory_mib);
        let sum = running + warm + asked;
        if sum <= total {
            return Ok(());
        }
        Err(Error::Budget {
            plugin: manifest.name.clone(),
            reason: format!(
                "its limits.max_memory_mib = {asked}{} come to {sum} MiB, {} MiB over \
                 plugins.budget.total_memory_mib ({total} MiB)",
                held_by_others(running, warm),
                sum - total
            ),
        })
    }

    /// Sets the host-wide budget (`[plugins.budget]`) for every push from now on — after
    /// checking that the running plugins, and the versions kept warm for rollback, fit it;
    /// if they do not, nothing changes.
    pub fn set_budget(&self, budget: Budget) -> std::result::Result<(), String> {
        let state = self.state.lock();
        for installed in running(&state) {
            budget
                .admit(&installed.manifest)
                .map_err(|e| e.to_string())?;
        }
        let (running, warm) = reserved_mib(&state);
        let total = running + warm;
        let budgeted = u64::from(budget.total_memory_mib);
        if total > budgeted {
            let kept = if warm > 0 {
                format!(" and the {warm} MiB of the previous versions kept warm for rollback")
            } else {
                String::new()
            };
            return Err(format!(
                "the running plugins' limits.max_memory_mib ({running} MiB){kept} come to \
                 {total} MiB, {} MiB over total_memory_mib ({budgeted} MiB)",
                total - budgeted
            ));
        }
        self.runtime.set_budget(budget);
        Ok(())
    }

    /// The host-wide budget pushes are checked against.
    pub fn budget(&self) -> Budget {
        self.runtime.budget()
    }

    /// A push refused for its name (a collision): recorded like any refusal.
    fn refuse(
        &self,
        state: &mut State,
        name: &str,
        sha256: &str,
        source: &str,
        reason: String,
    ) -> Error {
        let error = Error::Conflict {
            plugin: name.into(),
            reason,
        };
        self.reject(state, name, sha256, source, error)
    }

    fn push_history(&self, state: &mut State, record: SwapRecord) {
        self.swaps
            .with_label_values(&[&record.plugin, record.outcome])
            .inc();
        if state.history.len() == HISTORY_LEN {
            state.history.pop_front();
        }
        state.history.push_back(record);
    }

    fn switch_info(&self, from: Option<&Installed>, to: &Installed) {
        if let Some(from) = from {
            self.set_info(from, false);
        }
        self.set_info(to, true);
    }

    fn set_info(&self, installed: &Installed, running: bool) {
        let version = installed.version.to_string();
        let labels = [
            installed.manifest.name.as_str(),
            installed.manifest.world.as_str(),
            &version,
            &installed.sha256,
        ];
        let quarantined = &self.runtime.metrics.quarantined;
        if running {
            self.info.with_label_values(&labels).set(1);
            // A new version starts healthy; its gauge exists from the start, so alerts on it
            // work before the first quarantine.
            quarantined.with_label_values(&[labels[0]]).set(0);
        } else {
            let _ = self.info.remove_label_values(&labels);
            let _ = quarantined.remove_label_values(&[labels[0]]);
        }
    }
}
