//! What a push leaves in the host's books: a push refused after its plugin ran (`init`)
//! leaves nothing it recorded — no series, no value, no refused update counted under its
//! name — while an installed one shows what its `init` recorded; and checking a push's
//! metric names writes nothing to the registry `/metrics` renders.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use lookout_artifacts::plugins::{CHATTY_CONSUMER, ERROR_COUNTER};
use lookout_testkit::{counter, family_sum};
use lookout_wasm::{Error, Manifest, PluginRegistry};
use prometheus::Registry;

use super::start_bus_with_registry;

/// `chatty-consumer` as `name`, declaring `seen_total{tag}`, with `config` lines added.
fn chatty(name: &str, config: &str) -> Manifest {
    Manifest::parse(&format!(
        "name = \"{name}\"\nworld = \"consumer\"\n[config]\nmode = \"long-labels\"\n{config}\n\
         [[metrics]]\nname = \"seen_total\"\nhelp = \"Events seen.\"\nkind = \"counter\"\n\
         labels = [\"tag\"]\n"
    ))
    .unwrap()
}

/// `lookout_plugin_chatty_consumer_seen_total{tag}` as `/metrics` would show it.
fn seen(plugins: &PluginRegistry, tag: &str) -> f64 {
    family_sum(
        &plugins.gather_custom(),
        "lookout_plugin_chatty_consumer_seen_total",
        &[("tag", tag)],
    )
}

/// Every family of `registry` with a series labelled `plugin = name`, but its swap history.
fn books_of(registry: &Registry, name: &str) -> Vec<String> {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() != "lookout_plugin_swaps_total")
        .filter(|f| {
            f.get_metric()
                .iter()
                .any(|m| m.get_label().iter().any(|l| l.value() == name))
        })
        .map(|f| f.name().to_string())
        .collect()
}

/// A consumer's `init` may update the metrics it declared. Installed, what it recorded is on
/// `/metrics` at once; a push refused after its `init` ran — the `init` failing after it
/// recorded, or a metric name another plugin exposes — leaves none of it: not a value in
/// the running version's metrics (which a new version with the same ones takes over), not a
/// refused update counted under its name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_push_leaves_nothing_its_init_recorded() {
    let (_bus, registry, plugins) = start_bus_with_registry();
    plugins
        .install(
            chatty("chatty-consumer", "init_label = \"v1\""),
            CHATTY_CONSUMER,
            "test",
        )
        .unwrap();
    assert_eq!(
        seen(&plugins, "v1"),
        1.0,
        "what init recorded shows at once"
    );

    let err = plugins
        .install(
            chatty("chatty-consumer", "init_label = \"v2\"\nfail_init = \"1\""),
            CHATTY_CONSUMER,
            "test",
        )
        .unwrap_err();
    assert!(matches!(err, Error::Init { .. }), "{err}");
    assert_eq!(
        seen(&plugins, "v2"),
        0.0,
        "the refused push's init left a value"
    );
    assert_eq!(
        seen(&plugins, "v1"),
        1.0,
        "the running version's values stay"
    );

    // A refused update in `init` (a label over plugins.budget.max_label_value_bytes), then
    // the push refused for a metric name plugin `x` exposes.
    plugins
        .install(
            super::hostile_names::counter_plugin("x", "y_seen_total"),
            ERROR_COUNTER,
            "test",
        )
        .unwrap();
    let long = format!("init_label = \"{}\"", "l".repeat(300));
    let said = super::hostile_names::refusal(&plugins, chatty("x-y", &long), CHATTY_CONSUMER);
    assert!(said.contains("`lookout_plugin_x_y_seen_total`"), "{said}");
    let books = books_of(&registry, "x-y");
    assert!(
        books.is_empty(),
        "the refused push was counted in {books:?}"
    );

    // The same refused update in a push that is installed is counted, under its name.
    plugins
        .install(chatty("chatty-consumer", &long), CHATTY_CONSUMER, "test")
        .unwrap();
    assert_eq!(
        counter(
            &registry,
            "lookout_plugin_metric_rejections_total",
            &[("plugin", "chatty-consumer"), ("reason", "label_length")]
        ),
        1
    );
    assert_eq!(
        seen(&plugins, "v1"),
        1.0,
        "the metrics carry on across swaps"
    );
}

/// What `init` records before its push is certain is held in the host, outside the plugin's
/// memory cap: an `init` updating in a loop is held to a bounded number of updates, and the
/// rest are refused and counted once the push is installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_init_updating_in_a_loop_is_held_to_a_bounded_number_of_updates() {
    let (_bus, registry, plugins) = start_bus_with_registry();
    let over = lookout_wasm::MAX_STAGED_UPDATES + 5_000;
    let mut manifest = chatty(
        "chatty-consumer",
        &format!("init_label = \"loop\"\ninit_repeat = \"{over}\""),
    );
    // 15,000 updates in a debug build on a busy machine can take longer than the default
    // 100 ms: what is tested is the bound, not the speed.
    manifest.limits.call_timeout_ms = 5_000;
    plugins.install(manifest, CHATTY_CONSUMER, "test").unwrap();
    assert_eq!(
        seen(&plugins, "loop"),
        lookout_wasm::MAX_STAGED_UPDATES as f64,
        "the held updates are replayed, and no more"
    );
    assert_eq!(
        counter(
            &registry,
            "lookout_plugin_metric_rejections_total",
            &[("plugin", "chatty-consumer"), ("reason", "init_updates")]
        ),
        5_000,
        "the updates past the cap are counted"
    );
}

/// A collector whose first `collect` blocks until released: a scrape in progress.
struct SlowScrape {
    desc: prometheus::core::Desc,
    entered: mpsc::SyncSender<()>,
    release: Mutex<Option<mpsc::Receiver<()>>>,
}

impl prometheus::core::Collector for SlowScrape {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let first = self.release.lock().unwrap().take();
        if let Some(release) = first {
            let _ = self.entered.send(());
            let _ = release.recv_timeout(Duration::from_secs(60));
        }
        Vec::new()
    }
}

/// The metric-name check at every push reads names; it registers nothing in the registry
/// `/metrics` renders — so a scrape never sees a family that is not lookout's or an installed
/// plugin's, and a push of a plugin with metrics goes through while a (slow) scrape holds
/// the registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checking_metric_names_writes_nothing_a_scrape_reads() {
    let (_bus, registry, plugins) = start_bus_with_registry();
    let (entered, scraping) = mpsc::sync_channel(1);
    let (release, released) = mpsc::channel();
    let slow = SlowScrape {
        desc: prometheus::core::Desc::new(
            "lookout_test_slow_scrape".into(),
            "A scrape that takes its time.".into(),
            Vec::new(),
            HashMap::new(),
        )
        .unwrap(),
        entered,
        release: Mutex::new(Some(released)),
    };
    registry.register(Box::new(slow)).unwrap();
    let scrape = std::thread::spawn({
        let registry = registry.clone();
        move || registry.gather()
    });
    scraping.recv_timeout(Duration::from_secs(10)).unwrap();
    let pushed = std::thread::scope(|scope| {
        let push = scope.spawn(|| {
            plugins.install(
                super::hostile_names::counter_plugin("metered", "errors_total"),
                ERROR_COUNTER,
                "test",
            )
        });
        let patience = Instant::now() + Duration::from_secs(20);
        while !push.is_finished() && Instant::now() < patience {
            std::thread::sleep(Duration::from_millis(20));
        }
        let finished = push.is_finished();
        release.send(()).unwrap();
        (finished, push.join().unwrap())
    });
    let families = scrape.join().unwrap();
    assert!(
        pushed.0,
        "the push waited for the scrape: it writes to the registry /metrics renders"
    );
    pushed.1.unwrap();
    let strangers: BTreeSet<&str> = families
        .iter()
        .map(|f| f.name())
        .filter(|n| n.starts_with("lookout_plugin_metered"))
        .collect();
    assert!(strangers.is_empty(), "the scrape saw {strangers:?}");
    // The check still knows lookout's own names, series or not.
    let said = super::hostile_names::refusal(
        &plugins,
        super::hostile_names::counter_plugin("calls", "total"),
        ERROR_COUNTER,
    );
    assert!(said.contains("`lookout_plugin_calls_total`"), "{said}");
}
