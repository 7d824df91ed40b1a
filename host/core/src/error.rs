//! Errors of the core library.

/// What went wrong in the core; each variant names the thing at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is out of range or malformed.
    #[error("invalid config {0}")]
    Config(#[from] crate::Invalid),
    /// The bus has shut down; nothing more can be registered or published.
    #[error("the event bus is shut down")]
    BusClosed,
    /// A metric could not be registered (a duplicate name, an invalid name).
    #[error("metric `{name}`: {reason}")]
    Metric { name: String, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
