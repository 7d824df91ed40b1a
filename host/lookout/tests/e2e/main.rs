//! End-to-end: the real `lookout` binary on a free port, real HTTP, the real embedded WASM
//! sanitizer, a real browser. One test binary; each module guards one surface.

mod cli;
mod config;
mod dashboard;
mod health;
mod ingest;
mod integrations;
mod load;
mod logs;
mod metrics;
mod nats;
mod plugins;
mod pools;

use lookout_testkit::Host;

/// The freshly built binary under test.
pub const LOOKOUT: &str = env!("CARGO_BIN_EXE_lookout");

/// A host with the defaults: no config file, embedded plugins and dashboard, the demo pool.
pub fn default_host() -> Host {
    Host::start(LOOKOUT, &[]).expect("lookout starts with no config")
}

/// A host whose events are only those a test publishes: an empty config file (defaults, and
/// no pools, whose lifecycle events would mix in).
pub fn quiet_host() -> Host {
    let path = lookout_testkit::artifacts_dir().join("empty.toml");
    std::fs::write(&path, "").unwrap();
    Host::start(LOOKOUT, &["--config", path.to_str().unwrap()]).expect("lookout starts")
}
