//! Bytes in: the listening socket, HTTP/1.1 connections with timeouts, and
//! graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::assistant::Assistant;
use crate::config::{Config, SetupError};
use crate::webhook::Webhook;

/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop
/// neither dies nor spins.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// hyper panics below this read buffer size.
const MIN_HEADER_BUFFER: usize = 8192;

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
    connection_slots: Arc<Semaphore>,
    shutdown_grace: Duration,
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
            .max_buf_size(config.max_header_bytes.max(MIN_HEADER_BUFFER))
            .keep_alive(true);
        Ok(Server {
            listener,
            local_addr,
            webhook,
            connection,
            connection_slots: Arc::new(Semaphore::new(config.max_connections)),
            shutdown_grace: config.shutdown_grace,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves. Then it stops accepting (new
    /// connections are refused), lets the requests in flight finish for up to
    /// [`Config::shutdown_grace`], cuts the connections still open after that,
    /// and returns.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let graceful = GracefulShutdown::new();
        let mut connections = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        info!(addr = %self.local_addr, "listening");
        loop {
            // Reap finished connection tasks so the set does not grow.
            while connections.try_join_next().is_some() {}
            // At the connection limit, wait here: new clients queue in the
            // operating system's accept queue instead of costing memory.
            let slot = tokio::select! {
                slot = Arc::clone(&self.connection_slots).acquire_owned() => slot,
                () = &mut shutdown => break,
            };
            let Ok(slot) = slot else { break };
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        // Replies are single small writes; do not wait to coalesce them.
                        let _ = stream.set_nodelay(true);
                        let connection = self
                            .connection
                            .serve_connection(TokioIo::new(stream), self.webhook.clone());
                        let connection = graceful.watch(connection);
                        connections.spawn(async move {
                            if let Err(error) = connection.await {
                                debug!(%peer, %error, "connection closed with an error");
                            }
                            drop(slot);
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
        info!(
            grace_secs = self.shutdown_grace.as_secs_f64(),
            "shutting down: finishing requests in flight"
        );
        if tokio::time::timeout(self.shutdown_grace, graceful.shutdown())
            .await
            .is_err()
        {
            warn!(
                connections = connections.len(),
                "grace period over; cutting the connections still open"
            );
        }
        connections.shutdown().await;
        info!("shut down");
    }
}
