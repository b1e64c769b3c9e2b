//! Setup: what the server needs before the first byte arrives.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit};
use sha2::Sha256;
use tokio::sync::Semaphore;

use crate::replay::{MemoryReplayCache, ReplayCache};

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// A webhook secret, as set on the App in the platform's dashboard.
///
/// `Debug` prints `Secret(<redacted>)`: the same secret authenticates the
/// platform's Partner API, so it must never reach a log line or an error body.
/// There is no `Display`. The text is kept only to store streamed replies
/// through that API ([`Config::platform_api_url`]), sent to no other place.
///
/// ```
/// use partner_webhook::Secret;
///
/// let secret = Secret::new("3f9a1c0e5b7d2468ace13579bdf02468")?;
/// assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
/// assert!(Secret::new("").is_err());
/// # Ok::<(), partner_webhook::SetupError>(())
/// ```
#[derive(Clone)]
pub struct Secret {
    keyed: HmacSha256,
    text: Arc<str>,
}

impl Secret {
    /// Wraps the secret text. The key is its UTF-8 bytes, as the platform uses it.
    ///
    /// An empty secret is rejected: the platform treats it as "no secret" and
    /// stops signing, so accepting it would silently accept unsigned requests.
    pub fn new(secret: impl AsRef<str>) -> Result<Self, SetupError> {
        let secret = secret.as_ref();
        if secret.is_empty() {
            return Err(SetupError::EmptySecret);
        }
        let keyed =
            HmacSha256::new_from_slice(secret.as_bytes()).map_err(|_| SetupError::EmptySecret)?;
        Ok(Secret {
            keyed,
            text: Arc::from(secret),
        })
    }

    pub(crate) fn mac(&self) -> HmacSha256 {
        self.keyed.clone()
    }

    /// For the `X-App-Secret` header of the Partner API, and nothing else.
    pub(crate) fn text_for_partner_api(&self) -> String {
        self.text.to_string()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Everything the server and the [`Webhook`](crate::Webhook) service need.
///
/// Start from `Config::default()` and add at least one secret (or opt out of
/// signatures explicitly with [`Config::accept_unsigned`]):
///
/// ```
/// use std::time::Duration;
/// use partner_webhook::{Config, Secret};
///
/// let config = Config::default()
///     .addr(([0, 0, 0, 0], 8080))
///     .secret(Secret::new("current-secret")?)
///     .secret(Secret::new("previous-secret")?) // accepted too, while rotating
///     .replay_window(Duration::from_secs(120));
/// assert_eq!(config.body_limit, 1024 * 1024);
/// # Ok::<(), partner_webhook::SetupError>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Where [`Server::bind`](crate::Server::bind) listens. Ignored by [`Webhook`](crate::Webhook).
    /// Default: `127.0.0.1:8080` (the reference servers' port, loopback only; use
    /// `0.0.0.0` to be reachable from other machines).
    pub addr: SocketAddr,
    /// Secrets a request may be signed with; any one of them is accepted, so a
    /// rotation can keep the old and the new secret side by side.
    /// Default: none (see [`accept_unsigned`](Config::accept_unsigned)).
    pub secrets: Vec<Secret>,
    /// Accept requests without signature headers. Only allowed with no secrets:
    /// a server that has a secret never lets an unsigned request through.
    /// Default: `false`.
    pub accept_unsigned: bool,
    /// Largest request body accepted, in bytes. Checked from `Content-Length`
    /// before reading, and again while reading a chunked body.
    /// Default: 1 MiB.
    pub body_limit: usize,
    /// How far `X-Timestamp` may be from the server clock, in the past or the
    /// future, before the request is rejected as a possible replay.
    /// Default: 300 s (the platform's dashboard tells partners 5 minutes).
    pub replay_window: Duration,
    /// Time a client has to send a complete request head, from the moment the
    /// connection opens or the previous response was sent; it is also how long
    /// an idle keep-alive connection stays open. The connection is closed when
    /// it runs out.
    /// Default: 10 s.
    pub header_read_timeout: Duration,
    /// How long a response write may make no progress (the peer stopped
    /// reading) before the connection is cut, freeing its slot.
    /// Default: 10 s.
    pub write_timeout: Duration,
    /// Age at which a connection takes no new request: it is closed at once if
    /// idle, or right after the response in progress. A connection is cut
    /// outright at this age plus the longest one request may take
    /// (`header_read_timeout + body_read_timeout + reply_deadline +
    /// write_timeout`), so no connection lives forever. The platform opens a
    /// fresh connection for every message, so this costs it nothing.
    /// Default: 30 s.
    pub max_connection_age: Duration,
    /// Requests served on one keep-alive connection; the last is answered with
    /// `Connection: close`. Bounds what one connection can pipeline without
    /// reading its answers. The platform sends one request per connection.
    /// Default: 100.
    pub max_requests_per_connection: usize,
    /// Largest request head (request line and headers) accepted; larger ones
    /// are answered `431` by hyper. Values under 8 KiB count as 8 KiB.
    /// Default: 16 KiB.
    pub max_header_bytes: usize,
    /// Time a client has to send the whole body once the head has arrived;
    /// past it the request is answered `408` and the connection closed.
    /// Default: 10 s.
    pub body_read_timeout: Duration,
    /// Time to answer, counted from the arrival of the request. The platform
    /// gives up after 8 s and shows the end user an error, so the server
    /// answers first: with [`fallback_reply`](Config::fallback_reply) if set,
    /// else `504`. The assistant's future is dropped at that moment, cancelling
    /// whatever it was awaiting (an LLM call, say).
    /// Default: 7.5 s.
    pub reply_deadline: Duration,
    /// How replies are sent: one JSON object, or a stream of SSE events.
    /// Whatever the format, the dashboard's "Test webhook" request gets JSON,
    /// the only thing that button can read.
    /// Default: [`ReplyFormat::Json`].
    pub reply_format: ReplyFormat,
    /// In SSE, how long the assistant may go without producing a chunk after
    /// the first (which is due by [`reply_deadline`](Config::reply_deadline)).
    /// The platform waits 8 s for each read, so past this the stream is ended
    /// with an `error` event rather than left to time out.
    /// Default: 7.5 s.
    pub stream_chunk_timeout: Duration,
    /// The platform's base URL (e.g. `http://localhost:8000`, its backend's
    /// default). When set, a reply streamed as SSE is stored through the
    /// platform's Partner API after its last chunk, with the secret that
    /// verified the request, and `done` carries the stored message's id, so the
    /// Chat screen keeps showing it. JSON replies are stored by the platform
    /// itself and "Test webhook" conversations are never stored. Plain
    /// `http://` only: the crate has no TLS client.
    /// Default: `None` (streamed replies are not stored).
    pub platform_api_url: Option<String>,
    /// Label `partner_webhook_requests_total` with the (signed) app id. One
    /// server usually serves one App; with many, each adds a series, so this
    /// is opt-in.
    /// Default: `false`.
    pub metrics_app_label: bool,
    /// Reply sent (as a normal `200`) when the assistant misses
    /// [`reply_deadline`](Config::reply_deadline), so the end user sees a
    /// friendly message instead of an error.
    /// Default: `None` (answer `504` with a JSON error).
    pub fallback_reply: Option<String>,
    /// Connections served at once. At the limit, the next client is accepted
    /// and waits while room is made for it: connections whose peer stopped
    /// reading are cut, and one idle keep-alive connection is closed (asked
    /// again every 100 ms, for up to `header_read_timeout`). A connection
    /// with a request in progress is never disturbed. Further clients wait in
    /// the operating system's accept queue.
    /// Default: 1024.
    pub max_connections: usize,
    /// Assistant calls running at once; past it, requests are answered `503`
    /// with `Retry-After` at once instead of queueing without bound. A call
    /// waiting on an LLM holds about 21 KiB (measured with 10,000 in flight),
    /// so this does not protect memory so much as the model behind the
    /// assistant: set it to what your LLM account allows at once. The default
    /// lets a burst of a few hundred users through (at 64, a burst of 300
    /// met 236 `503`s).
    /// Default: 512.
    pub max_concurrent_replies: usize,
    /// Request body bytes buffered at once across all requests, reserved as
    /// the bytes arrive; past it, requests are answered `503`. This, not the
    /// connection count, is what bounds memory under many slow uploads, and a
    /// client that only announces a large `Content-Length` holds none of it.
    /// Must be at least `body_limit`.
    /// Default: 64 MiB.
    pub max_buffered_bytes: usize,
    /// At shutdown, how long requests in flight may take to finish before
    /// their connections are cut.
    /// Default: 10 s.
    pub shutdown_grace: Duration,
    /// Where accepted signatures are remembered so that an exact replay is
    /// rejected (`401`, reason `replayed`). Clones of a `Config` share it.
    /// Default: a [`MemoryReplayCache`] for 100,000 signatures (when full it
    /// forgets the oldest and refuses requests signed that early).
    pub replay_cache: Arc<dyn ReplayCache>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            secrets: Vec::new(),
            accept_unsigned: false,
            body_limit: 1024 * 1024,
            replay_window: Duration::from_secs(300),
            header_read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            max_connection_age: Duration::from_secs(30),
            max_requests_per_connection: 100,
            max_header_bytes: 16 * 1024,
            body_read_timeout: Duration::from_secs(10),
            reply_deadline: Duration::from_millis(7500),
            fallback_reply: None,
            reply_format: ReplyFormat::Json,
            platform_api_url: None,
            metrics_app_label: false,
            stream_chunk_timeout: Duration::from_millis(7500),
            max_connections: 1024,
            max_concurrent_replies: 512,
            max_buffered_bytes: 64 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
            replay_cache: Arc::new(MemoryReplayCache::default()),
        }
    }
}

impl Config {
    /// Sets [`addr`](Config::addr).
    pub fn addr(mut self, addr: impl Into<SocketAddr>) -> Self {
        self.addr = addr.into();
        self
    }

    /// Adds a secret to [`secrets`](Config::secrets).
    pub fn secret(mut self, secret: Secret) -> Self {
        self.secrets.push(secret);
        self
    }

    /// Sets [`accept_unsigned`](Config::accept_unsigned): anyone who can reach
    /// the server can then post messages. Meant for local trials only.
    pub fn accept_unsigned(mut self) -> Self {
        self.accept_unsigned = true;
        self
    }

    /// Sets [`body_limit`](Config::body_limit).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Sets [`replay_window`](Config::replay_window).
    pub fn replay_window(mut self, window: Duration) -> Self {
        self.replay_window = window;
        self
    }

    /// Sets [`reply_deadline`](Config::reply_deadline).
    pub fn reply_deadline(mut self, deadline: Duration) -> Self {
        self.reply_deadline = deadline;
        self
    }

    /// Sets [`reply_format`](Config::reply_format).
    pub fn reply_format(mut self, format: ReplyFormat) -> Self {
        self.reply_format = format;
        self
    }

    /// Sets [`platform_api_url`](Config::platform_api_url).
    pub fn platform_api_url(mut self, url: impl Into<String>) -> Self {
        self.platform_api_url = Some(url.into());
        self
    }

    /// Sets [`fallback_reply`](Config::fallback_reply).
    pub fn fallback_reply(mut self, text: impl Into<String>) -> Self {
        self.fallback_reply = Some(text.into());
        self
    }

    pub(crate) fn validate(&self) -> Result<(), SetupError> {
        match (self.secrets.is_empty(), self.accept_unsigned) {
            (true, false) => return Err(SetupError::NoSecret),
            (false, true) => return Err(SetupError::SecretsAndUnsigned),
            _ => {}
        }
        self.validate_limits()
    }

    /// Everything but the secrets, which only the assistant's path uses.
    pub(crate) fn validate_limits(&self) -> Result<(), SetupError> {
        let invalid = |field, reason| Err(SetupError::InvalidConfig { field, reason });
        for (field, value) in [
            ("body_limit", self.body_limit),
            ("max_connections", self.max_connections),
            ("max_concurrent_replies", self.max_concurrent_replies),
            (
                "max_requests_per_connection",
                self.max_requests_per_connection,
            ),
        ] {
            if value == 0 {
                return invalid(field, "must be at least 1");
            }
        }
        for (field, value) in [
            ("max_connections", self.max_connections),
            ("max_concurrent_replies", self.max_concurrent_replies),
        ] {
            // A larger count panics in tokio's semaphore.
            if value > Semaphore::MAX_PERMITS {
                return invalid(field, "is above what a tokio semaphore can count");
            }
        }
        if self.accept_unsigned && self.platform_api_url.is_some() {
            return invalid(
                "platform_api_url",
                "storing replies needs the App's secret, which an unsigned server does not have",
            );
        }
        if self.max_buffered_bytes < self.body_limit {
            return invalid(
                "max_buffered_bytes",
                "must be at least body_limit, or no body that large could be read",
            );
        }
        if self.replay_window < Duration::from_secs(1) {
            return invalid(
                "replay_window",
                "must be at least 1 s (it counts whole seconds)",
            );
        }
        for (field, value) in [
            ("replay_window", self.replay_window),
            ("header_read_timeout", self.header_read_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("reply_deadline", self.reply_deadline),
            ("stream_chunk_timeout", self.stream_chunk_timeout),
            ("write_timeout", self.write_timeout),
            ("max_connection_age", self.max_connection_age),
            ("shutdown_grace", self.shutdown_grace),
        ] {
            if value > MAX_DURATION {
                return invalid(field, "must be at most one day");
            }
            if value.is_zero() && field != "shutdown_grace" {
                return invalid(field, "must be longer than zero");
            }
        }
        Ok(())
    }
}

/// Far-future deadlines overflow the clock (and no request or connection
/// needs more than a day), so every duration is refused past it.
const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// How the server sends replies ([`Config::reply_format`]).
///
/// The platform's Chat screen reads only SSE (`text/event-stream`); its
/// "Test webhook" button and its synchronous run API read only JSON. Its
/// requests look the same on both paths, so a URL serves one or the other,
/// except that the "Test webhook" request (thread id all zeros) is always
/// answered with JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ReplyFormat {
    /// `{"reply": ...}`; a streamed reply's chunks are joined first.
    #[default]
    Json,
    /// `event: delta` per chunk, then `event: done`; a whole reply is one
    /// `delta`.
    Sse,
    /// SSE when the request's `Accept` lists `text/event-stream`, JSON
    /// otherwise. (An SSE fallback would make this the same as
    /// [`Sse`](ReplyFormat::Sse).) The platform's requests send
    /// `Accept: */*`, so they get JSON: this is for other clients.
    Auto,
}

/// Why the server could not start. Request-time failures are
/// [`RequestError`](crate::RequestError)s instead.
#[derive(Debug)]
#[non_exhaustive]
pub enum SetupError {
    /// [`Secret::new`] was given an empty string.
    EmptySecret,
    /// Neither a secret nor [`Config::accept_unsigned`] was configured.
    NoSecret,
    /// Secrets were configured together with [`Config::accept_unsigned`].
    SecretsAndUnsigned,
    /// A value in [`Config`] cannot work: zero, too large to schedule, or in
    /// conflict with another field.
    InvalidConfig {
        /// The [`Config`] field at fault.
        field: &'static str,
        /// What it must be instead.
        reason: &'static str,
    },
    /// An event route's settings cannot work.
    InvalidEventRoute {
        /// The route's path.
        path: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// An event route's scheme signs no timestamp, so a captured event stays
    /// valid forever and only the dedupe memory catches a replay; refused
    /// unless [`EventsConfig::accept_replays_caught_by_dedupe_only`](crate::EventsConfig::accept_replays_caught_by_dedupe_only)
    /// is set.
    UnboundedReplays {
        /// The route's path.
        path: String,
        /// The scheme's name.
        scheme: &'static str,
    },
    /// The listening socket could not be bound.
    Bind {
        /// The address from [`Config::addr`].
        addr: SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::EmptySecret => f.write_str(
                "the webhook secret is empty; the platform stops signing with an empty secret, \
                 so leave it unset and call Config::accept_unsigned() instead",
            ),
            SetupError::NoSecret => f.write_str(
                "no webhook secret configured: add the App's secret with \
                 Config::secret(Secret::new(..)) (the examples read WEBHOOK_SECRET), or call \
                 Config::accept_unsigned() to accept unsigned requests on purpose",
            ),
            SetupError::SecretsAndUnsigned => f.write_str(
                "Config::accept_unsigned() cannot be combined with secrets: anyone could skip \
                 the signature; remove one of the two",
            ),
            SetupError::InvalidConfig { field, reason } => {
                write!(f, "invalid Config::{field}: {reason}")
            }
            SetupError::InvalidEventRoute { path, reason } => {
                write!(f, "invalid event route {path}: {reason}")
            }
            SetupError::UnboundedReplays { path, scheme } => write!(
                f,
                "event route {path}: the {scheme} scheme signs no timestamp, so a captured \
                 event can be replayed whenever the dedupe memory has forgotten it \
                 (after dedupe_window, or when a full cache drops it); call \
                 EventsConfig::accept_replays_caught_by_dedupe_only() to accept that"
            ),
            SetupError::Bind { addr, .. } => write!(f, "could not listen on {addr}"),
        }
    }
}

impl std::error::Error for SetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SetupError::Bind { source, .. } => Some(source),
            _ => None,
        }
    }
}
