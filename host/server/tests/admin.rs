//! The guard on mutating routes, without a socket: who may swap plugins.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use lookout_core::{Bus, BusConfig, RedactAll};
use lookout_server::{AppState, router};
use lookout_wasm::{PluginRegistry, Runtime};
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
        max_body_bytes: 1 << 20,
        plugins,
        admin_token: admin_token.map(str::to_string),
        max_plugin_bytes: 1 << 20,
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
    let status = |r: Request<Body>| {
        let app = app.clone();
        async move { app.oneshot(r).await.unwrap().status() }
    };
    assert_eq!(
        status(rollback_from(Some("127.0.0.1:5000"), None)).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status(rollback_from(Some("[::1]:5000"), None)).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status(rollback_from(Some("10.1.2.3:5000"), None)).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(rollback_from(None, None)).await,
        StatusCode::FORBIDDEN
    );
}

/// With a token, the token decides — wherever the client is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_token_decides() {
    let app = router(state(Some("a-long-admin-token-1234")));
    let status = |r: Request<Body>| {
        let app = app.clone();
        async move { app.oneshot(r).await.unwrap().status() }
    };
    assert_eq!(
        status(rollback_from(
            Some("10.1.2.3:5000"),
            Some("a-long-admin-token-1234")
        ))
        .await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status(rollback_from(Some("127.0.0.1:5000"), None)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(rollback_from(
            Some("127.0.0.1:5000"),
            Some("a-long-admin-token-1235")
        ))
        .await,
        StatusCode::UNAUTHORIZED
    );
}
