//! The WASM artifacts lookout embeds, built by this crate's build script from `plugins/`
//! (for `wasm32-wasip2`) and `dashboard/` (for `wasm32-unknown-unknown`, JS glue by
//! wasm-bindgen) in their own target dir, so a plain `cargo build`, `cargo test` or
//! `cargo install` has them.
//!
//! Setting `LOOKOUT_SKIP_WASM_BUILD=1` skips the nested builds and embeds empty
//! placeholders: for editors and `cargo check` only (see [`BUILT`]).

/// False when the nested builds were skipped and every artifact below is empty.
pub const BUILT: bool = include!(concat!(env!("OUT_DIR"), "/built.rs"));

/// Plugins built from `plugins/`: components for the `lookout:plugin@0.2.0` worlds.
pub mod plugins {
    /// `redact`, the default sanitizer policy.
    pub const REDACT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/redact.wasm"));
    /// `allowlist`, the strict sanitizer policy: only listed keys keep their values.
    pub const ALLOWLIST: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/allowlist.wasm"));
    /// `digest`, a consumer that logs a digest of requests and crashes.
    pub const DIGEST: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/digest.wasm"));
    /// `error-counter`, a consumer that counts failed requests per command (a custom metric).
    pub const ERROR_COUNTER: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/error_counter.wasm"));
    /// `slo`, a metrics plugin: good/bad requests per command against a latency threshold.
    pub const SLO: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/slo.wasm"));
    /// An embedded plugin by its name (`redact`, `allowlist`, `digest`, `error-counter`, `slo`);
    /// the test-only `misbehave` is not offered.
    pub fn by_name(name: &str) -> Option<&'static [u8]> {
        match name {
            "redact" => Some(REDACT),
            "allowlist" => Some(ALLOWLIST),
            "digest" => Some(DIGEST),
            "error-counter" => Some(ERROR_COUNTER),
            "slo" => Some(SLO),
            _ => None,
        }
    }

    /// `misbehave`, a sanitizer that traps, loops or eats memory on request (tests only).
    pub const MISBEHAVE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/misbehave.wasm"));

    /// `flaky`, a consumer that traps on batches holding a given kind (tests only).
    pub const FLAKY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/flaky.wasm"));

    /// `chatty`, a sanitizer that says too much: logs the raw fields it sees, fails `init`
    /// with a huge message holding a secret, or answers with a verdict the host refuses
    /// (tests only).
    pub const CHATTY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/chatty.wasm"));

    /// `chatty-consumer`, a consumer that says too much: huge error results holding a
    /// secret, huge label values, the fields it sees in its log (tests only).
    pub const CHATTY_CONSUMER: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/chatty_consumer.wasm"));
}

/// The dashboard's files, served by the host; each also gzipped (`*_GZ`, best compression,
/// made at build time).
pub mod dashboard {
    pub const INDEX_HTML: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/index.html"));
    pub const APP_JS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/lookout_dashboard.js"));
    pub const APP_WASM: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/lookout_dashboard_bg.wasm"));
    pub const INDEX_HTML_GZ: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/index.html.gz"));
    pub const APP_JS_GZ: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/lookout_dashboard.js.gz"));
    pub const APP_WASM_GZ: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/lookout_dashboard_bg.wasm.gz"));
}
