//! Runtime configuration through its one path — the API, `lookout config apply` and the
//! watched file: checked whole (every invalid field named, nothing changed), applied without
//! a restart (and visibly in effect), versioned, secrets masked.

use std::process::Command;
use std::time::Duration;

use lookout_testkit::{Host, eventually};
use serde_json::{Value, json};

use crate::LOOKOUT;

const START: &str = r#"
[bus.sampling]
default_rate = 1.0

[health]
hold_ms = 5000

[[pools]]
name = "demo"
app = "demo"
size = 1
[pools.env]
DB_PASSWORD = "hunter2"
"#;

async fn get(host: &Host) -> (u64, Value) {
    let body: Value = host
        .http
        .get(host.url("/api/v1/config"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (body["version"].as_u64().unwrap(), body["config"].clone())
}

async fn patch(host: &Host, body: Value) -> (u16, Value) {
    let response = host
        .http
        .patch(host.url("/api/v1/config"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

fn fields(body: &Value, key: &str) -> Vec<String> {
    body[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_changes_without_a_restart_through_one_path() {
    let dir = lookout_testkit::artifacts_dir();
    let file = dir.join(format!("live-{}.toml", std::process::id()));
    std::fs::write(&file, START).unwrap();
    let host = Host::start(LOOKOUT, &["--config", file.to_str().unwrap()]).unwrap();

    // The effective config, versioned, secrets masked.
    let (version, config) = get(&host).await;
    assert_eq!(version, 1);
    assert_eq!(config["pools"][0]["env"]["DB_PASSWORD"], "***");
    assert!(!config.to_string().contains("hunter2"));

    // A change in effect at once: sample everything out (errors are still kept).
    let (status, body) = patch(&host, json!({"bus": {"sampling": {"default_rate": 0.0}}})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 2);
    assert_eq!(fields(&body, "changed"), ["bus.sampling.default_rate"]);
    let events: Vec<Value> = (0..20)
        .map(|i| json!({"kind": "cfg.probe", "fields": {"i": i}}))
        .collect();
    let posted = host
        .http
        .post(host.url("/api/v1/events"))
        .json(&events)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 202);
    let sampled = eventually(
        "the new sampling rate in effect",
        Duration::from_secs(10),
        || async {
            let m = host.metrics().await;
            let n = m.sum(
                "lookout_events_total",
                &[("kind", "cfg.probe"), ("outcome", "sampled_out")],
            );
            (n == 20.0).then_some(n)
        },
    )
    .await;
    assert_eq!(sampled, 20.0);
    let m = host.metrics().await;
    assert_eq!(
        m.sum(
            "lookout_events_published_total",
            &[("kind", "config.changed")]
        ),
        1.0
    );

    // A change with several problems: each one named, nothing changed.
    let bad = START.replace("default_rate = 1.0", "default_rate = 7.5")
        + "\n[server]\nmax_body_bytes = 5\n[log]\nlevel = \"nope=nope=x\"\n";
    let response = host
        .http
        .put(host.url("/api/v1/config"))
        .body(bad)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    let named = fields(&body, "invalid");
    for field in [
        "server.max_body_bytes",
        "log.level",
        "bus.sampling.default_rate",
    ] {
        assert!(
            named.iter().any(|f| f == field),
            "{field} not named: {body}"
        );
    }
    assert_eq!(
        get(&host).await.0,
        2,
        "a refused change changed the version"
    );
    // A typo is refused too; pools change only at start.
    let (status, body) = patch(&host, json!({"bus": {"sampling": {"defualt_rate": 1.0}}})).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("defualt_rate"), "{body}");
    let (status, body) = patch(&host, json!({"pools": [{"name": "other", "app": "demo"}]})).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("restart"), "{body}");

    // A pool resized while it runs: a second worker comes up.
    let (status, body) = patch(
        &host,
        json!({"pools": [{"name": "demo", "app": "demo", "size": 2, "env": {"DB_PASSWORD": "hunter2"}}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 3);
    assert_eq!(fields(&body, "changed"), ["pools.0.size"]);
    eventually("two workers", Duration::from_secs(20), || async {
        let pool = host.get_json("/api/v1/pools/demo").await?;
        (pool["workers"].as_array()?.len() == 2 && pool["status"] == "ok").then_some(())
    })
    .await;

    // The CLI: the same path, its answer printed, a refusal exits non-zero.
    let cli_file = dir.join(format!("apply-{}.toml", std::process::id()));
    std::fs::write(&cli_file, format!("{START}\n[log]\nlevel = \"debug\"\n")).unwrap();
    let out = Command::new(LOOKOUT)
        .args([
            "config",
            "apply",
            cli_file.to_str().unwrap(),
            "--host",
            &host.base,
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("version 4") && said.contains("log.level"),
        "{said}"
    );
    assert_eq!(
        get(&host).await.1["bus"]["sampling"]["default_rate"],
        1.0,
        "the file's rate"
    );
    std::fs::write(&cli_file, "[bus]\nbatch_size = 0\n").unwrap();
    let out = Command::new(LOOKOUT)
        .args([
            "config",
            "apply",
            cli_file.to_str().unwrap(),
            "--host",
            &host.base,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bus.batch_size"));

    // The watched file: an edit is applied by itself.
    std::fs::write(&file, START.replace("hold_ms = 5000", "hold_ms = 700")).unwrap();
    let (version, config) = eventually(
        "the edited file applied",
        Duration::from_secs(15),
        || async {
            let (version, config) = get(&host).await;
            (config["health"]["hold_ms"] == 700).then_some((version, config))
        },
    )
    .await;
    assert_eq!(version, 5);
    assert_eq!(
        config["log"]["level"], "info",
        "the file says nothing of log: the default"
    );
}
