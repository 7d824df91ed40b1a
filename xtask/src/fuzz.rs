//! `cargo xtask fuzz [--secs N] [TARGET…]`: the fuzz targets of `tests/fuzz` under
//! libFuzzer (cargo-fuzz, installed from crates.io when missing), each for N seconds.
//!
//! The corpora in the repo (`tests/fuzz/corpus/<target>`) seed a working corpus in
//! `<target>/fuzz-corpus/<target>`, which grows from run to run; the repo's copy is
//! refreshed by hand after long runs (libFuzzer's `-set_cover_merge=1`; docs/security.md). A crash
//! fails the run and leaves its input in `<target>/fuzz-artifacts/<target>/`.

use std::path::Path;

use anyhow::{Context, bail};

use crate::{cargo, run, target_dir};

/// Every target, in the order docs/security.md lists them.
pub const TARGETS: &[&str] = &[
    "ingest",
    "config",
    "manifest",
    "worker_stdout",
    "nats_wire",
    "redact",
];
const CARGO_FUZZ: &str = "0.13.2";
/// Longest input tried: bigger than any seed, far below the host's own limits' cost.
const MAX_LEN: u32 = 65_536;

pub fn fuzz(root: &Path, secs: u64, targets: &[String]) -> anyhow::Result<()> {
    let targets: Vec<&str> = if targets.is_empty() {
        TARGETS.to_vec()
    } else {
        for t in targets {
            if !TARGETS.contains(&t.as_str()) {
                bail!("unknown fuzz target {t:?}; the targets are {TARGETS:?}");
            }
        }
        targets.iter().map(String::as_str).collect()
    };
    crate::cargo_tool("fuzz", "cargo-fuzz", CARGO_FUZZ)?;
    let target = target_dir(root);
    let fuzz_dir = root.join("tests/fuzz");
    // Stable Rust: no sanitizer (the -Z flags need nightly); every lookout crate forbids
    // unsafe code, so a panic or an assertion is what there is to find. The plugins and the
    // dashboard are not needed and not built (LOOKOUT_SKIP_WASM_BUILD).
    let fuzz_cmd = || {
        let mut cmd = cargo();
        cmd.current_dir(root)
            .env("CARGO_TARGET_DIR", target.join("fuzz"))
            .env("LOOKOUT_SKIP_WASM_BUILD", "1")
            .arg("fuzz");
        cmd
    };
    run(fuzz_cmd()
        .args(["build", "--sanitizer", "none", "--fuzz-dir"])
        .arg(&fuzz_dir))?;
    for name in targets {
        let corpus = target.join("fuzz-corpus").join(name);
        let artifacts = target.join("fuzz-artifacts").join(name);
        std::fs::create_dir_all(&corpus)?;
        std::fs::create_dir_all(&artifacts)?;
        let seeds = fuzz_dir.join("corpus").join(name);
        let started = std::time::Instant::now();
        let status = fuzz_cmd()
            .args(["run", "--sanitizer", "none", "--fuzz-dir"])
            .arg(&fuzz_dir)
            .arg(name)
            .arg(&corpus)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={secs}"))
            .arg(format!("-max_len={MAX_LEN}"))
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg("-print_final_stats=1")
            .status()
            .with_context(|| format!("cannot run cargo fuzz for {name}"))?;
        if !status.success() {
            bail!(
                "fuzz target {name} failed after {:.0?}: its input is in {} (replay: cargo fuzz run --fuzz-dir tests/fuzz --sanitizer none {name} <file>)",
                started.elapsed(),
                artifacts.display()
            );
        }
        eprintln!("xtask: fuzz target {name}: {secs} s, no crash");
    }
    Ok(())
}
