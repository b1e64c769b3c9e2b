//! Reply bytes out: the one place a request's outcome becomes an HTTP response.

use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use hyper::body::{Body, Bytes, Frame, SizeHint};
use hyper::header::{ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Response, StatusCode};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{BoxError, RequestError};
use crate::guard::{Outcome, RequestGuard};
use crate::sse::{self, SseFrames};

/// The assistant's answer: its text, whole or as a stream of chunks, and
/// metadata for the platform.
///
/// A streamed reply is the same type as a whole one, so an assistant does
/// not care how the server answers: in JSON the chunks are joined into one
/// `{"reply": ...}`, in SSE a whole text is sent as one `delta`. Metadata is
/// sent as `"metadata"` in JSON, and in SSE inside the `done` event.
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
pub struct Reply {
    content: Content,
    metadata: Map<String, Value>,
}

enum Content {
    Text(String),
    Stream(Chunks),
}

/// A reply's chunks, as the server polls them.
pub(crate) type Chunks = Pin<Box<dyn Stream<Item = Result<String, BoxError>> + Send>>;

impl Reply {
    /// A reply with this text and no metadata.
    pub fn new(text: impl Into<String>) -> Self {
        Reply {
            content: Content::Text(text.into()),
            metadata: Map::new(),
        }
    }

    /// A reply streamed as chunks of text, e.g. an LLM's tokens as they come.
    ///
    /// In SSE each chunk is sent as one `delta` event as soon as it arrives,
    /// the first within [`Config::reply_deadline`](crate::Config::reply_deadline)
    /// and each later one within
    /// [`Config::stream_chunk_timeout`](crate::Config::stream_chunk_timeout).
    /// An `Err` chunk ends the stream with an `error` event (generic text; the
    /// detail is logged). Dropping the stream cancels it: that happens when the
    /// client hangs up or a deadline passes.
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use partner_webhook::Reply;
    ///
    /// let words = ["Hello", ", ", "world"].map(|word| Ok::<_, Infallible>(word));
    /// let reply = Reply::stream(futures_util::stream::iter(words));
    /// assert!(reply.text().is_none());
    /// ```
    pub fn stream<S, T, E>(chunks: S) -> Self
    where
        S: Stream<Item = Result<T, E>> + Send + 'static,
        T: Into<String>,
        E: Into<BoxError>,
    {
        Reply {
            content: Content::Stream(Box::pin(IntoChunks(Box::pin(chunks)))),
            metadata: Map::new(),
        }
    }

    /// Adds one metadata entry.
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The whole text, for a reply made with [`Reply::new`]; `None` for a
    /// stream.
    pub fn text(&self) -> Option<&str> {
        match &self.content {
            Content::Text(text) => Some(text),
            Content::Stream(_) => None,
        }
    }

    /// The same reply with its chunks joined into one text (a panic while
    /// polling them is an error, like one in the assistant).
    pub(crate) async fn joined(self) -> Result<Reply, BoxError> {
        let chunks = match self.content {
            Content::Text(_) => return Ok(self),
            Content::Stream(chunks) => chunks,
        };
        let mut chunks = sse::catch_panics(chunks);
        let mut text = String::new();
        while let Some(chunk) = std::future::poll_fn(|cx| chunks.as_mut().poll_next(cx)).await {
            text.push_str(&chunk?);
        }
        Ok(Reply {
            content: Content::Text(text),
            metadata: self.metadata,
        })
    }

    /// The chunks to stream (a whole text is one chunk) and the metadata.
    pub(crate) fn into_chunks(self) -> (Chunks, Map<String, Value>) {
        let chunks = match self.content {
            Content::Text(text) => Box::pin(IntoChunks(Box::pin(OneChunk(Some(text))))),
            Content::Stream(chunks) => chunks,
        };
        (chunks, self.metadata)
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

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Reply");
        match &self.content {
            Content::Text(text) => debug.field("text", text),
            Content::Stream(_) => debug.field("stream", &".."),
        };
        debug.field("metadata", &self.metadata).finish()
    }
}

/// Maps a user's stream of `Result<impl Into<String>, impl Into<BoxError>>`
/// onto [`Chunks`].
struct IntoChunks<S>(Pin<Box<S>>);

impl<S, T, E> Stream for IntoChunks<S>
where
    S: Stream<Item = Result<T, E>>,
    T: Into<String>,
    E: Into<BoxError>,
{
    type Item = Result<String, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0
            .as_mut()
            .poll_next(cx)
            .map(|chunk| chunk.map(|chunk| chunk.map(Into::into).map_err(Into::into)))
    }
}

/// A whole text as a stream of one chunk.
struct OneChunk(Option<String>);

impl Stream for OneChunk {
    type Item = Result<String, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.0.take().map(Ok))
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
/// Opaque: one JSON buffer, or a stream of SSE frames, behind the same
/// [`Webhook`](crate::Webhook) service response type. It carries the
/// request's bookkeeping (its reply slot, its log line), which ends when the
/// body is dropped: after the last byte, or when the client hangs up.
#[derive(Debug)]
pub struct ResponseBody {
    kind: BodyKind,
    guard: RequestGuard,
}

#[derive(Debug)]
enum BodyKind {
    Full(Option<Bytes>),
    Sse(Box<SseFrames>),
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let body = &mut *self;
        match &mut body.kind {
            BodyKind::Full(bytes) => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
            BodyKind::Sse(frames) => {
                let polled = {
                    // Whatever the stream logs belongs to this request.
                    let _in_span = body.guard.span().enter();
                    frames.poll_next_frame(cx, body.guard.meters())
                };
                match polled {
                    Poll::Ready(Some((frame, ended))) => {
                        if let Some(outcome) = ended {
                            body.guard.set_outcome(outcome);
                        }
                        Poll::Ready(Some(Ok(Frame::data(frame))))
                    }
                    Poll::Ready(None) => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Full(bytes) => bytes.is_none(),
            BodyKind::Sse(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |bytes| bytes.len() as u64))
            }
            BodyKind::Sse(_) => SizeHint::default(),
        }
    }
}

/// What a request that did not fail produced.
pub(crate) enum Answer {
    /// A whole reply, sent as JSON.
    Reply(Reply),
    /// The configured fallback as JSON, sent because the assistant missed the deadline.
    Fallback(Reply),
    /// A reply streamed as SSE (possibly the fallback).
    Sse(Box<SseFrames>),
    /// A probe's answer: `{"status": ...}`.
    Healthy(&'static str),
    /// An event's answer: `{"status": ...}`, `received` or `duplicate`.
    Acknowledged(&'static str),
}

/// The platform shows the first 200 characters of an error body to the end
/// user; longer messages only echo more of the client's own input back.
const MAX_ERROR_MESSAGE: usize = 300;

/// Makes the response for a request's outcome, and hands the request's guard
/// to its body.
pub(crate) fn build(
    outcome: Result<Answer, RequestError>,
    guard: RequestGuard,
) -> Response<ResponseBody> {
    let (status, body, logged) = match outcome {
        Ok(Answer::Sse(frames)) => return stream(frames, guard),
        Ok(Answer::Reply(reply)) => reply_json(&reply, Outcome::Replied),
        Ok(Answer::Fallback(reply)) => reply_json(&reply, Outcome::Fallback),
        Ok(Answer::Healthy(status)) => (StatusCode::OK, status_json(status), Outcome::Healthy),
        Ok(Answer::Acknowledged(status)) => (
            StatusCode::OK,
            status_json(status),
            Outcome::Acknowledged(status),
        ),
        Err(error) => return refusal(&error, guard),
    };
    full(status, body, logged, guard)
}

fn full(
    status: StatusCode,
    body: Vec<u8>,
    logged: Outcome,
    mut guard: RequestGuard,
) -> Response<ResponseBody> {
    guard.set_outcome(logged);
    let mut response = Response::new(ResponseBody {
        kind: BodyKind::Full(Some(Bytes::from(body))),
        guard,
    });
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn refusal(error: &RequestError, guard: RequestGuard) -> Response<ResponseBody> {
    let body = error_json(&error.to_string());
    let mut response = full(error.status(), body, Outcome::refused(error), guard);
    let headers = response.headers_mut();
    match error {
        RequestError::MethodNotAllowed { allow, .. } => {
            headers.insert(ALLOW, HeaderValue::from_static(allow));
        }
        RequestError::Overloaded { .. } => {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        // The rest of the body may still be on its way; closing is the only
        // way not to read it. A refused signature is judged before the body
        // is read, and a client without the secret has no use for the
        // connection anyway.
        RequestError::BodyTimeout { .. }
        | RequestError::PayloadTooLarge { .. }
        | RequestError::Unauthorized(_) => {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        _ => {}
    }
    response
}

fn stream(frames: Box<SseFrames>, mut guard: RequestGuard) -> Response<ResponseBody> {
    // Logged by the body when the stream ends, or as a hang-up.
    guard.set_outcome(Outcome::Streaming);
    let mut response = Response::new(ResponseBody {
        kind: BodyKind::Sse(frames),
        guard,
    });
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells nginx not to buffer the frames.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// `{"status":"..."}` for one of this crate's fixed words, which need no
/// escaping: no `Value` built for every probe and event.
fn status_json(status: &'static str) -> Vec<u8> {
    debug_assert!(status.bytes().all(|byte| byte.is_ascii_lowercase()));
    format!(r#"{{"status":"{status}"}}"#).into_bytes()
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
                label: "reply_unencodable",
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
