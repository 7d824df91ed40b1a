//! Per-rule redaction counts (`lookout_redactions_total{plugin,rule}`), read by the host
//! from the markers in the replacements real sanitizer components make.

use std::collections::BTreeMap;
use std::time::Duration;

use lookout_core::{Event, FAILED_CLOSED, Sanitizer};
use lookout_wasm::{MAX_RULES_PER_PLUGIN, OTHER_RULE, Runtime, SENSITIVE_KEY_RULE};
use prometheus::Registry;

use super::{misbehave, start_bus_with_registry};

/// The series of `lookout_redactions_total` for `plugin`, by rule.
fn redactions(registry: &Registry, plugin: &str) -> BTreeMap<String, u64> {
    let label = |m: &prometheus::proto::Metric, name: &str| {
        m.get_label()
            .iter()
            .find(|l| l.name() == name)
            .map(|l| l.value().to_string())
            .unwrap_or_default()
    };
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == "lookout_redactions_total")
        .flat_map(|f| f.get_metric())
        .filter(|m| label(m, "plugin") == plugin)
        .map(|m| (label(m, "rule"), m.get_counter().get_value() as u64))
        .collect()
}

/// The default policy's redactions are counted by rule: a value under a sensitive key as
/// `sensitive-key`, an AWS key id in free text under the one rule that names AWS (whatever
/// the rule set calls it), and the plugin list shows the same numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_policy_counts_its_redactions_by_rule() {
    let (bus, registry, plugins) = start_bus_with_registry();
    for _ in 0..3 {
        bus.publish(
            Event::new("storage.upload")
                .field("user", "bob")
                .field("password", "hunter2")
                .field("message", "s3 upload as AKIAZ3MSJV4WQXPKR2LN failed"),
        );
    }
    assert!(bus.flush(Duration::from_secs(10)).await);

    let counts = redactions(&registry, "redact");
    assert_eq!(counts.get(SENSITIVE_KEY_RULE), Some(&3), "{counts:?}");
    let aws: Vec<_> = counts
        .iter()
        .filter(|(rule, _)| rule.contains("aws"))
        .collect();
    assert_eq!(aws.len(), 1, "exactly one rule names AWS: {counts:?}");
    assert_eq!(*aws[0].1, 3, "{counts:?}");
    let listed = plugins.list();
    let redact = listed.iter().find(|p| p.name == "redact").unwrap();
    assert_eq!(redact.redactions.as_ref(), Some(&counts));
}

/// A hostile sanitizer cannot grow the metric without bound or count the host's own work:
/// names that are not rule names (uppercase, 10 KB, not ASCII) count as `other`, an
/// unterminated marker and the fail-closed marker count nothing, fields it did not replace
/// count nothing, and past the cap of rule names every new one is `other`.
#[test]
fn hostile_markers_are_bounded_and_counted_as_other() {
    let registry = Registry::new();
    let runtime = Runtime::new(&registry).unwrap();
    let s = misbehave(&runtime);
    let mark = |value: &str| {
        Event::new("test.mark")
            .field("mark", value)
            .field("note", "[REDACTED:left-alone]")
    };
    let long = format!("[REDACTED:{}]", "x".repeat(10 * 1024));
    let mut batch: Vec<Event> = [
        "[REDACTED:gitlab-pat] and [HASH:aws-access-key:0123456789abcdef]",
        "[REDACTED]",
        "[HASH:00ff00ff00ff00ff]",
        "[REDACTED:UPPER]",
        long.as_str(),
        "[REDACTED:ключ]",
        "[REDACTED:no-end",
        FAILED_CLOSED,
        "nothing to see",
    ]
    .into_iter()
    .map(mark)
    .collect();
    s.sanitize(&mut batch).unwrap();
    let expected = BTreeMap::from([
        ("aws-access-key".to_string(), 1),
        ("gitlab-pat".to_string(), 1),
        (OTHER_RULE.to_string(), 3),
        (SENSITIVE_KEY_RULE.to_string(), 2),
    ]);
    assert_eq!(redactions(&registry, "misbehave"), expected);

    // Two rule names are taken; 300 more fill the cap and spill into `other`.
    let fresh = 300;
    let mut batch: Vec<Event> = (0..fresh)
        .map(|i| mark(&format!("[REDACTED:rule-{i}]")))
        .collect();
    s.sanitize(&mut batch).unwrap();
    let counts = redactions(&registry, "misbehave");
    assert_eq!(counts.len(), MAX_RULES_PER_PLUGIN + 2, "{counts:?}");
    let accepted = MAX_RULES_PER_PLUGIN - 2;
    assert_eq!(counts[OTHER_RULE], 3 + (fresh - accepted) as u64);
    assert_eq!(counts[&format!("rule-{}", accepted - 1)], 1);
    assert!(!counts.contains_key(&format!("rule-{accepted}")));
}
