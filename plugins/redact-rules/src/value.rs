//! Whether a value found under a credential key is a secret: placeholders (`changeme`,
//! `${VAR}`, `<token>`, `xxxx`, `***`, empty), references to where the secret lives (an
//! environment variable's name, `$(cat file)`, `os.getenv(…)`, a path, a URL without
//! credentials) and ordinary words stay; what is left and looks like a secret goes.

use std::sync::OnceLock;

use aho_corasick::AhoCorasick;

use crate::keys::KeyClass;
use crate::rules::entropy;

/// Values that stand in for a secret; compared lowercase, as the whole value.
const PLACEHOLDERS: &[&str] = &[
    "changeme",
    "change_me",
    "change-me",
    "null",
    "nil",
    "none",
    "undefined",
    "true",
    "false",
    "yes",
    "no",
    "on",
    "off",
    "required",
    "optional",
    "empty",
    "secret",
    "password",
    "passwd",
    "token",
    "apikey",
    "api_key",
    "string",
    "str",
    "redacted",
    "masked",
    "hidden",
    "unset",
    "notset",
    "not_set",
    "placeholder",
    "example",
    "sample",
    "test",
    "dummy",
    "default",
    "value",
    "bearer",
    "basic",
    "token",
    "mytoken",
    "mypassword",
    "mysecret",
    "secretkey",
    "password123",
    "pass",
    "pw",
    "pwd",
    "user",
    "username",
    "env",
    "environment",
    "vault",
    "keychain",
    "prompt",
    "ask",
    "stdin",
    "file",
    "inherit",
];

/// Fragments that make a value a placeholder wherever they stand in it.
const PLACEHOLDER_FRAGMENTS: &[&str] = &[
    "your_",
    "your-",
    "yourapi",
    "yourtoken",
    "yoursecret",
    "yourpassword",
    "<",
    ">",
    "{{",
    "}}",
    "${",
    "$(",
    "#{",
    "%(",
    "xxxx",
    "****",
    "...",
    "####",
    "…",
    "example",
    "placeholder",
    "changeme",
    "abcdefghij",
    "redacted",
    "insert",
    "replace_me",
    "replaceme",
    "todo",
    "fixme",
];

/// One case-insensitive search for every placeholder fragment (built once).
fn fragments() -> &'static AhoCorasick {
    static FRAGMENTS: OnceLock<AhoCorasick> = OnceLock::new();
    FRAGMENTS.get_or_init(|| {
        AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(PLACEHOLDER_FRAGMENTS)
            .expect("plain strings")
    })
}

/// Whether a credential that follows an auth scheme (`Bearer …`) is a stand-in: a
/// placeholder or a template slot rather than a credential.
pub fn is_placeholder(value: &[u8]) -> bool {
    value.is_empty()
        || PLACEHOLDERS
            .iter()
            .any(|p| p.as_bytes().eq_ignore_ascii_case(value))
        || fragments().is_match(value)
        || is_repeated(value)
        || value[0] == b'$'
        || value[0] == b'{'
}

/// Whether a token that a rule found by its shape is documentation's stand-in for one
/// (`ghp_xxxx…`, `xoxp-…-####`, `xoxe.xoxp-1-RANDOMSTRINGHERE`). Narrower than
/// `is_placeholder`: a vendor prefix makes even `…abcdefghij…` a token worth removing.
pub fn is_stand_in(token: &[u8]) -> bool {
    let lower = String::from_utf8_lossy(token).to_ascii_lowercase();
    let run = |c: u8| token.windows(6).any(|w| w.iter().all(|&b| b == c));
    [b'x', b'X', b'*', b'#', b'.'].into_iter().any(run)
        || [
            "randomstring",
            "tokenhere",
            "keyhere",
            "secrethere",
            "your_",
            "your-",
            "yourtoken",
            "<",
            ">",
            "{{",
            "${",
        ]
        .iter()
        .any(|f| lower.contains(f))
        || lower.ends_with("here")
}

/// Whether `value` (already stripped of its quotes) is a secret, for a key of `class`.
pub fn looks_secret(value: &[u8], class: KeyClass) -> bool {
    let min = match class {
        KeyClass::Plain => return false,
        KeyClass::Password => 3,
        KeyClass::Credential => 8,
    };
    if value.len() < min || value.len() > 4096 {
        return false;
    }
    let Ok(text) = std::str::from_utf8(value) else {
        return true;
    };
    if PLACEHOLDERS.iter().any(|p| p.eq_ignore_ascii_case(text))
        || fragments().is_match(value)
        || is_repeated(value)
        || is_reference(text)
        || is_url_or_path(text)
        || is_versioned_name(value)
    {
        return false;
    }
    let (mut lower_n, mut upper_n, mut digit_n, mut other_n, mut space_n) = (0, 0, 0, 0, 0);
    for &b in value {
        match b {
            b'a'..=b'z' => lower_n += 1,
            b'A'..=b'Z' => upper_n += 1,
            b'0'..=b'9' => digit_n += 1,
            b' ' | b'\t' => space_n += 1,
            _ => other_n += 1,
        }
    }
    if space_n > 0 && class == KeyClass::Credential {
        // A sentence is not a token (an `Authorization` value is read by its own rule).
        return false;
    }
    if space_n > 2 {
        return false;
    }
    match class {
        KeyClass::Password => true,
        _ => {
            let letters = lower_n + upper_n;
            if letters == 0 {
                // Digits (and separators) alone: ids and numbers, unless long.
                return digit_n >= 12;
            }
            // A word, or a name in camelCase: an ordinary value, not a token.
            if digit_n == 0 && other_n == 0 && value.len() < 24 {
                return false;
            }
            entropy(value) >= 2.8
        }
    }
}

/// `jjwt-jackson-0.11.2`, `nginx-1.25.3`: lowercase words and a dotted version, the way
/// packages and images are named (Maven's `io.jsonwebtoken:jjwt-…` puts one after a key-like
/// word and a colon).
fn is_versioned_name(value: &[u8]) -> bool {
    let Some(dash) = value.iter().rposition(|&c| c == b'-') else {
        return false;
    };
    let (name, version) = (&value[..dash], &value[dash + 1..]);
    let parts = version.split(|&c| c == b'.').count();
    parts >= 2
        && version
            .split(|&c| c == b'.')
            .all(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit))
        && name.split(|&c| c == b'-').all(|w| {
            w.len() >= 2
                && w.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
        && name.iter().filter(|c| c.is_ascii_digit()).count() * 4 <= name.len()
}

/// `aaaa`, `0000`, `----`.
fn is_repeated(value: &[u8]) -> bool {
    value.iter().all(|&b| b == value[0])
}

/// The name of where a secret lives rather than the secret: `$DB_PASS`, `%TOKEN%`,
/// `SCREAMING_CASE_NAME`, `os.getenv("X")`, `config.db.password`, `secrets.API_TOKEN`.
fn is_reference(text: &str) -> bool {
    let b = text.as_bytes();
    let ident =
        |s: &[u8]| !s.is_empty() && s.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_');
    if b[0] == b'$' && ident(&b[1..]) || b[0] == b'%' && b.ends_with(b"%") {
        return true;
    }
    // An environment variable's name: capitals and underscores, at least one underscore.
    if b.iter()
        .all(|&c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_')
        && b.contains(&b'_')
        && b[0].is_ascii_uppercase()
        && b.iter().filter(|c| c.is_ascii_digit()).count() * 4 <= b.len()
    {
        return true;
    }
    // A call or a dotted path of identifiers: `getenv("X")`, `settings.secret_key`.
    if let Some(paren) = text.find('(') {
        let callee = &b[..paren];
        if !callee.is_empty()
            && callee
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b':'))
            && callee[0].is_ascii_alphabetic()
        {
            return true;
        }
    }
    // `{SumoAccessKey}`, `[PASSWORD]`: a template's slot.
    if b[0] == b'{'
        || b[0] == b'['
            && b[1..]
                .iter()
                .all(|&c| c.is_ascii_uppercase() || matches!(c, b'_' | b']'))
    {
        return true;
    }
    // Already encrypted (SOPS `ENC[AES256_GCM,…]`, Ansible `!vault`).
    if text.starts_with("ENC[") || text.starts_with("!vault") {
        return true;
    }
    // A dotted or slashed path of names (`settings.secret_key`, `Ed25519.Signatures`,
    // `secret/mysecret`), or words joined by `_` (`DOC_Vector_5_32`).
    for sep in [b'.', b'/', b'_', b'-'] {
        if !b.contains(&sep) {
            continue;
        }
        let parts = b.split(|&c| c == sep);
        let words = |p: &&[u8]| {
            let digits = p.iter().filter(|c| c.is_ascii_digit()).count();
            !p.is_empty()
                && if sep == b'_' || sep == b'-' {
                    // Each piece a word or a number, never a mix (`s3cr3t`).
                    digits == 0 || digits == p.len()
                } else {
                    // Names: letters, then maybe a number (`v8`, `Ed25519`); never digits
                    // strewn among letters the way random tokens have them (`a0AfH6`).
                    p.len() <= 32
                        && p.split(|&c| c == b'_' || c == b'-').all(|w| {
                            let first_digit =
                                w.iter().position(u8::is_ascii_digit).unwrap_or(w.len());
                            !w.is_empty()
                                && w[0].is_ascii_alphabetic()
                                && w[first_digit..].iter().all(u8::is_ascii_digit)
                        })
                }
        };
        let needed = if sep == b'_' || sep == b'-' { 3 } else { 2 };
        if parts.clone().count() >= needed && parts.clone().all(|p| words(&p)) {
            return true;
        }
    }
    false
}

/// A URL without credentials, or a file path.
fn is_url_or_path(text: &str) -> bool {
    if let Some(scheme_end) = text.find("://") {
        let scheme = &text[..scheme_end];
        if !scheme.is_empty()
            && scheme
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
        {
            let authority = text[scheme_end + 3..]
                .split(['/', '?', '#'])
                .next()
                .unwrap_or("");
            // `user:password@host` is a credential (its own rule takes the password).
            return !authority.contains('@');
        }
    }
    text.starts_with('/') && text[1..].contains('/')
        || text.starts_with("./")
        || text.starts_with("../")
        || text.starts_with("~/")
        || text.len() > 3 && text.as_bytes()[1] == b':' && text.as_bytes()[2] == b'\\'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_references_and_words_are_not_secrets() {
        for v in [
            "",
            "changeme",
            "${DB_PASSWORD}",
            "$DB_PASSWORD",
            "<token>",
            "xxxxxxxx",
            "********",
            "K8S_CRED",
            "$(cat ~/.ssh/id_rsa)",
            "os.getenv(\"TOKEN\")",
            "settings.secret_key",
            "https://auth.example.com/oauth/token",
            "/run/secrets/db",
            "{{ .Values.token }}",
            "your_api_key_here",
            "true",
            "%API_KEY%",
            "bearer",
        ] {
            assert!(!looks_secret(v.as_bytes(), KeyClass::Credential), "{v}");
            assert!(!looks_secret(v.as_bytes(), KeyClass::Password), "{v}");
        }
        for v in ["refresh", "accessToken", "ordinary words here"] {
            assert!(!looks_secret(v.as_bytes(), KeyClass::Credential), "{v}");
        }
    }

    #[test]
    fn secrets_are() {
        for v in ["hunter2", "rootpasswd", "P@ssw0rd$1", "thisIsDog11"] {
            assert!(looks_secret(v.as_bytes(), KeyClass::Password), "{v}");
        }
        for v in [
            "43xz5gjhowrcp5kfknd8iyds8",
            "1530171703015049",
            "qw3crmiqesvocozy",
            "Zm9vYmFyYmF6cXV4MTIzNA==",
            "s3cr3t-t0k3n-v4lue",
        ] {
            assert!(looks_secret(v.as_bytes(), KeyClass::Credential), "{v}");
        }
    }
}
