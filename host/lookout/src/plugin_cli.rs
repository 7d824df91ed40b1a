//! `lookout plugin …`: check a plugin locally, or push, list and roll back plugins on a
//! running host through its admin API (the same code path as `PUT /api/v1/plugins/{name}`).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use lookout_wasm::{Manifest, Runtime, World};
use prometheus::Registry;
use serde_json::Value;

/// Default host for push, list and rollback.
pub const DEFAULT_HOST: &str = "http://127.0.0.1:8787";

fn read_manifest(path: &Path) -> anyhow::Result<Manifest> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read manifest {}", path.display()))?;
    Manifest::parse(&text).with_context(|| format!("invalid manifest {}", path.display()))
}

/// Loads a plugin exactly as a swap would, without a host, and prints what it found. Without
/// a manifest, finds the world the component implements. Its names are checked as a host
/// with the default configuration would check them (lookout's own names, the default
/// sanitizer's); what other plugins a host runs is for the push to find.
pub fn check(wasm_path: &Path, manifest: Option<&PathBuf>) -> anyhow::Result<()> {
    let wasm =
        std::fs::read(wasm_path).with_context(|| format!("cannot read {}", wasm_path.display()))?;
    let runtime = Runtime::new(&Registry::new())?;
    let sanitizer = crate::config::Config::default().sanitizer_name();
    let manifest = match manifest {
        Some(path) => read_manifest(path)?,
        None => {
            let stem = wasm_path
                .file_stem()
                .map(|s| s.to_string_lossy().replace('_', "-"))
                .unwrap_or_default();
            let mut errors = Vec::new();
            let mut found = None;
            for world in [World::Sanitizer, World::Consumer, World::Metrics] {
                let manifest = Manifest::new(&stem, world);
                match lookout_wasm::check(&runtime, &manifest, &wasm, &sanitizer) {
                    Ok(_) => {
                        found = Some(manifest);
                        break;
                    }
                    Err(e) => errors.push(e.to_string()),
                }
            }
            match found {
                Some(m) => m,
                None => bail!(
                    "{} is not a loadable plugin of any world:\n  {}",
                    wasm_path.display(),
                    errors.join("\n  ")
                ),
            }
        }
    };
    let report = lookout_wasm::check(&runtime, &manifest, &wasm, &sanitizer)?;
    println!("{}: ok", wasm_path.display());
    println!(
        "  plugin   {} ({} world)",
        report.name,
        report.world.as_str()
    );
    println!("  sha256   {}", report.sha256);
    println!("  size     {} bytes", report.bytes);
    println!("  fixtures {} passed", report.fixtures_passed);
    for metric in &report.metrics {
        println!("  metric   {metric}");
    }
    Ok(())
}

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()?)
}

fn with_token(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match std::env::var("LOOKOUT_ADMIN_TOKEN") {
        Ok(token) if !token.is_empty() => request.bearer_auth(token),
        _ => request,
    }
}

/// Turns a host's answer into a result: its JSON on success, its `error` as the message.
async fn answer(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let reason = body["error"]
            .as_str()
            .map_or_else(|| body.to_string(), str::to_string);
        bail!("the host answered {status}: {reason}");
    }
    Ok(body)
}

pub async fn push(host: &str, wasm_path: &Path, manifest_path: &Path) -> anyhow::Result<()> {
    let manifest_text = std::fs::read_to_string(manifest_path)
        .with_context(|| format!("cannot read manifest {}", manifest_path.display()))?;
    let manifest = Manifest::parse(&manifest_text)
        .with_context(|| format!("invalid manifest {}", manifest_path.display()))?;
    let wasm =
        std::fs::read(wasm_path).with_context(|| format!("cannot read {}", wasm_path.display()))?;
    let form = reqwest::multipart::Form::new()
        .part("manifest", reqwest::multipart::Part::text(manifest_text))
        .part("wasm", reqwest::multipart::Part::bytes(wasm));
    let url = format!(
        "{}/api/v1/plugins/{}",
        host.trim_end_matches('/'),
        manifest.name
    );
    let response = with_token(client()?.put(&url).multipart(form))
        .send()
        .await
        .with_context(|| format!("cannot reach {host}"))?;
    let info = answer(response).await?;
    println!(
        "{} version {} is running ({})",
        info["name"].as_str().unwrap_or("?"),
        info["version"],
        info["sha256"].as_str().unwrap_or("?")
    );
    Ok(())
}

pub async fn list(host: &str) -> anyhow::Result<()> {
    let url = format!("{}/api/v1/plugins", host.trim_end_matches('/'));
    let response = client()?
        .get(&url)
        .send()
        .await
        .with_context(|| format!("cannot reach {host}"))?;
    let body = answer(response).await?;
    println!(
        "{:<20} {:<10} {:>7}  {:<12} {:<12}",
        "NAME", "WORLD", "VERSION", "STATE", "SHA256"
    );
    for plugin in body["plugins"].as_array().into_iter().flatten() {
        println!(
            "{:<20} {:<10} {:>7}  {:<12} {:<12}",
            plugin["name"].as_str().unwrap_or("?"),
            plugin["world"].as_str().unwrap_or("?"),
            plugin["version"].to_string(),
            plugin["status"]["state"].as_str().unwrap_or("?"),
            plugin["sha256"]
                .as_str()
                .unwrap_or("?")
                .chars()
                .take(12)
                .collect::<String>(),
        );
    }
    Ok(())
}

pub async fn rollback(host: &str, name: &str) -> anyhow::Result<()> {
    let url = format!(
        "{}/api/v1/plugins/{name}/rollback",
        host.trim_end_matches('/')
    );
    let response = with_token(client()?.post(&url))
        .send()
        .await
        .with_context(|| format!("cannot reach {host}"))?;
    let info = answer(response).await?;
    println!(
        "{} version {} is running",
        info["name"].as_str().unwrap_or("?"),
        info["version"]
    );
    Ok(())
}

/// `lookout config apply FILE`: sends the file to a running host, which checks it whole and
/// applies it (or names every invalid field and changes nothing).
pub async fn apply_config(host: &str, file: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let url = format!("{}/api/v1/config", host.trim_end_matches('/'));
    let response = with_token(client()?.put(&url).body(text))
        .send()
        .await
        .with_context(|| format!("cannot reach {host}"))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        let changed = body["changed"].as_array().cloned().unwrap_or_default();
        println!("version {}: {} change(s)", body["version"], changed.len());
        for c in changed {
            println!(
                "  {}: {} -> {}",
                c["field"].as_str().unwrap_or("?"),
                c["from"],
                c["to"]
            );
        }
        return Ok(());
    }
    let mut reasons = Vec::new();
    for i in body["invalid"].as_array().cloned().unwrap_or_default() {
        reasons.push(format!(
            "  {}: {}",
            i["field"].as_str().unwrap_or("?"),
            i["reason"].as_str().unwrap_or("?")
        ));
    }
    let message = body["error"].as_str().unwrap_or("refused").to_string();
    bail!(
        "the host answered {status}: {message}\n{}",
        reasons.join("\n")
    )
}
