//! Clients that hold no secret: connections that ping, age, pipeline or stop
//! reading; requests refused from their headers alone; the replay window's
//! edge and retries; ids from the signed body; values `Config` refuses.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use partner_webhook::{
    Assistant, BoxError, Config, Context, MessageReceived, Server, SetupError, assistant_fn,
};
use tokio::net::TcpSocket;

use crate::support::*;

/// A reply far larger than loopback socket buffers absorb, so a peer that
/// does not read it stalls the server's write.
const HUGE_REPLY: usize = 32 * 1024 * 1024;

/// Echoes, except that a message saying "huge" gets [`HUGE_REPLY`] bytes.
fn echo_or_huge() -> impl Assistant {
    assistant_fn(|message: MessageReceived, _: Context| async move {
        let content = message.message.content;
        Ok::<_, BoxError>(if content == "huge" {
            "x".repeat(HUGE_REPLY)
        } else {
            format!("Echo: {content}")
        })
    })
}

const PING: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";

/// A connection with a tiny receive buffer that asks for a huge reply and
/// never reads it.
async fn slow_reader(server: &TestServer) -> tokio::net::TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(server.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, &signed_post(&payload("huge")))
        .await
        .unwrap();
    stream
}

/// Reads until the server closes; the byte count, or `None` if it never does.
async fn bytes_until_closed(mut stream: tokio::net::TcpStream) -> Option<usize> {
    use tokio::io::AsyncReadExt;
    let mut total = 0;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        match tokio::time::timeout(IO_TIMEOUT, stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return Some(total),
            Ok(Ok(read)) => total += read,
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn a_pinging_keep_alive_connection_is_closed_at_its_maximum_age() {
    let mut config = signed_config();
    config.max_connection_age = Duration::from_secs(1);
    let server = TestServer::start(config, echo()).await;
    let mut connection = Connection::open(server.addr).await;
    let started = Instant::now();
    let mut answered = 0;
    // Well inside the idle timeout: only the age can close it.
    while started.elapsed() < Duration::from_secs(5) {
        if connection.write_raw(PING).await.is_err() {
            break;
        }
        match connection.try_read_response().await {
            Some(response) if response.status == 200 => answered += 1,
            _ => break,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lived = started.elapsed();
    assert!(answered >= 5, "only {answered} pings answered");
    assert!(
        lived < Duration::from_secs(3),
        "still open after {lived:?} of pings"
    );
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn a_peer_that_stops_reading_is_cut_at_the_write_timeout() {
    let mut config = signed_config();
    config.write_timeout = Duration::from_millis(300);
    let server = TestServer::start(config, echo_or_huge()).await;
    let stream = slow_reader(&server).await;
    // Not reading for well past the write timeout...
    tokio::time::sleep(Duration::from_secs(2)).await;
    // ...so what arrives is what the buffers held when the server gave up.
    let received = bytes_until_closed(stream).await;
    let received = received.expect("the server kept the stalled connection open");
    assert!(received < HUGE_REPLY, "the whole reply arrived");
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn pipelining_without_reading_ends_at_the_request_limit() {
    let server = TestServer::echo().await;
    let mut connection = Connection::open(server.addr).await;
    connection.write(&PING.repeat(150)).await;
    let mut answered = 0;
    while let Some(response) = connection.try_read_response().await {
        answered += 1;
        if answered == 100 {
            assert_eq!(response.header("connection"), Some("close"));
        }
    }
    assert_eq!(answered, 100, "Config::max_requests_per_connection is 100");
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn a_peer_that_stops_reading_gives_way_at_capacity() {
    let mut config = signed_config();
    config.max_connections = 1;
    let server = TestServer::start(config, echo_or_huge()).await;
    let stalled = slow_reader(&server).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The default write timeout (10 s) has not run out, but someone needs the slot.
    let started = Instant::now();
    let reply = server.send(&signed_post(&payload("mine"))).await.reply();
    assert_eq!(reply, "Echo: mine");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(bytes_until_closed(stalled).await.is_some());
}

#[tokio::test]
async fn a_signed_request_is_answered_while_pingers_and_slow_readers_hold_every_slot() {
    let mut config = signed_config();
    config.max_connections = 8;
    let server = TestServer::start(config, echo_or_huge()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut pingers = Vec::new();
    for _ in 0..6 {
        let (addr, stop) = (server.addr, Arc::clone(&stop));
        pingers.push(tokio::spawn(async move {
            // Reconnects whenever it is closed, as an attacker would.
            while !stop.load(Ordering::Relaxed) {
                let mut connection = Connection::open(addr).await;
                while !stop.load(Ordering::Relaxed) && connection.write_raw(PING).await.is_ok() {
                    if connection.try_read_response().await.is_none() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    let readers = [slow_reader(&server).await, slow_reader(&server).await];
    tokio::time::sleep(Duration::from_millis(500)).await;
    for round in 0..3 {
        let started = Instant::now();
        let reply = server
            .send(&signed_post(&payload(&format!("genuine {round}"))))
            .await
            .reply();
        assert_eq!(reply, format!("Echo: genuine {round}"));
        // The platform gives up after 8 s.
        assert!(started.elapsed() < Duration::from_secs(8));
    }
    stop.store(true, Ordering::Relaxed);
    drop(readers);
    for pinger in pingers {
        pinger.abort();
    }
}

#[tokio::test]
async fn bad_signature_headers_are_401_before_the_body_is_sent() {
    let mut config = signed_config();
    // Were the body awaited, this would answer 408 well inside the client's wait.
    config.body_read_timeout = Duration::from_secs(3);
    let server = TestServer::start(config, echo()).await;
    let stale = now() - 1000;
    for (case, headers) in [
        ("missing", String::new()),
        (
            "malformed",
            format!("X-Timestamp: {}\r\nX-Signature: sha256=zz\r\n", now()),
        ),
        (
            "stale",
            format!(
                "X-Timestamp: {stale}\r\nX-Signature: sha256={}\r\n",
                "0".repeat(64)
            ),
        ),
    ] {
        let mut connection = Connection::open(server.addr).await;
        let head = format!(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{headers}\
             Content-Length: 1048576\r\n\r\n"
        );
        connection.write(head.as_bytes()).await;
        let started = Instant::now();
        let response = connection.read_response().await;
        response.assert_json_error(401);
        assert!(started.elapsed() < Duration::from_secs(2), "{case}");
        assert_eq!(response.header("connection"), Some("close"), "{case}");
        assert!(connection.is_closed().await, "{case}");
    }
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn a_captured_request_is_refused_through_the_last_second_of_its_window() {
    let mut config = signed_config().replay_window(Duration::from_secs(2));
    config.header_read_timeout = Duration::from_secs(5);
    let server = TestServer::start(config, echo()).await;
    let body = body_of(&payload("once"));
    let mut headers = platform_headers();
    headers.extend(platform_signature(SECRET, now(), &body));
    let captured = request("POST", "/", &headers, &body);
    assert_eq!(server.send(&captured).await.reply(), "Echo: once");
    // Every second of the window, its last included, and one past it.
    let started = Instant::now();
    let mut replays = 0;
    while started.elapsed() < Duration::from_secs(4) {
        let error = server.send(&captured).await.assert_json_error(401);
        assert!(
            error.contains("replayed") || error.contains("outside"),
            "{error}"
        );
        replays += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(replays > 20);
}

#[tokio::test]
async fn a_request_refused_for_overload_can_be_retried() {
    let mut config = signed_config();
    config.max_concurrent_replies = 1;
    let slow = assistant_fn(|message: MessageReceived, _: Context| async move {
        if message.message.content == "slow" {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok::<_, BoxError>(format!("Echo: {}", message.message.content))
    });
    let server = TestServer::start(config, slow).await;
    let addr = server.addr;
    let busy = tokio::spawn(async move {
        Connection::open(addr)
            .await
            .send(&signed_post(&payload("slow")))
            .await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let request = signed_post(&payload("retry me"));
    let refused = server.send(&request).await;
    refused.assert_json_error(503);
    assert_eq!(refused.header("retry-after"), Some("1"));
    busy.await.unwrap().reply();
    // The same bytes, as the Retry-After invited: not a replay.
    assert_eq!(server.send(&request).await.reply(), "Echo: retry me");
}

#[tokio::test]
async fn a_retry_after_the_deadline_is_refused_as_a_replay() {
    let config = signed_config().reply_deadline(Duration::from_millis(200));
    let slow = assistant_fn(|_: MessageReceived, _: Context| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok::<_, BoxError>("late")
    });
    let server = TestServer::start(config, slow).await;
    let request = signed_post(&payload("slow"));
    server.send(&request).await.assert_json_error(504);
    // The assistant already ran with this message: a second run is refused.
    let error = server.send(&request).await.assert_json_error(401);
    assert!(error.contains("replayed"), "{error}");
}

#[tokio::test]
async fn the_assistant_sees_the_signed_ids_not_the_headers() {
    let ids = assistant_fn(|_: MessageReceived, context: Context| async move {
        Ok::<_, BoxError>(format!("{} {}", context.app_id, context.thread_id))
    });
    let server = TestServer::start(signed_config(), ids).await;
    let body = body_of(&payload("who am I"));
    let mut headers = platform_headers();
    for (name, value) in &mut headers {
        if name == "X-App-Id" {
            *value = "forged-app-666".to_owned();
        }
        if name == "X-Thread-Id" {
            *value = "forged-thread-666".to_owned();
        }
    }
    headers.extend(platform_signature(SECRET, now(), &body));
    let reply = server
        .send(&request("POST", "/", &headers, &body))
        .await
        .reply();
    assert_eq!(
        reply,
        "6f1c2a4e-8b1d-4c1e-9a37-0d2f5e8b9c10 0b8e7d6c-5a4f-4e3d-8c2b-1a0f9e8d7c6b"
    );
}

#[tokio::test]
async fn values_that_would_panic_or_never_work_are_setup_errors() {
    type Change = fn(&mut Config);
    let cases: [(&str, Change); 14] = [
        ("body_limit", |c| c.body_limit = 0),
        ("reply_deadline", |c| c.reply_deadline = Duration::MAX),
        ("reply_deadline", |c| c.reply_deadline = Duration::ZERO),
        ("header_read_timeout", |c| {
            c.header_read_timeout = Duration::MAX
        }),
        ("body_read_timeout", |c| c.body_read_timeout = Duration::MAX),
        ("write_timeout", |c| c.write_timeout = Duration::ZERO),
        ("max_connection_age", |c| {
            c.max_connection_age = Duration::MAX
        }),
        ("shutdown_grace", |c| c.shutdown_grace = Duration::MAX),
        ("replay_window", |c| {
            c.replay_window = Duration::from_millis(500)
        }),
        ("replay_window", |c| c.replay_window = Duration::MAX),
        ("max_connections", |c| c.max_connections = usize::MAX),
        ("max_concurrent_replies", |c| {
            c.max_concurrent_replies = usize::MAX
        }),
        ("max_concurrent_replies", |c| c.max_concurrent_replies = 0),
        ("max_requests_per_connection", |c| {
            c.max_requests_per_connection = 0
        }),
    ];
    for (field, change) in cases {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut config = signed_config();
        change(&mut config);
        let error = Server::from_listener(listener, config, echo()).unwrap_err();
        assert!(
            matches!(error, SetupError::InvalidConfig { field: named, .. } if named == field),
            "{field}: {error:?}"
        );
        assert!(error.to_string().contains(field), "{error}");
    }
}

#[tokio::test]
async fn a_connection_is_cut_at_its_hard_deadline_whatever_it_is_doing() {
    let mut config = signed_config().reply_format(partner_webhook::ReplyFormat::Sse);
    let short = Duration::from_millis(200);
    config.max_connection_age = short;
    config.header_read_timeout = short;
    config.body_read_timeout = short;
    config.reply_deadline = short;
    config.write_timeout = short;
    // An endless stream: only the hard deadline (age + one request's
    // timeouts = 1 s here) can end it.
    let endless = assistant_fn(|_: MessageReceived, _: Context| async move {
        let ticks = futures_util::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Some((Ok::<_, std::convert::Infallible>("tick "), ()))
        });
        Ok::<_, BoxError>(partner_webhook::Reply::stream(ticks))
    });
    let server = TestServer::start(config, endless).await;
    let mut connection = Connection::open(server.addr).await;
    let started = Instant::now();
    connection.write(&signed_post(&payload("forever"))).await;
    assert_eq!(connection.read_head().await.status, 200);
    let mut frames = 0;
    let mut buffer = vec![0u8; 4096];
    loop {
        assert!(started.elapsed() < IO_TIMEOUT, "the stream was never cut");
        let read = tokio::time::timeout(IO_TIMEOUT, connection.read_raw(&mut buffer))
            .await
            .expect("the stream was never cut");
        if read == 0 {
            break;
        }
        frames += 1;
    }
    let lived = started.elapsed();
    assert!(frames > 5, "only {frames} reads before the cut");
    assert!(
        lived >= Duration::from_millis(800) && lived < Duration::from_secs(5),
        "cut after {lived:?}"
    );
}
