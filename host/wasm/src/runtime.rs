//! The wasmtime engine, the sandbox every plugin runs in, and the host functions plugins
//! import. A plugin gets: no filesystem, network, environment, args or inherited stdio; a
//! memory cap; a deadline on every call (epoch interruption). A trap ends that call only.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use prometheus::Registry;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, InstancePre, Linker, Resource, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, Store, StoreContextMut, Trap};
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::{host, types};
use crate::budget::Budget;
use crate::custom_metrics::MetricSink;
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::manifest::World;
use crate::plugin_metrics::PluginMetrics;

/// The version of the `lookout:plugin` WIT package this host speaks.
pub const WIT_VERSION: &str = "0.2.0";

/// How often the engine's epoch advances; call deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Most log lines a plugin may write per call; more are counted and discarded.
const MAX_LOG_LINES_PER_CALL: u32 = 64;

/// The epoch ticks from now to `deadline`, rounded up, plus one for the tick already under
/// way (so a guest is never cut before its deadline; at most one tick after it).
fn ticks_until(deadline: Instant) -> u64 {
    let left = deadline
        .saturating_duration_since(Instant::now())
        .as_nanos();
    let tick = EPOCH_TICK.as_nanos();
    u64::try_from(left.div_ceil(tick)).unwrap_or(u64::MAX - 1) + 1
}

/// Most linear memories one plugin instance may have (all its core instances together).
pub const MAX_MEMORIES: usize = 4;
/// Most tables one plugin instance may have.
pub const MAX_TABLES: usize = 16;
/// What one table element costs the host (a pointer), counted against the memory cap.
const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

/// Caps what one plugin instance holds — all its linear memories and tables *together*, so
/// a component with many memories gets no more than one with one — and records that it did,
/// so an out-of-memory trap can be named as such.
pub(crate) struct Sandbox {
    /// Bytes the instance may hold in memories and tables (`limits.max_memory_mib`).
    max_bytes: usize,
    /// Bytes granted so far, over every memory and table it created or grew.
    granted: usize,
    pub memory_denied: bool,
}

impl Sandbox {
    fn new(limits: &Limits) -> Sandbox {
        Sandbox {
            max_bytes: limits.max_memory_mib as usize * (1 << 20),
            granted: 0,
            memory_denied: false,
        }
    }

    /// Grants growing one memory or table from `current` to `desired` bytes if the total
    /// stays within the cap. wasmtime reports a new memory or table as growing from 0.
    fn grant(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> bool {
        if maximum.is_some_and(|max| desired > max) {
            // Past the type's own maximum: wasmtime refuses it anyway; not ours to count.
            return false;
        }
        let total = self.granted.saturating_add(desired.saturating_sub(current));
        if total > self.max_bytes {
            self.memory_denied = true;
            return false;
        }
        self.granted = total;
        true
    }
}

impl ResourceLimiter for Sandbox {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grant(current, desired, maximum))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let bytes = |elements: usize| elements.saturating_mul(TABLE_ELEMENT_BYTES);
        Ok(self.grant(bytes(current), bytes(desired), maximum.map(bytes)))
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }
}

/// Everything a plugin's store holds.
pub(crate) struct PluginState {
    pub plugin: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    pub sandbox: Sandbox,
    /// When the current call must be over: a wait in WASI (`poll`, `pollable.block`) is cut
    /// there, as epoch interruption cuts guest code.
    deadline: Instant,
    logs_this_call: u32,
    /// What `update-metric` may touch.
    pub metrics: Option<MetricSink>,
    stderr: MemoryOutputPipe,
    /// How much of `stderr` has been forwarded already.
    stderr_seen: usize,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for PluginState {}

impl host::Host for PluginState {
    fn log(&mut self, level: types::Severity, message: String) {
        self.logs_this_call += 1;
        if self.logs_this_call > MAX_LOG_LINES_PER_CALL {
            return;
        }
        use tracing::{Level, enabled};
        let wanted = match level {
            types::Severity::Error => enabled!(target: "lookout::plugin", Level::ERROR),
            types::Severity::Warn => enabled!(target: "lookout::plugin", Level::WARN),
            types::Severity::Info => enabled!(target: "lookout::plugin", Level::INFO),
            types::Severity::Debug => enabled!(target: "lookout::plugin", Level::DEBUG),
            types::Severity::Trace => enabled!(target: "lookout::plugin", Level::TRACE),
        };
        if !wanted {
            return;
        }
        // Cut and scrubbed before it is written: a sanitizer may quote the raw events it saw.
        let message = crate::plugin_text::admit(&message);
        let plugin = &*self.plugin;
        match level {
            types::Severity::Error => {
                tracing::error!(target: "lookout::plugin", plugin, "{message}")
            }
            types::Severity::Warn => tracing::warn!(target: "lookout::plugin", plugin, "{message}"),
            types::Severity::Info => tracing::info!(target: "lookout::plugin", plugin, "{message}"),
            types::Severity::Debug => {
                tracing::debug!(target: "lookout::plugin", plugin, "{message}")
            }
            types::Severity::Trace => {
                tracing::trace!(target: "lookout::plugin", plugin, "{message}")
            }
        }
    }

    fn update_metric(
        &mut self,
        name: String,
        label_values: Vec<String>,
        value: f64,
    ) -> std::result::Result<(), String> {
        match &self.metrics {
            Some(sink) => sink.update(&name, &label_values, value),
            None => Err(format!(
                "metric `{name}` was not declared: this plugin declares no metrics"
            )),
        }
    }
}

struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The engine all plugins share, with its epoch ticker and the sandbox's linker.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Arc<Linker<PluginState>>,
    pub(crate) metrics: PluginMetrics,
    /// Compiled components by content hash: a re-swap of a known plugin skips compilation.
    compiled: Arc<parking_lot::Mutex<HashMap<[u8; 32], Component>>>,
    /// The host-wide budget (`[plugins.budget]`), changeable while running.
    budget: Arc<parking_lot::RwLock<Budget>>,
    /// Compiles given up on for taking too long that are still running (they cannot be
    /// cancelled): while there is one, no new component is compiled.
    abandoned_compiles: Arc<AtomicUsize>,
    _ticker: Arc<Ticker>,
}

/// Most compiled components kept in memory.
const COMPILED_IN_MEMORY: usize = 64;

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

impl Runtime {
    /// Starts the engine and its epoch ticker; registers the plugin metrics in `registry`.
    pub fn new(registry: &Registry) -> Result<Runtime> {
        Self::with_cache(registry, None)
    }

    /// Like `new`, with compiled code cached on disk in `cache_dir` — keyed by the component's
    /// content hash and the engine's configuration (wasmtime's own cache) — so a restart does
    /// not recompile a known plugin.
    pub fn with_cache(registry: &Registry, cache_dir: Option<&Path>) -> Result<Runtime> {
        // What plugins say is scrubbed by the built-in rules: build them now, not in a call.
        crate::plugin_text::warm();
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true).epoch_interruption(true);
        // `perf` can name plugin functions when this is set (writes /tmp/perf-<pid>.map).
        if std::env::var_os("LOOKOUT_PLUGIN_PERFMAP").is_some_and(|v| v == "1") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        if let Some(dir) = cache_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Runtime(format!("plugin cache {}: {e}", dir.display())))?;
            let mut cache = wasmtime::CacheConfig::new();
            cache.with_directory(dir);
            let cache = wasmtime::Cache::new(cache)
                .map_err(|e| Error::Runtime(format!("plugin cache {}: {e}", dir.display())))?;
            config.cache(Some(cache));
        }
        let engine = Engine::new(&config).map_err(|e| Error::Runtime(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        // Rust's std for wasm32-wasip2 imports WASI's cli/io interfaces even when a plugin
        // uses none; they are linked against an empty context (see `new_store`).
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| Error::Runtime(e.to_string()))?;
        bound_waits(&mut linker).map_err(|e| Error::Runtime(e.to_string()))?;
        crate::bindings::sanitizer::Sanitizer::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut linker,
            |s| s,
        )
        .map_err(|e| Error::Runtime(e.to_string()))?;
        let stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("lookout-wasm-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| Error::Runtime(format!("cannot start the epoch ticker: {e}")))?;
        }
        Ok(Runtime {
            engine,
            linker: Arc::new(linker),
            metrics: PluginMetrics::new(registry)?,
            compiled: Arc::new(parking_lot::Mutex::new(HashMap::new())),
            budget: Arc::default(),
            abandoned_compiles: Arc::default(),
            _ticker: Arc::new(Ticker { stop }),
        })
    }

    /// The host-wide budget every push is checked against.
    pub fn budget(&self) -> Budget {
        *self.budget.read()
    }

    /// Sets the budget for what is loaded from now on (see `PluginRegistry::set_budget`,
    /// which checks the running plugins first).
    pub fn set_budget(&self, budget: Budget) {
        crate::plugin_text::set_max_bytes(budget.max_message_bytes as usize);
        *self.budget.write() = budget;
    }

    /// Compiles a component within the budget — its size and function count are checked
    /// before compiling, the compile has a deadline, and its memories and tables are counted
    /// after; the error says which limit, or why the bytes are not a component.
    pub(crate) fn compile(&self, plugin: &str, wasm: &[u8]) -> Result<Component> {
        if !wasm.starts_with(b"\0asm") {
            return Err(Error::InvalidComponent {
                plugin: plugin.into(),
                reason: "the file does not start with the WASM magic bytes".into(),
            });
        }
        let budget = self.budget();
        let over = |reason: String| Error::Budget {
            plugin: plugin.into(),
            reason,
        };
        if wasm.len() > budget.max_component_bytes() {
            return Err(over(format!(
                "the component is {} bytes, {} over plugins.budget.max_component_mib ({} MiB)",
                wasm.len(),
                wasm.len() - budget.max_component_bytes(),
                budget.max_component_mib
            )));
        }
        let key: [u8; 32] = Sha256::digest(wasm).into();
        let known = self.compiled.lock().get(&key).cloned();
        let component = match known {
            Some(component) => component,
            None => {
                let functions = count_functions(wasm);
                if functions > budget.max_functions as usize {
                    return Err(over(format!(
                        "the component defines {functions} functions, {} over \
                         plugins.budget.max_functions ({})",
                        functions - budget.max_functions as usize,
                        budget.max_functions
                    )));
                }
                let component = self.compile_within(plugin, wasm, &budget)?;
                let mut compiled = self.compiled.lock();
                if compiled.len() >= COMPILED_IN_MEMORY {
                    compiled.clear();
                }
                compiled.insert(key, component.clone());
                component
            }
        };
        // Counted over every core instance the component makes (a module instantiated
        // twice counts twice); the limiter enforces the same counts at instantiation.
        if let Some(needs) = component.resources_required() {
            for (what, n, max) in [
                ("linear memories", needs.num_memories as usize, MAX_MEMORIES),
                ("tables", needs.num_tables as usize, MAX_TABLES),
            ] {
                if n > max {
                    return Err(Error::InvalidComponent {
                        plugin: plugin.into(),
                        reason: format!(
                            "it has {n} {what}; a plugin may have at most {max} (its \
                             limits.max_memory_mib covers them all together)"
                        ),
                    });
                }
            }
        }
        Ok(component)
    }

    /// `Component::from_binary` on its own thread, given up on after the budget's
    /// `compile_timeout_ms`. A compile cannot be cancelled: the abandoned one runs to its end
    /// (its result dropped), and until it does no other is started.
    fn compile_within(&self, plugin: &str, wasm: &[u8], budget: &Budget) -> Result<Component> {
        let busy = self.abandoned_compiles.load(Ordering::SeqCst);
        if busy > 0 {
            return Err(Error::Budget {
                plugin: plugin.into(),
                reason: "a compile that ran past plugins.budget.compile_timeout_ms is still \
                         running; try again when it has ended"
                    .into(),
            });
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let engine = self.engine.clone();
        let bytes = wasm.to_vec();
        let abandoned = self.abandoned_compiles.clone();
        // Set, under its lock, when the wait gives up: the compile then only counts itself out.
        let given_up = Arc::new(parking_lot::Mutex::new(false));
        let given_up_there = given_up.clone();
        std::thread::Builder::new()
            .name("lookout-wasm-compile".into())
            .spawn(move || {
                // A panicking compiler must not leave the count of running compiles up
                // (every later compile would be refused): it becomes an error.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    Component::from_binary(&engine, &bytes)
                }))
                .unwrap_or_else(|_| Err(wasmtime::Error::msg("the compiler panicked")));
                let given_up = given_up_there.lock();
                if *given_up {
                    abandoned.fetch_sub(1, Ordering::SeqCst);
                } else {
                    let _ = tx.send(result);
                }
            })
            .map_err(|e| Error::Runtime(format!("cannot start a compile: {e}")))?;
        let timeout = Duration::from_millis(budget.compile_timeout_ms);
        let result = rx.recv_timeout(timeout).or_else(|_| {
            let mut given_up = given_up.lock();
            // It may have finished just now.
            rx.try_recv().map_err(|_| {
                *given_up = true;
                self.abandoned_compiles.fetch_add(1, Ordering::SeqCst);
            })
        });
        match result {
            Ok(result) => result.map_err(|e| Error::InvalidComponent {
                plugin: plugin.into(),
                reason: format!("{e:#}"),
            }),
            Err(()) => Err(Error::Budget {
                plugin: plugin.into(),
                reason: format!(
                    "compiling it took longer than plugins.budget.compile_timeout_ms ({} ms) \
                     and was given up",
                    budget.compile_timeout_ms
                ),
            }),
        }
    }

    /// Links a compiled component and checks it against `world` (`typed` is the world's
    /// `*Pre::new`). A component built against another version of the WIT package is named
    /// as such, rather than by the first signature that happens not to match.
    pub(crate) fn link<P>(
        &self,
        plugin: &str,
        world: World,
        component: &Component,
        typed: impl FnOnce(InstancePre<PluginState>) -> wasmtime::Result<P>,
    ) -> Result<P> {
        let wrong_world = |e: wasmtime::Error| {
            let reason = match self.wit_version_of(component) {
                Some(version) if version != WIT_VERSION => format!(
                    "it was built against lookout:plugin@{version}; this host speaks \
                     lookout:plugin@{WIT_VERSION}: rebuild it with the current lookout-plugin-sdk"
                ),
                _ => format!("{e:#}"),
            };
            Error::WrongWorld {
                plugin: plugin.into(),
                world: world.as_str().into(),
                reason,
            }
        };
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(wrong_world)?;
        typed(pre).map_err(wrong_world)
    }

    /// The version of `lookout:plugin` a component imports its types or host functions from.
    fn wit_version_of(&self, component: &Component) -> Option<String> {
        let ty = component.component_type();
        ty.imports(&self.engine).find_map(|(name, _)| {
            let rest = name.strip_prefix("lookout:plugin/")?;
            Some(
                rest.split_once('@')
                    .map_or("unversioned", |(_, v)| v)
                    .to_string(),
            )
        })
    }

    /// A fresh store in the sandbox: empty WASI context, memory cap, and `deadline` over
    /// instantiation (which runs guest code too) — the deadline of the call it is made for.
    pub(crate) fn new_store(
        &self,
        plugin: &Arc<str>,
        limits: &Limits,
        metrics: Option<MetricSink>,
        deadline: Instant,
    ) -> Store<PluginState> {
        // A guest's stderr (and panic messages) goes here, never to ours. Consumers' and
        // metrics plugins' lines become log lines (`forward_stderr`); a sanitizer's never do:
        // they may quote the unsanitized data it was given. A guest that writes more than the
        // pipe holds gets a write error (a panic for `eprintln!`) and a fresh instance.
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        let wasi = WasiCtx::builder()
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = PluginState {
            plugin: plugin.clone(),
            wasi,
            table: ResourceTable::new(),
            sandbox: Sandbox::new(limits),
            deadline,
            logs_this_call: 0,
            metrics,
            stderr,
            stderr_seen: 0,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.sandbox);
        store.set_epoch_deadline(ticks_until(deadline));
        store
    }
}

/// What a guest may write to stderr over one instance's life.
const STDERR_CAPACITY: usize = 256 * 1024;
/// Most stderr forwarded to the log per call; the rest is dropped and said so.
const MAX_STDERR_PER_CALL: usize = 4096;

/// After a consumer's or metrics plugin's call: what it wrote to stderr becomes log lines.
pub(crate) fn forward_stderr(store: &mut Store<PluginState>) {
    let state = store.data_mut();
    let contents = state.stderr.contents();
    if contents.len() <= state.stderr_seen {
        return;
    }
    let new = &contents[state.stderr_seen..];
    state.stderr_seen = contents.len();
    let mut shown = &new[..new.len().min(MAX_STDERR_PER_CALL)];
    if shown.len() < new.len()
        && let Some(last_newline) = shown.iter().rposition(|&b| b == b'\n')
    {
        // The last line was cut mid-way: half a secret is no longer a shape the rules know,
        // so the partial line goes whole.
        shown = &shown[..last_newline];
    }
    let plugin = &*state.plugin;
    for line in String::from_utf8_lossy(shown)
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        let line = crate::plugin_text::admit(line);
        tracing::warn!(target: "lookout::plugin", plugin, stream = "stderr", "{line}");
    }
    if new.len() > shown.len() {
        tracing::warn!(target: "lookout::plugin", plugin, dropped_bytes = new.len() - shown.len(), "plugin stderr truncated");
    }
}

/// Before entering the guest: the deadline of the call (guest code is interrupted there, a
/// WASI wait cut there) and a fresh log budget. A call that first replaces a trapped
/// instance passes the same `deadline` to each step, so the whole call ends by one deadline.
pub(crate) fn arm(store: &mut Store<PluginState>, deadline: Instant) {
    store.set_epoch_deadline(ticks_until(deadline));
    let state = store.data_mut();
    state.logs_this_call = 0;
    state.deadline = deadline;
}

/// Why a call failed that spent its whole deadline replacing a trapped instance, so
/// `function` was never entered.
pub(crate) fn replaced_too_late(function: &str, limits: &Limits) -> String {
    format!(
        "in `{function}`: call exceeded its {} ms deadline replacing the instance that trapped \
         before (instantiate and `init`), and was not started",
        limits.call_timeout_ms
    )
}

/// The `wasi:io/poll` wasmtime-wasi links (its version is the WASI it implements); its
/// waits are replaced by `bound_waits`. A test sleeps in a plugin to prove it still is.
const WASI_IO_POLL: &str = "wasi:io/poll@0.2.12";

/// A guest blocked in a WASI wait (a clock's pollable through `poll` or `pollable.block`:
/// `sleep` in most languages) until its call's deadline.
#[derive(Debug)]
pub(crate) struct WaitPastDeadline;

impl std::fmt::Display for WaitPastDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("blocked in a WASI wait (a sleep or poll) past the call's deadline")
    }
}

impl std::error::Error for WaitPastDeadline {}

/// Epoch interruption only reaches guest code, not a guest blocked in a host call: so the
/// only two WASI calls that wait — `poll` and `[method]pollable.block` — are replaced by the
/// same waits cut at the call's deadline (a wait that ends in time returns as before, so
/// zero-timeout polls and short sleeps still work). The streams the sandbox hands out —
/// closed stdin, discarded stdout, captured stderr — are always ready, so their `blocking-*`
/// calls return at once; no file, socket or name lookup is reachable.
fn bound_waits(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::p2::bindings::io::poll::{Host, HostPollable};
    linker.allow_shadowing(true);
    let mut poll = linker.instance(WASI_IO_POLL)?;
    poll.func_wrap(
        "poll",
        |mut store: StoreContextMut<'_, PluginState>,
         (pollables,): (Vec<Resource<DynPollable>>,)| {
            let state = store.data_mut();
            let ready = wait_until(state.deadline, Host::poll(&mut state.table, pollables))?;
            Ok((ready,))
        },
    )?;
    poll.func_wrap(
        "[method]pollable.block",
        |mut store: StoreContextMut<'_, PluginState>, (pollable,): (Resource<DynPollable>,)| {
            let state = store.data_mut();
            wait_until(
                state.deadline,
                HostPollable::block(&mut state.table, pollable),
            )
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Runs a WASI wait, cut at `deadline` with [`WaitPastDeadline`].
fn wait_until<T>(
    deadline: Instant,
    wait: impl std::future::Future<Output = wasmtime::Result<T>>,
) -> wasmtime::Result<T> {
    let left = deadline.saturating_duration_since(Instant::now());
    wasmtime_wasi::runtime::in_tokio(async move {
        tokio::time::timeout(left, wait)
            .await
            .unwrap_or_else(|_| Err(wasmtime::Error::new(WaitPastDeadline)))
    })
}

/// Functions a component's core modules define (their code entries), counted without
/// compiling. What does not parse is left for the compiler to name.
fn count_functions(wasm: &[u8]) -> usize {
    let mut functions = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        match payload {
            Ok(wasmparser::Payload::CodeSectionStart { count, .. }) => {
                functions = functions.saturating_add(count as usize);
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    functions
}

/// What went wrong in a call to `function` (`sanitize`, `handle`, `observe`, `describe`,
/// `init`, `instantiate`), in words for the operator that name the call, and the outcome label.
pub(crate) fn describe_trap(
    store: &Store<PluginState>,
    limits: &Limits,
    function: &str,
    err: &wasmtime::Error,
) -> (&'static str, String) {
    let (outcome, reason) = trap_reason(store, limits, err);
    // A root cause may quote what the guest handed over: cut and scrubbed like its own words.
    let reason = crate::plugin_text::admit(&format!("in `{function}`: {reason}"));
    (outcome, reason)
}

fn trap_reason(
    store: &Store<PluginState>,
    limits: &Limits,
    err: &wasmtime::Error,
) -> (&'static str, String) {
    if store.data().sandbox.memory_denied {
        return (
            "out_of_memory",
            format!(
                "ran out of memory (limit {} MiB, all its memories and tables together)",
                limits.max_memory_mib
            ),
        );
    }
    if err.downcast_ref::<WaitPastDeadline>().is_some() {
        return (
            "timeout",
            format!(
                "call exceeded its {} ms deadline blocked in a WASI wait (a sleep or poll) and \
                 was cut",
                limits.call_timeout_ms
            ),
        );
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => (
            "timeout",
            format!(
                "call exceeded its {} ms deadline and was interrupted",
                limits.call_timeout_ms
            ),
        ),
        Some(Trap::UnreachableCodeReached) => (
            "trap",
            "trapped: the guest panicked or aborted (its message is withheld from logs)".into(),
        ),
        Some(trap) => ("trap", format!("trapped: {trap}")),
        None => ("trap", format!("failed: {}", err.root_cause())),
    }
}
