//! Echo assistant: answers every message with `Echo: <content>`, like the
//! platform's reference servers, so it can stand in for them.
//!
//! ```sh
//! WEBHOOK_SECRET=<the App's webhook secret> cargo run --example echo
//! ```
//!
//! `PORT` (default 8080) and `WEBHOOK_SECRET` come from the environment. With a
//! secret it listens on every interface. Without one it accepts unsigned
//! requests, says so loudly, and listens on loopback only (the platform on the
//! same machine reaches `localhost`); `ALLOW_UNSIGNED_PUBLIC=1` opts in to
//! listening on every interface unsigned. A `WEBHOOK_SECRET` that is set but
//! empty stops it at start-up: the platform would stop signing.

use std::convert::Infallible;
use std::error::Error;

use partner_webhook::{Config, Secret, Server, assistant_fn};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();

    let port = match std::env::var("PORT") {
        Ok(port) => port
            .parse::<u16>()
            .map_err(|_| format!("PORT must be a port number, got {port:?}"))?,
        Err(_) => 8080,
    };
    let config = match std::env::var("WEBHOOK_SECRET") {
        Ok(secret) if secret.is_empty() => {
            return Err(
                "WEBHOOK_SECRET is set but empty. The platform treats an empty secret \
                        as none and stops signing; set the App's secret, or unset \
                        WEBHOOK_SECRET to accept unsigned requests on purpose"
                    .into(),
            );
        }
        Ok(secret) => Config::default()
            .addr(([0, 0, 0, 0], port))
            .secret(Secret::new(secret)?),
        Err(_) => {
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

    let echo = assistant_fn(|message, _context| async move {
        Ok::<_, Infallible>(format!("Echo: {}", message.message.content))
    });
    let server = Server::bind(config, echo).await?;
    tracing::info!(
        "paste this as the App's Webhook URL: http://localhost:{}",
        server.local_addr().port()
    );
    server.serve(shutdown_signal()).await;
    Ok(())
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
