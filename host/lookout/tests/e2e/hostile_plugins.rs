//! Plugins pushed over the API that say too much or take names that are not theirs, against
//! the real binary: what they say reaches the log, the API and the swap history cut and
//! scrubbed; colliding names are refused (409) naming the collision, `/metrics` stays one
//! family a name (promtool is silent), and long label values never reach it.

use std::time::Duration;

use lookout_artifacts::plugins::{CHATTY, CHATTY_CONSUMER, ERROR_COUNTER};
use lookout_testkit::{Host, eventually};
use serde_json::{Value, json};

use crate::plugins::put_plugin;
use crate::{assert_promtool_silent, quiet_host};

const CANARY: &str = "CANARY-chatty-7f3a9c";
const AWS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";

fn assert_no_secret(what: &str, text: &str) {
    for secret in [CANARY, AWS_KEY, "hunter2"] {
        assert!(!text.contains(secret), "{what} holds `{secret}`");
    }
}

async fn plugins_json(host: &Host) -> (String, Value) {
    let text = host
        .get_text("/api/v1/plugins")
        .await
        .expect("GET /api/v1/plugins");
    let value = serde_json::from_str(&text).unwrap();
    (text, value)
}

/// A sanitizer that logs every raw field it sees, a sanitizer whose `init` fails with 8 MiB
/// holding a secret (pushed five times), and a consumer whose every call fails the same way:
/// the host's log, the answers to the pushes and `GET /api/v1/plugins` (status and history)
/// hold their words — cut to a few KiB and without one secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_plugins_say_reaches_logs_and_the_api_cut_and_scrubbed() {
    let host = quiet_host();
    let response = put_plugin(
        &host,
        "chatty",
        "name = \"chatty\"\nworld = \"sanitizer\"\n[config]\nmode = \"log-fields\"\n",
        CHATTY,
    )
    .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let events: Vec<Value> = (0..50)
        .map(|i| {
            json!({"kind": "auth.login", "fields": {
                "user": "bob", "password": CANARY, "api_key": format!("{CANARY}-{i}"),
                "message": format!("uploading with key {AWS_KEY} to s3"),
            }})
        })
        .collect();
    host.post_events(&Value::Array(events)).await;
    // 64 lines a call are written (the batch's first events'), scrubbed.
    eventually(
        "chatty's lines in the log",
        Duration::from_secs(10),
        || async {
            let logs = host.logs().join("\n");
            logs.contains("chatty saw auth.login: user=bob")
                .then_some(())
        },
    )
    .await;

    for _ in 0..5 {
        let response = put_plugin(
            &host,
            "chatty",
            "name = \"chatty\"\nworld = \"sanitizer\"\n[config]\nmode = \"huge-init-error\"\n\
             bytes = \"8388608\"\n[limits]\ncall_timeout_ms = 1000\n",
            CHATTY,
        )
        .await;
        assert_eq!(response.status(), 422);
        let said = response.text().await.unwrap();
        assert!(said.len() < 8 * 1024, "a refusal of {} bytes", said.len());
        assert!(
            said.contains("init failed") && said.contains("bytes cut)"),
            "{said}"
        );
        assert_no_secret("the refusal", &said);
    }

    let response = put_plugin(
        &host,
        "chatty-consumer",
        "name = \"chatty-consumer\"\nworld = \"consumer\"\n[config]\nmode = \"huge-error\"\n\
         bytes = \"8388608\"\n[limits]\ncall_timeout_ms = 1000\n",
        CHATTY_CONSUMER,
    )
    .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    for _ in 0..5 {
        host.post_events(&json!([{"kind": "app.note", "fields": {"user": "bob"}}]))
            .await;
    }
    let (text, list) = eventually(
        "the consumer's failures in the plugin list",
        Duration::from_secs(10),
        || async {
            let (text, list) = plugins_json(&host).await;
            let consumer = list["plugins"]
                .as_array()?
                .iter()
                .find(|p| p["name"] == "chatty-consumer")?
                .clone();
            // The failure's count and its reason are written one after the other.
            consumer["status"]["last_error"].as_str()?;
            (consumer["counters"]["failures"].as_u64()? >= 1).then_some((text, consumer))
        },
    )
    .await;
    let error = list["status"]["last_error"].as_str().unwrap();
    assert!(error.starts_with("in `handle`: handle failed"), "{error}");
    assert!(error.len() < 8 * 1024, "{} bytes", error.len());
    assert!(
        text.len() < 128 * 1024,
        "GET /api/v1/plugins is {} bytes",
        text.len()
    );
    assert_no_secret("GET /api/v1/plugins", &text);

    let logs = host.logs().join("\n");
    assert!(logs.len() < 4 << 20, "the log grew to {} bytes", logs.len());
    assert_no_secret("the host's log", &logs);
}

fn counter_manifest(name: &str, metric: &str) -> String {
    format!(
        "name = \"{name}\"\nworld = \"consumer\"\n[[metrics]]\nname = \"{metric}\"\nhelp = \"Failed requests by command.\"\nkind = \"counter\"\nlabels = [\"command\"]\n"
    )
}

/// Pushes that would take lookout's own names — a built-in consumer's, the sanitizer's, one
/// of lookout's metrics, another plugin's metric — are refused with 409 naming the collision,
/// a metrics plugin's long label values are refused and counted, and `/metrics` stays what
/// promtool accepts without a word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colliding_names_are_refused_and_metrics_stay_valid() {
    let host = quiet_host();
    let refused = |name: &'static str, manifest: String, names: &'static str| {
        let host = &host;
        async move {
            let response = put_plugin(host, name, &manifest, ERROR_COUNTER).await;
            assert_eq!(response.status(), 409, "{name}");
            let said = response.text().await.unwrap();
            assert!(said.contains(names), "{name}: {said}");
        }
    };
    refused(
        "calls",
        counter_manifest("calls", "total"),
        "lookout_plugin_calls_total",
    )
    .await;
    refused(
        "live_stream",
        counter_manifest("live_stream", "errors_total"),
        "`live_stream`",
    )
    .await;
    refused(
        "redact",
        counter_manifest("redact", "errors_total"),
        "belongs to a sanitizer plugin",
    )
    .await;
    // error-counter updates `errors_total`: as `x`, `lookout_plugin_x_errors_total`.
    let response = put_plugin(
        &host,
        "x",
        &counter_manifest("x", "errors_total"),
        ERROR_COUNTER,
    )
    .await;
    assert_eq!(response.status(), 200);
    refused(
        "x-errors",
        counter_manifest("x-errors", "total"),
        "`lookout_plugin_x_errors_total`",
    )
    .await;

    let response = put_plugin(
        &host,
        "chatty-consumer",
        "name = \"chatty-consumer\"\nworld = \"consumer\"\n[config]\nmode = \"long-labels\"\n\
         [[metrics]]\nname = \"seen_total\"\nhelp = \"Events seen.\"\nkind = \"counter\"\nlabels = [\"tag\"]\n",
        CHATTY_CONSUMER,
    )
    .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    // A live-stream client, so the built-in consumer's books are on /metrics too.
    let _stream = lookout_testkit::LiveStream::open(&host, "").await.unwrap();
    let events: Vec<Value> = (0..20)
        .map(|n| json!({"kind": "request.completed", "fields": {"n": n, "command": "render", "success": false}}))
        .collect();
    host.post_events(&Value::Array(events)).await;
    let text = eventually(
        "the long labels refused and counted",
        Duration::from_secs(10),
        || async {
            let text = host.get_text("/metrics").await?;
            let m = lookout_testkit::Metrics::parse(&text);
            let refused = m.sum(
                "lookout_plugin_metric_rejections_total",
                &[("plugin", "chatty-consumer"), ("reason", "label_length")],
            );
            let counted = m.sum("lookout_plugin_x_errors_total", &[("command", "render")]);
            (refused >= 1.0 && counted == 20.0).then_some(text)
        },
    )
    .await;
    assert!(text.len() < 512 * 1024, "/metrics is {} bytes", text.len());
    assert_eq!(
        text.matches("# HELP lookout_plugin_calls_total ").count(),
        1,
        "one family a name"
    );

    assert_promtool_silent("promtool", &text);
}

/// At start the configured sanitizer is installed before the plugin folder is read: a pair in
/// the folder that takes the sanitizer's name (a consumer called `redact`) or the whole
/// plugin memory budget is refused and logged, and the host starts with its sanitizer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_sanitizer_is_installed_before_the_plugin_folder() {
    let dir = lookout_testkit::artifacts_dir().join("squatting-folder");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (stem, manifest) in [
        ("squatter", "name = \"redact\"\nworld = \"consumer\"\n"),
        (
            "hog",
            "name = \"hog\"\nworld = \"consumer\"\n[limits]\nmax_memory_mib = 512\n",
        ),
    ] {
        std::fs::write(dir.join(format!("{stem}.wasm")), ERROR_COUNTER).unwrap();
        std::fs::write(dir.join(format!("{stem}.toml")), manifest).unwrap();
    }
    let host = Host::start(crate::LOOKOUT, &["--plugins", dir.to_str().unwrap()])
        .expect("the host starts: the folder cannot take what its sanitizer needs");
    let (_, list) = plugins_json(&host).await;
    let running: Vec<(&str, &str)> = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["world"].as_str().unwrap()))
        .collect();
    assert_eq!(running, [("redact", "sanitizer")]);
    let refused = |plugin: &str, why: &str| {
        list["history"].as_array().unwrap().iter().any(|h| {
            h["plugin"] == plugin
                && h["outcome"] == "rejected"
                && h["error"].as_str().is_some_and(|e| e.contains(why))
        })
    };
    assert!(refused("redact", "belongs to a sanitizer plugin"), "{list}");
    assert!(refused("hog", "plugins.budget.total_memory_mib"), "{list}");
}
