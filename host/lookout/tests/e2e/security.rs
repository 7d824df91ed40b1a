//! What docs/security.md promises at the HTTP edge, checked against the real binary:
//! headers and query strings are size-limited, and CORS is not open.

use reqwest::StatusCode;

use crate::quiet_host;

/// An oversized header block, too many headers, or an oversized query string are refused
/// before any handler runs — and the host goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_and_query_strings_are_refused() {
    let host = quiet_host();
    let refused = |status: StatusCode| {
        matches!(
            status,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
                | StatusCode::URI_TOO_LONG
                | StatusCode::BAD_REQUEST
        )
    };
    // One header of 1 MiB.
    let big = "a".repeat(1 << 20);
    let answer = host
        .http
        .get(host.url("/health"))
        .header("x-big", &big)
        .send()
        .await;
    match answer {
        Ok(r) => assert!(refused(r.status()), "a 1 MiB header got {}", r.status()),
        Err(e) => assert!(!e.is_timeout(), "a 1 MiB header: {e}"),
    }
    // 200 small headers.
    let mut request = host.http.get(host.url("/health"));
    for i in 0..200 {
        request = request.header(format!("x-h{i}"), "v");
    }
    match request.send().await {
        Ok(r) => assert!(refused(r.status()), "200 headers got {}", r.status()),
        Err(e) => assert!(!e.is_timeout(), "200 headers: {e}"),
    }
    // A 1 MiB query string on the live stream.
    let url = format!(
        "{}?kind={}",
        host.url("/api/v1/events/stream"),
        "k".repeat(1 << 20)
    );
    match host.http.get(url).send().await {
        Ok(r) => assert!(refused(r.status()), "a 1 MiB query got {}", r.status()),
        Err(e) => assert!(!e.is_timeout(), "a 1 MiB query: {e}"),
    }
    // Still serving.
    let health = host.http.get(host.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

/// No route answers with `Access-Control-Allow-Origin`: a page on another origin cannot
/// read lookout's API from a browser, and a preflight for a mutating call is not granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_is_not_open() {
    let host = quiet_host();
    for path in [
        "/api/v1/config",
        "/api/v1/overview",
        "/metrics",
        "/health/detailed",
        "/",
    ] {
        let r = host
            .http
            .get(host.url(path))
            .header("origin", "https://evil.example")
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        assert!(
            r.headers().get("access-control-allow-origin").is_none(),
            "GET {path} allows another origin: {:?}",
            r.headers()
        );
    }
    for (method, path) in [
        ("PUT", "/api/v1/config"),
        ("POST", "/api/v1/events"),
        ("PUT", "/api/v1/plugins/redact"),
    ] {
        let r = host
            .http
            .request(reqwest::Method::OPTIONS, host.url(path))
            .header("origin", "https://evil.example")
            .header("access-control-request-method", method)
            .header(
                "access-control-request-headers",
                "content-type, authorization",
            )
            .send()
            .await
            .unwrap();
        assert!(
            r.headers().get("access-control-allow-origin").is_none()
                && r.headers().get("access-control-allow-methods").is_none(),
            "preflight for {method} {path} granted: {} {:?}",
            r.status(),
            r.headers()
        );
    }
}
