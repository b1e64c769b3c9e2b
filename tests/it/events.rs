//! Other platforms' events over real sockets, from deliveries signed by
//! Python's `hmac` (tests/fixtures/events/generate.py): each seed's delivery
//! reaches the handler once, retries are answered `duplicate`, bad signatures
//! `401`, a full queue `503`, a failing handler is logged, and shutdown
//! drains the queue.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use partner_webhook::testing::FixedClock;
use partner_webhook::{
    Config, EventHandler, EventsConfig, Scheme, Secret, SendSevenEvent, SetupError, Webhook,
    WhatsAppEvent, event_handler_fn, sign,
};
use serde::Deserialize;

use crate::support::*;

#[derive(Debug, Deserialize)]
struct Fixture {
    signed_at: u64,
    secrets: HashMap<String, String>,
    deliveries: Vec<Delivery>,
    retries: Vec<Delivery>,
    forgeries: Vec<Delivery>,
}

#[derive(Debug, Clone, Deserialize)]
struct Delivery {
    name: String,
    route: String,
    headers: Vec<(String, String)>,
    body: String,
    id: Option<String>,
    kind: String,
}

fn fixture() -> Fixture {
    serde_json::from_str(include_str!("../fixtures/events/deliveries.json")).unwrap()
}

impl Delivery {
    fn request(&self) -> Vec<u8> {
        request("POST", &self.route, &self.headers, self.body.as_bytes())
    }

    /// The same delivery with header `name` set to `value`, or removed.
    fn with_header(&self, name: &str, value: Option<&str>) -> Delivery {
        let mut changed = self.clone();
        changed
            .headers
            .retain(|(key, _)| !key.eq_ignore_ascii_case(name));
        if let Some(value) = value {
            changed.headers.push((name.to_owned(), value.to_owned()));
        }
        changed
    }

    fn header(&self, name: &str) -> &str {
        let found = self.headers.iter().find(|(key, _)| key == name);
        &found.unwrap().1
    }
}

/// What a handler saw of one event.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Seen {
    route: String,
    id: Option<String>,
    kind: Option<String>,
    /// The kind as the seed's typed shape reads it.
    typed_kind: String,
    body: String,
}

#[derive(Clone, Default)]
struct Record(Arc<Mutex<Vec<Seen>>>);

impl Record {
    fn handler(&self) -> impl EventHandler + use<> {
        let record = self.clone();
        event_handler_fn(move |event| {
            let record = record.clone();
            async move {
                let typed_kind = if &*event.route == "/sendseven" {
                    event.parse::<SendSevenEvent>()?.kind
                } else {
                    event.parse::<WhatsAppEvent>()?.event
                };
                record.0.lock().unwrap().push(Seen {
                    route: event.route.to_string(),
                    id: event.id.clone(),
                    kind: event.kind.clone(),
                    typed_kind,
                    body: String::from_utf8(event.body.to_vec()).unwrap(),
                });
                Ok::<_, serde_json::Error>(())
            }
        })
    }

    fn seen(&self) -> Vec<Seen> {
        let mut seen = self.0.lock().unwrap().clone();
        seen.sort();
        seen
    }
}

fn secret(fixture: &Fixture, route: &str) -> Secret {
    Secret::new(&fixture.secrets[route]).unwrap()
}

fn sendseven_config(fixture: &Fixture) -> EventsConfig {
    EventsConfig::new(Scheme::sendseven(), secret(fixture, "/sendseven"))
}

fn whatsapp_config(fixture: &Fixture) -> EventsConfig {
    EventsConfig::new(Scheme::webhook_signature(), secret(fixture, "/whatsapp"))
        .accept_replays_caught_by_dedupe_only()
}

/// `/sendseven` and `/whatsapp` with handlers `sendseven` and `whatsapp`, the
/// clock 5 s after the fixtures were signed. Returns the server and a clone of
/// its webhook, to drain.
async fn serve_events(
    fixture: &Fixture,
    (sendseven, whatsapp): (EventsConfig, EventsConfig),
    (on_sendseven, on_whatsapp): (impl EventHandler, impl EventHandler),
    config: &Config,
) -> (TestServer, Webhook, FixedClock) {
    let clock = FixedClock::new(fixture.signed_at + 5);
    let webhook = Webhook::for_events(config)
        .unwrap()
        .route("/sendseven", &sendseven, on_sendseven)
        .unwrap()
        .route("/whatsapp", &whatsapp, on_whatsapp)
        .unwrap()
        .with_clock(clock.clone());
    let server = TestServer::with_webhook(config, webhook.clone()).await;
    (server, webhook, clock)
}

/// [`serve_events`] with the default configs, both routes recording into one
/// [`Record`].
async fn serve_recorded(fixture: &Fixture) -> (TestServer, Webhook, FixedClock, Record) {
    let record = Record::default();
    let configs = (sendseven_config(fixture), whatsapp_config(fixture));
    let handlers = (record.handler(), record.handler());
    let (server, webhook, clock) =
        serve_events(fixture, configs, handlers, &Config::default()).await;
    (server, webhook, clock, record)
}

fn expected(delivery: &Delivery) -> Seen {
    Seen {
        route: delivery.route.clone(),
        id: delivery.id.clone(),
        kind: Some(delivery.kind.clone()),
        typed_kind: delivery.kind.clone(),
        body: delivery.body.clone(),
    }
}

fn assert_status(response: &HttpResponse, status: &str) {
    assert_eq!(response.status, 200, "body: {}", response.text());
    assert_eq!(response.json(), serde_json::json!({ "status": status }));
}

#[tokio::test]
async fn each_seed_delivery_reaches_the_handler_once_and_retries_are_duplicates() {
    let fixture = fixture();
    let (server, webhook, _clock, record) = serve_recorded(&fixture).await;

    for delivery in &fixture.deliveries {
        let response = server.send(&delivery.request()).await;
        assert_eq!(
            response.status,
            200,
            "{}: {}",
            delivery.name,
            response.text()
        );
        assert_status(&response, "received");
    }
    // The same bytes again, and SendSeven's re-signed retry with the same
    // delivery id: acknowledged, never handled twice.
    for delivery in fixture.deliveries.iter().chain(&fixture.retries) {
        assert_status(&server.send(&delivery.request()).await, "duplicate");
    }
    assert_eq!(webhook.drain_events(Duration::from_secs(5)).await, 0);

    let mut wanted: Vec<Seen> = fixture.deliveries.iter().map(expected).collect();
    wanted.sort();
    // The session API's message and its status event share a messageId and
    // are two events: duplicates are not recognised by payload fields.
    assert_eq!(record.seen(), wanted);
}

#[tokio::test]
async fn a_retry_with_a_new_delivery_id_but_the_same_signature_is_a_duplicate() {
    // The delivery id is not signed: a captured SendSeven request replayed
    // with a fresh id is still caught by its signature.
    let fixture = fixture();
    let (server, webhook, _clock, record) = serve_recorded(&fixture).await;
    let original = &fixture.deliveries[0];
    assert_status(&server.send(&original.request()).await, "received");
    let renamed = original.with_header("X-Sendseven-Delivery-Id", Some("dlv_forged"));
    assert_status(&server.send(&renamed.request()).await, "duplicate");
    webhook.drain_events(Duration::from_secs(5)).await;
    assert_eq!(record.seen().len(), 1);
}

#[tokio::test]
async fn bad_signatures_are_refused_for_every_preset() {
    let fixture = fixture();
    let (server, webhook, clock, record) = serve_recorded(&fixture).await;
    let refused = |delivery: Delivery, why: String| {
        let server = &server;
        async move {
            let response = server.send(&delivery.request()).await;
            let error = response.assert_json_error(401);
            assert!(error.contains(&why), "{}: {error:?}", delivery.name);
            assert_eq!(response.header("connection"), Some("close"));
        }
    };
    for forged in &fixture.forgeries {
        refused(forged.clone(), "signature mismatch".into()).await;
    }
    let sendseven = &fixture.deliveries[0];
    let bare = &fixture.deliveries[2];
    let prefixed = &fixture.deliveries[4];
    for (delivery, header) in [
        (sendseven, "X-Sendseven-Signature"),
        (bare, "X-Webhook-Signature"),
        (prefixed, "X-Webhook-Signature"),
    ] {
        let mut changed = delivery.clone();
        let last = changed.body.rfind('}').unwrap();
        changed.body.replace_range(last..=last, "]");
        refused(changed, "signature mismatch".into()).await;
        let missing = delivery.with_header(header, None);
        refused(missing, format!("missing {header} header")).await;
        let sha1 = delivery.with_header(header, Some("sha1=0123"));
        refused(sha1, format!("malformed {header} header")).await;
        let mut twice = delivery.clone();
        twice
            .headers
            .push((header.to_owned(), delivery.header(header).to_owned()));
        refused(twice, "sent more than once".into()).await;
    }
    refused(
        sendseven.with_header("X-Sendseven-Timestamp", None),
        "missing X-Sendseven-Timestamp header".into(),
    )
    .await;
    refused(
        sendseven.with_header("X-Sendseven-Timestamp", Some("+1796000000")),
        "malformed X-Sendseven-Timestamp header".into(),
    )
    .await;
    // This platform's headers do not open another platform's route, even
    // over a body signed exactly as SendSeven signs it.
    let body = sendseven.body.as_bytes();
    let mut platform = vec![("Content-Type".to_owned(), "application/json".to_owned())];
    platform.extend([
        ("X-Timestamp".to_owned(), fixture.signed_at.to_string()),
        (
            "X-Signature".to_owned(),
            sign(&secret(&fixture, "/sendseven"), fixture.signed_at, body),
        ),
    ]);
    let error = server
        .send(&request("POST", "/sendseven", &platform, body))
        .await
        .assert_json_error(401);
    assert!(
        error.contains("missing X-Sendseven-Timestamp header"),
        "{error}"
    );

    clock.set(fixture.signed_at - 301);
    refused(
        sendseven.clone(),
        "X-Sendseven-Timestamp is 301 s in the future".into(),
    )
    .await;
    clock.set(fixture.signed_at + 301);
    refused(
        sendseven.clone(),
        "X-Sendseven-Timestamp is 301 s in the past".into(),
    )
    .await;
    // A signature of the body alone has no window to leave.
    assert_status(&server.send(&bare.request()).await, "received");

    webhook.drain_events(Duration::from_secs(5)).await;
    assert_eq!(record.seen(), vec![expected(bare)]);
}

#[tokio::test]
async fn a_full_queue_answers_503_and_the_platforms_retry_is_handled() {
    let fixture = fixture();
    let record = Record::default();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let blocked = {
        let (gate, record) = (Arc::clone(&gate), record.clone());
        event_handler_fn(move |event| {
            let (gate, record) = (Arc::clone(&gate), record.clone());
            async move {
                let _pass = gate.acquire().await.unwrap();
                record.0.lock().unwrap().push(Seen {
                    route: event.route.to_string(),
                    id: event.id.clone(),
                    kind: event.kind.clone(),
                    typed_kind: String::new(),
                    body: String::new(),
                });
                Ok::<_, Infallible>(())
            }
        })
    };
    let configs = (
        sendseven_config(&fixture).queue(1, 1),
        whatsapp_config(&fixture),
    );
    let (server, webhook, _clock) = serve_events(
        &fixture,
        configs,
        (blocked, record.handler()),
        &Config::default(),
    )
    .await;
    let [first, second] = [&fixture.deliveries[0], &fixture.deliveries[1]];
    assert_status(&server.send(&first.request()).await, "received");
    let full = server.send(&second.request()).await;
    let error = full.assert_json_error(503);
    assert!(error.contains("event queue full"), "{error}");
    assert_eq!(full.header("retry-after"), Some("1"));

    gate.add_permits(2);
    // The first event's place frees once its handler is done; the platform's
    // retry of the refused one is then new, not a duplicate.
    let mut retried = server.send(&second.request()).await;
    for _ in 0..100 {
        if retried.status != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        retried = server.send(&second.request()).await;
    }
    assert_status(&retried, "received");
    assert_eq!(webhook.drain_events(Duration::from_secs(5)).await, 0);
    let ids: Vec<_> = record.seen().into_iter().map(|seen| seen.id).collect();
    assert_eq!(ids, [first.id.clone(), second.id.clone()]);
}

/// An `EventHandler` written without the `async_trait` macro: its `handle`
/// panics on a closed conversation before it returns a future.
struct PanicsBeforeItsFuture<H>(H);

impl<H: EventHandler> EventHandler for PanicsBeforeItsFuture<H> {
    fn handle<'life0, 'async_trait>(
        &'life0 self,
        event: partner_webhook::Event,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<(), partner_webhook::BoxError>>
                + Send
                + 'async_trait,
        >,
    >
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        assert_ne!(
            event.kind.as_deref(),
            Some("conversation.closed"),
            "closing went wrong before its future"
        );
        self.0.handle(event)
    }
}

#[tokio::test]
async fn a_handler_panicking_before_its_future_is_logged_and_the_next_is_handled() {
    let (log, _logging) = CapturedLog::start();
    let fixture = fixture();
    let record = Record::default();
    let configs = (sendseven_config(&fixture), whatsapp_config(&fixture));
    let (server, webhook, _clock) = serve_events(
        &fixture,
        configs,
        (PanicsBeforeItsFuture(record.handler()), record.handler()),
        &Config::default(),
    )
    .await;
    for delivery in &fixture.deliveries {
        assert_status(&server.send(&delivery.request()).await, "received");
    }
    assert_eq!(webhook.drain_events(Duration::from_secs(5)).await, 0);
    assert_eq!(record.seen().len(), fixture.deliveries.len() - 1);
    let text = log.text();
    let panicked = text
        .lines()
        .find(|line| line.contains("event handler panicked"))
        .unwrap_or_else(|| panic!("no panic line in:\n{text}"));
    assert!(
        panicked.contains("dlv_0002") && panicked.contains("closing went wrong before its future"),
        "{panicked}"
    );
}

#[tokio::test]
async fn a_failing_or_panicking_handler_is_logged_with_its_event_and_the_next_is_handled() {
    let (log, _logging) = CapturedLog::start();

    let fixture = fixture();
    let record = Record::default();
    let handler = {
        let record = record.clone();
        event_handler_fn(move |event| {
            let on = record.handler();
            async move {
                match event.kind.as_deref() {
                    Some("conversation.closed") => panic!("closing went wrong"),
                    Some("status") => Err("the CRM is down".into()),
                    _ => on.handle(event).await,
                }
            }
        })
    };
    let handler_too = {
        let record = record.clone();
        event_handler_fn(move |event| {
            let on = record.handler();
            async move {
                match event.kind.as_deref() {
                    Some("status") => {
                        Err::<(), partner_webhook::BoxError>("the CRM is down".into())
                    }
                    _ => on.handle(event).await,
                }
            }
        })
    };
    let configs = (sendseven_config(&fixture), whatsapp_config(&fixture));
    let (server, webhook, _clock) = serve_events(
        &fixture,
        configs,
        (handler, handler_too),
        &Config::default(),
    )
    .await;
    for delivery in &fixture.deliveries {
        assert_status(&server.send(&delivery.request()).await, "received");
    }
    assert_eq!(webhook.drain_events(Duration::from_secs(5)).await, 0);

    let handled: Vec<_> = record.seen().into_iter().map(|seen| seen.kind).collect();
    assert_eq!(handled.len(), fixture.deliveries.len() - 2, "{handled:?}");
    let text = log.text();
    let line = |needle: &str| {
        text.lines()
            .find(|line| line.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} line in:\n{text}"))
            .to_owned()
    };
    let panicked = line("event handler panicked");
    assert!(
        panicked.contains("dlv_0002") && panicked.contains("closing went wrong"),
        "{panicked}"
    );
    let failed = line("event handler failed");
    assert!(
        failed.contains("3EB0C767D0F2B64C7C5B") && failed.contains("the CRM is down"),
        "{failed}"
    );
    // No signature reaches the log.
    for delivery in &fixture.deliveries {
        let signature = delivery
            .headers
            .iter()
            .find(|(key, _)| key.ends_with("Signature"));
        let hex = signature.unwrap().1.trim_start_matches("sha256=");
        assert!(!text.contains(hex), "a signature was logged");
    }
    // Each request's own line names its route, event and kind (the request
    // span that would name them is off at info).
    for delivery in &fixture.deliveries {
        let Some(id) = &delivery.id else { continue };
        let names = format!(
            r#"path="{}" event_id="{id}" event_kind="{}""#,
            delivery.route, delivery.kind
        );
        assert!(
            text.lines()
                .any(|line| line.contains("event queued") && line.contains(&names)),
            "no line with {names} in:\n{text}"
        );
    }
}

#[tokio::test]
async fn shutdown_lets_queued_events_finish_within_the_grace() {
    let fixture = fixture();
    let record = Record::default();
    let slow = {
        let record = record.clone();
        event_handler_fn(move |event| {
            let on = record.handler();
            async move {
                tokio::time::sleep(Duration::from_millis(400)).await;
                on.handle(event).await
            }
        })
    };
    let mut config = Config::default();
    config.shutdown_grace = Duration::from_secs(10);
    let configs = (
        sendseven_config(&fixture),
        whatsapp_config(&fixture).queue(16, 1),
    );
    let (mut server, _webhook, _clock) =
        serve_events(&fixture, configs, (record.handler(), slow), &config).await;
    let whatsapp: Vec<_> = fixture
        .deliveries
        .iter()
        .filter(|delivery| delivery.route == "/whatsapp")
        .collect();
    for delivery in &whatsapp {
        assert_status(&server.send(&delivery.request()).await, "received");
    }
    // Four handlers of 400 ms each, one at a time: still queued when the
    // shutdown begins.
    assert!(record.seen().len() < whatsapp.len());
    let stopped = server.begin_shutdown();
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.seen().len(), whatsapp.len());
}

#[tokio::test]
async fn events_still_queued_when_the_grace_ends_are_dropped_and_counted() {
    let fixture = fixture();
    let cancelled = Arc::new(AtomicBool::new(false));
    /// Sets its flag when the handler's future is dropped unfinished.
    struct OnDrop(Arc<AtomicBool>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let stuck = {
        let cancelled = Arc::clone(&cancelled);
        event_handler_fn(move |_event| {
            let flag = OnDrop(Arc::clone(&cancelled));
            async move {
                let _flag = flag;
                std::future::pending::<Result<(), Infallible>>().await
            }
        })
    };
    let record = Record::default();
    let configs = (
        sendseven_config(&fixture).queue(8, 1),
        whatsapp_config(&fixture),
    );
    let (server, webhook, _clock) = serve_events(
        &fixture,
        configs,
        (stuck, record.handler()),
        &Config::default(),
    )
    .await;
    for delivery in &fixture.deliveries[..2] {
        assert_status(&server.send(&delivery.request()).await, "received");
    }
    let started = tokio::time::Instant::now();
    // One running, one waiting for it.
    assert_eq!(webhook.drain_events(Duration::from_millis(300)).await, 2);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        cancelled.load(Ordering::SeqCst),
        "the running handler was not cancelled"
    );
    // Drained: later events are refused with 503, for their platform to retry
    // at the next instance.
    server
        .send(&fixture.retries[0].request())
        .await
        .assert_json_error(503);
}

#[tokio::test]
async fn the_assistant_path_is_unchanged_next_to_an_event_route() {
    let fixture = fixture();
    let record = Record::default();
    let webhook = Webhook::new(&signed_config(), echo())
        .unwrap()
        .route("/sendseven", &sendseven_config(&fixture), record.handler())
        .unwrap();
    let server = TestServer::with_webhook(&signed_config(), webhook.clone()).await;
    assert_still_serving(&server).await;
    // A SendSeven delivery signed now, with the crate's own signer: the
    // scheme signs `{timestamp}.{body}` as this platform does.
    let delivery = &fixture.deliveries[0];
    let secret = secret(&fixture, "/sendseven");
    let now = now();
    let resigned = delivery
        .with_header("X-Sendseven-Timestamp", Some(&now.to_string()))
        .with_header(
            "X-Sendseven-Signature",
            Some(&sign(&secret, now, delivery.body.as_bytes())),
        );
    assert_status(&server.send(&resigned.request()).await, "received");
    // This platform's messages are not accepted on the event route...
    let body = body_of(&payload("hi"));
    let mut headers = platform_headers();
    headers.extend(platform_signature(SECRET, now, &body));
    server
        .send(&request("POST", "/sendseven", &headers, &body))
        .await
        .assert_json_error(401);
    // ...and the route's events not on the assistant's path.
    let mut elsewhere = resigned.clone();
    elsewhere.route = "/".to_owned();
    server
        .send(&elsewhere.request())
        .await
        .assert_json_error(401);
    assert_still_serving(&server).await;
    webhook.drain_events(Duration::from_secs(5)).await;
    assert_eq!(record.seen().len(), 1);
    assert_eq!(
        resigned.header("X-Sendseven-Delivery-Id"),
        record.seen()[0].id.as_deref().unwrap()
    );
}

#[tokio::test]
async fn an_events_only_webhook_answers_404_elsewhere_and_its_probes() {
    let fixture = fixture();
    let (server, _webhook, _clock, _record) = serve_recorded(&fixture).await;
    let body = body_of(&payload("hi"));
    let error = server
        .send(&request("POST", "/", &platform_headers(), &body))
        .await
        .assert_json_error(404);
    assert_eq!(error, "no webhook is served at this path");
    for probe in ["/healthz", "/readyz"] {
        let response = server.send(&request("GET", probe, &[], b"")).await;
        assert_eq!(response.status, 200, "{probe}");
    }
}

#[tokio::test]
async fn a_signed_body_that_is_not_json_is_400_and_a_get_is_405() {
    let fixture = fixture();
    let (server, webhook, _clock, record) = serve_recorded(&fixture).await;
    let not_json = b"message=hi";
    let signed = fixture.deliveries[0]
        .with_header(
            "X-Sendseven-Signature",
            Some(&sign(
                &secret(&fixture, "/sendseven"),
                fixture.signed_at,
                not_json,
            )),
        )
        .with_header(
            "X-Sendseven-Timestamp",
            Some(&fixture.signed_at.to_string()),
        );
    let response = server
        .send(&request("POST", "/sendseven", &signed.headers, not_json))
        .await;
    response.assert_json_error(400);
    let response = server.send(&request("GET", "/sendseven", &[], b"")).await;
    response.assert_json_error(405);
    assert_eq!(response.header("allow"), Some("POST"));
    // Neither was remembered or handled; the genuine delivery still is.
    let genuine = &fixture.deliveries[0];
    assert_status(&server.send(&genuine.request()).await, "received");
    assert_eq!(webhook.drain_events(Duration::from_secs(5)).await, 0);
    assert_eq!(record.seen(), vec![expected(genuine)]);
}

#[test]
fn routes_that_cannot_work_are_refused_at_setup() {
    let fixture = fixture();
    let add = |path: &str, config: EventsConfig| {
        Webhook::for_events(&Config::default())
            .unwrap()
            .route(path, &config, Record::default().handler())
            .map(|_| ())
    };
    // No timestamp, so only the dedupe memory stands between a captured
    // event and its replay: the operator must say they accept that.
    let unprotected = EventsConfig::new(Scheme::webhook_signature(), secret(&fixture, "/whatsapp"));
    let refused = add("/whatsapp", unprotected.clone()).unwrap_err();
    assert!(
        matches!(refused, SetupError::UnboundedReplays { .. }),
        "{refused:?}"
    );
    assert!(
        refused
            .to_string()
            .contains("accept_replays_caught_by_dedupe_only")
    );
    assert!(
        add(
            "/whatsapp",
            unprotected.accept_replays_caught_by_dedupe_only()
        )
        .is_ok()
    );

    let sendseven = sendseven_config(&fixture);
    let quick_window = EventsConfig::new(
        Scheme::sendseven().with_replay_window(Duration::from_millis(500)),
        secret(&fixture, "/sendseven"),
    );
    for (path, config, why) in [
        ("/s", sendseven.clone().queue(0, 1), "at least 1"),
        ("/s", sendseven.clone().queue(1, 0), "at least 1"),
        (
            "/s",
            sendseven.clone().queue(u32::MAX as usize + 1, 1),
            "too large to count",
        ),
        (
            "/s",
            sendseven.clone().dedupe_window(Duration::from_secs(60)),
            "at least the scheme's replay window",
        ),
        (
            "/s",
            sendseven.clone().dedupe_window(Duration::from_millis(500)),
            "dedupe_window must be at least 1 s",
        ),
        ("/s", quick_window, "between 1 s and one day"),
        ("s", sendseven.clone(), "must start with /"),
        ("/healthz", sendseven.clone(), "probe"),
    ] {
        match add(path, config) {
            Err(SetupError::InvalidEventRoute { reason, .. }) => {
                assert!(reason.contains(why), "{path}: {reason}");
            }
            other => panic!("{path}: {other:?}"),
        }
    }
    let mut no_secret = sendseven.clone();
    no_secret.secrets.clear();
    assert!(matches!(add("/s", no_secret), Err(SetupError::NoSecret)));
    // A window past a day is a mistake, as in Config.
    let slow_clock = EventsConfig::new(
        Scheme::sendseven().with_replay_window(Duration::from_secs(2 * 24 * 60 * 60)),
        secret(&fixture, "/sendseven"),
    )
    .dedupe_window(Duration::from_secs(3 * 24 * 60 * 60));
    assert!(matches!(
        add("/s", slow_clock),
        Err(SetupError::InvalidEventRoute { .. })
    ));
    // Routes are set up before the webhook is shared.
    let shared = Webhook::for_events(&Config::default()).unwrap();
    let _serving = shared.clone();
    assert!(matches!(
        shared.route("/s", &sendseven, Record::default().handler()),
        Err(SetupError::InvalidEventRoute { .. })
    ));
    let twice = Webhook::for_events(&Config::default())
        .unwrap()
        .route("/s", &sendseven, Record::default().handler())
        .unwrap()
        .route("/s", &sendseven, Record::default().handler());
    assert!(matches!(twice, Err(SetupError::InvalidEventRoute { .. })));
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn instances_sharing_redis_handle_each_delivery_once() {
    let redis = crate::redis::RedisServer::on_a_free_port().await;
    let cache: Arc<dyn partner_webhook::ReplayCache> = Arc::new(
        partner_webhook::RedisReplayCache::connect(&redis.url())
            .await
            .unwrap(),
    );
    let fixture = fixture();
    let record = Record::default();
    let mut instances = Vec::new();
    for _ in 0..2 {
        let configs = (
            sendseven_config(&fixture).dedupe_cache(Arc::clone(&cache)),
            whatsapp_config(&fixture).dedupe_cache(Arc::clone(&cache)),
        );
        let handlers = (record.handler(), record.handler());
        instances.push(serve_events(&fixture, configs, handlers, &Config::default()).await);
    }
    for (index, delivery) in fixture.deliveries.iter().enumerate() {
        let (first, second) = (&instances[index % 2].0, &instances[(index + 1) % 2].0);
        assert_status(&first.send(&delivery.request()).await, "received");
        assert_status(&second.send(&delivery.request()).await, "duplicate");
    }
    assert_status(
        &instances[1].0.send(&fixture.retries[0].request()).await,
        "duplicate",
    );
    for (_, webhook, _) in &instances {
        webhook.drain_events(Duration::from_secs(5)).await;
    }
    assert_eq!(record.seen().len(), fixture.deliveries.len());
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_dedupe_store_that_fails_answers_503_and_the_route_is_not_ready() {
    let mut redis = crate::redis::RedisServer::on_a_free_port().await;
    let cache: Arc<dyn partner_webhook::ReplayCache> = Arc::new(
        partner_webhook::RedisReplayCache::connect(&redis.url())
            .await
            .unwrap()
            .with_timeout(Duration::from_millis(300)),
    );
    let fixture = fixture();
    let record = Record::default();
    let configs = (
        sendseven_config(&fixture).dedupe_cache(Arc::clone(&cache)),
        whatsapp_config(&fixture).dedupe_cache(cache),
    );
    let (server, webhook, _clock) = serve_events(
        &fixture,
        configs,
        (record.handler(), record.handler()),
        &Config::default(),
    )
    .await;
    let readyz = b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(server.send(readyz).await.status, 200);
    redis.stop();
    let error = server
        .send(&fixture.deliveries[0].request())
        .await
        .assert_json_error(503);
    assert!(error.contains("replay store unavailable"), "{error}");
    server.send(readyz).await.assert_json_error(503);
    // Nothing was handled that could not be remembered.
    webhook.drain_events(Duration::from_secs(5)).await;
    assert!(record.seen().is_empty());
}
