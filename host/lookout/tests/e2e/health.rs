//! Health that tells the truth, driven across each threshold with real workers: a failing
//! command (error rate), a slow one (p95 latency), a saturating load (queue length) and a
//! killed worker (available workers). Each flips readiness once and back once, with
//! `health.changed` logged once per transition. At start, readiness follows the workers
//! without the hysteresis hold.

use std::time::Duration;

use lookout_testkit::{Host, eventually, repo_root};
use serde_json::{Value, json};

use crate::host_with_config;

fn host() -> Host {
    let app = repo_root().join("examples/workers/app.py");
    let config = format!(
        r#"
[health]
hold_ms = 300
interval_ms = 100

[[pools]]
name = "h"
command = ["python3", {app:?}]
size = 2
queue_limit = 20
[pools.env]
DEMO_STARTUP_DELAY_S = "1.5"
[pools.health]
min_available_ratio = 1.0
max_error_rate = 0.4
min_requests = 4
max_queue_length = 2
max_p95_ms = 400
window_s = 2
"#
    );
    host_with_config("health.toml", &config)
}

async fn ready(host: &Host) -> (u16, Value) {
    let response = host
        .http
        .get(host.url("/health/ready"))
        .send()
        .await
        .unwrap();
    let code = response.status().as_u16();
    (code, response.json().await.unwrap())
}

/// `n` concurrent `sleep` commands of `seconds` each on pool `h`; their status codes.
async fn sleeps(host: &Host, n: usize, seconds: f64) -> Vec<u16> {
    let body = json!({"command": "sleep", "args": {"seconds": seconds}});
    let calls = (0..n).map(|_| host.execute("h", &body));
    futures_util::future::join_all(calls).await
}

/// Waits until readiness is `want`; returns the body then.
async fn until(host: &Host, want: u16, what: &str) -> Value {
    eventually(what, Duration::from_secs(20), || async {
        let (code, body) = ready(host).await;
        (code == want).then_some(body)
    })
    .await
}

fn failing(body: &Value) -> Vec<String> {
    body["failing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_each_criterion_across_its_threshold() {
    let host = host();
    // Not ready while the workers start (1.5 s each), then ready.
    let (code, body) = ready(&host).await;
    assert_eq!(code, 503, "{body}");
    assert!(
        failing(&body).contains(&"pool:h:available_workers".to_string()),
        "{body}"
    );
    until(&host, 200, "ready once the workers are up").await;
    let livez = host.http.get(host.url("/livez")).send().await.unwrap();
    assert_eq!(
        (livez.status().as_u16(), livez.text().await.unwrap()),
        (200, "ok".into())
    );

    // A failing command: the error rate passes 0.4.
    for _ in 0..5 {
        assert_eq!(host.execute("h", &json!({"command": "fail"})).await, 500);
    }
    let body = until(&host, 503, "not ready on the error rate").await;
    let check = body["failing"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "pool:h:error_rate")
        .unwrap_or_else(|| panic!("{body}"))
        .clone();
    assert_eq!(
        (check["value"].as_f64(), check["threshold"].as_f64()),
        (Some(1.0), Some(0.4))
    );
    assert_eq!(check["rule"], "at_most");
    let verbose = host
        .http
        .get(host.url("/readyz?verbose"))
        .send()
        .await
        .unwrap();
    assert_eq!(verbose.status(), 503);
    let text = verbose.text().await.unwrap();
    assert!(
        text.contains("[-]pool:h:error_rate failed") && text.contains("readyz check failed"),
        "{text}"
    );
    until(&host, 200, "ready once the failures leave the window").await;

    // A slow command: p95 over 400 ms.
    for code in sleeps(&host, 4, 0.6).await {
        assert_eq!(code, 200);
    }
    let body = until(&host, 503, "not ready on latency").await;
    assert!(
        failing(&body).contains(&"pool:h:p95_latency_ms".to_string()),
        "{body}"
    );
    until(&host, 200, "ready once the slow requests leave the window").await;

    // A saturating load: more than 2 waiting.
    let (codes, body) = tokio::join!(sleeps(&host, 8, 0.5), async {
        until(&host, 503, "not ready while saturated").await
    });
    assert!(codes.iter().all(|c| *c == 200), "{codes:?}");
    assert!(
        failing(&body).contains(&"pool:h:queue_length".to_string()),
        "{body}"
    );
    until(
        &host,
        200,
        "ready once the queue drains and the window clears",
    )
    .await;

    // A killed worker: one of two live until its replacement is up (1.5 s).
    let detailed = host
        .get_json("/health/detailed")
        .await
        .expect("GET /health/detailed");
    let pid = detailed["pools"][0]["pool"]["workers"][0]["pid"]
        .as_i64()
        .unwrap();
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    let body = until(&host, 503, "not ready with a worker down").await;
    assert!(
        failing(&body).contains(&"pool:h:available_workers".to_string()),
        "{body}"
    );
    until(&host, 200, "ready once the replacement is up").await;

    // Each episode: one transition to not_ready and one back, nothing in between.
    // The last line can still be in the pipe from lookout's stderr when the
    // response that saw the change arrives, so wait for the count first.
    let transitions = || -> Vec<String> {
        host.logs()
            .iter()
            .filter(|l| l.contains("\"health changed\""))
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                v["fields"]["to"].as_str().unwrap().to_string()
            })
            .collect()
    };
    // Starting (the workers not up yet) is the first episode.
    let expected: Vec<&str> = std::iter::repeat_n(["not_ready", "ready"], 5)
        .flatten()
        .collect();
    eventually(
        "every transition logged",
        Duration::from_secs(10),
        || async { (transitions().len() >= expected.len()).then_some(()) },
    )
    .await;
    let transitions = transitions();
    assert_eq!(
        transitions, expected,
        "one log line per transition, no flapping"
    );
    let events = host.metrics().await.sum(
        "lookout_events_published_total",
        &[("kind", "health.changed")],
    );
    assert_eq!(events, 10.0, "one health.changed event per transition");
}

/// A host is ready as soon as its workers are up, not a hysteresis hold later: the hold is for
/// flapping, and a load balancer should not wait 30 s for a host that can serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_as_soon_as_the_workers_are_up_not_a_hold_later() {
    let app = repo_root().join("examples/workers/app.py");
    let host = host_with_config(
        "health-start.toml",
        &format!(
            r#"
[health]
hold_ms = 30000
interval_ms = 100

[[pools]]
name = "h"
command = ["python3", {app:?}]
size = 2
[pools.env]
DEMO_STARTUP_DELAY_S = "1.5"
"#
        ),
    );
    let (code, body) = ready(&host).await;
    assert_eq!(code, 503, "not ready while the workers start: {body}");
    eventually("both workers up", Duration::from_secs(20), || async {
        let pool = host.get_json("/api/v1/pools/h").await?;
        let workers = pool["workers"].as_array()?;
        (workers.len() == 2 && workers.iter().all(|w| w["state"] == "available")).then_some(())
    })
    .await;
    // Well inside the 30 s hold.
    eventually(
        "ready within 5 s of the workers being up",
        Duration::from_secs(5),
        || async { (ready(&host).await.0 == 200).then_some(()) },
    )
    .await;
}
