//! W3C Trace Context over HTTP and spans on the bus: a caller's `traceparent` is joined and
//! answered with lookout's span, the request's host and worker spans stream as `trace.span`
//! events — sanitized like every event, so a secret in a span attribute never leaves.

use std::time::Duration;

use lookout_testkit::{Host, LiveStream, eventually};
use serde_json::{Value, json};

use crate::default_host;

const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const SECRET: &str = "hunter2hunter2xyz";

async fn demo_ready(host: &Host) {
    eventually("the demo pool ready", Duration::from_secs(20), || async {
        let pool: Value = host.get_json("/api/v1/pools/demo").await?;
        (pool["status"] == "ok").then_some(())
    })
    .await;
}

async fn execute(host: &Host, body: Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = host
        .http
        .post(host.url("/api/v1/pools/demo/execute"))
        .json(&body);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_trace_is_joined_and_its_spans_stream_sanitized() {
    let host = default_host();
    demo_ready(&host).await;
    let mut stream = LiveStream::open(&host, "?kind=trace.span").await.unwrap();

    let response = execute(
        &host,
        json!({"command": "traced", "args": {"rows": 10, "secret": SECRET}}),
        &[("traceparent", CALLER), ("x-correlation-id", "tr-1")],
    )
    .await;
    assert_eq!(response.status(), 200);
    let answered = response.headers()["traceparent"]
        .to_str()
        .unwrap()
        .to_string();
    let parts: Vec<&str> = answered.split('-').collect();
    assert_eq!(parts.len(), 4, "{answered}");
    assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736", "{answered}");
    assert_ne!(
        parts[2], "00f067aa0ba902b7",
        "lookout's own span: {answered}"
    );
    assert_eq!(parts[3], "01");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(
        body["result"]["trace_id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );

    let spans = stream.take(5, Duration::from_secs(10)).await;
    let text = serde_json::to_string(&spans).unwrap();
    assert!(!text.contains(SECRET), "a span attribute leaked: {text}");
    let by_name = |name: &str| {
        spans
            .iter()
            .find(|s| s["fields"]["name"] == name)
            .unwrap_or_else(|| panic!("no span {name}: {text}"))
    };
    let root = by_name("request traced");
    assert_eq!(root["correlation_id"], "tr-1");
    assert_eq!(root["fields"]["span_id"], parts[2]);
    assert_eq!(root["fields"]["parent_span_id"], "00f067aa0ba902b7");
    let execute_span = by_name("execute");
    let model = by_name("load_model");
    assert_eq!(
        model["fields"]["parent_span_id"],
        execute_span["fields"]["span_id"]
    );
    let query = by_name("query");
    assert_eq!(
        query["fields"]["parent_span_id"],
        model["fields"]["span_id"]
    );
    assert!(
        query["fields"]["attr.db_password"]
            .as_str()
            .is_some_and(|v| v.contains("REDACTED")),
        "{query}"
    );
    for s in &spans {
        assert_eq!(s["fields"]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    // The request's log lines carry its trace id beside its correlation id; no secret.
    for line in crate::log_lines_with(&host, "\"tr-1\"", 2).await {
        assert_eq!(
            line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
            "{line}"
        );
    }
    assert!(
        !host.logs().iter().any(|l| l.contains(SECRET)),
        "the secret reached the log"
    );

    // A malformed traceparent is ignored: a trace of lookout's own, not an error.
    let response = execute(
        &host,
        json!({"command": "echo", "args": 1}),
        &[("traceparent", "00-not-a-trace-01")],
    )
    .await;
    assert_eq!(response.status(), 200);
    let answered = response.headers()["traceparent"].to_str().unwrap();
    assert!(
        answered.starts_with("00-") && !answered.contains("4bf92f35"),
        "{answered}"
    );
}
