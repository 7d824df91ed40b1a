//! Errors of the WASM runtime. Each names the plugin and what was wrong with it.

/// Why a plugin could not be loaded or called.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes are not a WASM component this host can compile.
    #[error("plugin `{plugin}`: not a valid WASM component: {reason}")]
    InvalidComponent { plugin: String, reason: String },
    /// The component does not fit the world it claims (missing exports, wrong signatures,
    /// imports the sandbox does not offer).
    #[error(
        "plugin `{plugin}`: does not implement the `{world}` world of lookout:plugin@0.2.0: {reason}"
    )]
    WrongWorld {
        plugin: String,
        world: String,
        reason: String,
    },
    /// The plugin's own `init` refused its config.
    #[error("plugin `{plugin}`: init rejected its config: {reason}")]
    Init { plugin: String, reason: String },
    /// The plugin trapped, ran out of time or memory.
    #[error("plugin `{plugin}`: {reason}")]
    Trap { plugin: String, reason: String },
    /// The manifest or limits are invalid.
    #[error("plugin `{plugin}`: invalid manifest: {reason}")]
    Manifest { plugin: String, reason: String },
    /// The plugin asks for more than this host's budget (`[plugins.budget]`) allows.
    #[error("plugin `{plugin}`: over this host's plugin budget: {reason}")]
    Budget { plugin: String, reason: String },
    /// A new host budget is smaller than what already runs; nothing changed.
    #[error("the new plugin budget does not fit what runs: {reason}")]
    BudgetTooSmall { reason: String },
    /// A manifest fixture did not give the output it expects.
    #[error("plugin `{plugin}`: {reason}")]
    Fixture { plugin: String, reason: String },
    /// No plugin of that name is loaded.
    #[error("plugin `{plugin}` is not loaded")]
    NotFound { plugin: String },
    /// The request cannot be done in the plugin's current state.
    #[error("plugin `{plugin}`: {reason}")]
    Conflict { plugin: String, reason: String },
    /// The runtime itself could not start.
    #[error("wasm runtime: {0}")]
    Runtime(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
