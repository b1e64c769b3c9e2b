//! The spine: one request through limits, verify, then either parse,
//! assistant, reply (this platform's messages) or de-duplicate, queue,
//! acknowledge (another platform's events), in that order, and one log line
//! for it.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::Instrument;

use hyper::body::{Body, Bytes};
use hyper::header::ACCEPT;
use hyper::http::request::Parts;
use hyper::{HeaderMap, Method, Request, Response};

use crate::assistant::{self, Assistant, Context};
use crate::config::{Config, ReplyFormat, SetupError};
use crate::error::{BoxError, Overload, RequestError};
use crate::events::{EventHandler, EventRoute, EventsConfig};
use crate::guard::{RefusalLog, RequestGuard};
use crate::limits::{self, BodyLimits};
use crate::measure::{self, InFlight, Meters};
use crate::payload::MessageReceived;
use crate::replay::ReplayCache;
use crate::response::{self, Answer, Reply, ResponseBody};
use crate::signature::{SignatureError, SignedHeaders, Verified, Verifier, unix_now};
use crate::sse::SseFrames;
use crate::store::{PartnerApi, StoreTarget};

const HEALTH_PATH: &str = "/healthz";
const READY_PATH: &str = "/readyz";

/// The webhook as a request handler, to mount in your own hyper or axum stack.
///
/// Answers `POST` on any path with the assistant's reply, `GET /healthz`
/// (liveness) with `{"status":"ok"}`, and `GET /readyz` (readiness) with
/// `{"status":"ready"}`, or `503` when a replay store does not answer. Other
/// platforms' events are served on the paths given to [`Webhook::route`],
/// which take precedence; a `Webhook` made by [`Webhook::for_events`] serves
/// only those. It implements both hyper's and tower's `Service` for any
/// request body, and is cheap to clone. [`Server`](crate::Server) uses it for
/// every connection. It needs a tokio runtime with timers enabled
/// (`#[tokio::main]` has them) for its body timeout and reply deadline.
///
/// Everything about one request is here; everything about connections
/// ([`Config::header_read_timeout`], [`Config::write_timeout`],
/// [`Config::max_connection_age`], [`Config::max_requests_per_connection`],
/// [`Config::max_connections`]) is [`Server`](crate::Server)'s. Mounted in
/// your own stack, set those limits there.
///
/// ```
/// use std::convert::Infallible;
/// use http_body_util::Empty;
/// use hyper::{body::Bytes, Request, StatusCode};
/// use partner_webhook::{assistant_fn, Config, Webhook};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let echo = assistant_fn(|m, _| async move { Ok::<_, Infallible>(m.message.content) });
/// let webhook = Webhook::new(&Config::default().accept_unsigned(), echo)?;
/// let health = Request::get("/healthz").body(Empty::<Bytes>::new())?;
/// assert_eq!(webhook.handle(health).await.status(), StatusCode::OK);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Webhook {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` for a webhook serving only event routes.
    assistant: Option<Box<dyn Assistant>>,
    /// Other platforms' events, by exact path.
    event_routes: Vec<EventRoute>,
    /// `None` only when the configuration accepts unsigned requests.
    verifier: Option<Verifier>,
    replay_cache: Arc<dyn ReplayCache>,
    body: BodyLimits,
    reply_slots: Arc<Semaphore>,
    reply_deadline: Duration,
    reply_format: ReplyFormat,
    stream_chunk_timeout: Duration,
    partner_api: Option<PartnerApi>,
    fallback_reply: Option<String>,
    refusals: Arc<RefusalLog>,
    meters: Arc<Meters>,
    label_metrics_by_app: bool,
    /// Unix seconds; replaceable so tests can stand at the window's edge.
    clock: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl Webhook {
    /// Builds the handler. Fails when the configuration has neither a secret
    /// nor an explicit [`Config::accept_unsigned`], has both, or holds a value
    /// that cannot work (see [`SetupError::InvalidConfig`]).
    pub fn new(config: &Config, assistant: impl Assistant) -> Result<Self, SetupError> {
        config.validate()?;
        let verifier = if config.accept_unsigned {
            None
        } else {
            Some(Verifier::new(config.secrets.clone(), config.replay_window)?)
        };
        Self::build(config, Some(Box::new(assistant)), verifier)
    }

    /// A handler with no assistant, for other platforms' events only: add
    /// them with [`Webhook::route`]. Any other path is answered `404`.
    /// `config`'s secrets and reply settings are not used; its body limits
    /// are, and a [`Server`](crate::Server) uses its connection settings.
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use partner_webhook::{event_handler_fn, Config, EventsConfig, Scheme, Secret, Webhook};
    ///
    /// let print = event_handler_fn(|event| async move {
    ///     println!("{:?} {:?}", event.kind, event.id);
    ///     Ok::<_, Infallible>(())
    /// });
    /// let sendseven = EventsConfig::new(Scheme::sendseven(), Secret::new("s7-secret")?);
    /// let webhook = Webhook::for_events(&Config::default())?.route("/sendseven", &sendseven, print)?;
    /// # Ok::<(), partner_webhook::SetupError>(())
    /// ```
    pub fn for_events(config: &Config) -> Result<Self, SetupError> {
        config.validate_limits()?;
        Self::build(config, None, None)
    }

    fn build(
        config: &Config,
        assistant: Option<Box<dyn Assistant>>,
        verifier: Option<Verifier>,
    ) -> Result<Self, SetupError> {
        let meters = Meters::register(assistant.is_some(), config.metrics_app_label);
        Ok(Webhook {
            inner: Arc::new(Inner {
                assistant,
                event_routes: Vec::new(),
                verifier,
                replay_cache: Arc::clone(&config.replay_cache),
                body: BodyLimits::new(
                    config.body_limit,
                    config.body_read_timeout,
                    config.max_buffered_bytes,
                ),
                reply_slots: Arc::new(Semaphore::new(config.max_concurrent_replies)),
                reply_deadline: config.reply_deadline,
                reply_format: config.reply_format,
                stream_chunk_timeout: config.stream_chunk_timeout,
                partner_api: config
                    .platform_api_url
                    .as_deref()
                    .map(PartnerApi::new)
                    .transpose()?,
                fallback_reply: config.fallback_reply.clone(),
                refusals: Arc::default(),
                meters: Arc::new(meters),
                label_metrics_by_app: config.metrics_app_label,
                clock: Box::new(unix_now),
            }),
        })
    }

    /// Serves another platform's events on `path` (exact match): verified by
    /// `config`'s scheme, de-duplicated, answered `200 {"status":"received"}`
    /// (or `{"status":"duplicate"}`), then handed to `handler` on the route's
    /// queue. See [`EventsConfig`] for the rules. Call it on a fresh
    /// `Webhook`, before cloning it or serving with it.
    ///
    /// Fails when `config` cannot work (see [`SetupError::InvalidEventRoute`]
    /// and [`SetupError::UnboundedReplays`]), the path is taken, or the
    /// `Webhook` was cloned already.
    pub fn route(
        mut self,
        path: &str,
        config: &EventsConfig,
        handler: impl EventHandler,
    ) -> Result<Self, SetupError> {
        let invalid = |reason| SetupError::InvalidEventRoute {
            path: path.to_owned(),
            reason,
        };
        if [HEALTH_PATH, READY_PATH].contains(&path) {
            return Err(invalid("the path is the health or readiness probe's"));
        }
        let route = EventRoute::new(path, config, handler)?;
        let inner = Arc::get_mut(&mut self.inner)
            .ok_or_else(|| invalid("routes are added before the Webhook is cloned"))?;
        if inner.event_routes.iter().any(|taken| &*taken.path == path) {
            return Err(invalid("another event route has this path"));
        }
        inner.event_routes.push(route);
        Ok(self)
    }

    /// Waits, up to `grace`, until every event accepted on an event route is
    /// handled, answering new events `503` meanwhile; then drops the events
    /// still queued or running (cancelling their handlers) and logs each.
    /// Returns how many were dropped. [`Server::serve`](crate::Server::serve)
    /// calls it at shutdown with what is left of
    /// [`Config::shutdown_grace`](crate::Config::shutdown_grace); a dropped
    /// event was answered `200`, so it is lost unless its platform sends it
    /// again.
    pub async fn drain_events(&self, grace: Duration) -> usize {
        let deadline = Instant::now() + grace;
        let mut dropped = 0;
        for route in &self.inner.event_routes {
            dropped += route.drain(deadline).await;
        }
        dropped
    }

    /// Answers one request. Never fails: every problem becomes a JSON error
    /// response with its status, and is logged.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<ResponseBody>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = request.into_parts();
        let mut guard = RequestGuard::new(
            &parts,
            Arc::clone(&self.inner.refusals),
            Arc::clone(&self.inner.meters),
            self.inner.label_metrics_by_app,
        );
        let span = guard.span().clone();
        let outcome = self
            .process(&parts, body, &mut guard)
            .instrument(span)
            .await;
        response::build(outcome, guard)
    }

    async fn process<B>(
        &self,
        parts: &Parts,
        body: B,
        guard: &mut RequestGuard,
    ) -> Result<Answer, RequestError>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let post = match self.route_of(parts)? {
            Route::Post(post) => post,
            Route::Health => return Ok(Answer::Healthy("ok")),
            Route::Ready => return self.readiness().await,
        };
        let verifier = match post {
            Post::Assistant(_) => self.inner.verifier.as_ref(),
            Post::Events(events) => {
                guard.for_event_route();
                Some(&events.verifier)
            }
        };
        limits::check_content_type(&parts.headers)?;
        let signed = self.check_signature_headers(verifier, &parts.headers)?;
        self.inner.body.check_declared_length(&parts.headers)?;
        let (body, memory) = self.inner.body.read(&parts.headers, body).await?;
        guard.hold_memory(memory);
        let verified = verify_body(verifier, signed.as_ref(), &body)?;
        match post {
            Post::Events(events) => {
                // An event route always verifies; fail closed all the same.
                let verified = verified.ok_or(SignatureError::Mismatch)?;
                self.acknowledge(events, parts, body, verified, guard).await
            }
            Post::Assistant(assistant) => self.reply(assistant, parts, body, verified, guard).await,
        }
    }

    /// This platform's message: parse, call the assistant, answer with its reply.
    async fn reply(
        &self,
        assistant: &dyn Assistant,
        parts: &Parts,
        body: Bytes,
        verified: Option<Verified>,
        guard: &mut RequestGuard,
    ) -> Result<Answer, RequestError> {
        // Before the signature is recorded, so that a 503 here can be retried
        // with the same request, as its Retry-After invites.
        guard.hold_slot(self.reply_slot()?);
        self.reject_replay(verified).await?;
        // The message moves into the assistant's future here, so that no
        // state of this request's future keeps a copy of it across the wait.
        let (calling, call, format, store) = {
            let message = MessageReceived::from_json(&body)?;
            guard.take_ids_from_body(&parts.headers, &message);
            let format = self.format_for(&parts.headers, &message);
            let store = self.store_target(&message, verified);
            let context = request_context(&message, verified, body);
            // Counted and timed from before the call: an assistant may run
            // code before it returns its future.
            let calling = (
                InFlight::assistant_calls(&self.inner.meters),
                Instant::now(),
            );
            let call = assistant::call(assistant, message, context);
            (calling, call, format, store)
        };
        self.reply_in_time(calling, call, format, store, guard.started())
            .await
    }

    /// Another platform's event: queue it for the handler unless it was seen
    /// before, and answer at once.
    async fn acknowledge(
        &self,
        events: &EventRoute,
        parts: &Parts,
        body: Bytes,
        verified: Verified,
        guard: &mut RequestGuard,
    ) -> Result<Answer, RequestError> {
        let event = events.event(&parts.headers, body, &verified)?;
        guard.name_event(&event);
        // Before the event is remembered, so that a 503 here leaves the
        // platform's retry welcome.
        let room = events.reserve()?;
        let now = self.recheck_window(&events.verifier, &verified)?;
        if !events.first_seen(&event, &verified, now).await? {
            return Ok(Answer::Acknowledged("duplicate"));
        }
        // The body stays charged to the memory budget until it is handled.
        events.enqueue(room, event, guard.take_memory());
        Ok(Answer::Acknowledged("received"))
    }

    /// Judges the signature headers before the body is read, so a client
    /// without the secret cannot make the server wait for, or buffer, a body.
    fn check_signature_headers<'h>(
        &self,
        verifier: Option<&Verifier>,
        headers: &'h HeaderMap,
    ) -> Result<Option<SignedHeaders<'h>>, RequestError> {
        let Some(verifier) = verifier else {
            return Ok(None);
        };
        let now = (self.inner.clock)();
        let signed = verifier.check_headers(headers, now)?;
        if let Some(timestamp) = signed.timestamp() {
            measure::signing_skew(&self.inner.meters, now as f64 - timestamp as f64);
        }
        Ok(Some(signed))
    }

    /// The clock reading for the replay step, once the window is checked
    /// again with it: the body may have taken seconds to arrive since the
    /// headers were judged, and a cache that forgets by a later clock than
    /// the window was checked with lets a replay through at the window's edge.
    fn recheck_window(
        &self,
        verifier: &Verifier,
        verified: &Verified,
    ) -> Result<u64, RequestError> {
        let now = (self.inner.clock)();
        let (Some(timestamp), Some(window_secs), Some(rule)) = (
            verified.timestamp,
            verifier.window_secs(),
            verifier.scheme().timestamp(),
        ) else {
            return Ok(now);
        };
        if timestamp.saturating_add(window_secs) < now {
            return Err(SignatureError::OutsideWindow {
                header: rule.header.display,
                skew_secs: i128::from(timestamp) - i128::from(now),
                window_secs,
            }
            .into());
        }
        Ok(now)
    }

    /// Records the signature, refusing a replay, with the clock reading the
    /// window was last checked with.
    async fn reject_replay(&self, verified: Option<Verified>) -> Result<(), RequestError> {
        let (Some(verified), Some(verifier)) = (verified, &self.inner.verifier) else {
            return Ok(());
        };
        let now = self.recheck_window(verifier, &verified)?;
        // This platform's scheme always signs a timestamp.
        let expires_at = verified
            .timestamp
            .zip(verifier.window_secs())
            .map_or(now, |(timestamp, window)| timestamp.saturating_add(window));
        match self
            .inner
            .replay_cache
            .first_seen(verified.signature, expires_at, now)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(SignatureError::Replayed.into()),
            Err(error) => {
                measure::replay_store_error();
                Err(RequestError::Overloaded {
                    limit: Overload::ReplayStore,
                    source: Some(error),
                })
            }
        }
    }

    /// `200 {"status":"ready"}` when every replay store in use answers, else `503`.
    async fn readiness(&self) -> Result<Answer, RequestError> {
        let unready = |error| RequestError::Overloaded {
            limit: Overload::ReplayStore,
            source: Some(error),
        };
        if self.inner.assistant.is_some() {
            self.inner.replay_cache.ready().await.map_err(unready)?;
        }
        for route in &self.inner.event_routes {
            route.readiness().await.map_err(unready)?;
        }
        Ok(Answer::Healthy("ready"))
    }

    /// Where a request goes: an event route by its exact path, else the
    /// assistant, or one of the two probes.
    fn route_of(&self, parts: &Parts) -> Result<Route<'_>, RequestError> {
        let path = parts.uri.path();
        let probe = match path {
            HEALTH_PATH => Some(Route::Health),
            READY_PATH => Some(Route::Ready),
            _ => None,
        };
        let events = self
            .inner
            .event_routes
            .iter()
            .find(|route| &*route.path == path);
        match (&parts.method, probe, events) {
            (&Method::POST, _, Some(events)) => Ok(Route::Post(Post::Events(events))),
            (&Method::POST, _, None) => match &self.inner.assistant {
                Some(assistant) => Ok(Route::Post(Post::Assistant(&**assistant))),
                None => Err(RequestError::NotFound),
            },
            (&Method::GET, Some(probe), _) => Ok(probe),
            (method, probe, _) => Err(RequestError::MethodNotAllowed {
                method: method.clone(),
                allow: if probe.is_some() { "GET, POST" } else { "POST" },
            }),
        }
    }

    fn reply_slot(&self) -> Result<OwnedSemaphorePermit, RequestError> {
        Arc::clone(&self.inner.reply_slots)
            .try_acquire_owned()
            .map_err(|_| RequestError::Overloaded {
                limit: Overload::ReplySlots,
                source: None,
            })
    }

    /// JSON or SSE for this request: the "Test webhook" button reads only
    /// JSON, whatever the configured format.
    fn format_for(&self, headers: &HeaderMap, message: &MessageReceived) -> Format {
        if message.is_test_webhook() {
            return Format::Json;
        }
        match self.inner.reply_format {
            ReplyFormat::Sse => Format::Sse,
            ReplyFormat::Auto if accepts_event_stream(headers) => Format::Sse,
            _ => Format::Json,
        }
    }

    /// Where a streamed reply to `message` is stored, if storing is set up. The
    /// ids come from the signed body, the secret is the one that verified it.
    fn store_target(
        &self,
        message: &MessageReceived,
        verified: Option<Verified>,
    ) -> Option<Box<StoreTarget>> {
        let (api, verifier, verified) = (
            self.inner.partner_api.as_ref()?,
            self.inner.verifier.as_ref()?,
            verified?,
        );
        Some(Box::new(StoreTarget {
            api: api.clone(),
            app_id: message.app.id.clone(),
            thread_id: message.thread.id.clone(),
            secret: verifier.secrets().get(verified.secret_index)?.clone(),
        }))
    }

    /// Awaits the assistant's call (in flight and timed since `calling`), but
    /// answers by the deadline whatever it does. In JSON a streamed reply is
    /// joined by the same deadline; in SSE the body
    /// enforces it on the first chunk, and the chunk timeout on the others.
    async fn reply_in_time(
        &self,
        calling: (InFlight, Instant),
        call: impl Future<Output = Result<Reply, RequestError>>,
        format: Format,
        store: Option<Box<StoreTarget>>,
        started: Instant,
    ) -> Result<Answer, RequestError> {
        let deadline = started + self.inner.reply_deadline;
        let answered = tokio::time::timeout_at(deadline, call).await;
        measure::assistant_time(&self.inner.meters, calling.1.elapsed().as_secs_f64());
        drop(calling);
        let Ok(reply) = answered else {
            return self.missed_deadline(format);
        };
        let reply = reply?;
        match format {
            Format::Sse => {
                let frames =
                    SseFrames::new(reply, deadline, self.inner.stream_chunk_timeout, false);
                Ok(Answer::Sse(Box::new(match store {
                    Some(target) => frames.storing_to(*target),
                    None => frames,
                })))
            }
            Format::Json => match tokio::time::timeout_at(deadline, reply.joined()).await {
                Ok(joined) => Ok(Answer::Reply(joined.map_err(RequestError::Assistant)?)),
                Err(_) => self.missed_deadline(format),
            },
        }
    }

    /// The fallback reply if one is configured, else a 504.
    fn missed_deadline(&self, format: Format) -> Result<Answer, RequestError> {
        let answered = if self.inner.fallback_reply.is_some() {
            "fallback"
        } else {
            "504"
        };
        measure::deadline_missed(answered);
        let Some(text) = &self.inner.fallback_reply else {
            return Err(RequestError::ReplyTimeout {
                deadline: self.inner.reply_deadline,
            });
        };
        let fallback = Reply::new(text.as_str());
        Ok(match format {
            Format::Json => Answer::Fallback(fallback),
            Format::Sse => Answer::Sse(Box::new(SseFrames::new(
                fallback,
                Instant::now() + self.inner.stream_chunk_timeout,
                self.inner.stream_chunk_timeout,
                true,
            ))),
        })
    }

    /// Replaces the clock that the replay window and the replay cache read,
    /// so window tests are deterministic (feature `testing`). Call it on a
    /// fresh `Webhook`, before cloning it.
    ///
    /// # Panics
    ///
    /// When the `Webhook` has been cloned already.
    #[cfg(any(test, feature = "testing"))]
    #[must_use]
    pub fn with_clock(mut self, clock: crate::testing::FixedClock) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("with_clock is called on a fresh Webhook, before it is cloned")
            .clock = Box::new(move || clock.now());
        self
    }
}

/// The wire format of one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Sse,
}

/// Whether `Accept` lists `text/event-stream` (not refused with `q=0`).
fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let essence = parts.next().unwrap_or_default();
            let refused = parts.any(|param| {
                param
                    .strip_prefix("q=")
                    .is_some_and(|q| q.parse::<f32>().is_ok_and(|q| q == 0.0))
            });
            essence.eq_ignore_ascii_case("text/event-stream") && !refused
        })
}

/// Where a request goes.
#[derive(Clone, Copy)]
enum Route<'w> {
    /// A webhook delivery.
    Post(Post<'w>),
    /// Liveness: the process answers.
    Health,
    /// Readiness: the replay stores answer too, so a load balancer can take an
    /// instance whose shared store is unreachable out of rotation.
    Ready,
}

/// Who answers a webhook delivery.
#[derive(Clone, Copy)]
enum Post<'w> {
    /// This platform's message, for the assistant.
    Assistant(&'w dyn Assistant),
    /// Another platform's event.
    Events(&'w EventRoute),
}

fn verify_body(
    verifier: Option<&Verifier>,
    signed: Option<&SignedHeaders<'_>>,
    body: &[u8],
) -> Result<Option<Verified>, RequestError> {
    match (verifier, signed) {
        (Some(verifier), Some(signed)) => Ok(Some(verifier.verify_body(signed, body)?)),
        _ => Ok(None),
    }
}

fn request_context(message: &MessageReceived, verified: Option<Verified>, body: Bytes) -> Context {
    Context {
        app_id: message.app.id.clone(),
        thread_id: message.thread.id.clone(),
        signed_at: verified.and_then(|verified| verified.timestamp),
        verified: verified.is_some(),
        body,
    }
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("assistant", &self.inner.assistant.is_some())
            .field("verifies_signatures", &self.inner.verifier.is_some())
            .field("event_routes", &self.inner.event_routes)
            .field("body", &self.inner.body)
            .finish_non_exhaustive()
    }
}

type HandleFuture =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send>>;

impl<B> hyper::service::Service<Request<B>> for Webhook
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = HandleFuture;

    fn call(&self, request: Request<B>) -> Self::Future {
        let webhook = self.clone();
        Box::pin(async move { Ok(webhook.handle(request).await) })
    }
}

impl<B> tower_service::Service<Request<B>> for Webhook
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = HandleFuture;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        hyper::service::Service::call(self, request)
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::Full;

    use super::*;
    use crate::config::Secret;
    use crate::signature::{SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};
    use crate::testing::FixedClock;

    const SIGNED_AT: u64 = 1_763_899_200;
    const WINDOW: u64 = 300;
    const BODY: &str = r#"{"version":"1.0","event":"message_received","app":{"id":"a","name":""},"thread":{"id":"t","customer_id":null},"message":{"content":"hi"},"timestamp":"2026-11-23T12:00:00.000001+00:00"}"#;

    /// A webhook whose clock reads whatever `clock` holds.
    fn webhook_at(clock: &FixedClock) -> Webhook {
        let secret = Secret::new("edge-secret").expect("not empty");
        let config = Config::default()
            .secret(secret)
            .replay_window(Duration::from_secs(WINDOW));
        let echo = crate::assistant_fn(|message: MessageReceived, _| async move {
            Ok::<_, std::convert::Infallible>(message.message.content)
        });
        Webhook::new(&config, echo)
            .expect("valid config")
            .with_clock(clock.clone())
    }

    fn captured() -> Request<Full<Bytes>> {
        let secret = Secret::new("edge-secret").expect("not empty");
        Request::post("/")
            .header(TIMESTAMP_HEADER, SIGNED_AT.to_string())
            .header(SIGNATURE_HEADER, sign(&secret, SIGNED_AT, BODY.as_bytes()))
            .body(Full::new(Bytes::from(BODY)))
            .expect("valid request")
    }

    /// Sends the captured request once at `first` and again at each of
    /// `replays`; returns the statuses.
    async fn statuses(first: u64, replays: &[u64]) -> Vec<u16> {
        let clock = FixedClock::new(first);
        let webhook = webhook_at(&clock);
        let mut statuses = vec![webhook.handle(captured()).await.status().as_u16()];
        for &at in replays {
            clock.set(at);
            statuses.push(webhook.handle(captured()).await.status().as_u16());
        }
        statuses
    }

    #[tokio::test]
    async fn a_captured_request_is_accepted_once_at_every_second_of_the_window() {
        let edge = SIGNED_AT + WINDOW;
        assert_eq!(
            statuses(SIGNED_AT, &[edge - 1, edge, edge + 1]).await,
            [200, 401, 401, 401]
        );
        // First seen at the very edge: accepted once, refused in that same second.
        assert_eq!(statuses(edge, &[edge, edge + 1]).await, [200, 401, 401]);
        assert_eq!(statuses(edge - 1, &[edge]).await, [200, 401]);
        // Early by the window too.
        let early = SIGNED_AT - WINDOW;
        assert_eq!(statuses(early, &[early, SIGNED_AT]).await, [200, 401, 401]);
        assert_eq!(statuses(early - 1, &[]).await, [401]);
        assert_eq!(statuses(edge + 1, &[]).await, [401]);
    }
}
