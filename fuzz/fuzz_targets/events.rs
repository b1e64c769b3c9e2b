//! Other platforms' event routes: `Webhook::handle` on an events-only webhook
//! with `/sendseven` (SendSeven's scheme) and `/whatsapp` (the
//! `X-Webhook-Signature` family), fed in-memory requests.
//!
//! Input layout: 4 choice bytes, then one `\n`-terminated field for each
//! choice that picked "custom", then the body.
//!
//! ```text
//! [route][signature][timestamp][delivery id]
//! ```
//!
//! - route: `/sendseven`, `/whatsapp`, or another path;
//! - signature: correct for the route's scheme (both encodings for
//!   `/whatsapp`), missing, or custom bytes;
//! - timestamp (SendSeven): now, stale, missing, or custom;
//! - delivery id: fixed, missing, or custom.
//!
//! Checks: the status is one the crate documents for event routes (200, 400,
//! 401, 404, 413, 503); every response is JSON; 200 is
//! `{"status":"received"|"duplicate"}`; every other body is `{"error": ...}`
//! of at most 300 bytes plus `...`, without the secrets; a correctly signed
//! JSON body sent now is answered 200 (or 503 when the queue is full); a
//! request without a correct signature is never answered 200; the handler
//! only ever sees the route's verified bytes.
#![no_main]

use std::convert::Infallible;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper::header::HeaderValue;
use libfuzzer_sys::fuzz_target;
use partner_webhook::{Config, Event, EventsConfig, Scheme, Secret, Webhook, event_handler_fn};

const SENDSEVEN_SECRET: &str = "whsec_fuzz_4c1d9e2f7a3b5c6d8e0f1a2b";
const WHATSAPP_SECRET: &str = "wa-fuzz-8f3e2d1c0b9a";
const LIMIT: usize = 64 * 1024;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    webhook: Webhook,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let check = |route: &'static str| {
            event_handler_fn(move |event: Event| async move {
                // Only what verified on this route reaches its handler. The
                // server catches a handler's panic, so a broken rule aborts.
                let json = serde_json::from_slice::<serde_json::Value>(&event.body).is_ok();
                if &*event.route != route || !json {
                    std::process::abort();
                }
                Ok::<_, Infallible>(())
            })
        };
        let secret = |text: &str| Secret::new(text).expect("non-empty secret");
        let config = Config::default().body_limit(LIMIT);
        let webhook = Webhook::for_events(&config)
            .and_then(|webhook| {
                webhook.route(
                    "/sendseven",
                    &EventsConfig::new(Scheme::sendseven(), secret(SENDSEVEN_SECRET)),
                    check("/sendseven"),
                )
            })
            .and_then(|webhook| {
                webhook.route(
                    "/whatsapp",
                    &EventsConfig::new(Scheme::webhook_signature(), secret(WHATSAPP_SECRET))
                        .accept_replays_caught_by_dedupe_only(),
                    check("/whatsapp"),
                )
            })
            .expect("valid routes");
        Fixture {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("current-thread runtime"),
            webhook,
        }
    })
}

fn hex_hmac(secret: &str, parts: &[&[u8]]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
    for part in parts {
        mac.update(part);
    }
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The digest a signature header carries, lowercase, in the forms its route's
/// scheme accepts: `sha256=` required on /sendseven, optional on /whatsapp.
fn carried_digest(route: u8, signature: &[u8]) -> Option<String> {
    let hex = match (route, signature.strip_prefix(b"sha256=")) {
        (0, None) => return None,
        (_, Some(hex)) => hex,
        (_, None) => signature,
    };
    Some(String::from_utf8_lossy(hex).to_ascii_lowercase())
}

/// Splits off one `\n`-terminated field.
fn field<'a>(rest: &mut &'a [u8]) -> &'a [u8] {
    let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let (field, tail) = rest.split_at(end);
    *rest = tail.get(1..).unwrap_or_default();
    field
}

fuzz_target!(|data: &[u8]| {
    let Some((choices, mut rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let [route, signature, timestamp, delivery] = choices.map(|choice| choice % 4);
    let path: Vec<u8> = match route {
        0 => b"/sendseven".to_vec(),
        1 | 2 => b"/whatsapp".to_vec(),
        _ => [b"/".as_slice(), field(&mut rest)].concat(),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let timestamp: Option<Vec<u8>> = match timestamp {
        0 => Some(now.to_string().into_bytes()),
        1 => Some((now - 1000).to_string().into_bytes()),
        2 => None,
        _ => Some(field(&mut rest).to_vec()),
    };
    let delivery: Option<Vec<u8>> = match delivery {
        0 => Some(b"dlv_fuzz".to_vec()),
        1 => None,
        _ => Some(field(&mut rest).to_vec()),
    };
    let custom_signature = (signature == 3).then(|| field(&mut rest).to_vec());
    let body = rest;

    let correct = match route {
        0 => timestamp.as_ref().map(|ts| {
            let digest = hex_hmac(SENDSEVEN_SECRET, &[ts, b".", body]);
            format!("sha256={digest}").into_bytes()
        }),
        1 => Some(format!("sha256={}", hex_hmac(WHATSAPP_SECRET, &[body])).into_bytes()),
        2 => Some(hex_hmac(WHATSAPP_SECRET, &[body]).into_bytes()),
        _ => None,
    };
    let signature = match signature {
        0 | 1 => correct.clone(),
        2 => None,
        _ => custom_signature,
    };
    let expected_digest = match route {
        0 => timestamp
            .as_ref()
            .map(|ts| hex_hmac(SENDSEVEN_SECRET, &[ts, b".", body])),
        1 | 2 => Some(hex_hmac(WHATSAPP_SECRET, &[body])),
        _ => None,
    };
    // By what the header carries, not its bytes: the server rightly accepts
    // uppercase hex, and on /whatsapp the digest with or without `sha256=`.
    let signed_correctly = signature
        .as_deref()
        .zip(expected_digest)
        .is_some_and(|(signature, expected)| carried_digest(route, signature) == Some(expected));
    let header_name = if route == 0 {
        "x-sendseven-signature"
    } else {
        "x-webhook-signature"
    };

    let Ok(uri) = hyper::Uri::try_from(path.as_slice()) else {
        return;
    };
    let Ok(mut request) = Request::post(uri).body(Full::new(Bytes::copy_from_slice(body))) else {
        return;
    };
    let headers = [
        ("content-type", Some(b"application/json".to_vec())),
        (header_name, signature.clone()),
        ("x-sendseven-timestamp", timestamp.clone()),
        ("x-sendseven-delivery-id", delivery),
    ];
    for (name, value) in headers {
        let Some(value) = value else { continue };
        // A value HTTP cannot carry is a request that cannot be sent.
        let Ok(value) = HeaderValue::from_bytes(&value) else {
            return;
        };
        request.headers_mut().insert(name, value);
    }
    let exact_path = request.uri().path().to_owned();

    let fixture = fixture();
    let response = fixture.runtime.block_on(fixture.webhook.handle(request));
    let status = response.status().as_u16();
    assert_eq!(
        response.headers().get("content-type").map(|v| v.as_bytes()),
        Some(b"application/json".as_slice())
    );
    let answer = fixture
        .runtime
        .block_on(response.into_body().collect())
        .expect("infallible body")
        .to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&answer).expect("JSON answer");
    assert!(
        [200, 400, 401, 404, 413, 503].contains(&status),
        "undocumented status {status}: {json}"
    );
    let text = String::from_utf8_lossy(&answer);
    assert!(!text.contains(SENDSEVEN_SECRET) && !text.contains(WHATSAPP_SECRET));
    if status == 200 {
        let said = json["status"].as_str();
        assert!(matches!(said, Some("received" | "duplicate")), "{json}");
        assert!(
            signed_correctly,
            "accepted without a correct signature: {json}"
        );
    } else {
        let error = json["error"].as_str().expect("an error string");
        assert!(error.len() <= 303, "{error}");
    }
    let routed = exact_path == "/sendseven" || exact_path == "/whatsapp";
    let fresh = route != 0 || timestamp.as_deref() == Some(now.to_string().as_bytes());
    let json_body = serde_json::from_slice::<serde_json::Value>(body).is_ok();
    if routed && signed_correctly && fresh && json_body && body.len() <= LIMIT {
        assert!(
            status == 200 || status == 503,
            "a correctly signed event got {status}: {json}"
        );
    }
    if !routed {
        assert_eq!(status, 404, "{json}");
    }
});
