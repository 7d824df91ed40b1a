//! `/metrics` as Prometheus sees it: every family and label set present after traffic, help
//! on each, `promtool check metrics` silent, groups that can be turned off, and a real
//! Prometheus server scraping the host and answering a PromQL query with the exact count.

use std::process::Command;
use std::time::Duration;

use lookout_testkit::{Host, eventually};
use serde_json::json;

use crate::{LOOKOUT, Prometheus, assert_promtool_silent, default_host};

async fn metrics_text(host: &Host) -> String {
    host.get_text("/metrics").await.expect("GET /metrics")
}

/// Waits until the demo pool answers.
async fn demo_up(host: &Host) {
    eventually("the demo pool up", Duration::from_secs(20), || async {
        (host.execute("demo", &json!({"command": "echo"})).await == 200).then_some(())
    })
    .await;
}

fn promtool() -> &'static str {
    assert!(
        Command::new("promtool").arg("--version").output().is_ok(),
        "promtool is missing: `cargo xtask setup` installs Debian's prometheus package"
    );
    "promtool"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_is_present_with_help_and_promtool_is_silent() {
    let host = default_host();
    // A live-stream client: a bus consumer, so its counters exist too.
    let _stream = lookout_testkit::LiveStream::open(&host, "").await.unwrap();
    demo_up(&host).await;
    assert_eq!(host.execute("demo", &json!({"command": "fail"})).await, 500);
    assert_eq!(host.execute("demo", &json!({"command": "nope"})).await, 500);
    assert_eq!(
        host.execute("demo", &json!({"command": "crash"})).await,
        502
    );
    assert_eq!(
        host.execute("demo", &json!({"command": "count", "session_id": "m-1"}))
            .await,
        200
    );
    let ingest = host
        .http
        .post(host.url("/api/v1/events"))
        .json(&json!([{"kind": "app.audit", "fields": {"user": "amy"}}]))
        .send()
        .await
        .unwrap();
    assert_eq!(ingest.status(), 202);

    let text = eventually("the crash counted", Duration::from_secs(10), || async {
        let text = metrics_text(&host).await;
        text.contains("reason=\"crashed\"").then_some(text)
    })
    .await;
    let m = lookout_testkit::Metrics::parse(&text);
    let has = |name: &str, labels: &[(&str, &str)]| {
        assert!(
            m.samples.iter().any(|s| s.name == name
                && labels.iter().all(|(k, v)| s
                    .labels
                    .iter()
                    .any(|(lk, lv)| lk == k && (v.is_empty() || lv == v)))),
            "no `{name}` with {labels:?} in:\n{text}"
        );
    };
    has(
        "lookout_requests_total",
        &[("pool", "demo"), ("command", "echo"), ("status", "ok")],
    );
    has(
        "lookout_requests_total",
        &[("pool", "demo"), ("command", "fail"), ("status", "error")],
    );
    has(
        "lookout_requests_total",
        &[
            ("pool", "demo"),
            ("command", "crash"),
            ("status", "crashed"),
        ],
    );
    // A command the workers never announced is folded into `other`.
    has(
        "lookout_requests_total",
        &[("pool", "demo"), ("command", "other"), ("status", "error")],
    );
    assert!(
        !text.contains("command=\"nope\""),
        "an unknown command became a label"
    );
    for suffix in ["_bucket", "_sum", "_count"] {
        has(
            &format!("lookout_request_duration_seconds{suffix}"),
            &[("pool", "demo"), ("command", "echo")],
        );
        has(
            &format!("lookout_queue_wait_seconds{suffix}"),
            &[("pool", "demo")],
        );
    }
    has(
        "lookout_request_duration_seconds_bucket",
        &[("le", "0.001")],
    );
    has(
        "lookout_request_duration_seconds_bucket",
        &[("le", "32.768")],
    );
    for state in ["starting", "available", "busy", "stopping", "down"] {
        has("lookout_workers", &[("pool", "demo"), ("state", state)]);
    }
    has("lookout_queue_length", &[("pool", "demo")]);
    has("lookout_sessions_active", &[("pool", "demo")]);
    has(
        "lookout_worker_exits_total",
        &[("pool", "demo"), ("reason", "crashed")],
    );
    has(
        "lookout_events_published_total",
        &[("kind", "request.completed")],
    );
    has(
        "lookout_events_total",
        &[("kind", "app.audit"), ("outcome", "accepted")],
    );
    has(
        "lookout_consumer_events_total",
        &[("consumer", "live_stream"), ("outcome", "delivered")],
    );
    has("lookout_bus_ingress_queue_length", &[]);
    for stage in ["sample", "rate_limit", "sanitize", "fan_out"] {
        has("lookout_bus_stage_seconds_count", &[("stage", stage)]);
    }
    has(
        "lookout_plugin_calls_total",
        &[
            ("plugin", "redact"),
            ("function", "sanitize"),
            ("outcome", "ok"),
        ],
    );
    has(
        "lookout_plugin_call_duration_seconds_count",
        &[("plugin", "redact")],
    );
    has(
        "lookout_plugin_info",
        &[("plugin", "redact"), ("world", "sanitizer")],
    );
    has(
        "lookout_build_info",
        &[("version", env!("CARGO_PKG_VERSION")), ("wit", "")],
    );
    for process in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        has(process, &[]);
    }
    // Help text on every family.
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let family = line.split_whitespace().nth(2).unwrap();
        let help = text
            .lines()
            .find(|l| l.starts_with(&format!("# HELP {family} ")))
            .unwrap_or_else(|| panic!("`{family}` has no help"));
        assert!(
            help.len() > format!("# HELP {family} ").len() + 10,
            "{help}"
        );
    }

    // promtool says nothing.
    assert_promtool_silent(promtool(), &text);
}

/// Groups turned off in `[metrics]` are not exported; the rest are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_groups_can_be_turned_off() {
    let path = lookout_testkit::artifacts_dir().join("metrics-groups.toml");
    std::fs::write(
        &path,
        "[metrics]\nprocess = false\npools = false\n\n[[pools]]\nname = \"demo\"\napp = \"demo\"\nsize = 1\n",
    )
    .unwrap();
    let host = Host::start(LOOKOUT, &["--config", path.to_str().unwrap()]).unwrap();
    demo_up(&host).await;
    let text = metrics_text(&host).await;
    assert!(!text.contains("process_"), "process metrics are off");
    assert!(
        !text.contains("lookout_requests_total"),
        "pool metrics are off"
    );
    assert!(!text.contains("lookout_workers"), "pool metrics are off");
    assert!(
        text.contains("lookout_events_published_total"),
        "bus metrics are on"
    );
    assert!(
        text.contains("lookout_build_info"),
        "build info is always there"
    );
}

/// A real Prometheus, started here on loopback, scrapes the host; PromQL over its HTTP API
/// returns exactly the requests made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_and_counts_the_requests() {
    promtool();
    let host = default_host();
    demo_up(&host).await;
    let target = host.base.trim_start_matches("http://").to_string();
    let dir = lookout_testkit::artifacts_dir().join(format!("prometheus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: lookout\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let prometheus = Prometheus::start(&dir);
    for i in 0..7 {
        assert_eq!(
            host.execute("demo", &json!({"command": "echo", "args": i}))
                .await,
            200
        );
    }
    // demo_up ran one echo (or more, until the pool answered): count what the host counted.
    let counted = lookout_testkit::Metrics::parse(&metrics_text(&host).await).sum(
        "lookout_requests_total",
        &[("pool", "demo"), ("command", "echo"), ("status", "ok")],
    );
    assert!(counted >= 8.0, "{counted}");
    let value = eventually(
        "Prometheus to have scraped the count",
        Duration::from_secs(60),
        || async {
            let value = prometheus
                .value(r#"sum(lookout_requests_total{pool="demo",command="echo",status="ok"})"#)
                .await?;
            (value == counted).then_some(value)
        },
    )
    .await;
    assert_eq!(value, counted);
}
