//! Parse: the `message_received` body, only after its signature was verified.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::error::RequestError;

/// The body of a `message_received` webhook: one user message and the end of
/// its thread.
///
/// Accepts every variant the platform sends: the normal one, the fallback
/// where `message` is only `{"content": ...}` and `history_tail` is absent,
/// and the dashboard's "Test webhook" (zero thread id, empty history). Unknown
/// fields are ignored, so fields the platform adds later do not break parsing;
/// the raw body is in [`Context::body`](crate::Context::body) meanwhile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MessageReceived {
    /// Payload version, `"1.0"` today.
    pub version: String,
    /// Always `"message_received"`; anything else is rejected with 422.
    pub event: String,
    /// The App the message was sent to.
    pub app: App,
    /// The conversation.
    pub thread: Thread,
    /// The message to answer.
    pub message: Message,
    /// Up to 10 latest entries of the thread, oldest first, including the
    /// current message. Empty when the platform sends none.
    #[serde(default, deserialize_with = "history")]
    pub history_tail: Vec<HistoryEntry>,
    /// When the platform built the payload, as sent (ISO 8601, e.g.
    /// `2026-11-23T12:00:00.123456+00:00`; microseconds are left out when zero).
    pub timestamp: String,
}

impl MessageReceived {
    /// Parses a request body.
    ///
    /// Fails with [`RequestError::MalformedJson`] (400) when the body is not
    /// JSON, and [`RequestError::InvalidPayload`] (422, naming the field) when it
    /// is JSON that does not fit the contract or is another event.
    ///
    /// ```
    /// use partner_webhook::MessageReceived;
    ///
    /// let body = br#"{"version":"1.0","event":"message_received","app":{"id":"a","name":""},
    ///     "thread":{"id":"t","customer_id":null},"message":{"content":"hi"},
    ///     "timestamp":"2026-11-23T12:00:00Z"}"#;
    /// let parsed = MessageReceived::from_json(body)?;
    /// assert_eq!(parsed.message.content, "hi");
    /// assert!(parsed.history_tail.is_empty());
    /// # Ok::<(), partner_webhook::RequestError>(())
    /// ```
    pub fn from_json(body: &[u8]) -> Result<Self, RequestError> {
        // serde_json skips UTF-8 checks inside strings it ignores (unknown
        // fields), so check the whole body: JSON is UTF-8, and the raw body is
        // handed to the assistant as such.
        // simdutf8 checks multibyte text at several times std's speed; std,
        // only on failure, says where.
        let text = simdutf8::basic::from_utf8(body).map_err(|_| {
            let valid_up_to = std::str::from_utf8(body)
                .err()
                .map_or(0, |error| error.valid_up_to());
            RequestError::MalformedJson(serde::de::Error::custom(format_args!(
                "invalid UTF-8 at byte {valid_up_to}"
            )))
        })?;
        // The plain parse is the fast path; only a failure is parsed again
        // with path tracking, to name the field in the 422.
        let parsed: MessageReceived = match serde_json::from_str(text) {
            Ok(parsed) => parsed,
            Err(_) => return Err(explain_parse_failure(text)),
        };
        if parsed.event != "message_received" {
            return Err(RequestError::InvalidPayload {
                field: "event".to_owned(),
                reason: format!(
                    "unsupported event {:?}, expected \"message_received\"",
                    parsed.event
                ),
            });
        }
        Ok(parsed)
    }

    /// Whether this is the dashboard's "Test webhook" request: thread id all
    /// zeros and message id `00000000-0000-0000-0000-000000000001`. That
    /// button reads only JSON, so it is answered with JSON in every format.
    pub fn is_test_webhook(&self) -> bool {
        self.thread.id == "00000000-0000-0000-0000-000000000000"
            && self.message.id.as_deref() == Some("00000000-0000-0000-0000-000000000001")
    }
}

/// Parses `text` again with path tracking, for the error of a body that
/// failed to parse: 422 naming the field for a shape problem, 400 for syntax.
fn explain_parse_failure(text: &str) -> RequestError {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let parsed: Result<MessageReceived, _> = serde_path_to_error::deserialize(&mut deserializer);
    match parsed {
        Ok(_) => match deserializer.end() {
            Err(error) => RequestError::MalformedJson(error),
            Ok(()) => RequestError::MalformedJson(serde::de::Error::custom(
                "the body parsed only on the second try",
            )),
        },
        Err(error) => {
            let path = error.path().to_string();
            let inner = error.into_inner();
            if inner.is_data() {
                RequestError::InvalidPayload {
                    field: path,
                    reason: inner.to_string(),
                }
            } else {
                RequestError::MalformedJson(inner)
            }
        }
    }
}

/// The App a message was sent to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct App {
    /// App id (a UUID).
    pub id: String,
    /// App name; may be empty.
    #[serde(default)]
    pub name: String,
}

/// The conversation a message belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Thread {
    /// Thread id (a UUID; all zeros for the dashboard's "Test webhook").
    pub id: String,
    /// The partner's own id for the end user, when the thread has one.
    pub customer_id: Option<String>,
}

/// The message to answer. Only `content` is always present: the platform's
/// fallback payload carries nothing else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Message {
    /// Message id. The same id arrives again when a thread is re-run.
    pub id: Option<String>,
    /// Position of the message in its thread.
    pub seq: Option<u64>,
    /// Who wrote it; [`Role::User`] for every message the platform sends today.
    pub role: Option<Role>,
    /// The text; may be empty.
    pub content: String,
    /// Structured content, any JSON object; empty when absent or null.
    #[serde(default, deserialize_with = "object_or_null")]
    pub content_json: Map<String, Value>,
}

/// One earlier entry of the thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HistoryEntry {
    /// Who wrote it.
    pub role: Role,
    /// The text; may be empty.
    pub content: String,
    /// Structured content, e.g. `{"source": "system"}` on the greeting;
    /// empty when absent or null.
    #[serde(default, deserialize_with = "object_or_null")]
    pub content_json: Map<String, Value>,
}

/// Who wrote a message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
#[non_exhaustive]
pub enum Role {
    /// The end user.
    User,
    /// The assistant: earlier replies, and the platform's greeting.
    Assistant,
    /// A role this version does not know, kept as sent.
    Other(String),
}

impl Role {
    /// The role as the platform writes it.
    pub fn as_str(&self) -> &str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Other(other) => other,
        }
    }
}

impl From<String> for Role {
    fn from(role: String) -> Self {
        match role.as_str() {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            _ => Role::Other(role),
        }
    }
}

impl From<Role> for String {
    fn from(role: Role) -> Self {
        match role {
            Role::Other(other) => other,
            known => known.as_str().to_owned(),
        }
    }
}

impl<'de> Deserialize<'de> for Role {
    /// Known roles from the borrowed text, with no `String` made for them:
    /// a 3 KB body has a role per history entry.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RoleVisitor;
        impl serde::de::Visitor<'_> for RoleVisitor {
            type Value = Role;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, role: &str) -> Result<Role, E> {
                Ok(match role {
                    "user" => Role::User,
                    "assistant" => Role::Assistant,
                    other => Role::Other(other.to_owned()),
                })
            }
            fn visit_string<E: serde::de::Error>(self, role: String) -> Result<Role, E> {
                Ok(Role::from(role))
            }
        }
        deserializer.deserialize_str(RoleVisitor)
    }
}

/// The platform sends up to 10 entries: room for 10 is made at the first,
/// where a `Vec` growing from 4 to 8 to 16 took three allocations and two
/// copies a request. Any other length still fits.
fn history<'de, D>(deserializer: D) -> Result<Vec<HistoryEntry>, D::Error>
where
    D: Deserializer<'de>,
{
    struct Entries;
    impl<'de> serde::de::Visitor<'de> for Entries {
        type Value = Vec<HistoryEntry>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a sequence")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut entries: A,
        ) -> Result<Self::Value, A::Error> {
            let mut kept = Vec::new();
            while let Some(entry) = entries.next_element()? {
                if kept.is_empty() {
                    kept.reserve_exact(PLATFORM_HISTORY_LEN);
                }
                kept.push(entry);
            }
            Ok(kept)
        }
    }
    deserializer.deserialize_seq(Entries)
}

/// How many entries the platform's `history_tail` holds at most.
const PLATFORM_HISTORY_LEN: usize = 10;

fn object_or_null<'de, D>(deserializer: D) -> Result<Map<String, Value>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(Option::<Map<String, Value>>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::StatusCode;

    const NORMAL: &str = r#"{"version":"1.0","event":"message_received","app":{"id":"a1","name":"Shop"},"thread":{"id":"t1","customer_id":"c1"},"message":{"id":"m1","seq":3,"role":"user","content":"Où est ma commande ?","content_json":{"clé":{"nested":[1,"中"]}}},"history_tail":[{"role":"assistant","content":"Hello there! How can I help you today?","content_json":{"source":"system"}},{"role":"user","content":"Où est ma commande ?","content_json":{}}],"timestamp":"2026-11-23T12:00:00.123456+00:00","context":{"locale":"fr"}}"#;

    fn status_and_text(body: &str) -> (StatusCode, String) {
        let error = MessageReceived::from_json(body.as_bytes()).expect_err("should fail");
        (error.status(), error.to_string())
    }

    #[test]
    fn history_of_any_length_is_kept_in_order_and_anything_but_an_array_is_422() {
        let start = NORMAL.find("\"history_tail\"").expect("in NORMAL");
        let end = NORMAL.find(",\"timestamp\"").expect("in NORMAL");
        let with_history = |history: &str| {
            format!(
                "{}\"history_tail\":{history}{}",
                &NORMAL[..start],
                &NORMAL[end..]
            )
        };
        let entry = |n: usize| format!(r#"{{"role":"user","content":"{n}"}}"#);
        for len in [0, 1, 10, 11, 25] {
            let entries: Vec<String> = (0..len).map(entry).collect();
            let body = with_history(&format!("[{}]", entries.join(",")));
            let parsed = MessageReceived::from_json(body.as_bytes()).expect("valid");
            let contents: Vec<String> = parsed
                .history_tail
                .iter()
                .map(|e| e.content.clone())
                .collect();
            assert_eq!(
                contents,
                (0..len).map(|n| n.to_string()).collect::<Vec<_>>()
            );
        }
        for wrong in ["null", "{}", "\"x\"", "[1]"] {
            let (status, text) = status_and_text(&with_history(wrong));
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{wrong}: {text}");
            assert!(text.contains("history_tail"), "{wrong}: {text}");
        }
        let (_, text) = status_and_text(&with_history("null"));
        assert!(text.contains("expected a sequence"), "{text}");
    }

    #[test]
    fn parses_the_normal_payload_and_ignores_unknown_fields() {
        let parsed = MessageReceived::from_json(NORMAL.as_bytes()).expect("valid");
        assert_eq!(parsed.message.seq, Some(3));
        assert_eq!(parsed.message.role, Some(Role::User));
        assert_eq!(parsed.history_tail[0].role, Role::Assistant);
        assert_eq!(parsed.history_tail[0].content_json["source"], "system");
        assert_eq!(parsed.thread.customer_id.as_deref(), Some("c1"));
    }

    #[test]
    fn unknown_roles_and_null_content_json_are_kept() {
        let body = NORMAL
            .replace(r#""role":"assistant""#, r#""role":"system""#)
            .replace(r#""content_json":{}"#, r#""content_json":null"#);
        let parsed = MessageReceived::from_json(body.as_bytes()).expect("valid");
        assert_eq!(parsed.history_tail[0].role, Role::Other("system".into()));
        assert_eq!(parsed.history_tail[0].role.as_str(), "system");
        // Escaped text arrives unescaped, as any other role.
        let escaped = NORMAL.replace(r#""role":"user""#, r#""role":"us\u0065r""#);
        let parsed = MessageReceived::from_json(escaped.as_bytes()).expect("valid");
        assert_eq!(parsed.message.role, Some(Role::User));
        assert_eq!(parsed.history_tail[1].role, Role::User);
        assert!(parsed.history_tail[1].content_json.is_empty());
    }

    #[test]
    fn syntax_errors_are_400_with_line_and_column() {
        let (status, text) = status_and_text("{\"version\":");
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(text.contains("line 1 column"), "{text}");
        let (status, _) = status_and_text(&format!("{NORMAL} trailing"));
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn invalid_utf8_is_400_even_in_an_ignored_field() {
        // Found by fuzz/fuzz_targets/verify_and_parse.rs: serde_json accepted it.
        let body = NORMAL.replace(r#""context":{"locale":"fr"}"#, r#""x":"\u{ff}""#);
        let mut bytes = body.into_bytes();
        let at = bytes
            .windows(6)
            .position(|w| w == b"\\u{ff}")
            .expect("marker");
        bytes.splice(at..at + 6, [0xff]);
        let error = MessageReceived::from_json(&bytes).expect_err("not UTF-8");
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        assert!(
            error.to_string().contains("invalid UTF-8 at byte"),
            "{error}"
        );
    }

    #[test]
    fn shape_errors_are_422_and_name_the_field() {
        let (status, text) = status_and_text(&NORMAL.replace(r#""seq":3"#, r#""seq":"three""#));
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(text.contains("message.seq"), "{text}");
        let (status, text) = status_and_text(r#"{"version":"1.0","event":"message_received"}"#);
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(text.contains("missing field `app`"), "{text}");
        let (_, text) = status_and_text("[1]");
        assert!(text.contains("invalid type"), "{text}");
    }

    #[test]
    fn other_events_are_422_naming_event() {
        let (status, text) =
            status_and_text(&NORMAL.replace("message_received", "message_deleted"));
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            text.contains("`event`") && text.contains("message_deleted"),
            "{text}"
        );
    }
}
