//! `[nats]` in `lookout.toml`.

use std::path::PathBuf;

use lookout_core::Invalid;
use serde::{Deserialize, Serialize};

/// Sharing sanitized events between hosts through a NATS server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Off unless turned on.
    pub enabled: bool,
    /// The server(s), e.g. `nats://127.0.0.1:4222` (`tls://…` requires TLS).
    pub urls: Vec<String>,
    /// This host's name in subjects and in the `origin` of its events elsewhere: letters,
    /// digits, `-` and `_` (a NATS subject token). Default: the machine's hostname.
    pub host: Option<String>,
    /// Subjects are `<prefix>.<host>.<kind>`.
    pub subject_prefix: String,
    pub sink: SinkConfig,
    pub source: SourceConfig,
    pub tls: TlsConfig,
    pub auth: AuthConfig,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            enabled: false,
            urls: vec!["nats://127.0.0.1:4222".into()],
            host: None,
            subject_prefix: "lookout".into(),
            sink: SinkConfig::default(),
            source: SourceConfig::default(),
            tls: TlsConfig::default(),
            auth: AuthConfig::default(),
        }
    }
}

/// Publishing this host's events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    pub enabled: bool,
    /// Events held while the server is away (or slow); past it, new events are dropped and
    /// counted.
    pub buffer_events: usize,
    /// Events published per round trip (then a flush confirms them).
    pub batch_events: usize,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            enabled: true,
            buffer_events: 100_000,
            batch_events: 512,
        }
    }
}

/// Receiving other hosts' events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    pub enabled: bool,
    /// Subject filters to subscribe to; `<prefix>.*.>` is every host. This host's own
    /// subjects are never taken in, whatever the filter.
    pub subjects: Vec<String>,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            enabled: false,
            subjects: vec!["lookout.*.>".into()],
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Refuse to connect without TLS.
    pub required: bool,
    /// CA certificate(s), PEM, to verify the server with (else the system's roots).
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key, PEM, for servers that verify clients.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// At most one way to authenticate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub token: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// A `.creds` file (JWT + nkey seed).
    pub creds_file: Option<PathBuf>,
}

/// Whether `name` can be one token of a subject (and a metric label).
pub fn valid_host(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl NatsConfig {
    /// The host name to use: the configured one, or the machine's hostname with anything a
    /// subject token cannot hold replaced by `-`.
    pub fn host_name(&self) -> String {
        if let Some(host) = &self.host {
            return host.clone();
        }
        let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .unwrap_or_else(|_| "lookout".into());
        let cleaned: String = raw
            .trim()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .take(64)
            .collect();
        if cleaned.is_empty() {
            "lookout".into()
        } else {
            cleaned
        }
    }

    /// Every problem, each named by its field under `nats.`.
    pub fn problems(&self) -> Vec<Invalid> {
        let mut problems = Vec::new();
        let mut bad =
            |field: &str, reason: String| problems.push(Invalid::new(field, reason).under("nats"));
        if !self.enabled {
            return problems;
        }
        if self.urls.is_empty() {
            bad("urls", "name at least one server".into());
        }
        for url in &self.urls {
            let scheme_ok = ["nats://", "tls://", "ws://", "wss://"]
                .iter()
                .any(|s| url.starts_with(s))
                || !url.contains("://");
            if !scheme_ok {
                bad("urls", format!("`{url}`: use nats:// or tls://"));
            }
        }
        if let Some(host) = &self.host
            && !valid_host(host)
        {
            bad(
                "host",
                format!("`{host}`: 1–64 letters, digits, `-` or `_` (it is a subject token)"),
            );
        }
        if !valid_host(&self.subject_prefix.replace('.', "_")) {
            bad(
                "subject_prefix",
                "letters, digits, `-`, `_` and dots between tokens".into(),
            );
        }
        if self.sink.buffer_events == 0 || self.sink.buffer_events > 10_000_000 {
            bad("sink.buffer_events", "between 1 and 10000000".into());
        }
        if self.sink.batch_events == 0 || self.sink.batch_events > 65_536 {
            bad("sink.batch_events", "between 1 and 65536".into());
        }
        if self.source.enabled && self.source.subjects.is_empty() {
            bad(
                "source.subjects",
                "subscribe to at least one subject".into(),
            );
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            bad("tls", "cert_file and key_file go together".into());
        }
        for (field, path) in [
            ("tls.ca_file", &self.tls.ca_file),
            ("tls.cert_file", &self.tls.cert_file),
            ("tls.key_file", &self.tls.key_file),
            ("auth.creds_file", &self.auth.creds_file),
        ] {
            if let Some(path) = path
                && !path.is_file()
            {
                bad(field, format!("{} is not a readable file", path.display()));
            }
        }
        let ways = [
            self.auth.token.is_some(),
            self.auth.user.is_some() || self.auth.password.is_some(),
            self.auth.creds_file.is_some(),
        ];
        if ways.iter().filter(|w| **w).count() > 1 {
            bad(
                "auth",
                "choose one of token, user + password, creds_file".into(),
            );
        }
        if self.auth.user.is_some() != self.auth.password.is_some() {
            bad("auth", "user and password go together".into());
        }
        problems
    }
}
