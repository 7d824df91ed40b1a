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
        ("typo.toml", "[bus]\nbatch_sise = 10\n", "batch_sise"),
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
