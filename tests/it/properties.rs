//! Property tests of signing and the platform's escaping quirk: a correctly signed request
//! verifies and changing any single byte of its body, `X-Timestamp` or `X-Signature` is
//! rejected; a body signed as the platform signs it (`\uXXXX`-escaped) verifies when sent
//! raw; and `escape_non_ascii` writes exactly what Python's `json.dumps` writes.

use std::time::Duration;

use hyper::HeaderMap;
use hyper::header::HeaderValue;
use partner_webhook::{Secret, SignatureError, Verified, Verifier, escape_non_ascii, sign};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Value, json};

const WINDOW_SECS: u64 = 300;
const PREFIX: &str = "sha256=";

/// Characters the escaping cares about, on top of what `any::<char>()` picks:
/// controls, quotes, DEL, C1 and Latin-1, UTF-8 length and surrogate-range
/// boundaries, U+2028/U+2029, CJK and astral characters (surrogate pairs).
const SPECIAL: &str = "\0\u{1f}\t\n\"\\/~\u{7f}\u{80}\u{9f}\u{a0}é\u{ff}\u{7ff}\u{800}\
    \u{2028}\u{2029}中文\u{d7ff}\u{e000}\u{feff}\u{fffd}\u{ffff}\u{10000}👋\u{10ffff}";

fn interesting_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => proptest::char::range(' ', '~'),
        2 => proptest::sample::select(SPECIAL.chars().collect::<Vec<_>>()),
        2 => any::<char>(),
    ]
}

fn text(max_chars: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(interesting_char(), 0..max_chars).prop_map(String::from_iter)
}

fn secret_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(interesting_char(), 1..40).prop_map(String::from_iter)
}

/// `{"content":<s as JSON>}`, raw UTF-8 as the platform sends it.
fn json_body(content: &str) -> String {
    format!(
        "{{\"content\":{}}}",
        serde_json::to_string(content).unwrap()
    )
}

/// JSON-ish bodies with non-ASCII content, arbitrary text, and arbitrary bytes
/// (not necessarily UTF-8).
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        text(48).prop_map(|content| json_body(&content).into_bytes()),
        text(48).prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..128),
    ]
}

/// A server clock and a signing time at most the replay window away from it.
fn clock() -> impl Strategy<Value = (u64, u64)> {
    let window = i64::try_from(WINDOW_SECS).unwrap();
    (1_000u64..=4_000_000_000, -window..=window)
        .prop_map(|(now, skew)| (now, now.checked_add_signed(skew).unwrap()))
}

/// Non-zero XOR masks for body bytes, biased to near misses: low bits, which
/// keep most characters in their class, and 0x20, the other letter case.
fn mask() -> impl Strategy<Value = u8> {
    prop_oneof![Just(0x20u8), 1u8..=0x0f, 1u8..=0xff]
}

/// Bytes a header value can hold (HTTP field-value: tab, visible ASCII,
/// obs-text), biased to near misses: digits, and hex letters in either case.
fn header_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => b'0'..=b'9',
        2 => b'a'..=b'f',
        2 => b'A'..=b'F',
        3 => b' '..=b'~',
        1 => 0x80u8..=0xff,
        1 => Just(b'\t'),
    ]
}

/// A request signed with `secret` at `timestamp`, checked at `now`.
#[derive(Debug, Clone)]
struct Signed {
    secret: String,
    now: u64,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
}

impl Signed {
    /// Verifies the request with its headers and body replaced; `None` when a
    /// header value is not one that HTTP can carry.
    fn verify_with(
        &self,
        timestamp: &[u8],
        signature: &[u8],
        body: &[u8],
    ) -> Option<Result<Verified, SignatureError>> {
        let mut headers = HeaderMap::new();
        headers.insert("x-timestamp", HeaderValue::from_bytes(timestamp).ok()?);
        headers.insert("x-signature", HeaderValue::from_bytes(signature).ok()?);
        let verifier = Verifier::new(
            vec![Secret::new(&self.secret).unwrap()],
            Duration::from_secs(WINDOW_SECS),
        )
        .unwrap();
        Some(verifier.verify_at(&headers, body, self.now))
    }

    fn verify(&self) -> Result<Verified, SignatureError> {
        self.verify_with(
            self.timestamp.as_bytes(),
            self.signature.as_bytes(),
            &self.body,
        )
        .unwrap()
    }
}

prop_compose! {
    /// Signed over the raw body, or (when `python` and the body is UTF-8) over
    /// its Python-escaped form, as the real sender does; both must verify.
    fn signed()(
        secret in secret_text(),
        (now, timestamp) in clock(),
        body in body(),
        python in any::<bool>(),
    ) -> Signed {
        let signed_form = match std::str::from_utf8(&body) {
            Ok(text) if python => escape_non_ascii(text).into_owned().into_bytes(),
            _ => body.clone(),
        };
        let signature = sign(&Secret::new(&secret).unwrap(), timestamp, &signed_form);
        Signed { secret, now, timestamp: timestamp.to_string(), signature, body }
    }
}

/// `bytes` with the byte at `at` replaced by `change(old byte)`.
fn changed(bytes: &[u8], at: Index, change: impl FnOnce(u8) -> u8) -> (usize, Vec<u8>) {
    let index = at.index(bytes.len());
    let mut changed = bytes.to_vec();
    changed[index] = change(changed[index]);
    (index, changed)
}

proptest! {
    #[test]
    fn correctly_signed_requests_verify(request in signed()) {
        let verified = request.verify();
        prop_assert!(verified.is_ok(), "{verified:?}");
        prop_assert_eq!(verified.unwrap().timestamp.map(|t| t.to_string()), Some(request.timestamp.clone()));
    }

    #[test]
    fn changing_any_body_byte_is_rejected(
        request in signed(),
        at in any::<Index>(),
        mask in mask(),
    ) {
        prop_assume!(!request.body.is_empty());
        let (index, body) = changed(&request.body, at, |byte| byte ^ mask);
        let result = request
            .verify_with(request.timestamp.as_bytes(), request.signature.as_bytes(), &body)
            .unwrap();
        prop_assert!(result.is_err(), "body byte {index} ^ {mask:#04x} accepted: {result:?}");
    }

    #[test]
    fn changing_any_timestamp_byte_is_rejected(
        request in signed(),
        at in any::<Index>(),
        new in header_byte(),
    ) {
        let (index, timestamp) = changed(request.timestamp.as_bytes(), at, |_| new);
        prop_assume!(timestamp != request.timestamp.as_bytes(), "same byte");
        let result = request
            .verify_with(&timestamp, request.signature.as_bytes(), &request.body)
            .unwrap();
        prop_assert!(
            result.is_err(),
            "X-Timestamp byte {index} -> {new:#04x} accepted: {:?}",
            String::from_utf8_lossy(&timestamp)
        );
    }

    #[test]
    fn changing_any_signature_byte_is_rejected(
        request in signed(),
        at in any::<Index>(),
        new in header_byte(),
    ) {
        let (index, signature) = changed(request.signature.as_bytes(), at, |_| new);
        prop_assume!(signature != request.signature.as_bytes(), "same byte");
        let result = request
            .verify_with(request.timestamp.as_bytes(), &signature, &request.body)
            .unwrap();
        // Uppercase hex is accepted on purpose: 'a' -> 'A' in the digest is
        // the same signature, not a change. Anywhere else (the "sha256="
        // prefix included) a changed byte must be rejected.
        let same_digest = index >= PREFIX.len()
            && signature[index].eq_ignore_ascii_case(&request.signature.as_bytes()[index]);
        if same_digest {
            prop_assert!(result.is_ok(), "uppercase hex rejected: {result:?}");
        } else {
            prop_assert!(
                result.is_err(),
                "X-Signature byte {index} -> {new:#04x} accepted: {:?}",
                String::from_utf8_lossy(&signature)
            );
        }
    }

    #[test]
    fn python_escaped_signature_verifies_the_raw_body(
        secret in secret_text(),
        (now, timestamp) in clock(),
        content in text(64),
        as_json in any::<bool>(),
    ) {
        let body = if as_json { json_body(&content) } else { content };
        // What the real sender does: sign the \uXXXX form, send raw UTF-8.
        let signature = sign(
            &Secret::new(&secret).unwrap(),
            timestamp,
            escape_non_ascii(&body).as_bytes(),
        );
        let request = Signed {
            secret,
            now,
            timestamp: timestamp.to_string(),
            signature,
            body: body.into_bytes(),
        };
        let verified = request.verify();
        prop_assert!(verified.is_ok(), "{verified:?}");
    }

    #[test]
    fn escaped_text_is_ascii_and_parses_back(content in text(64)) {
        let escaped = escape_non_ascii(&content);
        // ASCII without DEL, as Python writes it.
        prop_assert!(escaped.bytes().all(|byte| byte < 0x7f), "{escaped:?}");
        if content.chars().all(|ch| ch < '\u{7f}') {
            prop_assert_eq!(&*escaped, content.as_str());
        }

        let json = serde_json::to_string(&content).unwrap();
        let back: String = serde_json::from_str(&escape_non_ascii(&json)).unwrap();
        prop_assert_eq!(&back, &content);

        // A payload-shaped document, with the text as a key too.
        let document = json!({
            "content": content,
            "content_json": { content.clone(): [content] },
        });
        let escaped = escape_non_ascii(&document.to_string()).into_owned();
        prop_assert!(escaped.is_ascii());
        prop_assert_eq!(serde_json::from_str::<Value>(&escaped).unwrap(), document);
    }
}

/// One line of cases.json: `json.dumps(s, ensure_ascii=False)` and
/// `json.dumps(s)`, both with `separators=(",", ":")`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EscapingCase {
    raw: String,
    escaped: String,
}

/// The vectors come from Python itself: `python3 tests/fixtures/escaping/generate.py`
/// (from the repository root) rewrites `tests/fixtures/escaping/cases.json`.
#[test]
fn escaping_matches_python_json_dumps() {
    let cases: Vec<EscapingCase> =
        serde_json::from_str(include_str!("../fixtures/escaping/cases.json")).unwrap();
    assert!(cases.len() >= 500, "only {} cases", cases.len());
    let exercised = cases.iter().filter(|case| case.raw != case.escaped).count();
    assert!(exercised >= 300, "only {exercised} cases need escaping");

    let mismatches: Vec<_> = cases
        .iter()
        .enumerate()
        .filter(|(_, case)| escape_non_ascii(&case.raw) != case.escaped)
        // One case per line, after the opening "[".
        .map(|(index, case)| {
            format!(
                "cases.json line {}: raw {:?}\n  expected {:?}\n  got      {:?}",
                index + 2,
                case.raw,
                case.escaped,
                escape_non_ascii(&case.raw)
            )
        })
        .collect();
    assert!(
        mismatches.is_empty(),
        "{} of {} cases differ from Python:\n{}",
        mismatches.len(),
        cases.len(),
        mismatches[..mismatches.len().min(5)].join("\n")
    );
}
