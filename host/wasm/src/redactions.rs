//! Per-rule redaction counts, read from the replacements a sanitizer's verdict applies
//! (`lookout_redactions_total{plugin,rule}`, and `redactions` in `GET /api/v1/plugins`).
//!
//! The WIT says nothing of which rule made an edit, so the host reads it from the markers
//! the replacement strings carry (the convention is in docs/plugins.md, "Redaction markers"):
//! `[REDACTED:<rule>]` and `[HASH:<rule>:<16 hex>]` anywhere in a replacement count one for
//! `<rule>` each; a replacement that is exactly `[REDACTED]` or `[HASH:<16 hex>]` (a whole
//! value under a sensitive key) counts one for `sensitive-key`. Removals, replacements
//! without a marker and the host's own fail-closed marker count nothing.
//!
//! A plugin is hostile: a rule name becomes a label only if it looks like one
//! (`[a-z0-9][a-z0-9_.-]{0,63}`), and only the first [`MAX_RULES_PER_PLUGIN`] names of a
//! plugin do; anything else is `other`. The scan must stay cheap on the pipeline thread: a
//! replacement without a marker costs one `memchr` for `[`, no allocation and no lock, and
//! any replacement is scanned in linear time whatever it holds.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use lookout_core::FAILED_CLOSED;
use parking_lot::Mutex;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use crate::error::{Error, Result};

/// Most distinct rule names counted per plugin; later ones count as [`OTHER_RULE`]. The two
/// host labels, [`SENSITIVE_KEY_RULE`] and [`OTHER_RULE`], come on top, so a plugin has at most 258
/// series.
pub const MAX_RULES_PER_PLUGIN: usize = 256;
/// The rule of a whole value replaced because its key is sensitive.
pub const SENSITIVE_KEY_RULE: &str = "sensitive-key";
/// The rule of a marker whose name is not a rule name, or is one too many.
pub const OTHER_RULE: &str = "other";

/// Longest rule name taken as a label.
const MAX_RULE_LEN: usize = 64;
const REDACTED: &str = "[REDACTED:";
const HASH: &str = "[HASH:";
/// Hex digits of a keyed hash in a `[HASH:…]` marker.
const HASH_HEX: usize = 16;
/// The rule name inside [`FAILED_CLOSED`]: the host's, and counted elsewhere
/// (`lookout_sanitizer_failures_total`), so never a plugin's rule.
const FAILED_RULE: &str = "sanitizer_failed";

/// What one marker in a replacement counts for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Marker<'a> {
    /// A rule the plugin named, and the name is a proper rule name.
    Rule(&'a str),
    /// A whole value replaced because its key is sensitive.
    SensitiveKey,
    /// A marker whose name is not a rule name (empty, too long, uppercase, not ASCII, …).
    Other,
}

impl<'a> Marker<'a> {
    pub(crate) fn label(self) -> &'a str {
        match self {
            Marker::Rule(rule) => rule,
            Marker::SensitiveKey => SENSITIVE_KEY_RULE,
            Marker::Other => OTHER_RULE,
        }
    }
}

/// The markers in one replacement, in order.
pub(crate) fn markers(replacement: &str) -> Markers<'_> {
    let whole = replacement == "[REDACTED]" || is_whole_hash(replacement);
    Markers {
        rest: if whole { "" } else { replacement },
        sensitive_key: whole,
    }
}

/// Iterator of [`markers`].
pub(crate) struct Markers<'a> {
    rest: &'a str,
    sensitive_key: bool,
}

impl<'a> Iterator for Markers<'a> {
    type Item = Marker<'a>;

    fn next(&mut self) -> Option<Marker<'a>> {
        if std::mem::take(&mut self.sensitive_key) {
            return Some(Marker::SensitiveKey);
        }
        loop {
            let candidate = &self.rest[self.rest.find('[')?..];
            if let Some(after) = candidate.strip_prefix(FAILED_CLOSED) {
                self.rest = after;
                continue;
            }
            let (body, hashed) = if let Some(body) = candidate.strip_prefix(REDACTED) {
                (body, false)
            } else if let Some(body) = candidate.strip_prefix(HASH) {
                (body, true)
            } else {
                self.rest = &candidate[1..];
                continue;
            };
            // The label runs to the next `]`. A `[` before it means this was no marker: the
            // scan resumes there, so every byte is looked at a bounded number of times.
            let Some(end) = body.bytes().position(|b| b == b'[' || b == b']') else {
                self.rest = "";
                return None;
            };
            self.rest = &body[end..];
            if body.as_bytes()[end] == b'[' {
                continue;
            }
            self.rest = &body[end + 1..];
            let label = &body[..end];
            let rule = if hashed {
                match label.rsplit_once(':') {
                    Some((rule, hex)) if is_hex(hex) => rule,
                    _ => return Some(Marker::Other),
                }
            } else {
                label
            };
            if rule == FAILED_RULE {
                continue;
            }
            return Some(if is_rule_name(rule) {
                Marker::Rule(rule)
            } else {
                Marker::Other
            });
        }
    }
}

/// `[a-z0-9][a-z0-9_.-]{0,63}`.
fn is_rule_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_RULE_LEN
        && matches!(bytes[0], b'a'..=b'z' | b'0'..=b'9')
        && bytes
            .iter()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-'))
}

fn is_hex(s: &str) -> bool {
    s.len() == HASH_HEX && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `[HASH:<16 hex>]`, the whole of it.
fn is_whole_hash(s: &str) -> bool {
    s.strip_prefix(HASH)
        .and_then(|rest| rest.strip_suffix(']'))
        .is_some_and(is_hex)
}

/// One plugin's counters by rule (shared by all its versions, as its other counters are).
pub(crate) struct RuleBook {
    plugin: String,
    family: IntCounterVec,
    rules: Mutex<Rules>,
}

#[derive(Default)]
struct Rules {
    counters: HashMap<String, IntCounter>,
    /// Names the plugin chose that have a counter (the host's two labels not included).
    named: usize,
}

impl RuleBook {
    /// Counts the markers of one replacement the host applied.
    pub(crate) fn count(&self, replacement: &str) {
        for marker in markers(replacement) {
            self.count_one(marker);
        }
    }

    fn count_one(&self, marker: Marker<'_>) {
        let mut rules = self.rules.lock();
        let mut label = marker.label();
        if let Some(counter) = rules.counters.get(label) {
            counter.inc();
            return;
        }
        let host_label = label == SENSITIVE_KEY_RULE || label == OTHER_RULE;
        if !host_label {
            if rules.named >= MAX_RULES_PER_PLUGIN {
                label = OTHER_RULE;
            } else {
                rules.named += 1;
            }
        }
        rules
            .counters
            .entry(label.to_string())
            .or_insert_with(|| self.family.with_label_values(&[&self.plugin, label]))
            .inc();
    }

    fn counts(&self) -> BTreeMap<String, u64> {
        let rules = self.rules.lock();
        rules
            .counters
            .iter()
            .map(|(rule, counter)| (rule.clone(), counter.get()))
            .collect()
    }
}

/// The `lookout_redactions_total` family and every plugin's book in it.
#[derive(Clone)]
pub(crate) struct Redactions {
    family: IntCounterVec,
    books: Arc<Mutex<HashMap<String, Arc<RuleBook>>>>,
}

impl std::fmt::Debug for Redactions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactions").finish_non_exhaustive()
    }
}

impl Redactions {
    pub(crate) fn new(registry: &Registry) -> Result<Redactions> {
        let err = |e: prometheus::Error| Error::Runtime(format!("redaction metrics: {e}"));
        let family = IntCounterVec::new(
            Opts::new(
                "lookout_redactions_total",
                "Redactions by sanitizer plugin and rule, read from the markers of the replacements it made (sensitive-key: a whole value under a sensitive key; other: a marker naming no valid rule, or past the per-plugin cap).",
            ),
            &["plugin", "rule"],
        )
        .map_err(err)?;
        registry.register(Box::new(family.clone())).map_err(err)?;
        Ok(Redactions {
            family,
            books: Arc::default(),
        })
    }

    /// The `lookout_redactions_total` family (for the names lookout keeps for its own).
    pub(crate) fn family(&self) -> &IntCounterVec {
        &self.family
    }

    /// The book of `plugin`: the same one for every version loaded under that name.
    pub(crate) fn book(&self, plugin: &str) -> Arc<RuleBook> {
        self.books
            .lock()
            .entry(plugin.to_string())
            .or_insert_with(|| {
                Arc::new(RuleBook {
                    plugin: plugin.to_string(),
                    family: self.family.clone(),
                    rules: Mutex::default(),
                })
            })
            .clone()
    }

    /// Redactions by rule of `plugin` so far (empty when it has made none).
    pub(crate) fn counts(&self, plugin: &str) -> BTreeMap<String, u64> {
        let book = self.books.lock().get(plugin).cloned();
        book.map(|b| b.counts()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(replacement: &str) -> Vec<&str> {
        markers(replacement).map(Marker::label).collect()
    }

    #[test]
    fn markers_name_their_rules_wherever_they_sit() {
        assert_eq!(labels("[REDACTED:gitlab-pat]"), ["gitlab-pat"]);
        assert_eq!(
            labels("key [REDACTED:aws-access-key] and [HASH:slack.bot_token:0123456789abcdef]!"),
            ["aws-access-key", "slack.bot_token"]
        );
        assert_eq!(
            labels("a[b[REDACTED:x1]]"),
            ["x1"],
            "stray brackets around it"
        );
        assert_eq!(labels("[REDACTED:a][REDACTED:a]"), ["a", "a"]);
    }

    #[test]
    fn a_whole_redacted_or_hashed_value_is_a_sensitive_key() {
        assert_eq!(labels("[REDACTED]"), [SENSITIVE_KEY_RULE]);
        assert_eq!(labels("[HASH:0123456789abcdef]"), [SENSITIVE_KEY_RULE]);
        assert_eq!(labels("[HASH:0123456789ABCDEF]"), [SENSITIVE_KEY_RULE]);
        // Inside a longer string they name no rule: `[REDACTED]` is no marker there, and
        // a hash without a rule is a malformed one.
        assert!(labels("was [REDACTED]").is_empty());
        assert_eq!(labels("was [HASH:0123456789abcdef]"), [OTHER_RULE]);
    }

    #[test]
    fn what_is_not_a_marker_counts_nothing() {
        for replacement in [
            "",
            "plain text",
            "[]",
            "[redacted:x]",
            "[REDACTED",
            "[REDACTED:no-end",
            "[REDACTED:no-end [REDACTED:",
            "[HASH:",
            "[[[[[[",
            FAILED_CLOSED,
        ] {
            assert!(labels(replacement).is_empty(), "{replacement:?}");
        }
        assert_eq!(FAILED_CLOSED, format!("{REDACTED}{FAILED_RULE}]"));
        assert!(
            labels("[HASH:sanitizer_failed:0123456789abcdef]").is_empty(),
            "the host's own rule is never a plugin's"
        );
    }

    #[test]
    fn hostile_rule_names_count_as_other() {
        let long = format!("[REDACTED:{}]", "a".repeat(10 * 1024));
        let just_fits = format!("[REDACTED:{}]", "a".repeat(MAX_RULE_LEN));
        let just_over = format!("[REDACTED:{}]", "a".repeat(MAX_RULE_LEN + 1));
        for replacement in [
            "[REDACTED:UPPER]",
            "[REDACTED:Gitlab-pat]",
            "[REDACTED:]",
            "[REDACTED:-leading-dash]",
            "[REDACTED:_leading]",
            "[REDACTED:has space]",
            "[REDACTED:a:b]",
            "[REDACTED:ключ]",
            "[REDACTED:emoji🔑]",
            "[REDACTED:new\nline]",
            "[HASH:rule:0123]",
            "[HASH:rule:0123456789abcdeg]",
            "[HASH:Rule:0123456789abcdef]",
            long.as_str(),
            just_over.as_str(),
        ] {
            assert_eq!(labels(replacement), [OTHER_RULE], "{replacement:?}");
        }
        assert_eq!(labels(&just_fits), ["a".repeat(MAX_RULE_LEN)]);
        // A marker cut short by another: the first is none, the second counts.
        assert_eq!(labels("[REDACTED:ab[REDACTED:cd]"), ["cd"]);
    }

    #[test]
    fn a_huge_replacement_full_of_openings_is_scanned_in_linear_time() {
        // Quadratic rescanning would take minutes here; linear takes milliseconds.
        let hostile = "[REDACTED:".repeat(200_000);
        assert!(labels(&hostile).is_empty());
        let many = "[REDACTED:r]".repeat(100_000);
        assert_eq!(markers(&many).count(), 100_000);
    }

    fn book(registry: &Registry) -> Arc<RuleBook> {
        Redactions::new(registry).unwrap().book("p")
    }

    #[test]
    fn a_plugin_gets_at_most_its_cap_of_rule_labels() {
        let registry = Registry::new();
        let book = book(&registry);
        for i in 0..MAX_RULES_PER_PLUGIN + 10 {
            book.count(&format!("[REDACTED:rule-{i}]"));
        }
        book.count("[REDACTED:rule-0] [REDACTED:rule-0]");
        book.count("[REDACTED]");
        book.count("[REDACTED:NOT-A-NAME]");
        let counts = book.counts();
        assert_eq!(counts.len(), MAX_RULES_PER_PLUGIN + 2, "{counts:?}");
        assert_eq!(counts["rule-0"], 3, "a known rule keeps counting");
        assert_eq!(
            counts[SENSITIVE_KEY_RULE], 1,
            "the host's labels are outside the cap"
        );
        assert_eq!(counts[OTHER_RULE], 10 + 1);
        assert!(!counts.contains_key(&format!("rule-{MAX_RULES_PER_PLUGIN}")));
        let series = registry.gather()[0].get_metric().len();
        assert_eq!(series, MAX_RULES_PER_PLUGIN + 2);
    }

    #[test]
    fn every_version_of_a_plugin_shares_its_book() {
        let registry = Registry::new();
        let redactions = Redactions::new(&registry).unwrap();
        redactions.book("redact").count("[REDACTED]");
        redactions.book("redact").count("[REDACTED:jwt]");
        redactions.book("allowlist").count("[REDACTED]");
        let counts = redactions.counts("redact");
        assert_eq!(
            counts,
            BTreeMap::from([("jwt".into(), 1), (SENSITIVE_KEY_RULE.into(), 1)])
        );
        assert!(redactions.counts("never-ran").is_empty());
    }
}
