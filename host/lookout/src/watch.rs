//! `lookout serve --plugins DIR`: every `<stem>.wasm` with a `<stem>.toml` manifest beside it
//! is a plugin. All are loaded at start (a bad one stops the start, naming it); then the
//! folder is watched, and a changed pair is swapped in — through the same registry path as the
//! API, so a bad file is refused and changes nothing — while a removed pair's plugin is
//! removed. Changes are debounced so a copy in progress is read once it is complete.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use lookout_wasm::{Manifest, PluginRegistry};
use notify::{RecursiveMode, Watcher};

/// Quiet time after the last change before a folder change is acted on.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Keeps the watcher alive; dropping it stops watching.
pub struct PluginDir {
    _watcher: notify::RecommendedWatcher,
}

fn pair(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{stem}.wasm")),
        dir.join(format!("{stem}.toml")),
    )
}

/// Installs one pair; the error names the files.
fn install(
    plugins: &PluginRegistry,
    dir: &Path,
    stem: &str,
    source: &str,
) -> anyhow::Result<String> {
    let (wasm_path, manifest_path) = pair(dir, stem);
    let text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("cannot read {}", manifest_path.display()))?;
    let manifest = Manifest::parse(&text)
        .with_context(|| format!("invalid manifest {}", manifest_path.display()))?;
    let wasm = std::fs::read(&wasm_path)
        .with_context(|| format!("cannot read {}", wasm_path.display()))?;
    let name = manifest.name.clone();
    plugins
        .install(manifest, &wasm, source)
        .with_context(|| format!("plugin {}", wasm_path.display()))?;
    Ok(name)
}

fn stems(dir: &Path) -> anyhow::Result<BTreeSet<String>> {
    let mut stems = BTreeSet::new();
    for entry in std::fs::read_dir(dir)
        .with_context(|| format!("cannot read plugin folder {}", dir.display()))?
    {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "wasm")
            && path.with_extension("toml").exists()
            && let Some(stem) = path.file_stem()
        {
            stems.insert(stem.to_string_lossy().into_owned());
        }
    }
    Ok(stems)
}

impl PluginDir {
    /// Loads every plugin in `dir`, then watches it.
    pub fn start(plugins: Arc<PluginRegistry>, dir: &Path) -> anyhow::Result<PluginDir> {
        let dir = dir
            .canonicalize()
            .with_context(|| format!("plugin folder {}", dir.display()))?;
        let mut loaded: HashMap<String, String> = HashMap::new();
        for stem in stems(&dir)? {
            let name = install(&plugins, &dir, &stem, "startup")?;
            loaded.insert(stem, name);
        }
        let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
        let mut watcher =
            notify::recommended_watcher(tx).context("cannot watch the plugin folder")?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("cannot watch {}", dir.display()))?;
        tracing::info!(target: "lookout::plugin", dir = %dir.display(), plugins = loaded.len(), "watching the plugin folder");
        std::thread::Builder::new().name("lookout-plugin-dir".into()).spawn(move || {
            // Ends when the watcher (and with it the sender) is dropped.
            while let Ok(first) = rx.recv() {
                let mut changed = BTreeSet::new();
                let mut note = |event: notify::Result<notify::Event>| {
                    for path in event.map(|e| e.paths).unwrap_or_default() {
                        if path.extension().is_some_and(|e| e == "wasm" || e == "toml")
                            && let Some(stem) = path.file_stem() {
                                changed.insert(stem.to_string_lossy().into_owned());
                            }
                    }
                };
                note(first);
                while let Ok(more) = rx.recv_timeout(DEBOUNCE) {
                    note(more);
                }
                for stem in changed {
                    let (wasm, manifest) = pair(&dir, &stem);
                    if wasm.exists() && manifest.exists() {
                        match install(&plugins, &dir, &stem, "watch") {
                            Ok(name) => {
                                loaded.insert(stem, name);
                            }
                            Err(e) => tracing::error!(target: "lookout::plugin", error = format!("{e:#}"), "plugin folder change refused; the running version stays"),
                        }
                    } else if let Some(name) = loaded.get(&stem).cloned() {
                        match plugins.remove(&name, "watch") {
                            Ok(()) => {
                                loaded.remove(&stem);
                                tracing::info!(target: "lookout::plugin", plugin = %name, "plugin removed: its files left the plugin folder");
                            }
                            Err(e) => tracing::error!(target: "lookout::plugin", plugin = %name, error = %e, "plugin files removed, but the plugin stays"),
                        }
                    }
                }
            }
        })?;
        Ok(PluginDir { _watcher: watcher })
    }
}

/// Watches the config file the host was started with: each change is applied through the
/// same path as the API (checked whole; refused changes leave the running config and are
/// logged with every invalid field).
pub struct ConfigFile {
    _watcher: notify::RecommendedWatcher,
}

impl ConfigFile {
    pub fn start(live: Arc<crate::live::LiveConfig>, file: &Path) -> anyhow::Result<ConfigFile> {
        let file = file
            .canonicalize()
            .with_context(|| format!("config file {}", file.display()))?;
        // Editors replace files (write a copy, rename it over): watch the folder, pick the file.
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
        let mut watcher =
            notify::recommended_watcher(tx).context("cannot watch the config file")?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("cannot watch {}", dir.display()))?;
        std::thread::Builder::new()
            .name("lookout-config-file".into())
            .spawn(move || {
                let ours = |e: &notify::Result<notify::Event>| {
                    e.as_ref().is_ok_and(|e| e.paths.iter().any(|p| p == &file))
                };
                while let Ok(first) = rx.recv() {
                    let mut hit = ours(&first);
                    while let Ok(more) = rx.recv_timeout(DEBOUNCE) {
                        hit |= ours(&more);
                    }
                    if !hit {
                        continue;
                    }
                    let Ok(text) = std::fs::read_to_string(&file) else {
                        tracing::error!(target: "lookout::config", file = %file.display(), "the config file cannot be read; the running config stays");
                        continue;
                    };
                    match live.apply_toml(&text, "file") {
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
