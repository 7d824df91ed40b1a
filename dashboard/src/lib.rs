//! lookout's dashboard: a Leptos client-side app served by the host at `/`.
//!
//! It follows the host's live stream (`/api/v1/events/stream`, Server-Sent Events of
//! sanitized events) and shows the most recent events and how many of each kind it has seen.
//! It only reads; it never holds anything the host did not already sanitize.

use std::collections::BTreeMap;

use futures::StreamExt;
use gloo_net::eventsource::futures::EventSource;
use leptos::prelude::*;
use serde::Deserialize;
use wasm_bindgen::prelude::wasm_bindgen;

/// Most events kept on the page.
const RECENT_EVENTS: usize = 100;

/// One event as the stream sends it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
struct StreamEvent {
    id: u64,
    kind: String,
    timestamp_ns: u64,
    correlation_id: Option<String>,
    severity: String,
    #[serde(default)]
    fields: serde_json::Map<String, serde_json::Value>,
}

impl StreamEvent {
    /// `12:34:56.789` in UTC.
    fn time(&self) -> String {
        let ms = self.timestamp_ns / 1_000_000;
        let secs = ms / 1000;
        format!(
            "{:02}:{:02}:{:02}.{:03}",
            (secs / 3600) % 24,
            (secs / 60) % 60,
            secs % 60,
            ms % 1000
        )
    }

    fn fields_text(&self) -> String {
        self.fields
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join("  ")
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Link {
    Connecting,
    Live,
    Lost,
}

#[component]
fn App() -> impl IntoView {
    let (events, set_events) = signal(Vec::<StreamEvent>::new());
    let (counts, set_counts) = signal(BTreeMap::<String, u64>::new());
    let (link, set_link) = signal(Link::Connecting);

    leptos::task::spawn_local(async move {
        let Ok(mut source) = EventSource::new("/api/v1/events/stream") else {
            set_link.set(Link::Lost);
            return;
        };
        let Ok(mut messages) = source.subscribe("message") else {
            set_link.set(Link::Lost);
            return;
        };
        set_link.set(Link::Live);
        while let Some(Ok((_, message))) = messages.next().await {
            let Some(data) = message.data().as_string() else {
                continue;
            };
            let Ok(event) = serde_json::from_str::<StreamEvent>(&data) else {
                continue;
            };
            set_counts.update(|c| *c.entry(event.kind.clone()).or_default() += 1);
            set_events.update(|list| {
                list.insert(0, event);
                list.truncate(RECENT_EVENTS);
            });
        }
        // The source lives in this task: dropping it here closes the connection.
        source.close();
        set_link.set(Link::Lost);
    });

    let link_text = move || match link.get() {
        Link::Connecting => "connecting…",
        Link::Live => "live",
        Link::Lost => "disconnected — reload to retry",
    };
    let link_class = move || match link.get() {
        Link::Connecting => "link connecting",
        Link::Live => "link live",
        Link::Lost => "link lost",
    };
    let total = move || counts.with(|c| c.values().sum::<u64>());

    view! {
        <header>
            <h1>"lookout"</h1>
            <span id="link" class=link_class>{link_text}</span>
        </header>
        <main>
            <section class="cards">
                <div class="card">
                    <div class="label">"events seen"</div>
                    <div id="total" class="value">{total}</div>
                </div>
                <For each=move || counts.get().into_iter() key=|(kind, n)| (kind.clone(), *n) let((kind, n))>
                    <div class="card kind" data-kind=kind.clone()>
                        <div class="label">{kind.clone()}</div>
                        <div class="value">{n}</div>
                    </div>
                </For>
            </section>
            <section>
                <h2>"Recent events"</h2>
                <table id="events">
                    <thead><tr><th>"time (UTC)"</th><th>"severity"</th><th>"kind"</th><th>"correlation"</th><th>"fields"</th></tr></thead>
                    <tbody>
                        <For each=move || events.get() key=|e| e.id let(e)>
                            <tr class=format!("event sev-{}", e.severity) data-id=e.id.to_string()>
                                <td>{e.time()}</td>
                                <td>{e.severity.clone()}</td>
                                <td class="kind">{e.kind.clone()}</td>
                                <td>{e.correlation_id.clone().unwrap_or_default()}</td>
                                <td class="fields">{e.fields_text()}</td>
                            </tr>
                        </For>
                    </tbody>
                </table>
            </section>
        </main>
    }
}

#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(App);
}
