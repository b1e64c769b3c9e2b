//! Bytes in: the listening socket, HTTP/1.1 connections with timeouts, and
//! graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::assistant::Assistant;
use crate::config::{Config, SetupError};
use crate::webhook::Webhook;

/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop
/// neither dies nor spins.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A listening webhook server.
///
/// ```no_run
/// use std::convert::Infallible;
/// use partner_webhook::{assistant_fn, Config, Secret, Server};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let config = Config::default().secret(Secret::new(std::env::var("WEBHOOK_SECRET")?)?);
/// let echo = assistant_fn(|m, _| async move { Ok::<_, Infallible>(m.message.content) });
/// let server = Server::bind(config, echo).await?;
/// println!("listening on {}", server.local_addr());
/// server.serve(async { tokio::signal::ctrl_c().await.ok(); }).await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    webhook: Webhook,
    connection: http1::Builder,
}

impl Server {
    /// Validates the configuration, then listens on [`Config::addr`].
    pub async fn bind(config: Config, assistant: impl Assistant) -> Result<Self, SetupError> {
        let webhook = Webhook::new(&config, assistant)?;
        let listener = TcpListener::bind(config.addr)
            .await
            .map_err(|source| SetupError::Bind {
                addr: config.addr,
                source,
            })?;
        Self::with_webhook(listener, &config, webhook)
    }

    /// Serves on a listener you bound yourself (e.g. port 0 in tests);
    /// [`Config::addr`] is ignored.
    pub fn from_listener(
        listener: TcpListener,
        config: Config,
        assistant: impl Assistant,
    ) -> Result<Self, SetupError> {
        let webhook = Webhook::new(&config, assistant)?;
        Self::with_webhook(listener, &config, webhook)
    }

    fn with_webhook(
        listener: TcpListener,
        config: &Config,
        webhook: Webhook,
    ) -> Result<Self, SetupError> {
        let local_addr = listener.local_addr().map_err(|source| SetupError::Bind {
            addr: config.addr,
            source,
        })?;
        let mut connection = http1::Builder::new();
        // hyper's header read timeout does nothing without a timer.
        connection
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .keep_alive(true);
        Ok(Server {
            listener,
            local_addr,
            webhook,
            connection,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves, then stops accepting and waits for
    /// the requests in flight to be answered before returning.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let graceful = GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        info!(addr = %self.local_addr, "listening");
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        // Replies are single small writes; do not wait to coalesce them.
                        let _ = stream.set_nodelay(true);
                        let connection = self
                            .connection
                            .serve_connection(TokioIo::new(stream), self.webhook.clone());
                        let connection = graceful.watch(connection);
                        tokio::spawn(async move {
                            if let Err(error) = connection.await {
                                debug!(%peer, %error, "connection closed with an error");
                            }
                        });
                    }
                    Err(error) => {
                        warn!(%error, "accept failed; retrying");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
                () = &mut shutdown => break,
            }
        }
        drop(self.listener);
        info!("shutting down: finishing requests in flight");
        graceful.shutdown().await;
        info!("shut down");
    }
}
