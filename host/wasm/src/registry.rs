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
//! per `consumer`/`metrics` plugin name — one `Slot` type, which says where its current
//! version runs (the bus's pipeline, or the bus consumer registered for it). An install and a
//! rollback are the same switch (`Slot::switch_to`).
//!
//! Names are one namespace. A plugin's calls, events and quarantines are counted by its name
//! over all its versions, and consumers' books and health checks by consumer name, so a name
//! belongs to the world it was first installed in for the host's life, and the names of
//! lookout's own consumers and placeholder sanitizers are never a plugin's. The metric names
//! a plugin would expose must be free too: not one of lookout's own (known by name, series or
//! not, and read from a gather of the host's registry — never by registering anything) nor
//! another plugin's. A push that breaks either rule is refused, naming what it collides with
//! (`names`). A name is claimed only when a push is installed: a refused push claims nothing
//! and is counted nowhere (a sanitizer's fixtures run on books nobody reads; what a
//! consumer's `init` does to its metrics is staged and replayed only at the switch), so it
//! leaves the registry as it was but for its line in the history.
//!
//! Memory is reserved per version held: `[plugins.budget] total_memory_mib` covers every
//! current version and every previous one kept warm for rollback, each at its manifest's
//! `limits.max_memory_mib`. A rollback copy's reservation goes when it is dropped (the
//! slot's next swap, or the plugin's removal).
//!
//! Once it has a store (`plugins.state_dir`), the registry keeps it in step: an install says
//! where its version came from ([`Origin`]) and is kept (the API) or supersedes what is kept
//! (the plugin folder, the configuration); a rollback swaps the kept versions; a `delete`
//! forgets them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use arc_swap::ArcSwap;
use lookout_core::{Bus, ConsumerHandle, FailurePolicy};
use parking_lot::Mutex;
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use serde::Serialize;

use crate::breaker::BreakerStatus;
use crate::budget::Budget;
use crate::custom_metrics::{RejectionCounters, family_names};
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::manifest::{Manifest, World};
use crate::names;
use crate::plugin_metrics::PluginCounters;
use crate::runner::{PluginConsumer, Runner};
use crate::runtime::Runtime;
use crate::sanitizer::WasmSanitizer;
use crate::stamp::{now_ms, sha256_hex};
use crate::store::PluginStore;

/// Swap attempts remembered for `history`.
const HISTORY_LEN: usize = 100;

/// What a version is, by world: the sanitizer the bus runs, or the runner behind a bus
/// consumer.
enum Loaded {
    Sanitizer(WasmSanitizer),
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

/// Where a slot's current version runs.
enum Runs {
    /// In the bus's pipeline: the sanitizer.
    Pipeline,
    /// Behind the bus consumer registered for the slot, which takes its runner from `swap`
    /// once per batch (a consumer or metrics plugin).
    Consumer {
        swap: Arc<ArcSwap<Runner>>,
        registration: ConsumerHandle,
    },
}

/// A running version, the one before it (kept warm for rollback), and where it runs.
struct Slot {
    current: Arc<Installed>,
    previous: Option<Arc<Installed>>,
    runs: Runs,
}

impl Slot {
    /// Makes `to` current — the bus runs it from its next batch — and keeps the version it
    /// replaces warm for rollback (dropping the one kept before); returns the replaced one.
    /// An install and a rollback are both this switch.
    fn switch_to(&mut self, bus: &Bus, to: Arc<Installed>) -> Arc<Installed> {
        match (&self.runs, &to.loaded) {
            (Runs::Pipeline, Loaded::Sanitizer(s)) => bus.set_sanitizer(Box::new(s.clone())),
            (Runs::Consumer { swap, .. }, Loaded::Runner(r)) => swap.store(r.clone()),
            _ => unreachable!("a slot holds the versions of one world (names are one namespace)"),
        }
        let from = std::mem::replace(&mut self.current, to);
        self.previous = Some(from.clone());
        from
    }
}

/// Where a version comes from, which decides what the registry keeps across restarts in its
/// store (`plugins.state_dir`, once [`PluginRegistry::keep_in`] has set it).
#[derive(Clone, Copy, Debug)]
pub enum Origin<'a> {
    /// The admin API, with the manifest as uploaded: kept (with the version before it, the
    /// rollback target), since nothing else would bring it back.
    Api { manifest_text: &'a str },
    /// The plugin folder, while running: durable by itself, so a version the API pushed for
    /// the slot is superseded and forgotten.
    Folder,
    /// The configuration, while running: the same, for the sanitizer.
    Config,
    /// Brought back from the store, loaded at start before the store is set, or a folder
    /// plugin loaded again as it was (turned back on by `plugins.disabled`, or a refused
    /// configuration change undone): what is kept stays as it is.
    Restored,
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
    pub outcome: SwapOutcome,
    /// Where the request came from: `startup`, `api`, `watch`, `config:…`, `restored`.
    pub source: String,
    pub error: Option<String>,
}

/// What a swap attempt did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SwapOutcome {
    Installed,
    RolledBack,
    Removed,
    Rejected,
}

impl SwapOutcome {
    /// As in the JSON and the `outcome` label of `lookout_plugin_swaps_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            SwapOutcome::Installed => "installed",
            SwapOutcome::RolledBack => "rolled_back",
            SwapOutcome::Removed => "removed",
            SwapOutcome::Rejected => "rejected",
        }
    }
}

impl SwapRecord {
    /// An attempt on `plugin` from `source`, now; the rest is filled in by the caller.
    fn new(outcome: SwapOutcome, plugin: &str, source: &str) -> SwapRecord {
        SwapRecord {
            at_ms: now_ms(),
            plugin: plugin.into(),
            version: None,
            sha256: String::new(),
            outcome,
            source: source.into(),
            error: None,
        }
    }
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

/// Runs every check a swap runs — names, world, `init`, `describe`, fixtures, metric names —
/// without installing anything, as if for a host whose sanitizer is named `sanitizer` and
/// runs nothing else: the checks that need a running host's other plugins are left to the
/// push. For `lookout plugin check`.
pub fn check(
    runtime: &Runtime,
    manifest: &Manifest,
    wasm: &[u8],
    sanitizer: &str,
) -> Result<CheckReport> {
    let name = &manifest.name;
    let conflict = |reason: String| Error::Conflict {
        plugin: name.clone(),
        reason,
    };
    // The host's sanitizer holds its name, as a sanitizer.
    let holder = (name == sanitizer).then_some(World::Sanitizer);
    let reason = names::lookout_own(name).or_else(|| names::held_by(name, holder?, manifest.world));
    if let Some(reason) = reason {
        return Err(conflict(reason));
    }
    let metrics = match manifest.world {
        World::Sanitizer => {
            WasmSanitizer::from_manifest(runtime, manifest, wasm)?;
            Vec::new()
        }
        World::Consumer | World::Metrics => {
            let rejections = RejectionCounters::unread()?;
            let runner = Runner::load(runtime, manifest, wasm, &rejections, None)?;
            let Some(set) = runner.metric_set() else {
                return Ok(report(manifest, wasm, Vec::new()));
            };
            if let Some(reason) = names::lookout_metric(set, &lookout_metric_names(runtime)?) {
                return Err(conflict(reason));
            }
            let prefix = format!("lookout_plugin_{}_", name.replace('-', "_"));
            set.decls()
                .iter()
                .map(|d| format!("{prefix}{}", d.name))
                .collect()
        }
    };
    Ok(report(manifest, wasm, metrics))
}

fn report(manifest: &Manifest, wasm: &[u8], metrics: Vec<String>) -> CheckReport {
    CheckReport {
        name: manifest.name.clone(),
        world: manifest.world,
        sha256: sha256_hex(wasm),
        bytes: wasm.len(),
        fixtures_passed: manifest.fixtures.len(),
        metrics,
    }
}

/// The registry's own metrics: swap attempts and running versions.
fn swap_metrics() -> Result<(IntCounterVec, IntGaugeVec)> {
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
    Ok((swaps, info))
}

/// Every name lookout's plugin machinery puts on `/metrics` — the runtime's call metrics,
/// the registry's own, the refused-update counters — whether or not it has a series yet.
fn lookout_metric_names(runtime: &Runtime) -> Result<BTreeSet<String>> {
    let (swaps, info) = swap_metrics()?;
    let rejections = RejectionCounters::unread()?;
    let mut names = runtime.metrics.names();
    names.extend(family_names(&[&swaps, &info, rejections.family()]));
    Ok(names)
}

struct State {
    /// The sanitizer's slot: one, whatever the name of the policy in it.
    sanitizer: Option<Slot>,
    /// A slot per consumer or metrics plugin, by name.
    runners: BTreeMap<String, Slot>,
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
    /// The host's own metrics, which plugins' metric names must not collide with: read
    /// (gathered) at each check, never written to by it.
    host_metrics: Registry,
    /// The names of lookout's plugin metrics, series or not (a family with no series is not
    /// in a gather, but a plugin taking its name would still break the exposition).
    lookout_metric_names: BTreeSet<String>,
    /// Where what the API installs is kept across restarts (`plugins.state_dir`), if anywhere.
    store: std::sync::OnceLock<PluginStore>,
    /// Held across a change and its keep/forget in the store, so two changes racing (an API
    /// push and a folder install of one plugin) leave the store saying what runs. Apart from
    /// `state`: an install runs the plugin's `init`, which must not hold up `/metrics`.
    store_order: Mutex<()>,
}

impl std::fmt::Debug for PluginRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRegistry").finish_non_exhaustive()
    }
}

impl State {
    /// Every slot, the sanitizer's first.
    fn slots(&self) -> impl Iterator<Item = &Slot> {
        self.sanitizer.iter().chain(self.runners.values())
    }

    /// The current version of every running plugin, the sanitizer first.
    fn running(&self) -> impl Iterator<Item = &Installed> {
        self.slots().map(|s| &*s.current)
    }

    /// The slot of the plugin called `name`: a consumer's or metrics plugin's, or the
    /// sanitizer's while a policy of that name is current (names are one namespace).
    fn slot_named(&self, name: &str) -> Option<&Slot> {
        self.runners.get(name).or_else(|| {
            self.sanitizer
                .as_ref()
                .filter(|s| s.current.manifest.name == name)
        })
    }

    fn slot_named_mut(&mut self, name: &str) -> Option<&mut Slot> {
        match self.runners.get_mut(name) {
            Some(slot) => Some(slot),
            None => self
                .sanitizer
                .as_mut()
                .filter(|s| s.current.manifest.name == name),
        }
    }

    /// The slot a push of `manifest` goes to, if it exists yet.
    fn slot_for(&self, manifest: &Manifest) -> Option<&Slot> {
        match manifest.world {
            World::Sanitizer => self.sanitizer.as_ref(),
            World::Consumer | World::Metrics => self.runners.get(&manifest.name),
        }
    }
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
    state.slots().fold((0, 0), |(current, warm), slot| {
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
        let (swaps, info) = swap_metrics()?;
        registry.register(Box::new(swaps.clone())).map_err(err)?;
        registry.register(Box::new(info.clone())).map_err(err)?;
        let rejections = RejectionCounters::new(registry)?;
        let lookout_metric_names = lookout_metric_names(&runtime)?;
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
            lookout_metric_names,
            store: std::sync::OnceLock::new(),
            store_order: Mutex::new(()),
        })
    }

    /// Keeps what the API installs in `store` from now on (set once, at start, after what it
    /// held is restored): from then on the registry keeps the store in step with every
    /// install that says where it came from ([`install_from`](Self::install_from)), every
    /// rollback and every [`delete`](Self::delete).
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
            error: Some(error),
            ..SwapRecord::new(SwapOutcome::Rejected, plugin, source)
        };
        self.push_history(&mut self.state.lock(), record);
    }

    /// The world of the running plugin `name` (the sanitizer's, if it is the sanitizer).
    pub fn world_of(&self, name: &str) -> Option<World> {
        let state = self.state.lock();
        state.slot_named(name).map(|s| s.current.manifest.world)
    }

    /// Installs as [`install`](Self::install) does, then keeps or forgets in the store by
    /// where the version came from (see [`Origin`]). A store that cannot be written is
    /// logged, not refused: the version runs either way.
    pub fn install_from(
        &self,
        manifest: Manifest,
        wasm: &[u8],
        origin: Origin<'_>,
        source: &str,
    ) -> Result<PluginInfo> {
        let _in_order = self.store_order.lock();
        let info = self.install(manifest, wasm, source)?;
        let Some(store) = self.store() else {
            return Ok(info);
        };
        match origin {
            Origin::Api { manifest_text } => {
                if let Err(e) = store.keep(info.world, &info.name, manifest_text, wasm) {
                    // Running, but not kept: say so loudly (it will not survive a restart).
                    tracing::error!(target: "lookout::plugin", plugin = %info.name, dir = %store.dir().display(), error = %e, "plugin installed but not kept on disk; it will not come back after a restart");
                }
            }
            Origin::Folder | Origin::Config => {
                if let Err(e) = store.forget(info.world, &info.name) {
                    tracing::warn!(target: "lookout::plugin", plugin = %info.name, error = %e, "cannot drop the API-pushed version kept for this plugin; it may come back at the next start");
                }
            }
            Origin::Restored => {}
        }
        Ok(info)
    }

    /// Loads a plugin and, if every check passes, makes it current. On error nothing changes.
    /// What the store keeps is not touched (see [`install_from`](Self::install_from)).
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
            World::Sanitizer => {
                WasmSanitizer::from_manifest(&self.runtime, &manifest, wasm).map(Loaded::Sanitizer)
            }
            World::Consumer | World::Metrics => {
                let reuse = self
                    .state
                    .lock()
                    .runners
                    .get(&name)
                    .and_then(|slot| slot.current.runner()?.metric_set().cloned());
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
        let world = installed.manifest.world;
        let slot = match world {
            World::Sanitizer => state.sanitizer.as_mut(),
            World::Consumer | World::Metrics => state.runners.get_mut(&name),
        };
        let previous = match slot {
            Some(slot) => {
                if slot.current.manifest.world != world {
                    return Err(Error::Conflict {
                        plugin: name,
                        reason: "a plugin of that name runs in another world; remove it first"
                            .into(),
                    });
                }
                // Certain now: what its `init` recorded in its metrics becomes real.
                if let Loaded::Runner(runner) = &installed.loaded {
                    runner.commit();
                }
                Some(slot.switch_to(&self.bus, installed.clone()))
            }
            None => {
                let runs = match &installed.loaded {
                    Loaded::Sanitizer(s) => {
                        self.bus.set_sanitizer(Box::new(s.clone()));
                        Runs::Pipeline
                    }
                    Loaded::Runner(runner) => {
                        // Before the bus can hand it a batch: a call running then would
                        // hold the instance that `commit` repoints, under the registry's
                        // lock, and its updates would land before `init`'s older ones. The
                        // set is new (nothing ran before), so a failed `register` just drops
                        // it.
                        runner.commit();
                        let swap = Arc::new(ArcSwap::new(runner.clone()));
                        let consumer = PluginConsumer {
                            current: swap.clone(),
                        };
                        let registration = self
                            .bus
                            .register(&name, consumer)
                            .map_err(|e| Error::Runtime(e.to_string()))?;
                        Runs::Consumer { swap, registration }
                    }
                };
                let slot = Slot {
                    current: installed.clone(),
                    previous: None,
                    runs,
                };
                match world {
                    World::Sanitizer => state.sanitizer = Some(slot),
                    World::Consumer | World::Metrics => {
                        state.runners.insert(name.clone(), slot);
                    }
                }
                None
            }
        };
        self.switch_info(previous.as_deref(), &installed);
        let info = installed.info(previous.as_deref());
        // Installed: from now on its calls are counted under the name, in this world.
        state.claims.insert(name.clone(), world);
        let record = SwapRecord {
            version: Some(version),
            sha256,
            ..SwapRecord::new(SwapOutcome::Installed, &name, source)
        };
        self.push_history(&mut state, record);
        tracing::info!(target: "lookout::plugin", plugin = %name, version, "plugin installed");
        Ok(info)
    }

    /// Makes the previous version current again (and the current one previous); the store,
    /// if there is one, swaps its kept versions the same way.
    pub fn rollback(&self, name: &str, source: &str) -> Result<PluginInfo> {
        let _in_order = self.store_order.lock();
        let info = self.switch_back(name, source)?;
        if let Some(store) = self.store()
            && let Err(e) = store.rolled_back(info.world, name)
        {
            tracing::error!(target: "lookout::plugin", plugin = %name, error = %e, "rolled back, but the versions kept on disk were not swapped; the next start restores the other one");
        }
        Ok(info)
    }

    fn switch_back(&self, name: &str, source: &str) -> Result<PluginInfo> {
        let mut state = self.state.lock();
        let slot = state.slot_named(name).ok_or_else(|| Error::NotFound {
            plugin: name.into(),
        })?;
        let back_to = slot.previous.clone().ok_or_else(|| Error::Conflict {
            plugin: name.into(),
            reason: "there is no previous version to roll back to".into(),
        })?;
        // The budget may have been lowered since that version ran: it is checked again (its
        // memory is reserved already, as the rollback copy; the total is unchanged).
        self.runtime.budget().admit(&back_to.manifest)?;
        self.fits_memory(&state, &back_to.manifest)?;
        let slot = state.slot_named_mut(name).expect("found above");
        let from = slot.switch_to(&self.bus, back_to.clone());
        self.switch_info(Some(&from), &back_to);
        let record = SwapRecord {
            version: Some(back_to.version),
            sha256: back_to.sha256.clone(),
            ..SwapRecord::new(SwapOutcome::RolledBack, &back_to.manifest.name, source)
        };
        self.push_history(&mut state, record);
        tracing::info!(target: "lookout::plugin", from = %name, to = %back_to.manifest.name, version = back_to.version, "plugin rolled back");
        Ok(back_to.info(Some(&from)))
    }

    /// The operator's removal (the API's `DELETE`): removed as by [`remove`](Self::remove),
    /// and what the store keeps of it forgotten, so it stays deleted after a restart.
    pub fn delete(&self, name: &str, source: &str) -> Result<()> {
        let _in_order = self.store_order.lock();
        let world = self.world_of(name);
        self.remove(name, source)?;
        if let (Some(store), Some(world)) = (self.store(), world)
            && let Err(e) = store.forget(world, name)
        {
            tracing::error!(target: "lookout::plugin", plugin = %name, error = %e, "removed, but its kept versions could not be deleted; it may come back at the next start");
        }
        Ok(())
    }

    /// Removes a consumer or metrics plugin: its bus consumer stops receiving (what it was
    /// given is still handled) and its metrics stop being exposed. What the store keeps is
    /// not touched (a plugin folder's files went, or the configuration turned it off: those
    /// bring it back themselves). The sanitizer cannot be removed: events would go out
    /// unsanitized.
    pub fn remove(&self, name: &str, source: &str) -> Result<()> {
        let mut state = self.state.lock();
        let Some(slot) = state.slot_named(name) else {
            return Err(Error::NotFound {
                plugin: name.into(),
            });
        };
        if let Runs::Pipeline = slot.runs {
            return Err(Error::Conflict {
                plugin: name.into(),
                reason: "the sanitizer cannot be removed (events would go out unsanitized); install another policy instead".into(),
            });
        }
        let slot = state
            .runners
            .remove(name)
            .expect("a consumer's slot, found above");
        if let Runs::Consumer { registration, .. } = slot.runs {
            registration.unregister();
        }
        self.set_info(&slot.current, false);
        let record = SwapRecord {
            sha256: slot.current.sha256.clone(),
            ..SwapRecord::new(SwapOutcome::Removed, name, source)
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
        let mut list: Vec<PluginInfo> = state
            .slots()
            .map(|s| s.current.info(s.previous.as_deref()))
            .collect();
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
            .filter_map(|slot| slot.current.runner()?.metric_set().cloned())
            .flat_map(|set| set.gather())
            .collect()
    }

    /// Why `name` may not be used for a plugin of `world`, if it may not.
    fn name_conflict(&self, state: &State, name: &str, world: World) -> Option<String> {
        if let Some(reason) = names::lookout_own(name) {
            return Some(reason);
        }
        if !state.runners.contains_key(name) && self.bus.consumer_names().iter().any(|c| c == name)
        {
            return Some(format!(
                "a consumer of this host that is not a plugin runs under the name `{name}`: \
                 its books are kept under that name; choose another name"
            ));
        }
        let &holder = state.claims.get(name)?;
        names::held_by(name, holder, world)
    }

    /// Why the metrics `runner` declares may not be exposed, if they may not: one of its
    /// names is lookout's own, or another plugin's (its running or its rollback version).
    fn metric_conflict(&self, state: &State, name: &str, runner: &Runner) -> Option<String> {
        let set = runner.metric_set()?;
        let mut lookouts = self.lookout_metric_names.clone();
        lookouts.extend(
            self.host_metrics
                .gather()
                .iter()
                .map(|f| f.name().to_string()),
        );
        if let Some(reason) = names::lookout_metric(set, &lookouts) {
            return Some(reason);
        }
        let mine = set.exposed_names();
        for (other, slot) in state.runners.iter().filter(|(other, _)| *other != name) {
            let versions = std::iter::once(&slot.current).chain(&slot.previous);
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
            sha256: sha256.into(),
            error: Some(error.to_string()),
            ..SwapRecord::new(SwapOutcome::Rejected, plugin, source)
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
        let (mut running, mut warm) = reserved_mib(state);
        if let Some(slot) = state.slot_for(manifest) {
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
    /// if they do not, nothing changes: [`Error::Budget`] names a plugin over a per-plugin
    /// cap, [`Error::BudgetTooSmall`] the total.
    pub fn set_budget(&self, budget: Budget) -> Result<()> {
        let state = self.state.lock();
        for installed in state.running() {
            budget.admit(&installed.manifest)?;
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
            return Err(Error::BudgetTooSmall {
                reason: format!(
                    "the running plugins' limits.max_memory_mib ({running} MiB){kept} come to \
                     {total} MiB, {} MiB over total_memory_mib ({budgeted} MiB)",
                    total - budgeted
                ),
            });
        }
        self.runtime.set_budget(budget);
        Ok(())
    }

    /// Time spent in plugin calls since the host started, every plugin and version.
    pub fn call_seconds(&self) -> f64 {
        self.runtime.metrics.call_seconds()
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
            .with_label_values(&[&record.plugin, record.outcome.as_str()])
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::BreakerState;

    /// `GET /api/v1/plugins` shows outcomes and states as the strings it always has.
    #[test]
    fn outcomes_and_states_serialize_to_their_names() {
        for outcome in [
            SwapOutcome::Installed,
            SwapOutcome::RolledBack,
            SwapOutcome::Removed,
            SwapOutcome::Rejected,
        ] {
            assert_eq!(
                serde_json::to_value(outcome).unwrap(),
                outcome.as_str(),
                "{outcome:?}"
            );
        }
        assert_eq!(SwapOutcome::RolledBack.as_str(), "rolled_back");
        for (state, name) in [
            (BreakerState::Running, "running"),
            (BreakerState::Quarantined, "quarantined"),
        ] {
            assert_eq!(serde_json::to_value(state).unwrap(), name);
            assert_eq!(state.as_str(), name);
        }
    }
}
