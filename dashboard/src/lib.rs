//! lookout's dashboard: a Leptos client-side app served by the host at `/`.
//!
//! It takes one overview from `/api/v1/overview`, then follows `/api/v1/overview/stream`
//! (the same, pushed every second) and `/api/v1/events/stream` (sanitized events, for the
//! tap). Both streams reconnect by themselves after the host restarts. It only reads; it
//! never holds anything the host did not already sanitize. State and formatting live in
//! `lookout-dashboard-model` (tested natively); this file is the view.

use futures::StreamExt;
use gloo_net::eventsource::futures::EventSource;
use leptos::prelude::*;
use lookout_dashboard_model::{
    self as model, Dashboard, ErrorRow, EventView, Overview, PluginRow, TapFilter, format_bytes,
    format_ms, format_percent, format_rate, format_time, format_uptime, sparkline,
};
use wasm_bindgen::prelude::wasm_bindgen;

#[derive(Clone, Copy, PartialEq)]
enum Link {
    Connecting,
    Live,
    Reconnecting,
}

/// Waits `ms` milliseconds (a browser timer).
async fn sleep(ms: u64) {
    let (tx, rx) = futures::channel::oneshot::channel::<()>();
    set_timeout(
        move || {
            let _ = tx.send(());
        },
        std::time::Duration::from_millis(ms),
    );
    let _ = rx.await;
}

/// Follows a Server-Sent Events stream for good: the browser retries a dropped connection by
/// itself; a stream it gave up on is opened again after a pause.
async fn follow(url: &'static str, on_message: impl Fn(String) + 'static, link: WriteSignal<Link>) {
    loop {
        if let Ok(mut source) = EventSource::new(url)
            && let Ok(mut messages) = source.subscribe("message")
        {
            while let Some(item) = messages.next().await {
                match item {
                    Ok((_, message)) => {
                        link.set(Link::Live);
                        if let Some(data) = message.data().as_string() {
                            on_message(data);
                        }
                    }
                    // The browser is reconnecting on its own.
                    Err(_) => link.set(Link::Reconnecting),
                }
            }
            source.close();
        }
        link.set(Link::Reconnecting);
        sleep(2000).await;
    }
}

#[component]
fn App() -> impl IntoView {
    let dash = RwSignal::new(Dashboard::default());
    let (link, set_link) = signal(Link::Connecting);
    let (_tap_link, set_tap_link) = signal(Link::Connecting);

    // The overview comes every second. The browser reconnects a lost stream by itself and
    // says nothing while it tries, so silence is what tells the connection is gone.
    let beats = std::rc::Rc::new(std::cell::Cell::new(0u64));
    {
        let beats = beats.clone();
        leptos::task::spawn_local(async move {
            let (mut seen, mut silent) = (0, 0);
            loop {
                sleep(1500).await;
                if beats.get() == seen {
                    silent += 1;
                    if silent >= 2 {
                        set_link.set(Link::Reconnecting);
                    }
                } else {
                    (seen, silent) = (beats.get(), 0);
                }
            }
        });
    }
    leptos::task::spawn_local(async move {
        // One snapshot first, then what the host pushes.
        if let Ok(response) = gloo_net::http::Request::get("/api/v1/overview")
            .send()
            .await
            && let Ok(overview) = response.json::<Overview>().await
        {
            dash.update(|d| d.apply(overview));
        }
        follow(
            "/api/v1/overview/stream",
            move |data| {
                beats.set(beats.get() + 1);
                if let Ok(overview) = serde_json::from_str::<Overview>(&data) {
                    dash.update(|d| d.apply(overview));
                }
            },
            set_link,
        )
        .await;
    });
    leptos::task::spawn_local(follow(
        "/api/v1/events/stream",
        move |data| {
            if let Ok(event) = serde_json::from_str::<EventView>(&data) {
                dash.update(|d| d.tap_push(event));
            }
        },
        set_tap_link,
    ));

    let link_view = move || match link.get() {
        Link::Connecting => ("link connecting", "connecting…"),
        Link::Live => ("link live", "live"),
        Link::Reconnecting => ("link lost", "reconnecting…"),
    };
    let status = move || {
        dash.with(|d| {
            d.overview
                .as_ref()
                .map_or("unknown".to_string(), |o| o.health.status.to_string())
        })
    };
    // The class alternates on every transition, which restarts the indicator's animation.
    let health_class = move || {
        let flip = dash.with(|d| d.health_transitions % 2);
        format!("health {} t{flip}", status())
    };
    let version = move || dash.with(|d| d.overview.as_ref().map(|o| o.host.version.clone()));

    view! {
        <header class="top">
            <h1>"lookout"</h1>
            <span class="version">{move || version().map(|v| format!("v{v}")).unwrap_or_default()}</span>
            <span id="health" class=health_class>{move || status().replace('_', " ")}</span>
            <span id="link" class=move || link_view().0>{move || link_view().1}</span>
        </header>
        <main>
            <HostPanel dash/>
            <section>
                <h2>"Pools"</h2>
                <div class="pools">
                    <For
                        each=move || dash.with(|d| d.overview.as_ref().map(|o| o.pools.clone()).unwrap_or_default())
                        key=|p| p.pool.name.clone()
                        let(entry)
                    >
                        <PoolCard name=entry.pool.name.clone() dash/>
                    </For>
                </div>
            </section>
            <Errors dash/>
            <Plugins dash/>
            <Tap dash/>
        </main>
    }
}

#[component]
fn HostPanel(dash: RwSignal<Dashboard>) -> impl IntoView {
    let overview = move || dash.with(|d| d.overview.clone().unwrap_or_default());
    let failing = move || {
        overview()
            .health
            .checks
            .into_iter()
            .filter(|c| c.status != model::CheckStatus::Ok)
            .collect::<Vec<_>>()
    };
    view! {
        <section class="host">
            <div class="stat"><span class="label">"uptime"</span><span class="value">{move || format_uptime(overview().host.uptime_s)}</span></div>
            <div class="stat"><span class="label">"memory"</span><span class="value" id="memory">{move || format_bytes(overview().host.memory_bytes)}</span></div>
            <div class="stat"><span class="label">"processes"</span><span class="value">{move || format!("1 + {} workers", overview().host.workers)}</span></div>
            <div class="stat"><span class="label">"events"</span><span class="value">{move || format_rate(dash.with(|d| d.bus_rate()))}</span></div>
            <div class="stat"><span class="label">"dropped"</span><span class="value" id="dropped">{move || format!("{:.0}", overview().bus.dropped)}</span></div>
            <ul id="failing" class="failing">
                <For each=failing key=|c| c.name.clone() let(check)>
                    <li>
                        <b>{check.name.clone()}</b>
                        {format!(" {} (must be {} {})", check.value, check.rule.words(), check.threshold)}
                        {check.detail.clone().map(|d| format!(" — {d}")).unwrap_or_default()}
                    </li>
                </For>
            </ul>
        </section>
    }
}

#[component]
fn PoolCard(name: String, dash: RwSignal<Dashboard>) -> impl IntoView {
    let key = name.clone();
    let entry = Memo::new(move |_| {
        dash.with(|d| {
            d.overview
                .as_ref()
                .and_then(|o| o.pools.iter().find(|p| p.pool.name == key).cloned())
                .unwrap_or_default()
        })
    });
    let entry = move || entry.get();
    let series_key = name.clone();
    let rates = Memo::new(move |_| dash.with(|d| d.rates(&series_key, 10.0)));
    let rates = move || rates.get();
    let spark_key = name.clone();
    let requests_line =
        move || dash.with(|d| sparkline(&d.request_series(&spark_key), 120.0, 28.0));
    let errors_key = name.clone();
    let errors_line = move || dash.with(|d| sparkline(&d.error_series(&errors_key), 120.0, 28.0));
    let workers = move || entry().pool.workers;
    view! {
        <article class="pool-card" data-pool=name.clone() data-status=move || entry().pool.status>
            <header>
                <h3>{name.clone()}</h3>
                <span class="badges">
                    {move || entry().pool.saturated.then(|| view! { <span class="status saturated">"saturated"</span> })}
                    <span class=move || format!("status {}", entry().pool.status)>{move || entry().pool.status}</span>
                </span>
            </header>
            <ul class="workers">
                <For each=workers key=|w| (w.slot, w.id.clone(), w.state.clone()) let(worker)>
                    <li class=format!("worker {}", worker.state) data-worker=worker.id.clone().unwrap_or_default()
                        title=worker.last_error.clone().unwrap_or_default()>
                        <span class="dot"></span>
                        {worker.id.clone().unwrap_or_else(|| format!("slot {}", worker.slot))}
                        <small>{worker.state.clone()}</small>
                    </li>
                </For>
            </ul>
            <dl class="stats">
                <div><dt>"requests"</dt><dd class="rate">{move || format_rate(rates().0)}</dd></div>
                <div><dt>"errors"</dt><dd class="error-rate">{move || format_percent(rates().1)}</dd></div>
                <div><dt>"p50"</dt><dd>{move || format_ms(entry().window.p50_ms)}</dd></div>
                <div><dt>"p95"</dt><dd>{move || format_ms(entry().window.p95_ms)}</dd></div>
                <div><dt>"queue"</dt><dd class="queue">{move || { let p = entry().pool; format!("{}/{}", p.queue_length, p.queue_limit) }}</dd></div>
                <div><dt>"sessions"</dt><dd>{move || entry().pool.sessions}</dd></div>
            </dl>
            <svg class="spark" viewBox="0 0 120 28" preserveAspectRatio="none" aria-label="requests and errors per second, last two minutes">
                <polyline class="requests" points=requests_line></polyline>
                <polyline class="errors" points=errors_line></polyline>
            </svg>
        </article>
    }
}

#[component]
fn Errors(dash: RwSignal<Dashboard>) -> impl IntoView {
    let errors = move || {
        dash.with(|d| {
            d.overview
                .as_ref()
                .map(|o| o.errors.clone())
                .unwrap_or_default()
        })
    };
    view! {
        <section>
            <h2>"Recent errors"</h2>
            <table id="errors" class="errors">
                <thead><tr><th>"last seen (UTC)"</th><th>"pool"</th><th>"command"</th><th>"kind"</th><th>"count"</th><th>"latest"</th></tr></thead>
                <tbody>
                    <For each=errors key=|g| g.row_key() let(g)>
                        <tr class="error" data-count=g.count.to_string() data-correlation=g.latest.correlation_id.clone().unwrap_or_default()>
                            <td>{format_time(g.last_seen_ns)}</td>
                            <td>{g.pool_text()}</td>
                            <td>{g.command.clone().unwrap_or_else(|| "—".into())}</td>
                            <td>{g.error_kind.clone()}</td>
                            <td class="count">{g.seen_text()}</td>
                            <td>
                                {g.latest.error_message()}
                                <div class="small mono">{g.latest.correlation_id.clone().unwrap_or_default()}</div>
                                {(!g.latest.text("traceback").is_empty()).then(|| view! {
                                    <details><summary>"traceback"</summary><pre class="traceback">{g.latest.text("traceback")}</pre></details>
                                })}
                            </td>
                        </tr>
                    </For>
                </tbody>
            </table>
        </section>
    }
}

#[component]
fn Plugins(dash: RwSignal<Dashboard>) -> impl IntoView {
    let plugins = move || {
        dash.with(|d| {
            d.overview
                .as_ref()
                .map(|o| o.plugins.clone())
                .unwrap_or_default()
        })
    };
    let swaps = move || {
        dash.with(|d| {
            d.overview
                .as_ref()
                .map(|o| o.swaps.clone())
                .unwrap_or_default()
        })
    };
    view! {
        <section>
            <h2>"Plugins"</h2>
            <table id="plugins">
                <thead><tr><th>"name"</th><th>"world"</th><th>"version"</th><th>"state"</th><th>"calls"</th><th>"failures"</th><th>"ns/event"</th><th>"last error"</th></tr></thead>
                <tbody>
                    <For each=plugins key=|p: &model::Plugin| (p.name.clone(), p.version, p.status.state.clone(), p.counters.calls) let(p)>
                        <tr class=format!("plugin {}", p.status.state) data-plugin=p.name.clone()>
                            <td>{p.name.clone()}{p.redactions_line().map(|line| view! { <div class="small plugin-redactions">{line}</div> })}</td>
                            <td>{p.world.clone()}</td>
                            <td class="plugin-version">{if p.author_version.is_empty() { format!("v{}", p.version) } else { format!("v{} ({})", p.version, p.author_version) }}</td>
                            <td>{p.status.state.clone()}</td>
                            <td>{p.counters.calls}</td>
                            <td>{p.counters.failures}</td>
                            <td>{p.counters.ns_per_event.map(|n| format!("{n:.0}")).unwrap_or_else(|| "—".into())}</td>
                            <td class="small">{p.status.last_error.clone().unwrap_or_default()}</td>
                        </tr>
                    </For>
                </tbody>
            </table>
            <details class="swaps">
                <summary>"swap history"</summary>
                <ul>
                    <For each=swaps key=|s| (s.at_ms, s.plugin.clone(), s.outcome.clone()) let(s)>
                        <li>{format!("{} {} v{} {} ({}){}", format_time(s.at_ms * 1_000_000), s.plugin, s.version.map(|v| v.to_string()).unwrap_or_else(|| "—".into()), s.outcome, s.source, s.error.clone().map(|e| format!(": {e}")).unwrap_or_default())}</li>
                    </For>
                </ul>
            </details>
        </section>
    }
}

#[component]
fn Tap(dash: RwSignal<Dashboard>) -> impl IntoView {
    let filter = RwSignal::new(TapFilter::default());
    let shown = move || {
        let filter = filter.get();
        dash.with(|d| {
            d.tap
                .iter()
                .filter(|e| filter.matches(e))
                .take(100)
                .cloned()
                .collect::<Vec<_>>()
        })
    };
    let paused = move || dash.with(|d| d.tap_paused);
    view! {
        <section>
            <h2>"Event tap"</h2>
            <div class="tap-controls">
                <input id="tap-kind" placeholder="kind prefix, e.g. request." on:input=move |ev| filter.update(|f| f.kind = event_target_value(&ev))/>
                <input id="tap-correlation" placeholder="correlation id" on:input=move |ev| filter.update(|f| f.correlation = event_target_value(&ev))/>
                <select id="tap-host" on:change=move |ev| filter.update(|f| f.host = event_target_value(&ev))>
                    <option value="">"all hosts"</option>
                    <For each=move || dash.with(|d| d.hosts()) key=|h| h.clone() let(h)>
                        <option value=h.clone()>{h.clone()}</option>
                    </For>
                </select>
                <button id="tap-pause" on:click=move |_| dash.update(|d| { let p = !d.tap_paused; d.set_paused(p) })>
                    {move || if paused() { "resume" } else { "pause" }}
                </button>
                <span class="small">{move || { let n = dash.with(|d| d.tap_missed); if n > 0 { format!("{n} new while paused") } else { String::new() } }}</span>
            </div>
            <table id="events">
                <thead><tr><th>"time"</th><th>"host"</th><th>"severity"</th><th>"kind"</th><th>"correlation"</th><th>"fields"</th></tr></thead>
                <tbody>
                    <For each=shown key=|e| e.id let(e)>
                        <tr class=format!("event sev-{}", e.severity) data-id=e.id.to_string()>
                            <td>{format_time(e.timestamp_ns)}</td>
                            <td class="host">{e.host().to_string()}</td>
                            <td>{e.severity.clone()}</td>
                            <td class="kind">{e.kind.clone()}</td>
                            <td class="mono">{e.correlation_id.clone().unwrap_or_default()}</td>
                            <td class="fields">{e.fields_text()}</td>
                        </tr>
                    </For>
                </tbody>
            </table>
        </section>
    }
}

#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(App);
}
