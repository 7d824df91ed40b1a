//! The dependency policy (`deny.toml`, cargo-deny, installed from crates.io when missing)
//! over every lock file of the repo: the host, the plugins, the dashboard, the plugin
//! template and the fuzz targets.
//!
//! `test` checks licenses, bans and sources, which need nothing but the lock files.
//! `audit` adds the RustSec advisories; their database is a git repository on github.com,
//! which this CI cannot reach, so `audit` is for machines that can.

use std::path::Path;

use crate::{cargo, run};

const CARGO_DENY: &str = "0.20.2";
const WORKSPACES: &[&str] = &[
    "Cargo.toml",
    "plugins/Cargo.toml",
    "dashboard/Cargo.toml",
    "examples/plugin-template/Cargo.toml",
    "tests/fuzz/Cargo.toml",
];

/// `advisories`: also check the RustSec database (needs github.com).
pub fn deny(root: &Path, advisories: bool) -> anyhow::Result<()> {
    crate::cargo_tool("deny", "cargo-deny", CARGO_DENY)?;
    let checks: &[&str] = if advisories {
        &["advisories", "licenses", "bans", "sources"]
    } else {
        &["licenses", "bans", "sources"]
    };
    for manifest in WORKSPACES {
        run(cargo()
            .current_dir(root)
            .args(["deny", "--manifest-path", manifest, "--config"])
            .arg(root.join("deny.toml"))
            .args(["check", "--hide-inclusion-graph"])
            .args(checks))?;
    }
    Ok(())
}
