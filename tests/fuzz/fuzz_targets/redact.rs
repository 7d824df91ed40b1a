//! The redact rules (what the default `redact` sanitizer runs inside WASM), on arbitrary
//! fields: never a panic, and a secret planted anywhere in a field's text never survives,
//! whatever surrounds it and whatever the field is called.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use redact_rules::{Mode, Policy, Value};

/// Secrets of each shape the rules promise to catch: (as planted, what must not survive).
const SECRETS: &[(&str, &str)] = &[
    ("AKIAIOSFODNN7EXAMPLE", "IOSFODNN7EXAMPLE"),
    ("Authorization: Bearer abc.def-ghi_jkl", "abc.def-ghi_jkl"),
    (
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig_nature-x",
        "eyJzdWIiOiIxMjM0In0",
    ),
    ("4111 1111 1111 1111", "4111 1111 1111 1111"),
    ("4111111111111111", "4111111111111111"),
    ("postgres://app:s3cr3tpw@db:5432/x", "s3cr3tpw"),
    ("password=hunter2hunter2", "hunter2hunter2"),
    (
        "ghp_0123456789abcdefghijABCDEFGHIJ012345",
        "0123456789abcdefghijABCDEFGHIJ",
    ),
    ("xoxb-1234567890-abcdefghij", "1234567890-abcdefghij"),
    ("sk_live_0123456789abcdefXYZ", "0123456789abcdefXYZ"),
    (
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAsecretkeymaterial\n-----END RSA PRIVATE KEY-----",
        "MIIEowIBAAKCAQEAsecretkeymaterial",
    ),
];

#[derive(Arbitrary, Debug)]
enum Other<'a> {
    Str(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    hash: bool,
    key: &'a str,
    before: &'a str,
    secret: u8,
    after: &'a str,
    others: Vec<(&'a str, Other<'a>)>,
}

fuzz_target!(|input: Input<'_>| {
    let mode = if input.hash {
        Mode::Hash(b"fuzz".to_vec())
    } else {
        Mode::Redact
    };
    let policy = Policy::new(mode, Vec::new(), Vec::new());
    for (key, value) in &input.others {
        let value = match *value {
            Other::Str(s) => Value::Str(s),
            Other::Int(i) => Value::Int(i),
            Other::Float(f) => Value::Float(f),
            Other::Bool(b) => Value::Bool(b),
        };
        let _ = policy.clean_field(key, value);
    }
    let (planted, core) = SECRETS[input.secret as usize % SECRETS.len()];
    // Separated from its neighbours by a newline: what is glued to a secret may
    // legitimately change what it is (`x4111…` is not a card number).
    let text = format!("{}\n{planted}\n{}", input.before, input.after);
    let cleaned = policy
        .clean_field(input.key, Value::Str(&text))
        .unwrap_or(text.clone());
    // The fuzzer may write the secret's text into the neighbours too: only the planted
    // copy has to go.
    let around = input.before.matches(core).count() + input.after.matches(core).count();
    assert!(
        cleaned.matches(core).count() <= around,
        "{core:?} survived in field {:?}: {cleaned:?}",
        input.key
    );
});
