//! A sanitizer that misbehaves on request, to prove the host's sandbox and its fail-closed
//! policy with a real component. The kind of any event in the batch picks the behaviour:
//! `test.trap` panics (a trap), `test.loop` spins forever (stopped by the epoch deadline),
//! `test.oom` allocates until the memory cap stops it. Any other batch passes through
//! unchanged — which is exactly what a sanitizer must never do with secrets, so a leak in a
//! test shows up at once.

use lookout_plugin_sdk::sanitizer::Guest;
use lookout_plugin_sdk::{Config, Event};

struct Misbehave;

impl Guest for Misbehave {
    fn init(config: Config) -> Result<(), String> {
        if lookout_plugin_sdk::config_value(&config, "fail_init").is_some() {
            return Err("init failed on purpose (fail_init is set)".to_string());
        }
        Ok(())
    }

    fn sanitize(batch: Vec<Event>) -> Vec<Event> {
        for event in &batch {
            match event.kind.as_str() {
                "test.trap" => panic!("misbehave: trapping on purpose"),
                "test.loop" => {
                    let mut n: u64 = 0;
                    loop {
                        n = std::hint::black_box(n.wrapping_add(1));
                    }
                }
                "test.oom" => {
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        hoard.push(vec![1u8; 1 << 20]);
                        std::hint::black_box(&hoard);
                    }
                }
                _ => {}
            }
        }
        batch
    }
}

lookout_plugin_sdk::sanitizer::export_sanitizer!(Misbehave);
