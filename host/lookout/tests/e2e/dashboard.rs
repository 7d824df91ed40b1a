//! The dashboard in a real browser (headless Debian chromium driven by playwright-core),
//! with real workers and traffic: tests/browser/dashboard.mjs says what it checks.

use lookout_testkit::Host;

use crate::LOOKOUT;

/// Pool cards follow the workers (and a killed one), repeated errors show as one row with
/// their count and the latest traceback, saturation
/// turns the health indicator and back, a swap shows the new plugin version, the tap shows a
/// new event sanitized and filters it, phone width and both colour schemes render — with no
/// page or console errors and no secret on the page.
#[test]
fn the_dashboard_shows_what_happens() {
    let dir = lookout_testkit::artifacts_dir();
    let config = dir.join("dashboard.toml");
    std::fs::write(
        &config,
        r#"
[health]
hold_ms = 200
interval_ms = 100

[[pools]]
name = "demo"
app = "demo"
size = 2
[pools.health]
max_queue_length = 1
min_requests = 1000
"#,
    )
    .unwrap();
    let redact = dir.join("redact-for-swap.wasm");
    std::fs::write(&redact, lookout_artifacts::plugins::REDACT).unwrap();
    let host = Host::start(LOOKOUT, &["--config", config.to_str().unwrap()]).unwrap();
    let report = lookout_testkit::check_dashboard_in_browser(&host, &redact).unwrap();
    let size = std::fs::metadata(&report.screenshot).unwrap().len();
    assert!(
        size > 1000,
        "screenshot {} is only {size} bytes",
        report.screenshot.display()
    );
    eprintln!("dashboard: first render {:?} ms", report.first_render_ms);
    assert!(report.first_render_ms.is_some());
}

/// The host restarts under an open dashboard: the page comes back live by itself — no
/// reload — with the new host's data.
#[test]
fn the_dashboard_reconnects_after_the_host_restarts() {
    use std::io::BufRead;

    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let listen = format!("127.0.0.1:{port}");
    let mut host = Host::start_at(LOOKOUT, &listen, &[]).unwrap();
    let mut watcher = std::process::Command::new("node")
        .current_dir(lookout_testkit::repo_root().join("tests/browser"))
        .arg("reconnect.mjs")
        .arg(&host.base)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(watcher.stdout.take().unwrap()).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(first, "watching", "the page did not come up live");
    host.terminate(std::time::Duration::from_secs(30)).unwrap();
    drop(host);
    let _again = Host::start_at(LOOKOUT, &listen, &[]).unwrap();
    let output = watcher.wait_with_output().unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        output.status.success() && rest.iter().any(|l| l == "reconnected"),
        "{rest:?}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The dashboard's files come with their content types, gzipped to clients that accept it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_served_compressed_with_its_types() {
    let host = crate::quiet_host();
    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        (
            "/assets/lookout_dashboard.js",
            "text/javascript; charset=utf-8",
        ),
        ("/assets/lookout_dashboard_bg.wasm", "application/wasm"),
    ] {
        let get = |gzip: bool| {
            let request = host.http.get(host.url(path));
            let request = if gzip {
                request.header("accept-encoding", "gzip, br")
            } else {
                request
            };
            async move { request.send().await.unwrap() }
        };
        let zipped = get(true).await;
        assert_eq!(zipped.headers()["content-type"], content_type, "{path}");
        assert_eq!(zipped.headers()["content-encoding"], "gzip", "{path}");
        let zipped = zipped.bytes().await.unwrap();
        let plain = get(false).await;
        assert!(!plain.headers().contains_key("content-encoding"), "{path}");
        let plain = plain.bytes().await.unwrap();
        assert_eq!(&zipped[..2], b"\x1f\x8b", "{path}: gzip magic");
        assert!(zipped.len() < plain.len(), "{path}");
        if path.ends_with(".wasm") {
            assert!(
                zipped.len() <= 150 * 1024,
                "the wasm is {} bytes gzipped (target 150 KB)",
                zipped.len()
            );
        }
    }
}
