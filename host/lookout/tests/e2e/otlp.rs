//! OTLP export against a real receiver: `rotel` (an OpenTelemetry collector from PyPI, which
//! `cargo xtask setup` installs into `<target>/py`), printing what it receives. Events arrive
//! as log records, sanitized — a secret never reaches the receiver; a receiver outage loses
//! nothing unaccounted; a request's trace arrives whole, the caller's `traceparent` kept.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lookout_testkit::{Host, Metrics, artifacts_dir, eventually, free_port, target_dir};
use serde_json::{Value, json};

const SECRET: &str = "hunter2hunter2xyz";
const DB_PASSWORD: &str = "s3cr3tpw";
const DSN: &str = "postgres://app:s3cr3tpw@db/orders";

/// `rotel-agent` in the test tools' virtualenv (`<target>/py/lib/python3.X/site-packages`).
fn rotel_agent() -> PathBuf {
    let lib = target_dir().join("py/lib");
    std::fs::read_dir(&lib)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|python| python.path().join("site-packages/rotel/rotel-agent"))
        .find(|agent| agent.exists())
        .unwrap_or_else(|| {
            panic!(
                "rotel-agent is missing under {}: `cargo xtask setup` installs rotel (tests/python-requirements.txt)",
                lib.display()
            )
        })
}

/// One record rotel printed: a span or a log record, its `Key : value` lines and attributes.
#[derive(Clone, Debug, Default)]
struct Record {
    /// `Span` or `LogRecord`.
    what: String,
    lines: Vec<(String, String)>,
    attributes: Vec<(String, String)>,
}

impl Record {
    fn get(&self, key: &str) -> Option<&str> {
        self.lines
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// An attribute as rotel prints it: `Str(x)`, `Int(10)`, `Bool(true)`.
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Records out of rotel's detailed debug log.
fn parse(lines: &[String]) -> Vec<Record> {
    let mut records = Vec::new();
    let mut current: Option<Record> = None;
    for line in lines {
        let trimmed = line.trim();
        let starts = ["Span #", "LogRecord #"]
            .iter()
            .find(|p| trimmed.starts_with(**p));
        if let Some(prefix) = starts {
            records.extend(current.take());
            current = Some(Record {
                what: prefix.trim_end_matches(" #").into(),
                ..Record::default()
            });
            continue;
        }
        if trimmed.starts_with("Resource") || trimmed.starts_with("Scope") {
            records.extend(current.take());
            continue;
        }
        let Some(record) = current.as_mut() else {
            continue;
        };
        if let Some(attribute) = trimmed.strip_prefix("-> ") {
            if let Some((k, v)) = attribute.split_once(": ") {
                record.attributes.push((k.trim().into(), v.trim().into()));
            }
        } else if let Some((k, v)) = trimmed.split_once(':') {
            record.lines.push((k.trim().into(), v.trim().into()));
        }
    }
    records.extend(current);
    records
}

/// A `rotel-agent` on loopback ports printing every span and log record it receives; killed
/// when dropped. Its pid and log files go in a folder of its own, so tests run in parallel.
struct Rotel {
    child: Child,
    http_port: u16,
    grpc_port: u16,
    dir: PathBuf,
    /// Everything it printed, across restarts.
    out: Arc<Mutex<Vec<String>>>,
}

impl Rotel {
    async fn start(name: &str) -> Rotel {
        let dir = artifacts_dir().join(format!("rotel-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (http_port, grpc_port) = (free_port(), free_port());
        let out = Arc::new(Mutex::new(Vec::new()));
        let child = Rotel::spawn(&dir, http_port, grpc_port, &out);
        let rotel = Rotel {
            child,
            http_port,
            grpc_port,
            dir,
            out,
        };
        rotel.listening().await;
        rotel
    }

    fn spawn(dir: &std::path::Path, http: u16, grpc: u16, out: &Arc<Mutex<Vec<String>>>) -> Child {
        let mut child = Command::new(rotel_agent())
            .arg("start")
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http}")])
            .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc}")])
            .args(["--exporter", "blackhole"])
            .args(["--debug-log", "traces", "--debug-log", "logs"])
            .args(["--debug-log-verbosity", "detailed"])
            .arg("--pid-file")
            .arg(dir.join("rotel.pid"))
            .arg("--log-file")
            .arg(dir.join("rotel.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("rotel-agent runs");
        let pipe = child.stdout.take().unwrap();
        let lines = out.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        child
    }

    async fn listening(&self) {
        let port = self.http_port;
        lookout_testkit::listening("rotel", port, Duration::from_secs(20)).await;
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Gone, then back on the same ports.
    async fn restart(&mut self) {
        self.child = Rotel::spawn(&self.dir, self.http_port, self.grpc_port, &self.out);
        self.listening().await;
    }

    fn text(&self) -> String {
        self.out.lock().unwrap().join("\n")
    }

    fn records(&self, what: &str) -> Vec<Record> {
        parse(&self.out.lock().unwrap())
            .into_iter()
            .filter(|r| r.what == what)
            .collect()
    }

    fn logs_of_kind(&self, kind: &str) -> Vec<Record> {
        let want = format!("Str({kind})");
        self.records("LogRecord")
            .into_iter()
            .filter(|r| r.attr("event.kind") == Some(want.as_str()))
            .collect()
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A host exporting to `rotel`, with the demo pool; `extra` goes at the end of `[otlp]`.
fn host(name: &str, rotel: &Rotel, extra: &str) -> Host {
    crate::host_with_config(
        &format!("otlp-{name}-{}.toml", std::process::id()),
        &format!(
            "[otlp]\nenabled = true\nendpoint = \"{}\"\nflush_interval_ms = 100\n{extra}\n\n[[pools]]\nname = \"demo\"\napp = \"demo\"\nsize = 1\n",
            rotel.endpoint()
        ),
    )
}

fn count(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> u64 {
    m.sum(name, labels) as u64
}

/// Per signal: received = exported + dropped + queued, with `dropped` of them dropped.
fn books(m: &Metrics, signal: &str) -> (u64, u64, u64, u64) {
    let s = [("signal", signal)];
    (
        count(m, "lookout_otlp_received_total", &s),
        count(m, "lookout_otlp_exported_total", &s),
        count(m, "lookout_otlp_dropped_total", &s),
        count(m, "lookout_otlp_queued", &s),
    )
}

async fn all_exported(host: &Host, signal: &str) -> bool {
    let (received, exported, dropped, queued) = books(&host.metrics().await, signal);
    received > 0 && received == exported && dropped == 0 && queued == 0
}

fn login(i: usize, phase: &str) -> Value {
    json!({"kind": "app.login", "correlation_id": format!("otlp-{phase}-{i}"), "severity": "warn",
           "fields": {"message": format!("{phase} login {i}"), "user": "bob", "password": SECRET,
                      "note": format!("connecting to {DSN}"), "i": i}})
}

/// Events published over HTTP — the host's own lifecycle events too — reach rotel as log
/// records: body, kind, correlation id, severity and fields; a password field and a DSN with
/// a password inside arrive redacted, and neither secret appears anywhere in what rotel got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_as_log_records_and_secrets_never_do() {
    let rotel = Rotel::start("logs").await;
    let host = host("logs", &rotel, "");
    let events: Vec<Value> = (0..5).map(|i| login(i, "plain")).collect();
    assert_eq!(host.post_events(&Value::Array(events)).await["accepted"], 5);
    let records = eventually(
        "5 log records in rotel",
        Duration::from_secs(30),
        || async {
            let records = rotel.logs_of_kind("app.login");
            (records.len() >= 5).then_some(records)
        },
    )
    .await;
    let first = records
        .iter()
        .find(|r| r.attr("correlation_id") == Some("Str(otlp-plain-0)"))
        .expect("the first event's record");
    assert_eq!(first.get("Body"), Some("Str(plain login 0)"));
    assert_eq!(first.get("SeverityText"), Some("warn"));
    assert_eq!(first.attr("user"), Some("Str(bob)"));
    assert_eq!(first.attr("i"), Some("Int(0)"));
    let password = first.attr("password").unwrap();
    assert!(password.contains("REDACTED"), "{password}");
    let note = first.attr("note").unwrap();
    assert!(!note.contains(DB_PASSWORD), "{note}");
    // The pool's own events are log records too.
    eventually("pool.started in rotel", Duration::from_secs(30), || async {
        (!rotel.logs_of_kind("pool.started").is_empty()).then_some(())
    })
    .await;
    let resource = rotel.text();
    assert!(
        resource.contains("service.name: Str(lookout)"),
        "{resource}"
    );
    for secret in [SECRET, DB_PASSWORD, DSN] {
        assert!(!resource.contains(secret), "{secret} reached the receiver");
    }
    eventually(
        "every log record exported",
        Duration::from_secs(30),
        || async { all_exported(&host, "logs").await.then_some(()) },
    )
    .await;
}

/// rotel goes away while events keep coming and comes back on the same port: the exporter
/// retries (counted), every event arrives once it is back, and the books balance with nothing
/// dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_outage_loses_nothing_unaccounted() {
    let mut rotel = Rotel::start("outage").await;
    let host = host(
        "outage",
        &rotel,
        "max_retries = 100\nbackoff_max_ms = 500\n",
    );
    let before: Vec<Value> = (0..20).map(|i| login(i, "before")).collect();
    host.post_events(&Value::Array(before)).await;
    eventually(
        "the first events in rotel",
        Duration::from_secs(30),
        || async { (rotel.logs_of_kind("app.login").len() >= 20).then_some(()) },
    )
    .await;
    rotel.kill();
    let during: Vec<Value> = (0..50).map(|i| login(i, "during")).collect();
    host.post_events(&Value::Array(during)).await;
    eventually(
        "retries while rotel is away",
        Duration::from_secs(30),
        || async {
            let m = host.metrics().await;
            (count(&m, "lookout_otlp_retries_total", &[("signal", "logs")]) >= 2).then_some(())
        },
    )
    .await;
    let (_, _, _, queued) = books(&host.metrics().await, "logs");
    assert!(queued >= 50, "held while rotel is away: {queued}");
    rotel.restart().await;
    eventually(
        "every event of the outage in rotel",
        Duration::from_secs(60),
        || async {
            let seen: std::collections::BTreeSet<String> = rotel
                .logs_of_kind("app.login")
                .iter()
                .filter_map(|r| r.attr("correlation_id").map(str::to_string))
                .filter(|id| id.contains("during"))
                .collect();
            (seen.len() == 50).then_some(())
        },
    )
    .await;
    eventually(
        "the books balance, nothing dropped",
        Duration::from_secs(30),
        || async { all_exported(&host, "logs").await.then_some(()) },
    )
    .await;
    let m = host.metrics().await;
    assert_eq!(
        count(&m, "lookout_otlp_dropped_total", &[]),
        0,
        "nothing dropped"
    );
    assert!(!rotel.text().contains(SECRET));
    // /health/detailed shows the exporter and its (now empty) queues.
    let detailed: serde_json::Value = host.get_json("/health/detailed").await.unwrap();
    let otlp = &detailed["otlp"];
    assert!(
        otlp["endpoint"]
            .as_str()
            .is_some_and(|e| e.starts_with("http://127.0.0.1:")),
        "{detailed}"
    );
    assert_eq!(otlp["logs"]["queued"], 0, "{otlp}");
    assert!(otlp["logs"]["capacity"].as_u64() > Some(0), "{otlp}");
}

/// A request with the caller's `traceparent` on the demo pool's `traced` command: its trace
/// arrives whole in rotel — `request traced` (SERVER, child of the caller's span), its
/// `queue_wait` and `execute`, the worker's `load_model` under `execute` and `query` under
/// `load_model`, with their attributes — the caller's trace id kept, the answer's
/// `traceparent` naming the request span, and the secret in a span attribute never arriving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requests_trace_arrives_whole_with_the_callers_traceparent() {
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CALLER: &str = "00f067aa0ba902b7";
    let rotel = Rotel::start("traces").await;
    let host = host("traces", &rotel, "");
    let response = eventually("the demo pool answers", Duration::from_secs(30), || async {
        let response = host
            .http
            .post(host.url("/api/v1/pools/demo/execute"))
            .header("traceparent", format!("00-{TRACE}-{CALLER}-01"))
            .json(&json!({"command": "traced", "args": {"rows": 10, "secret": SECRET}}))
            .send()
            .await
            .ok()?;
        (response.status() == 200).then_some(response)
    })
    .await;
    let traceparent = response.headers()["traceparent"]
        .to_str()
        .unwrap()
        .to_string();
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!((parts[0], parts[1]), ("00", TRACE), "{traceparent}");
    let request_span = parts[2].to_string();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["result"]["rows"], 10, "{body}");

    let spans = eventually(
        "the request's 5 spans in rotel",
        Duration::from_secs(30),
        || async {
            let spans: Vec<Record> = rotel
                .records("Span")
                .into_iter()
                .filter(|s| s.get("Trace ID") == Some(TRACE))
                .collect();
            (spans.len() >= 5).then_some(spans)
        },
    )
    .await;
    let named = |name: &str| {
        spans
            .iter()
            .find(|s| s.get("Name") == Some(name))
            .unwrap_or_else(|| panic!("no span `{name}` in {spans:#?}"))
    };
    let root = named("request traced");
    let (queue_wait, execute) = (named("queue_wait"), named("execute"));
    let (load_model, query) = (named("load_model"), named("query"));
    assert_eq!(root.get("ID"), Some(request_span.as_str()));
    assert_eq!(root.get("Parent ID"), Some(CALLER), "the caller's span");
    assert_eq!(root.get("Kind"), Some("SPAN_KIND_SERVER"));
    assert_eq!(queue_wait.get("Parent ID"), root.get("ID"));
    assert_eq!(execute.get("Parent ID"), root.get("ID"));
    assert_eq!(load_model.get("Parent ID"), execute.get("ID"));
    assert_eq!(query.get("Parent ID"), load_model.get("ID"));
    assert_eq!(load_model.get("Kind"), Some("SPAN_KIND_INTERNAL"));
    assert_eq!(load_model.attr("rows"), Some("Int(10)"));
    assert_eq!(load_model.attr("loaded"), Some("Bool(true)"));
    assert_eq!(query.attr("table"), Some("Str(invoices)"));
    let password = query.attr("db_password").expect("the attribute, redacted");
    assert!(password.contains("REDACTED"), "{password}");
    assert_eq!(root.attr("pool"), Some("Str(demo)"));
    assert_eq!(root.attr("command"), Some("Str(traced)"));
    // The worker's events belong to the trace too.
    let started = eventually(
        "demo.traced.started in rotel",
        Duration::from_secs(30),
        || async { rotel.logs_of_kind("demo.traced.started").pop() },
    )
    .await;
    assert_eq!(started.get("Trace ID"), Some(TRACE));
    assert!(
        !rotel.text().contains(SECRET),
        "the secret reached the receiver"
    );
    eventually("every span exported", Duration::from_secs(30), || async {
        all_exported(&host, "traces").await.then_some(())
    })
    .await;
}

#[test]
fn rotels_detailed_output_is_parsed_into_records() {
    let out: Vec<String> = [
        "ResourceSpans #0",
        "Resource attributes:",
        "     -> service.name: Str(lookout)",
        "ScopeSpans #0",
        "Span #0",
        "    Trace ID       : 4bf92f3577b34da6a3ce929d0e0e4736",
        "    Parent ID      : ",
        "    ID             : 00f067aa0ba902b7",
        "    Name           : request echo",
        "Attributes:",
        "     -> pool: Str(demo)",
        "ResourceLog #0",
        "LogRecord #0",
        "Body: Str(user logged in)",
        "Attributes:",
        "     -> event.kind: Str(app.login)",
    ]
    .map(String::from)
    .into();
    let records = parse(&out);
    assert_eq!(records.len(), 2, "{records:#?}");
    assert_eq!(records[0].get("ID"), Some("00f067aa0ba902b7"));
    assert_eq!(records[0].get("Parent ID"), Some(""));
    assert_eq!(records[0].attr("pool"), Some("Str(demo)"));
    assert!(records[0].attr("service.name").is_none());
    assert_eq!(records[1].get("Body"), Some("Str(user logged in)"));
    assert_eq!(records[1].attr("event.kind"), Some("Str(app.login)"));
}
