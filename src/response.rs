//! Reply bytes out: the one place a request's outcome becomes an HTTP response.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body_util::Full;
use hyper::body::{Body, Bytes, Frame, SizeHint};
use hyper::header::{ALLOW, CONNECTION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Response, StatusCode};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::RequestError;

/// The assistant's answer: `{"reply": text}` plus `"metadata"` when not empty.
///
/// ```
/// use partner_webhook::Reply;
///
/// let plain: Reply = "Hello!".into();
/// let rich = Reply::new("Your order ships tomorrow.")
///     .with_metadata("order", "A-1042")
///     .with_metadata("confidence", 0.93);
/// assert_eq!(rich.metadata["order"], "A-1042");
/// assert!(plain.metadata.is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Reply {
    /// The text shown to the end user.
    #[serde(rename = "reply")]
    pub text: String,
    /// Extra data for the platform, sent as `"metadata"` unless empty.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
}

impl Reply {
    /// A reply with this text and no metadata.
    pub fn new(text: impl Into<String>) -> Self {
        Reply {
            text: text.into(),
            metadata: Map::new(),
        }
    }

    /// Adds one metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
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
/// Opaque so that streamed replies can be added without changing the
/// [`Webhook`](crate::Webhook) service's response type.
#[derive(Debug)]
pub struct ResponseBody(Full<Bytes>);

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
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

pub(crate) fn build(outcome: &Result<Answer, RequestError>) -> Response<ResponseBody> {
    let (status, body) = match outcome {
        Ok(Answer::Reply(reply) | Answer::Fallback(reply)) => match serde_json::to_vec(reply) {
            Ok(json) => (StatusCode::OK, json),
            // Unreachable in practice (string keys, JSON values), but never panic here.
            Err(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                error_json("could not encode the reply"),
            ),
        },
        Ok(Answer::Healthy) => (StatusCode::OK, br#"{"status":"ok"}"#.to_vec()),
        Err(error) => (error.status(), error_json(&error.to_string())),
    };
    let mut response = Response::new(ResponseBody(Full::new(Bytes::from(body))));
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
        let plain = serde_json::to_string(&Reply::from("hé")).expect("serializes");
        assert_eq!(plain, r#"{"reply":"hé"}"#);
        let rich =
            serde_json::to_string(&Reply::new("x").with_metadata("n", 1)).expect("serializes");
        assert_eq!(rich, r#"{"reply":"x","metadata":{"n":1}}"#);
    }

    #[test]
    fn long_error_messages_are_cut_at_a_char_boundary() {
        let body = error_json(&"é".repeat(400));
        let parsed: Value = serde_json::from_slice(&body).expect("valid JSON");
        let text = parsed["error"].as_str().expect("string");
        assert!(text.ends_with("...") && text.len() <= MAX_ERROR_MESSAGE + 3);
    }
}
