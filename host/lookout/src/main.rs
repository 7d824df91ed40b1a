//! The `lookout` binary: CLI, wiring and shutdown.
//!
//! `lookout serve` with no flags and no files runs a working host: the embedded default
//! config, the embedded `redact` sanitizer and the embedded dashboard.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lookout_core::{Bus, RedactAll};
use lookout_server::{AppState, DashboardAssets};
use lookout_wasm::{PluginRegistry, Runtime, WasmSanitizer};
use prometheus::Registry;

use lookout::config::Config;
use lookout::{config_file, live, logging, plugin_cli, policy_test, watch};

#[derive(Parser)]
#[command(
    name = "lookout",
    version,
    about = "A WebAssembly-extensible observability host"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the host: HTTP API, metrics, health, dashboard and the event bus.
    Serve {
        /// Address to listen on (overrides `server.listen`); port 0 picks a free port.
        #[arg(long)]
        listen: Option<String>,
        /// A TOML config file; without one, the defaults apply.
        #[arg(long)]
        config: Option<PathBuf>,
        /// A folder of plugins (`<name>.wasm` + `<name>.toml`), loaded at start and watched.
        #[arg(long)]
        plugins: Option<PathBuf>,
        /// `json` (one object a line, the default) or `pretty` (overrides `log.format`).
        #[arg(long, value_parser = ["json", "pretty"])]
        log_format: Option<String>,
    },
    /// Check configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Check plugins, and push, list or roll back plugins on a running host.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Measure a sanitizer policy against examples of secrets and of text to keep.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Run a sanitizer over a JSONL file of examples (`text`, `needle`, `kind` tp|fp, optional
    /// `family`/`rule`) in three placements — (a) `text` as `message`, (b) the bare `needle` as
    /// `value`, (c) the `needle` in a sentence as `detail` — and print caught/kept per family.
    /// Exit 0 when every threshold holds, 1 when one fails, 2 for bad input.
    Test {
        examples: PathBuf,
        /// A sanitizer component to test instead of the embedded default `redact`.
        #[arg(long)]
        wasm: Option<PathBuf>,
        /// Its manifest (`[config]` is handed to `init`, fixtures run, as a swap would).
        #[arg(long, requires = "wasm")]
        manifest: Option<PathBuf>,
        /// The least share of secrets caught per placement: `a=0.97,b=0.6,c=0.6` (or one share
        /// for all three).
        #[arg(long, value_parser = policy_test::parse_min_caught)]
        min_caught: Option<policy_test::MinCaught>,
        /// The least share of non-secrets kept unchanged, in every placement.
        #[arg(long, value_parser = policy_test::parse_fraction)]
        min_kept: Option<f64>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// List the first 20 misses per family, with what came out.
        #[arg(long)]
        misses: bool,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Load a plugin as a swap would (world, init, describe, fixtures) and report; no host needed.
    Check {
        wasm: PathBuf,
        /// Its manifest; without one, the world it implements is found.
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
    /// Swap a plugin into a running host (needs LOOKOUT_ADMIN_TOKEN if the host has a token).
    Push {
        wasm: PathBuf,
        #[arg(long)]
        manifest: PathBuf,
        #[arg(long, default_value = plugin_cli::DEFAULT_HOST)]
        host: String,
    },
    /// List a running host's plugins.
    List {
        #[arg(long, default_value = plugin_cli::DEFAULT_HOST)]
        host: String,
    },
    /// Roll a plugin back to its previous version.
    Rollback {
        name: String,
        #[arg(long, default_value = plugin_cli::DEFAULT_HOST)]
        host: String,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a config file, including that its sanitizer loads and accepts its config.
    Check { file: PathBuf },
    /// Print the default config (what runs without a file).
    #[command(alias = "defaults")]
    Default,
    /// Apply a config file to a running host: checked whole, applied without a restart, or
    /// refused naming every invalid field (exit ≠ 0) with nothing changed.
    Apply {
        file: PathBuf,
        /// The host's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8787")]
        host: String,
    },
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let done = match cli.command {
        Command::Policy {
            command:
                PolicyCommand::Test {
                    examples,
                    wasm,
                    manifest,
                    min_caught,
                    min_kept,
                    json,
                    misses,
                },
        } => {
            let options = policy_test::Options {
                examples,
                wasm,
                manifest,
                thresholds: policy_test::Thresholds {
                    min_caught: min_caught.unwrap_or_default(),
                    min_kept,
                },
                json,
                misses,
            };
            // 1 is "a threshold failed" for CI, so a bad input must say something else.
            return Ok(match policy_test::run(&options) {
                Ok(policy_test::Outcome::Passed) => ExitCode::SUCCESS,
                Ok(policy_test::Outcome::Failed) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("Error: {e:?}");
                    ExitCode::from(2)
                }
            });
        }
        Command::Serve {
            listen,
            config,
            plugins,
            log_format,
        } => {
            let config_file = config;
            let mut config = match &config_file {
                Some(path) => Config::load(path)?,
                None => Config::default(),
            };
            // What the command line and the environment say wins over the file, at start and
            // on every later change of the file.
            let overrides = live::Overrides {
                // The listen address from the environment (containers), below --listen.
                listen: listen.or_else(|| {
                    std::env::var("LOOKOUT_LISTEN")
                        .ok()
                        .filter(|l| !l.is_empty())
                }),
                log_format: log_format.map(|f| match f.as_str() {
                    "pretty" => logging::LogFormat::Pretty,
                    _ => logging::LogFormat::Json,
                }),
            };
            overrides.apply(&mut config);
            config.validate()?;
            let log = logging::init(&config.log.level, config.log.format)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("lookout")
                .build()?;
            runtime.block_on(serve(config, plugins, log, config_file, overrides))
        }
        Command::Config {
            command: ConfigCommand::Check { file },
        } => {
            let config = Config::load(&file)?;
            let (manifest, wasm) = config.sanitizer()?;
            let runtime = Runtime::new(&Registry::new())?;
            runtime.set_budget(config.plugins.budget);
            WasmSanitizer::from_manifest(&runtime, &manifest, &wasm)?;
            println!("{}: ok", file.display());
            Ok(())
        }
        Command::Plugin { command } => {
            let client = || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            };
            match command {
                PluginCommand::Check { wasm, manifest } => {
                    plugin_cli::check(&wasm, manifest.as_ref())
                }
                PluginCommand::Push {
                    wasm,
                    manifest,
                    host,
                } => client()?.block_on(plugin_cli::push(&host, &wasm, &manifest)),
                PluginCommand::List { host } => client()?.block_on(plugin_cli::list(&host)),
                PluginCommand::Rollback { name, host } => {
                    client()?.block_on(plugin_cli::rollback(&host, &name))
                }
            }
        }
        Command::Config {
            command: ConfigCommand::Apply { file, host },
        } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(plugin_cli::apply_config(&host, &file)),
        Command::Config {
            command: ConfigCommand::Default,
        } => {
            print!("{}", toml::to_string_pretty(&Config::default())?);
            Ok(())
        }
    };
    done.map(|()| ExitCode::SUCCESS)
}

/// JSON logs, one object a line, on stderr.
async fn serve(
    config: Config,
    plugin_dir: Option<PathBuf>,
    log: logging::LogLevel,
    config_file: Option<PathBuf>,
    overrides: live::Overrides,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let registry = Registry::new();
    register_host_metrics(&registry)?;
    // A cache that cannot be made (a read-only filesystem) costs start time, not the start.
    let cache_dir = config.plugins.cache_dir();
    let runtime = match Runtime::with_cache(&registry, cache_dir.as_deref()) {
        Err(e) if cache_dir.is_some() => {
            tracing::warn!(target: "lookout::plugin", error = %e, "compiled plugins will not be cached on disk");
            Runtime::with_cache(&registry, None)?
        }
        runtime => runtime?,
    };
    // Until the configured sanitizer is installed (before the listener opens) everything
    // would be redacted: there is never a moment without a sanitizer.
    let bus = Bus::start(config.bus.clone(), &registry, Box::new(RedactAll))?;
    let plugins = Arc::new(PluginRegistry::new(runtime, bus.clone(), &registry)?);
    plugins.set_budget(config.plugins.budget)?;
    plugins.set_disabled(config.plugins.disabled.iter().cloned().collect(), "startup")?;
    let pools = Arc::new(
        lookout_pool::Pools::start(&config.pools, &bus, &registry).map_err(anyhow::Error::msg)?,
    );
    // Before the listener opens; connects in the background if the server is not there yet.
    let nats = lookout_nats::Nats::start(&config.nats, &bus, &registry)
        .await?
        .map(Arc::new);
    // A bus consumer like the NATS sink; the collector need not be there yet.
    let otlp = lookout_otlp::Otlp::start(&config.otlp, &bus, &registry)?.map(Arc::new);
    let recent_errors = lookout_server::RecentErrors::default();
    // Held for the host's life: dropping the registration would unregister it.
    let _recent_errors =
        bus.register(lookout_core::RECENT_ERRORS_CONSUMER, recent_errors.clone())?;
    let health = lookout_server::Health::new(config.health.settings());
    health.spawn(pools.clone(), plugins.clone(), bus.clone());
    let metric_groups = Arc::new(parking_lot::RwLock::new(config.metrics));
    // The configured sanitizer first: no plugin of the folder can take its name or the part
    // of the budget it needs.
    let (manifest, wasm) = config.sanitizer()?;
    plugins.install_from(manifest, &wasm, lookout_wasm::Origin::Config, "startup")?;
    // Kept alive for the host's life (here and in the live config): dropping it stops the
    // watch.
    let plugin_dir = plugin_dir
        .or_else(|| config.plugins.dir.clone())
        .map(|dir| watch::PluginDir::start(plugins.clone(), &dir).map(Arc::new))
        .transpose()?;
    let dashboard_on = Arc::new(std::sync::atomic::AtomicBool::new(config.server.dashboard));
    let live = Arc::new(live::LiveConfig::new(
        config.clone(),
        overrides,
        live::Parts {
            bus: bus.clone(),
            plugins: plugins.clone(),
            log,
            health: health.clone(),
            metric_groups: metric_groups.clone(),
            pools: pools.clone(),
            dashboard: dashboard_on.clone(),
            plugin_dir: plugin_dir.clone(),
        },
    ));
    // Kept alive for the host's life: dropping it stops the watch.
    let _config_file = config_file
        .as_deref()
        .map(|file| config_file::ConfigFile::start(live.clone(), file))
        .transpose()?;
    // What the API installed before the restart, from now on kept for the next one.
    if let Some(dir) = &config.plugins.state_dir {
        let store = lookout_wasm::PluginStore::open(dir)
            .with_context(|| format!("plugins.state_dir: cannot use {}", dir.display()))?;
        lookout::kept::restore(
            &plugins,
            &store,
            plugin_dir.as_deref(),
            config_file.as_deref(),
        );
        plugins.keep_in(store);
    }
    let sanitizer_name = plugins
        .list()
        .into_iter()
        .find(|p| p.world == lookout_wasm::World::Sanitizer)
        .map(|p| p.name)
        .unwrap_or_default();

    let dashboard = lookout_artifacts::BUILT.then_some(DashboardAssets {
        index_html: lookout_artifacts::dashboard::INDEX_HTML,
        app_js: lookout_artifacts::dashboard::APP_JS,
        app_wasm: lookout_artifacts::dashboard::APP_WASM,
        index_html_gz: lookout_artifacts::dashboard::INDEX_HTML_GZ,
        app_js_gz: lookout_artifacts::dashboard::APP_JS_GZ,
        app_wasm_gz: lookout_artifacts::dashboard::APP_WASM_GZ,
    });
    let state = AppState {
        bus: bus.clone(),
        registry: registry.clone(),
        dashboard,
        dashboard_on,
        max_body_bytes: config.server.max_body_bytes,
        plugins,
        pools: pools.clone(),
        config: Some(live.clone()),
        health: health.clone(),
        metric_groups: metric_groups.clone(),
        recent_errors: recent_errors.clone(),
        admin_token: config.admin_token(),
        max_plugin_bytes: config.server.max_plugin_bytes,
        started,
        nats: nats.clone(),
        otlp: otlp.clone(),
    };
    let app = lookout_server::router(state);

    let addr = config.listen_addr()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    tracing::info!(target: "lookout", listen = %bound, sanitizer = %sanitizer_name, version = env!("CARGO_PKG_VERSION"), "lookout started");
    // Signal handlers go in before we say we listen: a SIGTERM right after start is then a
    // clean stop, not the default kill.
    let stop = on_stop_signal()?;
    // On stdout, for people and scripts: the one line that says where to look (a JSON record
    // in the JSON log format).
    println!("{}", logging::listening_line(config.log.format, bound));

    // Connection info lets the admin guard tell loopback clients from others.
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = axum::serve(listener, app).with_graceful_shutdown({
        let mut stop = stop.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    });
    // Live streams never end by themselves: requests in flight get up to 5 s (within the
    // grace), then the connections are closed; the rest of the grace is the bus's. The grace
    // is the running configuration's when the signal comes (changeable while running).
    let mut stopping = std::time::Instant::now();
    tokio::select! {
        result = server => result.context("http server")?,
        () = async {
            let _ = stop.clone().wait_for(|s| *s).await;
            stopping = std::time::Instant::now();
            tokio::time::sleep(live.shutdown_grace().min(Duration::from_secs(5))).await;
        } => {}
    }
    let grace = live.shutdown_grace();
    tracing::info!(target: "lookout", "shutting down: stopping the pools");
    pools.stop("shutdown").await;
    tracing::info!(target: "lookout", "shutting down: draining the event bus");
    let left = grace
        .saturating_sub(stopping.elapsed())
        .max(Duration::from_secs(1));
    let report = bus.shutdown_within(left).await;
    if report.unprocessed + report.undelivered > 0 {
        tracing::warn!(target: "lookout", unprocessed = report.unprocessed, undelivered = report.undelivered, "shutdown grace ran out: events not processed or not delivered (counted)");
    }
    // Each sink takes what is left of the grace (at least a second), one after the other.
    let remaining = || {
        grace
            .saturating_sub(stopping.elapsed())
            .max(Duration::from_secs(1))
    };
    if let Some(nats) = &nats {
        tracing::info!(target: "lookout", "shutting down: publishing what the NATS sink holds");
        nats.stop(remaining()).await;
    }
    if let Some(otlp) = &otlp {
        tracing::info!(target: "lookout", "shutting down: exporting what the OTLP queues hold");
        otlp.stop(remaining()).await;
    }
    log_final_counts(&bus.books(), report);
    tracing::info!(target: "lookout", "stopped");
    Ok(())
}

/// The bus's books at exit, in the log: one line per event kind, one per consumer, then the
/// totals — so a stop can be reconciled after the process is gone.
fn log_final_counts(books: &lookout_core::Books, report: lookout_core::ShutdownReport) {
    for (kind, k) in &books.kinds {
        tracing::info!(target: "lookout::bus", kind = %kind, published = k.published, accepted = k.accepted, sampled_out = k.sampled_out, rate_limited = k.rate_limited, dropped = k.dropped, filtered = k.filtered, "final event counts");
    }
    for (consumer, c) in &books.consumers {
        tracing::info!(target: "lookout::bus", consumer = %consumer, delivered = c.delivered, dropped = c.dropped, failed = c.failed, "final consumer counts");
    }
    let t = books.total();
    tracing::info!(target: "lookout::bus", published = t.published, accepted = t.accepted, sampled_out = t.sampled_out, rate_limited = t.rate_limited, dropped = t.dropped, filtered = t.filtered, unprocessed = report.unprocessed, undelivered_at_stop = report.undelivered, "final totals");
}

/// The process collector (RSS, CPU, open fds, threads; Linux) and `lookout_build_info`.
fn register_host_metrics(registry: &Registry) -> anyhow::Result<()> {
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .context("process metrics")?;
    let info = prometheus::IntGaugeVec::new(
        prometheus::Opts::new(
            "lookout_build_info",
            "Always 1; the labels say which lookout this is.",
        ),
        &["version", "wit"],
    )?;
    info.with_label_values(&[env!("CARGO_PKG_VERSION"), lookout_wasm::WIT_VERSION])
        .set(1);
    registry
        .register(Box::new(info))
        .context("lookout_build_info")?;
    Ok(())
}

/// A flag that turns true on SIGTERM or SIGINT; the handlers are installed before it returns.
fn on_stop_signal() -> anyhow::Result<tokio::sync::watch::Receiver<bool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
        let _ = tx.send(true);
    });
    Ok(rx)
}
