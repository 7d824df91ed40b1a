//! Plugin manifests (`<name>.toml` next to a component, or uploaded with it): never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lookout_wasm::Manifest;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(manifest) = Manifest::parse(text) {
        let _ = manifest.validate();
        let _ = manifest.init_config();
    }
});
