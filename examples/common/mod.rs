//! What every example reads from the environment, shared so that they behave
//! alike: `PORT`, `WEBHOOK_SECRET`, `REPLY_FORMAT`, logging and shutdown.
#![allow(
    dead_code,
    reason = "each example uses its part: the assistants serve(), events.rs serve_webhook()"
)]

use std::error::Error;
use std::sync::Arc;

use partner_webhook::{Assistant, Config, ReplayCache, ReplyFormat, Secret, Server, Webhook};
use tracing_subscriber::EnvFilter;

pub(crate) mod log_line;
pub(crate) mod log_writer;

/// Starts logging and the metrics endpoint, then serves `assistant` with
/// the configuration the environment asks for, until Ctrl-C or SIGTERM.
pub(crate) async fn serve(assistant: impl Assistant) -> Result<(), Box<dyn Error>> {
    let _flush_logs_on_exit = init_logging();
    serve_metrics();
    let mut config = config_from_env()?;
    if let Some(cache) = shared_replay_cache().await? {
        config.replay_cache = cache;
    }
    let webhook = Webhook::new(&config, assistant)?;
    serve_webhook(&config, webhook, |port| announce(&config, port)).await
}

/// Serves `webhook` on `config.addr` until Ctrl-C or SIGTERM, calling
/// `announce` with the port once it listens. Logging and metrics are the
/// caller's to start, before building the webhook.
pub(crate) async fn serve_webhook(
    config: &Config,
    webhook: Webhook,
    announce: impl FnOnce(u16),
) -> Result<(), Box<dyn Error>> {
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|error| format!("could not listen on {}: {error}", config.addr))?;
    let server = Server::with_webhook(listener, config, webhook)?;
    announce(server.local_addr().port());
    server.serve(shutdown_signal()).await;
    Ok(())
}

/// With `REDIS_URL` set (and the `redis` feature), a replay cache shared by
/// every instance using that Redis: replays are refused across all of them.
pub(crate) async fn shared_replay_cache() -> Result<Option<Arc<dyn ReplayCache>>, Box<dyn Error>> {
    let Ok(url) = std::env::var("REDIS_URL") else {
        return Ok(None);
    };
    #[cfg(feature = "redis")]
    {
        let cache = partner_webhook::RedisReplayCache::connect(&url)
            .await
            .map_err(|error| format!("REDIS_URL: could not connect: {error}"))?;
        tracing::info!("replay cache shared through Redis");
        Ok(Some(Arc::new(cache)))
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = url;
        Err("REDIS_URL is set, but this build has no Redis support: add --features redis".into())
    }
}

/// `PORT`, default 8080.
pub(crate) fn port() -> Result<u16, Box<dyn Error>> {
    match env_text("PORT")? {
        Some(port) => Ok(port
            .parse::<u16>()
            .map_err(|_| format!("PORT must be a port number, got {port:?}"))?),
        None => Ok(8080),
    }
}

/// The secret in the environment variable `name`: `None` when unset, an error
/// when set but empty (a platform treats an empty secret as none and stops
/// signing).
pub(crate) fn secret_from_env(name: &str) -> Result<Option<Secret>, Box<dyn Error>> {
    match env_text(name)? {
        Some(secret) if secret.is_empty() => Err(format!(
            "{name} is set but empty. The platform treats an empty secret as none and stops \
             signing; set it to the secret the platform shows, or unset it"
        )
        .into()),
        Some(secret) => Ok(Some(Secret::new(secret)?)),
        None => Ok(None),
    }
}

/// The variable `name`; `None` only when it is unset. A value that is not
/// UTF-8 is an error, never taken for unset: for a secret that would mean
/// serving unsigned.
fn env_text(name: &str) -> Result<Option<String>, Box<dyn Error>> {
    match std::env::var(name) {
        Ok(text) => Ok(Some(text)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("{name} is not UTF-8").into()),
    }
}

/// Histogram buckets, in seconds: request and assistant durations run from
/// a fraction of a millisecond to the 7.5 s deadline; signing skew within the
/// 300 s window.
const SECONDS_BUCKETS: [f64; 15] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 7.5,
    30.0,
];

/// Serves the metrics as Prometheus text on `METRICS_ADDR` (default
/// `127.0.0.1:9464`, `off` for none): its own address, never the public
/// webhook port. A failure to listen is logged, not fatal.
pub(crate) fn serve_metrics() {
    let addr = std::env::var("METRICS_ADDR").unwrap_or_else(|_| "127.0.0.1:9464".to_owned());
    if addr == "off" {
        return;
    }
    let installed = addr
        .parse::<std::net::SocketAddr>()
        .map_err(|error| error.to_string())
        .and_then(|addr| {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .with_http_listener(addr)
                // Histogram samples wait in memory until the next upkeep: at
                // tens of thousands of requests a second, three samples each,
                // the default 5 s of them held megabytes and 500 ms still
                // about 1 MiB of peak RSS; draining every 100 ms costs no CPU
                // that shows (BENCHMARKS.md). Buckets keep what is left fixed
                // in size, where the default summaries keep sketches.
                .upkeep_timeout(std::time::Duration::from_millis(100))
                .set_buckets(&SECONDS_BUCKETS)
                .and_then(|builder| builder.install())
                .map_err(|error| error.to_string())
        });
    match installed {
        Ok(()) => tracing::info!("metrics at http://{addr}/metrics"),
        Err(error) => tracing::warn!("no metrics endpoint on METRICS_ADDR={addr}: {error}"),
    }
}

/// Logs at `info` unless `RUST_LOG` says otherwise, in the default format's
/// fields at a fraction of its cost ([`log_line`]), through a background
/// thread that writes in batches ([`log_writer`]): a request never waits for
/// the terminal or the file the log goes to, nor makes a system call for its
/// line. Colours only on a terminal: in a file or a log collector they are
/// noise. Keep the returned guard until the end of `main`; dropping it
/// flushes.
pub(crate) fn init_logging() -> log_writer::FlushOnDrop {
    use std::io::IsTerminal;
    let (writer, guard) = log_writer::BatchedWriter::new(std::io::stdout());
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        // As tracing-subscriber decides when left to itself, NO_COLOR included.
        .with_ansi(
            std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty()),
        )
        .event_format(log_line::LogLine)
        .fmt_fields(log_line::LogLine)
        .with_writer(writer)
        .init();
    guard
}

/// The configuration the environment asks for.
///
/// - `PORT` (default 8080).
/// - `WEBHOOK_SECRET`: with it, every interface; without it, unsigned requests
///   on loopback only (`ALLOW_UNSIGNED_PUBLIC=1` opts in to every interface);
///   set but empty, an error, since the platform stops signing then.
/// - `REPLY_FORMAT`: `sse` (default), `json` or `auto`. SSE is what the
///   dashboard's Chat screen reads; its "Test webhook" button gets JSON anyway.
///   The synchronous run API needs `json`.
/// - `PLATFORM_API_URL` (e.g. `http://localhost:8000`): store streamed replies
///   through the platform's Partner API, so they stay on the Chat screen.
fn config_from_env() -> Result<Config, Box<dyn Error>> {
    let port = port()?;
    let config = match secret_from_env("WEBHOOK_SECRET")? {
        Some(secret) => Config::default().addr(([0, 0, 0, 0], port)).secret(secret),
        None => {
            let public = std::env::var("ALLOW_UNSIGNED_PUBLIC").is_ok_and(|value| value == "1");
            let (host, reach) = if public {
                ([0, 0, 0, 0], format!("port {port} on every interface"))
            } else {
                (
                    [127, 0, 0, 1],
                    format!(
                        "127.0.0.1:{port} (loopback only; ALLOW_UNSIGNED_PUBLIC=1 listens on \
                         every interface)"
                    ),
                )
            };
            tracing::warn!(
                "WEBHOOK_SECRET is not set: accepting UNSIGNED requests from anyone who can \
                 reach {reach}. Set a webhook secret on the App and the same value in \
                 WEBHOOK_SECRET."
            );
            Config::default().addr((host, port)).accept_unsigned()
        }
    };
    let format = match std::env::var("REPLY_FORMAT").as_deref() {
        Err(_) | Ok("sse") => ReplyFormat::Sse,
        Ok("json") => ReplyFormat::Json,
        Ok("auto") => ReplyFormat::Auto,
        Ok(other) => {
            return Err(format!("REPLY_FORMAT must be sse, json or auto, got {other:?}").into());
        }
    };
    let config = config.reply_format(format);
    match std::env::var("PLATFORM_API_URL") {
        Ok(url) if !url.is_empty() => Ok(config.platform_api_url(url)),
        _ => {
            if format != ReplyFormat::Json {
                tracing::info!(
                    "PLATFORM_API_URL is not set: streamed replies vanish from the Chat screen \
                     once complete (the platform does not store them); set it to the \
                     platform's backend, e.g. http://localhost:8000, to store them"
                );
            }
            Ok(config)
        }
    }
}

/// The startup line: where to point the App, and what each dashboard path gets.
fn announce(config: &Config, port: u16) {
    let what = match config.reply_format {
        ReplyFormat::Json => {
            "replies as JSON: the run API and Test webhook work; the Chat screen needs \
             REPLY_FORMAT=sse"
        }
        ReplyFormat::Auto => "replies as SSE to clients that accept it, else JSON",
        _ => {
            "replies as SSE for the dashboard's Chat screen (Test webhook still gets JSON; \
             the run API needs REPLY_FORMAT=json)"
        }
    };
    tracing::info!("paste this as the App's Webhook URL: http://localhost:{port}; {what}");
}

/// Ctrl-C, or SIGTERM from a process manager or container runtime.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
