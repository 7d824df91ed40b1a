//! The host-wide plugin budget (`[plugins.budget]`) on the real binary: a bad budget is
//! refused by `config check` naming the key; a push that does not fit the budget is refused
//! (422) saying which budget and by how much, and the running plugins stay; a live change the
//! running plugins do not fit is refused naming the key, and nothing changes.

use std::process::Command;

use lookout_artifacts::plugins::ERROR_COUNTER;
use lookout_testkit::Host;
use serde_json::json;

use crate::plugins::put_plugin;
use crate::{LOOKOUT, host_with_config};

fn consumer_manifest(name: &str, memory_mib: u32) -> String {
    format!(
        "name = \"{name}\"\nworld = \"consumer\"\nversion = \"0.1.0\"\n[limits]\nmax_memory_mib = {memory_mib}\n"
    )
}

async fn plugin_names(host: &Host) -> Vec<String> {
    let body = host.get_json("/api/v1/plugins").await.unwrap_or_default();
    let list = body.get("plugins").unwrap_or(&body);
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_bad_budget_is_refused_by_config_check_naming_the_key() {
    let path = lookout_testkit::artifacts_dir().join("budget-zero.toml");
    std::fs::write(&path, "[plugins.budget]\ntotal_memory_mib = 0\n").unwrap();
    let output = Command::new(LOOKOUT)
        .args(["config", "check"])
        .arg(&path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "accepted: {said}");
    assert!(said.contains("plugins.budget.total_memory_mib"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_over_the_budget_is_refused_saying_by_how_much() {
    // The sanitizer's 64 MiB and a 16 MiB consumer fit 96 MiB; a second 64 MiB one does not.
    let host = host_with_config(
        "budget-96.toml",
        "[plugins.budget]\ntotal_memory_mib = 96\n",
    );
    let fits = put_plugin(
        &host,
        "small",
        &consumer_manifest("small", 16),
        ERROR_COUNTER,
    )
    .await;
    assert_eq!(fits.status(), 200, "{}", fits.text().await.unwrap());
    let refused = put_plugin(&host, "big", &consumer_manifest("big", 64), ERROR_COUNTER).await;
    assert_eq!(refused.status(), 422);
    let said = refused.text().await.unwrap();
    assert!(said.contains("plugins.budget.total_memory_mib"), "{said}");
    assert!(said.contains("MiB"), "{said}");
    let names = plugin_names(&host).await;
    assert!(names.iter().any(|n| n == "small"), "{names:?}");
    assert!(!names.iter().any(|n| n == "big"), "{names:?}");

    // Lowering the budget below what runs is refused, naming the key; the budget stays.
    let response = host
        .http
        .patch(host.url("/api/v1/config"))
        .json(&json!({"plugins": {"budget": {"total_memory_mib": 32}}}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("plugins.budget"), "{body}");
    let again = put_plugin(&host, "tiny", &consumer_manifest("tiny", 8), ERROR_COUNTER).await;
    assert_eq!(
        again.status(),
        200,
        "the old budget still holds: {}",
        again.text().await.unwrap()
    );
}
