//! The OTLP exporter against a collector of our own (axum on loopback, decoding the protobuf
//! requests): what arrives is what was published, with its ids; an outage, a refusal, a busy
//! collector and a full queue all end in counted outcomes, and the books balance —
//! `received = exported + Σ dropped + queued` per signal.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use lookout_core::{Bus, BusConfig, Event, PassThrough};
use lookout_otlp::{Otlp, OtlpConfig};
use lookout_testkit::{eventually, family_sum, free_port};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::Span;
use prometheus::Registry;
use prost::Message;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// An answer the collector gives instead of 200: its status, and a `Retry-After` in seconds.
type Answer = (u16, Option<u64>);

/// What the collector has been sent, and how it answers.
#[derive(Clone, Default)]
struct Received {
    spans: Arc<Mutex<Vec<Span>>>,
    logs: Arc<Mutex<Vec<LogRecord>>>,
    resources: Arc<Mutex<Vec<Vec<KeyValue>>>>,
    /// Statuses (with a `Retry-After` in seconds, if any) to answer with, in turn; then 200.
    answers: Arc<Mutex<VecDeque<Answer>>>,
    /// Every request's signal path and its answer.
    requests: Arc<Mutex<Vec<(String, u16)>>>,
    /// Headers of the last request.
    headers: Arc<Mutex<Option<HeaderMap>>>,
}

impl Received {
    fn answer(&self, path: &str, headers: HeaderMap) -> Option<Response> {
        *self.headers.lock().unwrap() = Some(headers);
        let next = self.answers.lock().unwrap().pop_front();
        let status = next.map_or(200, |(s, _)| s);
        self.requests.lock().unwrap().push((path.into(), status));
        let (status, retry_after) = next?;
        let mut response = (
            StatusCode::from_u16(status).unwrap(),
            "the test collector says no",
        )
            .into_response();
        if let Some(s) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, s.to_string().parse().unwrap());
        }
        Some(response)
    }

    fn span_ids(&self) -> BTreeSet<Vec<u8>> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.span_id.clone())
            .collect()
    }

    fn log_bodies(&self) -> BTreeSet<String> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter_map(|r| match r.body.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }
}

async fn traces(State(got): State<Received>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refusal) = got.answer("/v1/traces", headers) {
        return refusal;
    }
    let request = ExportTraceServiceRequest::decode(body).expect("a protobuf trace request");
    for rs in request.resource_spans {
        got.resources
            .lock()
            .unwrap()
            .push(rs.resource.unwrap_or_default().attributes);
        for ss in rs.scope_spans {
            got.spans.lock().unwrap().extend(ss.spans);
        }
    }
    protobuf(ExportTraceServiceResponse::default().encode_to_vec())
}

async fn logs(State(got): State<Received>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refusal) = got.answer("/v1/logs", headers) {
        return refusal;
    }
    let request = ExportLogsServiceRequest::decode(body).expect("a protobuf logs request");
    for rl in request.resource_logs {
        for sl in rl.scope_logs {
            got.logs.lock().unwrap().extend(sl.log_records);
        }
    }
    protobuf(ExportLogsServiceResponse::default().encode_to_vec())
}

fn protobuf(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/x-protobuf")], body).into_response()
}

/// The test collector on a loopback port; it can go away (connections closed, port
/// refusing) and come back on the same port.
struct Collector {
    port: u16,
    got: Received,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Collector {
    async fn start() -> Collector {
        let mut collector = Collector {
            port: free_port(),
            got: Received::default(),
            running: None,
        };
        collector.up().await;
        collector
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn up(&mut self) {
        let app = Router::new()
            .route("/v1/traces", post(traces))
            .route("/v1/logs", post(logs))
            .with_state(self.got.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("the collector's port");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        self.running = Some((stop, task));
    }

    /// Gone: open connections closed, the port refusing.
    async fn down(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(());
            let _ = task.await;
        }
    }
}

struct Host {
    bus: Bus,
    registry: Registry,
    otlp: Otlp,
}

/// A bus (passing events through unchanged) with the exporter on `endpoint`; `tune` sets the
/// rest of its configuration.
fn host(endpoint: &str, tune: impl FnOnce(&mut OtlpConfig)) -> Host {
    let registry = Registry::new();
    let bus = Bus::start(BusConfig::default(), &registry, Box::new(PassThrough)).unwrap();
    let mut config = OtlpConfig {
        enabled: true,
        endpoint: endpoint.into(),
        flush_interval_ms: 20,
        backoff_initial_ms: 10,
        backoff_max_ms: 100,
        ..OtlpConfig::default()
    };
    tune(&mut config);
    let otlp = Otlp::start(&config, &bus, &registry)
        .expect("the exporter starts")
        .expect("it is on");
    Host {
        bus,
        registry,
        otlp,
    }
}

impl Host {
    fn count(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        family_sum(&self.registry.gather(), name, labels) as u64
    }

    fn dropped(&self, signal: &str, reason: &str) -> u64 {
        self.count(
            "lookout_otlp_dropped_total",
            &[("signal", signal), ("reason", reason)],
        )
    }

    /// `(received, exported, dropped, queued)` of `signal`.
    fn books(&self, signal: &str) -> (u64, u64, u64, u64) {
        let s = [("signal", signal)];
        (
            self.count("lookout_otlp_received_total", &s),
            self.count("lookout_otlp_exported_total", &s),
            self.count("lookout_otlp_dropped_total", &s),
            self.count("lookout_otlp_queued", &s),
        )
    }

    /// Whether `signal`'s books balance with `received` items received.
    fn balanced(&self, signal: &str, received: u64) -> bool {
        let (r, e, d, q) = self.books(signal);
        r == received && r == e + d + q
    }

    fn log_events(&self, n: usize, prefix: &str) {
        for i in 0..n {
            self.bus.publish(
                Event::new("app.note")
                    .correlation_id(format!("c-{i}"))
                    .field("message", format!("{prefix}-{i}"))
                    .field("i", i as i64),
            );
        }
    }
}

fn span_event(span_id: &str, parent: Option<&str>, name: &str) -> Event {
    let mut event = Event::new("trace.span")
        .correlation_id("lk-1")
        .field("trace_id", TRACE_ID)
        .field("span_id", span_id);
    if let Some(parent) = parent {
        event = event.field("parent_span_id", parent);
    }
    if name.starts_with("request ") {
        // As the pool marks a request's root span.
        event = event.field("span_kind", "server");
    }
    event
        .field("name", name)
        .field("start_unix_nano", 1_733_230_000_000_000_000i64)
        .field("end_unix_nano", 1_733_230_000_040_000_000i64)
        .field("status", "ok")
        .field(
            "origin",
            if name.starts_with("request ") {
                "host"
            } else {
                "worker"
            },
        )
        .field("pool", "demo")
        .field("worker", "demo-1")
        .field("command", "traced")
        .field("attr.rows", 10i64)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn str_attr(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    })
}

const PATIENCE: Duration = Duration::from_secs(20);

/// A request's spans arrive as OTLP spans with their trace id, span ids, parents, names,
/// attributes and the resource naming lookout; events arrive as log records; the configured
/// headers go with every request; nothing is left unaccounted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_log_records_arrive_with_their_ids() {
    let collector = Collector::start().await;
    let h = host(&collector.endpoint(), |c| {
        c.headers
            .insert("x-api-key".into(), "test-key-123456".into());
    });
    h.bus.publish(span_event(
        "00f067aa0ba902b7",
        Some("b7ad6b7169203331"),
        "request traced",
    ));
    h.bus.publish(span_event(
        "1111111111111111",
        Some("00f067aa0ba902b7"),
        "execute",
    ));
    h.bus.publish(span_event(
        "2222222222222222",
        Some("1111111111111111"),
        "load_model",
    ));
    h.log_events(3, "note");
    eventually(
        "3 spans and 3 log records at the collector",
        PATIENCE,
        || async {
            (collector.got.span_ids().len() == 3 && collector.got.log_bodies().len() == 3)
                .then_some(())
        },
    )
    .await;
    let spans = collector.got.spans.lock().unwrap().clone();
    let by_name = |name: &str| spans.iter().find(|s| s.name == name).unwrap().clone();
    let (root, execute, model) = (
        by_name("request traced"),
        by_name("execute"),
        by_name("load_model"),
    );
    for span in [&root, &execute, &model] {
        assert_eq!(hex(&span.trace_id), TRACE_ID);
    }
    assert_eq!(hex(&root.span_id), "00f067aa0ba902b7");
    assert_eq!(hex(&root.parent_span_id), "b7ad6b7169203331");
    assert_eq!(execute.parent_span_id, root.span_id);
    assert_eq!(model.parent_span_id, execute.span_id);
    assert_eq!(root.kind, 2, "the request span is SERVER");
    assert_eq!(model.kind, 1, "a worker span is INTERNAL");
    assert_eq!(
        model.end_time_unix_nano - model.start_time_unix_nano,
        40_000_000
    );
    assert_eq!(
        str_attr(&model.attributes, "lookout.pool").as_deref(),
        Some("demo")
    );
    assert_eq!(
        str_attr(&model.attributes, "lookout.correlation_id").as_deref(),
        Some("lk-1")
    );
    let resource = collector.got.resources.lock().unwrap()[0].clone();
    assert_eq!(
        str_attr(&resource, "service.name").as_deref(),
        Some("lookout")
    );
    assert!(str_attr(&resource, "host.name").is_some_and(|h| !h.is_empty()));
    assert_eq!(
        collector.got.log_bodies(),
        ["note-0", "note-1", "note-2"].map(String::from).into()
    );
    let headers = collector.got.headers.lock().unwrap().clone().unwrap();
    assert_eq!(headers["x-api-key"], "test-key-123456");
    assert_eq!(headers["content-type"], "application/x-protobuf");
    eventually("the books balance", PATIENCE, || async {
        (h.balanced("traces", 3) && h.balanced("logs", 3)).then_some(())
    })
    .await;
    assert_eq!(h.books("traces"), (3, 3, 0, 0));
    assert_eq!(h.books("logs"), (3, 3, 0, 0));
}

/// The collector goes away while events keep coming and comes back: the batches are retried
/// (counted), then every item arrives, and the books say so — nothing lost unaccounted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_ridden_out_and_loses_nothing_unaccounted() {
    let mut collector = Collector::start().await;
    let h = host(&collector.endpoint(), |c| {
        c.max_retries = 1000;
        c.batch_max = 50;
    });
    h.log_events(100, "before");
    eventually("the first events at the collector", PATIENCE, || async {
        (collector.got.log_bodies().len() == 100).then_some(())
    })
    .await;
    collector.down().await;
    h.log_events(300, "during");
    assert!(
        h.bus.flush(Duration::from_secs(10)).await,
        "the bus drained"
    );
    eventually("retries while the collector is away", PATIENCE, || async {
        (h.count("lookout_otlp_retries_total", &[("signal", "logs")]) >= 3).then_some(())
    })
    .await;
    let (received, _, _, queued) = h.books("logs");
    assert_eq!(received, 400);
    assert!(queued > 0, "held while the collector is away");
    collector.up().await;
    eventually("every event at the collector", PATIENCE, || async {
        (collector.got.log_bodies().len() == 400).then_some(())
    })
    .await;
    eventually(
        "the books balance with nothing dropped",
        PATIENCE,
        || async { (h.books("logs") == (400, 400, 0, 0)).then_some(()) },
    )
    .await;
}

/// A collector that refuses a batch (400) has it counted `rejected`, not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_is_counted_rejected_and_not_retried() {
    let collector = Collector::start().await;
    collector.got.answers.lock().unwrap().push_back((400, None));
    let h = host(&collector.endpoint(), |c| c.flush_interval_ms = 200);
    h.log_events(5, "refused");
    eventually("the batch counted rejected", PATIENCE, || async {
        (h.dropped("logs", "rejected") == 5).then_some(())
    })
    .await;
    assert_eq!(h.books("logs"), (5, 0, 5, 0));
    assert_eq!(h.count("lookout_otlp_retries_total", &[]), 0);
    assert_eq!(collector.got.requests.lock().unwrap().len(), 1);
    // The next batch goes through as usual.
    h.log_events(2, "later");
    eventually("the next batch exported", PATIENCE, || async {
        (h.books("logs") == (7, 2, 5, 0)).then_some(())
    })
    .await;
}

/// A busy collector (429 with `Retry-After`, then 503) gets the batch again after the pause it
/// asked for; one that stays unavailable past `max_retries` has it counted
/// `retries_exhausted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_collectors_are_retried_and_retries_run_out_counted() {
    let collector = Collector::start().await;
    collector
        .got
        .answers
        .lock()
        .unwrap()
        .extend([(429, Some(1)), (503, None)]);
    // One batch each time: the answers are taken in turn.
    let h = host(&collector.endpoint(), |c| {
        c.max_retries = 2;
        c.flush_interval_ms = 300;
    });
    let started = std::time::Instant::now();
    h.log_events(4, "busy");
    eventually("the batch exported after two retries", PATIENCE, || async {
        (h.books("logs") == (4, 4, 0, 0)).then_some(())
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "Retry-After: 1 was honoured"
    );
    assert_eq!(
        h.count("lookout_otlp_retries_total", &[("signal", "logs")]),
        2
    );

    collector
        .got
        .answers
        .lock()
        .unwrap()
        .extend([(503, None), (502, None), (504, None)]);
    h.log_events(3, "unavailable");
    eventually("the batch dropped after its retries", PATIENCE, || async {
        (h.dropped("logs", "retries_exhausted") == 3).then_some(())
    })
    .await;
    assert_eq!(h.books("logs"), (7, 4, 3, 0));
    assert_eq!(
        h.count("lookout_otlp_retries_total", &[("signal", "logs")]),
        4
    );
}

/// With no collector at all and a small queue, what does not fit is counted `queue_full` at
/// once (the bus's consumer never waits); at stop, what is still held is counted `shutdown`;
/// the books balance throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_counted_and_the_rest_is_counted_at_shutdown() {
    // A port nothing listens on.
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let h = host(&endpoint, |c| {
        c.queue_capacity = 10;
        c.batch_max = 5;
        c.max_retries = 1000;
    });
    h.log_events(100, "overflow");
    for i in 0..20 {
        h.bus.publish(span_event(
            &format!("{:016x}", i + 1),
            Some("00f067aa0ba902b7"),
            "work",
        ));
    }
    assert!(
        h.bus.flush(Duration::from_secs(10)).await,
        "the bus drained"
    );
    eventually("every item received and counted", PATIENCE, || async {
        (h.balanced("logs", 100) && h.balanced("traces", 20)).then_some(())
    })
    .await;
    assert_eq!(h.dropped("logs", "queue_full"), 90);
    assert_eq!(h.dropped("traces", "queue_full"), 10);
    assert_eq!(h.books("logs").3, 10);
    // The bus's consumer handed every event over without waiting.
    assert_eq!(
        family_sum(
            &h.registry.gather(),
            "lookout_consumer_events_total",
            &[("consumer", "otlp"), ("outcome", "delivered")]
        ) as u64,
        120
    );
    h.otlp.stop(Duration::from_millis(300)).await;
    assert_eq!(h.dropped("logs", "shutdown"), 10);
    assert_eq!(h.dropped("traces", "shutdown"), 10);
    assert_eq!(h.books("logs"), (100, 0, 100, 0));
    assert_eq!(h.books("traces"), (20, 0, 20, 0));
}

/// At stop, what waits for its batch to fill is sent at once, within the grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_flushes_what_is_queued() {
    let collector = Collector::start().await;
    let h = host(&collector.endpoint(), |c| {
        c.flush_interval_ms = 60_000;
        c.batch_max = 10_000;
    });
    h.log_events(7, "last");
    assert!(h.bus.flush(Duration::from_secs(10)).await);
    assert_eq!(
        h.books("logs"),
        (7, 0, 0, 7),
        "waiting for the batch to fill"
    );
    h.otlp.stop(Duration::from_secs(10)).await;
    assert_eq!(collector.got.log_bodies().len(), 7);
    assert_eq!(h.books("logs"), (7, 7, 0, 0));
}

/// A span event whose ids the sanitizer redacted is no span: counted `invalid`, not sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_span_event_with_redacted_ids_is_counted_invalid() {
    let collector = Collector::start().await;
    let h = host(&collector.endpoint(), |_| {});
    h.bus.publish(
        Event::new("trace.span")
            .field("trace_id", "[REDACTED:high_entropy]")
            .field("span_id", "00f067aa0ba902b7")
            .field("name", "execute"),
    );
    h.bus
        .publish(span_event("3333333333333333", None, "request traced"));
    eventually(
        "one span exported, one counted invalid",
        PATIENCE,
        || async {
            (h.books("traces") == (2, 1, 1, 0) && h.dropped("traces", "invalid") == 1).then_some(())
        },
    )
    .await;
    assert_eq!(collector.got.span_ids().len(), 1);
}

/// Every series exists from the start, so a scrape shows zeros rather than nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_is_there_from_the_start() {
    let h = host("http://127.0.0.1:9", |_| {});
    let families = h.registry.gather();
    let series = |name: &str| {
        families
            .iter()
            .find(|f| f.name() == name)
            .map_or(0, |f| f.get_metric().len())
    };
    assert_eq!(series("lookout_otlp_received_total"), 2);
    assert_eq!(series("lookout_otlp_exported_total"), 2);
    assert_eq!(series("lookout_otlp_dropped_total"), 2 * 5);
    assert_eq!(series("lookout_otlp_retries_total"), 2);
    assert_eq!(series("lookout_otlp_queued"), 2);
    assert_eq!(series("lookout_otlp_export_seconds"), 2);
    assert_eq!(series("lookout_otlp_skipped_total"), 2);
}
