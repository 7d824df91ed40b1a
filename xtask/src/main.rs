//! Build orchestration for lookout, run as `cargo xtask <command>`:
//!
//! - `setup`: the pinned toolchain and its wasm targets, Debian's chromium (for the browser
//!   tests), prometheus (promtool) and nats-server, the browser driver's npm package, and the Python tools
//!   of tests/python-requirements.txt (kubernetes-validate, componentize-py) in a virtualenv
//!   at `<target>/py`. Idempotent; installs only what is missing.
//! - `test`: `setup`, then formatting, clippy, and every test: the host workspace and the
//!   plugins' own unit tests. This is what CI runs (`.ci/run`).
//! - `demo`: builds lookout, starts `lookout serve` with the example consumer and metrics
//!   plugins in a watched folder, and a publisher that sends a steady stream of realistic
//!   events (some with secrets in them); prints the dashboard URL. SIGTERM, SIGINT or SIGHUP
//!   to xtask stops the publisher and the host with it.
//! - `bench`: every benchmark (P1–P5 of docs/performance.md) and the load test, in release
//!   with debug info (the `bench` profile: what is installed has none), one after the other; prints their tables, then one summary table side by side (also
//!   written to `target/bench-summary.md`).
//! - `load [--secs N]`: the load test alone, in release, for N seconds (default 60).
//! - `soak [--secs N]`: the soak test under faults (worker kills, sanitizer swaps, a
//!   trapping consumer, config changes, a slow stream client), in release, N seconds.
//! - `fuzz [--secs N] [TARGET…]`: the fuzz targets of `tests/fuzz`, N seconds each
//!   (default 300); `test` runs each for 15 s.
//! - `audit`: cargo-deny over every lock file, RustSec advisories included (needs
//!   github.com; `test` runs the license, ban and source checks, which do not).

mod deny;
mod fuzz;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

const WASM_TARGETS: &[&str] = &["wasm32-wasip2", "wasm32-unknown-unknown"];
const DEMO_LISTEN: &str = "127.0.0.1:8787";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = repo_root();
    match args.first().map(String::as_str) {
        Some("setup") => setup(&root, true),
        Some("test") => test(&root),
        Some("demo") => demo(
            &root,
            args.get(1).map(String::as_str).unwrap_or(DEMO_LISTEN),
        ),
        Some("bench") => bench(&root),
        Some(which @ ("load" | "soak")) => {
            let secs = match args.get(1).map(String::as_str) {
                None => 60,
                Some("--secs") => args
                    .get(2)
                    .and_then(|s| s.parse().ok())
                    .context("--secs takes a number of seconds")?,
                Some(other) => bail!("unknown argument {other:?}: cargo xtask {which} [--secs N]"),
            };
            setup(&root, false)?;
            if which == "load" {
                load(&root, secs, &mut Vec::new())
            } else {
                long_e2e(&root, "soak::", "LOOKOUT_SOAK_SECS", secs, &mut Vec::new())
            }
        }
        Some("audit") => deny::deny(&root, true),
        Some("fuzz") => {
            let (secs, targets) = match args.get(1).map(String::as_str) {
                Some("--secs") => (
                    args.get(2)
                        .and_then(|s| s.parse().ok())
                        .context("--secs takes a number of seconds")?,
                    &args[3..],
                ),
                _ => (300, &args[1..]),
            };
            fuzz::fuzz(&root, secs, targets)
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <setup|test|demo [ADDR]|bench|load [--secs N]|soak [--secs N]|fuzz [--secs N] [TARGET…]|audit>"
            );
            std::process::exit(2);
        }
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent")
        .to_path_buf()
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Makes `cargo <subcommand>` the cargo plugin `package` at `version`, building it from
/// crates.io when it is missing or another version.
fn cargo_tool(subcommand: &str, package: &str, version: &str) -> anyhow::Result<()> {
    let installed = cargo()
        .args([subcommand, "--version"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if installed.is_some_and(|v| v.contains(version)) {
        return Ok(());
    }
    run(cargo().args(["install", "--locked", "--version", version, package]))
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The rust targets always; the browser-test tools when `browser` is set.
fn setup(root: &Path, browser: bool) -> anyhow::Result<()> {
    // `rustup toolchain install` in the root reads rust-toolchain.toml and adds its targets
    // to an already-installed toolchain, which a plain build does not do.
    let installed = Command::new("rustup")
        .current_dir(root)
        .args(["target", "list", "--installed"])
        .output();
    let missing = match &installed {
        Ok(out) => {
            let list = String::from_utf8_lossy(&out.stdout);
            WASM_TARGETS
                .iter()
                .any(|t| !list.lines().any(|l| l.trim() == *t))
        }
        Err(_) => true,
    };
    if missing {
        run(Command::new("rustup")
            .current_dir(root)
            .args(["toolchain", "install"]))?;
        run(Command::new("rustup")
            .current_dir(root)
            .args(["target", "add"])
            .args(WASM_TARGETS))?;
    }
    // Debian packages: python3 runs the pools' workers (demo and tests); prometheus (with
    // promtool) checks and scrapes /metrics in the tests; chromium drives the dashboard's
    // browser test.
    let mut packages: Vec<&str> = Vec::new();
    let runs = |program: &str| {
        Command::new(program)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !runs("python3") {
        packages.push("python3");
    }
    // The Python tools' virtualenv needs the venv module (Debian ships it apart).
    let venv_ok = Command::new("python3")
        .args(["-m", "venv", "--help"])
        .output()
        .is_ok_and(|o| o.status.success());
    if browser && !venv_ok {
        packages.push("python3-venv");
    }
    if browser && !(runs("promtool") && runs("prometheus")) {
        packages.push("prometheus");
    }
    // nats-server: the broker of the multi-host tests (host/lookout/tests/e2e/nats.rs).
    if browser && !runs("nats-server") {
        packages.push("nats-server");
    }
    // openssl makes the TLS test's certificates.
    let openssl = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if browser && !openssl {
        packages.push("openssl");
    }
    if browser && !Path::new("/usr/bin/chromium").exists() {
        packages.extend(["chromium", "chromium-driver"]);
    }
    if !packages.is_empty() {
        let sudo: &[&str] = if is_root() { &[] } else { &["sudo"] };
        let apt = |args: &[&str]| {
            let mut all: Vec<&str> = sudo.to_vec();
            all.push("apt-get");
            all.extend_from_slice(args);
            let mut cmd = Command::new(all[0]);
            cmd.args(&all[1..]).env("DEBIAN_FRONTEND", "noninteractive");
            run(&mut cmd)
        };
        apt(&["update", "-qq"])?;
        let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
        install.extend(&packages);
        apt(&install)?;
    }
    if !browser {
        return Ok(());
    }
    python_tools(root)?;
    let browser_dir = root.join("tests/browser");
    if !browser_dir.join("node_modules/playwright-core").exists() {
        run(Command::new("npm")
            .current_dir(&browser_dir)
            .args(["ci", "--no-audit", "--no-fund"]))?;
    }
    Ok(())
}

/// The Python tools of tests/python-requirements.txt (kubernetes-validate, componentize-py,
/// rotel) in a virtualenv at `<target>/py`; reinstalled when the requirements change.
fn python_tools(root: &Path) -> anyhow::Result<()> {
    let venv = target_dir(root).join("py");
    let requirements = root.join("tests/python-requirements.txt");
    let wanted = std::fs::read_to_string(&requirements)
        .with_context(|| format!("cannot read {}", requirements.display()))?;
    let marker = venv.join("installed-requirements.txt");
    if std::fs::read_to_string(&marker).is_ok_and(|have| have == wanted) {
        return Ok(());
    }
    if !venv.join("bin/pip").exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(&requirements))?;
    std::fs::write(&marker, wanted)?;
    Ok(())
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn test(root: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    setup(root, true)?;
    let target = target_dir(root);
    let template = root.join("examples/plugin-template");
    for dir in [
        root.to_path_buf(),
        root.join("plugins"),
        root.join("dashboard"),
        template.clone(),
        root.join("tests/fuzz"),
    ] {
        run(cargo().current_dir(&dir).args(["fmt", "--all", "--check"]))?;
    }
    // The dependency policy over every lock file (deny.toml).
    deny::deny(root, false)?;
    run(cargo().current_dir(root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // Every test binary runs even after one fails, so one CI run shows every failure.
    run(cargo().current_dir(root).args([
        "test",
        "--workspace",
        "--all-targets",
        "--no-fail-fast",
    ]))?;
    // The Python worker library's own unit tests (examples/workers/test_*.py), with the
    // virtualenv's Python.
    run(Command::new(target.join("py/bin/python"))
        .current_dir(root)
        .args([
            "-m",
            "unittest",
            "discover",
            "-s",
            "examples/workers",
            "-p",
            "test_*.py",
        ]))?;
    // The native telemetry handler example checks what it saw and fails if it is wrong.
    run(cargo().current_dir(root).args([
        "run",
        "--quiet",
        "-p",
        "lookout-example-native-consumer",
    ]))?;
    // The plugins' rules, natively (the real components are tested from the host).
    run(cargo()
        .current_dir(root.join("plugins"))
        .args(["test", "-p", "redact-rules"])
        .env("CARGO_TARGET_DIR", target.join("plugins-native")))?;
    // The dashboard's state and formatting, natively (the app itself in a browser, above).
    run(cargo()
        .current_dir(root.join("dashboard"))
        .args(["test", "-p", "lookout-dashboard-model"])
        .env("CARGO_TARGET_DIR", target.join("dashboard-native")))?;
    // The plugin template must build and pass `lookout plugin check`, as its docs promise.
    run(cargo()
        .current_dir(&template)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .env("CARGO_TARGET_DIR", target.join("wasm-build")))?;
    run(Command::new(target.join("debug/lookout"))
        .arg("plugin")
        .arg("check")
        .arg(target.join("wasm-build/wasm32-wasip2/release/my_plugin.wasm"))
        .arg("--manifest")
        .arg(template.join("plugin.toml")))?;
    // What lookout reads from outside, under libFuzzer: a short run of each target.
    fuzz::fuzz(root, 15, &[])?;
    eprintln!("xtask: every test passed in {:.0?}", started.elapsed());
    Ok(())
}

/// The benches of docs/performance.md, in the order of its P1–P5, with what they measure.
const BENCHES: &[(&str, &str)] = &[
    ("lookout-wasm", "pipeline"),
    ("lookout-wasm", "sanitizer"),
    ("lookout", "execute"),
    ("lookout-wasm", "swap"),
    ("lookout-server", "metrics"),
    ("lookout-nats", "throughput"),
];

/// Runs `cmd`, echoing its stdout, and keeps the `summary|` rows it printed.
fn run_collecting(cmd: &mut Command, summary: &mut Vec<String>) -> anyhow::Result<()> {
    use std::io::{BufRead, BufReader};
    eprintln!("xtask: running {cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let stdout = child.stdout.take().expect("piped");
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(row) = line.strip_prefix("summary|") {
            summary.push(format!("|{row}"));
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn bench(root: &Path) -> anyhow::Result<()> {
    setup(root, false)?;
    python_tools(root)?;
    let started = Instant::now();
    let mut summary = Vec::new();
    for (package, bench) in BENCHES {
        run_collecting(
            cargo()
                .current_dir(root)
                .args(["bench", "-p", package, "--bench", bench]),
            &mut summary,
        )?;
    }
    load(root, 20, &mut summary)?;
    summary.sort_by(|a, b| a.split('|').nth(1).cmp(&b.split('|').nth(1)));
    let table = format!(
        "| | measurement | result | ratio |\n|---|---|---|---|\n{}\n",
        summary.join("\n")
    );
    println!("\n{table}");
    let target = target_dir(root);
    let path = target.join("bench-summary.md");
    std::fs::write(&path, &table).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "xtask: benches done in {:.0?}; the summary is in {}",
        started.elapsed(),
        path.display()
    );
    Ok(())
}

/// The load test (host/lookout/tests/e2e/load.rs) against a release build, for `secs`.
fn load(root: &Path, secs: u64, summary: &mut Vec<String>) -> anyhow::Result<()> {
    long_e2e(root, "load::", "LOOKOUT_LOAD_SECS", secs, summary)
}

/// The e2e tests matching `filter`, in release with debug info (the `bench` profile, shared
/// with the benches), told by `env` to run for `secs` seconds.
fn long_e2e(
    root: &Path,
    filter: &str,
    env: &str,
    secs: u64,
    summary: &mut Vec<String>,
) -> anyhow::Result<()> {
    run_collecting(
        cargo()
            .current_dir(root)
            .args([
                "test",
                "--profile",
                "bench",
                "-p",
                "lookout",
                "--test",
                "e2e",
                filter,
                "--",
                "--nocapture",
            ])
            .env(env, secs.to_string()),
        summary,
    )
}

fn demo(root: &Path, listen: &str) -> anyhow::Result<()> {
    setup(root, false)?;
    run(cargo()
        .current_dir(root)
        .args(["build", "--release", "-p", "lookout"]))?;
    let target = target_dir(root);
    let bin = target.join("release/lookout");
    let log_path = target.join("demo-lookout.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    // The example consumer and metrics plugins, in a watched folder: the demo's /metrics and
    // log show them working, and dropping a new pair into the folder swaps it in.
    let plugin_dir = target.join("demo-plugins");
    std::fs::create_dir_all(&plugin_dir)?;
    for (name, file) in [
        ("digest", "digest"),
        ("error-counter", "error_counter"),
        ("slo", "slo"),
    ] {
        let wasm = target.join(format!("wasm-build/wasm32-wasip2/release/{file}.wasm"));
        std::fs::copy(&wasm, plugin_dir.join(format!("{name}.wasm")))
            .with_context(|| format!("copy {}", wasm.display()))?;
        std::fs::copy(
            root.join(format!("examples/plugins/{name}.toml")),
            plugin_dir.join(format!("{name}.toml")),
        )?;
    }
    let stop = stop_signals()?;
    let mut host = Command::new(&bin)
        .args(["serve", "--listen", listen, "--plugins"])
        .arg(&plugin_dir)
        .stdout(Stdio::inherit())
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let base = format!("http://{listen}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(listen).is_err() {
        if let Some(status) = host.try_wait()? {
            bail!(
                "lookout exited with {status} (is {listen} already in use? pass another address: cargo xtask demo 127.0.0.1:8788)"
            );
        }
        if Instant::now() > deadline {
            stop_child(&mut host, "lookout");
            bail!("lookout did not start listening on {listen} within 30 s");
        }
        if let Ok(signal) = stop.recv_timeout(Duration::from_millis(100)) {
            stop_child(&mut host, "lookout");
            bail!("{signal} while lookout was starting");
        }
    }
    let mut publisher = match Command::new("python3")
        .arg(root.join("examples/demo_publisher.py"))
        .arg(&base)
        .spawn()
    {
        Ok(publisher) => publisher,
        Err(e) => {
            stop_child(&mut host, "lookout");
            return Err(e).context("cannot start examples/demo_publisher.py (python3 is needed)");
        }
    };
    println!();
    println!("  lookout demo is running.");
    println!("  dashboard: {base}/");
    println!("  metrics:   {base}/metrics");
    println!("  stream:    curl -N {base}/api/v1/events/stream");
    println!(
        "  logs:      {} (JSON, one object a line)",
        log_path.display()
    );
    println!(
        "  plugins:   {} (digest, error-counter, slo; watched)",
        plugin_dir.display()
    );
    println!("             curl -s {base}/metrics | grep lookout_plugin_slo");
    println!("  Ctrl-C stops the demo.");
    println!();
    // Until the publisher ends or xtask is told to stop; either way neither child outlives us.
    let status = loop {
        if let Some(status) = publisher.try_wait()? {
            break Some(status);
        }
        if let Ok(signal) = stop.recv_timeout(Duration::from_millis(200)) {
            eprintln!("xtask: {signal}: stopping the demo");
            break None;
        }
    };
    stop_child(&mut publisher, "the demo publisher");
    stop_child(&mut host, "lookout");
    match status {
        Some(status) if !status.success() => bail!("the demo publisher stopped with {status}"),
        _ => Ok(()),
    }
}

/// Each SIGTERM, SIGINT or SIGHUP xtask receives, by name. The handlers are in place when
/// this returns, so from then on a signal is not the default death that would leave the
/// demo's children running.
fn stop_signals() -> anyhow::Result<std::sync::mpsc::Receiver<&'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut term, mut interrupt, mut hangup) = {
        let _in_runtime = runtime.enter();
        (
            signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
        )
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        runtime.block_on(async {
            loop {
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = interrupt.recv() => "SIGINT",
                    _ = hangup.recv() => "SIGHUP",
                };
                if tx.send(name).is_err() {
                    return;
                }
            }
        });
    });
    Ok(rx)
}

/// SIGTERM (a clean stop: lookout stops its workers), then SIGKILL after 10 s.
fn stop_child(child: &mut std::process::Child, what: &str) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("xtask: {what} did not stop within 10 s of SIGTERM; killing it");
    let _ = child.kill();
    let _ = child.wait();
}
