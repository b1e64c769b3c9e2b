//! Reply bytes out, streamed: the `text/event-stream` body the platform's Chat
//! screen reads. Each chunk of the assistant's reply becomes one `delta`
//! event, sent as one body frame as soon as it exists; the stream ends with
//! `done`, after an `error` event if the assistant failed or fell silent.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use hyper::body::Bytes;
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::time::{Instant, Sleep};

use tracing::warn;

use crate::error::BoxError;
use crate::guard::Outcome;
use crate::measure::{self, Meters};
use crate::response::{Chunks, Reply};
use crate::signature::escape_non_ascii_into;
use crate::store::{StoreTarget, Stored, Storing};

/// What the end user reads when the stream fails; the detail goes to the log.
const FAILED: &str = "the assistant failed to reply";
const TOO_SLOW: &str = "the assistant took too long to reply";

/// Most text one `delta` carries, in bytes of its escaped JSON. The browser
/// forgets an event's name when the event is split across two network reads,
/// so events are kept small enough to travel in one TCP segment (1460 bytes
/// on most links), each in its own write.
const MAX_DELTA_JSON: usize = 1024;

/// One chunk of text as `delta` frames, cut at character boundaries so that
/// each frame's escaped text stays under [`MAX_DELTA_JSON`].
fn delta_frames(text: &str) -> Vec<Bytes> {
    let mut frames = Vec::new();
    let (mut start, mut escaped_len) = (0, 0);
    for (at, ch) in text.char_indices() {
        let cost = match ch {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            ch if u32::from(ch) < 0x20 => 6,
            ch if u32::from(ch) < 0x7f => 1,
            ch => 6 * ch.len_utf16(),
        };
        if escaped_len + cost > MAX_DELTA_JSON && at > start {
            frames.push(frame(
                "delta",
                &Delta {
                    text: &text[start..at],
                },
            ));
            (start, escaped_len) = (at, 0);
        }
        escaped_len += cost;
    }
    frames.push(frame(
        "delta",
        &Delta {
            text: &text[start..],
        },
    ));
    frames
}

/// One event: `event: <name>`, one `data:` line of ASCII-only JSON, a blank
/// line. ASCII only because the platform decodes every network chunk on its
/// own, so a character split across two chunks would turn into U+FFFD.
pub(crate) fn frame(event: &str, data: &impl Serialize) -> Bytes {
    // serde_json escapes quotes, backslashes and control characters (so a
    // newline in the text cannot end the data line); the rest is made ASCII.
    // Objects of strings and numbers always serialize.
    let json = serde_json::to_string(data).unwrap_or_else(|_| "{}".to_owned());
    let mut out = Vec::with_capacity(event.len() + json.len() + json.len() / 4 + 16);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    escape_non_ascii_into(&json, &mut out);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// A `delta` event's data.
#[derive(Serialize)]
struct Delta<'a> {
    text: &'a str,
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
    /// Frames decided but not sent yet (a long chunk is several, the end of
    /// the stream two).
    queued: VecDeque<(&'static str, Bytes)>,
    finished: bool,
    /// Set after a frame is handed out: the next poll yields once, so hyper
    /// flushes every event in a write of its own.
    flush_first: bool,
    /// Where to store the reply once complete, and the text so far.
    store: Option<(StoreTarget, String)>,
    /// The store in progress, between the last chunk and `done`, and the
    /// thread it stores to: the request's span, which names it, is off by
    /// default, so a failure names it itself.
    storing: Option<(Storing, String)>,
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
            queued: VecDeque::new(),
            finished: false,
            flush_first: false,
            store: None,
            storing: None,
        }
    }

    /// Stores the whole reply through the Partner API before `done`.
    pub(crate) fn storing_to(mut self, target: StoreTarget) -> Self {
        self.store = Some((target, String::new()));
        self
    }

    /// The next frame, and the request's outcome once the stream has ended.
    pub(crate) fn poll_next_frame(
        &mut self,
        cx: &mut Context<'_>,
        meters: &Meters,
    ) -> Poll<Option<(Bytes, Option<Outcome>)>> {
        if std::mem::take(&mut self.flush_first) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        loop {
            if let Some((event, frame)) = self.queued.pop_front() {
                measure::sse_frame(meters, event);
                let outcome = (self.queued.is_empty() && self.finished).then(|| self.outcome());
                self.flush_first = true;
                return Poll::Ready(Some((frame, outcome)));
            }
            if let Some((storing, _)) = self.storing.as_mut() {
                match storing.as_mut().poll(cx) {
                    Poll::Ready(stored) => self.stored(stored),
                    Poll::Pending => match self.deadline.as_mut().poll(cx) {
                        Poll::Ready(()) => self.stored(Err("no answer in time".into())),
                        Poll::Pending => return Poll::Pending,
                    },
                }
                continue;
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
                    self.queued.extend(
                        delta_frames(&text)
                            .into_iter()
                            .map(|frame| ("delta", frame)),
                    );
                    if let Some((_, whole)) = self.store.as_mut() {
                        whole.push_str(&text);
                    }
                }
                Poll::Ready(Some(Err(failure))) => {
                    self.end_with_error(FAILED, failure.to_string());
                }
                Poll::Ready(None) => match self.store.take() {
                    // Within what is left of the chunk timeout: the platform
                    // is waiting for its next read.
                    Some((target, whole)) if !whole.is_empty() => {
                        self.chunks = None;
                        let thread_id = target.thread_id.clone();
                        self.storing = Some((target.store(whole), thread_id));
                    }
                    _ => self.completed(None),
                },
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

    /// Ends with `done`, naming the stored message when there is one, so the
    /// Chat screen fetches it and keeps showing the reply.
    fn completed(&mut self, stored: Option<Stored>) {
        let mut done = json!({ "status": "completed" });
        if let Some(stored) = stored {
            done["message_id"] = stored.id;
            done["seq"] = stored.seq;
        }
        if !self.metadata.is_empty() {
            done["metadata"] = Value::Object(std::mem::take(&mut self.metadata));
        }
        self.end(done);
    }

    /// The user saw the text either way; a failed store only costs the reply
    /// its place in the thread.
    fn stored(&mut self, stored: Result<Stored, BoxError>) {
        let thread_id = self.storing.take().map(|(_, thread_id)| thread_id);
        measure::stored(stored.is_ok());
        match stored {
            Ok(stored) => self.completed(Some(stored)),
            Err(error) => {
                warn!(
                    %error,
                    thread_id = thread_id.as_deref(),
                    "could not store the streamed reply through the Partner API"
                );
                self.completed(None);
            }
        }
    }

    fn end(&mut self, done: Value) {
        // Dropping the stream cancels whatever the assistant was awaiting.
        self.chunks = None;
        self.finished = true;
        self.queued.push_back(("done", frame("done", &done)));
    }

    fn end_with_error(&mut self, message: &'static str, detail: String) {
        self.failure = Some((message, detail));
        self.queued
            .push_back(("error", frame("error", &json!({ "message": message }))));
        self.end(json!({ "status": "error" }));
    }

    fn outcome(&mut self) -> Outcome {
        match self.failure.take() {
            Some((reason, detail)) => Outcome::StreamFailed {
                timed_out: reason == TOO_SLOW,
                reason,
                detail,
            },
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
                let message = format!(
                    "assistant panicked: {}",
                    crate::assistant::panic_message(panic)
                );
                Poll::Ready(Some(Err(message.into())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(frames: &[Bytes]) -> Vec<String> {
        frames
            .iter()
            .map(|frame| {
                let text = std::str::from_utf8(frame).expect("ASCII");
                let data = text
                    .strip_prefix("event: delta\ndata: ")
                    .and_then(|rest| rest.strip_suffix("\n\n"))
                    .expect("one delta event");
                let parsed: Value = serde_json::from_str(data).expect("JSON");
                parsed["text"].as_str().expect("text").to_owned()
            })
            .collect()
    }

    #[test]
    fn long_chunks_are_cut_into_small_frames_at_character_boundaries() {
        for unit in ["a", "é", "中", "👋", "\n", "\"", "\u{1}"] {
            let text = unit.repeat(3000);
            let frames = delta_frames(&text);
            assert!(frames.len() > 1, "{unit:?}");
            for frame in &frames {
                // The escaped text plus the event's own bytes.
                assert!(
                    frame.len() <= MAX_DELTA_JSON + 40,
                    "{unit:?}: {}",
                    frame.len()
                );
            }
            assert_eq!(texts(&frames).concat(), text, "{unit:?}");
        }
        assert_eq!(texts(&delta_frames("short")), ["short"]);
    }
}
