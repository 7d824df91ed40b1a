//! lookout over NATS (`async-nats`): many hosts, one view of their events, through a broker
//! operators already run instead of a protocol of our own.
//!
//! - The **sink** is a bus consumer, so it only ever sees events after the sanitizer. It
//!   publishes this host's own events to `<prefix>.<host>.<kind>` ([`wire`] format), from a
//!   bounded buffer that rides out a broker outage; what does not fit is dropped and counted.
//!   A chunk leaves the buffer only when a flush confirms the server has it (at-least-once:
//!   a chunk cut off mid-flush is sent again).
//! - The **source** subscribes to other hosts' subjects and publishes their events on this
//!   host's bus with `origin` set — so consumers, plugins, the live stream and the dashboard
//!   see the fleet.
//! - **No loops, by construction**: the sink forwards only events without an origin (this
//!   host's own); the source drops messages on this host's own subjects and messages that
//!   carry an origin.

mod config;
mod metrics;
pub mod wire;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use lookout_core::{Batch, Bus, Consumer, ConsumerError, ConsumerHandle};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub use config::{AuthConfig, NatsConfig, SinkConfig, SourceConfig, TlsConfig, valid_host};
use metrics::NatsMetrics;

/// Why NATS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("nats.{field}: {reason}")]
    Config { field: String, reason: String },
    #[error("nats: {0}")]
    Connect(String),
    #[error("nats metrics: {0}")]
    Metrics(String),
}

/// What `/health/detailed` and the overview show.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NatsStatus {
    pub host: String,
    pub connected: bool,
    pub sink: bool,
    pub source: bool,
    /// Events waiting in the sink's buffer.
    pub buffered: usize,
    pub buffer_capacity: usize,
}

/// A running NATS link: the client, the sink's consumer and publisher, the source.
pub struct Nats {
    host: String,
    client: async_nats::Client,
    connected: Arc<AtomicBool>,
    sink: Option<Arc<Sink>>,
    _sink_registration: Option<ConsumerHandle>,
    source: bool,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Nats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nats")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

/// The sink's buffer, shared by its bus consumer (fills it) and its publisher (empties it).
struct Sink {
    /// Subject and body of each event; both clone without copying (a chunk is cloned out to
    /// publish and only dropped from here once confirmed).
    buffer: Mutex<VecDeque<(async_nats::Subject, Bytes)>>,
    capacity: usize,
    batch: usize,
    wake: Notify,
    metrics: NatsMetrics,
}

/// The sink's face on the bus.
struct SinkConsumer {
    sink: Arc<Sink>,
    host: String,
    prefix: String,
}

impl Consumer for SinkConsumer {
    async fn handle(&mut self, batch: Batch) -> Result<(), ConsumerError> {
        let (mut added, mut dropped, mut remote) = (0u64, 0u64, 0u64);
        {
            let mut buffer = self.sink.buffer.lock();
            for event in batch.iter() {
                if event.origin.is_some() {
                    // Another host's event: it was published there; never again from here.
                    remote += 1;
                } else if buffer.len() >= self.sink.capacity {
                    dropped += 1;
                } else {
                    let subject = async_nats::Subject::from(format!(
                        "{}.{}.{}",
                        self.prefix, self.host, event.kind
                    ));
                    buffer.push_back((subject, Bytes::from(wire::encode(&self.host, event))));
                    added += 1;
                }
            }
            self.sink.metrics.buffered.set(buffer.len() as i64);
        }
        let m = &self.sink.metrics;
        m.sink_remote.inc_by(remote);
        if dropped > 0 {
            m.sink_dropped.inc_by(dropped);
            tracing::warn!(target: "lookout::nats", dropped, capacity = self.sink.capacity, "NATS sink buffer full: events dropped");
        }
        if added > 0 {
            self.sink.wake.notify_one();
        }
        Ok(())
    }
}

impl Nats {
    /// Connects (in the background if the server is not there yet: the host starts anyway)
    /// and starts the sink and the source as configured. `None` when NATS is off.
    pub async fn start(
        config: &NatsConfig,
        bus: &Bus,
        registry: &prometheus::Registry,
    ) -> Result<Option<Nats>, Error> {
        if !config.enabled {
            return Ok(None);
        }
        if let Some(invalid) = config.problems().into_iter().next() {
            return Err(Error::Config {
                field: invalid.field.trim_start_matches("nats.").into(),
                reason: invalid.reason,
            });
        }
        let host = config.host_name();
        let metrics = NatsMetrics::new(registry).map_err(|e| Error::Metrics(e.to_string()))?;
        let connected = Arc::new(AtomicBool::new(false));
        let state_change = Arc::new(Notify::new());
        let client = connect(config, &host, &metrics, &connected, &state_change).await?;

        let mut tasks = Vec::new();
        let (sink, registration) = if config.sink.enabled {
            let sink = Arc::new(Sink {
                buffer: Mutex::new(VecDeque::new()),
                capacity: config.sink.buffer_events,
                batch: config.sink.batch_events,
                wake: Notify::new(),
                metrics: metrics.clone(),
            });
            let registration = bus
                .register(
                    lookout_core::NATS_SINK_CONSUMER,
                    SinkConsumer {
                        sink: sink.clone(),
                        host: host.clone(),
                        prefix: config.subject_prefix.clone(),
                    },
                )
                .map_err(|e| Error::Connect(format!("cannot register the sink: {e}")))?;
            tasks.push(tokio::spawn(publish_loop(
                client.clone(),
                sink.clone(),
                connected.clone(),
                state_change.clone(),
            )));
            (Some(sink), Some(registration))
        } else {
            (None, None)
        };
        if config.source.enabled {
            let mut subscribers = Vec::new();
            for subject in &config.source.subjects {
                let subscriber =
                    client
                        .subscribe(subject.clone())
                        .await
                        .map_err(|e| Error::Config {
                            field: "source.subjects".into(),
                            reason: format!("`{subject}`: {e}"),
                        })?;
                subscribers.push(subscriber);
            }
            let own_token_at = config.subject_prefix.split('.').count();
            tasks.push(tokio::spawn(receive_loop(
                futures_util::stream::select_all(subscribers),
                bus.clone(),
                host.clone(),
                own_token_at,
                metrics.clone(),
            )));
        }
        tracing::info!(target: "lookout::nats", %host, urls = ?config.urls, sink = config.sink.enabled, source = config.source.enabled, "NATS link started");
        Ok(Some(Nats {
            host,
            client,
            connected,
            sink,
            _sink_registration: registration,
            source: config.source.enabled,
            tasks,
        }))
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn status(&self) -> NatsStatus {
        NatsStatus {
            host: self.host.clone(),
            connected: self.connected.load(Ordering::Acquire),
            sink: self.sink.is_some(),
            source: self.source,
            buffered: self.sink.as_ref().map_or(0, |s| s.buffer.lock().len()),
            buffer_capacity: self.sink.as_ref().map_or(0, |s| s.capacity),
        }
    }

    /// Gives the sink up to `grace` to publish what it holds (call after the bus drained),
    /// then stops. What is left is counted dropped and logged.
    pub async fn stop(&self, grace: Duration) {
        if let Some(sink) = &self.sink {
            let deadline = tokio::time::Instant::now() + grace;
            while !sink.buffer.lock().is_empty() && tokio::time::Instant::now() < deadline {
                sink.wake.notify_one();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        for task in &self.tasks {
            task.abort();
        }
        if let Some(sink) = &self.sink {
            let left = {
                let mut buffer = sink.buffer.lock();
                let n = buffer.len();
                buffer.clear();
                n
            };
            sink.metrics.buffered.set(0);
            if left > 0 {
                sink.metrics.sink_dropped.inc_by(left as u64);
                tracing::warn!(target: "lookout::nats", dropped = left, "NATS sink stopped with events it could not publish in time");
            }
        }
        let _ = tokio::time::timeout(grace, self.client.flush()).await;
    }
}

async fn connect(
    config: &NatsConfig,
    host: &str,
    metrics: &NatsMetrics,
    connected: &Arc<AtomicBool>,
    state_change: &Arc<Notify>,
) -> Result<async_nats::Client, Error> {
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("lookout-{host}"))
        .retry_on_initial_connect()
        .max_reconnects(None::<usize>)
        .connection_timeout(Duration::from_secs(5))
        // 100 ms doubling to 5 s.
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis(100u64.saturating_mul(1 << attempts.min(6) as u64))
                .min(Duration::from_secs(5))
        });
    let auth = &config.auth;
    if let Some(token) = &auth.token {
        options = options.token(token.clone());
    }
    if let (Some(user), Some(password)) = (&auth.user, &auth.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(creds) = &auth.creds_file {
        options = options
            .credentials_file(creds)
            .await
            .map_err(|e| Error::Config {
                field: "auth.creds_file".into(),
                reason: format!("{}: {e}", creds.display()),
            })?;
    }
    let tls = &config.tls;
    if tls.required {
        options = options.require_tls(true);
    }
    if let Some(ca) = &tls.ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    let (metrics, flag, notify) = (metrics.clone(), connected.clone(), state_change.clone());
    let seen_connected = Arc::new(AtomicBool::new(false));
    options = options.event_callback(move |event| {
        let (metrics, flag, notify, seen) = (
            metrics.clone(),
            flag.clone(),
            notify.clone(),
            seen_connected.clone(),
        );
        async move {
            match event {
                async_nats::Event::Connected => {
                    if seen.swap(true, Ordering::AcqRel) {
                        metrics.reconnects.inc();
                    }
                    flag.store(true, Ordering::Release);
                    metrics.connected.set(1);
                    tracing::info!(target: "lookout::nats", "connected to NATS");
                }
                async_nats::Event::Disconnected => {
                    flag.store(false, Ordering::Release);
                    metrics.connected.set(0);
                    tracing::warn!(target: "lookout::nats", "disconnected from NATS; reconnecting");
                }
                async_nats::Event::SlowConsumer(_) => {
                    metrics.slow_consumer.inc();
                    tracing::warn!(target: "lookout::nats", "NATS source too slow: the server dropped messages for it");
                }
                other => tracing::info!(target: "lookout::nats", event = %other, "NATS"),
            }
            notify.notify_waiters();
        }
    });
    let urls: Vec<async_nats::ServerAddr> = config
        .urls
        .iter()
        .map(|u| {
            u.parse().map_err(|e| Error::Config {
                field: "urls".into(),
                reason: format!("`{u}`: {e}"),
            })
        })
        .collect::<Result<_, _>>()?;
    options
        .connect(urls)
        .await
        .map_err(|e| Error::Connect(e.to_string()))
}

/// Empties the sink's buffer into NATS, a chunk at a time; a chunk leaves the buffer only
/// once a flush confirms it. While disconnected it waits (the buffer holds what comes).
async fn publish_loop(
    client: async_nats::Client,
    sink: Arc<Sink>,
    connected: Arc<AtomicBool>,
    state_change: Arc<Notify>,
) {
    let mut failures = 0u32;
    loop {
        let chunk: Vec<(async_nats::Subject, Bytes)> = {
            let buffer = sink.buffer.lock();
            buffer.iter().take(sink.batch).cloned().collect()
        };
        if chunk.is_empty() {
            // Woken by the consumer; the timeout covers a wake-up that raced the check.
            let _ = tokio::time::timeout(Duration::from_millis(100), sink.wake.notified()).await;
            continue;
        }
        if !connected.load(Ordering::Acquire) {
            let _ = tokio::time::timeout(Duration::from_millis(200), state_change.notified()).await;
            continue;
        }
        let mut sent = true;
        for (subject, payload) in &chunk {
            if client
                .publish(subject.clone(), payload.clone())
                .await
                .is_err()
            {
                sent = false;
                break;
            }
        }
        let confirmed = sent
            && matches!(
                tokio::time::timeout(Duration::from_secs(5), client.flush()).await,
                Ok(Ok(()))
            );
        if confirmed {
            failures = 0;
            let left = {
                let mut buffer = sink.buffer.lock();
                buffer.drain(..chunk.len());
                buffer.len()
            };
            sink.metrics.sink_published.inc_by(chunk.len() as u64);
            sink.metrics.buffered.set(left as i64);
        } else {
            // Kept; sent again once the connection is back (at-least-once).
            failures += 1;
            let pause = Duration::from_millis(50 * u64::from(failures.min(20)));
            tokio::time::sleep(pause).await;
        }
    }
}

/// Feeds other hosts' events into this host's bus, marked with their origin.
async fn receive_loop(
    mut messages: futures_util::stream::SelectAll<async_nats::Subscriber>,
    bus: Bus,
    host: String,
    host_token_at: usize,
    metrics: NatsMetrics,
) {
    let mut warned = 0u32;
    // Counters by origin and outcome, so a message costs no label lookup once its origin is
    // known. Bounded: origins past the cap go through the (capped) metric family each time.
    let mut counters: std::collections::HashMap<
        String,
        Vec<(&'static str, prometheus::IntCounter)>,
    > = std::collections::HashMap::new();
    let mut count = |origin: &str, outcome: &'static str| {
        let known = counters
            .get(origin)
            .and_then(|by| by.iter().find(|(o, _)| *o == outcome));
        if let Some((_, c)) = known {
            c.inc();
            return;
        }
        let c = metrics.source(origin, outcome);
        c.inc();
        if counters.len() < 1024 || counters.contains_key(origin) {
            counters
                .entry(origin.to_string())
                .or_default()
                .push((outcome, c));
        }
    };
    while let Some(message) = messages.next().await {
        let subject_host = message
            .subject
            .split('.')
            .nth(host_token_at)
            .unwrap_or_default()
            .to_string();
        if subject_host == host {
            // Our own events, back from the server: never taken in.
            count(&subject_host, "own");
            continue;
        }
        match wire::decode(&message.payload) {
            Ok(received) if received.host == subject_host => {
                let mut event = received.event;
                event.origin = Some(received.host);
                bus.publish(event);
                count(&subject_host, "received");
            }
            Ok(received) => {
                count(&subject_host, "invalid");
                if warned < 10 {
                    warned += 1;
                    tracing::warn!(target: "lookout::nats", subject = %message.subject, claims = %received.host, "NATS message refused: its host is not its subject's");
                }
            }
            Err(e) => {
                count(&subject_host, "invalid");
                if warned < 10 {
                    warned += 1;
                    tracing::warn!(target: "lookout::nats", subject = %message.subject, error = %e, "NATS message refused");
                }
            }
        }
    }
}
