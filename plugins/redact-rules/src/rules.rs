//! Rules as data: a rule is an id, a regex, the keywords that must occur for it to run, the
//! capture group that is the secret, a minimum entropy and allow-lists. The default set is
//! `rules/default.toml`; operators add their own in the same format, which is gitleaks' TOML
//! (`[[rules]]`), so rules people already keep work here unchanged.
//!
//! Regexes are Rust `regex` (RE2 syntax) run over bytes with Unicode off: `\w` is
//! `[0-9A-Za-z_]` and `(?i)` folds ASCII — secrets are ASCII, and ASCII classes keep the
//! compiled rules small inside the plugin. What a rule file cannot mean for events (file
//! paths, commits, composite rules) is refused, naming the rule and the field.

use std::cell::OnceCell;
use std::fmt;

use regex::bytes::{Regex, RegexBuilder};
use serde::Deserialize;

/// Why a rule file was refused; the message names the rule and the field.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleError(pub String);

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RuleError {}

/// Which text an allow-list regex is matched against (gitleaks' `regexTarget`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    Secret,
    Match,
    Line,
}

/// Values that are never secrets: a regex hit or a stopword inside the secret lets it pass.
#[derive(Debug)]
pub(crate) struct Allowlist {
    regexes: Vec<Regex>,
    stopwords: Vec<String>,
    target: Target,
    /// `AND`: every given criterion must hold; `OR` (default): any.
    all: bool,
}

impl Allowlist {
    fn allows(&self, secret: &[u8], whole: &[u8], line: &[u8]) -> bool {
        let text = match self.target {
            Target::Secret => secret,
            Target::Match => whole,
            Target::Line => line,
        };
        let by_regex =
            (!self.regexes.is_empty()).then(|| self.regexes.iter().any(|r| r.is_match(text)));
        let by_word = (!self.stopwords.is_empty()).then(|| {
            let lower = secret.to_ascii_lowercase();
            self.stopwords
                .iter()
                .any(|w| contains(&lower, w.as_bytes()))
        });
        match (by_regex, by_word) {
            (Some(a), Some(b)) if self.all => a && b,
            (Some(a), Some(b)) => a || b,
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => false,
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// One detection rule.
#[derive(Debug)]
pub struct Rule {
    pub id: String,
    pattern: String,
    /// Compiled on first use: a plugin's `init` then costs the parse, not 167 regex
    /// compilations (each new instance — after a trap, say — runs `init` again). Operator
    /// rules are compiled while loading, so a bad one is refused at the swap.
    regex: OnceCell<Regex>,
    /// Lowercase; the rule runs only on text containing one (any ASCII case). Empty: always.
    pub keywords: Vec<String>,
    secret_group: usize,
    entropy: Option<f64>,
    allowlists: Vec<Allowlist>,
}

impl Rule {
    /// A rule without keywords or allow-lists (a `pattern.<name>` of the plugin config).
    pub fn pattern(id: &str, regex: &str) -> Result<Rule, RuleError> {
        check_id(id)?;
        let compiled = compile(regex)
            .map_err(|e| RuleError(format!("rule `{id}`: field `regex` does not compile: {e}")))?;
        Ok(Rule {
            id: id.to_string(),
            secret_group: 0,
            pattern: regex.to_string(),
            regex: OnceCell::from(compiled),
            keywords: Vec::new(),
            entropy: None,
            allowlists: Vec::new(),
        })
    }

    /// Every secret this rule finds in `text`, as byte ranges, after entropy and allow-lists.
    pub(crate) fn find(&self, text: &[u8], global: &[Allowlist], out: &mut Vec<(usize, usize)>) {
        let regex = self
            .regex
            .get_or_init(|| compile(&self.pattern).expect("checked when the rule was loaded"));
        for caps in regex.captures_iter(text) {
            let whole = caps.get(0).expect("group 0 always matches");
            let Some(secret) = caps.get(self.secret_group).or(Some(whole)) else {
                continue;
            };
            if secret.is_empty() {
                continue;
            }
            let value = secret.as_bytes();
            if self.entropy.is_some_and(|min| entropy(value) < min) {
                continue;
            }
            let line = line_around(text, whole.start(), whole.end());
            if self
                .allowlists
                .iter()
                .chain(global)
                .any(|a| a.allows(value, whole.as_bytes(), line))
            {
                continue;
            }
            out.push((secret.start(), secret.end()));
        }
    }
}

fn line_around(text: &[u8], start: usize, end: usize) -> &[u8] {
    let from = text[..start]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let to = text[end..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(text.len(), |p| p + end);
    &text[from..to]
}

/// Shannon entropy of `bytes`, in bits per byte.
pub fn entropy(bytes: &[u8]) -> f64 {
    if bytes.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in bytes {
        counts[b as usize] += 1;
    }
    let n = bytes.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

fn compile(regex: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(regex)
        .unicode(false)
        // Rule regexes are data from operators: bound what one may cost to compile and hold
        // (167 rules × 256 KiB of lazy-DFA cache is the worst case; a few KiB each is usual).
        .size_limit(4 << 20)
        .dfa_size_limit(256 << 10)
        .build()
}

/// A set of rules and the allow-lists that apply to all of them.
#[derive(Debug, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    allowlists: Vec<Allowlist>,
}

impl RuleSet {
    /// The rules built into the plugin (`rules/default.toml`).
    pub fn builtin() -> RuleSet {
        RuleSet::parse(DEFAULT_RULES, false).expect("the built-in rules are valid (tested)")
    }

    /// Parses rules in gitleaks' TOML format. Unknown or unsupported fields, a missing id or
    /// regex, a regex that does not compile and duplicate ids are refused, by rule and field.
    pub fn from_toml(text: &str) -> Result<RuleSet, RuleError> {
        RuleSet::parse(text, true)
    }

    /// Compiles every rule's regex now (the built-in ones compile on first use).
    pub fn compile_all(&self) -> Result<(), RuleError> {
        for rule in &self.rules {
            if rule.regex.get().is_none() {
                let regex = compile(&rule.pattern).map_err(|e| {
                    RuleError(format!(
                        "rule `{}`: field `regex` does not compile: {}",
                        rule.id,
                        one_line(&e.to_string())
                    ))
                })?;
                let _ = rule.regex.set(regex);
            }
        }
        Ok(())
    }

    fn parse(text: &str, eager: bool) -> Result<RuleSet, RuleError> {
        let file: File = toml::from_str(text)
            .map_err(|e| RuleError(format!("rules: {}", one_line(&e.to_string()))))?;
        let mut set = RuleSet::default();
        if let Some(extend) = file.extend {
            let _ = extend;
            return Err(RuleError(
                "rules: field `extend` is not supported (the built-in rules always apply; add rules beside them)".into(),
            ));
        }
        for list in file.allowlist.into_iter().chain(file.allowlists) {
            set.allowlists.push(list.build("the global allowlist")?);
        }
        for (index, raw) in file.rules.into_iter().enumerate() {
            let id = raw
                .get("id")
                .and_then(toml::Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| RuleError(format!("rules[{index}]: field `id` is missing")))?;
            let spec: RuleSpec = raw.try_into().map_err(|e: toml::de::Error| {
                RuleError(format!("rule `{id}`: {}", one_line(e.message())))
            })?;
            if set.rules.iter().any(|r| r.id == id) {
                return Err(RuleError(format!("rule `{id}`: field `id` is used twice")));
            }
            set.rules.push(spec.build(&id, eager)?);
        }
        Ok(set)
    }

    /// Adds `other`'s rules; a rule with an id already here replaces it (so an operator can
    /// tune a built-in rule by redefining it).
    pub fn extend(&mut self, other: RuleSet) {
        for rule in other.rules {
            if let Some(at) = self.rules.iter().position(|r| r.id == rule.id) {
                self.rules[at] = rule;
            } else {
                self.rules.push(rule);
            }
        }
        self.allowlists.extend(other.allowlists);
    }

    /// Drops the rules with these ids; an id that names no rule is an error.
    pub fn disable(&mut self, ids: &[&str]) -> Result<(), RuleError> {
        for id in ids {
            let Some(at) = self.rules.iter().position(|r| r.id == *id) else {
                return Err(RuleError(format!(
                    "config `disabled_rules`: no rule `{id}`"
                )));
            };
            self.rules.remove(at);
        }
        Ok(())
    }

    pub fn push(&mut self, rule: Rule) {
        self.rules.push(rule);
    }

    pub(crate) fn global_allowlists(&self) -> &[Allowlist] {
        &self.allowlists
    }
}

/// A rule's id names it in markers and metric labels: short, lowercase, no spaces.
fn check_id(id: &str) -> Result<(), RuleError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        });
    if ok {
        Ok(())
    } else {
        Err(RuleError(format!(
            "rule `{id}`: field `id` must be 1–64 of a-z, 0-9, `-`, `_`, `.` (it names the rule in markers and metric labels)"
        )))
    }
}

const DEFAULT_RULES: &str = include_str!("../rules/default.toml");

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    #[allow(dead_code)]
    title: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    extend: Option<toml::Value>,
    #[serde(default)]
    allowlist: Option<AllowlistSpec>,
    #[serde(default)]
    allowlists: Vec<AllowlistSpec>,
    #[serde(default)]
    rules: Vec<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RuleSpec {
    #[allow(dead_code)]
    id: String,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    regex: Option<String>,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    secret_group: Option<usize>,
    #[serde(default)]
    entropy: Option<f64>,
    #[serde(default)]
    #[allow(dead_code)]
    tags: Vec<String>,
    #[serde(default)]
    allowlist: Option<AllowlistSpec>,
    #[serde(default)]
    allowlists: Vec<AllowlistSpec>,
}

impl RuleSpec {
    fn build(self, id: &str, eager: bool) -> Result<Rule, RuleError> {
        let err =
            |field: &str, why: String| RuleError(format!("rule `{id}`: field `{field}` {why}"));
        check_id(id)?;
        let pattern = self.regex.ok_or_else(|| err("regex", "is missing (rules matching only file paths are not supported: events have no paths)".into()))?;
        // The group count comes from the parse alone; compiling is left for first use when
        // the rules are our own (tested), done now when they are an operator's.
        let groups = regex_syntax::ParserBuilder::new()
            .unicode(false)
            .utf8(false)
            .build()
            .parse(&pattern)
            .map(|hir| hir.properties().explicit_captures_len())
            .map_err(|e| {
                err(
                    "regex",
                    format!("does not compile: {}", one_line(&e.to_string())),
                )
            })?;
        let regex = OnceCell::new();
        if eager {
            let compiled = compile(&pattern).map_err(|e| {
                err(
                    "regex",
                    format!("does not compile: {}", one_line(&e.to_string())),
                )
            })?;
            let _ = regex.set(compiled);
        }
        let secret_group = match self.secret_group {
            Some(g) if g > groups => {
                return Err(err(
                    "secretGroup",
                    format!("is {g}, but the regex has {groups} group(s)"),
                ));
            }
            Some(g) => g,
            None => usize::from(groups > 0),
        };
        if let Some(e) = self.entropy
            && !(0.0..=8.0).contains(&e)
        {
            return Err(err("entropy", format!("is {e}; bits per byte lie in 0–8")));
        }
        let mut keywords = Vec::new();
        for k in self.keywords {
            if k.is_empty() || !k.is_ascii() {
                return Err(err(
                    "keywords",
                    format!("has {k:?}: keywords are non-empty ASCII"),
                ));
            }
            keywords.push(k.to_ascii_lowercase());
        }
        let mut allowlists = Vec::new();
        for list in self.allowlist.into_iter().chain(self.allowlists) {
            allowlists.push(list.build(&format!("rule `{id}`"))?);
        }
        Ok(Rule {
            id: id.to_string(),
            pattern,
            regex,
            keywords,
            secret_group,
            entropy: self.entropy,
            allowlists,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AllowlistSpec {
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    condition: Option<String>,
    #[serde(default)]
    regex_target: Option<String>,
    #[serde(default)]
    regexes: Vec<String>,
    #[serde(default)]
    stopwords: Vec<String>,
    /// Refused with a reason: events have no file paths or commits.
    #[serde(default)]
    paths: Option<toml::Value>,
    #[serde(default)]
    commits: Option<toml::Value>,
}

impl AllowlistSpec {
    fn build(self, whose: &str) -> Result<Allowlist, RuleError> {
        let err =
            |field: &str, why: &str| RuleError(format!("{whose}: allowlist field `{field}` {why}"));
        if self.paths.is_some() {
            return Err(err("paths", "is not supported (events have no file paths)"));
        }
        if self.commits.is_some() {
            return Err(err("commits", "is not supported (events have no commits)"));
        }
        let target = match self.regex_target.as_deref() {
            None | Some("secret") => Target::Secret,
            Some("match") => Target::Match,
            Some("line") => Target::Line,
            Some(_) => return Err(err("regexTarget", "must be `secret`, `match` or `line`")),
        };
        let all = match self
            .condition
            .as_deref()
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            None | Some("OR") => false,
            Some("AND") => true,
            Some(_) => return Err(err("condition", "must be `OR` or `AND`")),
        };
        let mut regexes = Vec::new();
        for r in &self.regexes {
            regexes.push(compile(r).map_err(|e| {
                RuleError(format!(
                    "{whose}: allowlist field `regexes` has one that does not compile: {}",
                    one_line(&e.to_string())
                ))
            })?);
        }
        Ok(Allowlist {
            regexes,
            stopwords: self
                .stopwords
                .iter()
                .map(|w| w.to_ascii_lowercase())
                .collect(),
            target,
            all,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitleaks_rules_load_and_find_their_secret_group() {
        let set = RuleSet::from_toml(
            r#"
title = "mine"
[[rules]]
id = "acme-key"
description = "Acme key"
regex = '''(?i)\b(acme_[a-z0-9]{8})\b'''
keywords = ["ACME_"]
entropy = 2.0
tags = ["key"]
[[rules.allowlists]]
regexes = ['''^acme_0{8}$''']
"#,
        )
        .unwrap();
        let rule = &set.rules[0];
        assert_eq!(rule.keywords, ["acme_"]);
        let mut out = Vec::new();
        rule.find(b"k ACME_ab12cd34 and acme_00000000", &[], &mut out);
        assert_eq!(out, [(2, 15)]);
    }

    #[test]
    fn bad_rules_are_refused_naming_the_rule_and_the_field() {
        for (text, expect) in [
            (
                "[[rules]]\nid = \"x\"\nregex = \"(\"",
                "rule `x`: field `regex` does not compile",
            ),
            (
                "[[rules]]\nid = \"x\"\nregex = \"a\"\npath = \"y\"",
                "rule `x`: unknown field `path`",
            ),
            (
                "[[rules]]\nid = \"x\"\nregex = \"(a)\"\nsecretGroup = 2",
                "rule `x`: field `secretGroup` is 2",
            ),
            (
                "[[rules]]\nid = \"x\"\nregex = \"a\"\n[[rules.allowlists]]\npaths = [\"a\"]",
                "rule `x`: allowlist field `paths`",
            ),
            (
                "[[rules]]\nregex = \"a\"",
                "rules[0]: field `id` is missing",
            ),
            (
                "[[rules]]\nid = \"x\"",
                "rule `x`: field `regex` is missing",
            ),
            (
                "[[rules]]\nid = \"X Y\"\nregex = \"a\"",
                "rule `X Y`: field `id` must be",
            ),
            (
                "[[rules]]\nid = \"x\"\nregex = \"a\"\n[[rules]]\nid = \"x\"\nregex = \"b\"",
                "rule `x`: field `id` is used twice",
            ),
            (
                "[extend]\nuseDefault = true",
                "field `extend` is not supported",
            ),
        ] {
            let err = RuleSet::from_toml(text).unwrap_err().to_string();
            assert!(err.contains(expect), "{text:?} -> {err}");
        }
    }

    #[test]
    fn entropy_is_bits_per_byte() {
        assert_eq!(entropy(b"aaaa"), 0.0);
        assert!((entropy(b"abcd") - 2.0).abs() < 1e-9);
    }
}
