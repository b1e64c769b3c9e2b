//! The `partner-webhook` command-line tool, spawned as a process against
//! servers on 127.0.0.1 that answer like the echo and stream examples.

use std::convert::Infallible;
use std::process::Output;
use std::time::Duration;

use partner_webhook::testing::MessageBuilder;
use partner_webhook::{Context, MessageReceived, Reply, ReplyFormat, assistant_fn};
use tokio::process::Command;

use crate::support::*;

async fn cli(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_partner-webhook"));
    command.args(args).stdin(std::process::Stdio::piped());
    command.stdout(std::process::Stdio::piped());
    command.stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        tokio::io::AsyncWriteExt::write_all(&mut input, bytes)
            .await
            .unwrap();
    }
    drop(input);
    tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the CLI finished")
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Like examples/stream.rs: the echo, word by word.
fn words() -> impl partner_webhook::Assistant {
    assistant_fn(|message: MessageReceived, _: Context| async move {
        let text = format!("Echo: {}", message.message.content);
        let words: Vec<String> = text.split_inclusive(' ').map(str::to_owned).collect();
        let chunks = futures_util::stream::unfold(words.into_iter(), |mut words| async move {
            let word = words.next()?;
            tokio::time::sleep(Duration::from_millis(20)).await;
            Some((Ok::<_, Infallible>(word), words))
        });
        Ok::<_, Infallible>(Reply::stream(chunks))
    })
}

#[tokio::test]
async fn send_prints_status_latency_and_the_non_ascii_echo() {
    let server = TestServer::echo().await;
    let url = format!("http://{}/webhook", server.addr);
    let output = cli(
        &[
            "send",
            "--url",
            &url,
            "--secret",
            SECRET,
            "--message",
            "héllo 👋",
        ],
        None,
    )
    .await;
    let text = stdout(&output);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("status 200 in ") && text.contains(" ms (signed)"),
        "{text}"
    );
    assert!(text.contains("reply: Echo: héllo 👋"), "{text}");
    assert!(text.contains("verdict: accepted"), "{text}");
}

#[tokio::test]
async fn a_wrong_secret_prints_the_401_reason_and_fails() {
    let server = TestServer::echo().await;
    let url = format!("http://{}", server.addr);
    let output = cli(&["send", "--url", &url, "--secret", "not-the-secret"], None).await;
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("status 401") && text.contains("signature mismatch"),
        "{text}"
    );
}

#[tokio::test]
async fn stream_prints_each_frame_and_the_joined_text() {
    let config = signed_config().reply_format(ReplyFormat::Sse);
    let server = TestServer::start(config, words()).await;
    let url = format!("http://{}", server.addr);
    let output = cli(
        &[
            "send",
            "--url",
            &url,
            "--secret",
            SECRET,
            "--message",
            "un deux 中文",
            "--stream",
        ],
        None,
    )
    .await;
    let text = stdout(&output);
    assert!(output.status.success(), "{text}");
    assert_eq!(text.matches("event: delta").count(), 4, "{text}");
    assert!(text.contains("event: done"), "{text}");
    assert!(text.contains("reply: Echo: un deux 中文"), "{text}");
}

#[tokio::test]
async fn the_test_button_gets_json_from_a_streaming_server() {
    let config = signed_config().reply_format(ReplyFormat::Sse);
    let server = TestServer::start(config, words()).await;
    let url = format!("http://{}", server.addr);
    let output = cli(
        &[
            "--json",
            "send",
            "--url",
            &url,
            "--secret",
            SECRET,
            "--test-button",
            "--stream",
        ],
        None,
    )
    .await;
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(output.status.success(), "{report}");
    assert_eq!(report["content_type"], "application/json");
    assert_eq!(
        report["reply"],
        "Echo: This is a test message from the dashboard."
    );
}

#[tokio::test]
async fn json_streams_are_judged_by_the_chat_screens_rules() {
    // A JSON answer on the stream path is refused by the platform.
    let server = TestServer::echo().await;
    let url = format!("http://{}", server.addr);
    let output = cli(
        &["send", "--url", &url, "--secret", SECRET, "--stream"],
        None,
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains("text/event-stream"),
        "{}",
        stdout(&output)
    );
}

#[tokio::test]
async fn an_unreachable_port_and_https_are_explained() {
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let output = cli(&["send", "--url", &format!("http://{addr}")], None).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("could not connect"));
    let output = cli(&["send", "--url", "https://platform.example/webhook"], None).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no TLS client"));
}

#[tokio::test]
async fn signed_headers_from_sign_are_accepted_by_the_server() {
    let server = TestServer::echo().await;
    let body = MessageBuilder::new("signé à la main 👋").body();
    let output = cli(&["sign", "--secret", SECRET], Some(&body)).await;
    assert!(output.status.success());
    let mut headers = platform_headers();
    for line in stdout(&output).lines() {
        let (name, value) = line.split_once(": ").unwrap();
        headers.push((name.to_owned(), value.to_owned()));
    }
    let reply = server
        .send(&request("POST", "/", &headers, &body))
        .await
        .reply();
    assert_eq!(reply, "Echo: signé à la main 👋");
}

#[tokio::test]
async fn verify_names_the_form_a_captured_request_was_signed_in() {
    let secret = partner_webhook::Secret::new(SECRET).unwrap();
    let body = MessageBuilder::new("ünïcödé").body();
    let escaped = partner_webhook::testing::platform_signature(&secret, 1_763_899_200, &body);
    let raw = partner_webhook::sign(&secret, 1_763_899_200, &body);
    for (signature, expected, code) in [
        (escaped.as_str(), "escaped form", 0),
        (raw.as_str(), "raw body", 0),
        ("sha256=00", "does not verify", 1),
    ] {
        let output = cli(
            &[
                "verify",
                "--secret",
                SECRET,
                "--timestamp",
                "1763899200",
                "--signature",
                signature,
            ],
            Some(&body),
        )
        .await;
        assert_eq!(output.status.code(), Some(code), "{}", stdout(&output));
        assert!(stdout(&output).contains(expected), "{}", stdout(&output));
    }
}

/// A server that answers every connection with `response` and closes.
async fn canned(response: &'static [u8]) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = vec![0; 64 * 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut request).await;
            let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, response).await;
        }
    });
    addr
}

#[tokio::test]
async fn frames_the_chat_screen_would_garble_are_rejected() {
    let addr = canned(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n\
         event: delta\ndata: {\"text\":\"héllo\"}\n\n\
         event: delta\ndata: {\"text\":\"a\"}\ndata: {\"text\":\"b\"}\n\n"
            .as_bytes(),
    )
    .await;
    let output = cli(
        &["send", "--url", &format!("http://{addr}"), "--stream"],
        None,
    )
    .await;
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("non-ASCII bytes in a frame"), "{text}");
    assert!(text.contains("malformed event"), "{text}");
    assert!(text.contains("without a done event"), "{text}");
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let (_stream, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let output = cli(
        &[
            "send",
            "--url",
            &format!("http://{addr}"),
            "--timeout",
            "0.5",
        ],
        None,
    )
    .await;
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no answer within 0.5 s"));
    holder.abort();
}
