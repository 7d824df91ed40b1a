//! `lookout serve --plugins DIR`: every `<stem>.wasm` with a `<stem>.toml` manifest beside it
//! is a plugin. All are loaded at start (a bad one is logged, naming it, and skipped); then the
//! folder is watched, and a changed pair is swapped in — through the same registry path as the
//! API, so a bad file is refused and changes nothing — while a removed pair's plugin is
//! removed. Changes are debounced so a copy in progress is read once it is complete.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use lookout_wasm::{Manifest, Origin, PluginRegistry};
use notify::{RecursiveMode, Watcher};
use parking_lot::Mutex;

/// Quiet time after the last change before a folder change is acted on.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(300);

/// The watched plugin folder; dropping it stops watching.
pub struct PluginDir {
    dir: PathBuf,
    plugins: Arc<PluginRegistry>,
    /// Stem → plugin name, of the pairs loaded from the folder.
    loaded: Arc<Mutex<HashMap<String, String>>>,
    _watcher: notify::RecommendedWatcher,
}

fn pair(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{stem}.wasm")),
        dir.join(format!("{stem}.toml")),
    )
}

fn read_manifest(dir: &Path, stem: &str) -> anyhow::Result<Manifest> {
    let (_, manifest_path) = pair(dir, stem);
    let text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("cannot read {}", manifest_path.display()))?;
    Manifest::parse(&text).with_context(|| format!("invalid manifest {}", manifest_path.display()))
}

/// Installs one pair, unless its plugin is turned off (`plugins.disabled`: `None`); the
/// error names the files.
fn install(
    plugins: &PluginRegistry,
    dir: &Path,
    stem: &str,
    source: &str,
    origin: Origin<'_>,
) -> anyhow::Result<Option<String>> {
    let (wasm_path, _) = pair(dir, stem);
    let manifest = read_manifest(dir, stem)?;
    let name = manifest.name.clone();
    if plugins.is_disabled(&name) {
        tracing::info!(target: "lookout::plugin", plugin = %name, file = %wasm_path.display(), "plugin not loaded: turned off by plugins.disabled");
        return Ok(None);
    }
    let wasm = std::fs::read(&wasm_path)
        .with_context(|| format!("cannot read {}", wasm_path.display()))?;
    plugins
        .install_from(manifest, &wasm, origin, source)
        .with_context(|| format!("plugin {}", wasm_path.display()))?;
    Ok(Some(name))
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
            // A broken pair is reported and skipped: the host starts with the rest (a start
            // that depends on every file in a folder being good would turn one bad copy into
            // an outage). A later good copy of it is picked up by the watch.
            match install(&plugins, &dir, &stem, "startup", Origin::Folder) {
                Ok(Some(name)) => {
                    loaded.insert(stem, name);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(target: "lookout::plugin", file = %dir.join(format!("{stem}.wasm")).display(), error = format!("{e:#}"), "plugin in the folder not loaded at start; the host starts without it")
                }
            }
        }
        let count = loaded.len();
        let loaded = Arc::new(Mutex::new(loaded));
        let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
        let mut watcher =
            notify::recommended_watcher(tx).context("cannot watch the plugin folder")?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("cannot watch {}", dir.display()))?;
        tracing::info!(target: "lookout::plugin", dir = %dir.display(), plugins = count, "watching the plugin folder");
        let (thread_dir, thread_plugins, thread_loaded) =
            (dir.clone(), plugins.clone(), loaded.clone());
        std::thread::Builder::new().name("lookout-plugin-dir".into()).spawn(move || {
            let (dir, plugins, loaded) = (thread_dir, thread_plugins, thread_loaded);
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
                        match install(&plugins, &dir, &stem, "watch", Origin::Folder) {
                            Ok(Some(name)) => {
                                loaded.lock().insert(stem, name);
                            }
                            Ok(None) => {}
                            Err(e) => tracing::error!(target: "lookout::plugin", error = format!("{e:#}"), "plugin folder change refused; the running version stays"),
                        }
                    } else if let Some(name) = loaded.lock().get(&stem).cloned() {
                        match plugins.remove(&name, "watch") {
                            Ok(()) => {
                                loaded.lock().remove(&stem);
                                tracing::info!(target: "lookout::plugin", plugin = %name, "plugin removed: its files left the plugin folder");
                            }
                            Err(e) => tracing::error!(target: "lookout::plugin", plugin = %name, error = %e, "plugin files removed, but the plugin stays"),
                        }
                    }
                }
            }
        })?;
        Ok(PluginDir {
            dir,
            plugins,
            loaded,
            _watcher: watcher,
        })
    }

    /// When the folder's files of plugin `name` last changed, if the folder loaded it.
    pub fn changed_at(&self, name: &str) -> Option<std::time::SystemTime> {
        let loaded = self.loaded.lock();
        let stem = loaded.iter().find(|(_, n)| *n == name)?.0;
        let (wasm, manifest) = pair(&self.dir, stem);
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        modified(&wasm).into_iter().chain(modified(&manifest)).max()
    }

    /// Loads the folder's plugins named in `names` (just turned on again). On an error the
    /// ones it loaded are removed again, and the error names the file.
    pub fn install_named(&self, names: &BTreeSet<String>, source: &str) -> anyhow::Result<()> {
        let mut done: Vec<(String, String)> = Vec::new();
        let result = (|| {
            for stem in stems(&self.dir)? {
                // A pair that does not parse is not one of them; the watcher reports it.
                let Ok(manifest) = read_manifest(&self.dir, &stem) else {
                    continue;
                };
                if !names.contains(&manifest.name) {
                    continue;
                }
                // Loaded again as the folder has it, not a new version: what the store keeps
                // stays (a refused config change undone must not lose an API push).
                if let Some(name) =
                    install(&self.plugins, &self.dir, &stem, source, Origin::Restored)?
                {
                    done.push((stem, name));
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                self.loaded.lock().extend(done);
                Ok(())
            }
            Err(e) => {
                for (_, name) in done {
                    let _ = self.plugins.remove(&name, source);
                }
                Err(e)
            }
        }
    }
}
