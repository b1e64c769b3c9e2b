//! Reply bytes out, streamed: the `text/event-stream` body the platform's Chat
//! screen reads. Each chunk of the assistant's reply becomes one `delta`
//! event, sent as one body frame as soon as it exists; the stream ends with
//! `done`, after an `error` event if the assistant failed or fell silent.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use hyper::body::Bytes;
use serde_json::{Map, Value, json};
use tokio::time::{Instant, Sleep};

use crate::error::BoxError;
use crate::guard::Outcome;
use crate::response::{Chunks, Reply};
use crate::signature::escape_non_ascii;

/// What the end user reads when the stream fails; the detail goes to the log.
const FAILED: &str = "the assistant failed to reply";
const TOO_SLOW: &str = "the assistant took too long to reply";

/// One event: `event: <name>`, one `data:` line of ASCII-only JSON, a blank
/// line. ASCII only because the platform decodes every network chunk on its
/// own, so a character split across two chunks would turn into U+FFFD.
pub(crate) fn frame(event: &str, data: &Value) -> Bytes {
    // serde_json escapes quotes, backslashes and control characters (so a
    // newline in the text cannot end the data line); the rest is made ASCII.
    let json = data.to_string();
    Bytes::from(format!(
        "event: {event}\ndata: {}\n\n",
        escape_non_ascii(&json)
    ))
}

/// The frames of one streamed reply, with the deadlines the platform's
/// per-read timeout imposes: the first chunk by the reply deadline, each
/// later one within the chunk timeout.
pub(crate) struct SseFrames {
    chunks: Option<Chunks>,
    /// Sent with `done`, when the reply has any.
    metadata: Map<String, Value>,
    /// The stream is the configured fallback, sent after a missed deadline.
    fallback: bool,
    /// Why the stream ended with an `error` event, for the log line.
    failure: Option<(&'static str, String)>,
    deadline: Pin<Box<Sleep>>,
    chunk_timeout: Duration,
    /// Frames decided but not sent yet (the end of the stream is two frames).
    queued: Vec<Bytes>,
    finished: bool,
}

impl SseFrames {
    /// Streams `reply`; its first chunk must arrive by `first_by`.
    pub(crate) fn new(
        reply: Reply,
        first_by: Instant,
        chunk_timeout: Duration,
        fallback: bool,
    ) -> Self {
        let (chunks, metadata) = reply.into_chunks();
        SseFrames {
            chunks: Some(catch_panics(chunks)),
            metadata,
            fallback,
            failure: None,
            deadline: Box::pin(tokio::time::sleep_until(first_by)),
            chunk_timeout,
            queued: Vec::new(),
            finished: false,
        }
    }

    /// The next frame, and the request's outcome once the stream has ended.
    pub(crate) fn poll_next_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<(Bytes, Option<Outcome>)>> {
        loop {
            if !self.queued.is_empty() {
                let frame = self.queued.remove(0);
                let outcome = (self.queued.is_empty() && self.finished).then(|| self.outcome());
                return Poll::Ready(Some((frame, outcome)));
            }
            let Some(chunks) = self.chunks.as_mut() else {
                return Poll::Ready(None);
            };
            match chunks.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(text))) => {
                    if text.is_empty() {
                        continue;
                    }
                    let next_by = Instant::now() + self.chunk_timeout;
                    self.deadline.as_mut().reset(next_by);
                    return Poll::Ready(Some((frame("delta", &json!({ "text": text })), None)));
                }
                Poll::Ready(Some(Err(failure))) => {
                    self.end_with_error(FAILED, failure.to_string());
                }
                Poll::Ready(None) => {
                    let mut done = json!({ "status": "completed" });
                    if !self.metadata.is_empty() {
                        done["metadata"] = Value::Object(std::mem::take(&mut self.metadata));
                    }
                    self.end(done);
                }
                Poll::Pending => match self.deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => self.end_with_error(
                        TOO_SLOW,
                        "no chunk within the reply deadline or the chunk timeout".to_owned(),
                    ),
                    Poll::Pending => return Poll::Pending,
                },
            }
        }
    }

    fn end(&mut self, done: Value) {
        // Dropping the stream cancels whatever the assistant was awaiting.
        self.chunks = None;
        self.finished = true;
        self.queued.push(frame("done", &done));
    }

    fn end_with_error(&mut self, message: &'static str, detail: String) {
        self.failure = Some((message, detail));
        self.queued
            .push(frame("error", &json!({ "message": message })));
        self.end(json!({ "status": "error" }));
    }

    fn outcome(&mut self) -> Outcome {
        match self.failure.take() {
            Some((reason, detail)) => Outcome::StreamFailed { reason, detail },
            None if self.fallback => Outcome::Fallback,
            None => Outcome::Replied,
        }
    }
}

impl std::fmt::Debug for SseFrames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseFrames")
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

/// Polls a chunk stream with a panic turned into an `Err` chunk and the end
/// of the stream, as [`assistant::call`](crate::assistant) does for the call.
pub(crate) fn catch_panics(chunks: Chunks) -> Chunks {
    Box::pin(CatchPanics {
        chunks: Some(chunks),
    })
}

struct CatchPanics {
    chunks: Option<Chunks>,
}

impl Stream for CatchPanics {
    type Item = Result<String, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(chunks) = self.chunks.as_mut() else {
            return Poll::Ready(None);
        };
        // The stream is dropped right after a panic and never polled again.
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            chunks.as_mut().poll_next(cx)
        }));
        match polled {
            Ok(poll) => poll,
            Err(panic) => {
                self.chunks = None;
                let message = crate::assistant::panic_message(panic);
                Poll::Ready(Some(Err(message.into())))
            }
        }
    }
}
