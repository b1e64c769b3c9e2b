//! The per-request guard: one owned value that holds what a request holds
//! (its reply slot, its body's share of the memory budget), carries its
//! names, `tracing` span and start time, and writes the request's one log
//! line when it is dropped. It moves into the response body, so a streamed
//! reply keeps its slot until its last frame, and a client that hangs up
//! mid-stream is still logged.
//!
//! The line names its request itself (method, path, ids). The `request` span,
//! which gives the same names to whatever is logged during the request (the
//! assistant's own lines included), is at `debug` under the target
//! [`REQUEST_SPAN_TARGET`]: off by default, since a span per request adds
//! two thirds to what the line costs (0.6 µs to 0.9, BENCHMARKS.md);
//! `RUST_LOG=info,partner_webhook::request=debug` turns it on.

use std::sync::{Arc, Mutex, OnceLock};

use hyper::header::{HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::{HeaderMap, Method, Uri};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::field::Empty;
use tracing::{Span, debug, debug_span, error, info, warn};

use crate::error::RequestError;
use crate::events::Event;
use crate::measure::{self, InFlight, Meters};
use crate::payload::MessageReceived;

/// How a request ended, for its log line.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// A streamed reply is still being sent; dropped in this state, the
    /// client hung up.
    Streaming,
    Healthy,
    Replied,
    /// Another platform's event, answered `{"status": ...}`: `received`
    /// (queued) or `duplicate`.
    Acknowledged(&'static str),
    /// The configured fallback, sent because the assistant missed the deadline.
    Fallback,
    /// A stream that ended with an `error` event after its `200`.
    StreamFailed {
        reason: &'static str,
        detail: String,
        /// The assistant fell silent, rather than failing.
        timed_out: bool,
    },
    Refused {
        status: u16,
        /// [`RequestError::reason`], for metrics.
        label: &'static str,
        reason: String,
        detail: String,
    },
}

impl Outcome {
    pub(crate) fn refused(error: &RequestError) -> Self {
        Outcome::Refused {
            status: error.status().as_u16(),
            label: error.reason(),
            reason: error.to_string(),
            detail: std::error::Error::source(error)
                .map(ToString::to_string)
                .unwrap_or_default(),
        }
    }
}

/// The target of the `request` span (see the module docs).
pub(crate) const REQUEST_SPAN_TARGET: &str = "partner_webhook::request";

/// See the module docs.
#[derive(Debug)]
pub(crate) struct RequestGuard {
    /// Disabled unless [`REQUEST_SPAN_TARGET`] is enabled at `debug`.
    span: Span,
    method: Method,
    /// For its path only: a query string may carry tokens.
    uri: Uri,
    /// `X-App-Id` and `X-Thread-Id`, until the signed body's ids replace them.
    claimed_ids: Option<[Option<HeaderValue>; 2]>,
    signed_ids: Option<SignedIds>,
    /// Another platform's event: its id and kind.
    event: Option<[Option<String>; 2]>,
    started: Instant,
    outcome: Outcome,
    refusals: Arc<RefusalLog>,
    slot: Option<OwnedSemaphorePermit>,
    memory: Option<OwnedSemaphorePermit>,
    _in_flight: InFlight,
    meters: Arc<Meters>,
    label_metrics_by_app: bool,
}

/// The ids of a message's signed body, in one string: the line needs them
/// after the message has moved into the assistant, and three copies cost
/// three allocations a request where one does.
#[derive(Debug)]
struct SignedIds {
    /// App id, thread id and message id, one after the other.
    text: String,
    app_id_end: usize,
    thread_id_end: usize,
    has_message_id: bool,
}

impl SignedIds {
    fn of(message: &MessageReceived) -> Self {
        let (app_id, thread_id) = (&message.app.id, &message.thread.id);
        let message_id = message.message.id.as_deref();
        let mut text =
            String::with_capacity(app_id.len() + thread_id.len() + message_id.map_or(0, str::len));
        text.push_str(app_id);
        text.push_str(thread_id);
        text.push_str(message_id.unwrap_or_default());
        SignedIds {
            text,
            app_id_end: app_id.len(),
            thread_id_end: app_id.len() + thread_id.len(),
            has_message_id: message_id.is_some(),
        }
    }

    fn app_id(&self) -> &str {
        &self.text[..self.app_id_end]
    }

    fn thread_id(&self) -> &str {
        &self.text[self.app_id_end..self.thread_id_end]
    }

    fn message_id(&self) -> Option<&str> {
        self.has_message_id
            .then(|| &self.text[self.thread_id_end..])
    }
}

/// What the line says of its request.
struct Names<'a> {
    method: &'a str,
    path: &'a str,
    app_id: Option<&'a str>,
    thread_id: Option<&'a str>,
    message_id: Option<&'a str>,
    event_id: Option<&'a str>,
    event_kind: Option<&'a str>,
}

impl RequestGuard {
    /// Opens the request's span. Until the body is parsed, only the unsigned
    /// `X-App-Id` / `X-Thread-Id` headers name the request; see
    /// [`take_ids_from_body`](RequestGuard::take_ids_from_body).
    pub(crate) fn new(
        parts: &Parts,
        refusals: Arc<RefusalLog>,
        meters: Arc<Meters>,
        label_metrics_by_app: bool,
    ) -> Self {
        // The ids are recorded once (a field recorded twice prints twice):
        // from the body once it is parsed, else from the headers at the end.
        let span = debug_span!(
            target: REQUEST_SPAN_TARGET,
            "request",
            method = %parts.method,
            // The path only: a query string may carry tokens.
            path = parts.uri.path(),
            app_id = Empty,
            thread_id = Empty,
            message_id = Empty,
            event_id = Empty,
            event_kind = Empty,
        );
        RequestGuard {
            span,
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            // Shared, not copied: most requests replace them with the body's.
            claimed_ids: Some([
                parts.headers.get(X_APP_ID).cloned(),
                parts.headers.get(X_THREAD_ID).cloned(),
            ]),
            signed_ids: None,
            event: None,
            started: Instant::now(),
            outcome: Outcome::Streaming,
            refusals,
            slot: None,
            memory: None,
            _in_flight: InFlight::requests(&meters),
            meters,
            label_metrics_by_app,
        }
    }

    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// The webhook's metric handles, for what the response records.
    pub(crate) fn meters(&self) -> &Meters {
        &self.meters
    }

    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// Keeps the request's reply slot until the response ends.
    pub(crate) fn hold_slot(&mut self, slot: OwnedSemaphorePermit) {
        self.slot = Some(slot);
    }

    /// Keeps the body's share of the memory budget until the response ends:
    /// the assistant, and a stream it returns, may still hold the body.
    pub(crate) fn hold_memory(&mut self, memory: OwnedSemaphorePermit) {
        self.memory = Some(memory);
    }

    /// Hands the body's share of the memory budget to whatever keeps the body
    /// past the response (a queued event).
    pub(crate) fn take_memory(&mut self) -> Option<OwnedSemaphorePermit> {
        self.memory.take()
    }

    /// Another platform's event: this platform's id headers mean nothing here.
    pub(crate) fn for_event_route(&mut self) {
        self.claimed_ids = None;
    }

    /// Names the request by its event.
    pub(crate) fn name_event(&mut self, event: &Event) {
        tracing::record_all!(
            self.span,
            event_id = event.id.as_deref(),
            event_kind = event.kind.as_deref(),
        );
        self.event = Some([event.id.clone(), event.kind.clone()]);
    }

    pub(crate) fn set_outcome(&mut self, outcome: Outcome) {
        self.outcome = outcome;
    }

    /// Names the request by its signed body from now on. The headers are not
    /// signed, so anyone holding one signed body could pair it with ids of
    /// their choosing; a disagreement is logged.
    pub(crate) fn take_ids_from_body(&mut self, headers: &HeaderMap, message: &MessageReceived) {
        self.claimed_ids = None;
        let disagrees = |name: HeaderName, signed: &str| {
            headers
                .get(name)
                .is_some_and(|claimed| claimed.as_bytes() != signed.as_bytes())
        };
        if disagrees(X_APP_ID, &message.app.id) || disagrees(X_THREAD_ID, &message.thread.id) {
            self.span.in_scope(|| {
                warn!(
                    header_app_id = header_text(headers, X_APP_ID).as_deref().unwrap_or("-"),
                    header_thread_id = header_text(headers, X_THREAD_ID).as_deref().unwrap_or("-"),
                    signed_app_id = message.app.id.as_str(),
                    signed_thread_id = message.thread.id.as_str(),
                    message_id = message.message.id.as_deref(),
                    "X-App-Id / X-Thread-Id disagree with the signed body; using the body's ids"
                );
            });
        }
        // One call, not three: each record is a round through every layer.
        tracing::record_all!(
            self.span,
            app_id = message.app.id.as_str(),
            thread_id = message.thread.id.as_str(),
            message_id = message.message.id.as_deref(),
        );
        self.signed_ids = Some(SignedIds::of(message));
    }

    /// The request's names for its line. Written even while the span carries
    /// them too: whether a layer shows the span cannot be told from here (one
    /// layer may enable it and the one writing lines filter it out), and a
    /// line without its ids would be worse than one that repeats them.
    fn names(&self) -> Names<'_> {
        let claimed = |at: usize| {
            self.claimed_ids
                .as_ref()
                .map(|ids| header_or_dash(&ids[at]))
        };
        let signed = self.signed_ids.as_ref();
        let event = self.event.as_ref();
        Names {
            method: self.method.as_str(),
            path: self.uri.path(),
            app_id: signed.map(SignedIds::app_id).or_else(|| claimed(0)),
            thread_id: signed.map(SignedIds::thread_id).or_else(|| claimed(1)),
            message_id: signed.and_then(SignedIds::message_id),
            event_id: event.and_then(|[id, _]| id.as_deref()),
            event_kind: event.and_then(|[_, kind]| kind.as_deref()),
        }
    }
}

fn header_or_dash(value: &Option<HeaderValue>) -> &str {
    value
        .as_ref()
        .and_then(|value| value.to_str().ok())
        .unwrap_or("-")
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if let Some([app_id, thread_id]) = &self.claimed_ids {
            tracing::record_all!(
                self.span,
                app_id = header_or_dash(app_id),
                thread_id = header_or_dash(thread_id),
            );
        }
        let _in_span = self.span.enter();
        let elapsed = self.started.elapsed();
        self.record_metrics(elapsed);
        let latency_ms = Millis(elapsed);
        let names = self.names();
        // The request's names first, then what the arm adds.
        macro_rules! line {
            ($level:ident, $($rest:tt)+) => {
                $level!(
                    method = names.method,
                    path = names.path,
                    app_id = names.app_id,
                    thread_id = names.thread_id,
                    message_id = names.message_id,
                    event_id = names.event_id,
                    event_kind = names.event_kind,
                    $($rest)+
                )
            };
        }
        match &self.outcome {
            Outcome::Healthy => line!(debug, status = 200, %latency_ms, "health check"),
            Outcome::Replied => line!(info, status = 200, %latency_ms, "replied"),
            Outcome::Acknowledged("duplicate") => line!(info,
                status = 200,
                %latency_ms,
                "duplicate event acknowledged; its handler is not called again"
            ),
            Outcome::Acknowledged(_) => line!(info, status = 200, %latency_ms, "event queued"),
            Outcome::Fallback => line!(warn,
                status = 200,
                %latency_ms,
                "assistant missed the reply deadline; sent the fallback reply"
            ),
            Outcome::Streaming => line!(warn,
                status = 200,
                %latency_ms,
                "the client hung up before the streamed reply ended"
            ),
            Outcome::StreamFailed { reason, detail, .. } => line!(error,
                status = 200,
                %latency_ms,
                reason,
                detail,
                "the streamed reply ended with an error event"
            ),
            Outcome::Refused {
                status,
                reason,
                detail,
                ..
            } => {
                let server_error = *status >= 500;
                let Some(count) = self.refusals.admit(server_error) else {
                    // Past the rate, a line only for those who ask for debug logs.
                    line!(debug, status, %latency_ms, reason, "request refused");
                    return;
                };
                let (refused_total, suppressed) = (count.total, count.suppressed);
                if server_error {
                    line!(error,
                        status, %latency_ms, reason, detail, refused_total, suppressed,
                        "request failed"
                    );
                } else {
                    line!(warn,
                        status, %latency_ms, reason, refused_total, suppressed,
                        "request rejected"
                    );
                }
            }
        }
    }
}

impl RequestGuard {
    fn record_metrics(&self, elapsed: std::time::Duration) {
        let (outcome, status) = match &self.outcome {
            Outcome::Streaming => {
                measure::stream_cut("client_hung_up");
                ("client_hung_up", 200)
            }
            Outcome::Healthy => ("probe", 200),
            Outcome::Replied => ("replied", 200),
            Outcome::Acknowledged("duplicate") => ("event_duplicate", 200),
            Outcome::Acknowledged(_) => ("event_received", 200),
            Outcome::Fallback => ("fallback", 200),
            Outcome::StreamFailed { timed_out, .. } => {
                measure::stream_cut(if *timed_out { "timeout" } else { "error" });
                ("stream_failed", 200)
            }
            Outcome::Refused { status, label, .. } => {
                measure::rejected(label);
                ("refused", *status)
            }
        };
        let seconds = elapsed.as_secs_f64();
        let app_id = self
            .signed_ids
            .as_ref()
            .filter(|_| self.label_metrics_by_app)
            .map(SignedIds::app_id);
        measure::request_finished(&self.meters, outcome, status, seconds, app_id);
    }
}

/// Milliseconds to three decimals, in integers: float formatting was a
/// tenth of what the line cost. Rounded half up, where `{:.3}` of the float
/// may round an exact half microsecond down.
pub(crate) struct Millis(pub(crate) std::time::Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let micros = u64::try_from((self.0.as_nanos() + 500) / 1000).unwrap_or(u64::MAX);
        write!(f, "{}.{:03}", micros / 1000, micros % 1000)
    }
}

fn header_text(headers: &HeaderMap, name: HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// The platform's unsigned id headers, named once: looking a header up by a
/// `&str` parses and validates the name on every request.
const X_APP_ID: HeaderName = HeaderName::from_static("x-app-id");
const X_THREAD_ID: HeaderName = HeaderName::from_static("x-thread-id");

/// How many refusal lines reach the log each second, per kind (client errors,
/// server errors): a flood of bad requests then costs the log a few lines a
/// second, while each line still carries the exact count.
const REFUSAL_LINES_PER_SECOND: u32 = 10;

/// Rate-limits refusal log lines without losing count of the refusals.
#[derive(Debug, Default)]
pub(crate) struct RefusalLog {
    client_errors: Mutex<RefusalCount>,
    server_errors: Mutex<RefusalCount>,
    epoch: OnceLock<Instant>,
}

#[derive(Debug, Default)]
struct RefusalCount {
    second: u64,
    logged_this_second: u32,
    suppressed: u64,
    total: u64,
}

/// What a logged refusal line reports.
struct Admitted {
    /// Refusals of this kind since start, this one included.
    total: u64,
    /// Refusals of this kind not logged since the previous logged one.
    suppressed: u64,
}

impl RefusalLog {
    /// Counts one refusal; `Some` when its line may be logged.
    fn admit(&self, server_error: bool) -> Option<Admitted> {
        let second = self.epoch.get_or_init(Instant::now).elapsed().as_secs();
        self.admit_at(server_error, second)
    }

    fn admit_at(&self, server_error: bool, second: u64) -> Option<Admitted> {
        let counts = if server_error {
            &self.server_errors
        } else {
            &self.client_errors
        };
        // A poisoned count is still a count.
        let mut counts = counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        counts.total += 1;
        if counts.second != second {
            counts.second = second;
            counts.logged_this_second = 0;
        }
        if counts.logged_this_second >= REFUSAL_LINES_PER_SECOND {
            counts.suppressed += 1;
            return None;
        }
        counts.logged_this_second += 1;
        Some(Admitted {
            total: counts.total,
            suppressed: std::mem::take(&mut counts.suppressed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_ids_read_back_as_they_were_sent() {
        let body = |message_id: &str| {
            format!(
                r#"{{"version":"1.0","event":"message_received","app":{{"id":"app-é","name":""}},"thread":{{"id":"","customer_id":null}},"message":{{{message_id}"content":"hi"}},"timestamp":"t"}}"#
            )
        };
        let with_id =
            MessageReceived::from_json(body(r#""id":"m-中","#).as_bytes()).expect("valid");
        let ids = SignedIds::of(&with_id);
        assert_eq!(
            (ids.app_id(), ids.thread_id(), ids.message_id()),
            ("app-é", "", Some("m-中"))
        );
        let without = MessageReceived::from_json(body("").as_bytes()).expect("valid");
        let ids = SignedIds::of(&without);
        assert_eq!(
            (ids.app_id(), ids.thread_id(), ids.message_id()),
            ("app-é", "", None)
        );
        let empty_id = MessageReceived::from_json(body(r#""id":"","#).as_bytes()).expect("valid");
        assert_eq!(SignedIds::of(&empty_id).message_id(), Some(""));
    }

    #[test]
    fn milliseconds_print_as_three_decimals() {
        let print = |nanos| Millis(std::time::Duration::from_nanos(nanos)).to_string();
        assert_eq!(print(0), "0.000");
        assert_eq!(print(123_456), "0.123");
        assert_eq!(print(123_500), "0.124");
        assert_eq!(print(7_500_000_000), "7500.000");
        assert_eq!(print(1_000), "0.001");
        assert_eq!(print(999_999), "1.000");
    }

    #[test]
    fn refusal_lines_are_limited_but_counted() {
        let log = RefusalLog::default();
        let admitted: Vec<_> = (0..25).filter_map(|_| log.admit_at(false, 7)).collect();
        assert_eq!(admitted.len(), 10);
        assert_eq!(admitted.last().map(|count| count.total), Some(10));
        // Server errors have their own allowance, so a flood of 401s cannot
        // hide them.
        assert!(log.admit_at(true, 7).is_some());
        // The next second's first line reports the 15 left out.
        let next = log.admit_at(false, 8).expect("a new second");
        assert_eq!((next.total, next.suppressed), (26, 15));
    }
}
