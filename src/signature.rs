//! Verify: a scheme's signature (this platform's `X-Timestamp` and
//! `X-Signature` by default) against the raw body, constant time, inside the
//! replay window, with the platform's escaping quirk handled.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::Mac;
use hyper::HeaderMap;

use crate::config::{HmacSha256, Secret, SetupError};
use crate::scheme::{Encoding, Header, Scheme};

/// Name of the header that carries the signing time (unix seconds).
pub const TIMESTAMP_HEADER: &str = "x-timestamp";
/// Name of the header that carries `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-signature";

const PREFIX: &str = "sha256=";
const DIGEST_LEN: usize = 32;

/// Computes the `X-Signature` value the platform sends for `body` signed at
/// `timestamp`: `"sha256=" + hex(HMAC-SHA256(secret, "{timestamp}.{body}"))`.
///
/// Use it to build test requests. Note that the real sender signs the body with
/// every character at or above U+007F escaped as `\uXXXX` but sends it raw; to
/// reproduce that, sign [`escape_non_ascii`] of the body and send the body itself.
///
/// ```
/// use partner_webhook::{sign, Secret};
///
/// let secret = Secret::new("my-secret")?;
/// let signature = sign(&secret, 1_763_899_200, br#"{"event":"message_received"}"#);
/// assert!(signature.starts_with("sha256=") && signature.len() == 71);
/// # Ok::<(), partner_webhook::SetupError>(())
/// ```
pub fn sign(secret: &Secret, timestamp: u64, body: &[u8]) -> String {
    let mut mac = secret.mac();
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut signature = String::with_capacity(PREFIX.len() + 2 * DIGEST_LEN);
    signature.push_str(PREFIX);
    push_hex(&mut signature, &digest);
    signature
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Appends `bytes` as lowercase hex, the form signatures and store keys use.
pub(crate) fn push_hex(out: &mut String, bytes: &[u8]) {
    for byte in bytes {
        out.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(HEX_DIGITS[usize::from(byte & 0x0f)]));
    }
}

/// Rewrites `json` the way Python's `json.dumps(..., ensure_ascii=True)` writes
/// it: every character at or above U+007F (DEL included) becomes `\uXXXX` with
/// lowercase hex, characters above U+FFFF become a UTF-16 surrogate pair.
///
/// This is the form the platform signs. Such characters can only occur inside
/// JSON strings, so the result is the same JSON document.
///
/// ```
/// use partner_webhook::escape_non_ascii;
///
/// assert_eq!(escape_non_ascii(r#"{"c":"é👋"}"#), r#"{"c":"\u00e9\ud83d\udc4b"}"#);
/// assert!(matches!(escape_non_ascii("ascii"), std::borrow::Cow::Borrowed(_)));
/// ```
pub fn escape_non_ascii(json: &str) -> Cow<'_, str> {
    if !needs_escaping(json.as_bytes()) {
        return Cow::Borrowed(json);
    }
    let mut escaped = Vec::with_capacity(json.len() + json.len() / 2);
    write_escaped(json, |piece| escaped.extend_from_slice(piece));
    // Every piece is either an unchanged run of the input cut at char
    // boundaries or an ASCII escape, so the bytes stay UTF-8.
    Cow::Owned(String::from_utf8(escaped).unwrap_or_default())
}

/// [`escape_non_ascii`] appended to `out`, without a string of its own.
pub(crate) fn escape_non_ascii_into(json: &str, out: &mut Vec<u8>) {
    if needs_escaping(json.as_bytes()) {
        write_escaped(json, |piece| out.extend_from_slice(piece));
    } else {
        out.extend_from_slice(json.as_bytes());
    }
}

fn needs_escaping(body: &[u8]) -> bool {
    // `any` stops at each byte and runs a byte at a time; folding a chunk
    // without stopping lets the compiler check 16 or 32 bytes per step, which
    // matters since every body of this platform's scheme is scanned. A byte
    // is >= 0x7f exactly when it or its successor has the high bit set.
    body.chunks(64).any(|chunk| {
        chunk
            .iter()
            .fold(0u8, |seen, &byte| seen | byte | byte.wrapping_add(1))
            >= 0x80
    })
}

/// Feeds the escaped form of `json` to `write` piece by piece, so verification
/// can hash it without building a second copy of the body. Short unchanged
/// runs and escapes are gathered into one buffer, handed on when full, so
/// text that mixes the two (accented Latin, a word of Cyrillic between ASCII)
/// costs a call per few hundred bytes rather than per run; a long unchanged
/// run goes out whole, uncopied.
fn write_escaped(json: &str, mut write: impl FnMut(&[u8])) {
    const ESCAPE_LEN: usize = "\\u0000".len();
    /// A run at least this long is handed on as it is rather than copied.
    const PASS_THROUGH: usize = 256;
    let bytes = json.as_bytes();
    let mut gathered = [0u8; 1024];
    let mut filled = 0;
    let mut at = 0;
    while at < bytes.len() {
        let unchanged = unchanged_run(&bytes[at..]);
        if unchanged > 0 {
            let run = &bytes[at..at + unchanged];
            if filled > 0 && (unchanged >= PASS_THROUGH || filled + unchanged > gathered.len()) {
                write(&gathered[..filled]);
                filled = 0;
            }
            if unchanged >= PASS_THROUGH {
                write(run);
            } else {
                gathered[filled..filled + unchanged].copy_from_slice(run);
                filled += unchanged;
            }
            at += unchanged;
        }
        while at < bytes.len() && bytes[at] >= 0x7f {
            // Room for a surrogate pair.
            if filled + 2 * ESCAPE_LEN > gathered.len() {
                write(&gathered[..filled]);
                filled = 0;
            }
            let (code_point, length) = decode_utf8(&bytes[at..]);
            let mut write_unit = |unit: u32| {
                let escape = &mut gathered[filled..filled + ESCAPE_LEN];
                escape[..2].copy_from_slice(b"\\u");
                for (slot, shift) in escape[2..].iter_mut().zip([12, 8, 4, 0]) {
                    *slot = HEX_DIGITS[((unit >> shift) & 0x0f) as usize];
                }
                filled += ESCAPE_LEN;
            };
            if code_point >= 0x1_0000 {
                let offset = code_point - 0x1_0000;
                write_unit(0xd800 + (offset >> 10));
                write_unit(0xdc00 + (offset & 0x3ff));
            } else {
                write_unit(code_point);
            }
            at += length;
        }
    }
    if filled > 0 {
        write(&gathered[..filled]);
    }
}

/// How many bytes `bytes` starts with that need no escape (below 0x7f):
/// eight at a time, since a byte is at or above 0x7f exactly when it or its
/// successor has the high bit set (a carry out of a 0xff byte can only flag
/// a word that holds one anyway).
fn unchanged_run(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut at = 0;
    for word in bytes.chunks_exact(8) {
        let word = u64::from_ne_bytes(word.try_into().unwrap_or_default());
        if (word | word.wrapping_add(ONES)) & HIGHS != 0 {
            break;
        }
        at += 8;
    }
    at + bytes[at..]
        .iter()
        .position(|&byte| byte >= 0x7f)
        .unwrap_or(bytes.len() - at)
}

/// The code point starting `bytes` and its length in bytes. `bytes` starts at
/// a character boundary of valid UTF-8 (a `&str`), so every index is in range.
fn decode_utf8(bytes: &[u8]) -> (u32, usize) {
    let continuation = |index: usize| u32::from(bytes[index] & 0x3f);
    let lead = u32::from(bytes[0]);
    match bytes[0] {
        0x00..=0x7f => (lead, 1),
        0xc0..=0xdf => (((lead & 0x1f) << 6) | continuation(1), 2),
        0xe0..=0xef => (
            ((lead & 0x0f) << 12) | (continuation(1) << 6) | continuation(2),
            3,
        ),
        _ => (
            ((lead & 0x07) << 18)
                | (continuation(1) << 12)
                | (continuation(2) << 6)
                | continuation(3),
            4,
        ),
    }
}

/// Why a request's signature was not accepted. Every variant is answered with
/// `401 Unauthorized`; the message never contains the expected signature.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignatureError {
    /// The header is absent.
    Missing {
        /// The header, as its scheme spells it (`X-Timestamp`, `X-Signature`, ...).
        header: &'static str,
    },
    /// The header is present but not of the expected form, or sent twice.
    Malformed {
        /// The header, as its scheme spells it.
        header: &'static str,
        /// What the value should have looked like.
        expected: &'static str,
    },
    /// The signed timestamp is further from the server clock than the replay window.
    OutsideWindow {
        /// The timestamp header, as its scheme spells it (`X-Timestamp`, ...).
        header: &'static str,
        /// Signed time minus server time, in seconds (negative: in the past).
        skew_secs: i128,
        /// The configured window, in seconds.
        window_secs: u64,
    },
    /// No configured secret produces this signature for this body.
    Mismatch,
    /// This exact signed request was already accepted inside the replay window.
    Replayed,
}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureError::Missing { header } => write!(f, "missing {header} header"),
            SignatureError::Malformed { header, expected } => {
                write!(f, "malformed {header} header: expected {expected}")
            }
            SignatureError::OutsideWindow {
                header,
                skew_secs,
                window_secs,
            } => {
                let direction = if *skew_secs < 0 {
                    "in the past"
                } else {
                    "in the future"
                };
                write!(
                    f,
                    "{header} is {} s {direction}, outside the {window_secs} s replay window",
                    skew_secs.unsigned_abs()
                )
            }
            SignatureError::Mismatch => {
                f.write_str("signature mismatch: not signed with the configured webhook secret")
            }
            SignatureError::Replayed => {
                f.write_str("replayed: this signed request was already accepted")
            }
        }
    }
}

impl std::error::Error for SignatureError {}

/// What a valid signature proved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verified {
    /// The signed timestamp (`X-Timestamp` on this platform), unix seconds;
    /// `None` for a scheme that signs none.
    pub timestamp: Option<u64>,
    /// The decoded signature digest. This platform puts a microsecond
    /// timestamp in every body, so it is unique per genuine request there.
    pub signature: [u8; DIGEST_LEN],
    /// Which of the configured secrets matched, as an index into them.
    pub secret_index: usize,
}

/// Checks a request's signature against one or more secrets, by a
/// [`Scheme`]: this platform's `X-Timestamp` / `X-Signature` unless told
/// otherwise.
///
/// [`Webhook`](crate::Webhook) uses it on every request; it is public for
/// servers built on another stack.
///
/// ```
/// use std::time::Duration;
/// use hyper::HeaderMap;
/// use partner_webhook::{sign, Secret, Verifier};
///
/// let secret = Secret::new("my-secret")?;
/// let verifier = Verifier::new(vec![secret.clone()], Duration::from_secs(300))?;
/// let body = br#"{"event":"message_received"}"#;
/// let mut headers = HeaderMap::new();
/// headers.insert("x-timestamp", "1763899200".parse()?);
/// headers.insert("x-signature", sign(&secret, 1_763_899_200, body).parse()?);
/// let verified = verifier.verify_at(&headers, body, 1_763_899_260)?;
/// assert_eq!(verified.timestamp, Some(1_763_899_200));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Verifier {
    secrets: Vec<Secret>,
    scheme: Scheme,
}

impl Verifier {
    /// A verifier of this platform's [`Scheme::platform`] accepting any of
    /// `secrets`, with the given replay window. Fails with
    /// [`SetupError::NoSecret`] when `secrets` is empty.
    pub fn new(secrets: Vec<Secret>, replay_window: Duration) -> Result<Self, SetupError> {
        Verifier::with_scheme(
            Scheme::platform().with_replay_window(replay_window),
            secrets,
        )
    }

    /// A verifier of `scheme` accepting any of `secrets`. Fails with
    /// [`SetupError::NoSecret`] when `secrets` is empty.
    pub fn with_scheme(scheme: Scheme, secrets: Vec<Secret>) -> Result<Self, SetupError> {
        if secrets.is_empty() {
            return Err(SetupError::NoSecret);
        }
        Ok(Verifier { secrets, scheme })
    }

    /// Verifies against the system clock.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<Verified, SignatureError> {
        self.verify_at(headers, body, unix_now())
    }

    /// Verifies as if the clock read `now` (unix seconds): [`check_headers`]
    /// then [`verify_body`].
    ///
    /// [`check_headers`]: Verifier::check_headers
    /// [`verify_body`]: Verifier::verify_body
    pub fn verify_at(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: u64,
    ) -> Result<Verified, SignatureError> {
        let signed = self.check_headers(headers, now)?;
        self.verify_body(&signed, body)
    }

    /// The part of verification that needs no body: the scheme's headers
    /// present once, well formed, and a signed timestamp within the replay
    /// window of `now` (unix seconds). A request that fails here can be
    /// refused before its body is read.
    pub fn check_headers<'h>(
        &self,
        headers: &'h HeaderMap,
        now: u64,
    ) -> Result<SignedHeaders<'h>, SignatureError> {
        // Each header present once, then each well formed, then the window:
        // the first of these a request fails is the reason it is given.
        let timestamp = match self.scheme.timestamp() {
            Some(rule) => Some((rule, single_header(headers, &rule.header)?)),
            None => None,
        };
        let signature = self.scheme.signature();
        let signature_text = single_header(headers, signature)?;
        let timestamp = match timestamp {
            Some((rule, text)) => Some((rule, text, parse_timestamp(text, rule.header.display)?)),
            None => None,
        };
        let tag = parse_signature(signature_text, signature.display, self.scheme.encoding())?;
        let Some((rule, text, timestamp)) = timestamp else {
            return Ok(SignedHeaders {
                timestamp_text: None,
                timestamp: None,
                tag,
            });
        };
        let window_secs = rule.window.as_secs();
        let skew_secs = i128::from(timestamp) - i128::from(now);
        if skew_secs.unsigned_abs() > u128::from(window_secs) {
            return Err(SignatureError::OutsideWindow {
                header: rule.header.display,
                skew_secs,
                window_secs,
            });
        }
        Ok(SignedHeaders {
            timestamp_text: Some(text),
            timestamp: Some(timestamp),
            tag,
        })
    }

    /// Checks the body against headers that passed [`check_headers`](Verifier::check_headers).
    ///
    /// On this platform's scheme, a body with a byte >= 0x7f is checked first
    /// in the form its sender really signs ([`escape_non_ascii`]), then raw (a
    /// sender that signs what it sends); any other body, and every body of
    /// another scheme, only raw.
    pub fn verify_body(
        &self,
        signed: &SignedHeaders<'_>,
        body: &[u8],
    ) -> Result<Verified, SignatureError> {
        let verified = |secret_index| Verified {
            timestamp: signed.timestamp,
            signature: signed.tag,
            secret_index,
        };
        let signed_prefix = |mac: &mut HmacSha256| {
            if let Some(timestamp) = signed.timestamp_text {
                mac.update(timestamp);
                mac.update(b".");
            }
        };
        let raw_match = || {
            self.matching_secret(&signed.tag, |mac| {
                signed_prefix(mac);
                mac.update(body);
            })
        };
        let escaped_match = |json: &str| {
            self.matching_secret(&signed.tag, |mac| {
                signed_prefix(mac);
                let mut buffered = BufferedMac::new(mac);
                write_escaped(json, |piece| buffered.update(piece));
                buffered.flush();
            })
        };
        // The real sender signs the escaped form of any body with a byte at
        // or above 0x7f, so that form is tried first there: a genuine
        // request costs one pass, and only a sender signing raw UTF-8 pays two.
        // Only a body with such a byte can be escaped, and only then is it
        // worth proving UTF-8 (an ASCII body is UTF-8 already).
        let escapable = self.scheme.escapes_non_ascii() && needs_escaping(body);
        let matched = match escapable.then(|| simdutf8::basic::from_utf8(body)) {
            Some(Ok(json)) => escaped_match(json).or_else(raw_match),
            _ => raw_match(),
        };
        if let Some(index) = matched {
            return Ok(verified(index));
        }
        Err(SignatureError::Mismatch)
    }

    /// The replay window, in whole seconds; `None` when the scheme signs no
    /// timestamp.
    pub(crate) fn window_secs(&self) -> Option<u64> {
        self.scheme.replay_window().map(|window| window.as_secs())
    }

    /// The scheme this verifier checks.
    pub(crate) fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    /// The secrets this verifier accepts, in the order of
    /// [`Verified::secret_index`].
    pub(crate) fn secrets(&self) -> &[Secret] {
        &self.secrets
    }

    fn matching_secret(
        &self,
        tag: &[u8; DIGEST_LEN],
        feed: impl Fn(&mut HmacSha256),
    ) -> Option<usize> {
        self.secrets.iter().position(|secret| {
            let mut mac = secret.mac();
            feed(&mut mac);
            // verify_slice compares in constant time.
            mac.verify_slice(tag).is_ok()
        })
    }
}

/// Signature headers that are well formed and inside the replay window; the
/// body has not been checked yet. Made by [`Verifier::check_headers`].
#[derive(Debug, Clone, Copy)]
pub struct SignedHeaders<'h> {
    /// As sent: the MAC covers these exact bytes (leading zeros included).
    timestamp_text: Option<&'h [u8]>,
    timestamp: Option<u64>,
    tag: [u8; DIGEST_LEN],
}

impl SignedHeaders<'_> {
    /// The signed timestamp, unix seconds; `None` for a scheme that signs none.
    pub fn timestamp(&self) -> Option<u64> {
        self.timestamp
    }
}

/// The escaped form arrives as millions of tiny pieces when a body is full of
/// characters to escape (6 bytes each); gathering them into one fixed buffer
/// keeps the MAC's per-call overhead out of it, so such a body costs about
/// what hashing its escaped length costs, without ever copying the body.
struct BufferedMac<'m> {
    mac: &'m mut HmacSha256,
    buffer: [u8; 4096],
    filled: usize,
}

impl<'m> BufferedMac<'m> {
    fn new(mac: &'m mut HmacSha256) -> Self {
        BufferedMac {
            mac,
            buffer: [0; 4096],
            filled: 0,
        }
    }

    fn update(&mut self, piece: &[u8]) {
        if self.filled + piece.len() > self.buffer.len() {
            self.flush();
        }
        if piece.len() >= self.buffer.len() {
            self.mac.update(piece);
        } else {
            self.buffer[self.filled..self.filled + piece.len()].copy_from_slice(piece);
            self.filled += piece.len();
        }
    }

    fn flush(&mut self) {
        self.mac.update(&self.buffer[..self.filled]);
        self.filled = 0;
    }
}

/// The system clock in unix seconds; a clock before 1970 reads as 0, which
/// every window check then refuses.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

fn single_header<'a>(headers: &'a HeaderMap, header: &Header) -> Result<&'a [u8], SignatureError> {
    let mut values = headers.get_all(&header.name).iter();
    let first = values.next().ok_or(SignatureError::Missing {
        header: header.display,
    })?;
    if values.next().is_some() {
        return Err(SignatureError::Malformed {
            header: header.display,
            expected: "a single value, but it was sent more than once",
        });
    }
    Ok(first.as_bytes())
}

fn parse_timestamp(text: &[u8], header: &'static str) -> Result<u64, SignatureError> {
    let malformed = SignatureError::Malformed {
        header,
        expected: "whole seconds since the Unix epoch, digits only",
    };
    // Digits only: Rust's integer parsing would also take a leading '+'.
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return Err(malformed);
    }
    text.iter()
        .try_fold(0u64, |value, digit| {
            value.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
        })
        .ok_or(malformed)
}

fn parse_signature(
    text: &[u8],
    header: &'static str,
    encoding: Encoding,
) -> Result<[u8; DIGEST_LEN], SignatureError> {
    let expected = match encoding {
        Encoding::PrefixedHex => "sha256= followed by 64 hex digits",
        Encoding::Hex => "64 hex digits",
        Encoding::PrefixedOrBareHex => "64 hex digits, after sha256= or alone",
    };
    let malformed = SignatureError::Malformed { header, expected };
    let prefixed = text.strip_prefix(PREFIX.as_bytes());
    let hex = match (encoding, prefixed) {
        (Encoding::PrefixedHex | Encoding::PrefixedOrBareHex, Some(hex)) => hex,
        (Encoding::Hex | Encoding::PrefixedOrBareHex, None) => text,
        _ => return Err(malformed),
    };
    if hex.len() != 2 * DIGEST_LEN {
        return Err(malformed);
    }
    let mut tag = [0u8; DIGEST_LEN];
    // One check for the whole tag rather than a branch per digit.
    let mut not_hex = 0;
    for (byte, pair) in tag.iter_mut().zip(hex.chunks_exact(2)) {
        let (high, low) = (
            HEX_VALUE[usize::from(pair[0])],
            HEX_VALUE[usize::from(pair[1])],
        );
        not_hex |= high | low;
        *byte = (high << 4) | (low & 0x0f);
    }
    if not_hex & NOT_HEX != 0 {
        return Err(malformed);
    }
    Ok(tag)
}

/// Marks a byte that is not a hex digit in [`HEX_VALUE`].
const NOT_HEX: u8 = 0x80;

/// Each byte's value as a hex digit, either case; [`NOT_HEX`] for the rest.
const HEX_VALUE: [u8; 256] = {
    let mut table = [NOT_HEX; 256];
    let mut digit = 0;
    while digit < 16 {
        table[b"0123456789abcdef"[digit] as usize] = digit as u8;
        table[b"0123456789ABCDEF"[digit] as usize] = digit as u8;
        digit += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    // Vectors from tests/fixtures/signatures/generate.py (Python's hmac and json,
    // signing exactly as the platform does): `python3 tests/fixtures/signatures/generate.py`.
    const SECRET: &str = "3f9a1c0e5b7d2468ace13579bdf02468ace13579bdf02468ace13579bdf02468";
    const ASCII: (&[u8], &str) = (
        include_bytes!("../tests/fixtures/signatures/ascii.body"),
        include_str!("../tests/fixtures/signatures/ascii.signature"),
    );
    const NON_ASCII: (&[u8], &str) = (
        include_bytes!("../tests/fixtures/signatures/non_ascii.body"),
        include_str!("../tests/fixtures/signatures/non_ascii.signature"),
    );
    const DEL: (&[u8], &str) = (
        include_bytes!("../tests/fixtures/signatures/del.body"),
        include_str!("../tests/fixtures/signatures/del.signature"),
    );
    const NOW: u64 = 1_763_899_200;

    impl Verifier {
        fn timestamp_at(
            &self,
            headers: &HeaderMap,
            body: &[u8],
            now: u64,
        ) -> Result<u64, SignatureError> {
            self.verify_at(headers, body, now)
                .map(|verified| verified.timestamp.expect("this platform signs a timestamp"))
        }
    }

    fn secret(text: &str) -> Secret {
        Secret::new(text).expect("test secrets are not empty")
    }

    fn verifier(secrets: &[&str]) -> Verifier {
        let secrets = secrets.iter().map(|text| secret(text)).collect();
        Verifier::new(secrets, Duration::from_secs(300)).expect("at least one secret")
    }

    fn headers(timestamp: &str, signature: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(TIMESTAMP_HEADER, timestamp.parse().expect("valid header"));
        headers.insert(SIGNATURE_HEADER, signature.parse().expect("valid header"));
        headers
    }

    fn fixture_headers(signature_line: &str) -> HeaderMap {
        let (timestamp, signature) = signature_line
            .trim()
            .split_once(' ')
            .expect("fixture line is 'timestamp signature'");
        headers(timestamp, signature)
    }

    #[test]
    fn sign_matches_python_for_ascii_body() {
        let (body, line) = ASCII;
        let expected = line.trim().split_once(' ').map(|(_, sig)| sig);
        assert_eq!(Some(sign(&secret(SECRET), NOW, body).as_str()), expected);
    }

    #[test]
    fn sign_of_escaped_body_matches_python_for_non_ascii() {
        let (body, line) = NON_ASCII;
        let json = std::str::from_utf8(body).expect("fixture is UTF-8");
        let expected = line.trim().split_once(' ').map(|(_, sig)| sig);
        let signed = sign(&secret(SECRET), NOW, escape_non_ascii(json).as_bytes());
        assert_eq!(Some(signed.as_str()), expected);
    }

    #[test]
    fn verifies_every_fixture_as_the_real_sender_signs_it() {
        for (body, line) in [ASCII, NON_ASCII, DEL] {
            assert_eq!(
                verifier(&[SECRET]).timestamp_at(&fixture_headers(line), body, NOW),
                Ok(NOW)
            );
        }
    }

    #[test]
    fn non_ascii_fixture_really_differs_from_what_was_signed() {
        let (body, line) = NON_ASCII;
        let raw_signature = sign(&secret(SECRET), NOW, body);
        assert!(!line.contains(&raw_signature));
    }

    #[test]
    fn raw_utf8_signature_is_accepted_too() {
        // A sender that signs what it sends must keep working.
        let (body, _) = NON_ASCII;
        let signature = sign(&secret(SECRET), NOW, body);
        assert_eq!(
            verifier(&[SECRET]).timestamp_at(&headers("1763899200", &signature), body, NOW),
            Ok(NOW)
        );
    }

    #[test]
    fn escaping_matches_python() {
        // python3 -c 'import json; print(json.dumps("a\x7fé中👋\"\\"))'
        assert_eq!(
            escape_non_ascii("\"a\u{7f}é中👋\\\"\\\\\""),
            "\"a\\u007f\\u00e9\\u4e2d\\ud83d\\udc4b\\\"\\\\\""
        );
        assert_eq!(
            escape_non_ascii("\u{ffff}\u{10000}"),
            "\\uffff\\ud800\\udc00"
        );
    }

    #[test]
    fn any_rotated_secret_is_accepted() {
        let (body, line) = ASCII;
        let rotating = verifier(&["older", SECRET, "newer"]);
        assert_eq!(
            rotating.timestamp_at(&fixture_headers(line), body, NOW),
            Ok(NOW)
        );
        assert_eq!(
            verifier(&["older", "newer"]).timestamp_at(&fixture_headers(line), body, NOW),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn window_is_enforced_both_ways() {
        let (body, _) = ASCII;
        let check = |timestamp: u64| {
            let signature = sign(&secret(SECRET), timestamp, body);
            verifier(&[SECRET]).timestamp_at(
                &headers(&timestamp.to_string(), &signature),
                body,
                NOW,
            )
        };
        assert_eq!(check(NOW - 300), Ok(NOW - 300));
        assert_eq!(check(NOW + 300), Ok(NOW + 300));
        assert!(matches!(
            check(NOW - 301),
            Err(SignatureError::OutsideWindow {
                header: "X-Timestamp",
                skew_secs: -301,
                window_secs: 300
            })
        ));
        assert!(matches!(
            check(NOW + 301),
            Err(SignatureError::OutsideWindow { skew_secs: 301, .. })
        ));
    }

    #[test]
    fn flipping_any_byte_is_a_mismatch() {
        let (body, line) = NON_ASCII;
        let headers = fixture_headers(line);
        for index in 0..body.len() {
            let mut tampered = body.to_vec();
            tampered[index] ^= 0x01;
            assert!(
                verifier(&[SECRET])
                    .timestamp_at(&headers, &tampered, NOW)
                    .is_err(),
                "flipped byte {index} was accepted"
            );
        }
    }

    #[test]
    fn each_missing_header_is_named() {
        let (body, line) = ASCII;
        for (removed, named) in [
            (TIMESTAMP_HEADER, "X-Timestamp"),
            (SIGNATURE_HEADER, "X-Signature"),
        ] {
            let mut headers = fixture_headers(line);
            headers.remove(removed);
            assert_eq!(
                verifier(&[SECRET]).timestamp_at(&headers, body, NOW),
                Err(SignatureError::Missing { header: named })
            );
        }
    }

    #[test]
    fn malformed_headers_are_rejected_before_hashing() {
        let (body, line) = ASCII;
        let (_, good) = line.trim().split_once(' ').expect("fixture line");
        let bad_signatures = [
            good.trim_start_matches("sha256="),
            &good[..good.len() - 1],
            "sha256=",
            "sha1=aef78a139a07f0cbbb512a14a7bf154ed264457661a65259d10837e725cf42fe",
            "sha256=zef78a139a07f0cbbb512a14a7bf154ed264457661a65259d10837e725cf42fe",
        ];
        for signature in bad_signatures {
            let result =
                verifier(&[SECRET]).timestamp_at(&headers("1763899200", signature), body, NOW);
            assert!(
                matches!(
                    result,
                    Err(SignatureError::Malformed {
                        header: "X-Signature",
                        ..
                    })
                ),
                "{signature:?} gave {result:?}"
            );
        }
        for timestamp in [
            "",
            "+1763899200",
            "-5",
            "1763899200.5",
            "99999999999999999999999",
        ] {
            let result = verifier(&[SECRET]).timestamp_at(&headers(timestamp, good), body, NOW);
            assert!(
                matches!(
                    result,
                    Err(SignatureError::Malformed {
                        header: "X-Timestamp",
                        ..
                    })
                ),
                "{timestamp:?} gave {result:?}"
            );
        }
    }

    #[test]
    fn a_malformed_timestamp_is_named_before_a_malformed_signature() {
        // Presence of each header, then the form of each, timestamp first:
        // the order the fuzz target's contract states.
        let result = verifier(&[SECRET]).timestamp_at(&headers("", ""), b"{}", NOW);
        assert!(
            matches!(
                result,
                Err(SignatureError::Malformed {
                    header: "X-Timestamp",
                    ..
                })
            ),
            "{result:?}"
        );
    }

    #[test]
    fn uppercase_hex_is_accepted() {
        let (body, line) = ASCII;
        let (timestamp, good) = line.trim().split_once(' ').expect("fixture line");
        let upper = format!("sha256={}", good["sha256=".len()..].to_uppercase());
        assert_eq!(
            verifier(&[SECRET]).timestamp_at(&headers(timestamp, &upper), body, NOW),
            Ok(NOW)
        );
    }

    #[test]
    fn every_digit_decodes_in_either_place_and_every_other_byte_is_malformed() {
        // Each of the 22 digits once as a high and once as a low nibble.
        let digits = "0123456789abcdefABCDEF";
        let hex = format!("{digits}0{digits}{}", &digits[..19]);
        assert_eq!(hex.len(), 64);
        let tag = parse_signature(hex.as_bytes(), "X-Signature", Encoding::Hex).expect("all hex");
        let expected: Vec<u8> = (0..32)
            .map(|at| u8::from_str_radix(&hex[2 * at..2 * at + 2], 16).expect("hex"))
            .collect();
        assert_eq!(tag.as_slice(), expected.as_slice());
        for bad in (0..=u8::MAX).filter(|byte| !byte.is_ascii_hexdigit()) {
            for at in [0, 1, 31, 62, 63] {
                let mut text = hex.clone().into_bytes();
                text[at] = bad;
                assert!(
                    matches!(
                        parse_signature(&text, "X-Signature", Encoding::Hex),
                        Err(SignatureError::Malformed { .. })
                    ),
                    "byte {bad:#x} at {at}"
                );
            }
        }
    }

    #[test]
    fn duplicated_header_is_malformed() {
        let (body, line) = ASCII;
        let mut headers = fixture_headers(line);
        let again = headers.get(SIGNATURE_HEADER).cloned().expect("present");
        headers.append(SIGNATURE_HEADER, again);
        assert!(matches!(
            verifier(&[SECRET]).timestamp_at(&headers, body, NOW),
            Err(SignatureError::Malformed {
                header: "X-Signature",
                ..
            })
        ));
    }

    #[test]
    fn errors_never_show_the_expected_signature() {
        let (body, line) = ASCII;
        let (_, good) = line.trim().split_once(' ').expect("fixture line");
        let wrong = sign(&secret("wrong"), NOW, body);
        let error = verifier(&[SECRET])
            .timestamp_at(&headers("1763899200", &wrong), body, NOW)
            .expect_err("wrong secret");
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains(&good[7..]) && !shown.contains(SECRET));
    }

    #[test]
    fn verifier_needs_a_secret() {
        assert!(matches!(
            Verifier::new(Vec::new(), Duration::from_secs(1)),
            Err(SetupError::NoSecret)
        ));
    }

    #[test]
    fn long_escaped_bodies_verify_through_the_fixed_buffer() {
        // Runs longer than the buffer, escapes that straddle its end, and every
        // kind of character the escaping rewrites.
        let mut text = String::from("{\"c\":\"");
        for round in 0..3000 {
            text.push_str(&"a".repeat(round % 5000));
            text.push_str("\u{7f}é中👋");
        }
        text.push_str("\"}");
        let signature = sign(&secret(SECRET), NOW, escape_non_ascii(&text).as_bytes());
        let headers = headers(&NOW.to_string(), &signature);
        assert_eq!(
            verifier(&[SECRET]).timestamp_at(&headers, text.as_bytes(), NOW),
            Ok(NOW)
        );
        let mut tampered = text.into_bytes();
        let last = tampered.len() - 3;
        tampered[last] ^= 1;
        assert_eq!(
            verifier(&[SECRET]).timestamp_at(&headers, &tampered, NOW),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn headers_are_judged_without_the_body() {
        let (_, line) = ASCII;
        let verifier = verifier(&[SECRET]);
        let headers = fixture_headers(line);
        assert_eq!(
            verifier
                .check_headers(&headers, NOW)
                .map(|signed| signed.timestamp()),
            Ok(Some(NOW))
        );
        assert!(matches!(
            verifier.check_headers(&headers, NOW + 301),
            Err(SignatureError::OutsideWindow { .. })
        ));
        assert_eq!(
            verifier
                .check_headers(&HeaderMap::new(), NOW)
                .map(|signed| signed.timestamp()),
            Err(SignatureError::Missing {
                header: "X-Timestamp"
            })
        );
    }

    #[test]
    fn each_encoding_accepts_its_own_forms_only() {
        let body = br#"{"event":"message"}"#;
        let mut mac = secret(SECRET).mac();
        mac.update(body);
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let prefixed = format!("sha256={hex}");
        let check = |encoding, value: &str| {
            let scheme = Scheme::new("test", "X-Webhook-Signature", encoding);
            let verifier = Verifier::with_scheme(scheme, vec![secret(SECRET)]).expect("one secret");
            let mut headers = HeaderMap::new();
            headers.insert("x-webhook-signature", value.parse().expect("valid header"));
            verifier
                .verify_at(&headers, body, NOW)
                .map(|verified| verified.timestamp)
        };
        let malformed = |expected| {
            Err(SignatureError::Malformed {
                header: "X-Webhook-Signature",
                expected,
            })
        };
        assert_eq!(check(Encoding::Hex, &hex), Ok(None));
        assert_eq!(check(Encoding::Hex, &prefixed), malformed("64 hex digits"));
        assert_eq!(check(Encoding::PrefixedHex, &prefixed), Ok(None));
        assert_eq!(
            check(Encoding::PrefixedHex, &hex),
            malformed("sha256= followed by 64 hex digits")
        );
        assert_eq!(check(Encoding::PrefixedOrBareHex, &hex), Ok(None));
        assert_eq!(check(Encoding::PrefixedOrBareHex, &prefixed), Ok(None));
        assert_eq!(
            check(Encoding::PrefixedOrBareHex, &hex.to_uppercase()),
            Ok(None)
        );
        // Signed without a timestamp, so a timestamp-dot-body signature is not it.
        let with_timestamp = sign(&secret(SECRET), NOW, body);
        assert_eq!(
            check(Encoding::PrefixedHex, &with_timestamp),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn the_escaping_scan_finds_every_byte_from_0x7f_anywhere() {
        for length in [1, 63, 64, 65, 200] {
            for at in [0, length / 2, length - 1] {
                for byte in 0..=u8::MAX {
                    let mut body = vec![b'a'; length];
                    body[at] = byte;
                    assert_eq!(
                        needs_escaping(&body),
                        byte >= 0x7f,
                        "byte {byte:#x} at {at} of {length}"
                    );
                }
            }
        }
        assert!(!needs_escaping(b""));
    }

    /// What `ensure_ascii=True` changes in text that is already JSON, a
    /// character at a time: each character from 0x7f as `\uXXXX`, above 0xffff
    /// as a UTF-16 pair. (Quotes, backslashes and control characters are
    /// escaped alike in both forms, by the JSON itself.)
    fn escaped_one_char_at_a_time(text: &str) -> String {
        let mut escaped = String::new();
        for ch in text.chars() {
            if u32::from(ch) < 0x7f {
                escaped.push(ch);
            } else {
                let mut units = [0; 2];
                for unit in ch.encode_utf16(&mut units) {
                    escaped.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
        escaped
    }

    /// Text in pieces: ASCII runs of every length the escaping treats apart
    /// (a byte or two, a word, a buffer's worth, a pass-through run) between
    /// characters of every UTF-8 length, DEL included.
    fn mixed_text() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            (0..3usize, any::<u8>()).prop_map(|(len, seed)| ascii_run(len, seed)),
            (3..40usize, any::<u8>()).prop_map(|(len, seed)| ascii_run(len, seed)),
            (200..1300usize, any::<u8>()).prop_map(|(len, seed)| ascii_run(len, seed)),
            prop::sample::select(vec![
                '\u{7f}',
                '\u{80}',
                'é',
                'Ж',
                '\u{7ff}',
                '\u{800}',
                '中',
                '\u{ffff}',
                '\u{10000}',
                '👋',
                '\u{10ffff}'
            ])
            .prop_map(String::from),
            any::<char>().prop_map(String::from),
        ];
        proptest::collection::vec(piece, 0..60).prop_map(|pieces| pieces.concat())
    }

    fn ascii_run(len: usize, seed: u8) -> String {
        (0..len)
            .map(|at| char::from(b' ' + ((at as u8).wrapping_add(seed) % 95)))
            .collect()
    }

    proptest::proptest! {
        #[test]
        fn escaping_matches_the_sender_one_char_at_a_time(text in mixed_text()) {
            let expected = escaped_one_char_at_a_time(&text);
            let escaped = escape_non_ascii(&text);
            proptest::prop_assert_eq!(escaped.as_ref(), expected.as_str());
            let mut into = b"prefix".to_vec();
            escape_non_ascii_into(&text, &mut into);
            proptest::prop_assert_eq!(&into[6..], expected.as_bytes());
        }
    }

    #[test]
    fn an_unchanged_run_ends_at_the_first_byte_from_0x7f() {
        for length in [1, 7, 8, 9, 16, 63, 200] {
            for at in [0, 1, 7, 8, length / 2, length - 1] {
                if at >= length {
                    continue;
                }
                for byte in 0..=u8::MAX {
                    let mut body = vec![b'a'; length];
                    body[at] = byte;
                    let expected = if byte >= 0x7f { at } else { length };
                    assert_eq!(
                        unchanged_run(&body),
                        expected,
                        "{byte:#x} at {at} of {length}"
                    );
                }
            }
        }
        // A carry out of 0xff must not hide the byte it starts from, nor
        // flag the ASCII before it.
        assert_eq!(unchanged_run(b"abcdef~\xff~~~~~~~~"), 7);
        assert_eq!(unchanged_run(b""), 0);
    }
}
