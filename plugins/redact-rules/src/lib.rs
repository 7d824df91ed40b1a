//! The redaction rules, free of any WIT type so they can be tested natively.
//!
//! Two kinds of rule: a field whose *key* looks sensitive loses its whole value; any string
//! value is scanned for secrets that carry their own shape (AWS key ids, bearer tokens, JWTs,
//! PEM private keys, Luhn-valid card numbers, credentials in URLs, `password=…` pairs inside
//! free text, vendor tokens). What is found is replaced by a marker naming what it was, or —
//! in hash mode — by a keyed hash so equal secrets stay matchable without being readable.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use sha2::{Digest, Sha256};

/// Fragments of a normalized key (lowercase, alphanumerics only) that mark it sensitive.
const SENSITIVE_KEY_FRAGMENTS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "accesskey",
    "authorization",
    "cookie",
    "privatekey",
    "credential",
    "bearer",
    "signature",
    "cardnumber",
    "creditcard",
    "cvv",
    "cvc",
    "connectionstring",
    "dsn",
    "accountkey",
    "encryptionkey",
    "signingkey",
    "masterkey",
    "sessionkey",
    "licensekey",
];

/// Whole normalized keys that are sensitive but too short to match as fragments.
const SENSITIVE_KEYS: &[&str] = &[
    "auth", "pwd", "pw", "pass", "pin", "otp", "ssn", "jwt", "key",
];

/// Endings that make a key describe a secret rather than hold one (`token_count`, `token_type`).
const BENIGN_KEY_SUFFIXES: &[&str] = &[
    "count",
    "total",
    "len",
    "length",
    "size",
    "ttl",
    "type",
    "expiry",
    "expires",
    "expiresat",
    "expiresin",
    "limit",
    "used",
    "present",
    "set",
    "configured",
];

/// Prefixes of vendor tokens that are secrets by shape, with the minimum length of the rest.
const TOKEN_PREFIXES: &[(&str, usize)] = &[
    ("ghp_", 20),
    ("gho_", 20),
    ("ghu_", 20),
    ("ghs_", 20),
    ("ghr_", 20),
    ("github_pat_", 20),
    ("glpat-", 16),
    ("xoxb-", 10),
    ("xoxp-", 10),
    ("xoxa-", 10),
    ("xoxr-", 10),
    ("xoxs-", 10),
    ("sk_live_", 16),
    ("sk_test_", 16),
    ("rk_live_", 16),
    ("sk-", 20),
    ("AIza", 30),
    ("npm_", 30),
    ("hf_", 30),
];

const AWS_KEY_PREFIXES: &[&str] = &[
    "AKIA", "ASIA", "AGPA", "AIDA", "AROA", "AIPA", "ANPA", "ANVA", "ABIA", "ACCA",
];

/// A field value as the rules see it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    Str(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
}

/// How found secrets are replaced.
#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    /// `[REDACTED]` for sensitive keys, `[REDACTED:<what>]` inside strings.
    Redact,
    /// `[HASH:<16 hex>]`: HMAC-SHA256 of the secret under this key, truncated.
    Hash(Vec<u8>),
}

/// A user pattern from the config: a name for the marker and the regex.
#[derive(Debug)]
pub struct Pattern {
    pub name: String,
    pub regex: regex_lite::Regex,
}

/// The configured policy.
#[derive(Debug)]
pub struct Policy {
    pub mode: Mode,
    pub extra_keys: Vec<String>,
    pub patterns: Vec<Pattern>,
    /// Verdicts on keys already seen: field keys repeat from event to event, and checking one
    /// against every fragment is most of the per-field cost.
    verdicts: RefCell<HashMap<Box<str>, bool, BuildHasherDefault<KeyHasher>>>,
}

/// A fast hasher for the verdict memo (FxHash's mixing). Its keys are field names chosen by
/// the host's own producers, and the memo is bounded, so flooding it costs only a reset.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Most key verdicts remembered; past it, the memory starts afresh.
const VERDICTS: usize = 4096;

impl Policy {
    pub fn new(mode: Mode, extra_keys: Vec<String>, patterns: Vec<Pattern>) -> Policy {
        Policy {
            mode,
            extra_keys,
            patterns,
            verdicts: RefCell::new(HashMap::default()),
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy::new(Mode::Redact, Vec::new(), Vec::new())
    }
}

/// `Api-Key` → `apikey`.
fn normalize_key(key: &str) -> String {
    key.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Runs `f` on the normalized key, without allocating for keys of up to 64 bytes (every
/// field and inline key goes through here: it is on the hot path).
fn with_normalized<R>(key: &str, f: impl FnOnce(&str) -> R) -> R {
    if key.len() > 64 {
        return f(&normalize_key(key));
    }
    let mut buf = [0u8; 64];
    let mut len = 0;
    for b in key.bytes().filter(u8::is_ascii_alphanumeric) {
        buf[len] = b.to_ascii_lowercase();
        len += 1;
    }
    // Only ASCII alphanumerics were copied: always valid UTF-8.
    f(std::str::from_utf8(&buf[..len]).unwrap_or_default())
}

impl Policy {
    /// Whether a field (or an inline `key=value`) with this key must lose its value.
    pub fn is_sensitive_key(&self, key: &str) -> bool {
        if let Some(&verdict) = self.verdicts.borrow().get(key) {
            return verdict;
        }
        let verdict = with_normalized(key, |key| self.is_sensitive_normalized(key));
        let mut verdicts = self.verdicts.borrow_mut();
        if verdicts.len() >= VERDICTS {
            verdicts.clear();
        }
        verdicts.insert(key.into(), verdict);
        verdict
    }

    fn is_sensitive_normalized(&self, key: &str) -> bool {
        if key.is_empty() {
            return false;
        }
        if SENSITIVE_KEYS.contains(&key) || self.extra_keys.iter().any(|k| key.contains(k.as_str()))
        {
            return true;
        }
        SENSITIVE_KEY_FRAGMENTS.iter().any(|f| key.contains(f))
            && !BENIGN_KEY_SUFFIXES.iter().any(|s| key.ends_with(s))
            || key.ends_with("auth") && !key.ends_with("author")
    }

    /// The new value of a field (always a string), or `None` when it may stay as it is: the
    /// whole value goes under a sensitive key; otherwise secrets inside strings go, and
    /// integers that are card numbers.
    pub fn clean_field(&self, key: &str, value: Value<'_>) -> Option<String> {
        if self.is_sensitive_key(key) {
            return match value {
                Value::Str(s) => Some(self.replace_value(s)),
                Value::Int(i) => Some(self.replace_value(&i.to_string())),
                Value::Float(f) => Some(self.replace_value(&f.to_string())),
                Value::Bool(_) => None, // `password_set: true` reveals nothing
            };
        }
        match value {
            Value::Str(s) => self.scrub(s),
            Value::Int(i) if self.is_secret_integer(i) => Some(self.replace_value(&i.to_string())),
            _ => None,
        }
    }

    /// The replacement for a whole value under a sensitive key.
    pub fn replace_value(&self, value: &str) -> String {
        match &self.mode {
            Mode::Redact => "[REDACTED]".to_string(),
            Mode::Hash(key) => format!("[HASH:{}]", keyed_hash(key, value.as_bytes())),
        }
    }

    fn replace_span(&self, what: &str, secret: &str) -> String {
        match &self.mode {
            Mode::Redact => format!("[REDACTED:{what}]"),
            Mode::Hash(key) => format!("[HASH:{what}:{}]", keyed_hash(key, secret.as_bytes())),
        }
    }

    /// Whether an integer carries a secret by itself (a card number stored as a number).
    pub fn is_secret_integer(&self, value: i64) -> bool {
        let digits = value.unsigned_abs().to_string();
        looks_like_card(digits.as_bytes())
    }

    /// `text` with every secret found inside it replaced; `None` when nothing was found
    /// (so the caller need not allocate).
    pub fn scrub(&self, text: &str) -> Option<String> {
        self.scrub_with(text, true)
    }

    /// `scrub` with every detector run whatever the scan found: what the gates are tested
    /// against.
    #[cfg(test)]
    fn scrub_ungated(&self, text: &str) -> Option<String> {
        self.scrub_with(text, false)
    }

    fn scrub_with(&self, text: &str, gated: bool) -> Option<String> {
        let mut spans = Vec::new();
        // One pass finds the token-shaped words and what each other detector needs to fire;
        // most strings need none of them.
        let mut scan = Scan::of(text, &mut spans);
        if !gated {
            scan.flags = u8::MAX;
            scan.digits = usize::MAX;
        }
        if scan.has(Scan::PEM) {
            find_pem_keys(text, &mut spans);
        }
        if scan.has(Scan::JWT) {
            find_jwts(text, &mut spans);
        }
        if scan.has(Scan::AUTH_SCHEME) {
            find_auth_schemes(text, &mut spans);
        }
        if scan.has(Scan::URL) {
            find_url_passwords(text, &mut spans);
        }
        if scan.digits >= 13 {
            find_cards(text, &mut spans);
        }
        if scan.has(Scan::PAIR) {
            self.find_inline_pairs(text, &mut spans);
        }
        for pattern in &self.patterns {
            for m in pattern.regex.find_iter(text) {
                if !m.is_empty() {
                    spans.push(Span {
                        start: m.start(),
                        end: m.end(),
                        what: SpanKind::User(&pattern.name),
                    });
                }
            }
        }
        if spans.is_empty() {
            return None;
        }
        spans.sort_by_key(|s| (s.start, std::cmp::Reverse(s.end)));
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        let mut i = 0;
        while i < spans.len() {
            let start = spans[i].start.max(at);
            let mut end = spans[i].end;
            let what = spans[i].what.name();
            // Merge everything that overlaps this span into it.
            let mut j = i + 1;
            while j < spans.len() && spans[j].start < end {
                end = end.max(spans[j].end);
                j += 1;
            }
            if end > start {
                out.push_str(&text[at..start]);
                out.push_str(&self.replace_span(what, &text[start..end]));
                at = end;
            }
            i = j;
        }
        out.push_str(&text[at..]);
        Some(out)
    }

    /// `password=hunter2`, `"api_key": "abc"`, `?token=xyz&`, `Authorization: Basic …`.
    fn find_inline_pairs<'a>(&'a self, text: &str, spans: &mut Vec<Span<'a>>) {
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if !is_key_byte(bytes[i]) || (i > 0 && is_key_byte(bytes[i - 1])) {
                i += 1;
                continue;
            }
            let key_start = i;
            while i < bytes.len() && is_key_byte(bytes[i]) {
                i += 1;
            }
            let key = &text[key_start..i];
            let mut j = i;
            if j < bytes.len() && (bytes[j] == b'"' || bytes[j] == b'\'') {
                j += 1;
            }
            while j < bytes.len() && bytes[j] == b' ' {
                j += 1;
            }
            // A command-line flag takes its value after a space: `--password hunter2`.
            let flag = key.starts_with('-') && j > i && j < bytes.len();
            if j >= bytes.len() || (bytes[j] != b'=' && bytes[j] != b':' && !flag) {
                continue;
            }
            // `http://` is a scheme, not a key; URL credentials have their own rule.
            if bytes[j] == b':' && bytes.get(j + 1) == Some(&b'/') {
                continue;
            }
            if !self.is_sensitive_key(key) {
                continue;
            }
            if bytes[j] == b'=' || bytes[j] == b':' {
                j += 1;
            }
            while j < bytes.len() && (bytes[j] == b' ' || bytes[j] == b'\t') {
                j += 1;
            }
            let to_line_end =
                with_normalized(key, |k| k.contains("cookie") || k.contains("authorization"));
            let (start, end) = if j < bytes.len() && (bytes[j] == b'"' || bytes[j] == b'\'') {
                let quote = bytes[j];
                let start = j + 1;
                let mut end = start;
                while end < bytes.len() && bytes[end] != quote {
                    if bytes[end] == b'\\' {
                        end += 1;
                    }
                    end += 1;
                }
                (start, end.min(bytes.len()))
            } else {
                let start = j;
                let mut end = start;
                while end < bytes.len() {
                    let b = bytes[end];
                    let stop = if to_line_end {
                        b == b'\n' || b == b'"'
                    } else {
                        b.is_ascii_whitespace()
                            || matches!(b, b'&' | b',' | b';' | b'"' | b'\'' | b'}' | b')' | b']')
                    };
                    if stop {
                        break;
                    }
                    end += 1;
                }
                (start, end)
            };
            if end > start {
                spans.push(Span {
                    start,
                    end,
                    what: SpanKind::Builtin("secret"),
                });
            }
            i = end.max(i);
        }
    }
}

#[derive(Clone, Copy)]
enum SpanKind<'a> {
    Builtin(&'static str),
    User(&'a str),
}

impl<'a> SpanKind<'a> {
    fn name(self) -> &'a str {
        match self {
            SpanKind::Builtin(s) => s,
            SpanKind::User(s) => s,
        }
    }
}

struct Span<'a> {
    start: usize,
    end: usize,
    what: SpanKind<'a>,
}

const fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.'
}

const fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Case-insensitive search for an ASCII needle from `from`.
fn find_ci(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.len() > haystack.len() || from > haystack.len() - needle.len() {
        return None;
    }
    // Compare only where the first byte matches (either case): most positions are skipped
    // after one comparison.
    let (lower, upper) = (
        needle[0].to_ascii_lowercase(),
        needle[0].to_ascii_uppercase(),
    );
    (from..=haystack.len() - needle.len())
        .filter(|&i| haystack[i] == lower || haystack[i] == upper)
        .find(|&i| haystack[i..i + needle.len()].eq_ignore_ascii_case(needle))
}

fn find_pem_keys(text: &str, spans: &mut Vec<Span<'_>>) {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(begin) = find_ci(bytes, b"-----BEGIN ", from) {
        let header_end = find_ci(bytes, b"-----", begin + 11)
            .map(|i| i + 5)
            .unwrap_or(bytes.len());
        let header = &text[begin..header_end];
        if !header.to_ascii_uppercase().contains("PRIVATE KEY") {
            from = header_end;
            continue;
        }
        let end = find_ci(bytes, b"-----END ", header_end)
            .and_then(|e| find_ci(bytes, b"-----", e + 9).map(|i| i + 5))
            .unwrap_or(bytes.len());
        spans.push(Span {
            start: begin,
            end,
            what: SpanKind::Builtin("private_key"),
        });
        from = end;
    }
}

fn find_jwts(text: &str, spans: &mut Vec<Span<'_>>) {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(start) = text[from..].find("eyJ").map(|i| i + from) {
        from = start + 3;
        if start > 0 && is_token_byte(bytes[start - 1]) {
            continue;
        }
        let mut end = start;
        let mut dots = 0;
        let mut segment_len = 0;
        let mut first_len = 0;
        while end < bytes.len() {
            let b = bytes[end];
            if is_token_byte(b) {
                segment_len += 1;
            } else if b == b'.' && dots < 2 && segment_len > 0 {
                if dots == 0 {
                    first_len = segment_len;
                }
                dots += 1;
                segment_len = 0;
            } else {
                break;
            }
            end += 1;
        }
        if dots == 2 && first_len >= 10 {
            spans.push(Span {
                start,
                end,
                what: SpanKind::Builtin("jwt"),
            });
            from = end;
        }
    }
}

/// `Bearer <token>` and `Basic <base64>` anywhere in a string.
fn find_auth_schemes(text: &str, spans: &mut Vec<Span<'_>>) {
    let bytes = text.as_bytes();
    for scheme in [&b"bearer"[..], &b"basic"[..]] {
        let mut from = 0;
        while let Some(at) = find_ci(bytes, scheme, from) {
            from = at + scheme.len();
            if at > 0 && bytes[at - 1].is_ascii_alphanumeric() {
                continue;
            }
            let mut start = from;
            while start < bytes.len() && (bytes[start] == b' ' || bytes[start] == b'\t') {
                start += 1;
            }
            if start == from {
                continue;
            }
            let mut end = start;
            while end < bytes.len()
                && (bytes[end].is_ascii_alphanumeric()
                    || matches!(bytes[end], b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'='))
            {
                end += 1;
            }
            if end - start >= 8 {
                spans.push(Span {
                    start,
                    end,
                    what: SpanKind::Builtin("token"),
                });
                from = end;
            }
        }
    }
}

/// What one pass over a string found: the detectors whose trigger it contains, and its
/// digit count. A detector whose trigger is absent cannot fire, so it is skipped.
struct Scan {
    flags: u8,
    digits: usize,
}

/// Byte classes for the scan: one table lookup per byte.
const DIGIT: u8 = 1;
const TOKEN: u8 = 2;
const TRIGGER: u8 = 4;

const CLASSES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let mut class = 0;
        if c.is_ascii_digit() {
            class |= DIGIT;
        }
        if is_token_byte(c) {
            class |= TOKEN;
        }
        if matches!(c, b'=' | b':' | b'-' | b'J') {
            class |= TRIGGER;
        }
        table[b] = class;
        b += 1;
    }
    table
};

impl Scan {
    const PEM: u8 = 1;
    const JWT: u8 = 2;
    const AUTH_SCHEME: u8 = 4;
    const URL: u8 = 8;
    const PAIR: u8 = 16;

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Scans `text` once, a run of token bytes (a word) and a run of other bytes at a time.
    /// Words with the shape of an AWS access key id or a vendor token are pushed to `spans`
    /// on the way.
    fn of<'a>(text: &str, spans: &mut Vec<Span<'a>>) -> Scan {
        let bytes = text.as_bytes();
        let n = bytes.len();
        let mut scan = Scan {
            flags: 0,
            digits: 0,
        };
        let mut i = 0;
        while i < n {
            let start = i;
            while i < n {
                let class = CLASSES[bytes[i] as usize];
                if class & TOKEN == 0 {
                    break;
                }
                scan.digits += usize::from(class & DIGIT);
                if class & TRIGGER != 0 {
                    scan.trigger(bytes, i);
                }
                i += 1;
            }
            if i > start {
                // Token bytes are ASCII: `start..i` is on character boundaries.
                scan.word(&text[start..i], start, spans);
            }
            while i < n {
                let class = CLASSES[bytes[i] as usize];
                if class & TOKEN != 0 {
                    break;
                }
                if class & TRIGGER != 0 {
                    scan.trigger(bytes, i);
                }
                i += 1;
            }
        }
        scan
    }

    /// At a rare byte that may be part of a detector's trigger.
    fn trigger(&mut self, bytes: &[u8], i: usize) {
        let at = |n: usize| bytes.get(n).copied();
        match bytes[i] {
            b'=' => self.flags |= Scan::PAIR,
            b':' => {
                self.flags |= Scan::PAIR;
                if at(i + 1) == Some(b'/') && at(i + 2) == Some(b'/') {
                    self.flags |= Scan::URL;
                }
            }
            b'-' => {
                // A key starting with `-` is a command-line flag (`--password hunter2`): an
                // inline pair may follow.
                if i == 0 || !is_key_byte(bytes[i - 1]) {
                    self.flags |= Scan::PAIR;
                }
                if bytes.get(i..i + 5) == Some(b"-----") {
                    self.flags |= Scan::PEM;
                }
            }
            // `eyJ`, the start of every JWT (`{"` in base64url), found at its rare `J`.
            b'J' if i >= 2 && &bytes[i - 2..i] == b"ey" => self.flags |= Scan::JWT,
            _ => {}
        }
    }

    /// At the end of a run of token bytes.
    fn word<'a>(&mut self, word: &str, start: usize, spans: &mut Vec<Span<'a>>) {
        let len = word.len();
        // `Bearer <token>` / `Basic <b64>`: the scheme ends a run (`x-bearer` included).
        let ends_ci = |suffix: &str| {
            len >= suffix.len() && word[len - suffix.len()..].eq_ignore_ascii_case(suffix)
        };
        let last = word.as_bytes()[len - 1].to_ascii_lowercase();
        if (last == b'r' && ends_ci("bearer")) || (last == b'c' && ends_ci("basic")) {
            self.flags |= Scan::AUTH_SCHEME;
        }
        // The shortest token looked for (`xoxb-` + 10) is 15 bytes.
        if len < 15 {
            return;
        }
        let what = if len == 20
            && AWS_KEY_PREFIXES.iter().any(|p| word.starts_with(p))
            && word
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        {
            "aws_access_key"
        } else if TOKEN_PREFIXES
            .iter()
            .any(|(p, min)| word.starts_with(p) && len >= p.len() + min)
        {
            "api_token"
        } else {
            return;
        };
        spans.push(Span {
            start,
            end: start + len,
            what: SpanKind::Builtin(what),
        });
    }
}

/// `scheme://user:password@host` → the password.
fn find_url_passwords(text: &str, spans: &mut Vec<Span<'_>>) {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(at) = text[from..].find("://").map(|i| i + from) {
        from = at + 3;
        let authority_end = bytes[from..]
            .iter()
            .position(|&b| {
                matches!(b, b'/' | b'?' | b'#')
                    || b.is_ascii_whitespace()
                    || b == b'"'
                    || b == b'\''
            })
            .map_or(bytes.len(), |p| p + from);
        let Some(at_sign) = text[from..authority_end].rfind('@').map(|p| p + from) else {
            continue;
        };
        let Some(colon) = text[from..at_sign].find(':').map(|p| p + from) else {
            continue;
        };
        if at_sign > colon + 1 {
            spans.push(Span {
                start: colon + 1,
                end: at_sign,
                what: SpanKind::Builtin("password"),
            });
        }
        from = authority_end;
    }
}

/// Runs of 13–19 digits (single spaces or dashes between groups allowed) that start like a
/// card number and pass the Luhn check.
fn find_cards(text: &str, spans: &mut Vec<Span<'_>>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut digits = Vec::with_capacity(19);
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() || (i > 0 && bytes[i - 1].is_ascii_alphanumeric()) {
            i += 1;
            continue;
        }
        let start = i;
        let mut end = i;
        digits.clear();
        while end < bytes.len() {
            let b = bytes[end];
            if b.is_ascii_digit() {
                digits.push(b);
                end += 1;
            } else if (b == b' ' || b == b'-')
                && end + 1 < bytes.len()
                && bytes[end + 1].is_ascii_digit()
                && digits.len() < 19
            {
                end += 1;
            } else {
                break;
            }
        }
        // Trim to the last digit (a separator is never the end).
        let followed_by_word = end < bytes.len() && bytes[end].is_ascii_alphabetic();
        if !followed_by_word && looks_like_card(&digits) {
            spans.push(Span {
                start,
                end,
                what: SpanKind::Builtin("card_number"),
            });
        }
        i = end.max(start + 1);
    }
}

fn looks_like_card(digits: &[u8]) -> bool {
    (13..=19).contains(&digits.len()) && matches!(digits[0], b'2'..=b'6') && luhn_valid(digits)
}

fn luhn_valid(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// HMAC-SHA256(key, value), first 8 bytes in hex.
fn keyed_hash(key: &[u8], value: &[u8]) -> String {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(value);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrub(s: &str) -> String {
        Policy::default().scrub(s).unwrap_or_else(|| s.to_string())
    }

    #[test]
    fn sensitive_keys_are_recognised_and_counts_are_not() {
        let p = Policy::default();
        for key in [
            "password",
            "DB_PASSWORD",
            "api-key",
            "X-Api-Key",
            "Authorization",
            "set-cookie",
            "private_key",
            "aws_secret_access_key",
            "client_secret",
            "auth",
            "proxy_auth",
            "credentials",
            "pin",
        ] {
            assert!(p.is_sensitive_key(key), "{key}");
        }
        for key in [
            "author",
            "token_count",
            "session_id",
            "command",
            "user",
            "duration_ms",
            "token_type",
        ] {
            assert!(!p.is_sensitive_key(key), "{key}");
        }
    }

    #[test]
    fn secrets_inside_strings_are_redacted() {
        let cases = [
            ("key AKIAIOSFODNN7EXAMPLE used", "AKIAIOSFODNN7EXAMPLE"),
            ("Authorization: Bearer abc.def-ghi_jkl", "abc.def-ghi_jkl"),
            (
                "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig_nature-x done",
                "eyJhbGciOiJIUzI1NiJ9",
            ),
            ("card 4111 1111 1111 1111 charged", "4111 1111 1111 1111"),
            ("card 4111-1111-1111-1111", "1111-1111"),
            ("postgres://app:s3cr3t@db:5432/x", "s3cr3t"),
            ("login password=hunter2 ok", "hunter2"),
            ("{\"api_key\": \"abcd1234\"}", "abcd1234"),
            ("GET /x?user=a&token=zzz999&y=1", "zzz999"),
            ("mysql -u root --password hunter2 -h db", "hunter2"),
            ("run.sh --api-key=k-0987 --verbose", "k-0987"),
            (
                "DefaultEndpointsProtocol=https;AccountName=x;AccountKey=bWFkZS11cA==;",
                "bWFkZS11cA",
            ),
            (
                "PUT /b/o?X-Amz-Signature=abcdef0123&X-Amz-Date=1",
                "abcdef0123",
            ),
            ("ghp_0123456789abcdefghijABCDEFGHIJ012345", "ghp_0123"),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
                "MIIEow",
            ),
            // Where the one-pass scan must still see its triggers: at the very start or end
            // of a string, inside a longer token, or next to non-ASCII text.
            (
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig",
                "eyJhbGciOiJIUzI1NiJ9",
            ),
            (
                "token is ghp_0123456789abcdefghijABCDEFGHIJ012345",
                "ghp_0123",
            ),
            ("x-bearer abcdefgh1234", "abcdefgh1234"),
            ("BASIC dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA"),
            ("--password hunter2", "hunter2"),
            ("passwort → password=hunter2", "hunter2"),
            ("s3://k:geheim@bucket", "geheim"),
            ("4111111111111111", "4111111111111111"),
        ];
        for (input, secret) in cases {
            let out = scrub(input);
            assert!(!out.contains(secret), "{input:?} -> {out:?}");
            assert!(out.contains("[REDACTED:"), "{input:?} -> {out:?}");
        }
    }

    /// The scan's gates only skip detectors that could not fire: on strings built from
    /// every trigger-adjacent byte, gated and ungated scrubbing agree.
    #[test]
    fn the_scan_skips_only_what_cannot_match() {
        let policy = Policy::default();
        let parts = [
            "a",
            "=",
            ":",
            "//",
            "-",
            "-----",
            "eyJ",
            "J",
            "bearer",
            "Basic",
            " ",
            "4111",
            "\u{e9}",
            "_",
            "ghp_",
            "0123456789abcdef",
            "AKIA",
            "@",
            "\"",
            "password",
            "\t",
            " hunter2",
            "x.y",
            // Whole secrets, so each detector has something to find wherever it lands.
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig",
            "s3://k:p@b",
            "4111111111111111",
            "-----BEGIN RSA PRIVATE KEY-----\nAB\n-----END RSA PRIVATE KEY-----",
        ];
        // Every string of three parts (27^3 ≈ 19.7 k).
        for a in parts {
            for b in parts {
                for c in parts {
                    let text = format!("{a}{b}{c}");
                    let gated = policy.scrub(&text);
                    let ungated = policy.scrub_ungated(&text);
                    assert_eq!(gated, ungated, "{text:?}");
                }
            }
        }
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        for s in [
            "request took 1732760000123456789 ns",
            "worker 3 started",
            "order 4111111111111112",
            "see https://example.com/a:b@c",
            "ls --color auto -la",
            "used --token-count 5 in total",
        ] {
            assert_eq!(scrub(s), s);
        }
    }

    #[test]
    fn fields_are_cleaned_by_key_then_by_content() {
        let p = Policy::default();
        assert_eq!(
            p.clean_field("pin", Value::Int(1234)).as_deref(),
            Some("[REDACTED]")
        );
        assert_eq!(p.clean_field("password_set", Value::Bool(true)), None);
        assert_eq!(
            p.clean_field("ref", Value::Int(4111111111111111))
                .as_deref(),
            Some("[REDACTED]")
        );
        assert_eq!(p.clean_field("amount", Value::Int(1999)), None);
        assert_eq!(p.clean_field("note", Value::Str("plain")), None);
        assert!(
            p.clean_field("note", Value::Str("password=x1"))
                .unwrap()
                .contains("[REDACTED:secret]")
        );
    }

    #[test]
    fn hash_mode_is_stable_and_keyed() {
        let a = Policy {
            mode: Mode::Hash(b"k1".to_vec()),
            ..Policy::default()
        };
        let b = Policy {
            mode: Mode::Hash(b"k2".to_vec()),
            ..Policy::default()
        };
        assert_eq!(a.replace_value("x"), a.replace_value("x"));
        assert_ne!(a.replace_value("x"), b.replace_value("x"));
        assert!(!a.replace_value("hunter2").contains("hunter2"));
    }
}
