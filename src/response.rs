//! Reply bytes out: the one place a request's outcome becomes an HTTP response.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::{Body, Bytes, Frame, SizeHint};
use hyper::header::{ALLOW, CONNECTION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Response, StatusCode};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::RequestError;
use crate::guard::{Outcome, RequestGuard};

/// The assistant's answer: its text, and metadata for the platform.
///
/// Sent as `{"reply": text}` plus `"metadata"` when there is any.
///
/// ```
/// use partner_webhook::Reply;
///
/// let plain: Reply = "Hello!".into();
/// let rich = Reply::new("Your order ships tomorrow.")
///     .with_metadata("order", "A-1042")
///     .with_metadata("confidence", 0.93);
/// assert_eq!(rich.text(), Some("Your order ships tomorrow."));
/// assert_eq!(rich.metadata()["order"], "A-1042");
/// assert!(plain.metadata().is_empty());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    content: Content,
    metadata: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
enum Content {
    Text(String),
}

impl Reply {
    /// A reply with this text and no metadata.
    pub fn new(text: impl Into<String>) -> Self {
        Reply {
            content: Content::Text(text.into()),
            metadata: Map::new(),
        }
    }

    /// Adds one metadata entry.
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The whole text, for a reply made with [`Reply::new`].
    pub fn text(&self) -> Option<&str> {
        match &self.content {
            Content::Text(text) => Some(text),
        }
    }

    /// The metadata entries.
    pub fn metadata(&self) -> &Map<String, Value> {
        &self.metadata
    }

    /// `{"reply": text, "metadata": {...}}`, metadata left out when empty.
    fn to_json(&self, text: &str) -> serde_json::Result<Vec<u8>> {
        #[derive(Serialize)]
        struct Json<'a> {
            reply: &'a str,
            #[serde(skip_serializing_if = "Map::is_empty")]
            metadata: &'a Map<String, Value>,
        }
        serde_json::to_vec(&Json {
            reply: text,
            metadata: &self.metadata,
        })
    }
}

impl From<String> for Reply {
    fn from(text: String) -> Self {
        Reply::new(text)
    }
}

impl From<&str> for Reply {
    fn from(text: &str) -> Self {
        Reply::new(text)
    }
}

/// Body of every response the webhook sends.
///
/// Opaque: it is one JSON buffer today, and its private parts can grow (a
/// stream of frames) without changing the [`Webhook`](crate::Webhook)
/// service's response type. It carries the request's bookkeeping, which
/// logs the request when the body is dropped.
#[derive(Debug)]
pub struct ResponseBody {
    kind: BodyKind,
    /// Dropped with the body: after the last byte, or when the client hangs up.
    _guard: Option<RequestGuard>,
}

#[derive(Debug)]
enum BodyKind {
    Full(Option<Bytes>),
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut self.kind {
            BodyKind::Full(bytes) => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |bytes| bytes.len() as u64))
            }
        }
    }
}

/// What a request that did not fail produced.
pub(crate) enum Answer {
    Reply(Reply),
    /// The configured fallback, sent because the assistant missed the deadline.
    Fallback(Reply),
    Healthy,
}

/// The platform shows the first 200 characters of an error body to the end
/// user; longer messages only echo more of the client's own input back.
const MAX_ERROR_MESSAGE: usize = 300;

/// Makes the response for a request's outcome, and hands the request's guard
/// to its body.
pub(crate) fn build(
    outcome: Result<Answer, RequestError>,
    mut guard: RequestGuard,
) -> Response<ResponseBody> {
    let (status, body, logged) = match &outcome {
        Ok(Answer::Reply(reply)) => reply_json(reply, Outcome::Replied),
        Ok(Answer::Fallback(reply)) => reply_json(reply, Outcome::Fallback),
        Ok(Answer::Healthy) => (
            StatusCode::OK,
            br#"{"status":"ok"}"#.to_vec(),
            Outcome::Healthy,
        ),
        Err(error) => (
            error.status(),
            error_json(&error.to_string()),
            Outcome::refused(error),
        ),
    };
    guard.set_outcome(logged);
    let mut response = Response::new(ResponseBody {
        kind: BodyKind::Full(Some(Bytes::from(body))),
        _guard: Some(guard),
    });
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    match outcome {
        Err(RequestError::MethodNotAllowed { allow, .. }) => {
            headers.insert(ALLOW, HeaderValue::from_static(allow));
        }
        Err(RequestError::Overloaded { .. }) => {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        // The rest of the body may still be on its way; closing is the only
        // way not to read it. A refused signature is judged before the body
        // is read, and a client without the secret has no use for the
        // connection anyway.
        Err(
            RequestError::BodyTimeout { .. }
            | RequestError::PayloadTooLarge { .. }
            | RequestError::Unauthorized(_),
        ) => {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        _ => {}
    }
    response
}

fn reply_json(reply: &Reply, outcome: Outcome) -> (StatusCode, Vec<u8>, Outcome) {
    let encoded = match reply.text() {
        Some(text) => reply.to_json(text),
        None => Err(serde::ser::Error::custom(
            "a stream reached the JSON encoder unjoined",
        )),
    };
    match encoded {
        Ok(json) => (StatusCode::OK, json, outcome),
        // Unreachable in practice (string keys, JSON values), but never panic here.
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            error_json("could not encode the reply"),
            Outcome::Refused {
                status: 500,
                reason: "could not encode the reply".to_owned(),
                detail: error.to_string(),
            },
        ),
    }
}

fn error_json(message: &str) -> Vec<u8> {
    let mut end = message.len().min(MAX_ERROR_MESSAGE);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let shown = if end < message.len() {
        format!("{}...", &message[..end])
    } else {
        message.to_owned()
    };
    let mut object = Map::new();
    object.insert("error".to_owned(), Value::String(shown));
    serde_json::to_vec(&object).unwrap_or_else(|_| br#"{"error":"internal error"}"#.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_serializes_as_the_platform_expects() {
        let plain = Reply::from("hé");
        let json = plain.to_json("hé").expect("serializes");
        assert_eq!(json, r#"{"reply":"hé"}"#.as_bytes());
        let rich = Reply::new("x").with_metadata("n", 1);
        let json = rich.to_json("x").expect("serializes");
        assert_eq!(json, r#"{"reply":"x","metadata":{"n":1}}"#.as_bytes());
    }

    #[test]
    fn long_error_messages_are_cut_at_a_char_boundary() {
        let body = error_json(&"é".repeat(400));
        let parsed: Value = serde_json::from_slice(&body).expect("valid JSON");
        let text = parsed["error"].as_str().expect("string");
        assert!(text.ends_with("...") && text.len() <= MAX_ERROR_MESSAGE + 3);
    }
}
