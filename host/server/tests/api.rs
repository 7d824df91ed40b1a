//! The HTTP API without a socket: who may swap plugins, what `/health/detailed` says, the
//! redaction counts of `/api/v1/plugins` and `/metrics`, and the overview's wire form.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use lookout_artifacts::plugins::MISBEHAVE;
use lookout_core::{Bus, BusConfig, Event, RedactAll};
use lookout_server::{AppState, router};
use lookout_wasm::{Manifest, PluginRegistry, Runtime, World};
use prometheus::Registry;
use tower::ServiceExt;

fn state(admin_token: Option<&str>) -> AppState {
    let registry = Registry::new();
    let bus = Bus::start(BusConfig::default(), &registry, Box::new(RedactAll)).unwrap();
    let plugins = Arc::new(
        PluginRegistry::new(Runtime::new(&registry).unwrap(), bus.clone(), &registry).unwrap(),
    );
    AppState {
        bus,
        registry,
        dashboard: None,
        dashboard_on: Arc::default(),
        max_body_bytes: 1 << 20,
        plugins,
        pools: Arc::default(),
        config: None,
        admin_token: admin_token.map(str::to_string),
        max_plugin_bytes: 1 << 20,
        started: std::time::Instant::now(),
        health: lookout_server::Health::new(lookout_server::HealthSettings {
            hold: std::time::Duration::ZERO,
            interval: std::time::Duration::from_secs(1),
        }),
        metric_groups: Arc::default(),
        recent_errors: lookout_server::RecentErrors::default(),
        nats: None,
        otlp: None,
    }
}

fn rollback_from(peer: Option<&str>, token: Option<&str>) -> Request<Body> {
    let mut request = Request::post("/api/v1/plugins/redact/rollback");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let mut request = request.body(Body::empty()).unwrap();
    if let Some(peer) = peer {
        request
            .extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
    }
    request
}

/// Without a token, only loopback clients get past the guard (the plugin then is not found:
/// 404); others get 403, as does a request whose peer is unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_only_loopback_may_mutate() {
    let app = router(state(None));
    assert_eq!(
        status_of(&app, rollback_from(Some("127.0.0.1:5000"), None)).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status_of(&app, rollback_from(Some("[::1]:5000"), None)).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status_of(&app, rollback_from(Some("10.1.2.3:5000"), None)).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status_of(&app, rollback_from(None, None)).await,
        StatusCode::FORBIDDEN
    );
}

/// Every route that changes what runs, as (method, path): docs/security.md's list.
const MUTATING_ROUTES: &[(&str, &str)] = &[
    ("PUT", "/api/v1/plugins/redact"),
    ("DELETE", "/api/v1/plugins/digest"),
    ("POST", "/api/v1/plugins/redact/rollback"),
    ("PUT", "/api/v1/config"),
    ("PATCH", "/api/v1/config"),
    ("POST", "/api/v1/pools/demo/execute"),
    ("POST", "/api/v1/pools/demo/sessions"),
    ("POST", "/api/v1/pools/demo/workers/1/recycle"),
];

fn request(method: &str, path: &str, peer: &str, token: Option<&str>) -> Request<Body> {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", token);
    }
    let mut request = request.body(Body::from("{}")).unwrap();
    request
        .extensions_mut()
        .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
    request
}

async fn status_of(app: &axum::Router, request: Request<Body>) -> StatusCode {
    app.clone().oneshot(request).await.unwrap().status()
}

/// The guard covers every mutating route: without a token configured, a non-loopback
/// client gets 403 on each; with one, a missing, wrong, or non-Bearer token gets 401 on
/// each — also from loopback. Read-only routes stay open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutating_route_is_guarded() {
    let token = "a-long-admin-token-1234";
    let open = router(state(None));
    let guarded = router(state(Some(token)));
    for &(method, path) in MUTATING_ROUTES {
        let status = status_of(&open, request(method, path, "192.0.2.7:4000", None)).await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{method} {path} from afar without a token"
        );
        for wrong in [
            None,
            Some("Bearer a-long-admin-token-1235"),
            Some("Bearer "),
            Some(token),
            Some("Basic YWRtaW46YS1sb25nLWFkbWluLXRva2VuLTEyMzQ="),
        ] {
            let status = status_of(&guarded, request(method, path, "127.0.0.1:4000", wrong)).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {wrong:?}"
            );
        }
        let status = status_of(
            &guarded,
            request(
                method,
                path,
                "192.0.2.7:4000",
                Some(&format!("Bearer {token}")),
            ),
        )
        .await;
        assert!(
            status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
            "{method} {path} with the token from afar: {status}"
        );
    }
    for path in [
        "/metrics",
        "/health",
        "/api/v1/config",
        "/api/v1/pools",
        "/api/v1/plugins",
    ] {
        let status = status_of(&guarded, request("GET", path, "192.0.2.7:4000", None)).await;
        // (no config control in this state: its GET answers 404, not 401)
        assert!(
            status == StatusCode::OK
                || (path == "/api/v1/config" && status == StatusCode::NOT_FOUND),
            "GET {path} is open: {status}"
        );
    }
}

/// With a token, the token decides — wherever the client is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_token_decides() {
    let app = router(state(Some("a-long-admin-token-1234")));
    assert_eq!(
        status_of(
            &app,
            rollback_from(Some("10.1.2.3:5000"), Some("a-long-admin-token-1234"))
        )
        .await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status_of(&app, rollback_from(Some("127.0.0.1:5000"), None)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status_of(
            &app,
            rollback_from(Some("127.0.0.1:5000"), Some("a-long-admin-token-1235"))
        )
        .await,
        StatusCode::UNAUTHORIZED
    );
}

/// `/health/detailed`'s status code and body.
async fn health_detailed(app: &axum::Router) -> (StatusCode, serde_json::Value) {
    let (status, body) = get(app, "/health/detailed").await;
    (status, serde_json::from_str(&body).unwrap())
}

/// A quarantined sanitizer shows in `/health/detailed`: a failing check with its last error,
/// and the host not ready (503) — it would fail every batch closed; ready again once the
/// quarantine lifts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_detailed_reports_a_quarantined_plugin() {
    let state = state(None);
    let (bus, plugins) = (state.bus.clone(), state.plugins.clone());
    let app = router(state);
    let manifest = Manifest::parse(
        "name = \"misbehave\"\nworld = \"sanitizer\"\n[quarantine]\nafter_failures = 2\nbackoff_ms = 500\n",
    )
    .unwrap();
    plugins.install(manifest, MISBEHAVE, "test").unwrap();
    let (code, body) = health_detailed(&app).await;
    assert_eq!(
        (code, &body["status"]),
        (StatusCode::OK, &"ok".into()),
        "{body}"
    );
    assert_eq!(body["plugins"][0]["state"], "running", "{body}");
    assert!(body["uptime_seconds"].as_f64().unwrap() >= 0.0);

    // Two trapping batches: quarantined.
    for _ in 0..2 {
        bus.publish(Event::new("test.trap"));
        assert!(bus.flush(std::time::Duration::from_secs(10)).await);
    }
    let (code, body) = health_detailed(&app).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "not_ready", "{body}");
    let check = &body["checks"][0];
    assert_eq!(check["name"], "plugin:misbehave", "{body}");
    assert_eq!(check["status"], "failing", "{body}");
    assert_eq!(check["value"], "quarantined", "{body}");
    assert!(
        check["detail"].as_str().is_some_and(|e| e.contains("trap")),
        "{body}"
    );
    assert!(
        body["plugins"][0]["retry_in_ms"].as_u64().is_some(),
        "{body}"
    );

    // After its backoff an ordinary batch succeeds and the check is ok again.
    lookout_testkit::eventually(
        "the quarantine lifts",
        std::time::Duration::from_secs(10),
        || async {
            bus.publish(Event::new("ordinary"));
            bus.flush(std::time::Duration::from_secs(10)).await;
            let (code, body) = health_detailed(&app).await;
            (code == StatusCode::OK && body["status"] == "ok").then_some(())
        },
    )
    .await;
}

/// A GET's status and body.
async fn get(app: &axum::Router, path: &str) -> (StatusCode, String) {
    let response = app
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// Installs `misbehave` as the sanitizer, with the default manifest.
fn install_misbehave(plugins: &PluginRegistry) {
    plugins
        .install(
            Manifest::new("misbehave", World::Sanitizer),
            MISBEHAVE,
            "test",
        )
        .unwrap();
}

/// Each sanitizer in `GET /api/v1/plugins` carries its redactions by rule, counted from the
/// markers of the replacements it made; `/metrics` has the same in `lookout_redactions_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_list_counts_a_sanitizers_redactions_by_rule() {
    let state = state(None);
    let (bus, plugins) = (state.bus.clone(), state.plugins.clone());
    let app = router(state);
    install_misbehave(&plugins);
    let (_, body) = get(&app, "/api/v1/plugins").await;
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body["plugins"][0]["redactions"],
        serde_json::json!({}),
        "{body}"
    );

    // misbehave hands back each `mark` as its replacement: the markers are ours to choose.
    for mark in ["[REDACTED:gitlab-pat] [REDACTED:gitlab-pat]", "[REDACTED]"] {
        bus.publish(Event::new("test.mark").field("mark", mark));
    }
    assert!(bus.flush(std::time::Duration::from_secs(10)).await);
    let (code, body) = get(&app, "/api/v1/plugins").await;
    assert_eq!(code, StatusCode::OK);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body["plugins"][0]["redactions"],
        serde_json::json!({"gitlab-pat": 2, "sensitive-key": 1}),
        "{body}"
    );
    let (_, metrics) = get(&app, "/metrics").await;
    assert!(
        metrics.contains(r#"lookout_redactions_total{plugin="misbehave",rule="gitlab-pat"} 2"#),
        "{metrics}"
    );
}

/// Every object's keys, recursively, and each value's JSON type: the wire form without its
/// numbers, which change from call to call.
fn shape(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Null => "null".into(),
        Value::Bool(_) => "bool".into(),
        Value::Number(_) => "number".into(),
        Value::String(_) => "string".into(),
        Value::Array(items) => format!("[{}]", items.first().map(shape).unwrap_or_default()),
        Value::Object(map) => {
            let fields: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{k}:{}", shape(v)))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
    }
}

/// The overview the dashboard reads keeps its field names and shapes: host, health, bus,
/// plugins with their limits and status, swaps, and error groups with their latest event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_keeps_its_wire_form() {
    let state = state(None);
    let (bus, plugins) = (state.bus.clone(), state.plugins.clone());
    let _errors = bus
        .register(
            lookout_core::RECENT_ERRORS_CONSUMER,
            state.recent_errors.clone(),
        )
        .unwrap();
    let app = router(state);
    install_misbehave(&plugins);
    bus.publish(
        Event::new("request.completed")
            .field("pool", "billing")
            .field("command", "render")
            .field("success", false)
            .field("error_kind", "ValueError"),
    );
    assert!(bus.flush(std::time::Duration::from_secs(10)).await);
    let (code, body) = get(&app, "/api/v1/overview").await;
    assert_eq!(code, StatusCode::OK);
    if let Ok(path) = std::env::var("LOOKOUT_DUMP_OVERVIEW") {
        std::fs::write(path, &body).unwrap();
    }
    // What the dashboard does: read it back as the shared types.
    let typed: lookout_api::Overview<serde_json::Value, serde_json::Value> =
        serde_json::from_str(&body).unwrap();
    assert_eq!(typed.plugins[0].world, "sanitizer");
    assert_eq!(typed.plugins[0].status.state, "running");
    assert_eq!(typed.health.checks[0].value, "running");
    assert_eq!(
        (typed.errors[0].command.as_deref(), typed.errors[0].count),
        (Some("render"), 1)
    );
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    let expected = concat!(
        "{bus:{accepted:number,dropped:number,published:number,rate_limited:number,",
        "sampled_out:number,sanitizer_failures:number},",
        "errors:[{command:string,count:number,error_kind:string,first_seen_ns:number,",
        "last_seen_ns:number,latest:{correlation_id:null,fields:{command:string,",
        "error_kind:string,pool:string,success:bool},id:number,kind:string,severity:string,",
        "timestamp_ns:number},origin:null,pool:string}],",
        "health:{checks:[{affects_readiness:bool,for_s:number,name:string,pending:null,",
        "rule:string,status:string,threshold:string,value:string}],ready:bool,status:string},",
        "host:{memory_bytes:number,processes:number,uptime_s:number,version:string,",
        "workers:number},",
        "nats:null,",
        "plugins:[{author_version:string,counters:{busy_seconds:number,calls:number,",
        "events_in:number,failures:number,ns_per_event:number},installed_at_ms:number,",
        "limits:{call_timeout_ms:number,max_memory_mib:number,max_series_per_metric:number},",
        "name:string,on_failure:string,previous:null,redactions:{},sha256:string,",
        "status:{last_error:null,quarantines:number,retry_in_ms:null,state:string},",
        "version:number,world:string}],",
        "pools:[],",
        "swaps:[{at_ms:number,error:null,outcome:string,plugin:string,sha256:string,",
        "source:string,version:number}]}",
    );
    assert_eq!(shape(&body), expected, "{body}");
}
