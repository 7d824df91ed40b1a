//! The redaction rules of lookout's `redact` sanitizer, free of any WIT type so they can be
//! tested, fuzzed and benchmarked natively.
//!
//! A field whose *key* names a credential loses its whole value. Every other string is
//! searched for secrets in three ways, and what is found is replaced by a marker naming the
//! rule that found it (`[REDACTED:gitlab-pat]`, never any part of the value), or — in hash
//! mode — by a keyed hash so equal secrets stay matchable without being readable:
//! - **rules** (`rules.rs`, data in `rules/default.toml` plus the operator's own, in
//!   gitleaks' format): vendor token formats, found by their own shape;
//! - **context** (`context.rs`): a value after a key that names a credential, in the shapes
//!   code, config files, headers, URLs and command lines write pairs;
//! - **structure**: credentials in URLs, `Bearer`/`Basic` credentials, PEM private keys,
//!   JWTs and Luhn-valid card numbers.
//!
//! One aho-corasick pass over the string finds every keyword of every rule and every word a
//! credential key contains; only what it hits runs, so the cost of a string does not grow
//! with the number of rules.

mod context;
mod keys;
mod rules;
mod value;

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use sha2::{Digest, Sha256};

pub use keys::KeyClass;
pub use rules::{Rule, RuleError, RuleSet, entropy};

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
    /// `[REDACTED]` for a whole value under a credential key, `[REDACTED:<rule>]` inside
    /// strings.
    Redact,
    /// `[HASH:<16 hex>]` / `[HASH:<rule>:<16 hex>]`: HMAC-SHA256 of the secret under this
    /// key, truncated.
    Hash(Vec<u8>),
}

/// Marker names of the rules written in code rather than data.
pub mod builtin {
    /// A password after a key that names one.
    pub const PASSWORD: &str = "password";
    /// A token, key or other credential after a key that names one.
    pub const CREDENTIAL: &str = "credential";
    pub const URL_PASSWORD: &str = "url-password";
    pub const AUTH_HEADER: &str = "auth-header";
    pub const PRIVATE_KEY: &str = "private-key";
    pub const JWT: &str = "jwt";
    pub const CARD_NUMBER: &str = "card-number";
    /// A long random token standing alone (no prefix, no key).
    pub const RANDOM_TOKEN: &str = "random-token";
    /// Every rule written in code (each can be turned off like a data rule).
    pub const ALL: &[&str] = &[
        PASSWORD,
        CREDENTIAL,
        URL_PASSWORD,
        AUTH_HEADER,
        PRIVATE_KEY,
        JWT,
        CARD_NUMBER,
        RANDOM_TOKEN,
    ];
    /// A whole value replaced because its field's key names a credential.
    pub const SENSITIVE_KEY: &str = "sensitive-key";
}

/// What the keyword pass can start besides a rule.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Trigger {
    Rule(usize),
    Context,
    Url,
    AuthScheme,
    Pem,
    Jwt,
}

/// Words whose presence may mean a credential key in the text (`db_pass := …`).
const CONTEXT_WORDS: &[&str] = &[
    "pass",
    "pwd",
    "pw",
    "secret",
    "token",
    "key",
    "auth",
    "cred",
    "cookie",
    "bearer",
    "signature",
    "sig",
    "dsn",
    "jwt",
    "otp",
    "pin",
    "pat",
    " -u",
    "--user",
    "-U ",
    "ssn",
    "cvv",
    "cvc",
    "card",
    "hmac",
    "sas",
];

/// The one keyword pass: its automaton and what each of its patterns triggers.
#[derive(Debug)]
struct Scanner {
    automaton: AhoCorasick,
    triggers: Vec<Vec<Trigger>>,
    /// Rules without keywords (the config's `pattern.<name>`): they run on every string.
    always: Vec<usize>,
}

impl Scanner {
    fn new(rules: &RuleSet, extra_keys: &[String]) -> Scanner {
        let mut patterns: Vec<String> = Vec::new();
        let mut triggers: Vec<Vec<Trigger>> = Vec::new();
        let mut add = |word: &str, trigger: Trigger| {
            let word = word.to_ascii_lowercase();
            match patterns.iter().position(|p| *p == word) {
                Some(at) => {
                    if !triggers[at].contains(&trigger) {
                        triggers[at].push(trigger);
                    }
                }
                None => {
                    patterns.push(word);
                    triggers.push(vec![trigger]);
                }
            }
        };
        for (index, rule) in rules.rules.iter().enumerate() {
            for keyword in &rule.keywords {
                add(keyword, Trigger::Rule(index));
            }
        }
        for word in CONTEXT_WORDS
            .iter()
            .copied()
            .chain(extra_keys.iter().map(String::as_str))
        {
            add(word, Trigger::Context);
        }
        add("://", Trigger::Url);
        add("bearer", Trigger::AuthScheme);
        add("basic", Trigger::AuthScheme);
        add("-----begin", Trigger::Pem);
        add("eyj", Trigger::Jwt);
        let automaton = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .kind(Some(AhoCorasickKind::DFA))
            .build(&patterns)
            .expect("keywords are plain strings");
        let always = (0..rules.rules.len())
            .filter(|&i| rules.rules[i].keywords.is_empty())
            .collect();
        Scanner {
            automaton,
            triggers,
            always,
        }
    }
}

/// Per-call scratch space, kept between calls so a string costs no allocation.
#[derive(Debug, Default)]
struct Scratch {
    /// Indices of the rules to run on this string.
    rules_hit: Vec<usize>,
    ranges: Vec<(usize, usize)>,
    found: Vec<context::Found>,
}

/// The configured policy.
#[derive(Debug)]
pub struct Policy {
    mode: Mode,
    extra_keys: Vec<String>,
    rules: RuleSet,
    scanner: Scanner,
    /// Classes of keys already seen: field keys repeat from event to event.
    verdicts: RefCell<HashMap<Box<str>, KeyClass, BuildHasherDefault<KeyHasher>>>,
    /// The words of the key being classified (apart from `scratch`: keys found inside text
    /// are classified while a scan holds that).
    key_words: RefCell<Vec<String>>,
    scratch: RefCell<Scratch>,
    /// Rules written in code that the operator turned off (`builtin::ALL`).
    off: Vec<&'static str>,
    /// Short values already found clean, direct-mapped by hash: field values repeat from
    /// event to event (pools, commands, hosts, users), and a repeat costs a hash and a compare
    /// instead of the keyword pass. Only clean verdicts are kept, so a hit can only say
    /// "nothing here" about exactly this text.
    clean: RefCell<Vec<Option<Box<str>>>>,
}

/// Slots of the clean-value memory, and the longest value it keeps.
const CLEAN_SLOTS: usize = 1024;
const CLEAN_MAX_LEN: usize = 64;

fn slot_of(text: &str) -> usize {
    let mut hasher = KeyHasher::default();
    hasher.write(text.as_bytes());
    (hasher.finish() >> 32) as usize % CLEAN_SLOTS
}

/// A fast hasher for the verdict memo (FxHash's mixing). The memo is bounded, so flooding it
/// costs only a reset.
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

impl Default for Policy {
    fn default() -> Self {
        Policy::new(Mode::Redact, Vec::new(), RuleSet::builtin())
    }
}

/// A found secret: where, and the rule that names it.
struct Span<'a> {
    start: usize,
    end: usize,
    rule: &'a str,
}

impl Policy {
    /// A policy with these rules (usually `RuleSet::builtin()`, extended); `extra_keys` are
    /// fragments (lowercase alphanumerics) that also make a key a credential.
    pub fn new(mode: Mode, extra_keys: Vec<String>, rules: RuleSet) -> Policy {
        let scanner = Scanner::new(&rules, &extra_keys);
        Policy {
            mode,
            extra_keys,
            rules,
            scanner,
            verdicts: RefCell::new(HashMap::default()),
            key_words: RefCell::new(Vec::new()),
            scratch: RefCell::new(Scratch::default()),
            off: Vec::new(),
            clean: RefCell::new(vec![None; CLEAN_SLOTS]),
        }
    }

    /// Turns off rules by id, data rules and those written in code alike; an id that names
    /// no rule is an error (a typo must not leave a rule on unnoticed).
    pub fn disable(mut self, ids: &[&str]) -> Result<Policy, RuleError> {
        let (code, data): (Vec<&str>, Vec<&str>) =
            ids.iter().partition(|id| builtin::ALL.contains(id));
        self.rules.disable(&data)?;
        self.off
            .extend(builtin::ALL.iter().filter(|b| code.contains(b)));
        // The keyword pass indexes rules by position: build it again for what is left.
        self.scanner = Scanner::new(&self.rules, &self.extra_keys);
        self.clean
            .borrow_mut()
            .iter_mut()
            .for_each(|slot| *slot = None);
        Ok(self)
    }

    fn on(&self, rule: &str) -> bool {
        !self.off.contains(&rule)
    }

    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// The ids of the rules in force: data rules, then those written in code.
    pub fn rule_ids(&self) -> impl Iterator<Item = &str> {
        self.rules
            .rules
            .iter()
            .map(|r| r.id.as_str())
            .chain(builtin::ALL.iter().copied().filter(|id| self.on(id)))
    }

    /// What a key (of a field, or inside text) says about its value.
    pub fn key_class(&self, key: &str) -> KeyClass {
        if let Some(&class) = self.verdicts.borrow().get(key) {
            return class;
        }
        let class = keys::classify(key, &self.extra_keys, &mut self.key_words.borrow_mut());
        let mut verdicts = self.verdicts.borrow_mut();
        if verdicts.len() >= VERDICTS {
            verdicts.clear();
        }
        verdicts.insert(key.into(), class);
        class
    }

    /// Whether a field with this key loses its whole value.
    pub fn is_sensitive_key(&self, key: &str) -> bool {
        self.key_class(key) != KeyClass::Plain
    }

    /// The new value of a field (always a string), or `None` when it may stay as it is: the
    /// whole value goes under a credential key; otherwise secrets inside strings go, and
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
            Value::Int(i)
                if self.on(builtin::CARD_NUMBER)
                    && looks_like_card(i.unsigned_abs().to_string().as_bytes()) =>
            {
                Some(self.replace_span(builtin::CARD_NUMBER, &i.to_string()))
            }
            _ => None,
        }
    }

    /// The replacement for a whole value under a credential key.
    pub fn replace_value(&self, value: &str) -> String {
        match &self.mode {
            Mode::Redact => "[REDACTED]".to_string(),
            Mode::Hash(key) => format!("[HASH:{}]", keyed_hash(key, value.as_bytes())),
        }
    }

    fn replace_span(&self, rule: &str, secret: &str) -> String {
        match &self.mode {
            Mode::Redact => format!("[REDACTED:{rule}]"),
            Mode::Hash(key) => format!("[HASH:{rule}:{}]", keyed_hash(key, secret.as_bytes())),
        }
    }

    /// `text` with every secret found inside it replaced; `None` when nothing was found
    /// (so the caller need not allocate).
    pub fn scrub(&self, text: &str) -> Option<String> {
        if text.len() < 6 {
            return None;
        }
        let slot = (text.len() <= CLEAN_MAX_LEN).then(|| slot_of(text));
        if let Some(slot) = slot
            && self.clean.borrow()[slot].as_deref() == Some(text)
        {
            return None;
        }
        let found = self.scrub_uncached(text);
        if found.is_none()
            && let Some(slot) = slot
        {
            self.clean.borrow_mut()[slot] = Some(text.into());
        }
        found
    }

    fn scrub_uncached(&self, text: &str) -> Option<String> {
        let mut spans: Vec<Span<'_>> = Vec::new();
        let mut scratch = self.scratch.borrow_mut();
        let scratch = &mut *scratch;
        scratch.rules_hit.clear();
        scratch.rules_hit.extend_from_slice(&self.scanner.always);
        let (mut context, mut url, mut auth, mut pem, mut jwt) =
            (false, false, false, false, false);
        // Most strings hold no keyword at all: one plain search says so, and only a string
        // that has one pays for the overlapping search that finds every keyword.
        let hits = self
            .scanner
            .automaton
            .is_match(text)
            .then(|| self.scanner.automaton.find_overlapping_iter(text));
        for hit in hits.into_iter().flatten() {
            for trigger in &self.scanner.triggers[hit.pattern().as_usize()] {
                match *trigger {
                    Trigger::Rule(i) => {
                        if !scratch.rules_hit.contains(&i) {
                            scratch.rules_hit.push(i);
                        }
                    }
                    Trigger::Context => context = true,
                    Trigger::Url => url = true,
                    Trigger::AuthScheme => auth = true,
                    Trigger::Pem => pem = true,
                    Trigger::Jwt => jwt = true,
                }
            }
        }
        let bytes = text.as_bytes();
        let global = self.rules.global_allowlists();
        for &index in &scratch.rules_hit {
            let rule = &self.rules.rules[index];
            scratch.ranges.clear();
            rule.find(bytes, global, &mut scratch.ranges);
            for &(start, end) in &scratch.ranges {
                let (start, end) = widen_to_token(bytes, start, end);
                // `ghp_xxxx…`, `xoxe.xoxp-1-RANDOMSTRINGHERE`, `xoxp-…-####`: the
                // documentation's stand-ins (the masked tail is read with the token).
                let masked = bytes[end..]
                    .iter()
                    .take_while(|&&c| c == b'#' || c == b'*')
                    .count();
                if value::is_stand_in(&bytes[start..end + masked]) {
                    continue;
                }
                spans.push(Span {
                    start,
                    end,
                    rule: &rule.id,
                });
            }
        }
        if context && (self.on(builtin::PASSWORD) || self.on(builtin::CREDENTIAL)) {
            scratch.found.clear();
            let mut classify = |key: &str| self.key_class(key);
            context::find(text, &mut classify, &mut scratch.found);
            for found in &scratch.found {
                let rule = if found.class == KeyClass::Password {
                    builtin::PASSWORD
                } else {
                    builtin::CREDENTIAL
                };
                if !self.on(rule) {
                    continue;
                }
                spans.push(Span {
                    start: found.start,
                    end: found.end,
                    rule: if found.class == KeyClass::Password {
                        builtin::PASSWORD
                    } else {
                        builtin::CREDENTIAL
                    },
                });
            }
        }
        if pem && self.on(builtin::PRIVATE_KEY) {
            find_pem_keys(text, &mut spans);
        }
        if jwt && self.on(builtin::JWT) {
            find_jwts(text, &mut spans);
        }
        if auth && self.on(builtin::AUTH_HEADER) {
            find_auth_schemes(text, &mut spans);
        }
        if url && self.on(builtin::URL_PASSWORD) {
            find_url_passwords(text, &mut spans);
        }
        let digits = bytes.iter().filter(|b| b.is_ascii_digit()).count();
        if digits >= 13 && self.on(builtin::CARD_NUMBER) {
            find_cards(text, &mut spans);
        }
        // Public material in armour (certificates, public keys) is base64 by the line.
        if digits >= 4
            && self.on(builtin::RANDOM_TOKEN)
            && bytes.len() >= RANDOM_TOKEN_MIN
            && !(pem && is_public_armour(text))
            // SOPS-encrypted values are ciphertext, and say so.
            && !text.contains("ENC[AES256_GCM,")
        {
            let mut classify = |key: &str| self.key_class(key);
            find_random_tokens(bytes, &mut classify, &mut spans);
        }
        if spans.is_empty() {
            return None;
        }
        Some(self.replace_spans(text, &mut spans))
    }

    fn replace_spans(&self, text: &str, spans: &mut [Span<'_>]) -> String {
        for span in spans.iter_mut() {
            // A span is replaced whole: on character boundaries even where a byte regex or
            // a widening stopped inside a character.
            while !text.is_char_boundary(span.start) {
                span.start -= 1;
            }
            while !text.is_char_boundary(span.end) {
                span.end += 1;
            }
        }
        spans.sort_by_key(|s| (s.start, std::cmp::Reverse(s.end)));
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        let mut i = 0;
        while i < spans.len() {
            let start = spans[i].start.max(at);
            let mut end = spans[i].end;
            let rule = spans[i].rule;
            // Merge everything that overlaps this span into it.
            let mut j = i + 1;
            while j < spans.len() && spans[j].start < end {
                end = end.max(spans[j].end);
                j += 1;
            }
            if end > start {
                out.push_str(&text[at..start]);
                out.push_str(&self.replace_span(rule, &text[start..end]));
                at = end;
            }
            i = j;
        }
        out.push_str(&text[at..]);
        out
    }
}

/// Bytes a token is made of: a rule's match is widened over them so that no prefix or tail
/// of the token it matched is left behind (`=` padding only to the right).
fn widen_to_token(b: &[u8], mut start: usize, mut end: usize) -> (usize, usize) {
    let inner = |c: u8| {
        c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'+' | b'/' | b'~' | b'%' | b'.')
    };
    // Leftwards only over word bytes: a token inside a URL path or after a dot keeps the
    // URL or the name before it.
    while start > 0 && (b[start - 1].is_ascii_alphanumeric() || matches!(b[start - 1], b'_' | b'-'))
    {
        start -= 1;
    }
    while end < b.len() && (inner(b[end]) || b[end] == b'=') {
        end += 1;
    }
    // A sentence's full stop after a token is not part of it.
    while end > start + 1 && b[end - 1] == b'.' {
        end -= 1;
    }
    (start, end)
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
        let footer = find_ci(bytes, b"-----END ", header_end);
        let end = footer
            .and_then(|e| find_ci(bytes, b"-----", e + 9).map(|i| i + 5))
            .unwrap_or(bytes.len());
        // A key has a body: `BEGIN … anything … END` in documentation is not one.
        let body = &bytes[header_end..footer.unwrap_or(bytes.len())];
        let material = body
            .iter()
            .filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
            .count();
        if material < 12 {
            from = end;
            continue;
        }
        spans.push(Span {
            start: begin,
            end,
            rule: builtin::PRIVATE_KEY,
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
        // A signed JWT has three segments; an unsigned one (`alg: none`) may end after the
        // payload, which is base64 of JSON too.
        let unsigned = dots == 1 && bytes[start + first_len + 1..].starts_with(b"eyJ");
        let unsigned = unsigned
            || dots == 2 && segment_len == 0 && bytes[start + first_len + 1..].starts_with(b"eyJ");
        if (dots == 2 && segment_len > 0 || unsigned) && first_len >= 10 {
            spans.push(Span {
                start,
                end,
                rule: builtin::JWT,
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
            // `=` only as base64 padding: `bearer expires_in=3600` is a pair, not a token.
            let inner_eq = bytes[start..end]
                .iter()
                .rposition(|&b| b != b'=')
                .is_some_and(|last| bytes[start..=start + last].contains(&b'='));
            if end - start >= 8 && !inner_eq && !value::is_placeholder(&bytes[start..end]) {
                spans.push(Span {
                    start,
                    end,
                    rule: builtin::AUTH_HEADER,
                });
                from = end;
            }
        }
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
                rule: builtin::URL_PASSWORD,
            });
        }
        from = authority_end;
    }
}

/// The shortest run a random token stands alone at: below it, random-looking ids (nanoids,
/// ULIDs, base64 UUIDs, Stripe-style object ids) are too common to remove.
const RANDOM_TOKEN_MIN: usize = 40;

/// A long random token standing alone, with no prefix and no key: 40–1024 bytes of
/// letters and digits (and `_-+/=`), mixed the way random strings mix them (digits among
/// letters, high entropy). Hex (SHAs, digests, trace ids, UUIDs with their dashes) and
/// named digests (`sha256:…`, `sha512-…` integrity strings) are what logs are full of and
/// stay; so do identifiers (`handleUserAuthenticationRequestV2`: letters in words).
fn find_random_tokens(
    b: &[u8],
    classify: &mut dyn FnMut(&str) -> KeyClass,
    spans: &mut Vec<Span<'_>>,
) {
    let token = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'+' | b'/' | b'=');
    let mut i = 0;
    while i < b.len() {
        if !token(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        // `=` only as padding at the end: inside a run it separates a key from its value.
        while i < b.len()
            && token(b[i])
            && (b[i] != b'=' || !b.get(i + 1).is_some_and(|&c| token(c) && c != b'='))
        {
            i += 1;
        }
        let mut end = i;
        while end > start && b[end - 1] == b'=' {
            end -= 1;
        }
        if i < b.len() && b[i] == b'=' {
            i += 1;
        }
        let run = &b[start..end];
        if run.len() < RANDOM_TOKEN_MIN || run.len() > 1024 {
            continue;
        }
        // A path is made of names; a token may hold `/` (base64) but not be a path.
        if run.contains(&b'/')
            && run.split(|&c| c == b'/').any(|seg| {
                !seg.is_empty()
                    && seg.len() < 16
                    && seg
                        .iter()
                        .all(|c| c.is_ascii_alphabetic() || *c == b'-' || *c == b'_')
            })
        {
            continue;
        }
        let digits = run.iter().filter(|c| c.is_ascii_digit()).count();
        let letters = run.iter().filter(|c| c.is_ascii_alphabetic()).count();
        // Hex after a name (`req_`, `_api_org_`): an id, or a digest, in hex.
        let mut body = run;
        while let Some(sep) = body.iter().position(|&c| c == b'_' || c == b'-') {
            if body[..sep].iter().all(u8::is_ascii_alphabetic) {
                body = &body[sep + 1..];
            } else {
                break;
            }
        }
        let hex = body
            .iter()
            .all(|&c| c.is_ascii_hexdigit() || c == b'-' || c == b'_');
        const DIGESTS: &[&[u8]] = &[
            b"sha1-", b"sha256-", b"sha384-", b"sha512-", b"sha256:", b"sha512:", b"sha1:", b"md5:",
        ];
        let named_digest = DIGESTS
            .iter()
            .any(|p| b[..start].ends_with(p) || run.starts_with(p));
        // `ssh-ed25519 AAAAC3Nza… user@host`: a public key.
        let word_before = b[..start].strip_suffix(b" ").map(|w| {
            let from = w
                .iter()
                .rposition(|c| c.is_ascii_whitespace() || *c == b'"')
                .map_or(0, |p| p + 1);
            &w[from..]
        });
        let public_key = word_before.is_some_and(|w| {
            w.starts_with(b"ssh-") || w.starts_with(b"ecdsa-") || w.starts_with(b"sk-ssh-")
        });
        if hex
            || named_digest
            || public_key
            || named_by_key(b, start, classify)
            || digits * 12 < run.len()
            || letters * 3 < run.len()
            || longest_letter_word(run) >= 12
            || entropy(run) < 4.0
        {
            continue;
        }
        spans.push(Span {
            start,
            end: i,
            rule: builtin::RANDOM_TOKEN,
        });
    }
}

/// Whether the token at `start` is the value of `key = …` / `key: …` whose key says what it
/// is and is no credential (`public_key = "…"`, `csrf-token=…`, `sumOfExposures = …`): the
/// key knows better than the token's looks. (A credential key's value is context's.)
fn named_by_key(b: &[u8], start: usize, classify: &mut dyn FnMut(&str) -> KeyClass) -> bool {
    let mut i = start;
    let skip = |i: &mut usize, set: &[u8]| {
        while *i > 0 && set.contains(&b[*i - 1]) {
            *i -= 1;
        }
    };
    skip(&mut i, b"\"'` ");
    let before_op = i;
    skip(&mut i, b"=:>?.+");
    if i == before_op {
        return false;
    }
    skip(&mut i, b"\"'` ");
    let key_end = i;
    while i > 0 && (b[i - 1].is_ascii_alphanumeric() || matches!(b[i - 1], b'_' | b'-' | b'.')) {
        i -= 1;
    }
    key_end > i
        && std::str::from_utf8(&b[i..key_end]).is_ok_and(|key| classify(key) == KeyClass::Plain)
}

/// `-----BEGIN CERTIFICATE-----`, `-----BEGIN PGP PUBLIC KEY BLOCK-----`, …
fn is_public_armour(text: &str) -> bool {
    text.contains("-----BEGIN CERTIFICATE")
        || text.contains("PUBLIC KEY")
        || text.contains("-----BEGIN X509")
}

/// The longest run of lowercase letters (after an optional capital): words are long,
/// random strings rarely are.
fn longest_letter_word(run: &[u8]) -> usize {
    let (mut best, mut cur) = (0, 0);
    for &c in run {
        if c.is_ascii_lowercase() {
            cur += 1;
        } else {
            cur = usize::from(c.is_ascii_uppercase());
        }
        best = best.max(cur);
    }
    best
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
                rule: builtin::CARD_NUMBER,
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
    use serde::Deserialize;

    fn scrub(s: &str) -> String {
        Policy::default().scrub(s).unwrap_or_else(|| s.to_string())
    }

    #[derive(Deserialize)]
    struct Cases {
        cases: Vec<Case>,
        benign: Vec<Benign>,
    }

    #[derive(Deserialize)]
    struct Case {
        rule: String,
        text: String,
        secret: String,
    }

    #[derive(Deserialize)]
    struct Benign {
        text: String,
    }

    fn cases() -> Cases {
        toml::from_str(include_str!("../rules/cases.toml")).expect("rules/cases.toml parses")
    }

    /// A piece of `secret` of 8 bytes or more that is still in `out` (markers aside: a
    /// rule's name may share a prefix with its tokens, `bedrock-api-key-…`).
    fn leftover<'a>(secret: &'a str, text: &str, out: &str) -> Option<&'a str> {
        // What the text around the secret says may repeat a piece of it (`workflow …
        // /workflows/…`): only pieces not in the surroundings count.
        let around = text.replace(secret, "\u{0}");
        let mut rest = String::new();
        let mut from = 0;
        while let Some(at) = out[from..].find("[REDACTED:").map(|i| i + from) {
            rest.push_str(&out[from..at]);
            from = out[at..].find(']').map_or(out.len(), |e| at + e + 1);
        }
        rest.push_str(&out[from..]);
        let out = rest.as_str();
        let n = secret.len();
        (0..n.saturating_sub(7))
            .filter(|&i| secret.is_char_boundary(i) && secret.is_char_boundary(i + 8))
            .map(|i| &secret[i..i + 8])
            .find(|piece| out.contains(piece) && !around.contains(piece))
    }

    #[test]
    fn every_builtin_rule_compiles_has_keywords_and_a_case() {
        let rules = RuleSet::builtin();
        rules.compile_all().unwrap();
        let cases = cases();
        for rule in &rules.rules {
            assert!(!rule.keywords.is_empty(), "{} has no keywords", rule.id);
            assert!(
                cases.cases.iter().any(|c| c.rule == rule.id),
                "{} has no case in rules/cases.toml",
                rule.id
            );
        }
    }

    /// Each case's secret is found by its own rule, exactly, through the keyword pass.
    #[test]
    fn each_rule_finds_its_cases_whole() {
        let rules = RuleSet::builtin();
        for case in cases().cases {
            let rule = rules
                .rules
                .iter()
                .find(|r| r.id == case.rule)
                .unwrap_or_else(|| panic!("case names unknown rule {}", case.rule));
            let lower = case.text.to_ascii_lowercase();
            assert!(
                rule.keywords.iter().any(|k| lower.contains(k.as_str())),
                "{}: no keyword in {:?}",
                rule.id,
                case.text
            );
            let mut found = Vec::new();
            rule.find(case.text.as_bytes(), rules.global_allowlists(), &mut found);
            let texts: Vec<&str> = found.iter().map(|&(s, e)| &case.text[s..e]).collect();
            assert!(
                texts.contains(&case.secret.as_str()),
                "{}: {:?} found {texts:?}",
                rule.id,
                case.text
            );
        }
    }

    /// Through the whole policy: nothing of the secret is left, and the marker names a rule —
    /// in the case's own line, and alone or in a sentence where the rule needs no context.
    #[test]
    fn no_secret_of_a_case_survives_even_in_part() {
        let policy = Policy::default();
        let rules = RuleSet::builtin();
        for case in cases().cases {
            let rule = rules
                .rules
                .iter()
                .find(|r| r.id == case.rule)
                .expect("known rule");
            let mut alone = Vec::new();
            rule.find(
                case.secret.as_bytes(),
                rules.global_allowlists(),
                &mut alone,
            );
            let mut placements = vec![("message", case.text.clone())];
            if !alone.is_empty() {
                placements.push(("value", case.secret.clone()));
                placements.push((
                    "detail",
                    format!("deploy failed with {} at step 3", case.secret),
                ));
            }
            for (key, text) in placements {
                let out = policy
                    .clean_field(key, Value::Str(&text))
                    .unwrap_or_else(|| text.clone());
                assert!(
                    leftover(&case.secret, &text, &out).is_none(),
                    "{} in `{key}`: {text:?} -> {out:?}",
                    case.rule
                );
                assert!(out.contains("[REDACTED:"), "{text:?} -> {out:?}");
            }
        }
    }

    #[test]
    fn benign_random_looking_text_is_kept() {
        let policy = Policy::default();
        let benign = cases().benign;
        let kept = benign
            .iter()
            .filter(|b| policy.clean_field("message", Value::Str(&b.text)).is_none())
            .count();
        let changed: Vec<_> = benign
            .iter()
            .filter_map(|b| policy.scrub(&b.text).map(|out| (b.text.as_str(), out)))
            .collect();
        assert!(
            changed.is_empty(),
            "{kept}/{} kept; changed: {changed:#?}",
            benign.len()
        );
    }

    /// The keyword pass only skips rules that could not have matched.
    #[test]
    fn the_keyword_pass_skips_only_what_cannot_match() {
        let rules = RuleSet::builtin();
        let c = cases();
        let texts = c
            .cases
            .iter()
            .map(|c| c.text.as_str())
            .chain(c.benign.iter().map(|b| b.text.as_str()));
        for text in texts {
            let lower = text.to_ascii_lowercase();
            for rule in &rules.rules {
                let mut found = Vec::new();
                rule.find(text.as_bytes(), rules.global_allowlists(), &mut found);
                if !found.is_empty() {
                    assert!(
                        rule.keywords.iter().any(|k| lower.contains(k.as_str())),
                        "{} matches {text:?} without any of its keywords",
                        rule.id
                    );
                }
            }
        }
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
            "db_pass",
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
            (
                "jwt eyJhbGciOiJub25lIn0.eyJzdWIiOiIxMjM0In0 unsigned",
                "eyJzdWIiOiIxMjM0In0",
            ),
            ("card 4111 1111 1111 1111 charged", "4111 1111 1111 1111"),
            ("card 4111-1111-1111-1111", "1111-1111"),
            ("postgres://app:s3cr3t@db:5432/x", "s3cr3t"),
            ("login password=hunter2 ok", "hunter2"),
            ("{\"api_key\": \"abcd1234efgh\"}", "abcd1234efgh"),
            ("GET /x?user=a&token=zX9q7Lm2Pw4K&y=1", "zX9q7Lm2Pw4K"),
            ("mysql -u root --password hunter2 -h db", "hunter2"),
            (
                "run.sh --api-key=k-0987-ab12-cd --verbose",
                "k-0987-ab12-cd",
            ),
            (
                "DefaultEndpointsProtocol=https;AccountName=x;AccountKey=bWFkZS11cA0123==;",
                "bWFkZS11cA0123",
            ),
            (
                "PUT /b/o?X-Amz-Signature=abcdef0123&X-Amz-Date=1",
                "abcdef0123",
            ),
            ("ghp_0123456789abcdefghijABCDEFGHIJ012345", "ghp_0123"),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAq1w2e3r4t5y6u7i8o9p0a1s2d3f4g5h6\n-----END RSA PRIVATE KEY-----",
                "MIIEow",
            ),
            ("db_pass := \"hunter2hunter2\"", "hunter2hunter2"),
            ("<password>hunter2hunter2</password>", "hunter2hunter2"),
            (
                "System.setProperty(\"DB_PASSWORD\", \"hunter2hunter2\")",
                "hunter2hunter2",
            ),
            ("curl -u elastic:P@ssw0rd https://es:9200", "P@ssw0rd"),
            ("x-bearer abcdefgh1234", "abcdefgh1234"),
            ("BASIC dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA"),
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

    #[test]
    fn markers_name_the_rule_never_the_value() {
        assert_eq!(
            scrub("db_pass := \"hunter2hunter2\""),
            "db_pass := \"[REDACTED:password]\""
        );
        assert_eq!(
            scrub("key AKIAIOSFODNN7EXAMPLE used"),
            "key [REDACTED:aws-access-key-id] used"
        );
        assert_eq!(
            scrub("token glpat-Xk3mP9qR2sT5vW8yZ1bC ok"),
            "token [REDACTED:gitlab-pat] ok"
        );
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
            "CREDENTIALS_ID = \"K8S_CRED\"",
            "access_token_url=https://auth.example.com/oauth/token",
            "SSH_KEY=$(cat ~/.ssh/id_rsa)",
            "from huggingface_hub import hf_hub_download",
            "password: ${DB_PASSWORD}",
            "trace 4bf92f3577b34da6a3ce929d0e0e4736 span 00f067aa0ba902b7",
            "pulled sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "commit 3f786850e387550fdab836ed7e6dc881de23001b",
            "request 123e4567-e89b-12d3-a456-426614174000 done",
            "-----BEGIN PRIVATE KEY-----\nanything\n-----END PRIVATE KEY-----",
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
            Some("[REDACTED:card-number]")
        );
        assert_eq!(p.clean_field("amount", Value::Int(1999)), None);
        assert_eq!(p.clean_field("note", Value::Str("plain")), None);
        assert!(
            p.clean_field("note", Value::Str("password=x1y2z3"))
                .unwrap()
                .contains("[REDACTED:password]")
        );
    }

    #[test]
    fn operator_rules_add_to_and_replace_builtin_ones() {
        let mut rules = RuleSet::builtin();
        rules.extend(
            RuleSet::from_toml(
                "[[rules]]\nid = \"acme-key\"\nregex = '''\\b(acme_[a-z0-9]{12})\\b'''\nkeywords = [\"acme_\"]\n",
            )
            .unwrap(),
        );
        rules.disable(&["github-pat"]).unwrap();
        let p = Policy::new(Mode::Redact, Vec::new(), rules);
        assert_eq!(
            p.scrub("use acme_0123456789ab now").as_deref(),
            Some("use [REDACTED:acme-key] now")
        );
        assert!(
            !p.scrub("pushed ghp_0123456789abcdefghijABCDEFGHIJ012345")
                .unwrap_or_default()
                .contains("github-pat")
        );
        assert!(RuleSet::builtin().disable(&["no-such-rule"]).is_err());
        let p = Policy::default()
            .disable(&["random-token", "password"])
            .unwrap();
        assert_eq!(p.scrub("db_pass := \"hunter2hunter2\""), None);
        assert!(!p.rule_ids().any(|id| id == "random-token"));
        assert!(Policy::default().disable(&["passwrd"]).is_err());
    }

    /// The clean-value memory only ever answers for exactly the text it saw.
    #[test]
    fn remembered_clean_values_never_hide_a_secret() {
        let p = Policy::default();
        for round in 0..3 {
            for i in 0..5000 {
                let clean = format!("worker-{i} started");
                assert_eq!(p.scrub(&clean), None, "round {round}");
                let dirty = format!("worker-{i} password=hunter{i}x");
                assert!(p.scrub(&dirty).is_some(), "round {round}: {dirty}");
            }
        }
    }

    #[test]
    fn hash_mode_is_stable_and_keyed() {
        let a = Policy::new(Mode::Hash(b"k1".to_vec()), Vec::new(), RuleSet::builtin());
        let b = Policy::new(Mode::Hash(b"k2".to_vec()), Vec::new(), RuleSet::builtin());
        assert_eq!(a.replace_value("x"), a.replace_value("x"));
        assert_ne!(a.replace_value("x"), b.replace_value("x"));
        assert!(!a.replace_value("hunter2").contains("hunter2"));
        let out = a.scrub("key AKIAIOSFODNN7EXAMPLE used").unwrap();
        assert!(out.starts_with("key [HASH:aws-access-key-id:"), "{out}");
    }
}
