//! The configuration file (TOML) and `PUT /api/v1/config` bodies (JSON): never a panic,
//! and whatever parses can be validated.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lookout::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::from_toml(text) {
        check(&config);
    }
    if let Ok(value) = serde_json::from_str(text) {
        if let Ok(config) = Config::from_json(value) {
            check(&config);
        }
    }
});

fn check(config: &Config) {
    let problems = config.problems();
    assert!(
        problems
            .iter()
            .all(|i| !i.field.is_empty() && !i.reason.is_empty())
    );
    let _ = config.listen_addr();
    let _ = config.sanitizer_name();
}
