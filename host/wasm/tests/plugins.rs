//! Real components built from `plugins/`, run in the real sandbox.

use std::sync::Arc;
use std::time::Duration;

use lookout_artifacts::plugins::{ALLOWLIST, ERROR_COUNTER, MISBEHAVE, REDACT, SLO};
use lookout_core::{
    Batch, Bus, BusConfig, Consumer, ConsumerError, Event, FAILED_CLOSED, FieldValue, RedactAll,
    Sanitizer,
};
use lookout_testkit::{Collect, counter};
use lookout_wasm::{
    BreakerState, Error, Limits, Manifest, PluginRegistry, Runtime, WasmSanitizer, World,
};
use prometheus::Registry;

#[path = "plugins/books.rs"]
mod books;
#[path = "plugins/hostile_names.rs"]
mod hostile_names;
#[path = "plugins/redactions.rs"]
mod redactions;
#[path = "plugins/rules.rs"]
mod rules;
#[path = "plugins/sandbox_limits.rs"]
mod sandbox_limits;

fn config(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sanitize(s: &WasmSanitizer, events: Vec<Event>) -> Vec<Event> {
    let mut batch = events;
    for (i, e) in batch.iter_mut().enumerate() {
        e.id = i as u64 + 1;
    }
    s.sanitize(&mut batch).expect("sanitize");
    batch
}

fn text(e: &Event, key: &str) -> String {
    match e.get(key) {
        Some(FieldValue::Str(s)) => s.clone(),
        other => panic!("{key}: {other:?}"),
    }
}

/// Secrets the default policy must catch: (field key, value, the secret part).
const SECRETS: &[(&str, &str, &str)] = &[
    ("password", "hunter2", "hunter2"),
    ("db_password", "correct horse", "correct horse"),
    ("api_key", "k-123456", "k-123456"),
    (
        "Authorization",
        "Bearer abc.def.ghi-token",
        "abc.def.ghi-token",
    ),
    ("cookie", "session=abcdef; theme=dark", "abcdef"),
    ("private_key", "-----BEGIN PRIVATE KEY-----", "BEGIN"),
    ("credentials", "user:pass", "user:pass"),
    (
        "message",
        "using key AKIAIOSFODNN7EXAMPLE for s3",
        "AKIAIOSFODNN7EXAMPLE",
    ),
    (
        "message",
        "sent header Authorization: Bearer eyJraWQiOiJ4In0.eyJzdWIiOiJ1In0.c2lnbmF0dXJl",
        "eyJzdWIiOiJ1In0",
    ),
    (
        "message",
        "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "dozjgNryP4J3jVmNHl0w5N",
    ),
    (
        "message",
        "key: -----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7V\n-----END RSA PRIVATE KEY-----",
        "MIIEpAIBAAKCAQEA7V",
    ),
    (
        "message",
        "charged card 4111 1111 1111 1111 ok",
        "4111 1111 1111 1111",
    ),
    (
        "message",
        "charged card 5500-0000-0000-0004",
        "5500-0000-0000-0004",
    ),
    (
        "message",
        "connect postgres://app:s3cr3tpw@db.internal:5432/orders",
        "s3cr3tpw",
    ),
    (
        "message",
        "retrying with password=hunter2&user=bob",
        "hunter2",
    ),
    (
        "message",
        "body {\"user\":\"bob\",\"client_secret\":\"xyz-987\"}",
        "xyz-987",
    ),
    (
        "message",
        "GET /callback?code=1&access_token=ya29.a0AfH6&state=2",
        "ya29.a0AfH6",
    ),
    (
        "message",
        "pushed with ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
        "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
    ),
    (
        "message",
        "slack xoxb-123456789012-abcdefghij",
        "xoxb-123456789012-abcdefghij",
    ),
    (
        "message",
        "stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc",
        "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    ),
];

/// Every secret kind the default policy knows is gone from what comes out, and ordinary
/// fields are untouched.
#[test]
fn redact_removes_every_kind_of_secret() {
    let runtime = Runtime::new(&Registry::new()).unwrap();
    let s = WasmSanitizer::load(&runtime, "redact", REDACT, Vec::new(), Limits::default()).unwrap();
    let events: Vec<Event> = SECRETS
        .iter()
        .map(|(k, v, _)| {
            Event::new("request.completed")
                .field(*k, *v)
                .field("command", "charge")
                .field("duration_ms", 12i64)
        })
        .collect();
    let out = sanitize(&s, events);
    assert_eq!(out.len(), SECRETS.len());
    for ((key, value, secret), e) in SECRETS.iter().zip(&out) {
        let json = serde_json::to_string(e).unwrap();
        assert!(!json.contains(secret), "{key}={value:?} leaked: {json}");
        assert!(json.contains("[REDACTED"), "{key}={value:?}: {json}");
        assert_eq!(text(e, "command"), "charge");
        assert_eq!(e.get("duration_ms"), Some(&FieldValue::Int(12)));
    }
    // A card number stored as a number is caught too.
    let out = sanitize(
        &s,
        vec![
            Event::new("payment")
                .field("amount", 1999i64)
                .field("ref", 4111111111111111i64),
        ],
    );
    assert_eq!(out[0].get("amount"), Some(&FieldValue::Int(1999)));
    assert!(text(&out[0], "ref").starts_with("[REDACTED"));
}

/// Config: extra keys and patterns are honoured; hash mode keeps equal values equal and
/// unreadable; a bad config is refused with the key named.
#[test]
fn redact_config_extends_the_policy_and_bad_config_is_named() {
    let runtime = Runtime::new(&Registry::new()).unwrap();
    let cfg = config(&[
        ("extra_keys", "employee_ssn, iban"),
        ("pattern.order_ref", "ORD-[0-9]{6}"),
    ]);
    let s = WasmSanitizer::load(&runtime, "redact", REDACT, cfg, Limits::default()).unwrap();
    let out = sanitize(
        &s,
        vec![
            Event::new("x")
                .field("employee_ssn", "123-45-6789")
                .field("IBAN", "DE89370400440532013000")
                .field("note", "see ORD-123456 now"),
        ],
    );
    assert_eq!(text(&out[0], "employee_ssn"), "[REDACTED]");
    assert_eq!(text(&out[0], "IBAN"), "[REDACTED]");
    assert_eq!(text(&out[0], "note"), "see [REDACTED:order_ref] now");

    let cfg = config(&[("mode", "hash"), ("hash_key", "0123456789abcdef0123")]);
    let s = WasmSanitizer::load(&runtime, "redact", REDACT, cfg, Limits::default()).unwrap();
    let out = sanitize(
        &s,
        vec![
            Event::new("x").field("password", "hunter2"),
            Event::new("x").field("password", "hunter2"),
            Event::new("x").field("password", "other"),
        ],
    );
    let (a, b, c) = (
        text(&out[0], "password"),
        text(&out[1], "password"),
        text(&out[2], "password"),
    );
    assert!(a.starts_with("[HASH:") && !a.contains("hunter2"), "{a}");
    assert_eq!(a, b);
    assert_ne!(a, c);

    for (bad, named) in [
        (config(&[("mode", "scramble")]), "mode"),
        (config(&[("mode", "hash")]), "hash_key"),
        (config(&[("pattern.x", "([")]), "pattern.x"),
        (config(&[("extra_kyes", "a")]), "extra_kyes"),
    ] {
        let err =
            WasmSanitizer::load(&runtime, "redact", REDACT, bad, Limits::default()).unwrap_err();
        assert!(matches!(err, Error::Init { .. }), "{err}");
        assert!(err.to_string().contains(named), "{err}");
    }
}

/// A sanitizer written in Python and built with componentize-py against the same WIT loads
/// like the Rust ones: its manifest's fixture passes, it redacts secret keys and inline
/// secrets and leaves the rest (types included, non-ASCII text too), and a bad config is
/// refused naming the key.
#[test]
fn a_python_sanitizer_built_with_componentize_py_runs_like_the_rust_ones() {
    let (wasm, manifest) = lookout_testkit::python_plugin();
    let manifest = Manifest::parse(&manifest).unwrap();
    let runtime = Runtime::new(&Registry::new()).unwrap();
    let report = lookout_wasm::check(&runtime, &manifest, &wasm, "redact").unwrap();
    assert_eq!(report.fixtures_passed, 1);
    let s = WasmSanitizer::from_manifest(&runtime, &manifest, &wasm).unwrap();
    let out = sanitize(
        &s,
        vec![
            Event::new("auth.login")
                .field("user", "bob")
                .field("Password", "hunter2")
                .field("note", "retry with api_key: K-123 soon (héllo)")
                .field("attempts", 3i64)
                .field("ok", false),
            Event::new("payment").field("ssn", "123-45-6789"),
        ],
    );
    assert_eq!(text(&out[0], "user"), "bob");
    assert_eq!(text(&out[0], "Password"), "[REDACTED]");
    assert_eq!(
        text(&out[0], "note"),
        "retry with api_key: [REDACTED] soon (héllo)"
    );
    assert_eq!(out[0].get("attempts"), Some(&FieldValue::Int(3)));
    assert_eq!(out[0].get("ok"), Some(&FieldValue::Bool(false)));
    assert_eq!(
        text(&out[1], "ssn"),
        "[REDACTED]",
        "extra_keys from the manifest"
    );

    let mut bad = manifest.clone();
    bad.config.insert("colour".into(), "red".into());
    let err = WasmSanitizer::from_manifest(&runtime, &bad, &wasm).unwrap_err();
    assert!(matches!(err, Error::Init { .. }), "{err}");
    assert!(err.to_string().contains("colour"), "{err}");
}

/// A sanitizer that traps, loops or runs out of memory fails its batch closed — consumers
/// see every field redacted — the failure is counted by kind, and the next batch is
/// sanitized by a fresh instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_sanitizer_fails_closed_and_recovers() {
    let registry = Registry::new();
    let runtime = Runtime::new(&registry).unwrap();
    let limits = Limits {
        max_memory_mib: 16,
        call_timeout_ms: 50,
        ..Limits::default()
    };
    let s = WasmSanitizer::load(&runtime, "misbehave", MISBEHAVE, Vec::new(), limits).unwrap();
    let bus = Bus::start(
        BusConfig {
            batch_size: 1,
            ..BusConfig::default()
        },
        &registry,
        Box::new(s),
    )
    .unwrap();
    let seen = Collect::default();
    bus.register("collect", seen.clone()).unwrap();

    for kind in ["test.trap", "test.loop", "test.oom", "test.stack", "plain"] {
        bus.publish(
            Event::new(kind)
                .field("password", "hunter2")
                .field("note", "AKIAIOSFODNN7EXAMPLE"),
        );
        assert!(
            bus.flush(Duration::from_secs(20)).await,
            "{kind} never came out"
        );
    }
    let events = seen.events();
    assert_eq!(events.len(), 5);
    for e in &events[..4] {
        for f in &e.fields {
            assert_eq!(
                f.value,
                FieldValue::Str(FAILED_CLOSED.into()),
                "{}: {f:?}",
                e.kind
            );
        }
    }
    // misbehave passes a normal batch through as it is: proof that a fresh instance ran it.
    assert_eq!(
        events[4].get("password"),
        Some(&FieldValue::Str("hunter2".into()))
    );
    assert_eq!(
        counter(
            &registry,
            "lookout_sanitizer_failures_total",
            &[("sanitizer", "misbehave")]
        ),
        4
    );
    // The panic and the stack overflow are traps; the loop a timeout; the bomb out of memory.
    for (outcome, n) in [("trap", 2), ("timeout", 1), ("out_of_memory", 1), ("ok", 1)] {
        assert_eq!(
            counter(
                &registry,
                "lookout_plugin_calls_total",
                &[("plugin", "misbehave"), ("outcome", outcome)]
            ),
            n,
            "{outcome}"
        );
    }
}

/// A plugin that tries to read a file, list a directory, read the environment, open a TCP
/// or UDP socket or resolve a name gets nothing: the sandbox has no preopened directories,
/// no environment or args, and no network. The wall clock it may read (docs/security.md) is
/// the real one.
#[test]
fn sandbox_denies_files_environment_and_network() {
    let runtime = Runtime::new(&Registry::new()).unwrap();
    let s = misbehave(&runtime);
    let out = sanitize(
        &s,
        vec![
            Event::new("test.file").field("probe", ""),
            Event::new("test.env").field("probe", ""),
            Event::new("test.socket").field("probe", ""),
            Event::new("test.udp").field("probe", ""),
            Event::new("test.dns").field("probe", ""),
            Event::new("test.dir").field("probe", ""),
            Event::new("test.clock").field("probe", ""),
        ],
    );
    assert_eq!(out.len(), 7);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (clock, out) = out.split_last().unwrap();
    match clock.get("probe") {
        Some(FieldValue::Str(p)) => {
            let secs: u64 = p
                .strip_prefix("clock: ")
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("clock probe: {p}"));
            assert!(
                secs.abs_diff(now) <= 5,
                "the plugin's clock says {secs}, the host's {now}"
            );
        }
        other => panic!("no clock probe result: {other:?}"),
    }
    for e in out {
        match e.get("probe") {
            Some(FieldValue::Str(p)) => assert!(p.starts_with("denied"), "{}: {p}", e.kind),
            other => panic!("{}: no probe result: {other:?}", e.kind),
        }
    }
}

/// Bad bytes are refused with a reason, before anything runs.
#[test]
fn invalid_components_are_refused_with_a_reason() {
    let runtime = Runtime::new(&Registry::new()).unwrap();
    let refuse = |name: &str, wasm: &[u8], config: Vec<(String, String)>, limits: Limits| {
        WasmSanitizer::load(&runtime, name, wasm, config, limits).unwrap_err()
    };
    let err = refuse("junk", b"not wasm at all", Vec::new(), Limits::default());
    assert!(
        err.to_string().contains("junk") && err.to_string().contains("magic"),
        "{err}"
    );
    // A core module (not a component).
    let err = refuse("core", b"\0asm\x01\0\0\0", Vec::new(), Limits::default());
    assert!(matches!(err, Error::InvalidComponent { .. }), "{err}");
    // Truncated component.
    let err = refuse(
        "cut",
        &REDACT[..REDACT.len() / 2],
        Vec::new(),
        Limits::default(),
    );
    assert!(matches!(err, Error::InvalidComponent { .. }), "{err}");
    // Limits out of range.
    let err = refuse(
        "tiny",
        REDACT,
        Vec::new(),
        Limits {
            max_memory_mib: 0,
            ..Limits::default()
        },
    );
    assert!(err.to_string().contains("max_memory_mib"), "{err}");
    // init refusing its config.
    let err = refuse(
        "misbehave",
        MISBEHAVE,
        config(&[("fail_init", "1")]),
        Limits::default(),
    );
    assert!(err.to_string().contains("fail_init"), "{err}");
}

/// A plugin built against another version of the WIT package is told so, by name, instead of
/// by the first signature that does not match.
#[test]
fn a_plugin_of_another_wit_version_is_named_as_such() {
    let runtime = Runtime::new(&Registry::new()).unwrap();
    let old = wat::parse_str(
        r#"(component
            (import "lookout:plugin/host@0.1.0" (instance
                (export "log" (func (param "level" u32) (param "message" string)))))
        )"#,
    )
    .unwrap();
    let err = WasmSanitizer::load(&runtime, "old", &old, Vec::new(), Limits::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("lookout:plugin@0.1.0") && err.contains(lookout_wasm::WIT_VERSION),
        "{err}"
    );
}

fn allowlist_manifest(allow: &str, fixture_expect_user: &str) -> Manifest {
    Manifest::parse(&format!(
        r#"
        name = "allowlist"
        world = "sanitizer"
        version = "1.0.0"
        [config]
        allow = "{allow}"
        [[fixtures]]
        name = "only listed keys keep values"
        input = [{{ kind = "login", fields = {{ user = "bob", password = "hunter2" }} }}]
        expect = [{{ kind = "login", fields = {{ user = "{fixture_expect_user}", password = "[REDACTED]" }} }}]
        "#
    ))
    .unwrap()
}

/// `misbehave` loaded as a sanitizer with no config: ordinary events pass, `test.*` kinds
/// do what their name says.
fn misbehave(runtime: &Runtime) -> WasmSanitizer {
    WasmSanitizer::load(
        runtime,
        "misbehave",
        MISBEHAVE,
        Vec::new(),
        Limits::default(),
    )
    .unwrap()
}

/// A bus handing consumers one event a batch, with `RedactAll` until a test installs a
/// sanitizer, and its plugin registry.
fn start_bus_batch_of_one() -> (Bus, Registry, PluginRegistry) {
    start_bus(1)
}

/// A bus handing consumers `batch_size` events a batch, with `RedactAll` until a test
/// installs a sanitizer, and its plugin registry.
fn start_bus(batch_size: usize) -> (Bus, Registry, PluginRegistry) {
    let registry = Registry::new();
    let runtime = Runtime::new(&registry).unwrap();
    let bus = Bus::start(
        BusConfig {
            batch_size,
            ..BusConfig::default()
        },
        &registry,
        Box::new(RedactAll),
    )
    .unwrap();
    let plugins = PluginRegistry::new(runtime, bus.clone(), &registry).unwrap();
    (bus, registry, plugins)
}

/// `lookout_consumer_events_total` of `consumer` with `outcome`.
fn consumer_events(registry: &Registry, consumer: &str, outcome: &str) -> u64 {
    counter(
        registry,
        "lookout_consumer_events_total",
        &[("consumer", consumer), ("outcome", outcome)],
    )
}

fn start_bus_with_registry() -> (Bus, Registry, PluginRegistry) {
    let registry = Registry::new();
    let runtime = Runtime::new(&registry).unwrap();
    let bus = Bus::start(BusConfig::default(), &registry, Box::new(RedactAll)).unwrap();
    let plugins = PluginRegistry::new(runtime, bus.clone(), &registry).unwrap();
    plugins
        .install(Manifest::new("redact", World::Sanitizer), REDACT, "test")
        .unwrap();
    (bus, registry, plugins)
}

/// A swap runs every check before it switches: a component that fails its fixtures, random
/// bytes, or a wrong manifest leave the running version in place, and each rejection is
/// recorded. A good swap switches; rollback returns to the previous version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap_checks_first_and_rollback_returns() {
    let (bus, registry, plugins) = start_bus_with_registry();
    let seen = Collect::default();
    bus.register("collect", seen.clone()).unwrap();
    let running = |plugins: &PluginRegistry| {
        let list = plugins.list();
        (list[0].name.clone(), list[0].version)
    };
    assert_eq!(running(&plugins), ("redact".to_string(), 1));

    // The fixture expects `user` to be kept, but `user` is not in the allow list.
    let err = plugins
        .install(allowlist_manifest("command", "bob"), ALLOWLIST, "test")
        .unwrap_err();
    assert!(matches!(err, Error::Fixture { .. }), "{err}");
    assert!(
        err.to_string().contains("only listed keys keep values"),
        "{err}"
    );
    let err = plugins
        .install(allowlist_manifest("user", "bob"), b"\0asm garbage", "test")
        .unwrap_err();
    assert!(matches!(err, Error::InvalidComponent { .. }), "{err}");
    let mut consumer_world = allowlist_manifest("user", "bob");
    consumer_world.world = World::Consumer;
    assert!(plugins.install(consumer_world, ALLOWLIST, "test").is_err());
    let mut no_allow = allowlist_manifest("user", "bob");
    no_allow.config.clear();
    let err = plugins.install(no_allow, ALLOWLIST, "test").unwrap_err();
    assert!(err.to_string().contains("allow"), "{err}");
    assert_eq!(
        running(&plugins),
        ("redact".to_string(), 1),
        "a rejected swap changed the running version"
    );

    let info = plugins
        .install(allowlist_manifest("user", "bob"), ALLOWLIST, "test")
        .unwrap();
    assert_eq!((info.name.as_str(), info.version), ("allowlist", 2));
    assert_eq!(
        info.previous.as_ref().map(|p| p.name.as_str()),
        Some("redact")
    );
    bus.publish(
        Event::new("login")
            .field("user", "bob")
            .field("note", "plain words"),
    );
    assert!(bus.flush(Duration::from_secs(5)).await);

    let info = plugins.rollback("allowlist", "test").unwrap();
    assert_eq!((info.name.as_str(), info.version), ("redact", 1));
    bus.publish(
        Event::new("login")
            .field("user", "bob")
            .field("note", "plain words"),
    );
    assert!(bus.flush(Duration::from_secs(5)).await);

    let events = seen.events();
    assert_eq!(
        events[0].get("note"),
        Some(&FieldValue::Str("[REDACTED]".into())),
        "allowlist redacts unlisted keys"
    );
    assert_eq!(
        events[1].get("note"),
        Some(&FieldValue::Str("plain words".into())),
        "redact keeps plain text"
    );
    assert!(matches!(
        plugins.rollback("allowlist", "test"),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        plugins.remove("redact", "test"),
        Err(Error::Conflict { .. })
    ));

    let outcomes: Vec<_> = plugins
        .history()
        .iter()
        .map(|h| h.outcome.as_str())
        .collect();
    assert_eq!(
        outcomes,
        [
            "installed",
            "rejected",
            "rejected",
            "rejected",
            "rejected",
            "installed",
            "rolled_back"
        ]
    );
    assert_eq!(
        counter(
            &registry,
            "lookout_plugin_swaps_total",
            &[("outcome", "rejected")]
        ),
        4
    );
}

/// The sanitizer policy a batch saw, read from its output.
#[derive(Debug, PartialEq, Clone, Copy)]
enum Policy {
    Redact,
    Allowlist,
}

/// Per batch: the policy that sanitized it and its size; and every event no policy could make.
type AuditLog = (Vec<(Policy, usize)>, Vec<String>);

/// Records, per batch, which policy sanitized it — and any event no policy could have made.
#[derive(Clone, Default)]
struct PolicyAudit(Arc<parking_lot::Mutex<AuditLog>>);

impl Consumer for PolicyAudit {
    async fn handle(&mut self, batch: Batch) -> Result<(), ConsumerError> {
        let mut policies = Vec::new();
        let mut bad = Vec::new();
        for e in batch.iter() {
            let json = serde_json::to_string(e).unwrap();
            let redact = e.get("password") == Some(&FieldValue::Str("[REDACTED]".into()))
                && e.get("note")
                    == Some(&FieldValue::Str("key [REDACTED:aws-access-key-id]".into()));
            let allowlist = e.get("password") == Some(&FieldValue::Str("[REDACTED]".into()))
                && e.get("note") == Some(&FieldValue::Str("[REDACTED]".into()));
            if json.contains("hunter2")
                || json.contains("AKIAIOSFODNN7EXAMPLE")
                || e.get("user") != Some(&FieldValue::Str("bob".into()))
            {
                bad.push(json);
            } else if redact {
                policies.push(Policy::Redact);
            } else if allowlist {
                policies.push(Policy::Allowlist);
            } else {
                bad.push(json);
            }
        }
        let mut audit = self.0.lock();
        audit.1.extend(bad);
        if let Some(first) = policies.first().copied() {
            if policies.iter().any(|p| *p != first) {
                audit.1.push(format!(
                    "a batch of {} events was sanitized by two versions",
                    policies.len()
                ));
            }
            audit.0.push((first, policies.len()));
        }
        Ok(())
    }
}

/// Policies swapped 20 times back and forth while events flow: every event comes out
/// sanitized by exactly one complete version (no secret, no half-and-half batch), every event
/// is accounted for, and no call fails because of a swap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_under_load_loses_and_leaks_nothing() {
    let (bus, registry, plugins) = start_bus_with_registry();
    let audit = PolicyAudit::default();
    bus.register("audit", audit.clone()).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let bus = bus.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let e = Event::new("login")
                    .field("user", "bob")
                    .field("password", "hunter2")
                    .field("note", "key AKIAIOSFODNN7EXAMPLE");
                bus.publish(e);
                n += 1;
                if n.is_multiple_of(1024) {
                    std::thread::yield_now();
                }
            }
            n
        })
    };
    let allow_user = allowlist_manifest("user", "bob");
    let swaps_started = std::time::Instant::now();
    // Each version must handle batches before the next swap: wait for the audit to grow.
    let batches_seen = || audit.0.lock().0.len();
    let more_batches_than = |before: usize| async move {
        lookout_testkit::eventually(
            "batches through the current version",
            Duration::from_secs(20),
            || async { (batches_seen() > before).then_some(()) },
        )
        .await
    };
    for i in 0..20 {
        more_batches_than(batches_seen()).await;
        if i % 2 == 0 {
            plugins
                .install(allow_user.clone(), ALLOWLIST, "test")
                .unwrap();
        } else {
            plugins.rollback("allowlist", "test").unwrap();
        }
    }
    more_batches_than(batches_seen()).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let published = producer.join().unwrap();
    let elapsed = swaps_started.elapsed();
    bus.shutdown().await;

    let (batches, bad) = audit.0.lock().clone();
    assert!(
        bad.is_empty(),
        "{} bad events, first: {:?}",
        bad.len(),
        bad.first()
    );
    let seen_redact = batches.iter().filter(|(p, _)| *p == Policy::Redact).count();
    let seen_allow = batches
        .iter()
        .filter(|(p, _)| *p == Policy::Allowlist)
        .count();
    assert!(
        seen_redact > 0 && seen_allow > 0,
        "both policies ran: {seen_redact} / {seen_allow} batches"
    );
    let delivered: usize = batches.iter().map(|(_, n)| n).sum();
    let accepted = counter(
        &registry,
        "lookout_events_total",
        &[("outcome", "accepted")],
    );
    let dropped = counter(&registry, "lookout_events_total", &[("outcome", "dropped")]);
    assert_eq!(
        accepted + dropped,
        published,
        "published = accepted + dropped"
    );
    // The audit is slower than the pipeline (it serialises every event): what overflowed its
    // queue is counted as dropped for it, and nothing is unaccounted.
    let audit_counter = |outcome| consumer_events(&registry, "audit", outcome);
    assert_eq!(
        delivered as u64,
        audit_counter("delivered"),
        "the audit saw what it was counted as delivered"
    );
    assert_eq!(
        delivered as u64 + audit_counter("dropped") + audit_counter("failed"),
        accepted,
        "every accepted event reached the audit or was counted against it"
    );
    assert_eq!(
        counter(&registry, "lookout_sanitizer_failures_total", &[]),
        0
    );
    for outcome in ["trap", "timeout", "out_of_memory"] {
        assert_eq!(
            counter(
                &registry,
                "lookout_plugin_calls_total",
                &[("outcome", outcome)]
            ),
            0,
            "{outcome}"
        );
    }
    eprintln!(
        "hot swap: {published} events offered, {accepted} sanitized ({:.0}/s), {delivered} reached the audit, in {elapsed:?} across 20 swaps",
        accepted as f64 / elapsed.as_secs_f64()
    );
    assert!(
        published > 10_000,
        "only {published} events flowed during the swaps"
    );
    // The plugin API's counters for the running version's plugin: a share of the events,
    // no failures, a cost per event.
    let redact = plugins.list().remove(0);
    assert_eq!(redact.name, "redact");
    let c = redact.counters;
    assert!(
        c.events_in > 0 && c.events_in < accepted,
        "{c:?} of {accepted}"
    );
    assert!(
        c.calls > 0 && c.failures == 0 && c.ns_per_event.is_some(),
        "{c:?}"
    );
}

const ERROR_COUNTER_MANIFEST: &str = r#"
name = "error-counter"
world = "consumer"
[limits]
max_series_per_metric = 2
[[metrics]]
name = "errors_total"
help = "Failed requests by command."
kind = "counter"
labels = ["command"]
"#;

fn completed(command: &str, success: bool, duration_ms: f64) -> Event {
    Event::new("request.completed")
        .field("command", command)
        .field("success", success)
        .field("duration_ms", duration_ms)
}

/// Sums a custom metric from the plugins' own registries.
fn custom(plugins: &PluginRegistry, name: &str, labels: &[(&str, &str)]) -> f64 {
    lookout_testkit::family_sum(&plugins.gather_custom(), name, labels)
}

/// A consumer plugin gets sanitized events and updates the metric its manifest declared,
/// within its series cap; updates past the cap are refused and counted. A swap to a new
/// version with the same declarations keeps the counts; removal stops delivery and exposure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_plugin_counts_errors_within_its_budget() {
    let (bus, registry, plugins) = start_bus_with_registry();
    let manifest = Manifest::parse(ERROR_COUNTER_MANIFEST).unwrap();
    plugins
        .install(manifest.clone(), ERROR_COUNTER, "test")
        .unwrap();
    for (command, success) in [
        ("a", false),
        ("a", false),
        ("b", false),
        ("b", true),
        ("c", false),
    ] {
        bus.publish(completed(command, success, 10.0));
    }
    assert!(bus.flush(Duration::from_secs(10)).await);
    let errors = "lookout_plugin_error_counter_errors_total";
    assert_eq!(custom(&plugins, errors, &[("command", "a")]), 2.0);
    assert_eq!(custom(&plugins, errors, &[("command", "b")]), 1.0);
    assert_eq!(
        custom(&plugins, errors, &[("command", "c")]),
        0.0,
        "past the 2-series cap"
    );
    assert_eq!(
        counter(
            &registry,
            "lookout_plugin_metric_rejections_total",
            &[("reason", "series_cap")]
        ),
        1
    );
    assert_eq!(consumer_events(&registry, "error-counter", "delivered"), 5);

    // Same declarations: the new version carries the counts on.
    plugins.install(manifest, ERROR_COUNTER, "test").unwrap();
    bus.publish(completed("a", false, 10.0));
    assert!(bus.flush(Duration::from_secs(10)).await);
    assert_eq!(custom(&plugins, errors, &[("command", "a")]), 3.0);

    plugins.remove("error-counter", "test").unwrap();
    bus.publish(completed("a", false, 10.0));
    assert!(bus.flush(Duration::from_secs(10)).await);
    assert!(
        plugins.gather_custom().is_empty(),
        "a removed plugin's metrics are gone"
    );
    assert_eq!(consumer_events(&registry, "error-counter", "delivered"), 6);
}

/// Updates to a metric the plugin did not declare are refused (and counted), and the plugin
/// keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeclared_metric_updates_are_refused() {
    let (bus, registry, plugins) = start_bus_with_registry();
    let manifest =
        Manifest::parse(&ERROR_COUNTER_MANIFEST.replace("errors_total", "failures_total")).unwrap();
    plugins.install(manifest, ERROR_COUNTER, "test").unwrap();
    bus.publish(completed("a", false, 10.0));
    bus.publish(completed("b", false, 10.0));
    assert!(bus.flush(Duration::from_secs(10)).await);
    assert_eq!(
        counter(
            &registry,
            "lookout_plugin_metric_rejections_total",
            &[("plugin", "error-counter"), ("reason", "undeclared")]
        ),
        2
    );
    assert_eq!(
        custom(&plugins, "lookout_plugin_error_counter_failures_total", &[]),
        0.0
    );
    assert_eq!(consumer_events(&registry, "error-counter", "delivered"), 2);
}

/// A metrics plugin declares its metrics with `describe()` and fills them from events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_plugin_judges_requests_against_its_threshold() {
    let (bus, _registry, plugins) = start_bus_with_registry();
    let manifest =
        Manifest::parse("name = \"slo\"\nworld = \"metrics\"\n[config]\nthreshold_ms = \"100\"\n")
            .unwrap();
    plugins.install(manifest, SLO, "test").unwrap();
    for (success, ms) in [(true, 50.0), (true, 99.0), (true, 500.0), (false, 10.0)] {
        bus.publish(completed("render", success, ms));
    }
    assert!(bus.flush(Duration::from_secs(10)).await);
    let total = "lookout_plugin_slo_requests_total";
    assert_eq!(
        custom(
            &plugins,
            total,
            &[("command", "render"), ("verdict", "good")]
        ),
        2.0
    );
    assert_eq!(
        custom(
            &plugins,
            total,
            &[("command", "render"), ("verdict", "bad")]
        ),
        2.0
    );
    let histogram = plugins
        .gather_custom()
        .into_iter()
        .find(|f| f.name() == "lookout_plugin_slo_duration_ms")
        .expect("histogram declared");
    assert_eq!(
        histogram.get_metric()[0].get_histogram().get_sample_count(),
        4
    );

    // A metrics plugin may not also declare [[metrics]] in its manifest.
    let both = Manifest::parse("name = \"slo\"\nworld = \"metrics\"\n[[metrics]]\nname = \"x\"\nhelp = \"\"\nkind = \"gauge\"\n").unwrap();
    assert!(plugins.install(both, SLO, "test").is_err());
    // A component of another world is refused for this one (under a name of its own: `slo`
    // is a metrics plugin's now, and names are one namespace).
    let wrong = Manifest::parse("name = \"slo-consumer\"\nworld = \"consumer\"\n").unwrap();
    let err = plugins.install(wrong, SLO, "test").unwrap_err();
    assert!(matches!(err, Error::WrongWorld { .. }), "{err}");
}

/// Repeated failures quarantine a plugin: it is not called while quarantined (its batches
/// still fail closed), the plugin list says why, and after the backoff one retry that
/// succeeds lifts the quarantine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_quarantine_then_recover() {
    let (bus, registry, plugins) = start_bus_batch_of_one();
    let manifest = Manifest::parse(
        "name = \"misbehave\"\nworld = \"sanitizer\"\n[quarantine]\nafter_failures = 2\nbackoff_ms = 300\n",
    )
    .unwrap();
    plugins.install(manifest, MISBEHAVE, "test").unwrap();
    let seen = Collect::default();
    bus.register("collect", seen.clone()).unwrap();
    let plain = || Event::new("plain").field("password", "hunter2");
    let ok_calls = || {
        counter(
            &registry,
            "lookout_plugin_calls_total",
            &[("plugin", "misbehave"), ("outcome", "ok")],
        )
    };

    for _ in 0..2 {
        bus.publish(Event::new("test.trap").field("password", "hunter2"));
        assert!(bus.flush(Duration::from_secs(10)).await);
    }
    let status = plugins.list()[0].status.clone();
    assert_eq!(status.state, BreakerState::Quarantined);
    assert!(status.last_error.unwrap().contains("trapped"));
    assert_eq!(
        counter(
            &registry,
            "lookout_plugin_quarantines_total",
            &[("plugin", "misbehave")]
        ),
        1
    );

    let calls_before = ok_calls();
    bus.publish(plain());
    assert!(bus.flush(Duration::from_secs(10)).await);
    assert_eq!(
        ok_calls(),
        calls_before,
        "a quarantined plugin is not called"
    );
    assert_eq!(
        seen.events().last().unwrap().get("password"),
        Some(&FieldValue::Str(FAILED_CLOSED.into())),
        "its batches fail closed"
    );

    lookout_testkit::eventually(
        "the quarantine lifted after its backoff",
        Duration::from_secs(10),
        || {
            bus.publish(plain());
            let bus = bus.clone();
            let plugins = &plugins;
            async move {
                bus.flush(Duration::from_secs(5)).await;
                (plugins.list()[0].status.state == BreakerState::Running).then_some(())
            }
        },
    )
    .await;
    assert_eq!(
        seen.events().last().unwrap().get("password"),
        Some(&FieldValue::Str("hunter2".into())),
        "misbehave passes plain batches through once running again"
    );
}

/// The registry keeps its store in step by where a version came from: what the API installs
/// is kept (with the version before it), a rollback swaps the kept versions, a version from
/// the plugin folder supersedes the kept one, a delete forgets it; an install that says
/// nothing of its origin (start-up, a restore) leaves the store as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_keeps_its_store_by_where_a_version_came_from() {
    use lookout_artifacts::plugins::ERROR_COUNTER;
    use lookout_wasm::{Origin, PluginStore};
    let dir = lookout_testkit::artifacts_dir().join("registry-store");
    let _ = std::fs::remove_dir_all(&dir);
    let (_bus, _registry, plugins) = start_bus_with_registry();
    plugins.keep_in(PluginStore::open(&dir).unwrap());
    let store = || plugins.store().unwrap();
    let kept = |name: &str| {
        store()
            .slots()
            .into_iter()
            .find(|s| s.slot == name)
            .map(|s| {
                let version = |v: &Option<lookout_wasm::KeptVersion>| {
                    v.as_ref().map(|v| v.manifest.version.clone())
                };
                (version(&s.current), version(&s.previous))
            })
    };
    let text = |version: &str| {
        format!("name = \"counted\"\nworld = \"consumer\"\nversion = \"{version}\"\n")
    };
    for version in ["1", "2"] {
        let manifest_text = text(version);
        let manifest = Manifest::parse(&manifest_text).unwrap();
        let origin = Origin::Api {
            manifest_text: &manifest_text,
        };
        plugins
            .install_from(manifest, ERROR_COUNTER, origin, "api")
            .unwrap();
    }
    assert_eq!(kept("counted"), Some((Some("2".into()), Some("1".into()))));
    plugins.rollback("counted", "api").unwrap();
    assert_eq!(kept("counted"), Some((Some("1".into()), Some("2".into()))));
    // Not said where from: the store is left alone.
    plugins
        .install(Manifest::parse(&text("3")).unwrap(), ERROR_COUNTER, "test")
        .unwrap();
    assert_eq!(kept("counted"), Some((Some("1".into()), Some("2".into()))));
    plugins
        .install_from(
            Manifest::parse(&text("4")).unwrap(),
            ERROR_COUNTER,
            Origin::Folder,
            "watch",
        )
        .unwrap();
    assert_eq!(
        kept("counted"),
        None,
        "the folder's version supersedes the kept one"
    );

    let manifest_text = text("5");
    let origin = Origin::Api {
        manifest_text: &manifest_text,
    };
    plugins
        .install_from(
            Manifest::parse(&manifest_text).unwrap(),
            ERROR_COUNTER,
            origin,
            "api",
        )
        .unwrap();
    assert!(kept("counted").is_some());
    plugins.delete("counted", "api").unwrap();
    assert_eq!(kept("counted"), None, "a deleted plugin stays deleted");
    assert!(plugins.list().iter().all(|p| p.name != "counted"));
}
