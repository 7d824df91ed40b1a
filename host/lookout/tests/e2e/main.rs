//! End-to-end: the real `lookout` binary on a free port, real HTTP, the real embedded WASM
//! sanitizer, a real browser. One test binary; each module guards one surface.

mod cli;
mod dashboard;
mod ingest;
mod logs;
mod plugins;
mod pools;

use lookout_testkit::Host;

/// The freshly built binary under test.
pub const LOOKOUT: &str = env!("CARGO_BIN_EXE_lookout");

/// A host with the defaults: no config file, embedded plugins and dashboard.
pub fn default_host() -> Host {
    Host::start(LOOKOUT, &[]).expect("lookout starts with no config")
}
