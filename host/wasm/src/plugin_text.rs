//! What a plugin says, on its way into the host: its log lines, its stderr, the error its
//! `handle` or `init` returns, the reason a call failed, a fixture's output. A sanitizer sees
//! raw events by design, and any plugin may quote what it saw, so every such string is cut
//! to [`MAX_PLUGIN_TEXT_BYTES`] and then passed through the built-in redaction (the rules of
//! the default `redact` policy, `redact_rules::Policy::default()`) before the host logs it,
//! keeps it (breaker status, swap history) or answers with it (the API, the dashboard).
//!
//! This must never be skipped for a string a plugin chose, and never run on the hot path of
//! a call that succeeded: only what a plugin says is scrubbed, not the events it handles.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use redact_rules::Policy;

/// The longest string the host keeps from a plugin by default, in bytes: longer ones are cut
/// (at a word boundary) and end in `… (N bytes cut)`; `plugins.budget.max_message_bytes`
/// sets it.
pub const MAX_PLUGIN_TEXT_BYTES: usize = 4096;

/// How far back from the cut a partial word is dropped: a secret cut in half must not leave
/// its first half (which the rules may no longer recognise) behind.
const WORD_BACKTRACK: usize = 256;

/// Built once, when the runtime starts ([`warm`]), never inside a plugin's call (building
/// takes milliseconds — more in a debug build — and a call has a deadline). Shared behind a
/// lock taken per line: a line is scrubbed in microseconds, so one plugin's chatter holds
/// another back by that much at most.
static POLICY: LazyLock<Mutex<Policy>> = LazyLock::new(|| Mutex::new(Policy::default()));

/// Builds the shared policy now (the runtime calls it when it starts).
pub(crate) fn warm() {
    LazyLock::force(&POLICY);
}

/// The cut in force: `plugins.budget.max_message_bytes` (default
/// [`MAX_PLUGIN_TEXT_BYTES`]), host-wide like the budget it comes from.
static MAX_BYTES: AtomicUsize = AtomicUsize::new(MAX_PLUGIN_TEXT_BYTES);

/// Sets the cut (the budget's `max_message_bytes`, checked there to lie in 256 B–1 MiB).
pub(crate) fn set_max_bytes(bytes: usize) {
    MAX_BYTES.store(bytes.max(64), Ordering::Relaxed);
}

/// `text` cut to the budget's `max_message_bytes` (see [`cut_to`]).
pub(crate) fn cut(text: &str) -> std::borrow::Cow<'_, str> {
    cut_to(text, MAX_BYTES.load(Ordering::Relaxed))
}

/// `text` if it fits in `max` bytes; otherwise its first `max` bytes or fewer — on a char
/// boundary, without a trailing partial word — and `… (N bytes cut)`.
pub(crate) fn cut_to(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut floor = end.saturating_sub(WORD_BACKTRACK);
    // Multi-byte text: the floor must sit on a character too, or slicing it panics.
    while !text.is_char_boundary(floor) {
        floor += 1;
    }
    let mid_word = !text[end..].starts_with(char::is_whitespace);
    if mid_word && let Some(space) = text[floor..end].rfind(char::is_whitespace) {
        end = floor + space;
    } else if mid_word {
        // A word longer than the backtrack: what would end at the cut (a secret's start,
        // perhaps) goes anyway.
        end = floor;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
    }
    let kept = text[..end].trim_end();
    format!("{kept}… ({} bytes cut)", text.len() - kept.len()).into()
}

/// What the host keeps of a string a plugin handed it: cut, then scrubbed of secrets.
pub(crate) fn admit(text: &str) -> String {
    let cut = cut(text);
    let scrubbed = POLICY.lock().scrub(&cut);
    match scrubbed {
        Some(scrubbed) => scrubbed,
        None => cut.into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Text of 3- and 4-byte characters with no spaces is cut on a character, not in one.
    #[test]
    fn long_multibyte_text_is_cut_without_panicking() {
        for text in [
            "日".repeat(2000),
            "🔑".repeat(1500),
            format!("a{}", "日".repeat(2000)),
        ] {
            let cut = cut_to(&text, MAX_PLUGIN_TEXT_BYTES);
            assert!(cut.len() <= MAX_PLUGIN_TEXT_BYTES + 40, "{}", cut.len());
            assert!(cut.contains("bytes cut"));
            let _ = admit(&text);
        }
    }

    #[test]
    fn long_text_is_cut_at_a_word_and_says_how_much() {
        assert_eq!(cut_to("short", 10), "short");
        let text = format!("{} AKIAIOSFODNN7EXAMPLE tail", "word ".repeat(4));
        let cut = cut_to(&text, 25);
        assert!(cut.starts_with("word word word word…"), "{cut}");
        assert!(!cut.contains("AKIA"), "no partial secret: {cut}");
        assert!(
            cut.ends_with(&format!("({} bytes cut)", text.len() - 19)),
            "{cut}"
        );
        let huge = "é".repeat(10_000);
        let cut = cut_to(&huge, MAX_PLUGIN_TEXT_BYTES);
        assert!(
            cut.len() <= MAX_PLUGIN_TEXT_BYTES - WORD_BACKTRACK + 32,
            "{}",
            cut.len()
        );
        assert!(
            cut.ends_with("(16160 bytes cut)"),
            "on a char boundary: {}",
            &cut[3800..]
        );
    }

    #[test]
    fn what_a_plugin_says_is_scrubbed() {
        let said = admit("saw password=hunter2 and key AKIAIOSFODNN7EXAMPLE in the batch");
        assert!(
            !said.contains("hunter2") && !said.contains("AKIAIOSFODNN7EXAMPLE"),
            "{said}"
        );
        assert!(said.contains("[REDACTED"), "{said}");
        let said = admit(&format!("{} password=hunter2", "x".repeat(20 << 20)));
        assert!(said.len() < MAX_PLUGIN_TEXT_BYTES + 64, "{}", said.len());
    }
}
