//! The plugins installed through the API, kept on disk so a restart brings them back
//! (`plugins.state_dir`). The plugin folder and the configuration are durable already; what
//! only the API installed would otherwise be lost.
//!
//! Layout: `<dir>/sanitizer/` for the sanitizer (one slot, whatever its name) and
//! `<dir>/plugins/<name>/` for each consumer or metrics plugin. Each holds the current version
//! and the one before it (the rollback target), as `current.wasm`, `current.toml` and
//! `current.json` (sha256 of the component, when it was installed), and the same for
//! `previous`. Every file is written to a temporary name and renamed into place; the checksum
//! catches what a crash mid-write or a damaged disk left behind, and the previous version is
//! then restored instead.

use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::manifest::{Manifest, World};
use crate::stamp::{now_ms, sha256_hex};

/// Where the kept plugins live.
#[derive(Debug)]
pub struct PluginStore {
    dir: PathBuf,
    /// One change at a time: a rollback renames three files per version.
    writing: Mutex<()>,
}

/// One kept version, read back and checked.
#[derive(Clone, Debug)]
pub struct KeptVersion {
    pub manifest: Manifest,
    pub manifest_text: String,
    pub wasm: Vec<u8>,
    pub installed_at_ms: u64,
}

/// What the store holds for one slot: the versions that read back whole, and what was wrong
/// with those that did not (for the log).
#[derive(Debug)]
pub struct KeptSlot {
    /// `sanitizer` or the plugin's name.
    pub slot: String,
    pub current: Option<KeptVersion>,
    pub previous: Option<KeptVersion>,
    pub problems: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    sha256: String,
    installed_at_ms: u64,
}

const VERSIONS: [&str; 2] = ["current", "previous"];
const PARTS: [&str; 3] = ["wasm", "toml", "json"];

impl PluginStore {
    /// Opens (creating) the store at `dir`; fails if it cannot be written.
    pub fn open(dir: &Path) -> std::io::Result<PluginStore> {
        std::fs::create_dir_all(dir.join("plugins"))?;
        std::fs::create_dir_all(dir.join("sanitizer"))?;
        // Whoever can write here chooses what runs after the next restart: lookout's user only.
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        let probe = dir.join(".writable");
        std::fs::write(&probe, b"")?;
        std::fs::remove_file(&probe)?;
        Ok(PluginStore {
            dir: dir.to_path_buf(),
            writing: Mutex::new(()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn slot_dir(&self, world: World, name: &str) -> PathBuf {
        match world {
            World::Sanitizer => self.dir.join("sanitizer"),
            World::Consumer | World::Metrics => self.dir.join("plugins").join(name),
        }
    }

    /// Keeps a version just installed: it becomes current, the current one previous.
    pub fn keep(
        &self,
        world: World,
        name: &str,
        manifest_text: &str,
        wasm: &[u8],
    ) -> std::io::Result<()> {
        let _writing = self.writing.lock();
        let dir = self.slot_dir(world, name);
        std::fs::create_dir_all(&dir)?;
        if dir.join("current.json").exists() {
            for part in PARTS {
                rename_if_exists(
                    &dir.join(format!("current.{part}")),
                    &dir.join(format!("previous.{part}")),
                )?;
            }
        }
        let meta = Meta {
            sha256: sha256_hex(wasm),
            installed_at_ms: now_ms(),
        };
        write_atomic(&dir.join("current.wasm"), wasm)?;
        write_atomic(&dir.join("current.toml"), manifest_text.as_bytes())?;
        // Written last: a version without its json is not a version.
        write_atomic(
            &dir.join("current.json"),
            &serde_json::to_vec(&meta).map_err(std::io::Error::other)?,
        )
    }

    /// A rollback: the previous version becomes current and the current one previous. With
    /// no previous version kept, what the host rolled back to came from the plugin folder or
    /// the configuration, which bring it back themselves: the slot is forgotten.
    pub fn rolled_back(&self, world: World, name: &str) -> std::io::Result<()> {
        let dir = self.slot_dir(world, name);
        if !dir.join("previous.json").exists() {
            return self.forget(world, name);
        }
        let _writing = self.writing.lock();
        for part in PARTS {
            let current = dir.join(format!("current.{part}"));
            let previous = dir.join(format!("previous.{part}"));
            let aside = dir.join(format!("swap.{part}"));
            rename_if_exists(&current, &aside)?;
            rename_if_exists(&previous, &current)?;
            rename_if_exists(&aside, &previous)?;
        }
        Ok(())
    }

    /// Forgets a slot: the plugin was removed, or something more durable (the plugin folder,
    /// the configuration) installed its successor.
    pub fn forget(&self, world: World, name: &str) -> std::io::Result<()> {
        let _writing = self.writing.lock();
        let dir = self.slot_dir(world, name);
        match world {
            // The sanitizer's folder stays (empty); a plugin's goes.
            World::Sanitizer => {
                for version in VERSIONS {
                    for part in PARTS {
                        remove_if_exists(&dir.join(format!("{version}.{part}")))?;
                    }
                }
                Ok(())
            }
            World::Consumer | World::Metrics => match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
        }
    }

    /// Every slot kept, the sanitizer's first, each version checked against its checksum and
    /// its manifest parsed.
    pub fn slots(&self) -> Vec<KeptSlot> {
        let mut dirs = vec![("sanitizer".to_string(), self.dir.join("sanitizer"))];
        if let Ok(entries) = std::fs::read_dir(self.dir.join("plugins")) {
            let mut names: Vec<(String, PathBuf)> = entries
                .flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
                .collect();
            names.sort();
            dirs.extend(names);
        }
        dirs.into_iter()
            .filter_map(|(slot, dir)| {
                let mut kept = KeptSlot {
                    slot,
                    current: None,
                    previous: None,
                    problems: Vec::new(),
                };
                for version in VERSIONS {
                    if !PARTS
                        .iter()
                        .any(|p| dir.join(format!("{version}.{p}")).exists())
                    {
                        continue;
                    }
                    match read_version(&dir, version) {
                        Ok(v) if version == "current" => kept.current = Some(v),
                        Ok(v) => kept.previous = Some(v),
                        Err(why) => kept.problems.push(format!("{version} version: {why}")),
                    }
                }
                (kept.current.is_some() || kept.previous.is_some() || !kept.problems.is_empty())
                    .then_some(kept)
            })
            .collect()
    }
}

fn read_version(dir: &Path, version: &str) -> Result<KeptVersion, String> {
    let read = |part: &str| {
        let path = dir.join(format!("{version}.{part}"));
        std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let meta: Meta = serde_json::from_slice(&read("json")?)
        .map_err(|e| format!("{version}.json is damaged: {e}"))?;
    let wasm = read("wasm")?;
    let sha256 = sha256_hex(&wasm);
    if sha256 != meta.sha256 {
        return Err(format!(
            "{version}.wasm does not match its checksum (sha256 {sha256}, kept as {})",
            meta.sha256
        ));
    }
    let manifest_text =
        String::from_utf8(read("toml")?).map_err(|_| format!("{version}.toml is not UTF-8"))?;
    let manifest = Manifest::parse(&manifest_text)
        .map_err(|e| format!("{version}.toml is not a valid manifest: {e}"))?;
    Ok(KeptVersion {
        manifest,
        manifest_text,
        wasm,
        installed_at_ms: meta.installed_at_ms,
    })
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn rename_if_exists(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn remove_if_exists(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
