//! Worker pools over HTTP: the embedded demo pool (real `python3` workers), `execute` with
//! its correlation id and status codes, the pool API, and a host whose workers cannot start.

use std::time::Duration;

use lookout_testkit::{Host, LiveStream, eventually};
use serde_json::{Value, json};

use crate::{default_host, host_with_config};

async fn execute(host: &Host, pool: &str, body: Value, cid: Option<&str>) -> reqwest::Response {
    let mut request = host
        .http
        .post(host.url(&format!("/api/v1/pools/{pool}/execute")))
        .json(&body);
    if let Some(cid) = cid {
        request = request.header("x-correlation-id", cid);
    }
    request.send().await.unwrap()
}

/// Waits until the pool named has all its workers available.
async fn pool_ready(host: &Host, pool: &str) -> Value {
    eventually(
        "the pool's workers available",
        Duration::from_secs(20),
        || async {
            let pool: Value = host.get_json(&format!("/api/v1/pools/{pool}")).await?;
            (pool["status"] == "ok").then_some(pool)
        },
    )
    .await
}

/// With no config, lookout runs the demo pool; a request runs on a real Python worker, the
/// caller's correlation id comes back in the header and is on every event and log line of the
/// request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_runs_on_the_demo_pool_with_its_correlation_id() {
    let host = default_host();
    let pool = pool_ready(&host, "demo").await;
    let workers = pool["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2);
    for w in workers {
        assert!(w["pid"].as_u64().unwrap() > 0, "{w}");
        assert!(w["memory_bytes"].as_u64().unwrap() > 1 << 20, "{w}");
    }
    let mut stream = LiveStream::open(&host, "?kind=request").await.unwrap();

    let response = execute(
        &host,
        "demo",
        json!({"command": "echo", "args": {"greeting": "hi"}}),
        Some("trace-42.a"),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-correlation-id"], "trace-42.a");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["result"], json!({"greeting": "hi"}));
    assert_eq!(body["correlation_id"], "trace-42.a");

    let events = stream.take(2, Duration::from_secs(10)).await;
    let kinds: Vec<_> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["request.started", "request.completed"]);
    for e in &events {
        assert_eq!(e["correlation_id"], "trace-42.a", "{e}");
        assert_eq!(e["fields"]["pool"], "demo", "{e}");
    }
    for line in crate::log_lines_with(&host, "trace-42.a", 2).await {
        assert_eq!(line["correlation_id"], "trace-42.a", "{line}");
    }

    // An explicit session, then a request in it on its worker.
    let session: Value = host
        .http
        .post(host.url("/api/v1/pools/demo/sessions"))
        .json(&json!({"session_id": "cart-7", "metadata": {"user": "amy"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(session["session_id"], "cart-7");
    assert_eq!(session["created"], true);
    let body: Value = execute(
        &host,
        "demo",
        json!({"command": "count", "session_id": "cart-7"}),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(body["worker"], session["worker"], "{body}");

    // Recycling a worker on demand: a new one takes its slot.
    let recycled = host
        .http
        .post(host.url(&format!(
            "/api/v1/pools/demo/workers/{}/recycle",
            session["worker"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(recycled.status(), 202);
    eventually(
        "the recycled worker replaced",
        Duration::from_secs(20),
        || async {
            let pool: Value = host.get_json("/api/v1/pools/demo").await?;
            let ids: Vec<&str> = pool["workers"]
                .as_array()?
                .iter()
                .filter_map(|w| w["id"].as_str())
                .collect();
            (pool["status"] == "ok" && !ids.contains(&session["worker"].as_str()?)).then_some(())
        },
    )
    .await;

    // What observability costs a request, as the host measured it.
    let cost = eventually("the cost measured", Duration::from_secs(10), || async {
        let detailed = host.get_json("/health/detailed").await?;
        let cost = detailed["observability_cost"].clone();
        (cost["per_request_us"].as_f64()? > 0.0).then_some(cost)
    })
    .await;
    let per_request = cost["events_per_request"].as_f64().unwrap();
    assert!((1.5..=2.5).contains(&per_request), "{cost}");

    // Without a header, one is made up and returned.
    let response = execute(&host, "demo", json!({"command": "pid"}), None).await;
    let cid = response.headers()["x-correlation-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(cid.starts_with("lk-"), "{cid}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["correlation_id"], cid.as_str());
}

/// Failures keep their context and map to status codes; secrets in the error and the
/// arguments never come back, nor reach the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_map_to_status_codes_with_context_and_no_secret() {
    let host = host_with_config(
        "pools-small.toml",
        "[[pools]]\nname = \"small\"\napp = \"demo\"\nsize = 1\nqueue_limit = 1\n",
    );
    pool_ready(&host, "small").await;

    let response = execute(
        &host,
        "small",
        json!({"command": "fail", "args": {"message": "login failed for password=hunter2", "password": "hunter2", "user": "bob"}}),
        Some("fail-1"),
    )
    .await;
    assert_eq!(response.status(), 500);
    let body: Value = response.json().await.unwrap();
    let text = body.to_string();
    assert!(!text.contains("hunter2"), "{text}");
    assert_eq!(body["error"]["kind"], "worker");
    assert_eq!(body["error"]["worker_kind"], "ValueError");
    assert!(
        body["error"]["traceback"]
            .as_str()
            .is_some_and(|t| t.contains("raise ValueError(message)")),
        "{body}"
    );
    assert_eq!(body["args"]["user"], "bob");
    assert_eq!(body["args"]["password"], "[REDACTED]");
    assert_eq!(
        (&body["pool"], &body["command"]),
        (&json!("small"), &json!("fail"))
    );
    assert!(
        body["worker"].is_string() && body["duration_ms"].is_number(),
        "{body}"
    );

    // A crash: 502 with what the worker said on stderr — logged with the request's id.
    let response = execute(&host, "small", json!({"command": "crash"}), Some("crash-1")).await;
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["kind"], "worker_crashed");
    assert!(
        body["error"]["stderr_tail"]
            .as_str()
            .is_some_and(|t| t.contains("crashing on purpose")),
        "{body}"
    );
    pool_ready(&host, "small").await;

    // A timeout: 504.
    let response = execute(
        &host,
        "small",
        json!({"command": "sleep", "args": {"seconds": 30}, "timeout_ms": 300}),
        None,
    )
    .await;
    assert_eq!(response.status(), 504);
    pool_ready(&host, "small").await;

    // Busy, one waiting, one more: 503 with Retry-After.
    let slow = || {
        execute(
            &host,
            "small",
            json!({"command": "sleep", "args": {"seconds": 0.6}}),
            None,
        )
    };
    let (a, b, refused) = tokio::join!(slow(), slow(), async {
        eventually("one request waiting", Duration::from_secs(10), || async {
            let pool: Value = host.get_json("/api/v1/pools/small").await?;
            (pool["queue_length"] == 1).then_some(())
        })
        .await;
        execute(&host, "small", json!({"command": "echo"}), None).await
    });
    assert_eq!(
        (a.status().as_u16(), b.status().as_u16()),
        (200, 200),
        "{:?}",
        b.text().await
    );
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["kind"], "queue_full");

    // Bad requests.
    assert_eq!(
        execute(&host, "nope", json!({"command": "echo"}), None)
            .await
            .status(),
        404
    );
    assert_eq!(
        execute(&host, "small", json!({"cmd": "echo"}), None)
            .await
            .status(),
        400
    );
    assert_eq!(
        execute(
            &host,
            "small",
            json!({"command": "echo"}),
            Some("has space")
        )
        .await
        .status(),
        400
    );

    let stderr_line = host
        .logs()
        .into_iter()
        .find(|l| l.contains("crashing on purpose"))
        .expect("the worker's stderr is logged");
    let stderr_line: Value = serde_json::from_str(&stderr_line).unwrap();
    assert_eq!(stderr_line["correlation_id"], "crash-1", "{stderr_line}");
    assert_eq!(stderr_line["fields"]["stream"], "stderr", "{stderr_line}");

    let logs = host.logs().join("\n");
    assert!(logs.contains("fail-1"), "the failure is logged");
    assert!(!logs.contains("hunter2"), "a secret reached the log");
}

/// A host whose workers cannot start still serves; the pool says why it is unavailable and
/// requests are refused with that reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_that_cannot_start_leaves_the_host_serving() {
    let host = host_with_config(
        "pools-missing.toml",
        "[[pools]]\nname = \"ghost\"\ncommand = [\"/nonexistent/python3\", \"app.py\"]\nsize = 1\n",
    );
    let health = host.http.get(host.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let pool: Value = eventually(
        "the pool reported unavailable",
        Duration::from_secs(10),
        || async {
            let pool: Value = host.get_json("/api/v1/pools/ghost").await?;
            (pool["status"] == "unavailable" && pool["workers"][0]["last_error"].is_string())
                .then_some(pool)
        },
    )
    .await;
    assert!(
        pool["workers"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot run"),
        "{pool}"
    );
    let response = execute(&host, "ghost", json!({"command": "echo"}), None).await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot run"),
        "{body}"
    );
}
