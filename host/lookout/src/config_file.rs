//! `lookout serve --config FILE`: the file is watched, and each change is applied through the
//! same path as `PATCH /api/v1/config` (checked whole; a refused change leaves the running
//! config as it was and is logged with every invalid field). Apart from the plugin folder's
//! watcher (`watch.rs`) because it feeds the live config, which itself holds the plugin
//! folder: one file each way keeps the imports from going round in a circle.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;

use anyhow::Context;
use notify::{RecursiveMode, Watcher};

use crate::live::LiveConfig;
use crate::watch::DEBOUNCE;

/// Watches the config file the host was started with: each change is applied through the
/// same path as the API (checked whole; refused changes leave the running config and are
/// logged with every invalid field).
pub struct ConfigFile {
    _watcher: notify::RecommendedWatcher,
}

impl ConfigFile {
    pub fn start(live: Arc<LiveConfig>, file: &Path) -> anyhow::Result<ConfigFile> {
        // Not canonicalized: the path may be a symlink that is repointed — Kubernetes mounts a
        // ConfigMap's file as `lookout.toml -> ..data/lookout.toml` and updates it by swapping
        // `..data`. Editors replace files (write a copy, rename it over). Either way something
        // changes in the folder: watch it, and on any change read the file and apply it if its
        // text is not what was last seen.
        let file =
            std::path::absolute(file).with_context(|| format!("config file {}", file.display()))?;
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut seen = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read config file {}", file.display()))?;
        let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
        let mut watcher =
            notify::recommended_watcher(tx).context("cannot watch the config file")?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("cannot watch {}", dir.display()))?;
        std::thread::Builder::new()
            .name("lookout-config-file".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    while rx.recv_timeout(DEBOUNCE).is_ok() {}
                    let Ok(text) = std::fs::read_to_string(&file) else {
                        tracing::error!(target: "lookout::config", file = %file.display(), "the config file cannot be read; the running config stays");
                        continue;
                    };
                    if text == seen {
                        continue;
                    }
                    seen = text;
                    match live.apply_toml(&seen, "file") {
                        Ok(applied) => tracing::info!(target: "lookout::config", file = %file.display(), version = applied.version, changes = applied.changed.len(), "config file applied"),
                        Err(invalid) => {
                            let invalid: Vec<String> = invalid.iter().map(|i| format!("{}: {}", i.field, i.reason)).collect();
                            tracing::error!(target: "lookout::config", file = %file.display(), invalid = %invalid.join("; "), "config file change refused; the running config stays")
                        }
                    }
                }
            })?;
        Ok(ConfigFile { _watcher: watcher })
    }
}
