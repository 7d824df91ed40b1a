//! Key–value pairs inside text, in the shapes code, config and logs write them:
//! `k = v`, `k := v`, `k ::= v`, `k ?= v`, `$k .= v`, `"k" => v`, `k == v`, `k: v` (YAML,
//! headers, JSON), `var k string = v`, `val k: String = v`, `<k>v</k>`, `setProperty("K", v)`,
//! `?k=v&`, `--k v`, `--k=v`, `curl -u user:pass`, YAML block scalars (`k: |` then the next
//! lines), JSON inside strings (`{\"k\": \"v\"}`). A pair whose key names a credential and
//! whose value looks like a secret yields the value's span — the value only, so the key
//! and the syntax around it stay readable.

use crate::keys::KeyClass;
use crate::value::looks_secret;

/// A secret value found after a credential key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Found {
    pub start: usize,
    pub end: usize,
    pub class: KeyClass,
}

const fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.'
}

fn is_quote(b: u8) -> bool {
    matches!(b, b'"' | b'\'' | b'`')
}

/// Keys whose value runs to the end of the line (a header value may hold spaces).
fn is_header_key(key: &str) -> bool {
    let k = key.trim_start_matches('-');
    k.eq_ignore_ascii_case("authorization")
        || k.eq_ignore_ascii_case("proxy-authorization")
        || k.eq_ignore_ascii_case("cookie")
        || k.eq_ignore_ascii_case("set-cookie")
}

/// `curl -u user:pass`, `--user user:pass`, `--proxy-user user:pass`.
fn is_user_flag(key: &str) -> bool {
    matches!(key, "-u" | "--user" | "--proxy-user" | "-U")
}

/// Auth schemes a header value starts with; the credential follows.
const SCHEMES: &[&str] = &[
    "bearer",
    "basic",
    "token",
    "digest",
    "negotiate",
    "apikey",
    "api-key",
    "sso-key",
    "ssws",
    "splunk",
    "key",
    "oauth",
    "hmac",
    "aws4-hmac-sha256",
];

/// Every secret value after a credential key in `text`. `classify` says what a key is.
pub fn find(text: &str, classify: &mut dyn FnMut(&str) -> KeyClass, out: &mut Vec<Found>) {
    let b = text.as_bytes();
    let n = b.len();
    let mut i = 0;
    while i < n {
        if !is_key_byte(b[i]) || (i > 0 && is_key_byte(b[i - 1])) {
            i += 1;
            continue;
        }
        let ks = i;
        while i < n && is_key_byte(b[i]) {
            i += 1;
        }
        let ke = i;
        let Some((op_end, form)) = operator(b, ks, ke) else {
            continue;
        };
        let key = &text[ks..ke];
        let user_flag = is_user_flag(key);
        let class = if user_flag {
            KeyClass::Password
        } else if key.eq_ignore_ascii_case("key") && ks >= 2 && b[ks - 1] == b' ' {
            // `cache key: …`, `api key: …`: a bare `key` is read with the word before it.
            let ws = b[..ks - 1]
                .iter()
                .rposition(|&c| !c.is_ascii_alphanumeric())
                .map_or(0, |p| p + 1);
            classify(&format!("{}_{key}", &text[ws..ks - 1]))
        } else {
            classify(key.trim_start_matches(['-', '.']))
        };
        if class == KeyClass::Plain {
            continue;
        }
        let Some((mut vs, mut ve)) = value(b, op_end, form, is_header_key(key)) else {
            continue;
        };
        if form == Form::Colon && !is_quote(b[vs.saturating_sub(1)]) {
            // `val token: String = "…"`: the word after `:` was a type.
            let mut j = ve;
            while j < n && b[j] == b' ' {
                j += 1;
            }
            if b[vs..ve]
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'?')
                && j < n
                && b[j] == b'='
                && !matches!(b.get(j + 1), Some(b'=' | b'>'))
                && let Some(v) = value(b, j + 1, Form::Assign, false)
            {
                (vs, ve) = v;
            }
        }
        if is_header_key(key) {
            // `Bearer <credential>`: the scheme stays, the credential goes.
            let v = &text[vs..ve];
            if let Some(sp) = v.find(' ')
                && SCHEMES.iter().any(|s| v[..sp].eq_ignore_ascii_case(s))
            {
                vs += sp + 1;
                while vs < ve && b[vs] == b' ' {
                    vs += 1;
                }
                // One token follows a scheme (Digest's `k="v", …` list excepted).
                if !v[..sp].eq_ignore_ascii_case("digest")
                    && let Some(end) = b[vs..ve].iter().position(|c| c.is_ascii_whitespace())
                {
                    ve = vs + end;
                }
            }
        }
        // (Not when the pair itself was quoted: `-u ":"` is an empty pair, and the quote
        // after it closes it.)
        if user_flag
            && b[ve - 1] == b':'
            && ve < n
            && is_quote(b[ve])
            && !is_quote(b[vs.saturating_sub(1)])
        {
            // `--user kevin:'pRf7…'`: the password is quoted on its own.
            if let Some((_, end)) = value(b, ve, Form::Assign, false) {
                ve = (end + 1).min(n);
            }
        }
        let secret = if user_flag {
            // `user:password`: the pair goes whole (the user is half of the credential),
            // unless the password is a placeholder or a reference (`$USER:$PASS`);
            // `TOKEN:` (an API token as the user, no password) is a secret too.
            let pair = &b[vs..ve];
            pair.iter().position(|&c| c == b':').is_some_and(|at| {
                let password = pair[at + 1..].trim_ascii_start();
                let password = password.strip_prefix(b"'").unwrap_or(password);
                let password = password.strip_suffix(b"'").unwrap_or(password);
                if password.is_empty() {
                    looks_secret(&pair[..at], KeyClass::Credential)
                } else {
                    looks_secret(password, KeyClass::Password)
                }
            })
        } else if is_header_key(key) {
            ve - vs >= 6 && !crate::value::is_placeholder(&b[vs..ve])
        } else {
            looks_secret(&b[vs..ve], class)
        };
        if secret {
            out.push(Found {
                start: vs,
                end: ve,
                class,
            });
            i = ve.max(i);
        }
    }
}

/// How a value is introduced.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Form {
    /// `=`, `:=`, `=>`, … and function arguments.
    Assign,
    /// `:` (YAML, JSON, headers): also `k: |` block scalars.
    Colon,
    /// `<k>v</k>`.
    Element,
    /// `--k v`.
    Flag,
}

/// The operator after the key `ks..ke`: where the value may start, and the form.
fn operator(b: &[u8], ks: usize, ke: usize) -> Option<(usize, Form)> {
    let n = b.len();
    let open = ks.checked_sub(1).map(|i| b[i]);
    let mut j = ke;
    // `"facebook access_token": …`: the key run is the last word of a quoted phrase.
    let phrase_quote = || {
        let from = ks.saturating_sub(40);
        let q = b[ks..].first().copied()?;
        let at = b[from..ks]
            .iter()
            .rposition(|&c| !(c.is_ascii_alphanumeric() || c == b' ' || c == b'_' || c == b'-'))?
            + from;
        (is_quote(b[at]) && ke < n && b[ke] == b[at] && q != b' ').then_some(b[at])
    };
    let open = match open {
        Some(c) if c == b' ' => phrase_quote().or(open),
        other => other,
    };
    let quoted = open.is_some_and(is_quote);
    if quoted {
        let q = open.unwrap_or(b'"');
        if j < n && b[j] == q {
            j += 1;
        } else if j + 1 < n && b[j] == b'\\' && b[j + 1] == q {
            j += 2;
        }
    }
    if open == Some(b'<') && ks >= 1 && (ks < 2 || b[ks - 2] != b'<') {
        return (j < n && b[j] == b'>').then_some((j + 1, Form::Element));
    }
    let spaced = j < n && matches!(b[j], b' ' | b'\t');
    while j < n && matches!(b[j], b' ' | b'\t') {
        j += 1;
    }
    if j >= n {
        return None;
    }
    let at = |k: usize| b.get(k).copied().unwrap_or(0);
    let rest = &b[j..];
    for (op, form) in [
        (&b":::="[..], Form::Assign),
        (b"::=", Form::Assign),
        (b":=", Form::Assign),
        (b"?=", Form::Assign),
        (b"+=", Form::Assign),
        (b".=", Form::Assign),
        (b"=>", Form::Assign),
        (b"==", Form::Assign),
        (b"->", Form::Assign),
    ] {
        if rest.starts_with(op) {
            return Some((j + op.len(), form));
        }
    }
    match b[j] {
        b'=' => return Some((j + 1, Form::Assign)),
        // `http://` is a scheme and `a::b` a path: neither is a pair.
        b':' if at(j + 1) != b':' && !(at(j + 1) == b'/' && at(j + 2) == b'/') => {
            return Some((j + 1, Form::Colon));
        }
        b',' if quoted => return Some((j + 1, Form::Assign)),
        _ => {}
    }
    if b[ks] == b'-' && spaced && !matches!(b[j], b'-' | b'|' | b'>' | b'<' | b'&' | b';') {
        return Some((j, Form::Flag));
    }
    // `var token string = "…"`: a type word between the key and `=`.
    if !quoted && spaced && b[j].is_ascii_alphabetic() {
        let mut k = j;
        while k < n && (b[k].is_ascii_alphanumeric() || matches!(b[k], b'_' | b'[' | b']' | b'*')) {
            k += 1;
        }
        if k - j <= 16 {
            while k < n && b[k] == b' ' {
                k += 1;
            }
            if k < n && b[k] == b'=' && !matches!(at(k + 1), b'=' | b'>') {
                return Some((k + 1, Form::Assign));
            }
        }
    }
    None
}

/// The value that starts at or after `j`, without its quotes.
fn value(b: &[u8], mut j: usize, form: Form, to_line_end: bool) -> Option<(usize, usize)> {
    let n = b.len();
    let multiline = form == Form::Element;
    while j < n && (matches!(b[j], b' ' | b'\t') || multiline && matches!(b[j], b'\n' | b'\r')) {
        j += 1;
    }
    if j >= n {
        return None;
    }
    // YAML block scalar: `key: |` / `key: >-` then the value on the next, indented lines.
    if form == Form::Colon && matches!(b[j], b'|' | b'>') {
        let mut k = j + 1;
        while k < n && matches!(b[k], b'-' | b'+' | b' ') {
            k += 1;
        }
        if k < n && b[k] == b'\n' {
            let mut s = k + 1;
            while s < n && b[s] == b' ' {
                s += 1;
            }
            let indent = s - (k + 1);
            if indent == 0 {
                return None;
            }
            let mut e = s;
            // Every following line indented at least as much belongs to the value.
            loop {
                while e < n && b[e] != b'\n' {
                    e += 1;
                }
                let next = e + 1;
                if next + indent <= n
                    && b[next..next + indent].iter().all(|&c| c == b' ')
                    && next + indent < n
                    && b[next + indent] != b'\n'
                {
                    e = next + indent;
                    continue;
                }
                break;
            }
            return (e > s).then_some((s, e));
        }
    }
    // `@"…"` (C#), `$"…"`, `r"…"`, `b'…'`: a prefix before the quote.
    if j + 1 < n && matches!(b[j], b'@' | b'$' | b'r' | b'b' | b'u' | b'f') && is_quote(b[j + 1]) {
        j += 1;
    }
    let (escaped, q) = if is_quote(b[j]) {
        (false, b[j])
    } else if j + 1 < n && b[j] == b'\\' && is_quote(b[j + 1]) {
        (true, b[j + 1])
    } else {
        (false, 0)
    };
    if q != 0 {
        let start = j + if escaped { 2 } else { 1 };
        let mut e = start;
        while e < n {
            if escaped {
                if b[e] == b'\\' && e + 1 < n && b[e + 1] == q {
                    break;
                }
            } else if b[e] == b'\\' {
                e += 2;
                continue;
            } else if b[e] == q || (b[e] == b'\n' && q != b'`') {
                break;
            }
            e += 1;
        }
        let e = e.min(n);
        return (e > start).then_some((start, e));
    }
    let start = j;
    let mut e = j;
    while e < n {
        let c = b[e];
        let stop = if form == Form::Element {
            c == b'<'
        } else if to_line_end {
            matches!(c, b'\n' | b'\r' | b'"' | b'\'' | b'\\')
        } else {
            c.is_ascii_whitespace()
                || matches!(
                    c,
                    b',' | b';'
                        | b'&'
                        | b'"'
                        | b'\''
                        | b'`'
                        | b')'
                        | b']'
                        | b'}'
                        | b'<'
                        | b'>'
                        | b'\\'
                )
        };
        if stop {
            break;
        }
        e += 1;
    }
    let mut end = e;
    while end > start && b[end - 1].is_ascii_whitespace() {
        end -= 1;
    }
    (end > start).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::classify;

    fn secrets(text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let mut scratch = Vec::new();
        find(text, &mut |k| classify(k, &[], &mut scratch), &mut out);
        out.iter().map(|f| &text[f.start..f.end]).collect()
    }

    #[test]
    fn values_after_every_assignment_form() {
        let v = "s3cr3tV4lue99";
        for text in [
            "db_pass := \"s3cr3tV4lue99\"",
            "db_pass ::= \"s3cr3tV4lue99\"",
            "db_pass :::= \"s3cr3tV4lue99\"",
            "db_pass ?= s3cr3tV4lue99",
            "$db_pass .= 's3cr3tV4lue99';",
            "  \"apiToken\" => \"s3cr3tV4lue99\"",
            "if token == \"s3cr3tV4lue99\" {",
            "var apiToken string = \"s3cr3tV4lue99\"",
            "val apiToken: String = \"s3cr3tV4lue99\"",
            "String apiToken = @\"s3cr3tV4lue99\";",
            "System.setProperty(\"DB_PASSWORD\", \"s3cr3tV4lue99\")",
            "<xToken>\n    s3cr3tV4lue99\n</xToken>",
            "<password>s3cr3tV4lue99</password>",
            "api_token: s3cr3tV4lue99",
            "{\"config.ini\": \"API_TOKEN=s3cr3tV4lue99\\nBACKUP_ENABLED=true\"}",
            "\"{\\\"password\\\": \\\"s3cr3tV4lue99\\\"}\"",
            "GET /x?user=a&access_token=s3cr3tV4lue99&y=1",
            "mysql --password s3cr3tV4lue99 -h db",
            "run --api-key=s3cr3tV4lue99",
            "apiKey -> s3cr3tV4lue99",
            "X-Api-Key: s3cr3tV4lue99",
            "password: |\n  s3cr3tV4lue99\nother: x",
        ] {
            assert_eq!(secrets(text), [v], "{text:?}");
        }
        assert_eq!(
            secrets("curl -u elastic:P@ssw0rd https://x"),
            ["elastic:P@ssw0rd"]
        );
        assert_eq!(
            secrets("curl --user kevin:'pRf7vG2h1L8n' -X GET"),
            ["kevin:'pRf7vG2h1L8n'"]
        );
        assert_eq!(
            secrets("curl -u sk_test_4eC39HqLyjWD: https://x"),
            ["sk_test_4eC39HqLyjWD:"]
        );
        assert!(secrets("curl -u \"$USER:$PASS\" https://x").is_empty());
        assert!(secrets("curl -u \":\" https://localhost:9200").is_empty());
        assert_eq!(
            secrets("Authorization: Bearer abcdef123456"),
            ["abcdef123456"]
        );
    }

    #[test]
    fn placeholders_and_references_stay() {
        for text in [
            "password = ${DB_PASSWORD}",
            "CREDENTIALS_ID = \"K8S_CRED\"",
            "access_token_url=https://example.com/oauth/token",
            "SSH_KEY=$(cat ~/.ssh/id_rsa)",
            "token: <token>",
            "password: changeme",
            "api_key = os.getenv(\"API_KEY\")",
            "token_count: 12345678901",
            "key: value",
            "see http://example.com",
        ] {
            assert!(secrets(text).is_empty(), "{text:?} -> {:?}", secrets(text));
        }
    }
}
