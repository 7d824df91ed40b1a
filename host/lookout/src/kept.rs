//! At start, the plugins the API installed before the restart come back from
//! `plugins.state_dir` (`lookout_wasm::PluginStore`): for each, the version before the last
//! and the last, so a rollback after the restart goes where it went before.
//!
//! The configuration and the plugin folder are durable too; where one of them and the store
//! both name a plugin, the newer wins: a push through the API after the file was written is
//! what ran last, and a file changed after the push (while the host was down) is what the
//! operator wants now. A damaged version (checksum, unreadable or invalid manifest, or it no
//! longer loads) is reported and skipped: the last good one runs, and the host starts either
//! way.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lookout_wasm::{KeptSlot, KeptVersion, Origin, PluginRegistry, PluginStore, World};

use crate::watch::PluginDir;

/// Restores what `store` holds into `plugins`; what it did is in the log.
pub fn restore(
    plugins: &PluginRegistry,
    store: &PluginStore,
    plugin_dir: Option<&PluginDir>,
    config_file: Option<&Path>,
) {
    for slot in store.slots() {
        // Named as the other version names it, if one reads back.
        let plugin = slot
            .current
            .as_ref()
            .or(slot.previous.as_ref())
            .map_or(slot.slot.clone(), |v| v.manifest.name.clone());
        for problem in &slot.problems {
            tracing::error!(target: "lookout::plugin", slot = %slot.slot, dir = %store.dir().display(), problem = %problem, "a kept plugin version is damaged and skipped");
            plugins.record_rejected(
                &plugin,
                "restored",
                format!("kept version damaged: {problem}"),
            );
        }
        let Some(last) = slot.current.as_ref().or(slot.previous.as_ref()) else {
            continue;
        };
        let world = last.manifest.world;
        let name = last.manifest.name.clone();
        let pushed_at = UNIX_EPOCH + Duration::from_millis(last.installed_at_ms);
        let durable_at = match world {
            World::Sanitizer => config_file.and_then(modified),
            World::Consumer | World::Metrics => plugin_dir.and_then(|d| d.changed_at(&name)),
        };
        if durable_at.is_some_and(|at| at > pushed_at) {
            let from = if world == World::Sanitizer {
                "configuration file"
            } else {
                "plugin folder"
            };
            tracing::info!(target: "lookout::plugin", plugin = %name, from, "the {from} changed after this plugin was pushed through the API; the {from}'s version stays and the pushed one is dropped");
            if let Err(e) = store.forget(world, &name) {
                tracing::warn!(target: "lookout::plugin", plugin = %name, error = %e, "cannot drop the kept version");
            }
            continue;
        }
        restore_slot(plugins, &slot);
    }
}

/// Installs the previous version, then the current one: the last good one of them runs.
fn restore_slot(plugins: &PluginRegistry, slot: &KeptSlot) {
    let install = |version: &KeptVersion, which: &str| match plugins.install_from(
        version.manifest.clone(),
        &version.wasm,
        Origin::Restored,
        "restored",
    ) {
        Ok(info) => {
            tracing::info!(target: "lookout::plugin", plugin = %info.name, which, sha256 = %info.sha256, "plugin installed through the API before the restart restored");
            true
        }
        Err(e) => {
            tracing::error!(target: "lookout::plugin", plugin = %version.manifest.name, which, error = %e, "a kept plugin version no longer loads and is skipped");
            false
        }
    };
    let previous_ok = slot
        .previous
        .as_ref()
        .is_some_and(|v| install(v, "previous"));
    let current_ok = slot.current.as_ref().is_some_and(|v| install(v, "current"));
    if !current_ok && previous_ok {
        tracing::warn!(target: "lookout::plugin", slot = %slot.slot, "the last version pushed through the API could not be restored; the one before it (its last good version) runs");
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
