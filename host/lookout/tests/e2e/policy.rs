//! `lookout policy test`: a sanitizer measured against our own examples of secrets and of
//! text that must come through, through the real binary and the real WASM sanitizer path —
//! the numbers it reports, its exit status for CI (0 held, 1 a threshold failed, 2 bad
//! input), and that a given component is measured instead of the default.
//!
//! The default rule set changes with its own work: only the cases any default must get right
//! are asserted here (vendor-format tokens caught wherever they stand, a `password=` pair
//! caught in its line, ordinary log text and a UUID kept).

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::LOOKOUT;

const GITHUB_PAT: &str = "ghp_R8kT2mQ9vX4nB7pL1sW6yZ3cF5hJ0dG8aE2u";
const AWS_KEY_ID: &str = "AKIAQ4WZ7NJ3HXK2VB5M";
const UUID: &str = "3f2b8c1e-9a4d-4e7b-b6c2-1d5e8f0a7c93";

/// Three secrets (grouped by `family`, by `rule`, by `family`) and two non-secrets (no group:
/// `all`); `source` is a field the tool does not know and ignores.
fn examples() -> String {
    [
        serde_json::json!({"text": "login failed: password=hunter2hunter2", "needle": "hunter2hunter2", "kind": "tp", "family": "password"}),
        serde_json::json!({"text": format!("aws_access_key_id = {AWS_KEY_ID}"), "needle": AWS_KEY_ID, "kind": "tp", "rule": "aws-access-token"}),
        serde_json::json!({"text": format!("export GITHUB_TOKEN={GITHUB_PAT}"), "needle": GITHUB_PAT, "kind": "tp", "family": "github", "rule": "github-pat", "source": "ours"}),
        serde_json::json!({"text": "worker 3 started", "needle": "worker 3 started", "kind": "fp"}),
        serde_json::json!({"text": format!("trace {UUID} finished in 12 ms"), "needle": UUID, "kind": "fp"}),
    ]
    .iter()
    .map(|e| format!("{e}\n"))
    .collect()
}

fn write(name: &str, text: &str) -> PathBuf {
    let path = lookout_testkit::artifacts_dir().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.stdout, self.stderr))
    }
}

fn policy_test(file: &std::path::Path, args: &[&str]) -> Run {
    let output = Command::new(LOOKOUT)
        .args(["policy", "test"])
        .arg(file)
        .args(args)
        .output()
        .unwrap();
    Run {
        code: output.status.code().expect("exited"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn family<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["families"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["family"] == name)
        .unwrap_or_else(|| panic!("no family `{name}` in {report:#}"))
}

fn abc(value: &Value) -> [u64; 3] {
    ["a", "b", "c"].map(|p| value[p].as_u64().unwrap_or_else(|| panic!("{value}")))
}

/// The default sanitizer catches vendor tokens in every placement and a `password=` pair in
/// its line, keeps log text and UUIDs, reports that per family and overall (as a table and
/// as JSON), and passes thresholds it meets with exit 0.
#[test]
fn policy_test_counts_caught_and_kept_per_family_and_passes_thresholds_it_meets() {
    let file = write("policy-examples.jsonl", &examples());
    let thresholds = ["--min-caught", "a=1,b=0.6,c=0.6", "--min-kept", "0.9"];
    let run = policy_test(&file, &[&thresholds[..], &["--json"]].concat());
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let report = run.json();
    assert_eq!(report["sanitizer"], "redact", "{report:#}");
    for name in ["github", "aws-access-token"] {
        let f = family(&report, name);
        assert_eq!((f["tp"].as_u64(), f["fp"].as_u64()), (Some(1), Some(0)));
        assert_eq!(abc(&f["caught"]), [1, 1, 1], "{name}: {f:#}");
    }
    assert_eq!(abc(&family(&report, "password")["caught"])[0], 1);
    let benign = family(&report, "all");
    assert_eq!(benign["fp"], 2);
    assert_eq!(abc(&benign["kept"]), [2, 2, 2], "{benign:#}");
    let overall = &report["overall"];
    assert_eq!(
        (overall["tp"].as_u64(), overall["fp"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(overall["caught_rate"]["a"], 1.0);
    assert_eq!(abc(&overall["partial_leaks"]), [0, 0, 0], "{overall:#}");
    assert_eq!(report["failed_closed"]["events"], 0);
    assert_eq!(report["passed"], true);
    assert_eq!(report["thresholds"].as_array().unwrap().len(), 6);

    let run = policy_test(&file, &thresholds);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let line = |name: &str| {
        run.stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no `{name}` row:\n{}", run.stdout))
            .to_string()
    };
    assert!(line("family").contains("caught a"), "{}", run.stdout);
    assert_eq!(
        line("github").matches("100.0%").count(),
        3,
        "{}",
        run.stdout
    );
    let all = line("all");
    assert_eq!(all.matches("100.0%").count(), 3, "{all}");
    assert!(
        line("overall").split_whitespace().nth(1) == Some("3"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("caught a 100.0% ≥ 100.0%"),
        "{}",
        run.stdout
    );
}

/// A threshold no sanitizer can meet — the same string is a secret on one line and must be
/// kept on the next — fails with exit 1 naming the check, and `--misses` shows what came out.
#[test]
fn policy_test_fails_a_threshold_it_cannot_meet_and_names_it() {
    let file = write(
        "policy-contradiction.jsonl",
        concat!(
            r#"{"text":"worker 3 started","needle":"worker 3 started","kind":"tp","family":"odd"}"#,
            "\n",
            r#"{"text":"worker 3 started","needle":"worker 3 started","kind":"fp","family":"odd"}"#,
            "\n",
        ),
    );
    let run = policy_test(&file, &["--min-caught", "1", "--min-kept", "1", "--misses"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("policy test failed"), "{}", run.stderr);
    // The default keeps ordinary text, so it is the secret side that fails.
    assert!(
        run.stderr.contains("caught a 0.0% < 100.0%"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("FAILED"), "{}", run.stdout);
    assert!(run.stdout.contains("misses in `odd`"), "{}", run.stdout);
    assert!(
        run.stdout.contains(r#"got {"message":"worker 3 started"}"#),
        "{}",
        run.stdout
    );
}

/// A malformed line, a missing file, a bad threshold or a file that is not a component is
/// refused with exit 2 and says what is wrong — never a 1 a CI job would read as "below
/// threshold".
#[test]
fn policy_test_refuses_bad_input_with_exit_2_naming_the_line() {
    let good = r#"{"text":"worker 3 started","needle":"worker 3 started","kind":"fp"}"#;
    let file = write(
        "policy-malformed.jsonl",
        &format!("{good}\n\n{{\"text\":\"x\",\"kind\":\"tp\"}}\n{good}\n"),
    );
    let run = policy_test(&file, &[]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("line 3: missing field `needle`"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty(), "{}", run.stdout);

    let file = write("policy-one.jsonl", &format!("{good}\n"));
    let junk = write("policy-junk.wasm", "\0asm but not really");
    let missing = lookout_testkit::artifacts_dir().join("policy-missing.jsonl");
    for (run, says) in [
        (policy_test(&missing, &[]), "cannot read"),
        (
            policy_test(&file, &["--min-caught", "d=0.5"]),
            "unknown placement `d`",
        ),
        (
            policy_test(&file, &["--min-kept", "90"]),
            "not between 0 and 1",
        ),
        (
            policy_test(&file, &["--wasm", junk.to_str().unwrap()]),
            "cannot load the sanitizer",
        ),
    ] {
        assert_eq!(run.code, 2, "{says}: {}{}", run.stdout, run.stderr);
        assert!(run.stderr.contains(says), "{says}: {}", run.stderr);
    }
}

/// `--wasm` + `--manifest` measures that component, loaded as a swap would: the `allowlist`
/// policy redacts every field not on its list, so it catches everything and keeps nothing —
/// and `--min-kept` says so.
#[test]
fn policy_test_measures_a_given_component_the_allowlist_keeps_nothing() {
    let file = write("policy-examples-allowlist.jsonl", &examples());
    let wasm = write_bytes(
        "policy-allowlist.wasm",
        lookout_artifacts::plugins::ALLOWLIST,
    );
    let manifest = lookout_testkit::repo_root().join("examples/plugins/allowlist.toml");
    let component = [
        "--wasm",
        wasm.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
    ];
    let run = policy_test(&file, &[&component[..], &["--json"]].concat());
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let report = run.json();
    assert_eq!(report["sanitizer"], "allowlist", "{report:#}");
    let overall = &report["overall"];
    assert_eq!(abc(&overall["caught"]), [3, 3, 3], "{overall:#}");
    assert_eq!(abc(&overall["kept"]), [0, 0, 0], "{overall:#}");
    assert_eq!(overall["kept_rate"]["a"], 0.0);

    let run = policy_test(&file, &[&component[..], &["--min-kept", "0.5"]].concat());
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("kept a 0.0% < 50.0%"), "{}", run.stderr);
    assert!(
        run.stdout.contains("sanitizer `allowlist`"),
        "{}",
        run.stdout
    );
}

fn write_bytes(name: &str, bytes: &[u8]) -> PathBuf {
    let path = lookout_testkit::artifacts_dir().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}
