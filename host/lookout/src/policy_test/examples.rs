//! The examples file of `lookout policy test`: JSONL, one object a line with `text`, `needle`,
//! `kind` (`tp`: a real secret, `fp`: something that must not be flagged) and, optionally,
//! `family` and `rule`. These files come from elsewhere (scanners' test suites, an operator's
//! own cases), so unknown fields are ignored; a line that is not an example is an error
//! naming its number and what is wrong, and nothing is measured.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The group an example without `family` or `rule` is counted in.
pub const DEFAULT_FAMILY: &str = "all";

/// What an example is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExampleKind {
    /// A real secret: its needle must not come through.
    Tp,
    /// Not a secret: its text must come through unchanged.
    Fp,
}

/// One example, as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    /// Its line in the file (1-based), for the list of misses.
    pub line: usize,
    pub text: String,
    pub needle: String,
    pub kind: ExampleKind,
    /// `family`, else `rule`, else [`DEFAULT_FAMILY`].
    pub family: String,
}

/// Why an examples file cannot be measured.
#[derive(Debug, thiserror::Error)]
pub enum ExamplesError {
    #[error("cannot read {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: line {line}: {reason}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{}: no examples in it", path.display())]
    Empty { path: PathBuf },
}

const EXPECTING: &str = "an object with `text`, `needle` and `kind`";

/// A line as written; serde ignores the fields we do not know.
#[derive(Deserialize)]
#[serde(expecting = "an object with `text`, `needle` and `kind`")]
struct Line {
    text: String,
    needle: String,
    kind: ExampleKind,
    #[serde(default)]
    family: Option<String>,
    #[serde(default)]
    rule: Option<String>,
}

/// Reads every example of `path`; blank lines are skipped.
pub fn read(path: &Path) -> Result<Vec<Example>, ExamplesError> {
    let bytes = std::fs::read(path).map_err(|error| ExamplesError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let examples = parse(&bytes).map_err(|(line, reason)| ExamplesError::Line {
        path: path.to_path_buf(),
        line,
        reason,
    })?;
    if examples.is_empty() {
        return Err(ExamplesError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(examples)
}

/// The examples in `bytes`, or the first bad line's number and what is wrong with it.
fn parse(bytes: &[u8]) -> Result<Vec<Example>, (usize, String)> {
    let mut examples = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let text = std::str::from_utf8(raw)
            .map_err(|e| (line, format!("not UTF-8 ({e})")))?
            .trim_end_matches('\r');
        if text.trim().is_empty() {
            continue;
        }
        examples.push(parse_line(text).map_err(|reason| (line, reason))?.at(line));
    }
    Ok(examples)
}

fn parse_line(text: &str) -> Result<Example, String> {
    // serde would take an array as the fields in order: not what anyone writing one means.
    if !text.trim_start().starts_with('{') {
        return Err(format!("not a JSON object: expected {EXPECTING}"));
    }
    let raw: Line = serde_json::from_str(text).map_err(|e| {
        // Every line is parsed alone, so serde's "at line 1" would only mislead.
        let message = e.to_string();
        let reason = message
            .rsplit_once(" at line ")
            .map_or(message.as_str(), |(reason, _)| reason);
        format!("{reason} (column {})", e.column())
    })?;
    if raw.needle.is_empty() {
        // An empty needle is in every output: it would measure nothing.
        return Err("`needle` is empty".into());
    }
    let family = [raw.family, raw.rule]
        .into_iter()
        .flatten()
        .find(|f| !f.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_FAMILY.into());
    Ok(Example {
        line: 0,
        text: raw.text,
        needle: raw.needle,
        kind: raw.kind,
        family,
    })
}

impl Example {
    fn at(mut self, line: usize) -> Example {
        self.line = line;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_are_grouped_by_family_then_rule_and_unknown_fields_are_ignored() {
        let file = concat!(
            r#"{"text":"a","needle":"a","kind":"tp","family":"aws","rule":"aws-key","template":"x"}"#,
            "\n\n",
            r#"{"text":"b","needle":"b","kind":"fp","rule":"github-pat"}"#,
            "\r\n",
            r#"{"text":"c","needle":"c","kind":"fp","family":""}"#,
            "\n",
        );
        let examples = parse(file.as_bytes()).unwrap();
        let got: Vec<_> = examples
            .iter()
            .map(|e| (e.line, e.family.as_str(), e.kind))
            .collect();
        assert_eq!(
            got,
            [
                (1, "aws", ExampleKind::Tp),
                (3, "github-pat", ExampleKind::Fp),
                (4, "all", ExampleKind::Fp)
            ]
        );
    }

    #[test]
    fn a_bad_line_is_named_with_what_is_wrong() {
        let good = r#"{"text":"a","needle":"a","kind":"tp"}"#;
        for (bad, says) in [
            (r#"{"text":"a","kind":"tp"}"#, "missing field `needle`"),
            (r#"{"text":"a","needle":"a","kind":"maybe"}"#, "`maybe`"),
            (
                r#"{"text":"a","needle":"","kind":"fp"}"#,
                "`needle` is empty",
            ),
            (r#"{"text":1,"needle":"a","kind":"fp"}"#, "invalid type"),
            (
                "[1, 2]",
                "not a JSON object: expected an object with `text`",
            ),
            ("\"text\"", "not a JSON object"),
            ("{not json", "key must be a string"),
        ] {
            let file = format!("{good}\n{bad}\n{good}\n");
            let (line, reason) = parse(file.as_bytes()).unwrap_err();
            assert_eq!(line, 2, "{bad}");
            assert!(reason.contains(says), "{bad}: {reason}");
            assert!(!reason.contains("at line"), "{reason}");
        }
        let (line, reason) = parse(b"\n\xff\xfe\n").unwrap_err();
        assert_eq!((line, reason.contains("UTF-8")), (2, true));
    }
}
