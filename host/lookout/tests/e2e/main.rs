//! End-to-end: the real `lookout` binary on a free port, real HTTP, the real embedded WASM
//! sanitizer, a real browser. One test binary; each module guards one surface.

mod budget;
mod cli;
mod config;
mod dashboard;
mod health;
mod hostile_plugins;
mod ingest;
mod integrations;
mod load;
mod logs;
mod metrics;
mod nats;
mod otlp;
mod plugins;
mod policy;
mod pools;
mod security;
mod soak;
mod traces;

use lookout_testkit::Host;

/// The freshly built binary under test.
pub const LOOKOUT: &str = env!("CARGO_BIN_EXE_lookout");

/// A host with the defaults: no config file, embedded plugins and dashboard, the demo pool.
pub fn default_host() -> Host {
    Host::start(LOOKOUT, &[]).expect("lookout starts with no config")
}

/// A host whose events are only those a test publishes: an empty config file (defaults, and
/// no pools, whose lifecycle events would mix in).
pub fn quiet_host() -> Host {
    let path = lookout_testkit::artifacts_dir().join("empty.toml");
    std::fs::write(&path, "").unwrap();
    Host::start(LOOKOUT, &["--config", path.to_str().unwrap()]).expect("lookout starts")
}

/// A host started with `text` as its config file (written as `name` in the artifacts dir).
pub fn host_with_config(name: &str, text: &str) -> Host {
    let path = lookout_testkit::artifacts_dir().join(name);
    std::fs::write(&path, text).unwrap();
    Host::start(LOOKOUT, &["--config", path.to_str().unwrap()]).expect("lookout starts")
}

/// Waits (10 s) for at least `n` of the host's log lines that contain `needle`; returns them
/// parsed (every line is JSON).
pub async fn log_lines_with(host: &Host, needle: &str, n: usize) -> Vec<serde_json::Value> {
    let lines = lookout_testkit::eventually(
        &format!("{n} log lines with {needle}"),
        std::time::Duration::from_secs(10),
        || async {
            let lines: Vec<String> = host
                .logs()
                .into_iter()
                .filter(|l| l.contains(needle))
                .collect();
            (lines.len() >= n).then_some(lines)
        },
    )
    .await;
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// One of each kind of secret `redact` recognises, as it would be written.
pub const SECRETS: &[&str] = &[
    "hunter2",
    "AKIAIOSFODNN7EXAMPLE",
    "4111 1111 1111 1111",
    "s3cr3tpw",
    "abc123tokenvalue",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlX2hlcmU",
    "MIIEowIBAAKCAQEAx",
    "ghp_0123456789abcdefghijABCDEFGHIJ012345",
    "glpat-abcdefghij0123456789",
    "xoxb-1234567890-abcdefghij",
    "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    "sk-abcdefghijklmnopqrstuvwxyz012345",
    "AIzaSyA1234567890abcdefghijklmnopqrstu",
    "npm_abcdefghijklmnopqrstuvwxyz0123456789",
    "hf_abcdefghijklmnopqrstuvwxyz0123456789",
    "dXNlcjpwYXNzd29yZA",
    "topsecretflag",
    "4111111111111111",
];

/// Feeds `text` to `promtool check metrics` (`promtool` is the program) and asserts it
/// accepts it without a word.
pub fn assert_promtool_silent(promtool: &str, text: &str) {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (`cargo xtask setup` installs Debian's prometheus package)");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}"
    );
}

/// Debian's Prometheus on a free loopback port, reading `dir/prometheus.yml` and keeping its
/// data in `dir/data`; killed when dropped.
pub struct Prometheus {
    child: std::process::Child,
    client: reqwest::Client,
    port: u16,
}

impl Prometheus {
    pub fn start(dir: &std::path::Path) -> Prometheus {
        let port = lookout_testkit::free_port();
        let child = std::process::Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus runs (Debian's prometheus package; `cargo xtask setup`)");
        Prometheus {
            child,
            client: reqwest::Client::new(),
            port,
        }
    }

    /// `GET path` of its HTTP API as JSON; `None` until it answers.
    pub async fn api(&self, path: &str, query: &[(&str, &str)]) -> Option<serde_json::Value> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let response = self.client.get(url).query(query).send().await.ok()?;
        response.json().await.ok()
    }

    /// The value of the first series `promql` evaluates to now; `None` while it has none.
    pub async fn value(&self, promql: &str) -> Option<f64> {
        let body = self.api("/api/v1/query", &[("query", promql)]).await?;
        body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
