//! Why a pool could not be started, added or reconfigured. Each variant names the pool or
//! the setting at fault; the messages are the ones the config API and the logs show. A
//! request's own failure is not here: it is an [`ExecError`](crate::ExecError), an answer.

use lookout_core::Invalid;

use crate::config::PoolConfig;

/// Why a pool (or the host's set of pools) refused a start or a change; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is out of range: the first problem [`PoolConfig::problems`] finds, its field
    /// under `pools.<name>`.
    #[error("{field}: {reason}")]
    Config { field: String, reason: String },
    /// A reconfiguration named another pool: a renamed pool is another pool.
    #[error("pools.{name}: a pool keeps its name (this is `{running}`)")]
    Renamed { name: String, running: String },
    /// Another pool of this host has the name already.
    #[error("pools.{name}: two pools have this name")]
    DuplicateName { name: String },
    /// This set of pools was not started with a bus and runtime (`Pools::default()`).
    #[error("pools.{name}: this host cannot start pools")]
    CannotStart { name: String },
    /// The pool metrics could not be registered.
    #[error("pool metrics: {0}")]
    Metrics(prometheus::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The first problem of `config`, if it has one.
    pub(crate) fn check(config: &PoolConfig) -> Result<()> {
        match config.problems().into_iter().next() {
            Some(Invalid { field, reason }) => Err(Error::Config { field, reason }),
            None => Ok(()),
        }
    }
}
