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
    let body = host
        .get_json("/api/v1/config")
        .await
        .expect("GET /api/v1/config");
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

/// `lookout config apply FILE --host` against `host`.
fn apply(file: &std::path::Path, host: &Host) -> std::process::Output {
    Command::new(LOOKOUT)
        .args([
            "config",
            "apply",
            file.to_str().unwrap(),
            "--host",
            &host.base,
        ])
        .output()
        .unwrap()
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
    host.post_events(&Value::Array(events)).await;
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
    // A typo is refused too.
    let (status, body) = patch(&host, json!({"bus": {"sampling": {"defualt_rate": 1.0}}})).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        fields(&body, "invalid"),
        ["bus.sampling.defualt_rate"],
        "the path of the typo: {body}"
    );

    // A pool resized while it runs: a second worker comes up.
    let (status, body) = patch(
        &host,
        json!({"pools": [{"name": "demo", "app": "demo", "size": 2, "env": {"DB_PASSWORD": "hunter2"}}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 3);
    assert_eq!(fields(&body, "changed"), ["pools.demo.size"]);
    eventually("two workers", Duration::from_secs(20), || async {
        let pool = host.get_json("/api/v1/pools/demo").await?;
        (pool["workers"].as_array()?.len() == 2 && pool["status"] == "ok").then_some(())
    })
    .await;

    // The CLI: the same path, its answer printed, a refusal exits non-zero.
    let cli_file = dir.join(format!("apply-{}.toml", std::process::id()));
    std::fs::write(&cli_file, format!("{START}\n[log]\nlevel = \"debug\"\n")).unwrap();
    let out = apply(&cli_file, &host);
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
    let out = apply(&cli_file, &host);
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

/// Pools added and removed, and the dashboard turned off and on, while the host runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_and_the_dashboard_come_and_go_without_a_restart() {
    let host = Host::start(LOOKOUT, &[]).expect("lookout starts");
    let demo = json!({"name": "demo", "app": "demo", "size": 1});
    let echo = json!({"command": "echo", "args": {"x": 1}});
    let execute = |pool: &'static str| host.execute(pool, &echo);

    // Added: its fields are the change, it starts, it serves.
    let (status, body) = patch(
        &host,
        json!({"pools": [demo, {"name": "extra", "app": "demo", "size": 1}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let changed = fields(&body, "changed");
    assert!(
        changed.contains(&"pools.extra.name".to_string()),
        "{changed:?}"
    );
    assert!(
        changed
            .iter()
            .all(|f| f.starts_with("pools.extra.") || f == "pools.demo.size"),
        "only the new pool (and demo's size, 2 → 1) changed: {changed:?}"
    );
    eventually(
        "the added pool serving",
        Duration::from_secs(30),
        || async { (execute("extra").await == 200).then_some(()) },
    )
    .await;

    // A pool that cannot start refuses the whole change: nothing else changes either.
    let (status, body) = patch(
        &host,
        json!({"pools": [demo, {"name": "extra", "app": "demo", "size": 1}, {"name": "bad", "app": "demo", "size": 0}], "log": {"level": "debug"}}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("pools.bad.size"), "{body}");
    assert_eq!(get(&host).await.1["log"]["level"], "info");
    assert!(
        host.get_json("/api/v1/pools/bad")
            .await
            .is_some_and(|v| v.get("error").is_some())
    );

    // Removed: gone from the API at once, stopped gracefully, said so.
    let (status, body) = patch(&host, json!({"pools": [demo]})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(execute("extra").await, 404);
    eventually(
        "pool.stopped for the removed pool",
        Duration::from_secs(20),
        || async {
            let m = host.metrics().await;
            (m.sum(
                "lookout_events_published_total",
                &[("kind", "pool.stopped")],
            ) == 1.0)
                .then_some(())
        },
    )
    .await;
    assert_eq!(execute("demo").await, 200, "the other pool kept serving");
    eventually(
        "the removed pool's gauges gone",
        Duration::from_secs(10),
        || async {
            let m = host.metrics().await;
            let left = m.samples.iter().any(|s| {
                s.name == "lookout_workers"
                    && s.labels.iter().any(|(k, v)| k == "pool" && v == "extra")
            });
            (!left).then_some(())
        },
    )
    .await;

    // The dashboard off: 404 naming the setting; on again: served.
    let page = || async { host.http.get(host.url("/")).send().await.unwrap() };
    assert_eq!(page().await.status(), 200);
    let (status, body) = patch(&host, json!({"server": {"dashboard": false}})).await;
    assert_eq!(status, 200, "{body}");
    let off = page().await;
    assert_eq!(off.status(), 404);
    assert!(off.text().await.unwrap().contains("server.dashboard"));
    let (status, _) = patch(&host, json!({"server": {"dashboard": true}})).await;
    assert_eq!(status, 200);
    assert_eq!(page().await.status(), 200);
}

/// A plugin turned off and on again by configuration: removed at once, refused while off
/// (from the API too), reloaded from the plugin folder when back on; the sanitizer cannot be
/// turned off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_turn_off_and_on_from_the_configuration() {
    let dir =
        lookout_testkit::artifacts_dir().join(format!("plugins-switch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("digest.wasm"), lookout_artifacts::plugins::DIGEST).unwrap();
    std::fs::write(
        dir.join("digest.toml"),
        "name = \"digest\"\nworld = \"consumer\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("slo.wasm"), lookout_artifacts::plugins::SLO).unwrap();
    std::fs::copy(
        lookout_testkit::repo_root().join("examples/plugins/slo.toml"),
        dir.join("slo.toml"),
    )
    .unwrap();
    let config = dir.join("lookout.toml");
    std::fs::write(&config, "[plugins]\ndisabled = [\"slo\"]\n").unwrap();
    let host = Host::start(
        LOOKOUT,
        &[
            "--config",
            config.to_str().unwrap(),
            "--plugins",
            dir.to_str().unwrap(),
        ],
    )
    .expect("lookout starts");
    let names = || async {
        let list = host.get_json("/api/v1/plugins").await.unwrap();
        let mut names: Vec<String> = list["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        names().await,
        ["digest", "redact"],
        "slo is off from the start"
    );

    let (status, body) = patch(&host, json!({"plugins": {"disabled": ["digest", "slo"]}})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(names().await, ["redact"]);
    let refused = crate::plugins::put_plugin(
        &host,
        "digest",
        "name = \"digest\"\nworld = \"consumer\"\n",
        lookout_artifacts::plugins::DIGEST,
    )
    .await;
    assert_eq!(refused.status(), 409);
    assert!(refused.text().await.unwrap().contains("plugins.disabled"));

    let (status, body) = patch(&host, json!({"plugins": {"disabled": []}})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        names().await,
        ["digest", "redact", "slo"],
        "both back from the folder"
    );

    let (status, body) = patch(&host, json!({"plugins": {"disabled": ["redact"]}})).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(fields(&body, "invalid"), ["plugins.disabled"]);
    assert_eq!(names().await, ["digest", "redact", "slo"]);
}

/// A Kubernetes ConfigMap update: the file is a symlink through `..data`, which the kubelet
/// repoints atomically at a new folder. The change is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_style_symlink_swap_is_applied() {
    use std::os::unix::fs::symlink;
    let dir = lookout_testkit::artifacts_dir().join(format!("configmap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (version, hold) in [("..v1", 5000), ("..v2", 700)] {
        std::fs::create_dir_all(dir.join(version)).unwrap();
        std::fs::write(
            dir.join(version).join("lookout.toml"),
            format!("[health]\nhold_ms = {hold}\n"),
        )
        .unwrap();
    }
    symlink("..v1", dir.join("..data")).unwrap();
    symlink("..data/lookout.toml", dir.join("lookout.toml")).unwrap();
    let host = Host::start(
        LOOKOUT,
        &["--config", dir.join("lookout.toml").to_str().unwrap()],
    )
    .expect("lookout starts");
    assert_eq!(get(&host).await.1["health"]["hold_ms"], 5000);

    // What the kubelet does: a new symlink beside, renamed over `..data`.
    symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    let version = eventually(
        "the swapped ConfigMap applied",
        Duration::from_secs(15),
        || async {
            let (version, config) = get(&host).await;
            (config["health"]["hold_ms"] == 700).then_some(version)
        },
    )
    .await;
    assert_eq!(version, 2);
}

/// A setting as the path of keys that reaches it (map keys may hold dots: `x.*`).
type Path = Vec<String>;

fn dotted(path: &Path) -> String {
    path.join(".")
}

/// Every leaf of a configuration as JSON: objects by key (an empty one is a leaf), arrays of
/// tables by their `name`, anything else a leaf.
fn leaves(value: &Value, path: &mut Path, out: &mut Vec<(Path, Value)>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                path.push(k.clone());
                leaves(v, path, out);
                path.pop();
            }
        }
        Value::Array(items) if items.iter().any(Value::is_object) => {
            for item in items {
                path.push(item["name"].as_str().unwrap().to_string());
                leaves(item, path, out);
                path.pop();
            }
        }
        other => out.push((path.clone(), other.clone())),
    }
}

/// The value at `path` (tables in arrays by name).
fn read(value: &Value, path: &[String]) -> Value {
    path.iter()
        .fold(value, |v, k| match v {
            Value::Array(items) => items.iter().find(|i| i["name"] == k.as_str()).unwrap(),
            other => &other[k.as_str()],
        })
        .clone()
}

fn at<'v>(value: &'v mut Value, path: &[String]) -> &'v mut Value {
    path.iter().fold(value, |v, k| &mut v[k.as_str()])
}

/// The merge patch that sets `path` to `to` in `config` (pools go whole: an array is
/// replaced by a merge patch).
fn patch_for(config: &Value, changes: &[(Path, Value)]) -> Value {
    let mut patch = json!({});
    for (path, to) in changes {
        if path[0] == "pools" {
            if patch.get("pools").is_none() {
                patch["pools"] = config["pools"].clone();
            }
            let pool = patch["pools"]
                .as_array_mut()
                .unwrap()
                .iter_mut()
                .find(|p| p["name"] == path[1].as_str())
                .unwrap();
            *at(pool, &path[2..]) = to.clone();
        } else {
            *at(&mut patch, path) = to.clone();
        }
    }
    patch
}

/// Settings read only at start.
const AT_START: &[&str] = &[
    "server.listen",
    "server.max_body_bytes",
    "server.max_plugin_bytes",
    "server.admin_token",
    "bus.ingress_capacity",
    "plugins.cache",
    "plugins.cache_dir",
    "plugins.dir",
    "plugins.state_dir",
    "log.format",
    "nats",
    "otlp",
];

/// A new valid value for a setting: chosen where the type alone cannot say, derived from
/// the current value otherwise.
fn new_value(field: &str, from: &Value) -> Value {
    match field {
        "log.level" => json!("debug"),
        "sanitizer.plugin" => json!("allowlist"),
        "sanitizer.on_failure" => json!("drop"),
        "sanitizer.config.extra_keys" => json!("ssn,iban"),
        "plugins.disabled" => json!(["digest"]),
        "server.listen" => json!("127.0.0.1:1"),
        "server.admin_token" => json!("a-new-admin-token-of-length"),
        "plugins.cache_dir" | "plugins.dir" | "plugins.state_dir" => json!("/tmp/lookout-x"),
        "log.format" => json!("pretty"),
        "pools.t.cwd" => json!("/tmp"),
        // The embedded demo app instead of the command (see `also`).
        "pools.t.app" => json!("demo"),
        "pools.t.env.MODE" => json!("b"),
        "pools.t.env.DB_PASSWORD" => json!("rotated-password"),
        "pools.t.health.max_queue_length" => json!(7),
        // 0 (off) or at least 30.
        "pools.t.heartbeat_timeout_ms" => json!(3000),
        "bus.rate_limits.x.*.burst" => json!(20),
        _ => match from {
            Value::Bool(b) => json!(!b),
            Value::Number(n) if n.is_u64() => json!(n.as_u64().unwrap() + 1),
            Value::Number(n) => {
                let f = n.as_f64().unwrap();
                json!(if f == 0.0 { 0.1 } else { f / 2.0 })
            }
            Value::String(s) => json!(format!("{s}x")),
            Value::Null => json!("x"),
            Value::Array(a) if a.is_empty() => json!(["x"]),
            Value::Array(_) => json!([]),
            Value::Object(_) => json!({"x": "y"}),
        },
    }
}

/// Settings that change together with `field` (a pool runs a command or an app, not both).
fn also(field: &str, config: &Value) -> Vec<(Path, Value)> {
    match field {
        "pools.t.app" => vec![(
            vec!["pools".into(), "t".into(), "command".into()],
            json!([]),
        )],
        // Another policy does not know this one's config keys.
        "sanitizer.plugin" => vec![
            (
                vec!["sanitizer".into(), "config".into(), "extra_keys".into()],
                Value::Null,
            ),
            (
                vec!["sanitizer".into(), "config".into(), "allow".into()],
                json!("user"),
            ),
        ],
        "pools.t.command" => {
            let mut command = read(config, &["pools".into(), "t".into(), "command".into()]);
            command.as_array_mut().unwrap().insert(1, json!("-u"));
            vec![(vec!["pools".into(), "t".into(), "command".into()], command)]
        }
        _ => Vec::new(),
    }
}

/// Every setting of the configuration, changed one at a time through `PATCH`, and back: each
/// is either applied (the only field the answer names, the new value in `GET` — masked where
/// secret — and a `config.changed` event) or refused naming it (a setting read only at start)
/// with nothing changed. A setting added to the configuration is covered by being a leaf of
/// `GET /api/v1/config`; one whose new value needs choosing gets a line in `new_value`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_setting_is_applied_or_refused_by_name() {
    let app = lookout_testkit::repo_root().join("examples/workers/app.py");
    let host = crate::host_with_config(
        "every-setting.toml",
        &format!(
            r#"
[bus.sampling.rates]
"noise.*" = 0.5
[bus.rate_limits."x.*"]
per_second = 100
[sanitizer.config]
extra_keys = "ssn"

[[pools]]
name = "t"
command = ["python3", {app:?}]
size = 1
[pools.env]
MODE = "a"
DB_PASSWORD = "old-password"
"#
        ),
    );
    let (_, shown) = get(&host).await;
    // The running configuration with the real values where `GET` masks them.
    let mut config = shown.clone();
    config["pools"][0]["env"] = json!({"MODE": "a", "DB_PASSWORD": "old-password"});
    let mut all = Vec::new();
    leaves(&shown, &mut Vec::new(), &mut all);
    assert!(all.len() > 60, "{} settings: {shown}", all.len());

    let env_mode = || async {
        let response = host
            .http
            .post(host.url("/api/v1/pools/t/execute"))
            .json(&json!({"command": "env", "args": {"name": "MODE"}}))
            .send()
            .await
            .ok()?;
        let body: Value = response.json().await.ok()?;
        body["result"]["value"].as_str().map(str::to_string)
    };
    let changed_events = || async {
        host.metrics().await.sum(
            "lookout_events_published_total",
            &[("kind", "config.changed")],
        )
    };
    let mut refused = 0;
    for (path, _) in &all {
        let field = dotted(path);
        let from = read(&config, path);
        let mut to = new_value(&field, &from);
        let mut changes = vec![(path.clone(), to.clone())];
        let mut undo = vec![(path.clone(), from.clone())];
        for (other, value) in also(&field, &config) {
            if other == *path {
                to = value.clone();
                changes[0].1 = value;
            } else {
                undo.push((other.clone(), read(&config, &other)));
                changes.push((other, value));
            }
        }
        let mut expected: Vec<String> = changes.iter().map(|(p, _)| dotted(p)).collect();
        expected.sort();
        let (version, _) = get(&host).await;
        let events = changed_events().await;
        let (status, body) = patch(&host, patch_for(&config, &changes)).await;
        let start_only = AT_START
            .iter()
            .any(|p| field == *p || field.starts_with(&format!("{p}.")));
        if field == "server.listen" {
            // `--listen` (the test host's) wins over the configuration: nothing changes.
            assert_eq!((status, fields(&body, "changed")), (200, vec![]), "{body}");
            continue;
        }
        if start_only {
            assert_eq!(status, 422, "{field} → {to}: {body}");
            let named = body["invalid"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["field"] == field.as_str());
            assert!(named, "{field} is not named: {body}");
            assert_eq!(get(&host).await.0, version, "{field}: refused yet changed");
            refused += 1;
            continue;
        }
        assert_eq!(status, 200, "{field} → {to}: {body}");
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        if field == "pools.t.name" {
            // A rename is a removal and an addition: every field of both.
            let changed = fields(&body, "changed");
            for name in ["pools.t.name", "pools.tx.name"] {
                assert!(changed.iter().any(|f| f == name), "{body}");
            }
            let (status, body) = patch(&host, patch_for(&config, &undo)).await;
            assert_eq!(status, 200, "{field} back: {body}");
            continue;
        }
        assert_eq!(sorted(fields(&body, "changed")), expected, "{body}");
        assert_eq!(body["version"], version + 1, "{body}");
        let (_, now) = get(&host).await;
        let seen = read(&now, path);
        // Masked as docs/configuration.md says: pool env values and `*token*`, `*secret*`,
        // `*password*`, `*key*` settings.
        let last = path.last().unwrap().to_ascii_lowercase();
        let secret = field.contains(".env.")
            || ["token", "secret", "password", "key"]
                .iter()
                .any(|s| last.contains(s));
        assert_eq!(
            seen,
            if secret { json!("***") } else { to.clone() },
            "{field} in GET"
        );
        if field == "pools.t.env.MODE" {
            // The effect: the running worker is replaced with the new environment.
            eventually(
                "the worker sees MODE=b",
                Duration::from_secs(20),
                || async { (env_mode().await.as_deref() == Some("b")).then_some(()) },
            )
            .await;
        }
        // And back.
        let (status, body) = patch(&host, patch_for(&config, &undo)).await;
        assert_eq!(status, 200, "{field} back to {from}: {body}");
        assert_eq!(sorted(fields(&body, "changed")), expected, "{body}");
        eventually(
            &format!("config.changed published for {field}"),
            Duration::from_secs(10),
            || async { (changed_events().await > events).then_some(()) },
        )
        .await;
    }
    assert!(refused >= AT_START.len(), "{refused} refused");
    eventually(
        "the worker sees MODE=a again",
        Duration::from_secs(20),
        || async { (env_mode().await.as_deref() == Some("a")).then_some(()) },
    )
    .await;
}
