//! The spine: one request through limits, verify, parse, assistant, reply, in
//! that order, and one log line for it.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use hyper::body::{Body, Bytes};
use hyper::header::HeaderValue;
use hyper::http::request::Parts;
use hyper::{HeaderMap, Method, Request, Response};
use tracing::{debug, error, info, warn};

use crate::assistant::{self, Assistant, Context};
use crate::config::{Config, SetupError};
use crate::error::{BoxError, RequestError};
use crate::limits::{self, BodyLimits};
use crate::payload::MessageReceived;
use crate::replay::ReplayCache;
use crate::response::{self, Answer, Reply, ResponseBody};
use crate::signature::{SignatureError, Verified, Verifier};

const HEALTH_PATH: &str = "/healthz";

/// The webhook as a request handler, to mount in your own hyper or axum stack.
///
/// Answers `POST` on any path with the assistant's reply and `GET /healthz`
/// with `{"status":"ok"}`. It implements both hyper's and tower's `Service`
/// for any request body, and is cheap to clone. [`Server`](crate::Server)
/// uses it for every connection. It needs a tokio runtime with timers
/// enabled (`#[tokio::main]` has them) for its body timeout and reply deadline.
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
    /// `None` only when the configuration accepts unsigned requests.
    verifier: Option<Verifier>,
    replay_cache: Arc<dyn ReplayCache>,
    replay_window: Duration,
    body: BodyLimits,
    reply_slots: Semaphore,
    reply_deadline: Duration,
    fallback_reply: Option<String>,
    assistant: Box<dyn Assistant>,
}

impl Webhook {
    /// Builds the handler. Fails when the configuration has neither a secret
    /// nor an explicit [`Config::accept_unsigned`], or has both.
    pub fn new(config: &Config, assistant: impl Assistant) -> Result<Self, SetupError> {
        config.validate()?;
        let verifier = if config.accept_unsigned {
            None
        } else {
            Some(Verifier::new(config.secrets.clone(), config.replay_window)?)
        };
        Ok(Webhook {
            inner: Arc::new(Inner {
                verifier,
                replay_cache: Arc::clone(&config.replay_cache),
                replay_window: config.replay_window,
                body: BodyLimits::new(
                    config.body_limit,
                    config.body_read_timeout,
                    config.max_buffered_bytes,
                ),
                reply_slots: Semaphore::new(config.max_concurrent_replies),
                reply_deadline: config.reply_deadline,
                fallback_reply: config.fallback_reply.clone(),
                assistant: Box::new(assistant),
            }),
        })
    }

    /// Answers one request. Never fails: every problem becomes a JSON error
    /// response with its status, and is logged.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<ResponseBody>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let started = Instant::now();
        let (parts, body) = request.into_parts();
        let mut ids = LoggedIds::from_headers(&parts.headers);
        let outcome = self.process(&parts, body, &mut ids, started).await;
        let response = response::build(&outcome);
        log_request(&parts, &outcome, &ids, started);
        response
    }

    async fn process<B>(
        &self,
        parts: &Parts,
        body: B,
        ids: &mut LoggedIds,
        started: Instant,
    ) -> Result<Answer, RequestError>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        if let Some(answer) = route(parts)? {
            return Ok(answer);
        }
        limits::check_content_type(&parts.headers)?;
        let (body, _memory) = self.inner.body.read(&parts.headers, body).await?;
        let verified = self.verify(&parts.headers, &body)?;
        self.reject_replay(verified).await?;
        let message = MessageReceived::from_json(&body)?;
        ids.message_id.clone_from(&message.message.id);
        let context = request_context(&parts.headers, verified, body);
        let _slot = self.reply_slot()?;
        self.reply_in_time(message, context, started).await
    }

    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<Option<Verified>, RequestError> {
        match &self.inner.verifier {
            Some(verifier) => Ok(Some(verifier.verify(headers, body)?)),
            None => Ok(None),
        }
    }

    async fn reject_replay(&self, verified: Option<Verified>) -> Result<(), RequestError> {
        let Some(verified) = verified else {
            return Ok(());
        };
        let expires_at = verified
            .timestamp
            .saturating_add(self.inner.replay_window.as_secs());
        match self
            .inner
            .replay_cache
            .first_seen(verified.signature, expires_at)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(SignatureError::Replayed.into()),
            Err(error) => Err(RequestError::Overloaded {
                reason: "replay cache unavailable",
                source: Some(error),
            }),
        }
    }

    fn reply_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, RequestError> {
        self.inner
            .reply_slots
            .try_acquire()
            .map_err(|_| RequestError::Overloaded {
                reason: "too many replies in progress",
                source: None,
            })
    }

    /// Calls the assistant, but answers by the deadline whatever it does.
    async fn reply_in_time(
        &self,
        message: MessageReceived,
        context: Context,
        started: Instant,
    ) -> Result<Answer, RequestError> {
        let deadline = started + self.inner.reply_deadline;
        let reply = assistant::call(&*self.inner.assistant, message, context);
        match tokio::time::timeout_at(deadline, reply).await {
            Ok(reply) => Ok(Answer::Reply(reply?)),
            Err(_) => match &self.inner.fallback_reply {
                Some(text) => Ok(Answer::Fallback(Reply::new(text.as_str()))),
                None => Err(RequestError::ReplyTimeout {
                    deadline: self.inner.reply_deadline,
                }),
            },
        }
    }
}

/// `Ok(Some)` answers the request right away, `Ok(None)` lets it on to the
/// assistant.
fn route(parts: &Parts) -> Result<Option<Answer>, RequestError> {
    let is_health = parts.uri.path() == HEALTH_PATH;
    match parts.method {
        Method::POST => Ok(None),
        Method::GET if is_health => Ok(Some(Answer::Healthy)),
        ref method => Err(RequestError::MethodNotAllowed {
            method: method.clone(),
            allow: if is_health { "GET, POST" } else { "POST" },
        }),
    }
}

fn request_context(headers: &HeaderMap, verified: Option<Verified>, body: Bytes) -> Context {
    Context {
        app_id: header_text(headers, "x-app-id"),
        thread_id: header_text(headers, "x-thread-id"),
        signed_at: verified.map(|verified| verified.timestamp),
        verified: verified.is_some(),
        body,
    }
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// Ids for the request's log line; the header ones are known even when the
/// request is rejected before its body is parsed.
struct LoggedIds {
    app_id: Option<HeaderValue>,
    thread_id: Option<HeaderValue>,
    message_id: Option<String>,
}

impl LoggedIds {
    fn from_headers(headers: &HeaderMap) -> Self {
        LoggedIds {
            app_id: headers.get("x-app-id").cloned(),
            thread_id: headers.get("x-thread-id").cloned(),
            message_id: None,
        }
    }
}

fn log_request(
    parts: &Parts,
    outcome: &Result<Answer, RequestError>,
    ids: &LoggedIds,
    started: Instant,
) {
    let method = &parts.method;
    // The path only: a query string may carry tokens.
    let path = parts.uri.path();
    let latency_ms = format_args!("{:.3}", started.elapsed().as_secs_f64() * 1000.0);
    let shown = |value: &Option<HeaderValue>| {
        value
            .as_ref()
            .and_then(|value| value.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    let app_id = shown(&ids.app_id);
    let thread_id = shown(&ids.thread_id);
    let message_id = ids.message_id.as_deref().unwrap_or("-");
    match outcome {
        Ok(Answer::Healthy) => debug!(%method, path, status = 200, %latency_ms, "health check"),
        Ok(Answer::Reply(_)) => info!(
            %method, path, status = 200, %latency_ms, app_id, thread_id, message_id,
            "replied"
        ),
        Ok(Answer::Fallback(_)) => warn!(
            %method, path, status = 200, %latency_ms, app_id, thread_id, message_id,
            "assistant missed the reply deadline; sent the fallback reply"
        ),
        Err(rejection) => {
            let status = rejection.status().as_u16();
            let detail = std::error::Error::source(rejection)
                .map(ToString::to_string)
                .unwrap_or_default();
            if rejection.status().is_server_error() {
                error!(
                    %method, path, status, %latency_ms, app_id, thread_id, message_id,
                    reason = %rejection, detail, "request failed"
                );
            } else {
                warn!(
                    %method, path, status, %latency_ms, app_id, thread_id, message_id,
                    reason = %rejection, "request rejected"
                );
            }
        }
    }
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("verifies_signatures", &self.inner.verifier.is_some())
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
