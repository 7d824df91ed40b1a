//! `lookout policy test EXAMPLES.jsonl`: measures a sanitizer policy against examples of
//! secrets (`tp`) and of text that must come through (`fp`), so an operator can check a policy
//! in CI before pushing it.
//!
//! The sanitizer is the embedded default exactly as `lookout serve` runs it (the default
//! config's `[sanitizer]`), or a given component with its manifest, loaded as a swap would
//! (manifest checked, `init` with its `[config]`, fixtures run). Each example goes through it
//! in three placements, as one-field events in batches of the bus's default size, through
//! the same [`WasmSanitizer`] the bus calls — the host applies the plugin's edits — and with
//! the bus's rules for what comes out: events left out arrive as nothing, a batch that fails
//! or breaks the contract is failed closed. Nothing here touches a running host.

mod examples;
mod report;
mod score;
mod thresholds;

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use lookout_core::{Event, FailurePolicy, Sanitizer};
use lookout_wasm::{Manifest, Runtime, WasmSanitizer, World};
use prometheus::Registry;

pub use examples::ExamplesError;
pub use thresholds::{MinCaught, Thresholds, parse_fraction, parse_min_caught};

use examples::{Example, ExampleKind};
use report::{Failures, Report};
use score::{Placement, Scores};

/// The kind of the events the examples are sent as.
pub const EVENT_KIND: &str = "policy.test";

/// What to measure and how to report it.
#[derive(Clone, Debug)]
pub struct Options {
    pub examples: PathBuf,
    /// A sanitizer component instead of the embedded default…
    pub wasm: Option<PathBuf>,
    /// …and its manifest (without one: a manifest named after the file, no config).
    pub manifest: Option<PathBuf>,
    pub thresholds: Thresholds,
    pub json: bool,
    pub misses: bool,
}

/// Whether every threshold held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed,
}

/// Measures, prints the report on stdout (and the failed thresholds on stderr). An `Err` is a
/// problem with the input: the examples, the component or its manifest.
pub fn run(options: &Options) -> anyhow::Result<Outcome> {
    let examples = examples::read(&options.examples)?;
    let (sanitizer, source) = load(options)?;
    let mut scores = Scores::default();
    let mut failures = Failures::default();
    for example in &examples {
        scores.count(example);
    }
    // Placement (a) would count these caught without the sanitizer doing anything.
    let needle_not_in_text: Vec<usize> = examples
        .iter()
        .filter(|e| e.kind == ExampleKind::Tp && !e.text.contains(e.needle.as_str()))
        .map(|e| e.line)
        .collect();
    let sends: Vec<(&Example, Placement)> = examples
        .iter()
        .flat_map(|e| Placement::ALL.map(|p| (e, p)))
        .collect();
    for chunk in sends.chunks(lookout_core::DEFAULT_BATCH_SIZE) {
        let batch = chunk
            .iter()
            .enumerate()
            .map(|(i, (example, placement))| {
                let mut event =
                    Event::new(EVENT_KIND).field(placement.key(), placement.value(example));
                event.id = i as u64 + 1;
                event.timestamp_ns = 1;
                event
            })
            .collect();
        let out = sanitize(&sanitizer, batch, &mut failures);
        for ((example, placement), out) in chunk.iter().zip(&out) {
            scores.record(example, *placement, out.as_ref());
        }
    }

    let checks = options.thresholds.check(&scores.overall);
    let file = options.examples.display().to_string();
    let report = Report {
        sanitizer: sanitizer.name(),
        source: &source,
        file: &file,
        scores: &scores,
        failures: &failures,
        checks: &checks,
        needle_not_in_text: &needle_not_in_text,
        misses: options.misses,
    };
    let mut stdout = std::io::stdout().lock();
    if options.json {
        writeln!(stdout, "{:#}", report::json(&report))?;
    } else {
        write!(stdout, "{}", report::text(&report))?;
    }
    stdout.flush()?;
    let failed = report::failed_checks(&checks);
    if failed.is_empty() {
        return Ok(Outcome::Passed);
    }
    eprintln!("policy test failed: {}", failed.join("; "));
    Ok(Outcome::Failed)
}

/// The sanitizer to measure, and where it came from (for the report).
fn load(options: &Options) -> anyhow::Result<(WasmSanitizer, String)> {
    let (manifest, wasm, source) = match &options.wasm {
        None => {
            let (manifest, wasm) = crate::config::Config::default().sanitizer()?;
            (manifest, wasm, "the embedded default".to_string())
        }
        Some(path) => {
            let wasm =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let manifest = match &options.manifest {
                Some(manifest) => {
                    let text = std::fs::read_to_string(manifest)
                        .with_context(|| format!("cannot read manifest {}", manifest.display()))?;
                    Manifest::parse(&text)
                        .with_context(|| format!("invalid manifest {}", manifest.display()))?
                }
                None => {
                    let stem = path
                        .file_stem()
                        .map(|s| s.to_string_lossy().replace('_', "-"))
                        .unwrap_or_default();
                    Manifest::new(&stem, World::Sanitizer)
                }
            };
            (manifest, wasm, path.display().to_string())
        }
    };
    // Compiled code is cached where `lookout serve` caches it, so a second run skips
    // compiling; a cache that cannot be made costs time, not the run.
    let registry = Registry::new();
    let cache_dir = crate::config::Config::default().plugins.cache_dir();
    let runtime = match Runtime::with_cache(&registry, cache_dir.as_deref()) {
        Err(_) if cache_dir.is_some() => Runtime::new(&registry)?,
        runtime => runtime?,
    };
    let sanitizer = WasmSanitizer::from_manifest(&runtime, &manifest, &wasm)
        .with_context(|| format!("cannot load the sanitizer ({source})"))?;
    Ok((sanitizer, source))
}

/// What arrived of each event of `batch`, by position (`None`: nothing did). A batch the
/// sanitizer fails on is sent again one event at a time, so one event it cannot handle does
/// not hide how it treats the others; what fails alone gets what the bus would do with it.
fn sanitize(
    sanitizer: &WasmSanitizer,
    batch: Vec<Event>,
    failures: &mut Failures,
) -> Vec<Option<Event>> {
    let mut out = batch.clone();
    let failure = match sanitizer.sanitize(&mut out) {
        Ok(()) => match by_position(&batch, out) {
            Some(placed) => return placed,
            None => "returned events that were not in its batch, or reordered them".to_string(),
        },
        Err(e) => e.to_string(),
    };
    if batch.len() > 1 {
        return batch
            .into_iter()
            .flat_map(|event| sanitize(sanitizer, vec![event], failures))
            .collect();
    }
    failures.events += batch.len();
    failures.first.get_or_insert(failure);
    match sanitizer.failure_policy() {
        FailurePolicy::Redact => {
            let mut redacted = batch;
            lookout_core::redact_everything(&mut redacted);
            redacted.into_iter().map(Some).collect()
        }
        FailurePolicy::Drop => vec![None; batch.len()],
    }
}

/// `out` laid against `sent` by id, if it is an ordered subset of it (the bus's contract).
fn by_position(sent: &[Event], out: Vec<Event>) -> Option<Vec<Option<Event>>> {
    let mut placed = vec![None; sent.len()];
    let mut next = 0;
    for event in out {
        let offset = sent[next..].iter().position(|s| s.id == event.id)?;
        placed[next + offset] = Some(event);
        next += offset + 1;
    }
    Some(placed)
}
