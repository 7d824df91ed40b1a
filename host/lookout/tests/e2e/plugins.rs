//! The plugin admin API against a running host: swap a sanitizer policy, watch the stream
//! change, roll back, and the guard on mutating routes.

use std::time::Duration;

use lookout_artifacts::plugins::{ALLOWLIST, REDACT};
use lookout_testkit::{Host, LiveStream};
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::{LOOKOUT, default_host, host_with_config};

const ALLOWLIST_MANIFEST: &str = r#"
name = "allowlist"
world = "sanitizer"
version = "1.0.0"
[config]
allow = "user,command"
[[fixtures]]
input = [{ kind = "login", fields = { user = "bob", password = "hunter2" } }]
expect = [{ kind = "login", fields = { user = "bob", password = "[REDACTED]" } }]
"#;

/// `POST /api/v1/plugins/{name}/rollback`.
async fn rollback(host: &Host, name: &str) -> reqwest::Response {
    rollback_as(host, name, None).await
}

/// `POST /api/v1/plugins/{name}/rollback`, with `token` as the bearer token if given.
async fn rollback_as(host: &Host, name: &str, token: Option<&str>) -> reqwest::Response {
    let request = host
        .http
        .post(host.url(&format!("/api/v1/plugins/{name}/rollback")));
    match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
    .send()
    .await
    .unwrap()
}

/// `DELETE /api/v1/plugins/{name}`.
async fn remove_plugin(host: &Host, name: &str) -> reqwest::Response {
    host.http
        .delete(host.url(&format!("/api/v1/plugins/{name}")))
        .send()
        .await
        .unwrap()
}

/// Asserts a 200, showing the body otherwise.
async fn assert_ok(response: reqwest::Response) {
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

/// Stops `host` with SIGTERM and asserts it exits cleanly.
fn stop(host: &mut Host) {
    assert!(host.terminate(Duration::from_secs(15)).unwrap().success());
}

fn upload(manifest: &str, wasm: &[u8]) -> Form {
    Form::new()
        .part("manifest", Part::text(manifest.to_string()))
        .part("wasm", Part::bytes(wasm.to_vec()))
}

/// `PUT /api/v1/plugins/{name}` with a manifest and a component.
pub(crate) async fn put_plugin(
    host: &Host,
    name: &str,
    manifest: &str,
    wasm: &[u8],
) -> reqwest::Response {
    host.http
        .put(host.url(&format!("/api/v1/plugins/{name}")))
        .multipart(upload(manifest, wasm))
        .send()
        .await
        .unwrap()
}

async fn publish_note(host: &Host, note: &str) {
    host.post_events(&json!([{ "kind": "audit.note", "fields": { "user": "bob", "note": note } }]))
        .await;
}

/// Swapping in the allow-list policy changes what the stream shows at once; a bad upload is
/// refused with 422 and changes nothing; rollback brings the default back; the sanitizer
/// cannot be deleted; the list and history say what happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sanitizer_policy_swaps_and_rolls_back_over_http() {
    let host = default_host();
    let mut stream = LiveStream::open(&host, "?kind=audit.").await.unwrap();

    publish_note(&host, "plain words").await;
    let before = stream.take(1, Duration::from_secs(10)).await;
    assert_eq!(
        before[0]["fields"]["note"], "plain words",
        "redact keeps plain text"
    );

    assert_ok(put_plugin(&host, "allowlist", ALLOWLIST_MANIFEST, ALLOWLIST).await).await;
    publish_note(&host, "plain words").await;
    let after = stream.take(1, Duration::from_secs(10)).await;
    assert_eq!(
        after[0]["fields"]["note"], "[REDACTED]",
        "allowlist redacts unlisted keys"
    );
    assert_eq!(after[0]["fields"]["user"], "bob");

    // Random bytes and a name that does not match the URL: 422, and allowlist stays.
    let response = put_plugin(
        &host,
        "allowlist",
        ALLOWLIST_MANIFEST,
        b"\0asm\x0d\0\x01\0 random",
    )
    .await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("not a valid WASM component"),
        "{body}"
    );
    let response = put_plugin(&host, "other", ALLOWLIST_MANIFEST, REDACT).await;
    assert_eq!(response.status(), 422);

    let list = plugin_list(&host).await;
    assert_eq!(list["plugins"][0]["name"], "allowlist");
    assert_eq!(list["plugins"][0]["version"], 2);
    assert_eq!(list["plugins"][0]["previous"]["name"], "redact");
    let outcomes: Vec<&str> = list["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["installed", "installed", "rejected"]);

    let response = rollback(&host, "allowlist").await;
    assert_eq!(response.status(), 200);
    publish_note(&host, "plain words").await;
    let rolled = stream.take(1, Duration::from_secs(10)).await;
    assert_eq!(rolled[0]["fields"]["note"], "plain words", "back on redact");

    let response = remove_plugin(&host, "redact").await;
    assert_eq!(response.status(), 409);
    let response = rollback(&host, "nothing").await;
    assert_eq!(response.status(), 404);

    let metrics = host.metrics().await;
    assert_eq!(
        metrics.sum(
            "lookout_plugin_info",
            &[("plugin", "redact"), ("version", "1")]
        ),
        1.0
    );
    assert_eq!(
        metrics.sum("lookout_plugin_swaps_total", &[("outcome", "rejected")]),
        1.0
    );
}

/// With an admin token configured, mutating routes need it: none or a wrong one is 401, the
/// right one works. Reading the plugin list needs no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_need_the_token_when_one_is_set() {
    let host = host_with_config(
        "admin-token.toml",
        "[server]\nadmin_token = \"correct-horse-battery-staple\"\n",
    );

    let response = rollback(&host, "redact").await;
    assert_eq!(response.status(), 401);
    let response = rollback_as(&host, "redact", Some("wrong-token-wrong-token")).await;
    assert_eq!(response.status(), 401);
    // The right token gets through the guard (and then 409: no previous version yet).
    let response = rollback_as(&host, "redact", Some("correct-horse-battery-staple")).await;
    assert_eq!(response.status(), 409);
    let response = host
        .http
        .get(host.url("/api/v1/plugins"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let logs = host.logs().join("\n");
    assert!(
        !logs.contains("correct-horse-battery-staple"),
        "the token reached the logs"
    );
}

/// The default host serves mutating routes to loopback clients without a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_loopback_clients_may_swap() {
    let host = default_host();
    let response = rollback(&host, "redact").await;
    assert_eq!(
        response.status(),
        409,
        "loopback passes the guard (409: nothing to roll back to)"
    );
}

/// Every example manifest in `examples/plugins/` swaps in as documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_manifests_swap_in() {
    use lookout_artifacts::plugins::{DIGEST, ERROR_COUNTER, SLO};
    let host = default_host();
    for (name, wasm) in [
        ("allowlist", ALLOWLIST),
        ("digest", DIGEST),
        ("error-counter", ERROR_COUNTER),
        ("slo", SLO),
    ] {
        let path = lookout_testkit::repo_root().join(format!("examples/plugins/{name}.toml"));
        let manifest = std::fs::read_to_string(&path).unwrap();
        let response = put_plugin(&host, name, &manifest, wasm).await;
        assert_eq!(
            response.status(),
            200,
            "{}: {}",
            path.display(),
            response.text().await.unwrap()
        );
    }
}

/// A consumer and a metrics plugin pushed over HTTP: the consumer's digest reaches the host's
/// logs, the metrics plugin's series reach `/metrics`, and the consumer can be removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_and_metrics_plugins_run_behind_the_api() {
    use lookout_artifacts::plugins::{DIGEST, SLO};
    let host = default_host();
    for (name, manifest, wasm) in [
        (
            "digest",
            "name = \"digest\"\nworld = \"consumer\"\n[config]\nevery = \"3\"\n",
            DIGEST,
        ),
        (
            "slo",
            "name = \"slo\"\nworld = \"metrics\"\n[config]\nthreshold_ms = \"100\"\n",
            SLO,
        ),
    ] {
        let response = put_plugin(&host, name, manifest, wasm).await;
        assert_eq!(
            response.status(),
            200,
            "{name}: {}",
            response.text().await.unwrap()
        );
    }
    let events: Vec<Value> = [(true, 20.0), (true, 300.0), (false, 5.0)]
        .iter()
        .map(|(ok, ms)| json!({"kind": "request.completed", "fields": {"command": "render", "success": ok, "duration_ms": ms, "password": "hunter2"}}))
        .collect();
    host.post_events(&Value::Array(events)).await;

    lookout_testkit::eventually(
        "the slo plugin's series on /metrics",
        Duration::from_secs(10),
        || async {
            let m = host.metrics().await;
            let good = m.sum(
                "lookout_plugin_slo_requests_total",
                &[("command", "render"), ("verdict", "good")],
            );
            let bad = m.sum(
                "lookout_plugin_slo_requests_total",
                &[("command", "render"), ("verdict", "bad")],
            );
            (good == 1.0 && bad == 2.0).then_some(())
        },
    )
    .await;
    let digest = lookout_testkit::eventually(
        "the digest in the host's logs",
        Duration::from_secs(10),
        || async {
            host.logs()
                .into_iter()
                .find(|l| l.contains("digest: 3 requests"))
        },
    )
    .await;
    assert!(digest.contains("\"plugin\":\"digest\""), "{digest}");
    assert!(
        digest.contains("1 ok, 2 failed") || digest.contains("(2 ok, 1 failed"),
        "{digest}"
    );
    assert!(!host.logs().join("\n").contains("hunter2"));
    // Forwarded right after the call that the digest line came from: wait for it too.
    let stderr_line = lookout_testkit::eventually(
        "the plugin's stderr as a log line",
        Duration::from_secs(10),
        || async {
            host.logs()
                .into_iter()
                .find(|l| l.contains("digest plugin ready: a digest every 3 events"))
        },
    )
    .await;
    assert!(
        stderr_line.contains("\"stream\":\"stderr\""),
        "{stderr_line}"
    );

    let response = remove_plugin(&host, "digest").await;
    assert_eq!(response.status(), 204);
    let list = plugin_list(&host).await;
    let names: Vec<&str> = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["redact", "slo"]);
}

async fn plugin_list(host: &Host) -> Value {
    host.get_json("/api/v1/plugins")
        .await
        .expect("GET /api/v1/plugins")
}

async fn plugin_names(host: &Host) -> Vec<String> {
    running_versions(host)
        .await
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

/// `--plugins DIR`: the pairs in the folder load at start; a pair copied in later is swapped
/// in, a broken one is refused without touching what runs, a removed one is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watched_plugin_folder_loads_swaps_and_removes() {
    use lookout_artifacts::plugins::{DIGEST, SLO};
    let dir = lookout_testkit::artifacts_dir().join("plugin-folder");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    write_pair(&dir, "slo", "name = \"slo\"\nworld = \"metrics\"\n", SLO);
    // A corrupt pair at start is reported and skipped; the host starts with the rest.
    write_pair(
        &dir,
        "corrupt",
        "name = \"corrupt\"\nworld = \"consumer\"\n",
        b"\0asm not really",
    );
    // digest writes to stderr in init: loading it at start must not trip over the async runtime.
    write_pair(
        &dir,
        "early",
        "name = \"early\"\nworld = \"consumer\"\n",
        DIGEST,
    );
    let host = Host::start(LOOKOUT, &["--plugins", dir.to_str().unwrap()]).unwrap();
    assert_eq!(plugin_names(&host).await, ["redact", "early", "slo"]);
    let logs = host.logs().join("\n");
    assert!(
        logs.contains("corrupt.wasm") && logs.contains("not loaded at start"),
        "the corrupt plugin is reported: {logs}"
    );
    std::fs::remove_file(dir.join("corrupt.wasm")).unwrap();
    std::fs::remove_file(dir.join("corrupt.toml")).unwrap();

    // The manifest first, then the component: nothing happens until the pair is complete.
    std::fs::write(
        dir.join("digest.toml"),
        "name = \"digest\"\nworld = \"consumer\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("digest.wasm"), DIGEST).unwrap();
    lookout_testkit::eventually(
        "digest loaded from the folder",
        Duration::from_secs(15),
        || async {
            (plugin_names(&host).await == ["redact", "digest", "early", "slo"]).then_some(())
        },
    )
    .await;

    // A broken version is refused; the running one stays.
    std::fs::write(dir.join("slo.wasm"), b"\0asm broken").unwrap();
    lookout_testkit::eventually(
        "the broken swap recorded as rejected",
        Duration::from_secs(15),
        || async {
            let list: Value = host.get_json("/api/v1/plugins").await?;
            list["history"]
                .as_array()?
                .iter()
                .any(|h| {
                    h["plugin"] == "slo" && h["outcome"] == "rejected" && h["source"] == "watch"
                })
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        plugin_names(&host).await,
        ["redact", "digest", "early", "slo"]
    );

    std::fs::remove_file(dir.join("digest.wasm")).unwrap();
    std::fs::remove_file(dir.join("digest.toml")).unwrap();
    lookout_testkit::eventually(
        "digest removed with its files",
        Duration::from_secs(15),
        || async { (plugin_names(&host).await == ["redact", "early", "slo"]).then_some(()) },
    )
    .await;
}

/// The running plugins as (name, author version).
async fn running_versions(host: &Host) -> Vec<(String, String)> {
    let list = plugin_list(host).await;
    list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["author_version"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The manifest of the digest consumer at author version `version`.
fn digest_manifest(version: &str) -> String {
    format!("name = \"digest\"\nworld = \"consumer\"\nversion = \"{version}\"\n")
}

/// Writes `dir/{stem}.wasm`, then its manifest `dir/{stem}.toml`.
fn write_pair(dir: &std::path::Path, stem: &str, manifest: &str, wasm: &[u8]) {
    std::fs::write(dir.join(format!("{stem}.wasm")), wasm).unwrap();
    std::fs::write(dir.join(format!("{stem}.toml")), manifest).unwrap();
}

fn pair(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// `plugins.state_dir`: what the API installed comes back after a restart — each plugin's
/// last version and the one before it (a rollback after the restart still works), the
/// sanitizer pushed over the configured one; a damaged kept file is reported and the last
/// good version runs; a plugin removed through the API stays removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_installed_through_the_api_survive_a_restart() {
    use lookout_artifacts::plugins::{ALLOWLIST, DIGEST};
    let dir = lookout_testkit::artifacts_dir().join("plugin-state");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state");
    let config = dir.join("lookout.toml");
    std::fs::write(
        &config,
        format!("[plugins]\nstate_dir = {:?}\n", state.to_str().unwrap()),
    )
    .unwrap();
    let start = || Host::start(LOOKOUT, &["--config", config.to_str().unwrap()]).unwrap();

    let mut host = start();
    for version in ["1.0.0", "2.0.0"] {
        assert_ok(put_plugin(&host, "digest", &digest_manifest(version), DIGEST).await).await;
    }
    assert_ok(put_plugin(&host, "allowlist", ALLOWLIST_MANIFEST, ALLOWLIST).await).await;
    let before = running_versions(&host).await;
    assert_eq!(before, pair(&[("allowlist", "1.0.0"), ("digest", "2.0.0")]));
    stop(&mut host);

    // Back after the restart, and the version before is the rollback target again.
    let mut host = start();
    assert_eq!(running_versions(&host).await, before);
    let logs = host.logs().join("\n");
    assert!(
        logs.contains("\"sanitizer\":\"allowlist\""),
        "the start line names the restored sanitizer: {logs}"
    );
    assert_ok(rollback(&host, "digest").await).await;
    assert_eq!(
        running_versions(&host).await,
        pair(&[("allowlist", "1.0.0"), ("digest", "1.0.0")])
    );
    stop(&mut host);

    // The rollback was kept: 1.0.0 is current on disk. Damage it: 2.0.0, the last good
    // version kept, runs instead, and the damage is reported by file.
    let current = state.join("plugins/digest/current.wasm");
    let mut bytes = std::fs::read(&current).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&current, bytes).unwrap();
    let mut host = start();
    assert_eq!(
        running_versions(&host).await,
        pair(&[("allowlist", "1.0.0"), ("digest", "2.0.0")])
    );
    let logs = host.logs().join("\n");
    assert!(
        logs.contains("a kept plugin version is damaged and skipped")
            && logs.contains("current.wasm does not match its checksum"),
        "the damage is reported: {logs}"
    );
    let list = plugin_list(&host).await;
    assert!(
        list["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["plugin"] == "digest"
                && h["outcome"] == "rejected"
                && h["source"] == "restored"
                && h["error"].as_str().unwrap_or("").contains("checksum")),
        "the damage is in the swap history: {list}"
    );

    // Removed through the API: gone after the next restart too.
    let r = remove_plugin(&host, "digest").await;
    assert_eq!(r.status(), 204);
    stop(&mut host);
    let host = start();
    assert_eq!(
        running_versions(&host).await,
        pair(&[("allowlist", "1.0.0")])
    );

    // A state folder that cannot be used stops the start, naming the setting.
    std::fs::write(dir.join("not-a-dir"), b"").unwrap();
    std::fs::write(
        &config,
        format!(
            "[plugins]\nstate_dir = {:?}\n",
            dir.join("not-a-dir/state").to_str().unwrap()
        ),
    )
    .unwrap();
    drop(host);
    let Err(err) = Host::start(LOOKOUT, &["--config", config.to_str().unwrap()]) else {
        panic!("a host started with an unusable plugins.state_dir");
    };
    assert!(format!("{err:#}").contains("plugins.state_dir"), "{err:#}");
}

/// Where the plugin folder and the kept state both name a plugin, the newer wins: a push
/// after the folder's file was written survives a restart; a file written after the push
/// (while the host was down) replaces the pushed version, and the kept one is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newer_of_the_plugin_folder_and_a_push_wins_at_start() {
    use lookout_artifacts::plugins::DIGEST;
    let dir = lookout_testkit::artifacts_dir().join("plugin-state-newer");
    let _ = std::fs::remove_dir_all(&dir);
    let folder = dir.join("plugins");
    std::fs::create_dir_all(&folder).unwrap();
    let config = dir.join("lookout.toml");
    std::fs::write(
        &config,
        format!(
            "[plugins]\nstate_dir = {:?}\ndir = {:?}\n",
            dir.join("state").to_str().unwrap(),
            folder.to_str().unwrap()
        ),
    )
    .unwrap();
    let write_folder = |version: &str| {
        std::fs::write(folder.join("digest.toml"), digest_manifest(version)).unwrap();
        std::fs::write(folder.join("digest.wasm"), DIGEST).unwrap();
    };
    let start = || Host::start(LOOKOUT, &["--config", config.to_str().unwrap()]).unwrap();
    write_folder("1.0.0");

    // Pushed after the folder's file: the push survives the restart.
    let mut host = start();
    assert_ok(put_plugin(&host, "digest", &digest_manifest("2.0.0"), DIGEST).await).await;
    stop(&mut host);
    let mut host = start();
    assert_eq!(
        running_versions(&host).await,
        pair(&[("redact", ""), ("digest", "2.0.0")])
    );
    stop(&mut host);

    // The folder's file written while the host was down: the folder wins.
    write_folder("3.0.0");
    let host = start();
    assert_eq!(
        running_versions(&host).await,
        pair(&[("redact", ""), ("digest", "3.0.0")])
    );
    let logs = host.logs().join("\n");
    assert!(
        logs.contains("the plugin folder changed after this plugin was pushed through the API"),
        "{logs}"
    );
    assert!(
        !dir.join("state/plugins/digest").exists(),
        "the kept version is dropped"
    );

    // Pushed, then rolled back to the folder's version: nothing of the push comes back.
    let mut host = host;
    assert_ok(put_plugin(&host, "digest", &digest_manifest("4.0.0"), DIGEST).await).await;
    assert_ok(rollback(&host, "digest").await).await;
    stop(&mut host);
    let host = start();
    assert_eq!(
        running_versions(&host).await,
        pair(&[("redact", ""), ("digest", "3.0.0")])
    );
}
