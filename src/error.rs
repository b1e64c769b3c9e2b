//! The request path's failures, each answered with one fixed HTTP status.

use std::fmt;
use std::time::Duration;

use hyper::{Method, StatusCode};

use crate::signature::SignatureError;

/// A boxed error from an assistant or a request body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request was not answered with a reply.
///
/// Each variant maps to one status ([`RequestError::status`]); the response
/// body is `{"error": "<Display text>"}`. The text says what was wrong without
/// secrets, signatures, or assistant internals; those go to the log only
/// (through [`source`](std::error::Error::source)).
#[derive(Debug)]
#[non_exhaustive]
pub enum RequestError {
    /// 404: no route serves this path (a [`Webhook`](crate::Webhook) without
    /// an assistant serves only its event routes).
    NotFound,
    /// 405: only `POST` (and `GET /healthz`) are served.
    MethodNotAllowed {
        /// The method that was used.
        method: Method,
        /// The value of the `Allow` header sent back.
        allow: &'static str,
    },
    /// 415: a `Content-Type` was sent and it is not JSON.
    UnsupportedMediaType {
        /// The `Content-Type` that was sent.
        content_type: String,
    },
    /// 413: the body is over [`Config::body_limit`](crate::Config::body_limit).
    PayloadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// 400: the body could not be read (bad chunked encoding, broken connection).
    BodyRead(BoxError),
    /// 408: the body did not arrive within
    /// [`Config::body_read_timeout`](crate::Config::body_read_timeout).
    BodyTimeout {
        /// The timeout that ran out.
        timeout: Duration,
    },
    /// 401: the signature headers are missing, malformed, outside the replay
    /// window, or do not match.
    Unauthorized(SignatureError),
    /// 400: the body is not JSON.
    MalformedJson(serde_json::Error),
    /// 422: the body is JSON but does not fit the `message_received` contract.
    InvalidPayload {
        /// Path of the offending field, e.g. `message.content` (`.` for the root).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// 500: the assistant returned an error or panicked. The detail is the
    /// [`source`](std::error::Error::source) and is logged, never sent.
    Assistant(BoxError),
    /// 503, with `Retry-After`: a limit on concurrent work was reached, or the
    /// replay cache could not answer.
    Overloaded {
        /// Which limit.
        limit: Overload,
        /// The underlying failure, if any; logged, never sent.
        source: Option<BoxError>,
    },
    /// 504: the assistant did not answer within
    /// [`Config::reply_deadline`](crate::Config::reply_deadline) and no
    /// [`fallback_reply`](crate::Config::fallback_reply) is configured.
    ReplyTimeout {
        /// The deadline that passed.
        deadline: Duration,
    },
}

/// Which limit a `503` hit ([`RequestError::Overloaded`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Overload {
    /// [`Config::max_concurrent_replies`](crate::Config::max_concurrent_replies) assistant calls are running.
    ReplySlots,
    /// [`Config::max_buffered_bytes`](crate::Config::max_buffered_bytes) of bodies are held.
    BodyMemory,
    /// The replay store (e.g. Redis) could not answer.
    ReplayStore,
    /// An event route's queue holds
    /// [`EventsConfig::queue_capacity`](crate::EventsConfig::queue_capacity)
    /// events not yet handled, or the server is shutting down.
    EventQueue,
}

impl fmt::Display for Overload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Overload::ReplySlots => "too many replies in progress",
            Overload::BodyMemory => "too many request bodies in memory",
            Overload::ReplayStore => "replay store unavailable",
            Overload::EventQueue => "event queue full",
        })
    }
}

impl RequestError {
    /// Why, as a short stable label: the `reason` of the
    /// `partner_webhook_rejections_total` metric (`signature_missing`,
    /// `signature_mismatch`, `replayed`, `body_too_large`, `overloaded_replies`, ...).
    pub fn reason(&self) -> &'static str {
        match self {
            RequestError::NotFound => "not_found",
            RequestError::MethodNotAllowed { .. } => "method_not_allowed",
            RequestError::UnsupportedMediaType { .. } => "unsupported_media_type",
            RequestError::PayloadTooLarge { .. } => "body_too_large",
            RequestError::BodyRead(_) => "body_unreadable",
            RequestError::BodyTimeout { .. } => "body_timeout",
            RequestError::Unauthorized(error) => match error {
                SignatureError::Missing { .. } => "signature_missing",
                SignatureError::Malformed { .. } => "signature_malformed",
                SignatureError::OutsideWindow { skew_secs, .. } if *skew_secs < 0 => {
                    "signature_stale"
                }
                SignatureError::OutsideWindow { .. } => "signature_future",
                SignatureError::Mismatch => "signature_mismatch",
                SignatureError::Replayed => "replayed",
            },
            RequestError::MalformedJson(_) => "malformed_json",
            RequestError::InvalidPayload { .. } => "invalid_payload",
            RequestError::Assistant(_) => "assistant_failed",
            RequestError::Overloaded { limit, .. } => match limit {
                Overload::ReplySlots => "overloaded_replies",
                Overload::BodyMemory => "overloaded_bodies",
                Overload::ReplayStore => "replay_store_unavailable",
                Overload::EventQueue => "overloaded_events",
            },
            RequestError::ReplyTimeout { .. } => "deadline_missed",
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            RequestError::NotFound => StatusCode::NOT_FOUND,
            RequestError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            RequestError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RequestError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::BodyRead(_) => StatusCode::BAD_REQUEST,
            RequestError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            RequestError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            RequestError::MalformedJson(_) => StatusCode::BAD_REQUEST,
            RequestError::InvalidPayload { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            RequestError::Assistant(_) => StatusCode::INTERNAL_SERVER_ERROR,
            RequestError::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            RequestError::ReplyTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::NotFound => f.write_str("no webhook is served at this path"),
            RequestError::MethodNotAllowed { method, allow } => {
                write!(f, "method {method} not allowed here; use {allow}")
            }
            RequestError::UnsupportedMediaType { content_type } => write!(
                f,
                "unsupported Content-Type {content_type:?}; send application/json"
            ),
            RequestError::PayloadTooLarge { limit } => {
                write!(f, "request body is larger than the {limit}-byte limit")
            }
            RequestError::BodyRead(_) => f.write_str("could not read the request body"),
            RequestError::BodyTimeout { timeout } => write!(
                f,
                "the request body did not arrive within {} s",
                timeout.as_secs_f64()
            ),
            RequestError::Unauthorized(reason) => reason.fmt(f),
            RequestError::MalformedJson(error) => write!(f, "body is not valid JSON: {error}"),
            RequestError::InvalidPayload { field, reason } => {
                write!(f, "invalid message_received payload at `{field}`: {reason}")
            }
            RequestError::Assistant(_) => f.write_str("the assistant failed to reply"),
            RequestError::Overloaded { limit, .. } => {
                write!(f, "temporarily overloaded ({limit}); retry shortly")
            }
            RequestError::ReplyTimeout { deadline } => write!(
                f,
                "the assistant did not reply within {} s",
                deadline.as_secs_f64()
            ),
        }
    }
}

impl std::error::Error for RequestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RequestError::BodyRead(error) | RequestError::Assistant(error) => Some(&**error),
            RequestError::Unauthorized(error) => Some(error),
            RequestError::MalformedJson(error) => Some(error),
            RequestError::Overloaded {
                source: Some(error),
                ..
            } => Some(&**error),
            _ => None,
        }
    }
}

impl From<SignatureError> for RequestError {
    fn from(error: SignatureError) -> Self {
        RequestError::Unauthorized(error)
    }
}
