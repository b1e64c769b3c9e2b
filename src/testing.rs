//! Test helpers (feature `testing`): build `message_received` payloads as the
//! platform does, sign them as its sender does, call a [`Webhook`] without a
//! socket, and fix the clock.
//!
//! ```
//! use partner_webhook::testing::{self, FixedClock, MessageBuilder};
//! use partner_webhook::{assistant_fn, Config, Secret, Webhook};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let secret = Secret::new("test-secret")?;
//! let clock = FixedClock::new(1_763_899_200);
//! let shout = assistant_fn(|message, _| async move {
//!     Ok::<_, std::convert::Infallible>(message.message.content.to_uppercase())
//! });
//! let webhook = Webhook::new(&Config::default().secret(secret.clone()), shout)?
//!     .with_clock(clock.clone());
//!
//! let message = MessageBuilder::new("héllo").history(4);
//! let request = testing::signed_request(&message.body(), Some(&secret), clock.now());
//! let answered = testing::call(&webhook, request).await;
//! assert_eq!(answered.status, 200);
//! assert_eq!(answered.reply.as_deref(), Some("HÉLLO"));
//!
//! // The same signed request again is a replay; past the window, it is stale.
//! clock.advance(301);
//! let again = testing::signed_request(&message.body(), Some(&secret), clock.now() - 301);
//! assert_eq!(testing::call(&webhook, again).await.status, 401);
//! # Ok(())
//! # }
//! ```

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use serde_json::{Map, Value, json};

use crate::config::Secret;
use crate::payload::MessageReceived;
use crate::signature::{escape_non_ascii, sign};
use crate::webhook::Webhook;

/// The thread id of the dashboard's "Test webhook" request.
pub const TEST_THREAD_ID: &str = "00000000-0000-0000-0000-000000000000";
/// The message id of the dashboard's "Test webhook" request.
pub const TEST_MESSAGE_ID: &str = "00000000-0000-0000-0000-000000000001";
/// The greeting a new thread starts with.
pub const GREETING: &str = "Hello there! How can I help you today?";

/// A `message_received` payload as the platform builds it: fresh UUIDs, a
/// `seq`, a `history_tail` oldest first ending with the current message, and
/// a `+00:00` timestamp with microseconds.
#[derive(Debug, Clone)]
#[must_use]
pub struct MessageBuilder {
    content: String,
    history: usize,
    customer_id: Option<String>,
    app_id: String,
    app_name: String,
    thread_id: String,
    message_id: String,
    test_button: bool,
}

impl MessageBuilder {
    /// A user message with this content, in a new thread (greeting plus the
    /// message as history).
    pub fn new(content: impl Into<String>) -> Self {
        MessageBuilder {
            content: content.into(),
            history: 2,
            customer_id: None,
            app_id: uuid_v4(),
            app_name: "My App".to_owned(),
            thread_id: uuid_v4(),
            message_id: uuid_v4(),
            test_button: false,
        }
    }

    /// The dashboard's exact "Test webhook" payload: zero thread id, message
    /// id `...0001`, `seq` 1, customer `test-customer`, empty history.
    pub fn test_button() -> Self {
        MessageBuilder {
            content: "This is a test message from the dashboard.".to_owned(),
            history: 0,
            customer_id: Some("test-customer".to_owned()),
            thread_id: TEST_THREAD_ID.to_owned(),
            message_id: TEST_MESSAGE_ID.to_owned(),
            test_button: true,
            ..MessageBuilder::new("")
        }
    }

    /// A `history_tail` of `entries` (at most 10, as the platform sends):
    /// alternating assistant and user turns, oldest first, the last being the
    /// current message. `seq` follows from it.
    pub fn history(mut self, entries: usize) -> Self {
        self.history = entries.min(10);
        self
    }

    /// The thread's `customer_id`.
    pub fn customer(mut self, id: impl Into<String>) -> Self {
        self.customer_id = Some(id.into());
        self
    }

    /// The App id (a random UUID by default).
    pub fn app_id(mut self, id: impl Into<String>) -> Self {
        self.app_id = id.into();
        self
    }

    /// The thread id (a random UUID by default).
    pub fn thread_id(mut self, id: impl Into<String>) -> Self {
        self.thread_id = id.into();
        self
    }

    /// The payload as JSON, keys in the platform's order.
    pub fn to_json(&self) -> Value {
        let mut history = Vec::new();
        for turn in 0..self.history.saturating_sub(1) {
            // Counted back from the current message, which is a user turn.
            let from_end = self.history - 1 - turn;
            let entry = if from_end % 2 == 1 {
                let text = if turn == 0 {
                    GREETING.to_owned()
                } else {
                    format!("Answer {turn}")
                };
                let source = if turn == 0 { "system" } else { "webhook" };
                json!({"role": "assistant", "content": text, "content_json": {"source": source}})
            } else {
                json!({"role": "user", "content": format!("Question {turn}"), "content_json": {}})
            };
            history.push(entry);
        }
        if self.history > 0 {
            history.push(json!({"role": "user", "content": self.content, "content_json": {}}));
        }
        let seq = if self.test_button {
            1
        } else {
            self.history.max(1)
        };
        let mut payload = Map::new();
        payload.insert("version".into(), json!("1.0"));
        payload.insert("event".into(), json!("message_received"));
        payload.insert(
            "app".into(),
            json!({"id": self.app_id, "name": self.app_name}),
        );
        payload.insert(
            "thread".into(),
            json!({"id": self.thread_id, "customer_id": self.customer_id}),
        );
        payload.insert(
            "message".into(),
            json!({"id": self.message_id, "seq": seq, "role": "user",
                   "content": self.content, "content_json": {}}),
        );
        payload.insert("history_tail".into(), Value::Array(history));
        payload.insert("timestamp".into(), json!(iso_timestamp_now()));
        Value::Object(payload)
    }

    /// The body as the platform sends it: compact JSON, raw UTF-8.
    pub fn body(&self) -> Vec<u8> {
        self.to_json().to_string().into_bytes()
    }

    /// The payload parsed, as an assistant receives it.
    pub fn build(&self) -> MessageReceived {
        MessageReceived::from_json(&self.body()).expect("the builder makes valid payloads")
    }
}

/// `X-Signature` as the platform's sender computes it: over the body with
/// every character at or above U+007F escaped, although it sends the body
/// raw.
pub fn platform_signature(secret: &Secret, timestamp: u64, body: &[u8]) -> String {
    match std::str::from_utf8(body) {
        Ok(text) => sign(secret, timestamp, escape_non_ascii(text).as_bytes()),
        Err(_) => sign(secret, timestamp, body),
    }
}

/// A request with the sender's headers, in its order, signed as it signs
/// when `secret` is given (unsigned otherwise, as for an App without one).
pub fn signed_request(
    body: &[u8],
    secret: Option<&Secret>,
    timestamp: u64,
) -> Request<Full<Bytes>> {
    let ids: Value = serde_json::from_slice(body).unwrap_or_default();
    let text = |pointer: &str| {
        ids.pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let mut request = Request::post("/webhook")
        .header("accept", "*/*")
        .header("accept-encoding", "gzip, deflate")
        .header("connection", "keep-alive")
        .header("user-agent", "python-httpx/0.28.1")
        .header("content-type", "application/json")
        .header("x-app-id", text("/app/id"))
        .header("x-thread-id", text("/thread/id"));
    if let Some(secret) = secret {
        request = request
            .header("x-timestamp", timestamp.to_string())
            .header("x-signature", platform_signature(secret, timestamp, body));
    }
    request
        .body(Full::new(Bytes::copy_from_slice(body)))
        .expect("static header names and valid values")
}

/// What a [`Webhook`] answered, read whole.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Answered {
    /// The status.
    pub status: StatusCode,
    /// The `Content-Type`.
    pub content_type: String,
    /// `reply` of a JSON answer, or the joined `delta` texts of a stream.
    pub reply: Option<String>,
    /// `metadata` of a JSON answer, or of a stream's `done`.
    pub metadata: Map<String, Value>,
    /// `error` of a JSON error answer.
    pub error: Option<String>,
    /// A stream's events, `(name, data)`, in order.
    pub frames: Vec<(String, Value)>,
}

/// Sends `request` to `webhook` without a socket and reads the whole answer.
pub async fn call(webhook: &Webhook, request: Request<Full<Bytes>>) -> Answered {
    let response = webhook.handle(request).await;
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|body| body.to_bytes())
        .unwrap_or_default();
    let mut answered = Answered {
        status,
        content_type,
        reply: None,
        metadata: Map::new(),
        error: None,
        frames: Vec::new(),
    };
    if answered.content_type == "text/event-stream" {
        answered.frames = parse_events(&String::from_utf8_lossy(&body));
        let mut text = String::new();
        for (event, data) in &answered.frames {
            match event.as_str() {
                "delta" => text.push_str(data["text"].as_str().unwrap_or_default()),
                "done" => {
                    if let Some(metadata) = data["metadata"].as_object() {
                        answered.metadata = metadata.clone();
                    }
                }
                _ => {}
            }
        }
        answered.reply = Some(text);
    } else if let Ok(Value::Object(mut json)) = serde_json::from_slice(&body) {
        answered.reply = json
            .remove("reply")
            .and_then(|reply| reply.as_str().map(str::to_owned));
        answered.error = json
            .remove("error")
            .and_then(|error| error.as_str().map(str::to_owned));
        if let Some(Value::Object(metadata)) = json.remove("metadata") {
            answered.metadata = metadata;
        }
    }
    answered
}

/// `(event, data)` for every `event:` + `data:` pair of an SSE text.
pub(crate) fn parse_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter_map(|event| {
            let mut name = "message";
            let mut data = None;
            for line in event.lines() {
                if let Some(value) = line.strip_prefix("event:") {
                    name = value.trim();
                } else if let Some(value) = line.strip_prefix("data:") {
                    data = serde_json::from_str(value.trim()).ok();
                }
            }
            Some((name.to_owned(), data?))
        })
        .collect()
}

/// A clock for [`Webhook::with_clock`] that reads what the test sets.
#[derive(Debug, Clone)]
pub struct FixedClock(Arc<AtomicU64>);

impl FixedClock {
    /// Stopped at `unix_seconds`.
    pub fn new(unix_seconds: u64) -> Self {
        FixedClock(Arc::new(AtomicU64::new(unix_seconds)))
    }

    /// The time it reads, unix seconds.
    pub fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    /// Sets the time.
    pub fn set(&self, unix_seconds: u64) {
        self.0.store(unix_seconds, Ordering::SeqCst);
    }

    /// Moves the time on.
    pub fn advance(&self, seconds: u64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }
}

/// A random version-4 UUID, from the standard library's random hasher keys.
fn uuid_v4() -> String {
    let random = |salt: u64| {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(salt);
        hasher.finish()
    };
    let bits = (u128::from(random(1)) << 64) | u128::from(random(2));
    let bits = (bits & !(0xf000 << 64) | (0x4000 << 64)) & !(0xc << 60) | (0x8 << 60);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Now as Python's `datetime.now(timezone.utc).isoformat()` writes it.
fn iso_timestamp_now() -> String {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = since.as_secs();
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    // Howard Hinnant's days-to-civil-date, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let micros = since.subsec_micros();
    let time = format!(
        "{:02}:{:02}:{:02}",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    );
    if micros == 0 {
        format!("{year:04}-{month:02}-{day:02}T{time}+00:00")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{time}.{micros:06}+00:00")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_look_like_version_4() {
        let id = uuid_v4();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        assert_ne!(id, uuid_v4());
    }

    #[test]
    fn timestamps_are_python_isoformat() {
        let stamp = iso_timestamp_now();
        assert!(
            stamp.ends_with("+00:00") && stamp.starts_with("20"),
            "{stamp}"
        );
        assert_eq!(&stamp[10..11], "T");
    }

    #[test]
    fn history_alternates_oldest_first_ending_with_the_message() {
        let message = MessageBuilder::new("now").history(4).build();
        let roles: Vec<_> = message
            .history_tail
            .iter()
            .map(|e| e.role.as_str().to_owned())
            .collect();
        assert_eq!(roles, ["assistant", "user", "assistant", "user"]);
        assert_eq!(message.history_tail[0].content, GREETING);
        assert_eq!(message.history_tail[3].content, "now");
        assert!(MessageBuilder::test_button().build().is_test_webhook());
    }
}
