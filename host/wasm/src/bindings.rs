//! The one place the host binds `wit/` (`lookout:plugin@0.2.0`). Each world gets its own
//! module; they share the `types` and `host` interfaces of the `sanitizer` module.

#![allow(missing_docs, clippy::all)]

pub mod sanitizer {
    wasmtime::component::bindgen!({
        world: "sanitizer",
        path: "../../wit",
    });
}

pub mod consumer {
    wasmtime::component::bindgen!({
        world: "consumer",
        path: "../../wit",
        with: {
            "lookout:plugin/types": crate::bindings::sanitizer::lookout::plugin::types,
            "lookout:plugin/host": crate::bindings::sanitizer::lookout::plugin::host,
        },
    });
}

pub mod metrics {
    wasmtime::component::bindgen!({
        world: "metrics",
        path: "../../wit",
        with: {
            "lookout:plugin/types": crate::bindings::sanitizer::lookout::plugin::types,
            "lookout:plugin/host": crate::bindings::sanitizer::lookout::plugin::host,
        },
    });
}

pub use sanitizer::lookout::plugin::{host, types};
