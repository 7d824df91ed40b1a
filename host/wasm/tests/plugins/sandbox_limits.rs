//! The sandbox's limits against plugins that try to get around them: sleeping (a wait in a
//! host call, where epoch interruption cannot reach), a deadline stacked by replacing a
//! trapped instance, many memories, and the host-wide budget (memory of all plugins together
//! with their rollback copies, component size, functions, compile time, manifest fields that
//! act on the whole host).

use std::time::{Duration, Instant};

use lookout_artifacts::plugins::{FLAKY, MISBEHAVE, REDACT};
use lookout_core::{Event, FAILED_CLOSED, FieldValue, Sanitizer};
use lookout_testkit::{Collect, counter};
use lookout_wasm::{BreakerState, Budget, Error, Limits, Manifest, Runtime, WasmSanitizer};
use prometheus::Registry;

use super::{config, consumer_events, misbehave, start_bus};

fn calls(registry: &Registry, plugin: &str, outcome: &str) -> u64 {
    counter(
        registry,
        "lookout_plugin_calls_total",
        &[("plugin", plugin), ("outcome", outcome)],
    )
}

/// A sanitizer that sleeps 3 s in a call with a 100 ms deadline is cut at its deadline like
/// a loop: its batch fails closed, the call counts as a timeout, and the second one
/// quarantines it. A short sleep inside the deadline still works (clocks stay available).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_sanitizer_is_cut_at_its_deadline_and_fails_closed() {
    let (bus, registry, plugins) = start_bus(1);
    let manifest = Manifest::parse(
        "name = \"misbehave\"\nworld = \"sanitizer\"\n[limits]\ncall_timeout_ms = 100\n\
         [quarantine]\nafter_failures = 2\nbackoff_ms = 60000\n",
    )
    .unwrap();
    plugins.install(manifest, MISBEHAVE, "test").unwrap();
    let seen = Collect::default();
    bus.register("collect", seen.clone()).unwrap();

    bus.publish(
        Event::new("test.sleep")
            .field("ms", 5i64)
            .field("probe", "")
            .field("password", "hunter2"),
    );
    assert!(bus.flush(Duration::from_secs(10)).await);
    assert_eq!(
        seen.events()[0].get("probe"),
        Some(&FieldValue::Str("slept".into())),
        "a 5 ms sleep inside a 100 ms deadline ends normally"
    );

    let mut took = Vec::new();
    for _ in 0..2 {
        let started = Instant::now();
        bus.publish(Event::new("test.sleep").field("password", "hunter2"));
        assert!(bus.flush(Duration::from_secs(10)).await);
        took.push(started.elapsed());
    }
    eprintln!("a 3 s sleep against a 100 ms deadline ended after {took:?}");
    for t in &took {
        assert!(
            *t < Duration::from_millis(1000),
            "the sleeping call ran {t:?} against its 100 ms deadline"
        );
    }
    let events = seen.events();
    for e in &events[1..] {
        assert_eq!(
            e.get("password"),
            Some(&FieldValue::Str(FAILED_CLOSED.into())),
            "a batch whose sanitizer slept fails closed"
        );
    }
    assert_eq!(calls(&registry, "misbehave", "timeout"), 2);
    let status = plugins.list()[0].status.clone();
    assert_eq!(status.state, BreakerState::Quarantined, "{status:?}");
    let error = status.last_error.unwrap_or_default();
    assert!(
        error.contains("100 ms deadline") && error.contains("WASI wait"),
        "{error}"
    );
}

/// `init` sleeping 5 s with a 100 ms deadline does not hold the push: it is refused at the
/// deadline, saying why, and the running version stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_init_does_not_hold_a_push() {
    let (_bus, _registry, plugins) = start_bus(1);
    let manifest = Manifest::parse(
        "name = \"misbehave\"\nworld = \"sanitizer\"\n[config]\nsleep_init_ms = \"5000\"\n\
         [limits]\ncall_timeout_ms = 100\n",
    )
    .unwrap();
    // A version that does not sleep first (which compiles it), so what is timed is the
    // push's own wait.
    let running = plugins
        .install(
            Manifest::new("misbehave", lookout_wasm::World::Sanitizer),
            MISBEHAVE,
            "test",
        )
        .unwrap();
    let started = Instant::now();
    let err = plugins
        .install(manifest, MISBEHAVE, "test")
        .unwrap_err()
        .to_string();
    let took = started.elapsed();
    eprintln!("a push whose init sleeps 5 s was refused after {took:?}");
    assert!(took < Duration::from_millis(2500), "the push took {took:?}");
    assert!(err.contains("deadline"), "{err}");
    assert_eq!(
        plugins.list()[0].version,
        running.version,
        "the running version stays"
    );
}

/// One sanitize call ends by one deadline, the replacement of a trapped instance included:
/// the call after a trap pays for the fresh instance's `init` (here 200 ms of a 400 ms
/// deadline) out of its own deadline, so a 250 ms sleep that a warm instance finishes no
/// longer fits and the call is cut at the deadline — not run to init + a fresh 400 ms.
#[test]
fn the_call_after_a_trap_replaces_its_instance_within_one_deadline() {
    let runtime = Runtime::new(&Registry::new()).unwrap();
    let limits = Limits {
        call_timeout_ms: 400,
        ..Limits::default()
    };
    let deadline = Duration::from_millis(limits.call_timeout_ms);
    let s = WasmSanitizer::load(
        &runtime,
        "misbehave",
        MISBEHAVE,
        config(&[("sleep_init_ms", "200")]),
        limits,
    )
    .unwrap();
    let sleep_250_ms = || {
        let mut batch = vec![
            Event::new("test.sleep")
                .field("ms", 250i64)
                .field("probe", ""),
        ];
        batch[0].id = 1;
        batch
    };

    let mut batch = sleep_250_ms();
    s.sanitize(&mut batch)
        .expect("a warm instance has the whole deadline for a 250 ms sleep");
    assert_eq!(
        batch[0].get("probe"),
        Some(&FieldValue::Str("slept".into()))
    );

    let mut batch = vec![Event::new("test.trap")];
    s.sanitize(&mut batch)
        .expect_err("misbehave traps on test.trap");

    let started = Instant::now();
    let mut batch = sleep_250_ms();
    let result = s.sanitize(&mut batch);
    let took = started.elapsed();
    eprintln!("the call after a trap (init 200 ms, then a 250 ms sleep) ended after {took:?}");
    let err = result.expect_err("init and the sleep together are over the one deadline");
    assert!(err.reason.contains("400 ms deadline"), "{}", err.reason);
    assert!(
        took < 2 * deadline,
        "one call ran {took:?} against its {deadline:?} deadline"
    );
}

/// A consumer that sleeps 3 s on every batch with a 100 ms deadline costs its queue 100 ms a
/// batch, not 3 s: every batch is counted (failed), and nobody else is held up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_consumer_does_not_stall_its_queue() {
    let (bus, registry, plugins) = start_bus(1);
    let manifest = Manifest::parse(
        "name = \"sleeper\"\nworld = \"consumer\"\n[config]\nsleep_on = \"test.sleep\"\n\
         sleep_ms = \"3000\"\n[limits]\ncall_timeout_ms = 100\n[quarantine]\nafter_failures = 100\n",
    )
    .unwrap();
    plugins.install(manifest, FLAKY, "test").unwrap();
    let seen = Collect::default();
    bus.register("collect", seen.clone()).unwrap();
    let started = Instant::now();
    for _ in 0..5 {
        bus.publish(Event::new("test.sleep"));
    }
    let handled = |outcome: &str| consumer_events(&registry, "sleeper", outcome);
    lookout_testkit::eventually(
        "the sleeper's five batches are counted",
        Duration::from_secs(10),
        || {
            let done = handled("failed") + handled("delivered") + handled("dropped");
            async move { (done == 5).then_some(()) }
        },
    )
    .await;
    let took = started.elapsed();
    eprintln!("5 batches to a consumer sleeping 3 s each (100 ms deadline) took {took:?}");
    assert!(took < Duration::from_secs(4), "five sleeps took {took:?}");
    assert_eq!(handled("failed"), 5);
    assert_eq!(calls(&registry, "sleeper", "timeout"), 5);
    assert_eq!(seen.events().len(), 5, "the other consumer got everything");
}

/// A read of stdin (closed) returns at once rather than waiting: the sandbox's streams are
/// always ready, so their blocking calls cannot sleep either.
#[test]
fn blocking_stream_reads_return_at_once() {
    let runtime = Runtime::new(&Registry::new()).unwrap();
    let s = misbehave(&runtime);
    let mut batch = vec![Event::new("test.stdin").field("probe", "")];
    batch[0].id = 1;
    s.sanitize(&mut batch).unwrap();
    assert_eq!(
        batch[0].get("probe"),
        Some(&FieldValue::Str("denied: stdin is empty".into()))
    );
}

/// A consumer component (hand-written) whose core module has `extra` more memories, each of
/// which `init` tries to grow by `pages` and fill; `init` answers `grew N` with how many it
/// could grow (as an error, so the test reads it).
fn many_memories(extra: usize, pages: u32) -> Vec<u8> {
    let memories: String = (1..=extra).map(|i| format!("(memory $m{i} 0)\n")).collect();
    let grow: String = (1..=extra)
        .map(|i| {
            format!(
                "(if (i32.ne (memory.grow $m{i} (i32.const {pages})) (i32.const -1))
                   (then
                     (memory.fill $m{i} (i32.const 0) (i32.const 1) (i32.const {bytes}))
                     (local.set $n (i32.add (local.get $n) (i32.const 1)))))\n",
                bytes = pages * 65536
            )
        })
        .collect();
    let wat = format!(
        r#"(component
  (core module $m
    (memory $m0 (export "memory") 1)
    {memories}
    (global $heap (mut i32) (i32.const 1024))
    (data $m0 (i32.const 100) "grew ?")
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
      (global.set $heap (i32.add (local.get $p) (local.get 3)))
      (local.get $p))
    (func (export "init") (param i32 i32) (result i32)
      (local $n i32)
      {grow}
      (i32.store8 $m0 (i32.const 105) (i32.add (i32.const 48) (local.get $n)))
      (i32.store8 $m0 (i32.const 16) (i32.const 1))
      (i32.store $m0 (i32.const 20) (i32.const 100))
      (i32.store $m0 (i32.const 24) (i32.const 6))
      (i32.const 16))
    (func (export "handle") (param i32) (result i32)
      (i32.store8 $m0 (i32.const 16) (i32.const 0))
      (i32.const 16)))
  (core instance $i (instantiate $m))
  (type $severity' (enum "trace" "debug" "info" "warn" "error"))
  (export $severity "severity" (type $severity'))
  (type $value-type' (enum "str" "int" "float" "boolean"))
  (export $value-type "value-type" (type $value-type'))
  (type $batch' (record
    (field "text" string)
    (field "ids" (list u64))
    (field "timestamps-ns" (list u64))
    (field "kinds" (list u64))
    (field "correlation-ids" (list u64))
    (field "severities" (list $severity))
    (field "field-counts" (list u32))
    (field "keys" (list u64))
    (field "value-types" (list $value-type))
    (field "values" (list u64))))
  (export $batch "batch" (type $batch'))
  (func (export "init")
    (param "config" (list (tuple string string))) (result (result (error string)))
    (canon lift (core func $i "init") (memory (core memory $i "memory"))
      (realloc (core func $i "realloc"))))
  (func (export "handle") (param "batch" $batch) (result (result (error string)))
    (canon lift (core func $i "handle") (memory (core memory $i "memory"))
      (realloc (core func $i "realloc")))))"#
    );
    wat::parse_str(wat).unwrap()
}

fn consumer(name: &str, max_memory_mib: u32) -> Manifest {
    let mut m = Manifest::new(name, lookout_wasm::World::Consumer);
    m.limits.max_memory_mib = max_memory_mib;
    m
}

/// VmRSS of this process, in MiB.
fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

/// The memory cap bounds the plugin, not each memory: a component with three extra
/// memories of 30 MiB each under a 64 MiB cap gets two of them (the third is refused as the
/// first would be past the cap). One with more memories than a plugin may have — declared,
/// or one module instantiated many times — is refused at load, naming the limit.
#[test]
fn a_plugin_s_memories_share_one_cap() {
    let runtime = Runtime::new(&Registry::new()).unwrap();
    let before = rss_mib();
    // `init` fills 60 MiB: on a busy 2-core machine that can take longer than the default
    // 100 ms deadline, which would refuse the plugin for the wrong reason.
    let mut roomy = consumer("mems", 64);
    roomy.limits.call_timeout_ms = 10_000;
    let err = lookout_wasm::check(&runtime, &roomy, &many_memories(3, 480), "redact")
        .unwrap_err()
        .to_string();
    let grown = rss_mib().saturating_sub(before);
    eprintln!("3 × 30 MiB memories under a 64 MiB cap: {err}; the host's RSS grew {grown} MiB");
    assert!(err.contains("grew 2"), "{err}");

    let sixteen = many_memories(15, 1);
    let before = rss_mib();
    let err = lookout_wasm::check(&runtime, &consumer("mems", 64), &sixteen, "redact")
        .unwrap_err()
        .to_string();
    eprintln!(
        "16 memories: {err}; the host's RSS grew {} MiB",
        rss_mib().saturating_sub(before)
    );
    assert!(
        err.contains("16 linear memories")
            && err.contains(&format!("at most {}", lookout_wasm::MAX_MEMORIES)),
        "{err}"
    );

    let instantiated_five_times = wat::parse_str(
        r#"(component
            (core module $m (memory 1))
            (core instance (instantiate $m)) (core instance (instantiate $m))
            (core instance (instantiate $m)) (core instance (instantiate $m))
            (core instance (instantiate $m)))"#,
    )
    .unwrap();
    let err = lookout_wasm::check(
        &runtime,
        &consumer("mems", 64),
        &instantiated_five_times,
        "redact",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("5 linear memories"), "{err}");
}

/// The host-wide budget refuses, naming the budget and by how much: a component over the
/// size or function budget (before compiling), a compile that takes too long (and, while it
/// still runs, any other). Memory of all plugins together has its own test below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_budget_refuses_what_does_not_fit_and_says_by_how_much() {
    let (_bus, _registry, plugins) = start_bus(16);
    let sanitizer = |name: &str| Manifest::new(name, lookout_wasm::World::Sanitizer);
    let budget = Budget::default();

    plugins
        .set_budget(Budget {
            max_component_mib: 1,
            ..budget
        })
        .unwrap();
    let err = plugins
        .install(sanitizer("redact"), REDACT, "test")
        .unwrap_err();
    assert!(matches!(err, Error::Budget { .. }), "{err}");
    let over = REDACT.len() - (1 << 20);
    assert!(
        err.to_string().contains("max_component_mib")
            && err.to_string().contains(&over.to_string()),
        "{err}"
    );

    plugins
        .set_budget(Budget {
            max_functions: 10,
            ..budget
        })
        .unwrap();
    let err = plugins
        .install(sanitizer("misbehave"), MISBEHAVE, "test")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("max_functions") && err.contains("functions,"),
        "{err}"
    );

    // Compiling `redact` takes longer than 100 ms in any build.
    plugins
        .set_budget(Budget {
            compile_timeout_ms: 100,
            ..budget
        })
        .unwrap();
    let started = Instant::now();
    let err = plugins
        .install(sanitizer("redact"), REDACT, "test")
        .unwrap_err()
        .to_string();
    assert!(started.elapsed() < Duration::from_secs(2), "{err}");
    assert!(err.contains("compile_timeout_ms (100 ms)"), "{err}");
    plugins.set_budget(budget).unwrap();
    let err = plugins
        .install(sanitizer("misbehave"), MISBEHAVE, "test")
        .map(|_| ());
    if let Err(e) = &err {
        assert!(e.to_string().contains("still running"), "{e}");
    }
    lookout_testkit::eventually(
        "a compile goes ahead once the abandoned one has ended",
        Duration::from_secs(120),
        || {
            let ok = plugins
                .install(sanitizer("misbehave"), MISBEHAVE, "test")
                .is_ok();
            async move { ok.then_some(()) }
        },
    )
    .await;
}

/// `total_memory_mib` holds every version the host keeps — the running ones and the
/// previous ones kept warm for rollback, each at its `limits.max_memory_mib`: a push that
/// fits only if a rollback copy is not counted is refused, saying by how much, and so is a
/// budget the kept versions do not fit. A copy's memory is freed when it is dropped: at the
/// plugin's next swap (the copy kept before is replaced) or its removal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_of_all_plugins_counts_their_rollback_copies_until_dropped() {
    let (_bus, _registry, plugins) = start_bus(16);
    let budget = Budget {
        total_memory_mib: 256,
        ..Budget::default()
    };
    plugins.set_budget(budget).unwrap();
    let sanitizer = Manifest::new("misbehave", lookout_wasm::World::Sanitizer);
    plugins.install(sanitizer, MISBEHAVE, "test").unwrap();
    plugins.install(consumer("one", 64), FLAKY, "test").unwrap();
    // `one` again: its first version is kept warm for rollback, 64 MiB more.
    plugins.install(consumer("one", 64), FLAKY, "test").unwrap();

    // 64 (the sanitizer) + 64 (one) + 64 (one's rollback copy) + 96 is over 256 by 32;
    // without the copy it would fit.
    let err = plugins
        .install(consumer("two", 96), FLAKY, "test")
        .unwrap_err();
    assert!(matches!(err, Error::Budget { .. }), "{err}");
    let err = err.to_string();
    assert!(
        err.contains("total_memory_mib (256 MiB)")
            && err.contains("32 MiB over")
            && err.contains("64 MiB of the previous versions kept warm for rollback"),
        "{err}"
    );
    let err = plugins
        .set_budget(Budget {
            total_memory_mib: 160,
            ..budget
        })
        .unwrap_err();
    assert!(matches!(err, Error::BudgetTooSmall { .. }), "{err}");
    let err = err.to_string();
    assert!(
        err.contains("192 MiB") && err.contains("32 MiB over") && err.contains("rollback"),
        "{err}"
    );
    // Rolling back swaps the two versions: what is held does not change.
    plugins.rollback("one", "test").unwrap();

    // The next swaps drop the copy kept before: 64 + 32 + 64, then 64 + 32 + 32.
    plugins.install(consumer("one", 32), FLAKY, "test").unwrap();
    plugins.install(consumer("one", 32), FLAKY, "test").unwrap();
    plugins
        .install(consumer("two", 128), FLAKY, "test")
        .unwrap();
    let err = plugins
        .install(consumer("three", 1), FLAKY, "test")
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 MiB over"), "{err}");
    // Removing `one` frees both its versions.
    plugins.remove("one", "test").unwrap();
    plugins
        .install(consumer("three", 64), FLAKY, "test")
        .unwrap();
}

/// Manifest fields that act on the whole host have host-set maxima, refused at push naming
/// the field and the maximum: a sanitizer's deadline (every publisher waits on it), and a
/// quarantine that never trips or never ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_fields_that_act_on_the_whole_host_are_capped() {
    let (_bus, _registry, plugins) = start_bus(16);
    for (manifest, named) in [
        (
            "name = \"slow\"\nworld = \"sanitizer\"\n[limits]\ncall_timeout_ms = 10000\n",
            "limits.call_timeout_ms = 10000",
        ),
        (
            "name = \"never\"\nworld = \"sanitizer\"\n[quarantine]\nafter_failures = 4294967295\n",
            "quarantine.after_failures = 4294967295",
        ),
        (
            "name = \"forever\"\nworld = \"sanitizer\"\n[quarantine]\nbackoff_ms = 18446744073709551615\n\
             max_backoff_ms = 18446744073709551615\n",
            "quarantine.backoff_ms",
        ),
    ] {
        let err = plugins
            .install(Manifest::parse(manifest).unwrap(), MISBEHAVE, "test")
            .unwrap_err();
        assert!(matches!(err, Error::Budget { .. }), "{err}");
        let err = err.to_string();
        assert!(
            err.contains(named) && err.contains("plugins.budget."),
            "{err}"
        );
    }
    // A consumer stalls only its own queue: it may take longer.
    let slow_consumer = Manifest::parse(
        "name = \"slow-consumer\"\nworld = \"consumer\"\n[limits]\ncall_timeout_ms = 5000\n",
    )
    .unwrap();
    plugins.install(slow_consumer, FLAKY, "test").unwrap();
}
