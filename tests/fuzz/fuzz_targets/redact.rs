//! The redact rules (what the default `redact` sanitizer runs inside WASM), on arbitrary
//! fields: never a panic, and a secret planted anywhere in a field's text never survives,
//! whatever surrounds it and whatever the field is called.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use redact_rules::{Mode, Policy, RuleSet, Value};

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
    // Formats of the data rules (rules/default.toml), and values after code-like keys.
    ("glrt-DqSAXaacc59B527Ft5Qt", "DqSAXaacc59B527Ft5Qt"),
    ("gldt-VsXhq_ixGmk5k1ZsCCMm", "VsXhq_ixGmk5k1ZsCCMm"),
    (
        "https://hooks.slack.com/services/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",
        "Ooq7r1v2uxJ0xfQqCj2RBpFZ",
    ),
    (
        "xapp-1-A5BM449ZBW2-3392362348713-fefa502a3ee18cf20f2fd908c5baad23dd77d903",
        "fefa502a3ee18cf20f2fd908c5baad23dd77d903",
    ),
    (
        "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",
        "uFoEyGBXhOlRZshNQXCwxBKkVlcxTzQApq",
    ),
    (
        "28E2Q~4C2QKvFr14Pg-Pnv4wDn__ly41ARm65JJu",
        "4C2QKvFr14Pg-Pnv4wDn__ly41ARm65JJu",
    ),
    (
        "8849408084:A1By1aH8rGv5vyhFeyidRSFTdNfV6bRSLWW",
        "A1By1aH8rGv5vyhFeyidRSFTdNfV6bRSLWW",
    ),
    (
        "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",
        "0moDXgEHovjFtQSj0LlDeuKqSLdOiTiZQzCaVnEdxTZ",
    ),
    ("db_pass := \"hunter2hunter2\"", "hunter2hunter2"),
    (
        "System.setProperty(\"API_TOKEN\", \"Zx8qLm2Pw4K9vT\")",
        "Zx8qLm2Pw4K9vT",
    ),
    (
        "<password>\n  hunter2hunter2\n</password>",
        "hunter2hunter2",
    ),
    ("curl -u elastic:P4ssw0rd-x https://es", "P4ssw0rd-x"),
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
    let policy = if input.hash { &HASH } else { &REDACT };
    policy.with(|policy| check(policy, &input));
});

/// The policies, built once: the full rule set takes milliseconds to compile.
thread_local! {
    static REDACT: Policy = Policy::new(Mode::Redact, Vec::new(), RuleSet::builtin());
    static HASH: Policy = Policy::new(Mode::Hash(b"fuzz".to_vec()), Vec::new(), RuleSet::builtin());
}

fn check(policy: &Policy, input: &Input<'_>) {
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
}
