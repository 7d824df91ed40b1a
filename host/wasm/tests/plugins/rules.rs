//! The `redact` plugin's rules from its config: rules in gitleaks' TOML format, given in a
//! manifest exactly as docs/plugins.md shows, run beside the built-in set; a bad rule
//! refuses the load naming the rule and the field.

use lookout_artifacts::plugins::REDACT;
use lookout_core::Event;
use lookout_wasm::{Error, Limits, Manifest, Runtime, WasmSanitizer};
use prometheus::Registry;

use super::{config, sanitize, text};

/// The manifest of docs/plugins.md ("Bringing your own rules"), with `extra` added to the
/// rules text and `more` to the config.
fn manifest(extra: &str, more: &str) -> Manifest {
    let text = format!(
        r#"name = "redact"
world = "sanitizer"
version = "0.1.0"

[config]
rules = '''
[[rules]]
id = "acme-api-key"
description = "Acme API key"
regex = "\\b(acme_[0-9a-z]{{32}})\\b"
keywords = ["acme_"]
entropy = 3.0
[[rules.allowlists]]
stopwords = ["example"]
{extra}'''
{more}
"#
    );
    Manifest::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[test]
fn operator_rules_in_gitleaks_format_run_beside_the_builtin_ones() {
    let runtime = Runtime::new(&Registry::new()).unwrap();
    let s = WasmSanitizer::from_manifest(&runtime, &manifest("", ""), REDACT).unwrap();
    let out = sanitize(
        &s,
        vec![
            Event::new("deploy")
                .field("note", "key acme_0123456789abcdefghij0123456789ab used")
                .field(
                    "sample",
                    "key acme_example0123456789abcdefghij01234 in the docs",
                )
                .field("gh", "pushed ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"),
        ],
    );
    assert_eq!(text(&out[0], "note"), "key [REDACTED:acme-api-key] used");
    // The rule's allow-list keeps its stopword; the built-in rules still run.
    assert_eq!(
        text(&out[0], "sample"),
        "key acme_example0123456789abcdefghij01234 in the docs"
    );
    assert_eq!(text(&out[0], "gh"), "pushed [REDACTED:github-pat]");

    // Rules turned off stop redacting (a data rule and one written in code: a GitHub token
    // is also a long random token); the rest keep going.
    let s = WasmSanitizer::from_manifest(
        &runtime,
        &manifest("", "disabled_rules = \"github-pat, random-token\""),
        REDACT,
    )
    .unwrap();
    let out = sanitize(
        &s,
        vec![Event::new("deploy").field("gh", "pushed ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789")],
    );
    assert_eq!(
        text(&out[0], "gh"),
        "pushed ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"
    );
}

#[test]
fn a_bad_rule_refuses_the_load_naming_the_rule_and_the_field() {
    let runtime = Runtime::new(&Registry::new()).unwrap();
    for (extra, more, named) in [
        (
            "[[rules]]\nid = \"broken\"\nregex = \"(acme\"\nkeywords = [\"acme\"]\n",
            "",
            "rule `broken`: field `regex` does not compile",
        ),
        (
            "[[rules]]\nid = \"by-path\"\nregex = \"x\"\npath = \"\\\\.env$\"\n",
            "",
            "rule `by-path`: unknown field `path`",
        ),
        (
            "[[rules]]\nid = \"grouped\"\nregex = \"(a)\"\nsecretGroup = 3\n",
            "",
            "rule `grouped`: field `secretGroup` is 3",
        ),
        (
            "",
            "disabled_rules = \"no-such-rule\"",
            "no rule `no-such-rule`",
        ),
    ] {
        let err = WasmSanitizer::from_manifest(&runtime, &manifest(extra, more), REDACT)
            .err()
            .unwrap_or_else(|| panic!("{named}: loaded"));
        assert!(matches!(err, Error::Init { .. }), "{err}");
        assert!(err.to_string().contains(named), "{named}: {err}");
    }
    // Plain config works the same way (no manifest).
    let err = WasmSanitizer::load(
        &runtime,
        "redact",
        REDACT,
        config(&[("rules", "[[rules]]\nregex = \"x\"")]),
        Limits::default(),
    )
    .err()
    .unwrap();
    assert!(
        err.to_string().contains("rules[0]: field `id` is missing"),
        "{err}"
    );
}
