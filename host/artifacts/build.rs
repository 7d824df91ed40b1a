//! Builds the guest plugins and the dashboard with nested cargo invocations in their own
//! target dir (`<target>/wasm-build`: sharing the outer one deadlocks on its lock), runs
//! wasm-bindgen (as a library, pinned to the dashboard's wasm-bindgen) on the dashboard, and
//! leaves everything in OUT_DIR for `include_bytes!`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

const PLUGINS: &[&str] = &[
    "redact",
    "allowlist",
    "digest",
    "error_counter",
    "slo",
    "misbehave",
    "flaky",
    "chatty",
    "chatty_consumer",
];

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.join("../..").canonicalize().unwrap();
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-env-changed=LOOKOUT_SKIP_WASM_BUILD");

    if env::var_os("LOOKOUT_SKIP_WASM_BUILD").is_some_and(|v| v == "1") {
        for name in PLUGINS {
            fs::write(out_dir.join(format!("{name}.wasm")), b"").unwrap();
        }
        for name in [
            "index.html",
            "lookout_dashboard.js",
            "lookout_dashboard_bg.wasm",
        ] {
            fs::write(out_dir.join(name), b"").unwrap();
            fs::write(out_dir.join(format!("{name}.gz")), b"").unwrap();
        }
        fs::write(out_dir.join("built.rs"), "false").unwrap();
        return;
    }

    // OUT_DIR is <target>/<profile>/build/<pkg>/out (or <target>/<triple>/<profile>/…).
    let target_dir = out_dir
        .ancestors()
        .find(|p| p.join("CACHEDIR.TAG").exists())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| out_dir.join("../../../..").canonicalize().unwrap());
    let wasm_target = target_dir.join("wasm-build");

    let plugins = root.join("plugins");
    nested_build(&plugins, "wasm32-wasip2", &wasm_target);
    for name in PLUGINS {
        let built = wasm_target
            .join("wasm32-wasip2/release")
            .join(format!("{name}.wasm"));
        fs::copy(&built, out_dir.join(format!("{name}.wasm")))
            .unwrap_or_else(|e| panic!("copy {}: {e}", built.display()));
        rerun_from_dep_info(
            &wasm_target
                .join("wasm32-wasip2/release")
                .join(format!("{name}.d")),
        );
    }

    let dashboard = root.join("dashboard");
    nested_build(&dashboard, "wasm32-unknown-unknown", &wasm_target);
    let app = wasm_target.join("wasm32-unknown-unknown/release/lookout_dashboard.wasm");
    rerun_from_dep_info(&wasm_target.join("wasm32-unknown-unknown/release/lookout_dashboard.d"));
    check_bindgen_version(&root);
    wasm_bindgen_cli_support::Bindgen::new()
        .input_path(&app)
        .web(true)
        .unwrap()
        .typescript(false)
        .remove_name_section(true)
        .remove_producers_section(true)
        // The library's default differs from the CLI's: without this the glue cannot find its .wasm.
        .omit_default_module_path(false)
        .generate(&out_dir)
        .unwrap_or_else(|e| panic!("wasm-bindgen on {}: {e:#}", app.display()));
    fs::copy(dashboard.join("index.html"), out_dir.join("index.html")).unwrap();
    println!(
        "cargo:rerun-if-changed={}",
        dashboard.join("index.html").display()
    );
    for name in [
        "index.html",
        "lookout_dashboard.js",
        "lookout_dashboard_bg.wasm",
    ] {
        gzip(&out_dir.join(name));
    }
    fs::write(out_dir.join("built.rs"), "true").unwrap();

    for dir in [&plugins, &dashboard] {
        for file in ["Cargo.toml", "Cargo.lock", ".cargo/config.toml"] {
            println!("cargo:rerun-if-changed={}", dir.join(file).display());
        }
    }
    println!("cargo:rerun-if-changed={}", root.join("wit").display());
}

/// Writes `<file>.gz` beside `file` (best compression: it is done once, at build time).
fn gzip(file: &Path) {
    use std::io::Write as _;
    let bytes = fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&bytes).unwrap();
    let gz = encoder.finish().unwrap();
    let mut name = file.as_os_str().to_owned();
    name.push(".gz");
    fs::write(&name, gz).unwrap_or_else(|e| panic!("write {name:?}: {e}"));
}

/// `cargo build --release --target <target>` in `dir`, in the wasm target dir.
fn nested_build(dir: &Path, target: &str, target_dir: &Path) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    // Cargo reads config from the working directory, not --manifest-path.
    cmd.current_dir(dir)
        .args(["build", "--release", "--target", target])
        .env("CARGO_TARGET_DIR", target_dir);
    // The outer build's flags must not leak into the guest build (never env_clear: the
    // jobserver in CARGO_MAKEFLAGS keeps the nested build within -j).
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CLIPPY_ARGS",
        "CLIPPY_CONF_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_PROFILE_RELEASE_DEBUG",
        "CARGO_PROFILE_RELEASE_OPT_LEVEL",
    ] {
        cmd.env_remove(var);
    }
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo for {}: {e}", dir.display()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for line in stderr
        .lines()
        .filter(|l| l.starts_with("warning") || l.starts_with("error"))
    {
        println!(
            "cargo:warning=[{}] {line}",
            dir.file_name().unwrap().to_string_lossy()
        );
    }
    if !output.status.success() {
        let hint = if stderr.contains("may not be installed")
            || stderr.contains("can't find crate for `core`")
        {
            format!(
                "\n\nthe `{target}` target is missing: run `rustup target add {target}` (or `rustup toolchain install` in the repository root)"
            )
        } else {
            String::new()
        };
        panic!(
            "building {} for {target} failed:\n{stderr}{hint}",
            dir.display()
        );
    }
}

/// Emits `rerun-if-changed` for every source a nested build's dep-info lists.
fn rerun_from_dep_info(path: &Path) {
    let Ok(text) = fs::read_to_string(path) else {
        return;
    };
    let Some((_, deps)) = text.split_once(": ") else {
        return;
    };
    for dep in deps.replace("\\\n", " ").split_whitespace() {
        if Path::new(dep).exists() {
            println!("cargo:rerun-if-changed={dep}");
        }
    }
}

/// The version of `name` a Cargo.lock pins.
fn locked_version(lock: &Path, name: &str) -> Option<String> {
    let text = fs::read_to_string(lock).ok()?;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line == format!("name = \"{name}\"") {
            return lines
                .next()?
                .strip_prefix("version = \"")?
                .strip_suffix('"')
                .map(str::to_string);
        }
    }
    None
}

/// The generator and the dashboard's runtime must be the exact same wasm-bindgen version.
fn check_bindgen_version(root: &Path) {
    let app = locked_version(&root.join("dashboard/Cargo.lock"), "wasm-bindgen");
    let generator = locked_version(&root.join("Cargo.lock"), "wasm-bindgen-cli-support");
    assert!(
        app.is_some() && app == generator,
        "dashboard/Cargo.lock has wasm-bindgen {app:?} but the glue generator is {generator:?}: keep them equal"
    );
}
