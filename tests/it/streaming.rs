//! Streamed replies: SSE frames as the platform's Chat screen reads them,
//! JSON joined from a stream, the "Test webhook" exception, deadlines,
//! errors and hang-ups mid-stream.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use partner_webhook::{
    Assistant, BoxError, Config, Context, MessageReceived, Reply, ReplyFormat, assistant_fn,
};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::support::*;

fn sse_config() -> Config {
    signed_config().reply_format(ReplyFormat::Sse)
}

/// Streams `chunks` one by one.
fn streaming(chunks: &'static [&'static str]) -> impl Assistant {
    assistant_fn(move |_: MessageReceived, _: Context| async move {
        let stream =
            futures_util::stream::iter(chunks.iter().map(|chunk| Ok::<_, Infallible>(*chunk)));
        Ok::<_, Infallible>(Reply::stream(stream))
    })
}

/// Reads a whole SSE response: its head and each chunked-encoding chunk.
async fn read_stream(connection: &mut Connection) -> (HttpResponse, Vec<Vec<u8>>) {
    let head = connection.read_head().await;
    let mut chunks = Vec::new();
    while let Some(chunk) = connection.read_chunk().await {
        chunks.push(chunk);
    }
    (head, chunks)
}

/// `(event, data)` of each frame, parsed by an independent SSE parser.
async fn parse_events(frames: &[Vec<u8>]) -> Vec<(String, Value)> {
    let bytes = frames.concat();
    let stream = futures_util::stream::iter([Ok::<_, Infallible>(bytes)]);
    stream
        .eventsource()
        .map(|event| {
            let event = event.expect("well-formed SSE");
            (
                event.event,
                serde_json::from_str(&event.data).expect("JSON data"),
            )
        })
        .collect()
        .await
}

fn deltas(events: &[(String, Value)]) -> String {
    events
        .iter()
        .filter(|(event, _)| event == "delta")
        .map(|(_, data)| data["text"].as_str().expect("text"))
        .collect()
}

#[tokio::test]
async fn frames_arrive_while_the_assistant_is_still_producing() {
    let release = Arc::new(Notify::new());
    let gate = Arc::clone(&release);
    let producer = assistant_fn(move |_: MessageReceived, _: Context| {
        let gate = Arc::clone(&gate);
        async move {
            let stream = futures_util::stream::unfold(0, move |step| {
                let gate = Arc::clone(&gate);
                async move {
                    match step {
                        0 => Some((Ok::<_, Infallible>("first"), 1)),
                        // Only once the client has read the first frame.
                        1 => {
                            gate.notified().await;
                            Some((Ok(" last"), 2))
                        }
                        _ => None,
                    }
                }
            });
            Ok::<_, Infallible>(Reply::stream(stream))
        }
    });
    let server = TestServer::start(sse_config(), producer).await;
    let mut connection = Connection::open(server.addr).await;
    connection.write(&signed_post(&payload("stream"))).await;
    let head = connection.read_head().await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    assert_eq!(head.header("cache-control"), Some("no-cache"));
    let first = connection.read_chunk().await.expect("a first frame");
    assert_eq!(first, b"event: delta\ndata: {\"text\":\"first\"}\n\n");
    release.notify_one();
    let mut rest = Vec::new();
    while let Some(chunk) = connection.read_chunk().await {
        rest.push(chunk);
    }
    assert_eq!(
        rest,
        [
            b"event: delta\ndata: {\"text\":\" last\"}\n\n".to_vec(),
            b"event: done\ndata: {\"status\":\"completed\"}\n\n".to_vec(),
        ]
    );
}

#[tokio::test]
async fn every_text_survives_the_framing_exactly_in_ascii_frames() {
    const CHUNKS: &[&str] = &[
        "Plain, ",
        "é à ç ",
        "中文 ",
        "👋🏽 ",
        "line one\nline two\r\n",
        "\"quotes\" \\ back\\slash\t",
        "data: event: fake\n\n",
        "\u{7f}\u{0}",
    ];
    let server = TestServer::start(sse_config(), streaming(CHUNKS)).await;
    let mut connection = Connection::open(server.addr).await;
    connection.write(&signed_post(&payload("stream"))).await;
    let (_, frames) = read_stream(&mut connection).await;
    // One event per frame, every byte ASCII, one data line per event.
    for frame in &frames {
        assert!(frame.is_ascii(), "{:?}", String::from_utf8_lossy(frame));
        let text = std::str::from_utf8(frame).unwrap();
        assert!(text.ends_with("\n\n") && !text[..text.len() - 2].contains("\n\n"));
        assert_eq!(text.matches("\ndata: ").count(), 1, "{text:?}");
    }
    let events = parse_events(&frames).await;
    assert_eq!(events.len(), CHUNKS.len() + 1);
    let texts: Vec<_> = events[..CHUNKS.len()]
        .iter()
        .map(|(_, data)| data["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, CHUNKS);
    assert_eq!(
        events.last().unwrap(),
        &("done".to_owned(), json!({"status": "completed"}))
    );
}

#[tokio::test]
async fn sse_frames_carry_the_echo_the_json_path_would() {
    let server = TestServer::start(sse_config(), echo()).await;
    let mut connection = Connection::open(server.addr).await;
    connection.write(&signed_post(&payload("Ça va ? 👋"))).await;
    let (_, frames) = read_stream(&mut connection).await;
    assert_eq!(deltas(&parse_events(&frames).await), "Echo: Ça va ? 👋");
}

#[tokio::test]
async fn json_format_joins_the_chunks() {
    let server = TestServer::start(signed_config(), streaming(&["Hel", "lo ", "wörld"])).await;
    let response = server.send(&signed_post(&payload("join"))).await;
    assert_eq!(response.reply(), "Hello wörld");
}

#[tokio::test]
async fn a_whole_reply_is_one_delta_with_its_metadata_in_done() {
    let whole = assistant_fn(|message: MessageReceived, _: Context| async move {
        Ok::<_, Infallible>(
            Reply::new(format!("Echo: {}", message.message.content)).with_metadata("n", 1),
        )
    });
    let server = TestServer::start(sse_config(), whole).await;
    let mut connection = Connection::open(server.addr).await;
    connection.write(&signed_post(&payload("whole"))).await;
    let (_, frames) = read_stream(&mut connection).await;
    let events = parse_events(&frames).await;
    assert_eq!(
        events,
        [
            ("delta".to_owned(), json!({"text": "Echo: whole"})),
            (
                "done".to_owned(),
                json!({"status": "completed", "metadata": {"n": 1}})
            ),
        ]
    );
}

#[tokio::test]
async fn an_error_mid_stream_ends_with_error_then_done() {
    let failing = assistant_fn(|_: MessageReceived, _: Context| async move {
        let chunks = [
            Ok("partial".to_owned()),
            Err(BoxError::from("upstream said: secret internals")),
        ];
        Ok::<_, Infallible>(Reply::stream(futures_util::stream::iter(chunks)))
    });
    let server = TestServer::start(sse_config(), failing).await;
    let mut connection = Connection::open(server.addr).await;
    connection.write(&signed_post(&payload("fail"))).await;
    let (_, frames) = read_stream(&mut connection).await;
    let events = parse_events(&frames).await;
    assert_eq!(
        events,
        [
            ("delta".to_owned(), json!({"text": "partial"})),
            (
                "error".to_owned(),
                json!({"message": "the assistant failed to reply"})
            ),
            ("done".to_owned(), json!({"status": "error"})),
        ]
    );
    assert_still_serving_sse(&server).await;
}

#[tokio::test]
async fn a_panic_mid_stream_is_an_error_event() {
    let panicking = assistant_fn(|_: MessageReceived, _: Context| async move {
        let stream = futures_util::stream::unfold(0, |step| async move {
            match step {
                0 => Some((Ok::<_, Infallible>("before"), 1)),
                _ => panic!("bug in the stream"),
            }
        });
        Ok::<_, Infallible>(Reply::stream(stream))
    });
    let server = TestServer::start(sse_config(), panicking).await;
    let mut connection = Connection::open(server.addr).await;
    connection.write(&signed_post(&payload("panic"))).await;
    let (_, frames) = read_stream(&mut connection).await;
    let events = parse_events(&frames).await;
    assert_eq!(events[1].0, "error");
    assert_eq!(events[2], ("done".to_owned(), json!({"status": "error"})));
    assert_still_serving_sse(&server).await;
}

#[tokio::test]
async fn a_silent_stream_is_ended_at_the_chunk_timeout() {
    let mut config = sse_config();
    config.stream_chunk_timeout = Duration::from_millis(300);
    let stalls = assistant_fn(|_: MessageReceived, _: Context| async move {
        let stream = futures_util::stream::unfold(0, |step| async move {
            if step == 1 {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            Some((Ok::<_, Infallible>("tick"), step + 1))
        });
        Ok::<_, Infallible>(Reply::stream(stream))
    });
    let server = TestServer::start(config, stalls).await;
    let mut connection = Connection::open(server.addr).await;
    connection.write(&signed_post(&payload("stall"))).await;
    let (_, frames) = read_stream(&mut connection).await;
    let events = parse_events(&frames).await;
    assert_eq!(
        events,
        [
            ("delta".to_owned(), json!({"text": "tick"})),
            (
                "error".to_owned(),
                json!({"message": "the assistant took too long to reply"})
            ),
            ("done".to_owned(), json!({"status": "error"})),
        ]
    );
}

#[tokio::test]
async fn a_first_chunk_after_the_reply_deadline_ends_the_stream() {
    let config = sse_config().reply_deadline(Duration::from_millis(300));
    let late = assistant_fn(|_: MessageReceived, _: Context| async move {
        let stream = futures_util::stream::once(async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, Infallible>("too late")
        });
        Ok::<_, Infallible>(Reply::stream(stream))
    });
    let server = TestServer::start(config, late).await;
    let mut connection = Connection::open(server.addr).await;
    connection.write(&signed_post(&payload("late"))).await;
    let (_, frames) = read_stream(&mut connection).await;
    let events = parse_events(&frames).await;
    assert_eq!(events[0].0, "error");
    assert_eq!(events[1], ("done".to_owned(), json!({"status": "error"})));
}

#[tokio::test]
async fn a_missed_deadline_streams_the_fallback_reply() {
    let config = sse_config()
        .reply_deadline(Duration::from_millis(200))
        .fallback_reply("Sorry, one moment.");
    let slow = assistant_fn(|_: MessageReceived, _: Context| async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok::<_, Infallible>("never")
    });
    let server = TestServer::start(config, slow).await;
    let mut connection = Connection::open(server.addr).await;
    connection.write(&signed_post(&payload("slow"))).await;
    let (head, frames) = read_stream(&mut connection).await;
    assert_eq!(head.status, 200);
    let events = parse_events(&frames).await;
    assert_eq!(deltas(&events), "Sorry, one moment.");
    assert_eq!(events.last().unwrap().1, json!({"status": "completed"}));
}

#[tokio::test]
async fn a_client_that_hangs_up_cancels_the_stream() {
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&dropped);
    let endless = assistant_fn(move |_: MessageReceived, _: Context| {
        let flag = Arc::clone(&flag);
        async move {
            struct SetOnDrop(Arc<AtomicBool>);
            impl Drop for SetOnDrop {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
            let guard = SetOnDrop(flag);
            let stream = futures_util::stream::unfold(guard, |guard| async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Some((Ok::<_, Infallible>("more "), guard))
            });
            Ok::<_, Infallible>(Reply::stream(stream))
        }
    });
    let server = TestServer::start(sse_config(), endless).await;
    let mut connection = Connection::open(server.addr).await;
    connection.write(&signed_post(&payload("endless"))).await;
    connection.read_head().await;
    connection.read_chunk().await.expect("a first frame");
    drop(connection);
    for _ in 0..100 {
        if dropped.load(Ordering::SeqCst) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the stream kept running after the client hung up");
}

#[tokio::test]
async fn the_test_webhook_request_gets_json_even_in_sse() {
    let server = TestServer::start(sse_config(), echo()).await;
    let mut test_button = payload("Test message");
    test_button["thread"] =
        json!({"id": "00000000-0000-0000-0000-000000000000", "customer_id": "test-customer"});
    test_button["message"]["id"] = json!("00000000-0000-0000-0000-000000000001");
    test_button["history_tail"] = json!([]);
    let response = server.send(&signed_post(&test_button)).await;
    assert_eq!(response.reply(), "Echo: Test message");
}

#[tokio::test]
async fn auto_streams_only_to_clients_that_accept_event_streams() {
    let config = signed_config().reply_format(ReplyFormat::Auto);
    let server = TestServer::start(config, echo()).await;
    for (accept, expected) in [
        ("text/event-stream", "text/event-stream"),
        (
            "application/json, text/event-stream;q=0.5",
            "text/event-stream",
        ),
        ("*/*", "application/json"),
        ("text/event-stream;q=0", "application/json"),
    ] {
        let body = body_of(&payload("auto"));
        let mut headers = platform_headers();
        for (name, value) in &mut headers {
            if name == "Accept" {
                *value = accept.to_owned();
            }
        }
        headers.extend(platform_signature(SECRET, now(), &body));
        let mut connection = Connection::open(server.addr).await;
        connection
            .write(&request("POST", "/", &headers, &body))
            .await;
        let head = connection.read_head().await;
        assert_eq!(
            head.header("content-type"),
            Some(expected),
            "Accept: {accept}"
        );
    }
}

/// After a failed stream, the next request still gets a whole stream.
async fn assert_still_serving_sse(server: &TestServer) {
    let mut connection = Connection::open(server.addr).await;
    connection
        .write(&signed_post(&payload("still there?")))
        .await;
    let (head, frames) = read_stream(&mut connection).await;
    assert_eq!(head.status, 200);
    let events = parse_events(&frames).await;
    assert_eq!(events.last().map(|(event, _)| event.as_str()), Some("done"));
}
