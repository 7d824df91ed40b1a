//! Plugins that say too much or take names that are not theirs: what a plugin logs or
//! returns as an error is cut and scrubbed before the host keeps it; plugin names and metric
//! names are one namespace with lookout's own, refused at push naming what they collide
//! with; label values are capped by length and by bytes per plugin.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lookout_artifacts::plugins::{CHATTY, CHATTY_CONSUMER, ERROR_COUNTER, MISBEHAVE, REDACT};
use lookout_core::{Event, FAILED_CLOSED, FieldValue, RedactAll, Sanitizer};
use lookout_testkit::{Collect, counter};
use lookout_wasm::{
    BreakerState, Budget, Error, Limits, MAX_PLUGIN_TEXT_BYTES, Manifest, PluginRegistry, Runtime,
    WasmSanitizer, World,
};
use prometheus::Registry;

use super::{config, consumer_events, start_bus_batch_of_one, start_bus_with_registry};

/// The secrets chatty quotes.
const CANARY: &str = "CANARY-chatty-7f3a9c";
const AWS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";

/// Everything written through `tracing` on this thread while `f` runs.
fn logs_of<R>(f: impl FnOnce() -> R) -> (R, String) {
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let result = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&buffer.0.lock().unwrap()).into_owned();
    (result, text)
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [CANARY, AWS_KEY, "hunter2"] {
        assert!(!text.contains(secret), "{what} holds `{secret}`: {text}");
    }
}

/// A sanitizer sees raw events by design. One that logs every field it is handed (and then
/// redacts honestly) gets its lines into the host's log — scrubbed: not one secret survives,
/// while what is not a secret (`user=bob`) still reads as the plugin wrote it.
#[test]
fn what_a_sanitizer_logs_is_scrubbed_before_it_is_written() {
    let runtime = Runtime::new(&Registry::new()).unwrap();
    let chatty = WasmSanitizer::load(
        &runtime,
        "chatty",
        CHATTY,
        config(&[("mode", "log-fields")]),
        Limits::default(),
    )
    .unwrap();
    let mut batch: Vec<Event> = (0..50)
        .map(|i| {
            Event::new("auth.login")
                .field("user", "bob")
                .field("password", CANARY)
                .field("api_key", format!("{CANARY}-{i}"))
                .field("message", format!("uploading with key {AWS_KEY} to s3"))
        })
        .collect();
    for (i, e) in batch.iter_mut().enumerate() {
        e.id = i as u64 + 1;
    }
    let (result, logs) = logs_of(|| chatty.sanitize(&mut batch));
    result.unwrap();
    assert!(
        logs.contains("chatty saw auth.login: user=bob"),
        "the plugin's lines are written: {logs}"
    );
    assert!(logs.contains("[REDACTED"), "{logs}");
    assert_no_secret("the host's log", &logs);
    assert_eq!(
        batch[0].get("password"),
        Some(&FieldValue::Str("[REDACTED:chatty]".into()))
    );
}

/// An `init` error of 8 MiB holding a secret, pushed five times: each refusal says why in
/// a few KiB, scrubbed, and so does the swap history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_init_error_is_cut_and_scrubbed_wherever_it_is_shown() {
    let (_bus, _registry, plugins) = start_bus_with_registry();
    let manifest = Manifest::parse(
        // 8 MiB, with room to build it on a busy test machine: the point is what the host keeps.
        "name = \"chatty\"\nworld = \"sanitizer\"\n[config]\nmode = \"huge-init-error\"\n\
         bytes = \"8388608\"\n[limits]\ncall_timeout_ms = 1000\n",
    )
    .unwrap();
    for _ in 0..5 {
        let err = plugins
            .install(manifest.clone(), CHATTY, "test")
            .unwrap_err();
        assert!(matches!(err, Error::Init { .. }), "{err}");
        let said = err.to_string();
        assert!(
            said.len() < MAX_PLUGIN_TEXT_BYTES + 256,
            "{} bytes",
            said.len()
        );
        assert!(said.contains("bytes cut)"), "says it was cut: {said}");
        assert!(
            said.contains("init failed"),
            "keeps the plugin's words: {said}"
        );
        assert_no_secret("the refusal", &said);
    }
    let history = serde_json::to_string(&plugins.history()).unwrap();
    assert!(
        history.len() < 6 * (MAX_PLUGIN_TEXT_BYTES + 512),
        "{} bytes",
        history.len()
    );
    assert_no_secret("the swap history", &history);
    assert_eq!(
        plugins.list()[0].name,
        "redact",
        "the running sanitizer stays"
    );
}

/// A consumer whose every call fails with an 8 MiB error holding a secret: the error the
/// breaker keeps (and the API shows) is cut and scrubbed, and names the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumers_huge_error_is_cut_scrubbed_and_names_the_call() {
    let (bus, registry, plugins) = start_bus_with_registry();
    let manifest = Manifest::parse(
        "name = \"chatty-consumer\"\nworld = \"consumer\"\n[config]\nmode = \"huge-error\"\n\
         bytes = \"8388608\"\n[limits]\ncall_timeout_ms = 1000\n",
    )
    .unwrap();
    plugins.install(manifest, CHATTY_CONSUMER, "test").unwrap();
    for _ in 0..3 {
        bus.publish(Event::new("app.note").field("user", "bob"));
        assert!(bus.flush(Duration::from_secs(10)).await);
    }
    let info = plugins
        .list()
        .into_iter()
        .find(|p| p.name == "chatty-consumer")
        .unwrap();
    let error = info.status.last_error.expect("its error is kept");
    assert!(
        error.len() < MAX_PLUGIN_TEXT_BYTES + 256,
        "{} bytes",
        error.len()
    );
    assert!(error.starts_with("in `handle`: handle failed"), "{error}");
    assert_no_secret("the kept error", &error);
    assert_eq!(info.counters.failures, 3);
    assert_eq!(consumer_events(&registry, "chatty-consumer", "failed"), 3);
}

/// Registers a consumer manifest for `error-counter`'s component under `name`, declaring
/// `metric`.
pub(super) fn counter_plugin(name: &str, metric: &str) -> Manifest {
    Manifest::parse(&format!(
        "name = \"{name}\"\nworld = \"consumer\"\n[[metrics]]\nname = \"{metric}\"\nhelp = \"h\"\nkind = \"counter\"\nlabels = [\"command\"]\n"
    ))
    .unwrap()
}

pub(super) fn refusal(plugins: &PluginRegistry, manifest: Manifest, wasm: &[u8]) -> String {
    match plugins.install(manifest, wasm, "test") {
        Err(e @ Error::Conflict { .. }) => e.to_string(),
        other => panic!("expected a refusal naming the collision, got {other:?}"),
    }
}

/// Plugin names are one namespace with each other across worlds and with lookout's own
/// consumers and placeholder sanitizers: a push that takes one is refused, naming it, and
/// the running plugins and their books are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_names_that_collide_are_refused_naming_what_they_collide_with() {
    let (bus, registry, plugins) = start_bus_with_registry();
    let consumer = |name: &str| {
        Manifest::parse(&format!("name = \"{name}\"\nworld = \"consumer\"\n")).unwrap()
    };

    for builtin in lookout_core::BUILT_IN_CONSUMERS {
        let said = refusal(&plugins, consumer(builtin), ERROR_COUNTER);
        assert!(
            said.contains(&format!("`{builtin}`")) && said.contains("lookout's own consumers"),
            "{said}"
        );
    }
    let said = refusal(
        &plugins,
        Manifest::new(RedactAll.name(), World::Sanitizer),
        REDACT,
    );
    assert!(said.contains("lookout's own sanitizers"), "{said}");

    // The running sanitizer's name, for a consumer.
    let said = refusal(&plugins, consumer("redact"), ERROR_COUNTER);
    assert!(said.contains("belongs to a sanitizer plugin"), "{said}");

    // A running consumer's name, for a sanitizer — and after its removal still, for the
    // counts kept under it.
    plugins
        .install(consumer("error-counter"), ERROR_COUNTER, "test")
        .unwrap();
    let said = refusal(
        &plugins,
        Manifest::new("error-counter", World::Sanitizer),
        REDACT,
    );
    assert!(said.contains("belongs to a consumer plugin"), "{said}");
    plugins.remove("error-counter", "test").unwrap();
    let said = refusal(
        &plugins,
        Manifest::new("error-counter", World::Sanitizer),
        REDACT,
    );
    assert!(said.contains("belongs to a consumer plugin"), "{said}");
    // …while the same world may come back under it.
    plugins
        .install(consumer("error-counter"), ERROR_COUNTER, "test")
        .unwrap();

    // A native consumer of the host.
    let seen = Collect::default();
    let _collect = bus.register("collect", seen.clone()).unwrap();
    let said = refusal(&plugins, consumer("collect"), ERROR_COUNTER);
    assert!(
        said.contains("not a plugin runs under the name `collect`"),
        "{said}"
    );

    let names: Vec<String> = plugins.list().into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["redact", "error-counter"]);
    let rejected = counter(
        &registry,
        "lookout_plugin_swaps_total",
        &[("outcome", "rejected")],
    );
    // One for each of lookout's own consumers, and the five above.
    assert_eq!(
        rejected,
        lookout_core::BUILT_IN_CONSUMERS.len() as u64 + 5,
        "every refusal is in the history"
    );
    bus.publish(
        Event::new("request.completed")
            .field("success", false)
            .field("command", "a"),
    );
    assert!(bus.flush(Duration::from_secs(10)).await);
    assert_eq!(
        counter(
            &registry,
            "lookout_plugin_events_in_total",
            &[("plugin", "redact")]
        ),
        1,
        "the sanitizer's books hold its own events only"
    );
}

/// A refused push leaves the registry as it was, but for its line in the history: a
/// sanitizer push refused for its bytes, its `init` or its fixtures (whose `sanitize` calls
/// ran) claims no name and is counted nowhere — so a consumer may take the name next, and
/// its books start empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_push_claims_no_name_and_leaves_no_books() {
    let (_bus, registry, plugins) = start_bus_with_registry();
    let sanitizer = |rest: &str| {
        Manifest::parse(&format!("name = \"shifty\"\nworld = \"sanitizer\"\n{rest}")).unwrap()
    };
    // misbehave passes the event through: the fixture's expected redaction does not happen.
    let failing_fixture = "[[fixtures]]\n\
        input = [{ kind = \"login\", fields = { password = \"x\" } }]\n\
        expect = [{ kind = \"login\", fields = { password = \"[REDACTED]\" } }]\n";
    let err = plugins
        .install(sanitizer(""), b"\0asm but not a component", "test")
        .unwrap_err();
    assert!(matches!(err, Error::InvalidComponent { .. }), "{err}");
    let err = plugins
        .install(
            sanitizer("[config]\nfail_init = \"1\"\n"),
            MISBEHAVE,
            "test",
        )
        .unwrap_err();
    assert!(matches!(err, Error::Init { .. }), "{err}");
    let err = plugins
        .install(sanitizer(failing_fixture), MISBEHAVE, "test")
        .unwrap_err();
    assert!(matches!(err, Error::Fixture { .. }), "{err}");

    let books: Vec<String> = registry
        .gather()
        .iter()
        .filter(|f| f.name() != "lookout_plugin_swaps_total")
        .filter(|f| {
            f.get_metric()
                .iter()
                .any(|m| m.get_label().iter().any(|l| l.value() == "shifty"))
        })
        .map(|f| f.name().to_string())
        .collect();
    assert!(books.is_empty(), "refused pushes were counted in {books:?}");
    assert_eq!(
        counter(
            &registry,
            "lookout_plugin_swaps_total",
            &[("plugin", "shifty"), ("outcome", "rejected")]
        ),
        3,
        "each refusal is in the history"
    );

    let consumer = Manifest::parse("name = \"shifty\"\nworld = \"consumer\"\n").unwrap();
    let info = plugins
        .install(consumer, ERROR_COUNTER, "test")
        .expect("no refused push holds the name");
    assert_eq!(info.world, World::Consumer);
    let listed = plugins
        .list()
        .into_iter()
        .find(|p| p.name == "shifty")
        .unwrap();
    assert_eq!(listed.counters.calls, 0, "{:?}", listed.counters);
    assert_eq!(listed.counters.events_in, 0, "{:?}", listed.counters);
    // Installed, the name is the consumer's: now a sanitizer is refused it.
    let said = refusal(&plugins, sanitizer(""), MISBEHAVE);
    assert!(said.contains("belongs to a consumer plugin"), "{said}");
}

/// A plugin's metric names must be free on `/metrics`: not one of lookout's own — even a
/// family with no series yet — and not another plugin's; the push that would break the
/// exposition is refused naming the name, and what is exposed stays one family a name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_names_that_collide_are_refused_and_the_exposition_stays_valid() {
    let (_bus, registry, plugins) = start_bus_with_registry();
    assert!(
        !registry
            .gather()
            .iter()
            .any(|f| f.name() == "lookout_plugin_calls_total"),
        "no call yet: the family is not in gather() (the check must not depend on it)"
    );
    let said = refusal(&plugins, counter_plugin("calls", "total"), ERROR_COUNTER);
    assert!(
        said.contains("lookout's own metric `lookout_plugin_calls_total`"),
        "{said}"
    );
    // A histogram's series of lookout's own.
    let said = refusal(
        &plugins,
        counter_plugin("call", "duration_seconds_count"),
        ERROR_COUNTER,
    );
    assert!(
        said.contains("`lookout_plugin_call_duration_seconds`"),
        "{said}"
    );

    plugins
        .install(counter_plugin("a", "b_total"), ERROR_COUNTER, "test")
        .unwrap();
    let said = refusal(&plugins, counter_plugin("a-b", "total"), ERROR_COUNTER);
    assert!(
        said.contains("`lookout_plugin_a_b_total`") && said.contains("plugin `a`"),
        "{said}"
    );
    // A new version of the same plugin keeps its names: no collision with itself.
    plugins
        .install(counter_plugin("a", "b_total"), ERROR_COUNTER, "test")
        .unwrap();

    let mut families = registry.gather();
    families.extend(plugins.gather_custom());
    let names: Vec<&str> = families.iter().map(|f| f.name()).collect();
    let unique: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(names.len(), unique.len(), "one family a name: {names:?}");
}

/// The series of `name` among the plugins' custom metrics.
fn series(plugins: &PluginRegistry, name: &str) -> usize {
    plugins
        .gather_custom()
        .iter()
        .filter(|f| f.name() == name)
        .map(|f| f.get_metric().len())
        .sum()
}

fn long_labels(bytes: usize, max_series: u32) -> Manifest {
    Manifest::parse(&format!(
        r#"
        name = "chatty-consumer"
        world = "consumer"
        [config]
        mode = "long-labels"
        bytes = "{bytes}"
        [limits]
        max_series_per_metric = {max_series}
        [quarantine]
        after_failures = 100
        [[metrics]]
        name = "seen_total"
        help = "Events seen, by a label as long as the plugin likes."
        kind = "counter"
        labels = ["tag"]
        "#
    ))
    .unwrap()
}

/// A label value longer than the cap is refused, and so is a new series once the plugin's
/// series hold their budget of label bytes: counted by reason, and the plugin's
/// `update-metric` gets the limit back, naming the budget key. Both caps are the host's
/// `[plugins.budget]` keys (set lower than their defaults here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_values_are_capped_by_length_and_by_bytes_per_plugin() {
    let (bus, registry, plugins) = start_bus_with_registry();
    let budget = Budget {
        max_label_value_bytes: 128,
        max_label_bytes_per_plugin: 16 * 1024,
        ..Budget::default()
    };
    plugins.set_budget(budget).unwrap();
    let max_value = budget.max_label_value_bytes as usize;
    let max_per_plugin = budget.max_label_bytes_per_plugin as usize;
    let rejected = |reason: &str| {
        counter(
            &registry,
            "lookout_plugin_metric_rejections_total",
            &[("plugin", "chatty-consumer"), ("reason", reason)],
        )
    };
    let last_error = |plugins: &PluginRegistry| {
        plugins
            .list()
            .into_iter()
            .find(|p| p.name == "chatty-consumer")
            .and_then(|p| p.status.last_error)
            .unwrap_or_default()
    };

    plugins
        .install(long_labels(256 * 1024, 1000), CHATTY_CONSUMER, "test")
        .unwrap();
    for n in 0..3i64 {
        bus.publish(Event::new("app.note").field("n", n));
    }
    assert!(bus.flush(Duration::from_secs(10)).await);
    // A refusal fails the batch: the events after it in the same batch are not handled.
    assert!(rejected("label_length") >= 1);
    assert_eq!(
        series(&plugins, "lookout_plugin_chatty_consumer_seen_total"),
        0
    );
    let said = last_error(&plugins);
    assert!(
        said.contains(&format!("{max_value} bytes"))
            && said.contains("plugins.budget.max_label_value_bytes"),
        "names the limit: {said}"
    );

    // Just under the length cap, more series than the byte budget holds.
    plugins.remove("chatty-consumer", "test").unwrap();
    let bytes = max_value;
    let fits = max_per_plugin / bytes;
    plugins
        .install(long_labels(bytes, 100_000), CHATTY_CONSUMER, "test")
        .unwrap();
    for n in 0..(fits as i64 + 20) {
        bus.publish(Event::new("app.note").field("n", n));
    }
    assert!(bus.flush(Duration::from_secs(20)).await);
    assert_eq!(
        series(&plugins, "lookout_plugin_chatty_consumer_seen_total"),
        fits
    );
    assert!(rejected("label_bytes") >= 1);
    let said = last_error(&plugins);
    assert!(
        said.contains(&format!("{max_per_plugin} label bytes"))
            && said.contains("plugins.budget.max_label_bytes_per_plugin"),
        "{said}"
    );
}

/// A sanitizer whose verdicts the host refuses fails every batch closed: those are failures
/// in its status (not `failures: 0`), they quarantine it, and the reason names the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_verdicts_are_failures_and_failure_reasons_name_the_call() {
    let (bus, registry, plugins) = start_bus_batch_of_one();
    let seen = Collect::default();
    let _collect = bus.register("collect", seen.clone()).unwrap();
    let manifest = Manifest::parse(
        "name = \"chatty\"\nworld = \"sanitizer\"\n[config]\nmode = \"bad-verdict\"\n[quarantine]\nafter_failures = 2\n",
    )
    .unwrap();
    plugins.install(manifest, CHATTY, "test").unwrap();
    for _ in 0..2 {
        bus.publish(Event::new("x").field("password", "hunter2"));
        assert!(bus.flush(Duration::from_secs(10)).await);
    }
    let info = plugins.list().remove(0);
    assert_eq!(info.status.state, BreakerState::Quarantined);
    assert_eq!(info.counters.failures, 2, "{:?}", info.counters);
    let said = info.status.last_error.unwrap();
    assert!(
        said.starts_with("in `sanitize`: its verdict edits field"),
        "{said}"
    );
    assert_eq!(
        seen.events()[0].get("password"),
        Some(&FieldValue::Str(FAILED_CLOSED.into()))
    );
    assert_eq!(
        counter(
            &registry,
            "lookout_plugin_calls_total",
            &[("plugin", "chatty"), ("outcome", "refused")]
        ),
        2
    );

    // A limit hit inside a call names that call.
    let runtime = Runtime::new(&Registry::new()).unwrap();
    let misbehave = WasmSanitizer::load(
        &runtime,
        "misbehave",
        MISBEHAVE,
        Vec::new(),
        Limits {
            max_memory_mib: 16,
            ..Limits::default()
        },
    )
    .unwrap();
    let mut batch = vec![Event::new("test.oom")];
    let err = lookout_core::blocking(|| misbehave.sanitize(&mut batch)).unwrap_err();
    assert!(
        err.reason
            .starts_with("in `sanitize`: ran out of memory (limit 16 MiB"),
        "{}",
        err.reason
    );
}

/// Delete and disable act on the plugin they name: a consumer is removed and turned off, the
/// sanitizer is refused (there is no consumer of its name to mean instead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_and_disable_address_the_plugin_they_name() {
    let (_bus, _registry, plugins) = start_bus_with_registry();
    let install_error_counter = || {
        plugins
            .install(
                counter_plugin("error-counter", "errors_total"),
                ERROR_COUNTER,
                "test",
            )
            .unwrap()
    };
    install_error_counter();
    assert!(matches!(
        plugins.remove("redact", "test"),
        Err(Error::Conflict { .. })
    ));
    plugins.remove("error-counter", "test").unwrap();
    install_error_counter();
    let off = plugins
        .set_disabled(BTreeSet::from(["error-counter".to_string()]), "test")
        .unwrap();
    assert_eq!(off, ["error-counter"]);
    assert!(matches!(
        plugins.set_disabled(BTreeSet::from(["redact".to_string()]), "test"),
        Err(Error::Conflict { .. })
    ));
    let names: Vec<String> = plugins.list().into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["redact"]);
}

/// `lookout plugin check` (offline, `lookout_wasm::check`) refuses what a push to a host
/// with the default configuration would refuse for its name — a built-in consumer's or a
/// placeholder sanitizer's name, the default sanitizer's name for a consumer, a metric name
/// of lookout's own — in the same words; a name that is free passes both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offline_check_refuses_lookouts_own_names_as_a_push_does() {
    let (_bus, _registry, plugins) = start_bus_with_registry();
    let runtime = Runtime::new(&Registry::new()).unwrap();
    let consumer = |name: &str| {
        Manifest::parse(&format!("name = \"{name}\"\nworld = \"consumer\"\n")).unwrap()
    };
    let cases = [
        (consumer("live_stream"), ERROR_COUNTER),
        (consumer("redact"), ERROR_COUNTER),
        (Manifest::new(RedactAll.name(), World::Sanitizer), REDACT),
        (counter_plugin("calls", "total"), ERROR_COUNTER),
        (
            counter_plugin("call", "duration_seconds_count"),
            ERROR_COUNTER,
        ),
    ];
    for (manifest, wasm) in cases {
        let offline = match lookout_wasm::check(&runtime, &manifest, wasm, "redact") {
            Err(e @ Error::Conflict { .. }) => e.to_string(),
            other => panic!("{}: expected a refusal, got {other:?}", manifest.name),
        };
        let pushed = refusal(&plugins, manifest, wasm);
        assert_eq!(offline, pushed);
    }
    let free = counter_plugin("errors", "total");
    let report = lookout_wasm::check(&runtime, &free, ERROR_COUNTER, "redact").unwrap();
    assert_eq!(report.metrics, ["lookout_plugin_errors_total"]);
    lookout_wasm::check(
        &runtime,
        &Manifest::new("redact", World::Sanitizer),
        REDACT,
        "redact",
    )
    .expect("the host's sanitizer may be checked under its own name");
}
