//! Guest-side bindings of the `lookout:plugin@0.1.0` WIT package — the one place plugins
//! written in Rust bind it.
//!
//! A sanitizer plugin implements [`sanitizer::Guest`] and exports it:
//!
//! ```ignore
//! struct MyPolicy;
//! impl lookout_plugin_sdk::sanitizer::Guest for MyPolicy { /* init, sanitize */ }
//! lookout_plugin_sdk::sanitizer::export_sanitizer!(MyPolicy);
//! ```

/// The `sanitizer` world: `init(config)`, then `sanitize(batch) -> batch`.
pub mod sanitizer {
    wit_bindgen::generate!({
        world: "sanitizer",
        path: "../../wit",
        additional_derives: [PartialEq],
        pub_export_macro: true,
        export_macro_name: "export_sanitizer",
        default_bindings_module: "lookout_plugin_sdk::sanitizer",
    });
}

/// The `consumer` world: `init(config)`, then `handle(batch) -> result`.
pub mod consumer {
    wit_bindgen::generate!({
        world: "consumer",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export_consumer",
        default_bindings_module: "lookout_plugin_sdk::consumer",
        with: {
            "lookout:plugin/types@0.1.0": crate::sanitizer::lookout::plugin::types,
            "lookout:plugin/host@0.1.0": crate::sanitizer::lookout::plugin::host,
        },
    });
}

/// The `metrics` world: `describe() -> specs`, then `observe(batch)`.
pub mod metrics {
    wit_bindgen::generate!({
        world: "metrics",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export_metrics",
        default_bindings_module: "lookout_plugin_sdk::metrics",
        with: {
            "lookout:plugin/types@0.1.0": crate::sanitizer::lookout::plugin::types,
            "lookout:plugin/host@0.1.0": crate::sanitizer::lookout::plugin::host,
        },
    });
}

pub use sanitizer::lookout::plugin::host;
pub use sanitizer::lookout::plugin::types::{
    Config, Event, Field, FieldValue, MetricKind, MetricSpec, Severity,
};

/// The value of `key` in a plugin's config, if present.
pub fn config_value<'a>(config: &'a Config, key: &str) -> Option<&'a str> {
    config
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Every known key of a plugin's config must be in `known`; a typo is an `init` error, not a
/// silently ignored setting.
pub fn reject_unknown_keys(config: &Config, known: &[&str]) -> Result<(), String> {
    for (key, _) in config {
        if !known.contains(&key.as_str()) {
            return Err(format!(
                "unknown config key `{key}` (known: {})",
                known.join(", ")
            ));
        }
    }
    Ok(())
}
