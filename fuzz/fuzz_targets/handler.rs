//! The whole request handler: `Webhook::handle` on an in-memory request.
//!
//! Input layout: 8 choice bytes, then one `\n`-terminated field for each
//! choice that picked "custom" (in the order method, path, Content-Type,
//! Content-Length, X-Timestamp, X-Signature), then the body.
//!
//! ```text
//! [method][path][content-type][content-length][timestamp][signature][body mode][pad]
//! ```
//!
//! The signature choices include a correct one for the current time (over the
//! raw body or over `escape_non_ascii(body)`), so valid payloads reach the
//! assistant. The assistant echoes the message content, returns `Err` when it
//! contains `ERR` and panics when it contains `PANIC`; both must become 500.
//!
//! Set `FUZZ_DEBUG=1` to print every status (to see which paths a corpus reaches).
//!
//! Checks: the status is one the crate documents (200, 400, 401, 405, 413,
//! 415, 422, 500) and equals the one predicted from the choices whenever the
//! choices determine it; every response is `Content-Type: application/json`;
//! every non-200 body is `{"error": "<at most 300 bytes + ...>"}` that shows
//! neither the secret nor the expected signature; 405 carries the right
//! `Allow`; 200 is `{"status":"ok"}` or `{"reply": <the echoed content>, ...}`.
#![no_main]

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request};
use libfuzzer_sys::fuzz_target;
use partner_webhook::{
    BoxError, Config, MessageReceived, ReplayCache, Reply, Secret, Webhook, assistant_fn,
    async_trait, escape_non_ascii, sign,
};

const SECRET: &str = "3f9a1c0e5b7d2468ace13579bdf02468ace13579bdf02468ace13579bdf02468";
const LIMIT: usize = 64 * 1024;
/// The payload of the assistant's planned panic; the panic hook lets only it through.
const PLANNED_PANIC: &str = "fuzz: planned assistant panic";

struct Fixture {
    runtime: tokio::runtime::Runtime,
    webhook: Webhook,
    secret: Secret,
    wrong: Secret,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let secret = Secret::new(SECRET).expect("non-empty secret");
        let echo = assistant_fn(|message: MessageReceived, context| async move {
            let content = message.message.content;
            if content.contains("PANIC") {
                std::panic::panic_any(PLANNED_PANIC);
            }
            if content.contains("ERR") {
                return Err(std::io::Error::other("planned assistant failure"));
            }
            // Only verified requests may reach the assistant on a server with a secret.
            assert!(
                context.verified && context.signed_at.is_some(),
                "{context:?}"
            );
            Ok(Reply::new(content).with_metadata("app", context.app_id))
        });
        let mut config = Config::default().secret(secret.clone()).body_limit(LIMIT);
        // The fuzzer repeats inputs, which the real cache would refuse as
        // replays; replay refusal has its own tests in tests/it/hostile.rs.
        config.replay_cache = std::sync::Arc::new(NoReplayCheck);
        Fixture {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("current-thread runtime"),
            webhook: Webhook::new(&config, echo).expect("valid config"),
            secret,
            wrong: Secret::new("not-the-secret").expect("non-empty"),
        }
    })
}

/// `FUZZ_DEBUG=1` prints each input's status, e.g. to see which paths a corpus reaches.
fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("FUZZ_DEBUG").is_some())
}

fn next_field<'a>(rest: &mut &'a [u8]) -> &'a [u8] {
    match rest.iter().position(|&b| b == b'\n') {
        Some(at) => {
            let field = &rest[..at];
            *rest = &rest[at + 1..];
            field
        }
        None => std::mem::take(rest),
    }
}

const METHODS: &[&str] = &[
    "POST", "GET", "PUT", "HEAD", "OPTIONS", "DELETE", "PATCH", "CONNECT", "TRACE", "post",
    "PROPFIND",
];
const PATHS: &[&str] = &[
    "/webhook",
    "/healthz",
    "/",
    "/healthz/",
    "/HEALTHZ",
    "/healthz?probe=1",
    "*",
    "http://example.test/healthz",
    "/a%2Fb?token=x",
];
/// (value, accepted as JSON)
const CONTENT_TYPES: &[(&str, bool)] = &[
    ("application/json", true),
    ("Application/JSON; charset=utf-8", true),
    ("application/vnd.partner+json", true),
    ("text/ld+json", true),
    ("text/plain", false),
    ("application/jsonp", false),
    ("+json", false),
    ("application/+json", false),
    ("application/x-www-form-urlencoded", false),
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Sig {
    None,
    Raw,
    Escaped,
    Upper,
    WrongSecret,
    Custom,
    Twice,
    OtherTime,
    Tampered,
}

fuzz_target!(
    init: {
        // libfuzzer-sys aborts on every panic, even one caught later. Let the
        // assistant's planned panic through so the handler's catch_unwind is
        // exercised; everything else still aborts and is reported.
        let aborting = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() == Some(&PLANNED_PANIC) {
                return;
            }
            aborting(info);
        }));
    },
    |data: &[u8]| {
        let Some((choices, mut rest)) = data.split_first_chunk::<8>() else {
            return;
        };
        let [m, p, ct, cl, ts, sg, mode, pad] = *choices;
        let fx = fixture();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();

        // Method.
        let mi = usize::from(m) % (METHODS.len() + 1);
        let method = if mi < METHODS.len() {
            Method::from_bytes(METHODS[mi].as_bytes()).expect("listed methods are valid")
        } else {
            match Method::from_bytes(next_field(&mut rest)) {
                Ok(method) => method,
                Err(_) => return,
            }
        };
        // Path.
        let pi = usize::from(p) % (PATHS.len() + 1);
        let path: Vec<u8> = if pi < PATHS.len() {
            PATHS[pi].as_bytes().to_vec()
        } else {
            next_field(&mut rest).to_vec()
        };
        // Content-Type: None = header absent; Some((value, Some(json?))) known.
        let cti = usize::from(ct) % (CONTENT_TYPES.len() + 2);
        let content_type: Option<(Vec<u8>, Option<bool>)> = match cti {
            0 => None,
            i if i <= CONTENT_TYPES.len() => {
                let (value, json) = CONTENT_TYPES[i - 1];
                Some((value.as_bytes().to_vec(), Some(json)))
            }
            _ => Some((next_field(&mut rest).to_vec(), None)),
        };
        let cl_choice = cl % 12;
        let cl_custom = if cl_choice == 11 { Some(next_field(&mut rest).to_vec()) } else { None };
        let ts_choice = ts % 10;
        let ts_custom = if ts_choice == 8 { Some(next_field(&mut rest).to_vec()) } else { None };
        let sig = match sg % 9 {
            0 => Sig::None,
            1 => Sig::Raw,
            2 => Sig::Escaped,
            3 => Sig::Upper,
            4 => Sig::WrongSecret,
            5 => Sig::Custom,
            6 => Sig::Twice,
            7 => Sig::OtherTime,
            _ => Sig::Tampered,
        };
        let sig_custom = if sig == Sig::Custom { Some(next_field(&mut rest).to_vec()) } else { None };

        // Body.
        let mut body: Vec<u8> = match mode % 4 {
            2 => Vec::new(),
            1 => {
                // Leading JSON whitespace keeps a valid payload valid and puts
                // the length right around the limit.
                let target = LIMIT - 128 + usize::from(pad);
                let mut padded = vec![b' '; target.saturating_sub(rest.len())];
                padded.extend_from_slice(rest);
                padded
            }
            _ => rest.to_vec(),
        };
        let with_ids = mode & 0x10 != 0;

        // Timestamp header values and the time the signature is made for.
        let ts_values: Vec<Vec<u8>> = match ts_choice {
            0 => vec![],
            1 | 9 => vec![now.to_string().into_bytes()],
            2 => vec![(now - 290).to_string().into_bytes()],
            3 => vec![(now + 290).to_string().into_bytes()],
            4 => vec![(now - 400).to_string().into_bytes()],
            5 => vec![(now + 400).to_string().into_bytes()],
            6 => vec![format!("0{now}").into_bytes()],
            7 => vec![now.to_string().into_bytes(); 2],
            _ => vec![ts_custom.clone().unwrap_or_default()],
        };
        let signed_at: u64 = match ts_choice {
            2 => now - 290,
            3 => now + 290,
            4 => now - 400,
            5 => now + 400,
            8 => ts_custom
                .as_deref()
                .and_then(|t| std::str::from_utf8(t).ok())
                .and_then(|t| t.parse().ok())
                .unwrap_or(now),
            _ => now,
        };
        let escaped: Vec<u8> = match std::str::from_utf8(&body) {
            Ok(text) => escape_non_ascii(text).into_owned().into_bytes(),
            Err(_) => body.clone(),
        };
        let good = sign(&fx.secret, signed_at, &body);
        let sig_values: Vec<Vec<u8>> = match sig {
            Sig::None => vec![],
            Sig::Raw => vec![good.clone().into_bytes()],
            Sig::Escaped => vec![sign(&fx.secret, signed_at, &escaped).into_bytes()],
            Sig::Upper => vec![format!("sha256={}", good[7..].to_uppercase()).into_bytes()],
            Sig::WrongSecret => vec![sign(&fx.wrong, signed_at, &body).into_bytes()],
            Sig::Custom => vec![sig_custom.clone().unwrap_or_default()],
            Sig::Twice => vec![good.clone().into_bytes(); 2],
            Sig::OtherTime => vec![sign(&fx.secret, signed_at.wrapping_sub(1), &body).into_bytes()],
            Sig::Tampered => {
                let signature = good.clone().into_bytes();
                match body.last_mut() {
                    Some(last) => *last ^= 0x20,
                    None => body.push(b' '),
                }
                vec![signature]
            }
        };

        let length = body.len();
        let cl_values: Vec<Vec<u8>> = match cl_choice {
            0 => vec![],
            1 => vec![length.to_string().into_bytes()],
            2 => vec![(length + 1).to_string().into_bytes()],
            3 => vec![length.saturating_sub(1).to_string().into_bytes()],
            4 => vec![b"0".to_vec()],
            5 => vec![LIMIT.to_string().into_bytes()],
            6 => vec![(LIMIT + 1).to_string().into_bytes()],
            7 => vec![b"99999999999999999999999".to_vec()],
            8 => vec![format!("+{}", LIMIT + 1).into_bytes()],
            9 => vec![b"-1".to_vec()],
            10 => vec![length.to_string().into_bytes(), (LIMIT + 1).to_string().into_bytes()],
            _ => vec![cl_custom.clone().unwrap_or_default()],
        };

        // Build the request; skip what the http builder rejects.
        let mut builder = Request::builder().method(method.clone());
        builder = builder.uri(path.as_slice());
        let mut add = |name: &str, values: &[Vec<u8>]| {
            for value in values {
                builder = std::mem::take(&mut builder).header(name, value.as_slice());
            }
        };
        if let Some((value, _)) = &content_type {
            add("content-type", std::slice::from_ref(value));
        }
        add("content-length", &cl_values);
        add("x-timestamp", &ts_values);
        add("x-signature", &sig_values);
        if with_ids {
            add("x-app-id", &[b"app-\xe9\xff".to_vec()]);
            add("x-thread-id", &[b"thread-1".to_vec()]);
        }
        let Ok(request) = builder.body(Full::new(Bytes::from(body.clone()))) else {
            return;
        };
        let uri_path = request.uri().path().to_owned();
        // Everything the client sent, as text, for the leak check.
        let sent = {
            let mut sent = format!("{} {}\n", request.method(), request.uri());
            for (name, value) in request.headers() {
                sent.push_str(&format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes())));
            }
            sent.push_str(&String::from_utf8_lossy(&body));
            sent
        };

        // What the documented behaviour predicts; None when the choices leave it open.
        let predicted: Option<u16> = (|| {
            let is_health = uri_path == "/healthz" || uri_path == "/readyz";
            if method != Method::POST {
                return Some(if method == Method::GET && is_health { 200 } else { 405 });
            }
            if let Some((_, json)) = &content_type {
                if !(*json)? {
                    return Some(415);
                }
            }
            // The signature headers are judged before the body is read: missing,
            // duplicated or outside the window is 401 whatever the size.
            let headers_ok = match (ts_choice, sig) {
                (8, _) | (_, Sig::Custom) => return None,
                (0 | 4 | 5 | 7, _) | (_, Sig::None | Sig::Twice) => false,
                _ => true,
            };
            if !headers_ok {
                return Some(401);
            }
            let declared = cl_values
                .first()
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|t| t.parse::<u64>().ok());
            if declared.is_some_and(|d| d > LIMIT as u64) || body.len() > LIMIT {
                return Some(413);
            }
            // Then the body against them: a leading zero in X-Timestamp changes
            // the signed text.
            let signature_ok = match (ts_choice, sig) {
                (6, _) => false,
                (_, Sig::Raw | Sig::Escaped | Sig::Upper) => true,
                _ => false,
            };
            if !signature_ok {
                return Some(401);
            }
            match MessageReceived::from_json(&body) {
                Err(error) => Some(error.status().as_u16()),
                Ok(message) => {
                    let content = &message.message.content;
                    Some(if content.contains("PANIC") || content.contains("ERR") { 500 } else { 200 })
                }
            }
        })();

        let response = fx.runtime.block_on(fx.webhook.handle(request));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = fx
            .runtime
            .block_on(response.into_body().collect())
            .expect("infallible body")
            .to_bytes();
        let shown = String::from_utf8_lossy(&bytes);

        if debug() {
            eprintln!("FUZZ_DEBUG status={status} predicted={predicted:?} {method} {uri_path} body={}B {shown}", body.len());
        }
        assert!(
            [200, 400, 401, 405, 413, 415, 422, 500].contains(&status),
            "undocumented status {status}: {shown}"
        );
        if let Some(expected) = predicted {
            assert_eq!(status, expected, "unexpected status for {method} {uri_path}: {shown}");
        }
        let content_types: Vec<_> = headers.get_all(CONTENT_TYPE).iter().collect();
        assert_eq!(
            content_types,
            [&HeaderValue::from_static("application/json")],
            "Content-Type of a {status}"
        );
        let json: serde_json::Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{status} body is not JSON ({e}): {shown}"));
        let object = json.as_object().unwrap_or_else(|| panic!("not an object: {shown}"));
        if status == 200 {
            if let Some(reply) = object.get("reply") {
                let reply = reply.as_str().expect("reply is a string");
                let message = MessageReceived::from_json(&body).expect("200 only for valid payloads");
                assert_eq!(reply, message.message.content, "reply is not the echo");
                assert!(object.keys().all(|k| k == "reply" || k == "metadata"), "{shown}");
            } else {
                assert_eq!(json, serde_json::json!({"status": "ok"}));
                assert!(method == Method::GET && uri_path == "/healthz");
            }
        } else {
            assert_eq!(object.len(), 1, "error body has extra fields: {shown}");
            let error = object
                .get("error")
                .and_then(|e| e.as_str())
                .unwrap_or_else(|| panic!("no string \"error\": {shown}"));
            assert!(error.len() <= 300 + 3, "error message too long: {} bytes", error.len());
            // A leak is the secret or the expected signature in an error the
            // client did not already have: error texts may quote the request.
            for needle in [SECRET, &good[7..]] {
                let needle = needle.to_ascii_lowercase();
                let sent = sent.to_ascii_lowercase();
                assert!(
                    !error.to_ascii_lowercase().contains(&needle) || sent.contains(&needle),
                    "leak: {error}"
                );
            }
            if status == 500 {
                assert_eq!(error, "the assistant failed to reply", "500 shows internals");
            }
        }
        let allow = headers.get(ALLOW);
        if status == 405 {
            let expected = if uri_path == "/healthz" { "GET, POST" } else { "POST" };
            assert_eq!(allow, Some(&HeaderValue::from_static(expected)));
        } else {
            assert!(allow.is_none(), "Allow on a {status}");
        }
    }
);

/// Accepts every signature as new, so repeated fuzz inputs reach the assistant.
#[derive(Debug)]
struct NoReplayCheck;

#[async_trait]
impl ReplayCache for NoReplayCheck {
    async fn first_seen(&self, _: [u8; 32], _: u64, _: u64) -> Result<bool, BoxError> {
        Ok(true)
    }
}
