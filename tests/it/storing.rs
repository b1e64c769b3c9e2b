//! Storing streamed replies through the platform's Partner API, against a
//! small HTTP server on 127.0.0.1 standing in for that API.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use partner_webhook::{Config, ReplyFormat};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::support::*;

/// How the stand-in answers.
#[derive(Clone, Copy)]
enum Api {
    Stores,
    Fails,
    Hangs,
}

/// One request the stand-in received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    app_id: Option<String>,
    app_secret: Option<String>,
    body: Value,
}

async fn partner_api(mode: Api) -> (SocketAddr, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&received);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let log = Arc::clone(&log);
            let service = service_fn(move |request: Request<Incoming>| {
                let log = Arc::clone(&log);
                async move {
                    let header = |name: &str| {
                        request
                            .headers()
                            .get(name)
                            .map(|value| value.to_str().unwrap().to_owned())
                    };
                    let (path, app_id, app_secret) = (
                        request.uri().path().to_owned(),
                        header("x-app-id"),
                        header("x-app-secret"),
                    );
                    let bytes = request.into_body().collect().await.unwrap().to_bytes();
                    log.lock().unwrap().push(Received {
                        path,
                        app_id,
                        app_secret,
                        body: serde_json::from_slice(&bytes).unwrap(),
                    });
                    let (status, body) = match mode {
                        Api::Stores => (
                            StatusCode::CREATED,
                            json!({"id": "stored-1", "seq": 7, "role": "assistant"}),
                        ),
                        Api::Fails => (StatusCode::INTERNAL_SERVER_ERROR, json!({"detail": "x"})),
                        Api::Hangs => {
                            tokio::time::sleep(Duration::from_secs(60)).await;
                            (StatusCode::CREATED, json!({}))
                        }
                    };
                    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
                    *response.status_mut() = status;
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    (addr, received)
}

/// The `done` event's data of a streamed echo of `content`.
async fn done_of_streamed_echo(config: Config, content: &str) -> Value {
    let server = TestServer::start(config, echo()).await;
    let mut connection = Connection::open(server.addr).await;
    connection.write(&signed_post(&payload(content))).await;
    let head = connection.read_head().await;
    assert_eq!(head.status, 200);
    let mut frames = String::new();
    while let Some(chunk) = connection.read_chunk().await {
        frames.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let (event, data) = frames
        .trim_end()
        .rsplit("\n\n")
        .next()
        .and_then(|last| last.strip_prefix("event: ")?.split_once("\ndata: "))
        .expect("a last event");
    assert_eq!(event, "done", "{frames}");
    serde_json::from_str(data).unwrap()
}

fn storing_config(api: SocketAddr) -> Config {
    signed_config()
        .reply_format(ReplyFormat::Sse)
        .platform_api_url(format!("http://{api}/"))
}

#[tokio::test]
async fn a_stored_reply_is_named_in_done() {
    let (api, received) = partner_api(Api::Stores).await;
    let done = done_of_streamed_echo(storing_config(api), "keep me").await;
    assert_eq!(
        done,
        json!({"status": "completed", "message_id": "stored-1", "seq": 7})
    );
    let received = received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    let stored = &received[0];
    assert_eq!(
        stored.path,
        "/apps/6f1c2a4e-8b1d-4c1e-9a37-0d2f5e8b9c10/threads/0b8e7d6c-5a4f-4e3d-8c2b-1a0f9e8d7c6b/messages/assistant"
    );
    assert_eq!(
        stored.app_id.as_deref(),
        Some("6f1c2a4e-8b1d-4c1e-9a37-0d2f5e8b9c10")
    );
    assert_eq!(stored.app_secret.as_deref(), Some(SECRET));
    assert_eq!(
        stored.body,
        json!({"content": "Echo: keep me", "content_json": {"source": "webhook"}})
    );
}

#[tokio::test]
async fn a_failed_store_still_completes_the_stream_and_names_its_thread() {
    let (log, _logging) = CapturedLog::start();
    let (api, received) = partner_api(Api::Fails).await;
    let done = done_of_streamed_echo(storing_config(api), "fail").await;
    assert_eq!(done, json!({"status": "completed"}));
    assert_eq!(received.lock().unwrap().len(), 1);
    // The request's span is off by default, so the warning names the thread.
    let thread_id = payload("fail")["thread"]["id"].as_str().unwrap().to_owned();
    let text = log.text();
    let warning = text
        .lines()
        .find(|line| line.contains("could not store the streamed reply"))
        .unwrap_or_else(|| panic!("no warning in:\n{text}"));
    assert!(warning.contains(&thread_id), "{warning}");
}

#[tokio::test]
async fn a_slow_store_is_given_up_within_the_chunk_timeout() {
    let (api, _) = partner_api(Api::Hangs).await;
    let mut config = storing_config(api);
    config.stream_chunk_timeout = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let done = done_of_streamed_echo(config, "slow").await;
    assert_eq!(done, json!({"status": "completed"}));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn an_unreachable_api_still_completes_the_stream() {
    // A port nothing listens on: bound, then closed.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let done = done_of_streamed_echo(storing_config(addr), "nobody home").await;
    assert_eq!(done, json!({"status": "completed"}));
}

#[tokio::test]
async fn json_replies_and_the_test_webhook_are_never_stored() {
    let (api, received) = partner_api(Api::Stores).await;
    let json_config = signed_config().platform_api_url(format!("http://{api}"));
    let server = TestServer::start(json_config, echo()).await;
    assert_eq!(
        server.send(&signed_post(&payload("json"))).await.reply(),
        "Echo: json"
    );
    let server = TestServer::start(storing_config(api), echo()).await;
    let mut test_button = payload("Test message");
    test_button["thread"]["id"] = json!("00000000-0000-0000-0000-000000000000");
    test_button["message"]["id"] = json!("00000000-0000-0000-0000-000000000001");
    assert_eq!(
        server.send(&signed_post(&test_button)).await.reply(),
        "Echo: Test message"
    );
    assert!(received.lock().unwrap().is_empty());
}

#[tokio::test]
async fn https_and_unsigned_storing_are_setup_errors() {
    for config in [
        signed_config().platform_api_url("https://platform.example"),
        Config::default()
            .accept_unsigned()
            .platform_api_url("http://localhost:8000"),
    ] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let error = partner_webhook::Server::from_listener(listener, config, echo()).unwrap_err();
        assert!(error.to_string().contains("platform_api_url"), "{error}");
    }
}
