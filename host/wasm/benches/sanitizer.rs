//! The same redaction rules, natively and as the `redact` WASM component, per event at
//! batch 256 (batch 1 too); plus `allowlist` (almost no rules: what crossing the boundary
//! costs). Events carry 8 string fields (≈ 770 bytes as JSON), as in WASM-NOTES.md.
//!
//! Run: `cargo bench -p lookout-wasm --bench sanitizer`. Results go in docs/performance.md.

use std::time::{Duration, Instant};

use lookout_artifacts::plugins::{ALLOWLIST, MISBEHAVE, REDACT};
use lookout_core::{Event, FieldValue, Sanitizer};
use lookout_wasm::{Limits, Runtime, WasmSanitizer};
use prometheus::Registry;
use redact_rules::{Policy, Value};

fn event(i: u64) -> Event {
    let mut e = Event::new("request.completed")
        .correlation_id(format!("req-{i:016x}"))
        .field("pool", "default-pool-for-rendering")
        .field("command", "render_pdf_document_v2")
        .field("worker", "worker-3-on-host-a.internal")
        .field("user", "amy.example@example.com")
        .field("path", "/api/v1/render?doc=invoice-2026-11&lang=en")
        .field(
            "message",
            "rendered 3 pages in 12 ms without warnings at all",
        )
        .field(
            "note",
            if i.is_multiple_of(16) {
                "retry with password=hunter2 ok"
            } else {
                "cache hit for template invoice"
            },
        )
        .field("trace", "span 7f3a9c01 parent 5e2b8d44 sampled yes");
    e.id = i + 1;
    e
}

/// What `redact`'s `sanitize_event` does, over host events: the same `clean_field`.
fn redact_native(policy: &Policy, batch: &mut [Event]) {
    for event in batch {
        for field in &mut event.fields {
            let value = match &field.value {
                FieldValue::Str(s) => Value::Str(s),
                FieldValue::Int(i) => Value::Int(*i),
                FieldValue::Float(f) => Value::Float(*f),
                FieldValue::Bool(b) => Value::Bool(*b),
            };
            if let Some(clean) = policy.clean_field(&field.key, value) {
                field.value = FieldValue::Str(clean);
            }
        }
    }
}

/// Min ns/event over `rounds` runs of `run` on fresh copies of `batch`.
fn measure(batch: &[Event], rounds: usize, mut run: impl FnMut(&mut Vec<Event>)) -> f64 {
    let mut best = Duration::MAX;
    for _ in 0..rounds {
        let mut copies: Vec<Vec<Event>> = (0..20).map(|_| batch.to_vec()).collect();
        let started = Instant::now();
        for copy in &mut copies {
            run(copy);
        }
        best = best.min(started.elapsed() / copies.len() as u32);
    }
    best.as_nanos() as f64 / batch.len() as f64
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    // LOOKOUT_BENCH_ROUNDS=<n> runs longer, for a profiler to see past the compiling.
    let rounds = match std::env::var("LOOKOUT_BENCH_ROUNDS") {
        Ok(n) => n.parse().expect("LOOKOUT_BENCH_ROUNDS: a number"),
        Err(_) if benching => 9,
        Err(_) => 1,
    };
    let runtime = Runtime::new(&Registry::new()).unwrap();
    // LOOKOUT_BENCH_REDACT=<file.wasm>: another build of `redact` (e.g. without LTO, so a
    // profiler sees its functions by name).
    let redact_wasm = match std::env::var("LOOKOUT_BENCH_REDACT") {
        Ok(path) => std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")),
        Err(_) => REDACT.to_vec(),
    };
    let redact = WasmSanitizer::load(
        &runtime,
        "redact",
        &redact_wasm,
        Vec::new(),
        Limits::default(),
    )
    .unwrap();
    let allow = vec![(
        "allow".to_string(),
        "pool,command,worker,user,path,message,note,trace".to_string(),
    )];
    let allowlist =
        WasmSanitizer::load(&runtime, "allowlist", ALLOWLIST, allow, Limits::default()).unwrap();
    // Passes everything through unchanged (its hostile behaviours need test.* kinds): what
    // the boundary alone costs.
    let noop =
        WasmSanitizer::load(&runtime, "noop", MISBEHAVE, Vec::new(), Limits::default()).unwrap();
    let policy = Policy::default();

    // Same output, or the comparison means nothing.
    let mut native_out: Vec<Event> = (0..256).map(event).collect();
    redact_native(&policy, &mut native_out);
    let mut wasm_out: Vec<Event> = (0..256).map(event).collect();
    redact.sanitize(&mut wasm_out).unwrap();
    assert_eq!(native_out, wasm_out, "native and WASM redact disagree");

    println!(
        "| sanitizer (ns/event) | batch 1 | batch 16 | batch 256 | batch 4096 | vs native at 256 |"
    );
    println!("|---|---|---|---|---|---|");
    // For profiling one row under `perf`: LOOKOUT_BENCH_ONLY=<part of a row's name>.
    let only = std::env::var("LOOKOUT_BENCH_ONLY").ok();
    let mut native = Vec::new();
    let mut redact_ns_256 = 0.0;
    // What loading `redact` costs: compiling it, then — from the compile cache, so that
    // instantiating and `init` (parsing the rule set, building the keyword pass) is most of
    // it — loading it again.
    let cache = std::env::temp_dir().join(format!("lookout-bench-cache-{}", std::process::id()));
    let cached = Runtime::with_cache(&Registry::new(), Some(&cache)).unwrap();
    let load = |runtime: &Runtime| {
        let started = Instant::now();
        WasmSanitizer::load(
            runtime,
            "redact",
            &redact_wasm,
            Vec::new(),
            Limits::default(),
        )
        .unwrap();
        started.elapsed().as_secs_f64() * 1e3
    };
    let (first, again) = (load(&cached), load(&cached));
    let _ = std::fs::remove_dir_all(&cache);
    println!(
        "`redact` ({} bytes): loaded in {first:.0} ms compiling, {again:.1} ms from the compile cache (instantiate + `init`)\n",
        redact_wasm.len()
    );

    // LOOKOUT_BENCH_BASELINE_REDACT=<file.wasm>: an earlier build of `redact`, measured in
    // the same run (its output may differ: it is another policy).
    let baseline = std::env::var("LOOKOUT_BENCH_BASELINE_REDACT")
        .ok()
        .map(|path| {
            let wasm = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            WasmSanitizer::load(&runtime, "redact", &wasm, Vec::new(), Limits::default()).unwrap()
        });
    let rows: Vec<(&str, usize)> = [
        ("native Rust rules (redact-rules)", 0),
        ("`redact` WASM component", 1),
        ("`redact` WASM component, baseline build", 4),
        ("`allowlist` WASM component (a set lookup per field)", 2),
        ("pass-through WASM component (the boundary alone)", 3),
    ]
    .into_iter()
    .filter(|&(_, kind)| kind != 4 || baseline.is_some())
    .collect();
    for (name, batch_size) in rows {
        if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
            continue;
        }
        let mut results = Vec::new();
        for size in [1u64, 16, 256, 4096] {
            let batch: Vec<Event> = (0..size).map(event).collect();
            let ns = match batch_size {
                0 => measure(&batch, rounds, |b| redact_native(&policy, b)),
                1 => measure(&batch, rounds, |b| redact.sanitize(b).unwrap()),
                2 => measure(&batch, rounds, |b| allowlist.sanitize(b).unwrap()),
                4 => {
                    let baseline = baseline.as_ref().expect("filtered above");
                    measure(&batch, rounds, |b| baseline.sanitize(b).unwrap())
                }
                _ => measure(&batch, rounds, |b| noop.sanitize(b).unwrap()),
            };
            results.push(ns);
        }
        if batch_size == 0 {
            native = results.clone();
        }
        let ratio = native.get(2).map_or(0.0, |n| results[2] / n);
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.0} | {ratio:.1}× |",
            results[0], results[1], results[2], results[3]
        );
        if batch_size == 1 {
            redact_ns_256 = results[2];
            // P2: the WASM component against the same rules natively, at every batch size.
            lookout_testkit::bench_summary(
                "P2",
                "sanitizer: redact WASM vs the same rules native, ns/event at batch 1/16/256/4096",
                &format!(
                    "{:.0}/{:.0}/{:.0}/{:.0} vs {:.0}/{:.0}/{:.0}/{:.0}",
                    results[0],
                    results[1],
                    results[2],
                    results[3],
                    native[0],
                    native[1],
                    native[2],
                    native[3]
                ),
                &format!("{ratio:.1}× native at 256"),
            );
        }
    }

    // A sanitizer written in Python (componentize-py: CPython inside the component), when
    // the Python tools are installed (`cargo xtask setup`); only when benching — compiling
    // its 18 MB takes a while. Its policy is smaller than redact's (secret keys and
    // `key=value` secrets only), so this bounds what a Python plugin costs from below.
    let python = lookout_testkit::target_dir().join("py/bin/componentize-py");
    if benching && python.exists() && only.as_ref().is_none_or(|o| "python".contains(o.as_str())) {
        let (wasm, manifest) = lookout_testkit::python_plugin();
        let manifest = lookout_wasm::Manifest::parse(&manifest).unwrap();
        let compiling = Instant::now();
        let python = WasmSanitizer::from_manifest(&runtime, &manifest, &wasm).unwrap();
        let compiled = compiling.elapsed();
        let results: Vec<f64> = [1u64, 16, 256, 4096]
            .iter()
            .map(|&size| {
                let batch: Vec<Event> = (0..size).map(event).collect();
                measure(&batch, rounds.min(3), |b| python.sanitize(b).unwrap())
            })
            .collect();
        let ratio = native.get(2).map_or(0.0, |n| results[2] / n);
        println!(
            "| `keyword-redact` Python component (componentize-py; secret keys and `key=value` only) | {:.0} | {:.0} | {:.0} | {:.0} | {ratio:.1}× |",
            results[0], results[1], results[2], results[3]
        );
        println!(
            "\nPython component: {} bytes (redact: {} bytes), loaded (compiled + `init`) in {:.1} s",
            wasm.len(),
            redact_wasm.len(),
            compiled.as_secs_f64()
        );
        lookout_testkit::bench_summary(
            "P2",
            "sanitizer written in Python (componentize-py) vs native rules, ns/event at batch 256",
            &format!(
                "{:.0} vs {:.0} (redact WASM {:.0}); {:.1} MB vs {:.0} KB component",
                results[2],
                native.get(2).copied().unwrap_or(0.0),
                redact_ns_256,
                wasm.len() as f64 / 1e6,
                redact_wasm.len() as f64 / 1e3
            ),
            &format!("{ratio:.0}× native"),
        );
    }

    if only.is_some() {
        return;
    }
    // How promptly a runaway call is cut: an infinite loop against deadlines of 20–200 ms.
    println!();
    println!("| call deadline | infinite loop cut after | ratio |");
    println!("|---|---|---|");
    for deadline_ms in [20u64, 50, 100, 200] {
        let limits = Limits {
            call_timeout_ms: deadline_ms,
            ..Limits::default()
        };
        let looping =
            WasmSanitizer::load(&runtime, "misbehave", MISBEHAVE, Vec::new(), limits).unwrap();
        let mut batch = vec![Event::new("test.loop")];
        let started = Instant::now();
        assert!(
            looping.sanitize(&mut batch).is_err(),
            "the loop was not cut"
        );
        let cut = started.elapsed();
        println!(
            "| {deadline_ms} ms | {:.1} ms | {:.2}× |",
            cut.as_secs_f64() * 1e3,
            cut.as_secs_f64() * 1e3 / deadline_ms as f64
        );
    }
}
