//! `examples/llm`'s assistant (this file includes its source) against a
//! small OpenAI-compatible server on 127.0.0.1 that streams `data:` chunks
//! and `data: [DONE]`, and can fail.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use partner_webhook::ReplyFormat;
use serde_json::{Value, json};

use crate::support::*;

#[path = "../../examples/llm/assistant.rs"]
mod assistant;

/// How the stand-in model answers.
#[derive(Clone)]
enum Model {
    Streams(Vec<&'static str>),
    Fails(u16),
    Malformed,
    /// Tokens every 20 ms forever; sets the flag when the client goes away.
    Endless(Arc<AtomicBool>),
}

type Frames =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send>>;

fn event(data: &Value) -> Result<Frame<Bytes>, Infallible> {
    Ok(Frame::data(Bytes::from(format!("data: {data}\n\n"))))
}

fn token(text: &str) -> Value {
    json!({"choices": [{"index": 0, "delta": {"content": text}}]})
}

/// Starts the model; returns its base URL and the request bodies it received.
async fn model(mode: Model) -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&received);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (mode, log) = (mode.clone(), Arc::clone(&log));
            let service = service_fn(move |request: Request<Incoming>| {
                let (mode, log) = (mode.clone(), Arc::clone(&log));
                async move {
                    let body = request.into_body().collect().await.unwrap().to_bytes();
                    log.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap());
                    let (status, frames): (u16, Frames) = match mode {
                        Model::Streams(chunks) => {
                            let mut events: Vec<_> = std::iter::once(
                                json!({"choices": [{"delta": {"role": "assistant"}}]}),
                            )
                            .chain(chunks.iter().map(|chunk| token(chunk)))
                            .chain(std::iter::once(
                                json!({"choices": [], "usage": {"total_tokens": 9}}),
                            ))
                            .map(|data| event(&data))
                            .collect();
                            events.push(Ok(Frame::data(Bytes::from("data: [DONE]\n\n"))));
                            (200, Box::pin(futures_util::stream::iter(events)))
                        }
                        Model::Fails(status) => (
                            status,
                            Box::pin(futures_util::stream::iter([Ok(Frame::data(Bytes::from(
                                r#"{"error":"UPSTREAM-DETAIL quota of account acct_42"}"#,
                            )))])),
                        ),
                        Model::Malformed => (
                            200,
                            Box::pin(futures_util::stream::iter([Ok(Frame::data(Bytes::from(
                                "data: {not json\n\n",
                            )))])),
                        ),
                        Model::Endless(gone) => {
                            struct SetOnDrop(Arc<AtomicBool>);
                            impl Drop for SetOnDrop {
                                fn drop(&mut self) {
                                    self.0.store(true, Ordering::SeqCst);
                                }
                            }
                            let guard = SetOnDrop(gone);
                            let frames = futures_util::stream::unfold(guard, |guard| async move {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                Some((event(&token("more ")), guard))
                            });
                            (200, Box::pin(frames))
                        }
                    };
                    let mut response = Response::new(StreamBody::new(frames));
                    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                    response
                        .headers_mut()
                        .insert("content-type", "text/event-stream".parse().unwrap());
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    (format!("http://{addr}/v1"), received)
}

async fn llm_server(mode: Model, format: ReplyFormat) -> (TestServer, Arc<Mutex<Vec<Value>>>) {
    let (base, received) = model(mode).await;
    let llm = assistant::Llm::new(&base, Some("sk-test".to_owned()), "test-model", "Be brief.");
    let config = signed_config().reply_format(format);
    (TestServer::start(config, llm).await, received)
}

/// The joined delta texts and the event names of a streamed answer.
async fn stream_of(server: &TestServer, content: &str) -> (Vec<String>, String) {
    let mut connection = Connection::open(server.addr).await;
    connection.write(&signed_post(&payload(content))).await;
    let head = connection.read_head().await;
    assert_eq!(head.status, 200);
    let mut events = Vec::new();
    let mut text = String::new();
    while let Some(chunk) = connection.read_chunk().await {
        let frame = String::from_utf8(chunk).unwrap();
        let (name, data) = frame
            .trim_end()
            .strip_prefix("event: ")
            .and_then(|rest| rest.split_once("\ndata: "))
            .unwrap();
        if name == "delta" {
            let data: Value = serde_json::from_str(data).unwrap();
            text.push_str(data["text"].as_str().unwrap());
        }
        events.push(name.to_owned());
    }
    (events, text)
}

#[tokio::test]
async fn tokens_stream_in_order_from_the_conversation() {
    let (server, received) = llm_server(
        Model::Streams(vec!["Bon", "jour", " à vous"]),
        ReplyFormat::Sse,
    )
    .await;
    let (events, text) = stream_of(&server, "Salut").await;
    assert_eq!(events, ["delta", "delta", "delta", "done"]);
    assert_eq!(text, "Bonjour à vous");
    let request = received.lock().unwrap()[0].clone();
    assert_eq!(request["model"], "test-model");
    assert_eq!(request["stream"], true);
    // The system prompt, then the history oldest first, ending with the
    // current message once.
    assert_eq!(
        request["messages"],
        json!([
            {"role": "system", "content": "Be brief."},
            {"role": "assistant", "content": "Hello there! How can I help you today?"},
            {"role": "user", "content": "Salut"},
        ])
    );
}

#[tokio::test]
async fn a_message_without_history_is_sent_once() {
    let (server, received) = llm_server(Model::Streams(vec!["ok"]), ReplyFormat::Json).await;
    let mut fallback = payload("only this");
    fallback["message"] = json!({"content": "only this"});
    fallback.as_object_mut().unwrap().remove("history_tail");
    assert_eq!(server.send(&signed_post(&fallback)).await.reply(), "ok");
    let messages = received.lock().unwrap()[0]["messages"].clone();
    assert_eq!(messages[1], json!({"role": "user", "content": "only this"}));
    assert_eq!(messages.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn json_mode_joins_the_tokens() {
    let (server, _) = llm_server(
        Model::Streams(vec!["one ", "two ", "three"]),
        ReplyFormat::Json,
    )
    .await;
    assert_eq!(
        server.send(&signed_post(&payload("count"))).await.reply(),
        "one two three"
    );
}

#[tokio::test]
async fn upstream_failures_become_a_generic_error() {
    for status in [401, 429, 500, 503] {
        let (server, _) = llm_server(Model::Fails(status), ReplyFormat::Json).await;
        let error = server
            .send(&signed_post(&payload("hi")))
            .await
            .assert_json_error(500);
        assert_eq!(error, "the assistant failed to reply", "{status}");
    }
}

#[tokio::test]
async fn a_malformed_stream_ends_with_an_error_event() {
    let (server, _) = llm_server(Model::Malformed, ReplyFormat::Sse).await;
    let (events, _) = stream_of(&server, "hi").await;
    assert_eq!(events, ["error", "done"]);
}

#[tokio::test]
async fn an_unreachable_model_is_a_generic_error() {
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let llm = assistant::Llm::new(&format!("http://{addr}/v1"), None, "m", "");
    let server = TestServer::start(signed_config(), llm).await;
    let error = server
        .send(&signed_post(&payload("hi")))
        .await
        .assert_json_error(500);
    assert_eq!(error, "the assistant failed to reply");
}

#[tokio::test]
async fn a_client_that_hangs_up_cancels_the_completion() {
    let gone = Arc::new(AtomicBool::new(false));
    let (server, _) = llm_server(Model::Endless(Arc::clone(&gone)), ReplyFormat::Sse).await;
    let mut connection = Connection::open(server.addr).await;
    connection.write(&signed_post(&payload("go on"))).await;
    connection.read_head().await;
    connection.read_chunk().await.expect("a first token");
    drop(connection);
    for _ in 0..100 {
        if gone.load(Ordering::SeqCst) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the model kept streaming after the client hung up");
}

#[tokio::test]
async fn the_deadline_cancels_a_silent_model() {
    let gone = Arc::new(AtomicBool::new(false));
    let (base, _) = model(Model::Endless(Arc::clone(&gone))).await;
    let llm = assistant::Llm::new(&base, None, "m", "");
    let config = signed_config().reply_deadline(Duration::from_millis(300));
    let server = TestServer::start(config, llm).await;
    // JSON: the endless tokens never join before the deadline.
    server
        .send(&signed_post(&payload("forever")))
        .await
        .assert_json_error(504);
    for _ in 0..100 {
        if gone.load(Ordering::SeqCst) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the upstream request outlived the deadline");
}
