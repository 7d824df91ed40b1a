//! The end-to-end harness every test of a real `lookout` process uses: start the binary on a
//! free port, wait on conditions with deadlines (never bare sleeps), read the live stream and
//! `/metrics`, and drive a real browser.
//!
//! Patience: every deadline is multiplied by `LOOKOUT_TEST_PATIENCE` (default 1) for slow
//! machines.
//!
//! For in-process tests of the bus it also has [`Collect`] (a consumer that keeps what it is
//! given) and [`counter`] (a counter read straight from a registry).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;

/// `d` scaled by `LOOKOUT_TEST_PATIENCE`.
pub fn patience(d: Duration) -> Duration {
    let factor = std::env::var("LOOKOUT_TEST_PATIENCE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(1.0);
    d.mul_f64(factor.max(0.1))
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port` (a server a test
/// started), or fails after `timeout`.
pub async fn listening(what: &str, port: u16, timeout: Duration) {
    eventually(&format!("{what} listening"), timeout, || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(drop)
    })
    .await;
}

/// Polls `check` until it returns `Some`, or fails naming `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + patience(timeout);
    // The condition is checked every 25 ms until it holds or the deadline passes.
    let mut every = tokio::time::interval(Duration::from_millis(25));
    loop {
        every.tick().await;
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
    }
}

/// The repository root (for fixtures and the browser scripts).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Where tests leave artifacts (screenshots): `<repo>/target/e2e`.
pub fn artifacts_dir() -> PathBuf {
    let dir = target_dir().join("e2e");
    std::fs::create_dir_all(&dir).expect("create target/e2e");
    dir
}

/// A running `lookout serve`; killed when dropped.
pub struct Host {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    stderr: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<Vec<String>>>,
    pub http: reqwest::Client,
}

/// The base URL in lookout's line on stdout that says where it listens, in either log format:
/// `lookout: listening on http://ADDR (…)` (pretty) or a JSON record with `message =
/// "listening"` and `fields.url` (json).
pub fn listening_url(line: &str) -> Option<String> {
    if let Some(rest) = line.strip_prefix("lookout: listening on ") {
        return rest.split_whitespace().next().map(str::to_string);
    }
    let record: serde_json::Value = serde_json::from_str(line).ok()?;
    (record["message"] == "listening")
        .then(|| record["fields"]["url"].as_str().map(str::to_string))
        .flatten()
}

impl Host {
    /// Starts `bin serve --listen 127.0.0.1:0 <extra args>` and waits until it says where it
    /// listens.
    pub fn start(bin: &str, extra: &[&str]) -> anyhow::Result<Host> {
        Host::start_at(bin, "127.0.0.1:0", extra)
    }

    /// Like [`Host::start`], on a given address (to restart a host where it was).
    pub fn start_at(bin: &str, listen: &str, extra: &[&str]) -> anyhow::Result<Host> {
        let mut child = Command::new(bin)
            .args(["serve", "--listen", listen])
            .args(extra)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {bin}"))?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        {
            let lines = stderr.clone();
            let pipe = child.stderr.take().expect("piped");
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        {
            let lines = stdout.clone();
            let pipe = child.stdout.take().expect("piped");
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let base = listening_url(&line);
                    // Kept before the start is reported, so a test sees the line.
                    lines.lock().unwrap().push(line);
                    if let Some(base) = base {
                        let _ = tx.send(base);
                    }
                }
            });
        }
        let base = match rx.recv_timeout(patience(Duration::from_secs(30))) {
            Ok(base) => base,
            Err(_) => {
                let _ = child.kill();
                let logs = stderr.lock().unwrap().join("\n");
                bail!("lookout did not say where it listens within 30 s; its stderr:\n{logs}");
            }
        };
        let http = reqwest::Client::builder()
            .timeout(patience(Duration::from_secs(30)))
            .build()?;
        Ok(Host {
            child,
            base,
            stderr,
            stdout,
            http,
        })
    }

    /// `GET path` as JSON; `None` on any failure (for polling with [`eventually`]).
    pub async fn get_json(&self, path: &str) -> Option<serde_json::Value> {
        let response = self.http.get(self.url(path)).send().await.ok()?;
        response.json().await.ok()
    }

    /// `GET path` as text; `None` on any failure (for polling with [`eventually`]).
    pub async fn get_text(&self, path: &str) -> Option<String> {
        let response = self.http.get(self.url(path)).send().await.ok()?;
        response.text().await.ok()
    }

    /// `POST /api/v1/events` with a JSON array of events; asserts 202 and returns the answer
    /// (`{"accepted", "dropped"}`).
    pub async fn post_events(&self, events: &serde_json::Value) -> serde_json::Value {
        let response = self
            .http
            .post(self.url("/api/v1/events"))
            .json(events)
            .send()
            .await
            .expect("POST /api/v1/events");
        assert_eq!(response.status(), 202, "POST /api/v1/events");
        response.json().await.expect("the ingest answer")
    }

    /// `POST /api/v1/pools/{pool}/execute` with `body`; the status code.
    pub async fn execute(&self, pool: &str, body: &serde_json::Value) -> u16 {
        self.http
            .post(self.url(&format!("/api/v1/pools/{pool}/execute")))
            .json(body)
            .send()
            .await
            .expect("POST …/execute")
            .status()
            .as_u16()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The host's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The host's resident memory (VmRSS), bytes; `None` once it is gone.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// Every line the host wrote to stderr (its JSON logs) so far.
    pub fn logs(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Every line the host wrote to stdout so far.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// `GET /metrics`, parsed.
    pub async fn metrics(&self) -> Metrics {
        let text = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body");
        Metrics::parse(&text)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        let pid = self.child.id().to_string();
        let child = &mut self.child;
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::channel();
            scope.spawn(move || {
                let _ = tx.send(child.wait());
            });
            match rx.recv_timeout(patience(timeout)) {
                Ok(status) => Ok(status?),
                Err(_) => {
                    // Unblocks the waiting thread so the scope can end.
                    let _ = Command::new("kill").args(["-KILL", &pid]).status();
                    bail!("lookout did not exit within {timeout:?} of SIGTERM")
                }
            }
        })
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One sample of the Prometheus text format.
#[derive(Clone, Debug)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// A parsed `/metrics` page.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub samples: Vec<Sample>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let (series, value) = line.rsplit_once(' ').expect("sample has a value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let body = rest.trim_end_matches('}');
                    let labels = body
                        .split("\",")
                        .filter(|p| !p.is_empty())
                        .map(|p| {
                            let (k, v) = p.split_once('=').expect("label has =");
                            (k.to_string(), v.trim_matches('"').to_string())
                        })
                        .collect();
                    (name.to_string(), labels)
                }
                None => (series.to_string(), Vec::new()),
            };
            samples.push(Sample {
                name,
                labels,
                value: value.parse().unwrap_or(f64::NAN),
            });
        }
        Metrics { samples }
    }

    /// The sum of `name` over every series that has all of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|s| s.value)
            .sum()
    }
}

/// A client of `GET /api/v1/events/stream`: yields each message's JSON.
pub struct LiveStream {
    rx: tokio::sync::mpsc::Receiver<serde_json::Value>,
}

impl LiveStream {
    /// Connects and returns once the response headers arrived (the host has registered it).
    pub async fn open(host: &Host, query: &str) -> anyhow::Result<LiveStream> {
        let client = reqwest::Client::new();
        let response = client
            .get(host.url(&format!("/api/v1/events/stream{query}")))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!(
                "stream answered {}: {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            let mut body = response.bytes_stream();
            let mut buffer = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let message: String = buffer.drain(..end + 2).collect();
                    for line in message.lines() {
                        if let Some(data) = line
                            .strip_prefix("data: ")
                            .or_else(|| line.strip_prefix("data:"))
                            && let Ok(value) = serde_json::from_str(data)
                            && tx.send(value).await.is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
        Ok(LiveStream { rx })
    }

    /// The next event; `None` once the stream ended.
    pub async fn next(&mut self) -> Option<serde_json::Value> {
        self.rx.recv().await
    }

    /// The next `n` events, or fails after `timeout`.
    pub async fn take(&mut self, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + patience(timeout);
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(v)) => out.push(v),
                Ok(None) => panic!("the live stream ended after {} of {n} events", out.len()),
                Err(_) => panic!(
                    "timed out after {timeout:?} with {} of {n} events from the live stream: {out:?}",
                    out.len()
                ),
            }
        }
        out
    }
}

/// Runs the browser check of `tests/browser/dashboard.mjs` against `host` (which must run a
/// `demo` pool); `redact_wasm` is swapped in by the check. Needs node, `npm install` in tests/browser and Debian's chromium — all
/// of which `cargo xtask test` installs.
pub fn check_dashboard_in_browser(
    host: &Host,
    redact_wasm: &Path,
) -> anyhow::Result<BrowserReport> {
    let dir = repo_root().join("tests/browser");
    if !dir.join("node_modules/playwright-core").exists() {
        bail!(
            "tests/browser/node_modules is missing: run `cargo xtask test` (or `npm ci` in tests/browser)"
        );
    }
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        bail!(
            "{chromium} is missing: run `cargo xtask test` (it installs Debian's chromium) or set CHROMIUM"
        );
    }
    let shots = artifacts_dir();
    let screenshot = shots.join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let output = Command::new("node")
        .current_dir(&dir)
        .arg("dashboard.mjs")
        .arg(&host.base)
        .arg(&shots)
        .arg(redact_wasm)
        .output()
        .context("cannot run node")?;
    if !output.status.success() {
        bail!(
            "the dashboard check failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let measured: serde_json::Value = String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_default();
    Ok(BrowserReport {
        screenshot,
        first_render_ms: measured["first_render_ms"].as_f64(),
    })
}

/// What the browser check saw.
#[derive(Debug)]
pub struct BrowserReport {
    /// The main view, with an error's traceback open.
    pub screenshot: PathBuf,
    /// From navigation to the first pool card on screen.
    pub first_render_ms: Option<f64>,
}

/// A bus consumer that keeps every event it is given.
#[derive(Clone, Default)]
pub struct Collect(pub Arc<Mutex<Vec<lookout_core::Event>>>);

impl Collect {
    /// A copy of everything received so far.
    pub fn events(&self) -> Vec<lookout_core::Event> {
        self.0.lock().unwrap().clone()
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl lookout_core::Consumer for Collect {
    async fn handle(
        &mut self,
        batch: lookout_core::Batch,
    ) -> Result<(), lookout_core::ConsumerError> {
        self.0.lock().unwrap().extend(batch.iter().cloned());
        Ok(())
    }
}

/// A counter family read from `registry`, summed over the series that have all of `labels`.
pub fn counter(registry: &prometheus::Registry, name: &str, labels: &[(&str, &str)]) -> u64 {
    family_sum(&registry.gather(), name, labels) as u64
}

/// The counter values of family `name` among `families`, summed over the series that have
/// all of `labels`.
pub fn family_sum(
    families: &[prometheus::proto::MetricFamily],
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    families
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| {
            labels.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            })
        })
        // A counter's value or a gauge's: a metric has one of them, the other reads 0.
        .map(|m| m.get_counter().get_value() + m.get_gauge().get_value())
        .sum()
}

/// One row of the side-by-side table `cargo xtask bench` prints after running every bench:
/// which measurement (`P1`…`P5` of issue 7), what was compared, the result, the ratio or
/// verdict. Benches print their own detailed tables too; these lines are the summary.
pub fn bench_summary(id: &str, what: &str, result: &str, ratio: &str) {
    println!("summary| {id} | {what} | {result} | {ratio} |");
}

/// A TCP port free on loopback right now (for a server a test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Cargo's target folder (`CARGO_TARGET_DIR`, else `target/` in the repository).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo_root().join("target"), PathBuf::from)
}

/// A program from the Python tools `cargo xtask setup` installs (a virtualenv at
/// `<target>/py`, from `tests/python-requirements.txt`): `kubernetes-validate`,
/// `componentize-py`, `python`.
pub fn python_tool(name: &str) -> PathBuf {
    let path = target_dir().join("py/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo xtask setup` installs the Python tools (tests/python-requirements.txt)",
        path.display()
    );
    path
}

/// The Python sanitizer `plugins/python/keyword_redact`, built into a component with
/// componentize-py (again whenever its source is newer than the build), and its manifest.
pub fn python_plugin() -> (Vec<u8>, String) {
    let source = repo_root().join("plugins/python/keyword_redact");
    let manifest = std::fs::read_to_string(source.join("keyword-redact.toml"))
        .expect("plugins/python/keyword_redact/keyword-redact.toml");
    let out = target_dir().join("python-plugins/keyword_redact.wasm");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let stale = match modified(&out) {
        None => true,
        Some(built) => modified(&source.join("app.py")).is_none_or(|s| s > built),
    };
    if stale {
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        // Built beside and renamed into place: several test binaries may build at once.
        let partial = out.with_extension(format!("{}.partial", std::process::id()));
        let status = Command::new(python_tool("componentize-py"))
            .current_dir(repo_root())
            .args([
                "-d",
                "wit",
                "-w",
                "sanitizer",
                "componentize",
                "--stub-wasi",
                "-p",
            ])
            .arg(&source)
            .arg("app")
            .arg("-o")
            .arg(&partial)
            .stdout(Stdio::null())
            .status()
            .expect("componentize-py runs");
        assert!(
            status.success(),
            "componentize-py failed on {}",
            source.display()
        );
        std::fs::rename(&partial, &out).unwrap();
    }
    (std::fs::read(&out).unwrap(), manifest)
}
