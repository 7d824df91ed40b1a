//! The command line: config checking, refusal of bad config, clean shutdown.

use std::process::Command;
use std::time::Duration;

use lookout_testkit::Host;

use crate::{LOOKOUT, default_host};

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let path = lookout_testkit::artifacts_dir().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A config with a typo or an out-of-range value is refused with the key named, and the
/// host does not start.
#[test]
fn invalid_config_is_refused_with_the_key_named() {
    for (name, text, named) in [
        ("typo.toml", "[bus]\nbatch_sise = 10\n", "`bus.batch_sise`"),
        (
            "type.toml",
            "[[pools]]\nname = \"p\"\napp = \"demo\"\nsize = \"two\"\n",
            "`pools[0].size`: invalid type",
        ),
        (
            "range.toml",
            "[bus.sampling]\ndefault_rate = 3.0\n",
            "bus.sampling.default_rate",
        ),
        (
            "plugin.toml",
            "[sanitizer.config]\nmode = \"scramble\"\n",
            "mode",
        ),
        (
            "missing.toml",
            "[sanitizer]\nplugin = \"/nonexistent/x.wasm\"\n",
            "sanitizer.plugin",
        ),
    ] {
        let path = write_config(name, text);
        let output = Command::new(LOOKOUT)
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{name} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(named), "{name}: {stderr}");

        let output = Command::new(LOOKOUT)
            .args(["config", "check"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!output.status.success(), "config check accepted {name}");
    }
    let example = lookout_testkit::repo_root().join("examples/lookout.toml");
    let output = Command::new(LOOKOUT)
        .args(["config", "check"])
        .arg(&example)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "examples/lookout.toml: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let good = write_config(
        "good.toml",
        "[bus.sampling]\ndefault_rate = 0.5\n[sanitizer.config]\nextra_keys = \"iban\"\n",
    );
    let output = Command::new(LOOKOUT)
        .args(["config", "check"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// SIGTERM stops the host cleanly and promptly.
#[test]
fn sigterm_stops_the_host_cleanly() {
    let mut host: Host = default_host();
    let status = host.terminate(Duration::from_secs(15)).unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(host.logs().iter().any(|l| l.contains("stopped")));
}

fn lookout(args: &[&str]) -> (bool, String) {
    let output = Command::new(LOOKOUT).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// `lookout plugin check` loads a plugin as a swap would and reports — finding the world
/// itself without a manifest, failing on a broken fixture or random bytes; `push`, `list`
/// and `rollback` drive a running host.
#[test]
fn plugin_cli_checks_pushes_lists_and_rolls_back() {
    let dir = lookout_testkit::artifacts_dir();
    let allowlist = dir.join("allowlist.wasm");
    std::fs::write(&allowlist, lookout_artifacts::plugins::ALLOWLIST).unwrap();
    let slo = dir.join("slo.wasm");
    std::fs::write(&slo, lookout_artifacts::plugins::SLO).unwrap();
    let junk = dir.join("junk.wasm");
    std::fs::write(&junk, b"\0asm but not really").unwrap();
    let example = lookout_testkit::repo_root().join("examples/plugins/allowlist.toml");
    let broken = write_config(
        "broken-fixture.toml",
        &std::fs::read_to_string(&example)
            .unwrap()
            .replace("user = \"[REDACTED]\"", "user = \"bob\""),
    );
    let (a, e, s, b, j) = (
        allowlist.to_str().unwrap(),
        example.to_str().unwrap(),
        slo.to_str().unwrap(),
        broken.to_str().unwrap(),
        junk.to_str().unwrap(),
    );

    let (ok, out) = lookout(&["plugin", "check", a, "--manifest", e]);
    assert!(ok, "{out}");
    assert!(
        out.contains("sanitizer world") && out.contains("fixtures 1 passed"),
        "{out}"
    );
    let (ok, out) = lookout(&["plugin", "check", s]);
    assert!(ok, "{out}");
    assert!(
        out.contains("metrics world") && out.contains("lookout_plugin_slo_requests_total"),
        "{out}"
    );
    let (ok, out) = lookout(&["plugin", "check", a, "--manifest", b]);
    assert!(!ok, "a failing fixture passed the check");
    assert!(out.contains("only listed keys keep their values"), "{out}");
    let (ok, out) = lookout(&["plugin", "check", j]);
    assert!(!ok && out.contains("not a loadable plugin"), "{out}");

    let host = default_host();
    let (ok, out) = lookout(&["plugin", "push", a, "--manifest", e, "--host", &host.base]);
    assert!(ok, "{out}");
    assert!(out.contains("allowlist version 2 is running"), "{out}");
    let (ok, out) = lookout(&["plugin", "list", "--host", &host.base]);
    assert!(
        ok && out.contains("allowlist") && out.contains("running"),
        "{out}"
    );
    let (ok, out) = lookout(&["plugin", "rollback", "allowlist", "--host", &host.base]);
    assert!(ok && out.contains("redact version 1 is running"), "{out}");
    let (ok, out) = lookout(&["plugin", "push", j, "--manifest", e, "--host", &host.base]);
    assert!(!ok && out.contains("422"), "{out}");
}

/// Compiled plugins are kept in the configured cache folder (so a restart skips compiling),
/// and `cache = false` keeps nothing.
#[test]
fn compiled_plugins_are_cached_on_disk_when_enabled() {
    let dir = lookout_testkit::artifacts_dir().join("plugin-cache");
    let _ = std::fs::remove_dir_all(&dir);
    let on = write_config(
        "cache-on.toml",
        &format!("[plugins]\ncache_dir = \"{}\"\n", dir.display()),
    );
    let host = Host::start(LOOKOUT, &["--config", on.to_str().unwrap()]).unwrap();
    drop(host);
    let files = walk(&dir);
    assert!(!files.is_empty(), "nothing cached in {}", dir.display());

    let off_dir = lookout_testkit::artifacts_dir().join("plugin-cache-off");
    let _ = std::fs::remove_dir_all(&off_dir);
    let off = write_config(
        "cache-off.toml",
        &format!(
            "[plugins]\ncache = false\ncache_dir = \"{}\"\n",
            off_dir.display()
        ),
    );
    drop(Host::start(LOOKOUT, &["--config", off.to_str().unwrap()]).unwrap());
    assert!(
        !off_dir.exists(),
        "cache = false still wrote {}",
        off_dir.display()
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
