//! The log as operators read it: after a mixed workload — ingest, requests that succeed, fail,
//! crash, time out and print to stderr, sessions, a runtime level change, a shutdown — every
//! line parses and matches `tests/log-schema.json` (stdout's too), a request's lines carry its
//! correlation id, and no secret of any kind the `redact` plugin knows reached it.

use std::time::Duration;

use lookout_testkit::{eventually, repo_root};
use serde_json::{Value, json};

use crate::{SECRETS, default_host};

/// Free text carrying every secret.
fn leaky_text() -> String {
    format!(
        "login password=hunter2 with key AKIAIOSFODNN7EXAMPLE card 4111 1111 1111 1111 \
         db postgres://app:s3cr3tpw@db/x header Authorization: Bearer abc123tokenvalue \
         jwt {} pem -----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx\n-----END RSA PRIVATE KEY----- \
         gh ghp_0123456789abcdefghijABCDEFGHIJ012345 gl glpat-abcdefghij0123456789 \
         slack xoxb-1234567890-abcdefghij stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc \
         openai sk-abcdefghijklmnopqrstuvwxyz012345 google AIzaSyA1234567890abcdefghijklmnopqrstu \
         npm npm_abcdefghijklmnopqrstuvwxyz0123456789 hf hf_abcdefghijklmnopqrstuvwxyz0123456789 \
         basic Basic dXNlcjpwYXNzd29yZA== flag --password topsecretflag",
        SECRETS[5]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_has_one_shape_and_no_secret() {
    let mut host = default_host();
    let execute = |body: Value, cid: &'static str| {
        let host = &host;
        async move {
            host.http
                .post(host.url("/api/v1/pools/demo/execute"))
                .header("x-correlation-id", cid)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    eventually("the demo pool up", Duration::from_secs(20), || async {
        (execute(json!({"command": "echo"}), "warm-up").await == 200).then_some(())
    })
    .await;

    let text = leaky_text();
    let leaky_args = json!({
        "password": "hunter2", "api_key": "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
        "card": 4111111111111111i64, "note": text,
    });
    let ingest = host
        .http
        .post(host.url("/api/v1/events"))
        .json(&json!([{"kind": "app.audit", "correlation_id": "ingest-1",
                       "fields": {"note": text, "password": "hunter2"}}]))
        .send()
        .await
        .unwrap();
    assert_eq!(ingest.status(), 202);
    assert_eq!(
        execute(json!({"command": "echo", "args": leaky_args}), "ok-1").await,
        200
    );
    assert_eq!(
        execute(
            json!({"command": "fail", "args": {"message": text, "password": "hunter2"}}),
            "fail-1"
        )
        .await,
        500
    );
    assert_eq!(
        execute(
            json!({"command": "say", "args": {"message": text}}),
            "say-1"
        )
        .await,
        200
    );
    assert_eq!(execute(json!({"command": "crash"}), "crash-1").await, 502);
    assert_eq!(
        execute(
            json!({"command": "sleep", "args": {"seconds": 10}, "timeout_ms": 200}),
            "slow-1"
        )
        .await,
        504
    );
    assert_eq!(
        execute(
            json!({"command": "count", "session_id": "cart-1"}),
            "session-1"
        )
        .await,
        200
    );
    let patch = |level: &'static str| {
        let host = &host;
        async move {
            host.http
                .patch(host.url("/api/v1/config"))
                .json(&json!({"log": {"level": level}}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(patch("debug").await, 200);
    assert_eq!(execute(json!({"command": "echo"}), "debug-1").await, 200);
    assert_eq!(patch("info").await, 200);
    // What the workers wrote to stderr is logged, each record with its own request's id.
    for (cid, text) in [
        ("say-1", "login password=[REDACTED"),
        ("crash-1", "crashing on purpose"),
    ] {
        eventually(
            &format!("{cid}'s stderr logged"),
            Duration::from_secs(10),
            || async {
                host.logs()
                    .iter()
                    .any(|l| {
                        l.contains(&format!("\"correlation_id\":\"{cid}\""))
                            && l.contains("\"stderr\"")
                            && l.contains(text)
                    })
                    .then_some(())
            },
        )
        .await;
    }
    let status = host.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "{status}");

    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("tests/log-schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let lines = host.logs();
    assert!(lines.len() > 20, "{} lines", lines.len());
    let mut by_request: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    for line in &lines {
        let value: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "{line}\n  does not match the log schema: {errors:?}"
        );
        if let Some(cid) = value["correlation_id"].as_str() {
            by_request.entry(cid.to_string()).or_default().push(value);
        }
    }
    // Container log pipelines read stdout too: its one line is a record of the same shape.
    let stdout = host.stdout();
    assert_eq!(stdout.len(), 1, "{stdout:?}");
    let listening: Value = serde_json::from_str(&stdout[0])
        .unwrap_or_else(|e| panic!("a stdout line that is not JSON ({e}): {}", stdout[0]));
    let errors: Vec<String> = validator
        .iter_errors(&listening)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{}: {errors:?}", stdout[0]);
    assert_eq!(listening["message"], "listening");
    assert_eq!(listening["fields"]["url"], host.base.as_str());
    let messages = |cid: &str| -> Vec<String> {
        by_request
            .get(cid)
            .map(|lines| {
                lines
                    .iter()
                    .map(|l| l["message"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(messages("ok-1"), ["request started", "request completed"]);
    assert_eq!(messages("fail-1"), ["request started", "request failed"]);
    assert!(messages("say-1").len() >= 3, "{:?}", messages("say-1"));
    for cid in ["crash-1", "slow-1"] {
        assert!(
            messages(cid).contains(&"request failed".to_string()),
            "{cid}: {:?}",
            messages(cid)
        );
    }
    let failed = &by_request["fail-1"][1];
    assert_eq!(failed["fields"]["worker_error_kind"], "ValueError");
    assert!(
        failed["fields"]["traceback"]
            .as_str()
            .unwrap()
            .contains("raise ValueError")
    );
    assert!(lines.iter().any(|l| l.contains("configuration changed")));
    let debug_lines = lines
        .iter()
        .filter(|l| l.contains("\"level\":\"DEBUG\""))
        .count();
    assert!(debug_lines > 0, "the runtime level change took effect");

    let all = lines.join("\n");
    for secret in SECRETS {
        assert!(!all.contains(secret), "`{secret}` reached the log");
    }
}

/// For people at a terminal, the pretty format keeps the plain sentence on stdout (and the
/// harness still finds the address in it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pretty_format_says_where_it_listens_in_words() {
    let path = lookout_testkit::artifacts_dir().join("pretty.toml");
    std::fs::write(&path, "").unwrap();
    let host = lookout_testkit::Host::start(
        crate::LOOKOUT,
        &["--config", path.to_str().unwrap(), "--log-format", "pretty"],
    )
    .unwrap();
    let base = &host.base;
    assert_eq!(
        host.stdout(),
        [format!(
            "lookout: listening on {base} (dashboard at {base}/)"
        )]
    );
    let health = host.get_json("/health").await;
    assert!(health.is_some(), "the host answers at {base}");
}
