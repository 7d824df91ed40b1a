//! lookout's WASM runtime: wasmtime, the WIT bindings (bound once, in `bindings`), the
//! sandbox (empty WASI context, memory cap, epoch deadline) and plugins that run in it.
//!
//! Errors the guest may handle are WIT `result`s; traps, timeouts and out-of-memory end the
//! call, are counted in `lookout_plugin_calls_total`, and never take the host down.

mod batch;
mod bindings;
mod breaker;
mod budget;
mod custom_metrics;
mod error;
mod instance;
mod limits;
mod manifest;
mod names;
mod plugin_metrics;
mod plugin_text;
mod redactions;
mod registry;
mod runner;
mod runtime;
mod sanitizer;
mod stamp;
mod store;

pub use breaker::{BreakerState, BreakerStatus};
pub use budget::Budget;
pub use custom_metrics::{
    MAX_LABELS, MAX_METRICS_PER_PLUGIN, MAX_STAGED_UPDATES, MetricDecl, MetricKind, PluginMetricSet,
};
pub use error::{Error, Result};
pub use limits::{DEFAULT_CALL_TIMEOUT_MS, DEFAULT_MAX_MEMORY_MIB, Limits, QuarantinePolicy};
pub use manifest::{
    Fixture, FixtureEvent, FixtureValue, Manifest, PluginConfig, World, validate_name,
};
pub use plugin_metrics::PluginCounters;
pub use plugin_text::MAX_PLUGIN_TEXT_BYTES;
pub use redactions::{MAX_RULES_PER_PLUGIN, OTHER_RULE, SENSITIVE_KEY_RULE};
pub use registry::{
    CheckReport, Origin, PluginInfo, PluginRegistry, PreviousInfo, SwapOutcome, SwapRecord, check,
};
pub use runner::Runner;
pub use runtime::{EPOCH_TICK, MAX_MEMORIES, MAX_TABLES, Runtime, WIT_VERSION};
pub use sanitizer::WasmSanitizer;
pub use store::{KeptSlot, KeptVersion, PluginStore};
