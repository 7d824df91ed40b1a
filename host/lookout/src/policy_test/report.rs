//! What `lookout policy test` prints: a table per family and overall, the misses when asked,
//! the sanitizer's failures and the thresholds — as text for people or as JSON for scripts
//! (the same content). Only formats; judging and checking happen elsewhere.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::score::{Miss, Placement, Scores, Tally};
use super::thresholds::Check;

/// Events the sanitizer failed on even alone, which the bus would have failed closed.
#[derive(Clone, Debug, Default)]
pub struct Failures {
    pub events: usize,
    /// The first failure's reason.
    pub first: Option<String>,
}

/// Everything a run found.
#[derive(Debug)]
pub struct Report<'a> {
    /// The sanitizer's name, and where it came from.
    pub sanitizer: &'a str,
    pub source: &'a str,
    pub file: &'a str,
    pub scores: &'a Scores,
    pub failures: &'a Failures,
    pub checks: &'a [Check],
    /// The lines of `tp` examples whose text does not contain their needle.
    pub needle_not_in_text: &'a [usize],
    /// Whether to list the misses.
    pub misses: bool,
}

const NEEDLE_SHOWN_CHARS: usize = 60;
/// Line numbers listed in a note.
const LINES_SHOWN: usize = 10;

fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".into(), |r| format!("{:.1}%", r * 100.0))
}

fn cut(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// The failed checks, one line each (`caught b 41.0% < 60.0%`).
pub fn failed_checks(checks: &[Check]) -> Vec<String> {
    checks.iter().filter(|c| !c.held).map(check_line).collect()
}

fn check_line(check: &Check) -> String {
    let min = percent(Some(check.min));
    match check.actual {
        None => format!("{} {min} required: nothing to measure", check.name),
        Some(_) if check.held => format!("{} {} ≥ {min}", check.name, percent(check.actual)),
        Some(_) => format!("{} {} < {min}", check.name, percent(check.actual)),
    }
}

/// The report for people.
pub fn text(report: &Report<'_>) -> String {
    let scores = report.scores;
    let overall = &scores.overall;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sanitizer `{}` ({}), {} examples from {}: {} tp, {} fp",
        report.sanitizer,
        report.source,
        overall.tp + overall.fp,
        report.file,
        overall.tp,
        overall.fp
    );
    let placements: Vec<String> = Placement::ALL
        .iter()
        .map(|p| format!("{} = `{}`", p.letter(), p.key()))
        .collect();
    let _ = writeln!(
        out,
        "placements: {} (the text; the bare needle; the needle in a sentence)\n",
        placements.join(", ")
    );
    let width = scores
        .families
        .keys()
        .map(|f| f.chars().count())
        .chain(["overall".len(), "family".len()])
        .max()
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "{:<width$}  {:>5}  {:>8}  {:>8}  {:>8}  {:>7}  {:>5}  {:>8}  {:>8}  {:>8}",
        "family",
        "tp",
        "caught a",
        "caught b",
        "caught c",
        "partial",
        "fp",
        "kept a",
        "kept b",
        "kept c"
    );
    let row = |out: &mut String, name: &str, t: &Tally| {
        let [ca, cb, cc] = Placement::ALL.map(|p| percent(t.caught_rate(p)));
        let [ka, kb, kc] = Placement::ALL.map(|p| percent(t.kept_rate(p)));
        let partial: usize = Placement::ALL.iter().map(|&p| t.partial_leaks(p)).sum();
        let _ = writeln!(
            out,
            "{name:<width$}  {:>5}  {ca:>8}  {cb:>8}  {cc:>8}  {partial:>7}  {:>5}  {ka:>8}  {kb:>8}  {kc:>8}",
            t.tp, t.fp
        );
    };
    for (family, tally) in &scores.families {
        row(&mut out, family, tally);
    }
    row(&mut out, "overall", overall);
    if report.misses {
        for (family, tally) in &scores.families {
            if tally.misses.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                "\nmisses in `{family}` (the first {}):",
                tally.misses.len()
            );
            for miss in &tally.misses {
                let _ = writeln!(
                    out,
                    "  line {:<5} {} {:<12} needle {:?}\n      got {}",
                    miss.line,
                    miss.placement.letter(),
                    miss.judgement.as_str(),
                    cut(&miss.needle, NEEDLE_SHOWN_CHARS),
                    miss.output
                        .as_deref()
                        .unwrap_or("nothing (the sanitizer left the event out)")
                );
            }
        }
    }
    if !report.needle_not_in_text.is_empty() {
        let lines: Vec<String> = report
            .needle_not_in_text
            .iter()
            .take(LINES_SHOWN)
            .map(usize::to_string)
            .collect();
        let more = if report.needle_not_in_text.len() > LINES_SHOWN {
            ", …"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "\nnote: {} tp examples do not contain their needle in their text, so (a) catches them for free (lines {}{more})",
            report.needle_not_in_text.len(),
            lines.join(", ")
        );
    }
    if report.failures.events > 0 {
        let _ = writeln!(
            out,
            "\nthe sanitizer failed on {} events (the bus would fail them closed, so their secrets count as caught): {}",
            report.failures.events,
            report.failures.first.as_deref().unwrap_or("?")
        );
    }
    if !report.checks.is_empty() {
        let _ = writeln!(out, "\nthresholds:");
        for check in report.checks {
            let verdict = if check.held { "ok" } else { "FAILED" };
            let _ = writeln!(out, "  {:<36} {verdict}", check_line(check));
        }
    }
    out
}

fn per<T: Into<Value>>(f: impl Fn(Placement) -> T) -> Value {
    Value::Object(
        Placement::ALL
            .into_iter()
            .map(|p| (p.letter().to_string(), f(p).into()))
            .collect(),
    )
}

fn miss_json(miss: &Miss) -> Value {
    json!({
        "line": miss.line,
        "placement": miss.placement.letter().to_string(),
        "field": miss.placement.key(),
        "judgement": miss.judgement.as_str(),
        "needle": miss.needle,
        "output": miss.output,
    })
}

fn tally_json(tally: &Tally, misses: bool) -> Value {
    let mut value = json!({
        "tp": tally.tp,
        "fp": tally.fp,
        "caught": per(|p| tally.caught(p)),
        "caught_rate": per(|p| tally.caught_rate(p)),
        "partial_leaks": per(|p| tally.partial_leaks(p)),
        "kept": per(|p| tally.kept(p)),
        "kept_rate": per(|p| tally.kept_rate(p)),
    });
    if misses {
        value["misses"] = tally.misses.iter().map(miss_json).collect();
    }
    value
}

/// The report for scripts: rates are shares (0–1), `null` where there was nothing to measure.
pub fn json(report: &Report<'_>) -> Value {
    let families: Vec<Value> = report
        .scores
        .families
        .iter()
        .map(|(family, tally)| {
            let mut value = tally_json(tally, report.misses);
            value["family"] = family.as_str().into();
            value
        })
        .collect();
    json!({
        "sanitizer": report.sanitizer,
        "source": report.source,
        "file": report.file,
        "placements": per(|p| p.key()),
        "families": families,
        "overall": tally_json(&report.scores.overall, false),
        "needle_not_in_text": report.needle_not_in_text,
        "failed_closed": {
            "events": report.failures.events,
            "first_reason": report.failures.first,
        },
        "thresholds": report.checks.iter().map(|c| json!({
            "check": c.name,
            "min": c.min,
            "actual": c.actual,
            "held": c.held,
        })).collect::<Vec<_>>(),
        "passed": report.checks.iter().all(|c| c.held),
    })
}
