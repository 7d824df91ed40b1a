//! A sanitizer that misbehaves on request, to prove the host's sandbox and its fail-closed
//! policy with a real component. The kind of any event in the batch picks the behaviour:
//! `test.trap` panics (a trap), `test.loop` spins forever (stopped by the epoch deadline),
//! `test.oom` allocates until the memory cap stops it, `test.stack` recurses until the stack
//! overflows. `test.file`, `test.dir`, `test.env`, `test.socket`, `test.udp` and `test.dns` try
//! to escape the sandbox (read `/etc/passwd`, list a directory, read the environment, open a
//! TCP connection, bind a UDP socket, resolve a name) and write what happened into the event's
//! `probe` field (`denied: …` or `ESCAPED: …`); `test.clock` writes the wall clock it reads.
//! `test.mark` replaces each `mark` field with its own value, so a test chooses exactly which
//! redaction markers the host is handed, however hostile. `test.sleep` sleeps (a WASI clock
//! wait, `std::thread::sleep`) for its `ms` field (default 3000) and then writes `slept` into
//! its `probe` field; `test.stdin` reads stdin (`probe`: what the read gave). The config key
//! `sleep_init_ms` makes `init` sleep that long first. Any other batch passes through
//! unchanged — which is exactly what a sanitizer must never do with secrets, so a leak in a
//! test shows up at once.

use lookout_plugin_sdk::sanitizer::Guest;
use lookout_plugin_sdk::{Batch, Config, FieldValue, Verdict};

#[allow(unconditional_recursion)] // the point: overflow the stack
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 64]);
    recurse(depth + 1) + frame[0]
}

/// What an escape attempt achieved.
fn probe(kind: &str) -> Option<String> {
    let outcome = match kind {
        "test.file" => match std::fs::read_to_string("/etc/passwd") {
            Ok(text) => format!("ESCAPED: read {} bytes", text.len()),
            Err(e) => format!("denied: {e}"),
        },
        "test.env" => {
            let vars: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
            if vars.is_empty() && std::env::args().count() == 0 {
                "denied: no environment, no args".to_string()
            } else {
                format!("ESCAPED: env {vars:?}")
            }
        }
        "test.socket" => match std::net::TcpStream::connect("127.0.0.1:80") {
            Ok(_) => "ESCAPED: connected".to_string(),
            Err(e) => format!("denied: {e}"),
        },
        "test.udp" => match std::net::UdpSocket::bind("0.0.0.0:0") {
            Ok(_) => "ESCAPED: bound a UDP socket".to_string(),
            Err(e) => format!("denied: {e}"),
        },
        "test.dns" => match std::net::ToSocketAddrs::to_socket_addrs("localhost:80") {
            Ok(_) => "ESCAPED: resolved a name".to_string(),
            Err(e) => format!("denied: {e}"),
        },
        "test.stdin" => {
            let mut buf = [0u8; 64];
            match std::io::Read::read(&mut std::io::stdin(), &mut buf) {
                Ok(0) => "denied: stdin is empty".to_string(),
                Ok(n) => format!("ESCAPED: read {n} bytes of stdin"),
                Err(e) => format!("denied: {e}"),
            }
        }
        "test.dir" => match std::fs::read_dir("/").or_else(|_| std::fs::read_dir(".")) {
            Ok(_) => "ESCAPED: listed a directory".to_string(),
            Err(e) => format!("denied: {e}"),
        },
        // Documented as available (docs/security.md): the wall clock, so the host can
        // check it is the real one.
        "test.clock" => match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(since) => format!("clock: {}", since.as_secs()),
            Err(e) => format!("denied: {e}"),
        },
        _ => return None,
    };
    Some(outcome)
}

struct Misbehave;

impl Guest for Misbehave {
    fn init(config: Config) -> Result<(), String> {
        if lookout_plugin_sdk::config_value(&config, "fail_init").is_some() {
            return Err("init failed on purpose (fail_init is set)".to_string());
        }
        if let Some(ms) = lookout_plugin_sdk::config_value(&config, "sleep_init_ms") {
            let ms = ms
                .parse::<u64>()
                .map_err(|e| format!("sleep_init_ms: {e}"))?;
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        Ok(())
    }

    fn sanitize(batch: Batch) -> Verdict {
        let mut verdict = Verdict::new();
        for event in batch.events() {
            if let Some(outcome) = probe(event.kind()) {
                for field in event.fields().filter(|f| f.key == "probe") {
                    verdict.replace(field.index, outcome.clone());
                }
            }
        }
        for event in batch.events().filter(|e| e.kind() == "test.mark") {
            for field in event.fields().filter(|f| f.key == "mark") {
                if let FieldValue::Str(value) = field.value {
                    verdict.replace(field.index, value);
                }
            }
        }
        for event in batch.events().filter(|e| e.kind() == "test.sleep") {
            let ms = match event.get("ms") {
                Some(FieldValue::Int(ms)) => ms.max(0) as u64,
                _ => 3000,
            };
            std::thread::sleep(std::time::Duration::from_millis(ms));
            for field in event.fields().filter(|f| f.key == "probe") {
                verdict.replace(field.index, "slept".to_string());
            }
        }
        for event in batch.events() {
            match event.kind() {
                "test.trap" => panic!("misbehave: trapping on purpose"),
                "test.loop" => {
                    let mut n: u64 = 0;
                    loop {
                        n = std::hint::black_box(n.wrapping_add(1));
                    }
                }
                "test.stack" => {
                    std::hint::black_box(recurse(0));
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
        verdict
    }
}

lookout_plugin_sdk::sanitizer::export_sanitizer!(Misbehave);
