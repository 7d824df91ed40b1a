//! What a worker writes on stdout (its ready line, then replies): never a panic, whatever
//! the bytes; a verdict (replies read, or the reason it broke the protocol).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|stdout: &[u8]| {
    let _ = lookout_pool::read_worker_stdout(stdout);
});
