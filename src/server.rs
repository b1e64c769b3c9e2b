//! Bytes in: the listening socket, the connection limit, and graceful
//! shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::TokioTimer;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::assistant::Assistant;
use crate::config::{Config, SetupError};
use crate::connection::{self, Lifetime, RoomWanted, Signals};
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
    lifetime: Lifetime,
    connection_slots: Arc<Semaphore>,
    /// How long a client accepted at capacity waits for room.
    room_wait: Duration,
    shutdown_grace: Duration,
}

impl Server {
    /// Serves a [`Webhook`] you built, e.g. one with event routes
    /// ([`Webhook::route`]), on a listener you bound yourself;
    /// [`Config::addr`] is ignored, and `config`'s connection settings apply.
    ///
    /// ```no_run
    /// # use std::convert::Infallible;
    /// use partner_webhook::{event_handler_fn, Config, EventsConfig, Scheme, Secret, Server, Webhook};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let config = Config::default().addr(([0, 0, 0, 0], 8080));
    /// let sendseven = EventsConfig::new(Scheme::sendseven(), Secret::new("s7-secret")?);
    /// let log = event_handler_fn(|event| async move {
    ///     tracing::info!(id = ?event.id, "event");
    ///     Ok::<_, Infallible>(())
    /// });
    /// let webhook = Webhook::for_events(&config)?.route("/sendseven", &sendseven, log)?;
    /// let listener = tokio::net::TcpListener::bind(config.addr).await?;
    /// let server = Server::with_webhook(listener, &config, webhook)?;
    /// server.serve(async { tokio::signal::ctrl_c().await.ok(); }).await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_webhook(
        listener: TcpListener,
        config: &Config,
        webhook: Webhook,
    ) -> Result<Self, SetupError> {
        config.validate_limits()?;
        Self::serving(listener, config, webhook)
    }

    /// Validates the configuration, then listens on [`Config::addr`].
    pub async fn bind(config: Config, assistant: impl Assistant) -> Result<Self, SetupError> {
        let webhook = Webhook::new(&config, assistant)?;
        let listener = TcpListener::bind(config.addr)
            .await
            .map_err(|source| SetupError::Bind {
                addr: config.addr,
                source,
            })?;
        Self::serving(listener, &config, webhook)
    }

    /// Serves on a listener you bound yourself (e.g. port 0 in tests);
    /// [`Config::addr`] is ignored.
    pub fn from_listener(
        listener: TcpListener,
        config: Config,
        assistant: impl Assistant,
    ) -> Result<Self, SetupError> {
        let webhook = Webhook::new(&config, assistant)?;
        Self::serving(listener, &config, webhook)
    }

    fn serving(
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
            lifetime: Lifetime::new(config),
            connection_slots: Arc::new(Semaphore::new(config.max_connections)),
            room_wait: config.header_read_timeout,
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
    /// gives queued events what is left of the grace
    /// ([`Webhook::drain_events`]), and returns.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let (shutdown_sender, _) = watch::channel(false);
        let (make_room, _) = watch::channel(0u64);
        let room_wanted = RoomWanted::default();
        let connection = Arc::new(self.connection);
        let mut connections = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        info!(addr = %self.local_addr, "listening");
        'accept: loop {
            // Reap finished connection tasks so the set does not grow.
            while connections.try_join_next().is_some() {}
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                () = &mut shutdown => break 'accept,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "accept failed; retrying");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let slot = match Arc::clone(&self.connection_slots).try_acquire_owned() {
                Ok(slot) => slot,
                // Full: this client waits while the others make room; the
                // ones after it wait in the operating system's accept queue.
                Err(_) => tokio::select! {
                    slot = wait_for_room(&self.connection_slots, &make_room, &room_wanted, self.room_wait) => {
                        match slot {
                            Some(slot) => slot,
                            None => {
                                warn!(%peer, "no connection slot freed up in time; closing the new connection");
                                continue;
                            }
                        }
                    }
                    () = &mut shutdown => break 'accept,
                },
            };
            // Replies are single small writes; do not wait to coalesce them.
            let _ = stream.set_nodelay(true);
            let signals = Signals {
                shutdown: shutdown_sender.subscribe(),
                make_room: make_room.subscribe(),
                room_wanted: room_wanted.clone(),
            };
            let (connection, webhook, lifetime) =
                (Arc::clone(&connection), self.webhook.clone(), self.lifetime);
            connections.spawn(async move {
                let served =
                    connection::serve(stream, &connection, webhook, lifetime, signals).await;
                if let Err(error) = served {
                    debug!(%peer, %error, "connection closed with an error");
                }
                drop(slot);
            });
        }
        drop(self.listener);
        info!(
            grace_secs = self.shutdown_grace.as_secs_f64(),
            "shutting down: finishing requests in flight"
        );
        let _ = shutdown_sender.send(true);
        let grace_ends = tokio::time::Instant::now() + self.shutdown_grace;
        let drained = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout_at(grace_ends, drained).await.is_err() {
            warn!(
                connections = connections.len(),
                "grace period over; cutting the connections still open"
            );
        }
        connections.shutdown().await;
        // Events accepted by the connections just closed get what is left.
        let left = grace_ends.saturating_duration_since(tokio::time::Instant::now());
        self.webhook.drain_events(left).await;
        info!("shut down");
    }
}

/// How often a waiting client asks the connections again to make room: a
/// keep-alive connection that was busy at the last ask may be idle by now.
const MAKE_ROOM_EVERY: Duration = Duration::from_millis(100);

/// Asks the connections to make room until a slot frees up, for at most
/// `wait`.
async fn wait_for_room(
    slots: &Arc<Semaphore>,
    make_room: &watch::Sender<u64>,
    room_wanted: &RoomWanted,
    wait: Duration,
) -> Option<OwnedSemaphorePermit> {
    let asking = async {
        loop {
            room_wanted.ask();
            make_room.send_modify(|asked| *asked = asked.wrapping_add(1));
            if let Ok(Ok(slot)) =
                tokio::time::timeout(MAKE_ROOM_EVERY, Arc::clone(slots).acquire_owned()).await
            {
                return slot;
            }
        }
    };
    let slot = tokio::time::timeout(wait, asking).await.ok();
    room_wanted.withdraw();
    slot
}
