//! Which keys name a credential: field keys (`DB_PASSWORD`) and keys found inside text
//! (`db_pass := "…"`, `<xToken>`, `System.setProperty("API_TOKEN", …)`). A key is read as
//! words — split at separators and camelCase — so `asanaToken`, `ASANA_TOKEN` and
//! `asana-token` are one key, `db_pass` names a password and `bypass` does not; and a last
//! word that describes rather than holds (`token_count`, `CREDENTIALS_ID`, `key_path`) makes
//! the key ordinary.

/// What a key says about its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyClass {
    /// An ordinary key.
    Plain,
    /// A password: any value that is not a placeholder or a reference is a secret.
    Password,
    /// A token, key or other credential: a value is a secret when it also looks like one.
    Credential,
}

/// Words that, as the last word of a key, make it describe a secret rather than hold one.
const DESCRIPTIVE: &[&str] = &[
    "count",
    "total",
    "len",
    "length",
    "size",
    "ttl",
    "type",
    "types",
    "kind",
    "expiry",
    "expires",
    "expiration",
    "expired",
    "expire",
    "at",
    "in",
    "limit",
    "limits",
    "used",
    "present",
    "set",
    "configured",
    "enabled",
    "disabled",
    "required",
    "id",
    "ids",
    "name",
    "names",
    "path",
    "paths",
    "file",
    "files",
    "dir",
    "url",
    "uri",
    "urls",
    "endpoint",
    "host",
    "version",
    "alias",
    "ref",
    "arn",
    "format",
    "algorithm",
    "alg",
    "usage",
    "rotation",
    "fingerprint",
    "hint",
    "policy",
    "policies",
    "prefix",
    "suffix",
    "field",
    "param",
    "location",
    "env",
    "var",
    "label",
    "mode",
    "provider",
    "issuer",
    "scope",
    "scopes",
    "audience",
    "lifetime",
    "timeout",
    "duration",
    "age",
    "strength",
    "regex",
    "pattern",
    "rule",
    "rules",
    "check",
    "changed",
    "reset",
    "created",
    "updated",
    "valid",
    "validity",
    "error",
    "errors",
    "status",
    "store",
    "manager",
    "service",
    "source",
    "index",
    "column",
    "table",
    "ttlsec",
    "seconds",
    "ms",
    "bytes",
    "bits",
];

/// Words that, as the last word, make a key hold a credential.
const CREDENTIAL_NOUNS: &[&str] = &[
    "secret",
    "secrets",
    "token",
    "tokens",
    "credential",
    "credentials",
    "creds",
    "cred",
    "apikey",
    "apikeys",
    "auth",
    "authorization",
    "cookie",
    "cookies",
    "bearer",
    "signature",
    "sig",
    "dsn",
    "jwt",
    "otp",
    "passphrase",
    "privatekey",
    "accesskey",
    "secretkey",
    "pat",
    "hmac",
    "sas",
    "connectionstring",
    "cvv",
    "cvc",
    "ssn",
    "cardnumber",
    "creditcard",
    "login",
];

/// Words that name a password wherever they stand in the key.
const PASSWORD_WORDS: &[&str] = &[
    "pass",
    "pwd",
    "pw",
    "pswd",
    "passwd",
    "pword",
    "passcode",
    "passphrase",
    "pin",
    "password",
    "passwords",
    "passwort",
    "contrasena",
    "senha",
    "motdepasse",
];

/// Words before `key` that make it an ordinary key (`sort_key`, `public_key`).
const ORDINARY_KEYS: &[&str] = &[
    "public",
    "pub",
    "primary",
    "sort",
    "partition",
    "cache",
    "idempotency",
    "foreign",
    "routing",
    "row",
    "lookup",
    "map",
    "object",
    "group",
    "metric",
    "dedup",
    "dedupe",
    "unique",
    "composite",
    "natural",
    "shard",
    "hot",
    "press",
    "translation",
    "i18n",
    "message",
    "bucket",
    "registry",
    "label",
    "sort",
    "range",
    "hash",
    "join",
    "dict",
    "field",
    "json",
    "yaml",
    "config",
    "setting",
    "settings",
    "option",
    "map",
    "primary",
    "index",
    "search",
    "query",
    "cluster",
    "node",
    "tenant",
    "stream",
    "topic",
    "event",
    "idem",
    "request",
    "job",
    "task",
    "item",
    "record",
    "entity",
    "order",
    "product",
];

/// Glued words, for keys without separators (`APIKEY`, `dbpassword`, `xaccesstoken`).
const GLUED_FRAGMENTS: &[(&str, KeyClass)] = &[
    ("password", KeyClass::Password),
    ("passwd", KeyClass::Password),
    ("passphrase", KeyClass::Password),
    ("secret", KeyClass::Credential),
    ("token", KeyClass::Credential),
    ("apikey", KeyClass::Credential),
    ("accesskey", KeyClass::Credential),
    ("privatekey", KeyClass::Credential),
    ("secretkey", KeyClass::Credential),
    ("signingkey", KeyClass::Credential),
    ("encryptionkey", KeyClass::Credential),
    ("masterkey", KeyClass::Credential),
    ("accountkey", KeyClass::Credential),
    ("sessionkey", KeyClass::Credential),
    ("licensekey", KeyClass::Credential),
    ("authorization", KeyClass::Credential),
    ("credential", KeyClass::Credential),
    ("cookie", KeyClass::Credential),
    ("bearer", KeyClass::Credential),
    ("signature", KeyClass::Credential),
    ("connectionstring", KeyClass::Credential),
    ("cardnumber", KeyClass::Credential),
    ("creditcard", KeyClass::Credential),
];

/// Splits a key into lowercase words: at every non-alphanumeric byte, at a lower→upper
/// change (`apiToken`), and before the last capital of a capital run followed by lower
/// (`APIToken` → api, token), and between letters and digits; digit words are dropped.
pub fn words(key: &str, out: &mut Vec<String>) {
    out.clear();
    let bytes = key.as_bytes();
    let mut word = String::new();
    for (i, &b) in bytes.iter().enumerate() {
        if !b.is_ascii_alphanumeric() {
            push_word(&mut word, out);
            continue;
        }
        if b.is_ascii_uppercase() && i > 0 {
            let prev = bytes[i - 1];
            let next_lower = bytes.get(i + 1).is_some_and(u8::is_ascii_lowercase);
            if prev.is_ascii_lowercase() || prev.is_ascii_uppercase() && next_lower {
                push_word(&mut word, out);
            }
        }
        // Digits are words of their own, and dropped: `token2` is `token`, `k8s` is `k s`.
        if i > 0 && b.is_ascii_digit() != bytes[i - 1].is_ascii_digit() {
            push_word(&mut word, out);
        }
        word.push(b.to_ascii_lowercase() as char);
    }
    push_word(&mut word, out);
}

fn push_word(word: &mut String, out: &mut Vec<String>) {
    if !word.is_empty() && !word.bytes().all(|b| b.is_ascii_digit()) {
        out.push(std::mem::take(word));
    }
    word.clear();
}

/// The class of a key; `extra` are operator-given fragments (normalized: lowercase
/// alphanumerics) that mark a key as a credential.
pub fn classify(key: &str, extra: &[String], scratch: &mut Vec<String>) -> KeyClass {
    words(key, scratch);
    let Some(last) = scratch.last() else {
        return KeyClass::Plain;
    };
    let normalized: String = scratch.concat();
    if !extra.is_empty() && extra.iter().any(|k| normalized.contains(k.as_str())) {
        return KeyClass::Credential;
    }
    if DESCRIPTIVE.contains(&last.as_str()) || last == "author" || last == "authors" {
        return KeyClass::Plain;
    }
    // Made to be shown: public and publishable keys, anti-CSRF tokens.
    if scratch.iter().any(|w| {
        matches!(
            w.as_str(),
            "public" | "publishable" | "pub" | "csrf" | "xsrf"
        )
    }) {
        return KeyClass::Plain;
    }
    if scratch.iter().any(|w| PASSWORD_WORDS.contains(&w.as_str())) {
        return KeyClass::Password;
    }
    // A key that says "secret" holds one, however short (`client_secret: xyz-987`).
    if matches!(last.as_str(), "secret" | "secrets" | "passphrase") {
        return KeyClass::Password;
    }
    if CREDENTIAL_NOUNS.contains(&last.as_str()) {
        return KeyClass::Credential;
    }
    if last == "key" || last == "keys" {
        let before = scratch.len().checked_sub(2).map(|i| scratch[i].as_str());
        return match before {
            Some(w) if ORDINARY_KEYS.contains(&w) => KeyClass::Plain,
            _ => KeyClass::Credential,
        };
    }
    // A credential word anywhere but last (`secret_value`, `token_for_ci`), then the glued
    // forms of one-word keys (`apikey`, `xaccesstoken`, `dbpassword`).
    if scratch.iter().any(|w| {
        matches!(
            w.as_str(),
            "secret"
                | "secrets"
                | "token"
                | "credential"
                | "credentials"
                | "apikey"
                | "password"
                | "passwd"
        )
    }) {
        return if scratch.iter().any(|w| w.starts_with("passw")) {
            KeyClass::Password
        } else {
            KeyClass::Credential
        };
    }
    // Within one word only: `masterkey` is glued, `master-keying` is two words.
    for word in scratch.iter() {
        for (fragment, class) in GLUED_FRAGMENTS {
            if word.contains(fragment) {
                return *class;
            }
        }
    }
    if last.ends_with("auth") {
        return KeyClass::Credential;
    }
    KeyClass::Plain
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(key: &str) -> KeyClass {
        classify(key, &[], &mut Vec::new())
    }

    #[test]
    fn keys_split_into_words() {
        let mut out = Vec::new();
        for (key, expect) in [
            ("asanaToken", vec!["asana", "token"]),
            ("ASANA_TOKEN", vec!["asana", "token"]),
            ("message-bird_TOKEN", vec!["message", "bird", "token"]),
            ("APIToken", vec!["api", "token"]),
            ("x-api-key", vec!["x", "api", "key"]),
            ("token2", vec!["token"]),
            ("k8sSecret", vec!["k", "s", "secret"]),
        ] {
            words(key, &mut out);
            assert_eq!(out, expect, "{key}");
        }
    }

    #[test]
    fn credential_keys_in_any_case_or_separator() {
        for key in [
            "password",
            "DB_PASSWORD",
            "db_pass",
            "dbPass",
            "pwd",
            "userPwd",
            "pin",
            "passphrase",
            "client_secret",
            "mysqlpassword",
        ] {
            assert_eq!(class(key), KeyClass::Password, "{key}");
        }
        for key in [
            "api_key",
            "apiKey",
            "X-Api-Key",
            "APIKEY",
            "asanaToken",
            "ASANA_TOKEN",
            "xToken",
            "aws_secret_access_key",
            "Authorization",
            "set-cookie",
            "auth",
            "proxy_auth",
            "credentials",
            "private_key",
            "tls.key",
            "key",
            "GH_PAT",
            "secret_value",
            "accesstoken",
            "jwt",
            "stripeKey",
        ] {
            assert_eq!(class(key), KeyClass::Credential, "{key}");
        }
        for key in [
            "author",
            "token_count",
            "session_id",
            "command",
            "user",
            "duration_ms",
            "token_type",
            "CREDENTIALS_ID",
            "access_token_url",
            "public_key",
            "sort_key",
            "key_path",
            "bypass",
            "passenger",
            "keyboard",
            "monkey",
            "compass",
            "tokenizer_name",
            "secret_name",
            "minisat-master-keying",
            "publicToken",
            "csrf-token",
        ] {
            assert_eq!(class(key), KeyClass::Plain, "{key}");
        }
    }
}
