//! The integration kit (examples/prometheus, examples/grafana, examples/kubernetes) checked
//! with the real tools against a real host: promtool, Debian's Prometheus evaluating the
//! example rules, the Grafana dashboard's queries against a live scrape, and the Kubernetes
//! manifests through kubernetes-validate, a consistency check and `lookout config check`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use lookout_testkit::{Host, eventually, python_tool, repo_root};
use serde_json::{Value, json};

use crate::{LOOKOUT, Prometheus, default_host};

fn examples(dir: &str) -> PathBuf {
    repo_root().join("examples").join(dir)
}

/// Runs `cmd`; its output when it succeeds, else fails naming it.
fn succeeds(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{said}");
    said
}

async fn ready_demo(host: &Host) {
    let echo = json!({"command": "echo", "args": {"x": 1}});
    eventually("the demo pool answers", Duration::from_secs(30), || async {
        (host.execute("demo", &echo).await == 200).then_some(())
    })
    .await;
}

/// The example scrape config and rules pass promtool (config, rules, and the rules' unit
/// tests); Debian's Prometheus, started with them against a live host, evaluates a recording
/// rule to the pool's real size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prometheus_examples_check_and_their_rules_evaluate_against_a_live_host() {
    let dir = examples("prometheus");
    succeeds(Command::new("promtool").current_dir(&dir).args([
        "check",
        "config",
        "prometheus.yml",
    ]));
    let said = succeeds(Command::new("promtool").current_dir(&dir).args([
        "check",
        "rules",
        "lookout-rules.yml",
    ]));
    assert!(said.contains("SUCCESS"), "{said}");
    succeeds(Command::new("promtool").current_dir(&dir).args([
        "test",
        "rules",
        "lookout-rules.test.yml",
    ]));

    let host = default_host();
    ready_demo(&host).await;
    // The example config with its target pointed at this host, scraping and evaluating every
    // second, and the example rules file as it is.
    let run = lookout_testkit::artifacts_dir().join(format!("prom-example-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&run);
    std::fs::create_dir_all(&run).unwrap();
    let target = host.base.trim_start_matches("http://");
    let config = std::fs::read_to_string(dir.join("prometheus.yml"))
        .unwrap()
        .replace("127.0.0.1:8787", target)
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace("evaluation_interval: 15s", "evaluation_interval: 1s")
        .replace(
            "  - lookout-rules.yml",
            &format!("  - {}", dir.join("lookout-rules.yml").display()),
        );
    assert!(
        config.contains(target),
        "the example's target was not replaced"
    );
    std::fs::write(run.join("prometheus.yml"), config).unwrap();
    let prometheus = Prometheus::start(&run);
    let live = eventually(
        "Prometheus to evaluate lookout:workers_live",
        Duration::from_secs(60),
        || async {
            prometheus
                .value(r#"lookout:workers_live{pool="demo"}"#)
                .await
        },
    )
    .await;
    assert_eq!(live, 2.0, "the demo pool's two workers");
    // And the alert rules were loaded (none firing on a healthy host).
    let rules = prometheus
        .api("/api/v1/rules", &[("type", "alert")])
        .await
        .expect("the rules API answers");
    let alerts: Vec<&str> = rules["data"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(alerts.contains(&"LookoutPluginQuarantined"), "{alerts:?}");
}

/// Metric names a PromQL expression mentions (lookout's and the process collector's).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &expr[i..];
        let starts = (rest.starts_with("lookout_") || rest.starts_with("process_"))
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'));
        if starts {
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            names.push(rest[..len].to_string());
            i += len;
        } else {
            i += 1;
        }
    }
    names
}

/// The Grafana dashboard has the dashboard schema's shape, and every metric its queries name
/// is in a live scrape of lookout (after traffic, so histograms have samples).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grafana_dashboard_is_well_formed_and_queries_only_exported_metrics() {
    let path = examples("grafana").join("lookout-dashboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 30));
    let variables: BTreeSet<&str> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .map(|v| v["name"].as_str().expect("a variable has a name"))
        .collect();
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut queried = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().expect("a panel has a title");
        assert!(
            ids.insert(panel["id"].as_u64().expect("id")),
            "{title}: id twice"
        );
        let kind = panel["type"].as_str().expect("type");
        assert!(
            ["row", "timeseries", "stat", "table", "gauge", "bargauge"].contains(&kind),
            "{title}: {kind}"
        );
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(
            grid["h"].as_u64().unwrap() > 0 && w > 0 && x + w <= 24,
            "{title}: {grid}"
        );
        if kind == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            assert!(target["refId"].is_string(), "{title}: refId");
            for variable in ["instance", "pool"] {
                if expr.contains(&format!("${variable}")) {
                    assert!(
                        variables.contains(variable),
                        "{title}: ${variable} undefined"
                    );
                }
            }
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{title}: {expr} names no metric");
            queried.extend(names);
        }
    }
    assert!(panels.len() >= 10, "a dashboard of {} panels", panels.len());

    let host = default_host();
    ready_demo(&host).await;
    let scraped: BTreeSet<String> = host
        .metrics()
        .await
        .samples
        .into_iter()
        .map(|s| s.name)
        .collect();
    let missing: Vec<&String> = queried.iter().filter(|m| !scraped.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics lookout does not export: {missing:?}"
    );
    for covered in [
        "lookout_requests_total",
        "lookout_request_duration_seconds_bucket",
        "lookout_workers",
        "lookout_queue_length",
        "lookout_events_total",
        "lookout_plugin_calls_total",
    ] {
        assert!(queried.contains(covered), "no panel shows {covered}");
    }
}

fn kubernetes_validate(files: &[PathBuf]) -> std::process::Output {
    Command::new(python_tool("kubernetes-validate"))
        .arg("--strict")
        .args(files)
        .output()
        .expect("kubernetes-validate runs")
}

/// The Kubernetes manifests validate against the current schema (strict), fit each other and
/// lookout (tests/kubernetes/check_manifests.py), their `lookout.toml` passes `lookout config
/// check`, and a host started with it answers the probes' paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_manifests_validate_and_fit_lookout() {
    let dir = examples("kubernetes");
    // The core kinds against the schema; the ServiceMonitor is a CRD it has no schema for
    // (the consistency check below covers it).
    let core: Vec<PathBuf> = ["configmap", "secret", "deployment", "service"]
        .iter()
        .map(|n| dir.join(format!("{n}.yaml")))
        .collect();
    let out = kubernetes_validate(&core);
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert_eq!(said.matches(" passed for resource ").count(), 4, "{said}");

    // The validator is not vacuous: a wrong type is refused.
    let broken =
        lookout_testkit::artifacts_dir().join(format!("k8s-broken-{}.yaml", std::process::id()));
    std::fs::write(
        &broken,
        std::fs::read_to_string(dir.join("deployment.yaml"))
            .unwrap()
            .replace("replicas: 1", "replicas: one"),
    )
    .unwrap();
    assert!(!kubernetes_validate(&[broken]).status.success());

    let toml = lookout_testkit::artifacts_dir().join(format!("k8s-{}.toml", std::process::id()));
    succeeds(
        Command::new(python_tool("python"))
            .arg(repo_root().join("tests/kubernetes/check_manifests.py"))
            .arg(&dir)
            .arg(&toml),
    );
    succeeds(Command::new(LOOKOUT).args(["config", "check"]).arg(&toml));

    // The Deployment's configuration on a real host: the probe paths answer.
    let host = Host::start(LOOKOUT, &["--config", toml.to_str().unwrap()]).expect("lookout starts");
    for path in ["/livez", "/readyz"] {
        eventually(
            &format!("{path} answers 200"),
            Duration::from_secs(30),
            || async {
                let status = host.http.get(host.url(path)).send().await.ok()?.status();
                (status == 200).then_some(())
            },
        )
        .await;
    }
}
