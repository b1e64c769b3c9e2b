//! Bench-only server for issue 10's in-flight and SSE-frame measurements,
//! built on partner-webhook's public API only. Listens on 127.0.0.1:$PORT
//! (backlog 4096) until SIGINT/SIGTERM. Environment:
//!
//! - `SECRET` (required): the webhook secret.
//! - `MODE=inflight` (default): JSON replies; the assistant sleeps `SLEEP_MS`
//!   (1000) then answers `Echo: <content>`. `LIMITS=raised` sets
//!   `max_connections` and `max_concurrent_replies` to 12,000 and gives idle
//!   connections 30 s (`header_read_timeout`, `max_connection_age` 60 s) so
//!   10,000 connections can be opened before the requests go out;
//!   `LIMITS=default` (the default) keeps `Config::default()`.
//! - `MODE=sse`: SSE replies; the assistant streams `CHUNKS` (2) chunks, the
//!   first at once and each next one `GAP_MS` (200) later. Each chunk's text is
//!   `t=<SystemTime since the epoch, ns>` taken when the chunk is produced, so
//!   the client (same machine, same clock) can compute production-to-wire.
use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use partner_webhook::{Config, Reply, ReplyFormat, Secret, Server, assistant_fn};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secret = std::env::var("SECRET").map_err(|_| "SECRET is required")?;
    let port = env_u64("PORT", 18290) as u16;
    let mode = std::env::var("MODE").unwrap_or_else(|_| "inflight".into());
    let limits = std::env::var("LIMITS").unwrap_or_else(|_| "default".into());

    let mut config = Config::default().secret(Secret::new(&secret)?);
    config.shutdown_grace = Duration::from_secs(2);
    if limits == "raised" {
        config.max_connections = 12_000;
        config.max_concurrent_replies = 12_000;
        config.header_read_timeout = Duration::from_secs(30);
        config.max_connection_age = Duration::from_secs(60);
    }

    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(([127, 0, 0, 1], port).into())?;
    let listener = socket.listen(4096)?;

    match mode.as_str() {
        "inflight" => {
            config = config.reply_format(ReplyFormat::Json);
            let sleep = Duration::from_millis(env_u64("SLEEP_MS", 1000));
            let echo = assistant_fn(move |message, _context| async move {
                tokio::time::sleep(sleep).await;
                Ok::<_, Infallible>(format!("Echo: {}", message.message.content))
            });
            let server = Server::from_listener(listener, config, echo)?;
            println!("ready mode=inflight limits={limits} port={port} pid={}", std::process::id());
            server.serve(shutdown()).await;
        }
        "sse" => {
            config = config.reply_format(ReplyFormat::Sse);
            let chunks = env_u64("CHUNKS", 2);
            let gap = Duration::from_millis(env_u64("GAP_MS", 200));
            let streamer = assistant_fn(move |_message, _context| async move {
                let stream = futures_util::stream::unfold(0u64, move |i| async move {
                    if i == chunks {
                        return None;
                    }
                    if i > 0 && !gap.is_zero() {
                        tokio::time::sleep(gap).await;
                    }
                    Some((Ok::<_, Infallible>(format!("t={}", now_ns())), i + 1))
                });
                Ok::<_, Infallible>(Reply::stream(stream))
            });
            let server = Server::from_listener(listener, config, streamer)?;
            println!("ready mode=sse chunks={chunks} gap_ms={} port={port} pid={}", gap.as_millis(), std::process::id());
            server.serve(shutdown()).await;
        }
        other => return Err(format!("unknown MODE {other}").into()),
    }
    Ok(())
}
