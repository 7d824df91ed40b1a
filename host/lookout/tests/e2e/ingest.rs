//! Ingest, the live stream, `/metrics` and `/health` as a client sees them.

use std::time::Duration;

use lookout_testkit::{LiveStream, eventually};
use serde_json::{Value, json};

use crate::quiet_host;

/// The secrets [`events_with_secrets`] carries: the first five of [`crate::SECRETS`].
const SECRETS: &[&str] = crate::SECRETS.split_at(5).0;

fn events_with_secrets() -> Value {
    json!([
        {"kind": "auth.login", "correlation_id": "req-1", "fields": {"user": "bob", "password": "hunter2"}},
        {"kind": "storage.upload", "severity": "warn", "fields": {"note": "using AKIAIOSFODNN7EXAMPLE", "bytes": 1024}},
        {"kind": "payment.charged", "fields": {"message": "card 4111 1111 1111 1111 charged", "amount": 12.5}},
        {"kind": "db.connect", "severity": "error", "fields": {"dsn_hint": "postgres://app:s3cr3tpw@db/orders", "ok": false}},
        {"kind": "http.request", "correlation_id": "req-2", "fields": {"header": "Authorization: Bearer abc123tokenvalue"}},
    ])
}

/// Events posted with secrets come back on the live stream redacted, keep their typed
/// fields, are counted in `/metrics`, and no secret reaches the host's logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posted_secrets_come_back_redacted_and_counted() {
    let host = quiet_host();
    let mut stream = LiveStream::open(&host, "").await.unwrap();

    let response = host
        .http
        .post(host.url("/api/v1/events"))
        .json(&events_with_secrets())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"accepted": 5, "dropped": 0})
    );

    let events = stream.take(5, Duration::from_secs(10)).await;
    let text = serde_json::to_string(&events).unwrap();
    for secret in SECRETS {
        assert!(
            !text.contains(secret),
            "{secret} leaked to the stream: {text}"
        );
    }
    let kinds: Vec<_> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "auth.login",
            "storage.upload",
            "payment.charged",
            "db.connect",
            "http.request"
        ]
    );
    assert_eq!(events[0]["fields"]["password"], "[REDACTED]");
    assert_eq!(events[0]["fields"]["user"], "bob");
    assert_eq!(events[0]["correlation_id"], "req-1");
    assert_eq!(events[1]["fields"]["bytes"], 1024);
    assert_eq!(events[1]["severity"], "warn");
    assert_eq!(events[2]["fields"]["amount"], 12.5);
    assert_eq!(events[3]["fields"]["ok"], false);
    assert!(
        events
            .windows(2)
            .all(|w| w[0]["id"].as_u64() < w[1]["id"].as_u64())
    );

    let metrics = eventually(
        "the live stream counted as delivered",
        Duration::from_secs(5),
        || async {
            let m = host.metrics().await;
            (m.sum(
                "lookout_consumer_events_total",
                &[("consumer", "live_stream"), ("outcome", "delivered")],
            ) >= 5.0)
                .then_some(m)
        },
    )
    .await;
    assert_eq!(metrics.sum("lookout_events_published_total", &[]), 5.0);
    assert_eq!(
        metrics.sum("lookout_events_total", &[("outcome", "accepted")]),
        5.0
    );
    assert_eq!(
        metrics.sum(
            "lookout_events_total",
            &[("kind", "auth.login"), ("outcome", "accepted")]
        ),
        1.0
    );
    assert_eq!(metrics.sum("lookout_sanitizer_failures_total", &[]), 0.0);
    assert!(
        metrics.sum(
            "lookout_plugin_calls_total",
            &[("plugin", "redact"), ("outcome", "ok")]
        ) >= 1.0
    );

    let logs = host.logs().join("\n");
    assert!(logs.contains("lookout started"), "{logs}");
    for secret in SECRETS {
        assert!(!logs.contains(secret), "{secret} reached the logs");
    }
}

/// NDJSON works like an array, and `?kind=` filters the stream by prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_ingest_and_kind_filtered_stream() {
    let host = quiet_host();
    let mut audit = LiveStream::open(&host, "?kind=audit.").await.unwrap();
    let body = "{\"kind\":\"noise.tick\"}\n{\"kind\":\"audit.login\",\"fields\":{\"user\":\"amy\"}}\n\n{\"kind\":\"noise.tick\"}\n{\"kind\":\"audit.logout\"}\n";
    let response = host
        .http
        .post(host.url("/api/v1/events"))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(response.json::<Value>().await.unwrap()["accepted"], 4);
    let events = audit.take(2, Duration::from_secs(10)).await;
    assert_eq!(events[0]["kind"], "audit.login");
    assert_eq!(events[1]["kind"], "audit.logout");
}

/// Malformed bodies get a 400 that names the line (or index) and field, and publish nothing
/// — not even the valid events before the bad one. Oversized bodies get 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_are_refused_and_publish_nothing() {
    let host = quiet_host();
    let post = |body: String| {
        let request = host.http.post(host.url("/api/v1/events")).body(body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };

    let (status, body) = post(
        "{\"kind\":\"ok.one\"}\n{\"kind\":\"ok.two\",\"fields\":{\"nested\":{\"a\":1}}}".into(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["line"], 2);
    assert_eq!(body["field"], "fields.nested");

    let (status, body) = post("[{\"kind\":\"ok\"}, {\"kind\":\"Not A Kind\"}]".into()).await;
    assert_eq!(
        (status, &body["index"], &body["field"]),
        (400, &json!(1), &json!("kind"))
    );

    let (status, body) = post("[{\"kind\":\"ok\", \"extra\": 1}]".into()).await;
    assert_eq!((status, &body["field"]), (400, &json!("extra")));

    let (status, body) = post("{\"kind\": ".into()).await;
    assert_eq!((status, &body["line"]), (400, &json!(1)));
    assert!(
        body["error"].as_str().unwrap().contains("invalid JSON"),
        "{body}"
    );

    let (status, _) = post(String::new()).await;
    assert_eq!(status, 400);

    let big = format!("[{}]", vec![r#"{"kind":"big","fields":{"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}"#; 20_000].join(","));
    // On its own connection: the server answers 413 without reading the body and closes the
    // connection, which a pooled client would otherwise try to reuse.
    let response = reqwest::Client::new()
        .post(host.url("/api/v1/events"))
        .body(big)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 413);
    assert!(
        body["error"].as_str().unwrap().contains("larger than"),
        "{body}"
    );

    let metrics = host.metrics().await;
    assert_eq!(
        metrics.sum("lookout_events_published_total", &[]),
        0.0,
        "a refused body published something"
    );

    let response = host
        .http
        .get(host.url("/no/such/route"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert!(response.json::<Value>().await.unwrap()["error"].is_string());
}

/// `/health` answers while the host runs; `/metrics` is Prometheus text with the bus
/// families declared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_answer() {
    let host = quiet_host();
    let response = host.http.get(host.url("/health")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "ok"})
    );

    host.http
        .post(host.url("/api/v1/events"))
        .body("{\"kind\":\"warm.up\"}")
        .send()
        .await
        .unwrap();
    let response = host.http.get(host.url("/metrics")).send().await.unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    // Families with labels appear once the pipeline has handled the first event.
    let text = eventually(
        "the warm-up event accepted",
        Duration::from_secs(10),
        || async {
            let text = host.get_text("/metrics").await?;
            text.contains(r#"lookout_events_total{kind="warm.up",outcome="accepted"} 1"#)
                .then_some(text)
        },
    )
    .await;
    for family in [
        "lookout_events_published_total",
        "lookout_events_total",
        "lookout_bus_stage_seconds",
        "lookout_plugin_call_duration_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{text}"
        );
    }
}
