//! How `lookout policy test` judges what came out of the sanitizer: the three placements an
//! example is sent in, whether a secret was caught (or partly leaked) and whether a
//! non-secret was kept, and the counts per family. Knows nothing of WASM or of output.

use std::collections::BTreeMap;

use lookout_core::{Event, FieldValue};

use super::examples::{Example, ExampleKind};

/// Misses kept per family for `--misses`.
pub const MISSES_KEPT: usize = 20;
/// How much of a sanitized event a miss shows.
pub const MISS_OUTPUT_CHARS: usize = 200;
/// The shortest piece of a secret left in the output that counts as a partial leak.
pub const PARTIAL_LEAK_MIN_CHARS: usize = 8;

/// Where an example's string goes: each is one event with one field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// (a) the whole `text` as `message`.
    Message,
    /// (b) the bare `needle` as `value`.
    Value,
    /// (c) the `needle` inside a sentence, as `detail`.
    Detail,
}

impl Placement {
    pub const ALL: [Placement; 3] = [Placement::Message, Placement::Value, Placement::Detail];

    /// Its letter in the table and in `--min-caught`.
    pub fn letter(self) -> char {
        match self {
            Placement::Message => 'a',
            Placement::Value => 'b',
            Placement::Detail => 'c',
        }
    }

    /// The field's key.
    pub fn key(self) -> &'static str {
        match self {
            Placement::Message => "message",
            Placement::Value => "value",
            Placement::Detail => "detail",
        }
    }

    /// The field's value for `example`.
    pub fn value(self, example: &Example) -> String {
        match self {
            Placement::Message => example.text.clone(),
            Placement::Value => example.needle.clone(),
            Placement::Detail => format!("deploy failed with {} at step 3", example.needle),
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What happened to one example in one placement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judgement {
    /// A secret, gone without a trace.
    Caught,
    /// A secret, still there whole.
    Missed,
    /// A secret, gone whole but with a long piece of it still there.
    PartialLeak,
    /// A non-secret, unchanged.
    Kept,
    /// A non-secret, changed or gone.
    Changed,
}

impl Judgement {
    pub fn as_str(self) -> &'static str {
        match self {
            Judgement::Caught => "caught",
            Judgement::Missed => "missed",
            Judgement::PartialLeak => "partial leak",
            Judgement::Kept => "kept",
            Judgement::Changed => "changed",
        }
    }

    fn is_miss(self) -> bool {
        matches!(
            self,
            Judgement::Missed | Judgement::PartialLeak | Judgement::Changed
        )
    }
}

/// Judges `out`, what arrived of `example` sent in `placement` (`None`: nothing arrived).
pub fn judge(example: &Example, placement: Placement, out: Option<&Event>) -> Judgement {
    match example.kind {
        ExampleKind::Tp => {
            let Some(event) = out else {
                return Judgement::Caught;
            };
            let strings = strings_of(event);
            if strings.iter().any(|s| s.contains(example.needle.as_str())) {
                Judgement::Missed
            } else if strings.iter().any(|s| leaks_part_of(&example.needle, s)) {
                Judgement::PartialLeak
            } else {
                Judgement::Caught
            }
        }
        ExampleKind::Fp => {
            let sent = FieldValue::Str(placement.value(example));
            let kept = out.is_some_and(|e| {
                e.fields
                    .iter()
                    .any(|f| f.key == placement.key() && f.value == sent)
            });
            if kept {
                Judgement::Kept
            } else {
                Judgement::Changed
            }
        }
    }
}

/// Every key and value of the event's fields, as text.
fn strings_of(event: &Event) -> Vec<String> {
    let mut strings = Vec::with_capacity(event.fields.len() * 2);
    for field in &event.fields {
        strings.push(field.key.clone());
        strings.push(match &field.value {
            FieldValue::Str(s) => s.clone(),
            FieldValue::Int(n) => n.to_string(),
            FieldValue::Float(x) => x.to_string(),
            FieldValue::Bool(b) => b.to_string(),
        });
    }
    strings
}

/// Whether `haystack` holds a contiguous piece of `needle` at least
/// [`PARTIAL_LEAK_MIN_CHARS`] long and at least half the needle (in characters).
fn leaks_part_of(needle: &str, haystack: &str) -> bool {
    let bounds: Vec<usize> = needle
        .char_indices()
        .map(|(i, _)| i)
        .chain([needle.len()])
        .collect();
    let chars = bounds.len() - 1;
    let piece = PARTIAL_LEAK_MIN_CHARS.max(chars.div_ceil(2));
    // Any longer common piece contains one of exactly this length.
    piece <= chars
        && (0..=chars - piece).any(|i| haystack.contains(&needle[bounds[i]..bounds[i + piece]]))
}

/// A miss, for `--misses`.
#[derive(Clone, Debug, PartialEq)]
pub struct Miss {
    pub line: usize,
    pub placement: Placement,
    pub judgement: Judgement,
    pub needle: String,
    /// The sanitized event's fields as JSON, cut at [`MISS_OUTPUT_CHARS`]; `None` when
    /// nothing arrived.
    pub output: Option<String>,
}

/// The counts of one family (or of all of them), per placement.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    pub tp: usize,
    pub fp: usize,
    pub caught: [usize; 3],
    pub partial_leaks: [usize; 3],
    pub kept: [usize; 3],
    /// The first [`MISSES_KEPT`] misses.
    pub misses: Vec<Miss>,
}

impl Tally {
    /// Caught / tp in `placement`; `None` without any tp.
    pub fn caught_rate(&self, placement: Placement) -> Option<f64> {
        rate(self.caught[placement.index()], self.tp)
    }

    /// Kept / fp in `placement`; `None` without any fp.
    pub fn kept_rate(&self, placement: Placement) -> Option<f64> {
        rate(self.kept[placement.index()], self.fp)
    }

    pub fn caught(&self, placement: Placement) -> usize {
        self.caught[placement.index()]
    }

    pub fn kept(&self, placement: Placement) -> usize {
        self.kept[placement.index()]
    }

    pub fn partial_leaks(&self, placement: Placement) -> usize {
        self.partial_leaks[placement.index()]
    }

    fn record(&mut self, example: &Example, placement: Placement, out: Option<&Event>) {
        let judgement = judge(example, placement, out);
        let i = placement.index();
        match judgement {
            Judgement::Caught => self.caught[i] += 1,
            Judgement::PartialLeak => self.partial_leaks[i] += 1,
            Judgement::Kept => self.kept[i] += 1,
            Judgement::Missed | Judgement::Changed => {}
        }
        if judgement.is_miss() && self.misses.len() < MISSES_KEPT {
            self.misses.push(Miss {
                line: example.line,
                placement,
                judgement,
                needle: example.needle.clone(),
                output: out.map(|e| truncate(&fields_json(e), MISS_OUTPUT_CHARS)),
            });
        }
    }
}

fn rate(n: usize, of: usize) -> Option<f64> {
    (of > 0).then(|| n as f64 / of as f64)
}

fn fields_json(event: &Event) -> String {
    let fields: serde_json::Map<String, serde_json::Value> = event
        .fields
        .iter()
        .map(|f| {
            let value = serde_json::to_value(&f.value).unwrap_or(serde_json::Value::Null);
            (f.key.clone(), value)
        })
        .collect();
    serde_json::Value::Object(fields).to_string()
}

fn truncate(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// The counts per family and overall.
#[derive(Debug, Default)]
pub struct Scores {
    pub families: BTreeMap<String, Tally>,
    pub overall: Tally,
}

impl Scores {
    /// Counts `example` once; each of its placements is judged as it is recorded.
    pub fn count(&mut self, example: &Example) {
        for tally in [
            self.families.entry(example.family.clone()).or_default(),
            &mut self.overall,
        ] {
            match example.kind {
                ExampleKind::Tp => tally.tp += 1,
                ExampleKind::Fp => tally.fp += 1,
            }
        }
    }

    /// Records what came out of `example` in `placement`.
    pub fn record(&mut self, example: &Example, placement: Placement, out: Option<&Event>) {
        self.families
            .entry(example.family.clone())
            .or_default()
            .record(example, placement, out);
        self.overall.record(example, placement, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(kind: ExampleKind, needle: &str) -> Example {
        Example {
            line: 1,
            text: format!("token: {needle}"),
            needle: needle.into(),
            kind,
            family: "f".into(),
        }
    }

    fn out(key: &str, value: &str) -> Event {
        Event::new("policy.test").field(key, value)
    }

    #[test]
    fn a_secret_is_caught_only_when_no_long_piece_of_it_is_left() {
        let tp = example(ExampleKind::Tp, "ghp_abcdefghijklmnopqrstuvwxyz0123456789");
        let judge = |value: &str| judge(&tp, Placement::Value, Some(&out("value", value)));
        assert_eq!(judge("[REDACTED:api_token]"), Judgement::Caught);
        assert_eq!(judge(&tp.needle), Judgement::Missed);
        assert_eq!(
            judge(&format!("x {} y", tp.needle.to_uppercase())),
            Judgement::Caught,
            "a different string is not the secret"
        );
        // 20 of 40 characters left: half, and at least 8.
        assert_eq!(
            judge("ghp_abcdefghijklmnop[REDACTED]"),
            Judgement::PartialLeak
        );
        assert_eq!(judge("[REDACTED]rstuvwxyz0123456789"), Judgement::Caught);
        assert_eq!(judge("ghp_abcdefghijklmno"), Judgement::Caught, "19 < 20");
        // Short secrets: a piece under 8 characters never counts.
        let short = example(ExampleKind::Tp, "hunter2hunter");
        let leak = |value: &str| judge_value(&short, value);
        assert_eq!(leak("hunter2[REDACTED]"), Judgement::Caught);
        assert_eq!(leak("hunter2h[REDACTED]"), Judgement::PartialLeak);
        // Keys count too, and an event left out leaks nothing.
        let tp_in_key = Some(out(&tp.needle, "x"));
        assert_eq!(
            super::judge(&tp, Placement::Value, tp_in_key.as_ref()),
            Judgement::Missed
        );
        assert_eq!(super::judge(&tp, Placement::Value, None), Judgement::Caught);
    }

    fn judge_value(example: &Example, value: &str) -> Judgement {
        judge(example, Placement::Value, Some(&out("value", value)))
    }

    #[test]
    fn a_non_secret_is_kept_only_when_its_field_arrives_unchanged() {
        let fp = example(ExampleKind::Fp, "worker 3 started");
        let sent = Placement::Detail.value(&fp);
        assert_eq!(sent, "deploy failed with worker 3 started at step 3");
        let judge = |event: Option<Event>| judge(&fp, Placement::Detail, event.as_ref());
        assert_eq!(judge(Some(out("detail", &sent))), Judgement::Kept);
        assert_eq!(judge(Some(out("detail", "[REDACTED]"))), Judgement::Changed);
        assert_eq!(judge(Some(out("message", &sent))), Judgement::Changed);
        assert_eq!(judge(None), Judgement::Changed);
    }

    #[test]
    fn misses_are_counted_per_family_and_overall_and_kept_up_to_the_limit() {
        let mut scores = Scores::default();
        let tp = example(ExampleKind::Tp, "AKIAQ4WZ7NJ3HXK2VB5M");
        for _ in 0..MISSES_KEPT + 5 {
            scores.count(&tp);
            scores.record(&tp, Placement::Message, Some(&out("message", &tp.text)));
        }
        let family = &scores.families["f"];
        assert_eq!((family.tp, family.caught(Placement::Message)), (25, 0));
        assert_eq!(family.misses.len(), MISSES_KEPT);
        assert_eq!(family.caught_rate(Placement::Message), Some(0.0));
        assert_eq!(family.kept_rate(Placement::Message), None);
        assert_eq!(scores.overall, *family);
        let long = "x".repeat(500);
        let mut tally = Tally::default();
        tally.record(&tp, Placement::Value, Some(&out("value", &long)));
        let miss = tally.misses.first();
        assert!(miss.is_none(), "caught is not a miss");
        let fp = example(ExampleKind::Fp, "y");
        tally.record(&fp, Placement::Value, Some(&out("value", &long)));
        let shown = tally.misses[0].output.as_deref().unwrap();
        assert_eq!(shown.chars().count(), MISS_OUTPUT_CHARS + 1, "{shown}");
        assert!(shown.starts_with("{\"value\":\"xxx") && shown.ends_with('…'));
    }
}
