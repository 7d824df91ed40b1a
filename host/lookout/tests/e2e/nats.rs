//! Several lookout hosts sharing sanitized events through a real `nats-server` (Debian's) on
//! loopback: events from one host reach the others' live streams, sanitized, marked with their
//! origin, never looping back; counts reconcile; a broker outage under load is buffered,
//! counted and resumed; the wire never carries a secret; TLS and token auth work.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use lookout_testkit::{Host, LiveStream, Metrics, artifacts_dir, eventually, free_port};
use serde_json::{Value, json};

use crate::LOOKOUT;

const SECRET: &str = "hunter2-nats-Qx7";

/// A `nats-server` on loopback; killed when dropped.
struct NatsServer {
    child: Child,
    port: u16,
    args: Vec<String>,
}

impl NatsServer {
    async fn start(port: u16, args: &[String]) -> NatsServer {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server runs (Debian's nats-server package; `cargo xtask setup`)");
        let server = NatsServer {
            child,
            port,
            args: args.to_vec(),
        };
        lookout_testkit::listening("nats-server", port, Duration::from_secs(10)).await;
        server
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    async fn restart(&mut self) {
        self.kill();
        *self = NatsServer::start(self.port, &self.args.clone()).await;
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A host with NATS on; `nats` is the body of its `[nats]` table (after `enabled`).
fn host_with(name: &str, nats: &str) -> Host {
    // Unique per call: tests run in parallel in one process, and the file is watched.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = artifacts_dir().join(format!("nats-{name}-{}-{n}.toml", std::process::id()));
    // No pools: the only events are the test's (and the host's own few).
    std::fs::write(
        &path,
        format!("[nats]\nenabled = true\nhost = \"{name}\"\n{nats}\n"),
    )
    .unwrap();
    Host::start(LOOKOUT, &["--config", path.to_str().unwrap()]).expect("lookout starts")
}

async fn connected(host: &Host) -> bool {
    host.get_json("/health/detailed")
        .await
        .is_some_and(|d| d["nats"]["connected"] == true)
}

/// Waits until `host` has logged the server's refusal of its credentials.
async fn refused(host: &Host) {
    eventually(
        "the server refusing the credentials",
        Duration::from_secs(20),
        || async {
            host.logs()
                .iter()
                .any(|l| l.to_lowercase().contains("authorization"))
                .then_some(())
        },
    )
    .await;
}

async fn all_connected(hosts: &[&Host]) {
    eventually(
        "every host connected to NATS",
        Duration::from_secs(30),
        || async {
            for host in hosts {
                if !connected(host).await {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
}

async fn post(host: &Host, kind: &str, n: usize, from: usize) -> u64 {
    let events: Vec<Value> = (from..from + n)
        .map(|i| {
            json!({"kind": kind, "correlation_id": format!("c-{i}"),
                   "fields": {"i": i, "user": "bob", "password": SECRET, "note": format!("token={SECRET}")}})
        })
        .collect();
    host.post_events(&Value::Array(events)).await["accepted"]
        .as_u64()
        .unwrap()
}

fn count(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> u64 {
    m.sum(name, labels) as u64
}

/// The sink's books balance: every event it was handed was published, dropped, skipped as
/// another host's, or is still in its buffer.
fn sink_balances(m: &Metrics) -> bool {
    let handed = count(
        m,
        "lookout_consumer_events_total",
        &[("consumer", "nats_sink"), ("outcome", "delivered")],
    );
    let sink = |o| count(m, "lookout_nats_sink_events_total", &[("outcome", o)]);
    let buffered = count(m, "lookout_nats_sink_buffered_events", &[]);
    handed == sink("published") + sink("dropped") + sink("remote") + buffered
}

/// A raw NATS client (not lookout) keeping every message on `lookout.>`.
async fn wire_tap(port: u16) -> Arc<Mutex<Vec<(String, String)>>> {
    let client = async_nats::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    let mut subscriber = client.subscribe("lookout.>").await.unwrap();
    client.flush().await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keep = seen.clone();
    tokio::spawn(async move {
        let _client = client;
        while let Some(m) = subscriber.next().await {
            keep.lock().unwrap().push((
                m.subject.to_string(),
                String::from_utf8_lossy(&m.payload).into_owned(),
            ));
        }
    });
    seen
}

/// Three hosts and one broker: A's events appear sanitized in C's live stream with origin A
/// (and in B's); nobody forwards another host's events, so nothing loops; the raw wire never
/// carries the secret; every count reconciles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_cross_hosts_sanitized_with_their_origin_and_counts_reconcile() {
    let server = NatsServer::start(free_port(), &[]).await;
    let url = format!("urls = [\"nats://127.0.0.1:{}\"]", server.port);
    let both = format!("{url}\n[nats.source]\nenabled = true\n");
    let a = host_with("host-a", &both);
    let b = host_with("host-b", &both);
    let c = host_with(
        "host-c",
        &format!("{url}\n[nats.sink]\nenabled = false\n[nats.source]\nenabled = true\n"),
    );
    let wire = wire_tap(server.port).await;
    all_connected(&[&a, &b, &c]).await;
    let mut on_c = LiveStream::open(&c, "?origin=host-a&kind=app.")
        .await
        .unwrap();
    let mut on_c_local = LiveStream::open(&c, "?origin=local&kind=app.")
        .await
        .unwrap();

    assert_eq!(post(&a, "app.signup", 40, 0).await, 40);
    let events = on_c.take(40, Duration::from_secs(20)).await;
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains(SECRET), "a secret reached host C: {text}");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["origin"], "host-a");
        assert_eq!(e["kind"], "app.signup");
        assert_eq!(e["fields"]["i"], i, "in order");
        assert_eq!(e["fields"]["password"], "[REDACTED]");
        assert_eq!(e["fields"]["user"], "bob");
        assert_eq!(e["correlation_id"], format!("c-{i}"));
    }
    // C's own: one event posted there, seen with no origin; A's are not "local" on C.
    assert_eq!(post(&c, "app.local", 1, 0).await, 1);
    let local = on_c_local.take(1, Duration::from_secs(10)).await;
    assert_eq!(local[0]["kind"], "app.local");
    assert!(local[0].get("origin").is_none());

    // At rest: the counts of the three hosts and the wire agree.
    let reconciled = eventually(
        "the hosts' counts to reconcile",
        Duration::from_secs(20),
        || async {
            let (ma, mb, mc) = (a.metrics().await, b.metrics().await, c.metrics().await);
            let signup = [("kind", "app.signup")];
            let published = |m: &Metrics| count(m, "lookout_events_published_total", &signup);
            let wire = wire.lock().unwrap().clone();
            let on_wire: Vec<_> = wire
                .iter()
                .filter(|(s, _)| s.ends_with(".app.signup"))
                .collect();
            let settled = published(&ma) == 40
                && published(&mb) == 40
                && published(&mc) == 40
                && on_wire.len() == 40
                && sink_balances(&ma)
                && sink_balances(&mb);
            settled.then_some((ma, mb, mc, wire))
        },
    )
    .await;
    let (ma, mb, mc, wire) = reconciled;
    // Every signup on the wire is A's: B (which received them) did not forward them.
    assert!(
        wire.iter()
            .filter(|(s, _)| s.ends_with(".app.signup"))
            .all(|(s, _)| s == "lookout.host-a.app.signup")
    );
    assert!(
        !wire.iter().any(|(_, body)| body.contains(SECRET)),
        "a secret crossed the wire"
    );
    assert!(
        !wire.iter().any(|(s, _)| s.starts_with("lookout.host-c.")),
        "C's sink is off"
    );
    // A heard its own messages and ignored them; B and C took A's in.
    assert!(
        count(
            &ma,
            "lookout_nats_source_events_total",
            &[("origin", "host-a"), ("outcome", "own")]
        ) >= 40
    );
    for m in [&mb, &mc] {
        assert!(
            count(
                m,
                "lookout_nats_source_events_total",
                &[("origin", "host-a"), ("outcome", "received")]
            ) >= 40
        );
    }
    assert!(
        count(
            &mb,
            "lookout_nats_sink_events_total",
            &[("outcome", "remote")]
        ) >= 40
    );
    assert_eq!(
        count(
            &ma,
            "lookout_nats_sink_events_total",
            &[("outcome", "dropped")]
        ),
        0
    );
    for host in [&a, &b, &c] {
        assert!(!host.logs().join("\n").contains(SECRET));
    }
}

/// The broker goes away under load: the hosts keep serving, A buffers up to its bound and
/// counts what it drops, nothing is unaccounted, and when the broker returns A publishes
/// what it held and the stream resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_is_buffered_counted_and_resumed() {
    let mut server = NatsServer::start(free_port(), &[]).await;
    let url = format!("urls = [\"nats://127.0.0.1:{}\"]", server.port);
    let a = host_with(
        "host-a",
        &format!("{url}\n[nats.sink]\nbuffer_events = 2000\n"),
    );
    let c = host_with(
        "host-c",
        &format!("{url}\n[nats.sink]\nenabled = false\n[nats.source]\nenabled = true\n"),
    );
    all_connected(&[&a, &c]).await;
    assert_eq!(post(&a, "load.before", 100, 0).await, 100);
    let published_on_c =
        |m: &Metrics, kind: &str| count(m, "lookout_events_published_total", &[("kind", kind)]);
    eventually("C has A's first 100", Duration::from_secs(20), || async {
        (published_on_c(&c.metrics().await, "load.before") == 100).then_some(())
    })
    .await;

    server.kill();
    eventually(
        "A sees the broker gone",
        Duration::from_secs(20),
        || async { (!connected(&a).await).then_some(()) },
    )
    .await;
    // 6,000 events while the broker is away: every post is still answered.
    for round in 0..30 {
        assert_eq!(post(&a, "load.during", 200, round * 200).await, 200);
    }
    let during = eventually(
        "A's buffer full and the rest dropped",
        Duration::from_secs(20),
        || async {
            let m = a.metrics().await;
            let buffered = count(&m, "lookout_nats_sink_buffered_events", &[]);
            let dropped = count(
                &m,
                "lookout_nats_sink_events_total",
                &[("outcome", "dropped")],
            );
            (buffered == 2000 && dropped >= 4000 && sink_balances(&m)).then_some(m)
        },
    )
    .await;
    let dropped = count(
        &during,
        "lookout_nats_sink_events_total",
        &[("outcome", "dropped")],
    );
    assert!(
        a.http
            .get(a.url("/health"))
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );

    server.restart().await;
    all_connected(&[&a, &c]).await;
    let after = eventually("A's buffer published", Duration::from_secs(30), || async {
        let m = a.metrics().await;
        (count(&m, "lookout_nats_sink_buffered_events", &[]) == 0 && sink_balances(&m)).then_some(m)
    })
    .await;
    assert_eq!(
        count(
            &after,
            "lookout_nats_sink_events_total",
            &[("outcome", "dropped")]
        ),
        dropped,
        "nothing more was dropped once the broker was back"
    );
    assert!(count(&after, "lookout_nats_reconnects_total", &[]) >= 1);
    // The stream resumes: what A sends now reaches C, all of it. (What A published in the
    // moment before C had subscribed again is not replayed: core NATS keeps nothing for an
    // absent subscriber; A counted it published, C never saw it.)
    assert_eq!(post(&a, "load.after", 100, 0).await, 100);
    eventually(
        "C has A's 100 after the outage",
        Duration::from_secs(20),
        || async { (published_on_c(&c.metrics().await, "load.after") == 100).then_some(()) },
    )
    .await;
    let mc = c.metrics().await;
    assert!(
        published_on_c(&mc, "load.during") <= 2000,
        "C got no more than A held"
    );
}

/// TLS (a CA made here with openssl) and token auth: hosts with the CA and the token
/// connect and share events; a host with a wrong token never connects — and keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_token_auth() {
    let dir = artifacts_dir().join(format!("nats-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    make_certificates(&dir);
    let token = "s3cret-nats-token-123";
    let server = NatsServer::start(
        free_port(),
        &[
            "--tls".into(),
            "--tlscert".into(),
            dir.join("server.pem").display().to_string(),
            "--tlskey".into(),
            dir.join("server.key").display().to_string(),
            "--auth".into(),
            token.into(),
        ],
    )
    .await;
    let common = |token: &str| {
        format!(
            "urls = [\"tls://127.0.0.1:{}\"]\n[nats.tls]\nrequired = true\nca_file = \"{}\"\n[nats.auth]\ntoken = \"{token}\"\n",
            server.port,
            dir.join("ca.pem").display()
        )
    };
    let a = host_with("host-a", &common(token));
    let c = host_with(
        "host-c",
        &(common(token) + "[nats.sink]\nenabled = false\n[nats.source]\nenabled = true\n"),
    );
    let wrong = host_with("host-x", &common("not-the-token-at-all"));
    all_connected(&[&a, &c]).await;
    let mut on_c = LiveStream::open(&c, "?origin=host-a").await.unwrap();
    assert_eq!(post(&a, "app.tls", 3, 0).await, 3);
    let got = on_c.take(3, Duration::from_secs(20)).await;
    assert!(
        got.iter()
            .all(|e| e["kind"] == "app.tls" && e["origin"] == "host-a")
    );
    refused(&wrong).await;
    assert!(!connected(&wrong).await, "a wrong token must not connect");
    assert_eq!(post(&wrong, "app.x", 1, 0).await, 1, "it keeps serving");
    // The token is configuration, not something to show.
    let shown = a.get_json("/api/v1/config").await.unwrap();
    assert_eq!(shown["config"]["nats"]["auth"]["token"], "***");
    assert!(!a.logs().join("\n").contains(token));
}

/// A CA and a server certificate for 127.0.0.1, with openssl.
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=lookout-test-ca",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

/// User and password auth: the right pair connects, a wrong password does not (and the
/// host keeps serving); the password is masked in the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password_auth() {
    let server = NatsServer::start(
        free_port(),
        &[
            "--user".into(),
            "lookout".into(),
            "--pass".into(),
            "pw-0123456789".into(),
        ],
    )
    .await;
    let with = |password: &str| {
        format!(
            "urls = [\"nats://127.0.0.1:{}\"]\n[nats.auth]\nuser = \"lookout\"\npassword = \"{password}\"\n",
            server.port
        )
    };
    let good = host_with("host-u", &with("pw-0123456789"));
    let bad = host_with("host-w", &with("wrong-password"));
    all_connected(&[&good]).await;
    refused(&bad).await;
    assert!(!connected(&bad).await, "a wrong password must not connect");
    assert_eq!(post(&bad, "app.x", 1, 0).await, 1, "it keeps serving");
    let shown = good.get_json("/api/v1/config").await.unwrap();
    assert_eq!(shown["config"]["nats"]["auth"]["password"], "***");
    assert_eq!(shown["config"]["nats"]["auth"]["user"], "lookout");
}
