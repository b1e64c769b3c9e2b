//! Acknowledged events: another platform's verified webhook, de-duplicated,
//! answered `200` at once, and handed to your [`EventHandler`] on a bounded
//! queue after the answer.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hyper::HeaderMap;
use hyper::body::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tracing::{Instrument, error, info, warn};

use crate::assistant::{CatchUnwind, panic_message};
use crate::config::{Secret, SetupError};
use crate::error::{BoxError, Overload, RequestError};
use crate::guard::Millis;
use crate::measure;
use crate::replay::{MemoryReplayCache, ReplayCache};
use crate::scheme::Scheme;
use crate::signature::{Verified, Verifier};

/// Your code for another platform's events: called once per verified,
/// de-duplicated event, after the platform has been answered `200`.
///
/// An `Err` or a panic is logged with the event's id and scheme, and the next
/// event is handled as usual; the platform is not told (it was answered
/// already), so retry inside the handler what must not be lost.
///
/// ```
/// use partner_webhook::{async_trait, BoxError, Event, EventHandler, SendSevenEvent};
///
/// struct Inbox;
///
/// #[async_trait]
/// impl EventHandler for Inbox {
///     async fn handle(&self, event: Event) -> Result<(), BoxError> {
///         let sendseven: SendSevenEvent = event.parse()?;
///         println!("{} {}", sendseven.kind, sendseven.data["message"]["text"]);
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// Handles one event.
    async fn handle(&self, event: Event) -> Result<(), BoxError>;
}

/// Wraps an async closure as an [`EventHandler`].
///
/// ```
/// use std::convert::Infallible;
/// use partner_webhook::event_handler_fn;
///
/// let log = event_handler_fn(|event| async move {
///     tracing::info!(id = event.id.as_deref().unwrap_or("-"), "event");
///     Ok::<_, Infallible>(())
/// });
/// ```
pub fn event_handler_fn<F, Fut, E>(handle: F) -> EventHandlerFn<F>
where
    F: Fn(Event) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<BoxError>,
{
    EventHandlerFn(handle)
}

/// An [`EventHandler`] made from a closure by [`event_handler_fn`].
pub struct EventHandlerFn<F>(F);

impl<F> fmt::Debug for EventHandlerFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EventHandlerFn")
    }
}

#[async_trait]
impl<F, Fut, E> EventHandler for EventHandlerFn<F>
where
    F: Fn(Event) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<BoxError>,
{
    async fn handle(&self, event: Event) -> Result<(), BoxError> {
        (self.0)(event).await.map_err(Into::into)
    }
}

/// One verified event, as the handler receives it.
#[derive(Clone)]
#[non_exhaustive]
pub struct Event {
    /// The path it was posted to, e.g. `/sendseven`.
    pub route: Arc<str>,
    /// The [`Scheme::name`] that verified it.
    pub scheme: &'static str,
    /// A label for logs: the delivery id header where the scheme has one,
    /// else the body's `id`, `event_id` or `messageId`, whichever comes first.
    /// Not what duplicates are recognised by (see [`EventsConfig`]).
    pub id: Option<String>,
    /// The event type: the scheme's event header, else the body's `event`
    /// or, failing that, `type`.
    pub kind: Option<String>,
    /// The signed timestamp, unix seconds; `None` for a scheme without one.
    pub signed_at: Option<u64>,
    /// The body, parsed.
    pub json: Value,
    /// The body exactly as received and verified.
    pub body: Bytes,
    /// The request headers.
    pub headers: HeaderMap,
}

impl Event {
    /// The body as a type of yours, or one of the seeds' shapes
    /// ([`SendSevenEvent`], [`WhatsAppEvent`]).
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        // From the tree parsed already, not the body again.
        T::deserialize(&self.json)
    }
}

/// Header names only: the signature header's value must not reach a log.
impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("route", &self.route)
            .field("scheme", &self.scheme)
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("signed_at", &self.signed_at)
            .field("json", &self.json)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A SendSeven event body, as its documentation shows it.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct SendSevenEvent {
    /// The event's id, e.g. `evt_abc123`.
    pub id: String,
    /// `message.received`, `conversation.closed`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// ISO 8601.
    #[serde(default)]
    pub created_at: Option<String>,
    /// The SendSeven tenant.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// The id of the object the event is about, e.g. the message's.
    #[serde(default)]
    pub event_id: Option<String>,
    /// The event's objects (`message`, `conversation`, `contact`, ...).
    #[serde(default)]
    pub data: Value,
}

/// An event of the `X-Webhook-Signature` family of WhatsApp APIs and CRMs.
/// They share `event` and `timestamp`; the rest depends on the sender and the
/// event, so every other field is optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct WhatsAppEvent {
    /// `message`, `status`, `message.received`, `message.new`, ...
    pub event: String,
    /// ISO 8601.
    #[serde(default)]
    pub timestamp: Option<String>,
    /// The WhatsApp session, for session APIs.
    #[serde(default)]
    pub session_id: Option<String>,
    /// The message; shared by a message and its later status events.
    #[serde(default)]
    pub message_id: Option<String>,
    /// The sender's number, or `me`.
    #[serde(default)]
    pub from: Option<String>,
    /// The recipient's number, or `me`.
    #[serde(default)]
    pub to: Option<String>,
    /// `text`, `image`, ...
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// The text, where the sender calls it `text`.
    #[serde(default)]
    pub text: Option<String>,
    /// The text, where the sender calls it `message`.
    #[serde(default)]
    pub message: Option<String>,
    /// `sent`, `delivered`, `read`, `connected`, ...
    #[serde(default)]
    pub status: Option<String>,
    /// The event's objects, for senders that nest them.
    #[serde(default)]
    pub data: Option<Value>,
}

/// One event route: the scheme, its secrets, de-duplication and the queue.
/// Mounted on a path with [`Webhook::route`](crate::Webhook::route).
///
/// # Duplicates and replays
///
/// An event is recognised as seen before by its **signature** (a keyed digest
/// of the timestamp and body, or of the body alone) and, where the scheme has
/// one, by its **delivery id**, which a platform keeps when it retries (SendSeven
/// re-signs a retry with a new timestamp, so only the id catches it). Either
/// already seen: `200 {"status":"duplicate"}`, so the platform stops
/// retrying, and the handler is not called. They are remembered for
/// [`dedupe_window`](EventsConfig::dedupe_window) in
/// [`dedupe_cache`](EventsConfig::dedupe_cache). Payload fields such as
/// `messageId` are not used: a message and its later status events share one.
///
/// A scheme that signs a timestamp also refuses (`401`) anything signed
/// outside its window, so a captured request is useless after it. A scheme
/// without one ([`Scheme::webhook_signature`]) has only the dedupe memory: a
/// captured request replayed after `dedupe_window`, or after a full memory
/// cache forgot it, is accepted again. Such a scheme is refused unless
/// [`accept_replays_caught_by_dedupe_only`](EventsConfig::accept_replays_caught_by_dedupe_only)
/// says the operator knows.
///
/// ```
/// use partner_webhook::{EventsConfig, Scheme, Secret};
///
/// let sendseven = EventsConfig::new(Scheme::sendseven(), Secret::new("s7-secret")?);
/// let whatsapp = EventsConfig::new(Scheme::webhook_signature(), Secret::new("wa-secret")?)
///     .accept_replays_caught_by_dedupe_only();
/// assert_eq!(sendseven.queue_capacity, 1024);
/// # Ok::<(), partner_webhook::SetupError>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EventsConfig {
    /// How the platform signs.
    pub scheme: Scheme,
    /// Secrets an event may be signed with; any one is accepted (rotation).
    pub secrets: Vec<Secret>,
    /// How long a seen event is remembered, to answer its retries
    /// `duplicate`. It must cover the platform's retry horizon: the WhatsApp
    /// API guide retries after 30 s, 5 min, 30 min and 2 h, so its last retry
    /// comes 2 h to 2 h 36 min after the first delivery, depending on how
    /// those delays add up.
    /// Default: 3 h.
    pub dedupe_window: Duration,
    /// Where seen events are remembered. Give each route its own
    /// [`MemoryReplayCache`], sized to the events that arrive within
    /// `dedupe_window` (the default holds 100,000, about 9 a second over
    /// 3 h; past that the oldest are forgotten, and their retries handled
    /// again), or share a [`RedisReplayCache`](crate::ReplayCache) across
    /// instances; keys are kept apart by route.
    /// Default: a new `MemoryReplayCache::default()`.
    pub dedupe_cache: Arc<dyn ReplayCache>,
    /// Events accepted and not yet handled (waiting or running). When full,
    /// a new event is answered `503` with `Retry-After`, so the platform
    /// retries it later: none is dropped silently.
    /// Default: 1024.
    pub queue_capacity: usize,
    /// Handlers running at once.
    /// Default: 16.
    pub concurrency: usize,
    /// Accept a scheme that signs no timestamp, knowing that replays are then
    /// caught only by the dedupe memory.
    /// Default: `false`.
    pub accept_replays_caught_by_dedupe_only: bool,
}

impl EventsConfig {
    /// A route verifying `scheme` with `secret`, and the defaults.
    pub fn new(scheme: Scheme, secret: Secret) -> Self {
        EventsConfig {
            scheme,
            secrets: vec![secret],
            dedupe_window: Duration::from_secs(3 * 60 * 60),
            dedupe_cache: Arc::new(MemoryReplayCache::default()),
            queue_capacity: 1024,
            concurrency: 16,
            accept_replays_caught_by_dedupe_only: false,
        }
    }

    /// Accepts this secret too, e.g. while rotating.
    #[must_use]
    pub fn secret(mut self, secret: Secret) -> Self {
        self.secrets.push(secret);
        self
    }

    /// Sets [`dedupe_window`](EventsConfig::dedupe_window).
    #[must_use]
    pub fn dedupe_window(mut self, window: Duration) -> Self {
        self.dedupe_window = window;
        self
    }

    /// Sets [`dedupe_cache`](EventsConfig::dedupe_cache).
    #[must_use]
    pub fn dedupe_cache(mut self, cache: Arc<dyn ReplayCache>) -> Self {
        self.dedupe_cache = cache;
        self
    }

    /// Sets [`queue_capacity`](EventsConfig::queue_capacity) and
    /// [`concurrency`](EventsConfig::concurrency).
    #[must_use]
    pub fn queue(mut self, capacity: usize, concurrency: usize) -> Self {
        self.queue_capacity = capacity;
        self.concurrency = concurrency;
        self
    }

    /// Sets [`accept_replays_caught_by_dedupe_only`](EventsConfig::accept_replays_caught_by_dedupe_only).
    #[must_use]
    pub fn accept_replays_caught_by_dedupe_only(mut self) -> Self {
        self.accept_replays_caught_by_dedupe_only = true;
        self
    }

    fn validate(&self, path: &str) -> Result<(), SetupError> {
        let invalid = |reason| {
            Err(SetupError::InvalidEventRoute {
                path: path.to_owned(),
                reason,
            })
        };
        if !self.scheme.signs_timestamp() && !self.accept_replays_caught_by_dedupe_only {
            return Err(SetupError::UnboundedReplays {
                path: path.to_owned(),
                scheme: self.scheme.name(),
            });
        }
        if !path.starts_with('/') {
            return invalid("the path must start with /");
        }
        if self.queue_capacity == 0 || self.concurrency == 0 {
            return invalid("queue_capacity and concurrency must be at least 1");
        }
        // The drain at shutdown takes every permit of the queue at once.
        if self.queue_capacity > u32::MAX as usize || self.concurrency > Semaphore::MAX_PERMITS {
            return invalid("queue_capacity or concurrency is too large to count");
        }
        if self.dedupe_window < Duration::from_secs(1) {
            return invalid("dedupe_window must be at least 1 s");
        }
        if let Some(window) = self.scheme.replay_window() {
            if window < Duration::from_secs(1) || window > Duration::from_secs(24 * 60 * 60) {
                return invalid("the scheme's replay window must be between 1 s and one day");
            }
            if self.dedupe_window < window {
                return invalid("dedupe_window must be at least the scheme's replay window");
            }
        }
        Ok(())
    }
}

/// A mounted route: verification, de-duplication, the queue and the handler.
pub(crate) struct EventRoute {
    pub(crate) path: Arc<str>,
    pub(crate) verifier: Verifier,
    dedupe_window_secs: u64,
    dedupe_cache: Arc<dyn ReplayCache>,
    queue: EventQueue,
    handler: Arc<dyn EventHandler>,
}

impl EventRoute {
    pub(crate) fn new(
        path: &str,
        config: &EventsConfig,
        handler: impl EventHandler,
    ) -> Result<Self, SetupError> {
        config.validate(path)?;
        Ok(EventRoute {
            path: Arc::from(path),
            verifier: Verifier::with_scheme(config.scheme.clone(), config.secrets.clone())?,
            dedupe_window_secs: config.dedupe_window.as_secs(),
            dedupe_cache: Arc::clone(&config.dedupe_cache),
            queue: EventQueue::new(config.queue_capacity, config.concurrency),
            handler: Arc::new(handler),
        })
    }

    /// The event as the handler will see it; `Err` when the body is not JSON.
    pub(crate) fn event(
        &self,
        headers: &HeaderMap,
        body: Bytes,
        verified: &Verified,
    ) -> Result<Event, RequestError> {
        let json: Value = serde_json::from_slice(&body).map_err(RequestError::MalformedJson)?;
        let scheme = self.verifier.scheme();
        let header_text = |header: Option<&crate::scheme::Header>| {
            header
                .and_then(|header| headers.get(&header.name))
                .and_then(|value| value.to_str().ok())
                .filter(|text| !text.is_empty())
                .map(str::to_owned)
        };
        let body_text = |fields: &[&str]| {
            fields
                .iter()
                .find_map(|field| json.get(field).and_then(Value::as_str))
                .map(str::to_owned)
        };
        let id = header_text(scheme.delivery_id())
            .or_else(|| body_text(&["id", "event_id", "messageId"]));
        // `event` first: the WhatsApp senders' `type` is the message's (`text`).
        let kind = header_text(scheme.event_type()).or_else(|| body_text(&["event", "type"]));
        Ok(Event {
            route: Arc::clone(&self.path),
            scheme: scheme.name(),
            id,
            kind,
            signed_at: verified.timestamp,
            json,
            body,
            headers: headers.clone(),
        })
    }

    /// A place in the queue, taken before the event is remembered as seen: a
    /// `503` for a full queue must leave the platform's retry welcome.
    pub(crate) fn reserve(&self) -> Result<OwnedSemaphorePermit, RequestError> {
        self.queue.reserve()
    }

    /// Whether this is the first time the event is seen: remembers its
    /// signature and, where the scheme has one, its delivery id. `now` is the
    /// clock reading the window was checked with.
    pub(crate) async fn first_seen(
        &self,
        event: &Event,
        verified: &Verified,
        now: u64,
    ) -> Result<bool, RequestError> {
        let mut expires_at = now.saturating_add(self.dedupe_window_secs);
        if let (Some(signed_at), Some(window)) = (verified.timestamp, self.verifier.window_secs()) {
            expires_at = expires_at.max(signed_at.saturating_add(window));
        }
        let delivery_id = self
            .verifier
            .scheme()
            .delivery_id()
            .and_then(|header| event.headers.get(&header.name))
            .map(|value| value.as_bytes());
        let keys = std::iter::once(self.dedupe_key(b"signature", &verified.signature))
            .chain(delivery_id.map(|id| self.dedupe_key(b"delivery", id)));
        for key in keys {
            match self.dedupe_cache.first_seen(key, expires_at, now).await {
                Ok(true) => {}
                Ok(false) => return Ok(false),
                Err(error) => {
                    measure::replay_store_error();
                    return Err(RequestError::Overloaded {
                        limit: Overload::ReplayStore,
                        source: Some(error),
                    });
                }
            }
        }
        Ok(true)
    }

    /// Keys of different routes and kinds never meet, even in one shared store.
    fn dedupe_key(&self, kind: &[u8], value: &[u8]) -> [u8; 32] {
        let mut key = Sha256::new();
        for part in [
            b"partner-webhook dedupe".as_slice(),
            self.path.as_bytes(),
            kind,
        ] {
            key.update(part);
            key.update([0]);
        }
        key.update(value);
        key.finalize().into()
    }

    /// Hands the event to the handler on the queue; the answer does not wait.
    /// `memory` is the body's share of the memory budget, held until the
    /// handler is done with it.
    pub(crate) fn enqueue(
        &self,
        room: OwnedSemaphorePermit,
        event: Event,
        memory: Option<OwnedSemaphorePermit>,
    ) {
        self.queue
            .run(room, event, Arc::clone(&self.handler), memory);
    }

    pub(crate) async fn readiness(&self) -> Result<(), BoxError> {
        self.dedupe_cache.ready().await
    }

    /// Waits until every accepted event is handled, up to `deadline`; then
    /// drops what is left, logging each. Returns how many were dropped.
    pub(crate) async fn drain(&self, deadline: Instant) -> usize {
        self.queue.drain(&self.path, deadline).await
    }
}

impl fmt::Debug for EventRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventRoute")
            .field("path", &self.path)
            .field("scheme", &self.verifier.scheme().name())
            .finish_non_exhaustive()
    }
}

/// The bounded queue: `room` counts events accepted and not finished, `running`
/// the handlers at work. Each event is a task that waits for a running slot;
/// the shutdown signal makes every task still waiting or running give up.
struct EventQueue {
    room: Arc<Semaphore>,
    capacity: u32,
    running: Arc<Semaphore>,
    shutdown: watch::Sender<bool>,
}

impl EventQueue {
    fn new(capacity: usize, concurrency: usize) -> Self {
        EventQueue {
            room: Arc::new(Semaphore::new(capacity)),
            // Checked by EventsConfig::validate.
            capacity: u32::try_from(capacity).unwrap_or(u32::MAX),
            running: Arc::new(Semaphore::new(concurrency)),
            shutdown: watch::channel(false).0,
        }
    }

    fn reserve(&self) -> Result<OwnedSemaphorePermit, RequestError> {
        Arc::clone(&self.room)
            .try_acquire_owned()
            .map_err(|_| RequestError::Overloaded {
                limit: Overload::EventQueue,
                source: None,
            })
    }

    fn run(
        &self,
        room: OwnedSemaphorePermit,
        event: Event,
        handler: Arc<dyn EventHandler>,
        memory: Option<OwnedSemaphorePermit>,
    ) {
        let running = Arc::clone(&self.running);
        let mut shutdown = self.shutdown.subscribe();
        // Its own root: the request it came with is answered and logged.
        let span = tracing::info_span!(
            parent: None,
            "event",
            route = %event.route,
            id = event.id.as_deref().unwrap_or("-"),
            kind = event.kind.as_deref().unwrap_or("-"),
        );
        measure::event_queued(1.0);
        let work = async move {
            let handled = async {
                let Ok(_running) = running.acquire_owned().await else {
                    return Handled::NotStarted;
                };
                let started = Instant::now();
                let outcome = CatchUnwind::call(|| handler.handle(event)).await;
                Handled::Finished(outcome, started)
            };
            let stopped = async move {
                // A queue dropped without a drain lets its tasks finish.
                if shutdown.wait_for(|stop| *stop).await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            // At the end of the grace a running handler's future is dropped,
            // cancelling whatever it awaits.
            let handled = tokio::select! {
                handled = handled => handled,
                () = stopped => Handled::Abandoned,
            };
            handled.log();
            measure::event_queued(-1.0);
            drop((room, memory));
        };
        tokio::spawn(work.instrument(span));
    }

    async fn drain(&self, path: &str, deadline: Instant) -> usize {
        // Taking every place waits for each accepted event to finish, and
        // meanwhile a new event finds the queue full: `503`, and its platform
        // retries it later, at this instance's successor.
        let all_room = || Arc::clone(&self.room).acquire_many_owned(self.capacity);
        let unfinished = self.unfinished();
        if unfinished > 0 {
            info!(
                route = path,
                unfinished, "waiting for queued events to be handled"
            );
        }
        if let Ok(Ok(room)) = tokio::time::timeout_at(deadline, all_room()).await {
            room.forget();
            return 0;
        }
        let dropped = self.unfinished();
        let _ = self.shutdown.send(true);
        // Each task logs its event as dropped and gives its place back at once.
        if let Ok(Ok(room)) = tokio::time::timeout(Duration::from_secs(1), all_room()).await {
            room.forget();
        }
        error!(
            route = path,
            dropped,
            "shutdown grace ended before every queued event was handled; the dropped ones \
             were answered 200 and are lost unless their platform sends them again"
        );
        dropped
    }

    fn unfinished(&self) -> usize {
        (self.capacity as usize).saturating_sub(self.room.available_permits())
    }
}

/// How one queued event ended, for its log line.
enum Handled {
    Finished(
        Result<Result<(), BoxError>, Box<dyn std::any::Any + Send>>,
        Instant,
    ),
    /// The handler's semaphore closed; does not happen while the queue lives.
    NotStarted,
    /// Shutdown's grace ended first.
    Abandoned,
}

impl Handled {
    fn log(self) {
        match self {
            Handled::Finished(Ok(Ok(())), started) => {
                measure::event_handled("ok");
                let elapsed_ms = Millis(started.elapsed());
                info!(%elapsed_ms, "event handled");
            }
            Handled::Finished(Ok(Err(failure)), _) => {
                measure::event_handled("failed");
                error!(error = %failure, "event handler failed");
            }
            Handled::Finished(Err(panic), _) => {
                measure::event_handled("panicked");
                error!(panic = %panic_message(panic), "event handler panicked");
            }
            Handled::NotStarted | Handled::Abandoned => {
                measure::event_handled("dropped");
                warn!("event dropped at shutdown before its handler finished");
            }
        }
    }
}
