//! Slow assistants, hostile clients and overload. Every test uses short limits
//! so it ends in about a second, talks to 127.0.0.1 only, and checks that a
//! valid request still succeeds afterwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use partner_webhook::{
    BoxError, Config, Context, MemoryReplayCache, MessageReceived, assistant_fn,
};

use crate::support::*;

const SHORT: Duration = Duration::from_millis(300);

/// An assistant that sleeps `delay` before echoing, and records whether its
/// future was dropped before it finished.
fn sleepy(delay: Duration, dropped: Arc<AtomicBool>) -> impl partner_webhook::Assistant {
    assistant_fn(move |message: MessageReceived, _: Context| {
        let dropped = Arc::clone(&dropped);
        async move {
            struct SetOnDrop(Arc<AtomicBool>);
            impl Drop for SetOnDrop {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
            let guard = SetOnDrop(dropped);
            tokio::time::sleep(delay).await;
            std::mem::forget(guard);
            Ok::<_, BoxError>(format!("Echo: {}", message.message.content))
        }
    })
}

#[tokio::test]
async fn missed_deadline_is_504_and_the_assistant_is_dropped() {
    let dropped = Arc::new(AtomicBool::new(false));
    let config = signed_config().reply_deadline(SHORT);
    let server = TestServer::start(config, sleepy(Duration::from_secs(30), dropped.clone())).await;
    let started = Instant::now();
    let error = server
        .send(&signed_post(&payload("slow")))
        .await
        .assert_json_error(504);
    assert!(error.contains("did not reply within 0.3 s"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        dropped.load(Ordering::SeqCst),
        "assistant future still running"
    );
}

#[tokio::test]
async fn missed_deadline_sends_the_fallback_reply_when_configured() {
    let config = signed_config()
        .reply_deadline(SHORT)
        .fallback_reply("Sorry, I'm a bit slow today. Please ask again.");
    let slow = sleepy(Duration::from_secs(30), Arc::default());
    let server = TestServer::start(config, slow).await;
    let reply = server.send(&signed_post(&payload("slow"))).await.reply();
    assert_eq!(reply, "Sorry, I'm a bit slow today. Please ask again.");
}

#[tokio::test]
async fn slowloris_headers_lose_the_connection() {
    let mut config = signed_config();
    config.header_read_timeout = SHORT;
    let server = TestServer::start(config, echo()).await;
    let mut connection = Connection::open(server.addr).await;
    let started = Instant::now();
    let request = signed_post(&payload("trickle"));
    let mut cut = false;
    for byte in request.iter().take(60) {
        if tokio::time::timeout(Duration::from_millis(50), connection.write_raw(&[*byte]))
            .await
            .is_ok_and(|written| written.is_err())
        {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        cut || connection.is_closed().await,
        "trickling client kept its connection"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let mut config = signed_config();
    config.header_read_timeout = SHORT;
    let server = TestServer::start(config, echo()).await;
    let mut connection = Connection::open(server.addr).await;
    connection
        .send(&signed_post(&payload("once")))
        .await
        .reply();
    let started = Instant::now();
    assert!(connection.is_closed().await);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn stalled_body_is_408_and_cut_off() {
    let mut config = signed_config();
    config.body_read_timeout = SHORT;
    let server = TestServer::start(config, echo()).await;
    let mut connection = Connection::open(server.addr).await;
    let mut head = plausible_head("Content-Length: 1000000\r\n");
    head.extend_from_slice(b"{\"version\"");
    connection.write(&head).await;
    let started = Instant::now();
    let error = connection.read_response().await.assert_json_error(408);
    assert!(error.contains("did not arrive within 0.3 s"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(connection.is_closed().await, "stalled connection left open");
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn oversized_head_is_refused() {
    let server = TestServer::echo().await;
    let mut headers = platform_headers();
    headers.push(("X-Padding".into(), "a".repeat(64 * 1024)));
    let mut connection = Connection::open(server.addr).await;
    let _ = connection
        .write_raw(&request("POST", "/", &headers, b"{}"))
        .await;
    let response = connection.try_read_response().await;
    assert!(
        response
            .as_ref()
            .is_none_or(|response| response.status == 431),
        "{response:?}"
    );
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn ten_mib_with_content_length_is_413_unread() {
    let server = TestServer::echo().await;
    let mut connection = Connection::open(server.addr).await;
    connection
        .write(&plausible_head("Content-Length: 10485760\r\n"))
        .await;
    connection.read_response().await.assert_json_error(413);
    assert!(connection.is_closed().await);
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn ten_mib_chunked_is_413_after_the_limit() {
    let server = TestServer::echo().await;
    let mut connection = Connection::open(server.addr).await;
    connection
        .write(&plausible_head("Transfer-Encoding: chunked\r\n"))
        .await;
    let chunk = [b"10000\r\n".as_slice(), &[b' '; 0x10000], b"\r\n"].concat();
    let mut sent = 0;
    // Keep sending until the server answers and stops reading, 10 MiB at most.
    while sent < 10 * 1024 * 1024 {
        match tokio::time::timeout(Duration::from_secs(1), connection.write_raw(&chunk)).await {
            Ok(Ok(())) => sent += 0x10000,
            _ => break,
        }
    }
    let response = connection
        .try_read_response()
        .await
        .expect("a 413 response");
    response.assert_json_error(413);
    // Loopback socket buffers absorb a few MiB, so only "stopped well before
    // the end" is observable from here.
    assert!(sent < 10 * 1024 * 1024, "the server read the whole 10 MiB");
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn three_hundred_concurrent_requests_are_all_answered() {
    let server = TestServer::echo().await;
    let requests = (0..300).map(|index| {
        let request = signed_post(&payload(&format!("concurrent {index}")));
        let addr = server.addr;
        tokio::spawn(async move { (index, Connection::open(addr).await.send(&request).await) })
    });
    for task in requests.collect::<Vec<_>>() {
        let (index, response) = task.await.unwrap();
        assert_eq!(response.reply(), format!("Echo: concurrent {index}"));
    }
}

#[tokio::test]
async fn malformed_request_lines_do_not_hurt_the_server() {
    let server = TestServer::echo().await;
    for garbage in [
        b"\x00\x01\x02 garbage\r\n\r\n".as_slice(),
        b"POST\r\n\r\n",
        b"POST / HTTP/9.9\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost x\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ] {
        let mut connection = Connection::open(server.addr).await;
        let _ = connection.write_raw(garbage).await;
        if let Some(response) = connection.try_read_response().await {
            assert!(
                response.status >= 400,
                "{garbage:?} got {}",
                response.status
            );
        }
        assert_still_serving(&server).await;
    }
}

#[tokio::test]
async fn duplicated_signature_headers_are_401() {
    let server = TestServer::echo().await;
    let body = body_of(&payload("twice"));
    let mut headers = platform_headers();
    let signature = platform_signature(SECRET, now(), &body);
    headers.extend(signature.clone());
    headers.push(signature[1].clone());
    let response = server.send(&request("POST", "/", &headers, &body)).await;
    assert!(response.assert_json_error(401).contains("more than once"));
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn exact_replay_is_401_replayed() {
    let server = TestServer::echo().await;
    let captured = signed_post(&payload("pay me"));
    assert_eq!(server.send(&captured).await.reply(), "Echo: pay me");
    let error = server.send(&captured).await.assert_json_error(401);
    assert!(error.starts_with("replayed"), "{error}");
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn full_replay_cache_keeps_fresh_requests_flowing_and_refuses_old_ones() {
    let mut config = signed_config();
    config.replay_cache = Arc::new(MemoryReplayCache::new(1));
    let server = TestServer::start(config, echo()).await;
    let signed_at = |age: u64, content: &str| {
        let body = body_of(&payload(content));
        let mut headers = platform_headers();
        headers.extend(platform_signature(SECRET, now() - age, &body));
        request("POST", "/", &headers, &body)
    };
    let oldest = signed_at(20, "oldest");
    assert_eq!(server.send(&oldest).await.reply(), "Echo: oldest");
    // The cache is full: remembering this one forgets the oldest...
    let newer = signed_at(10, "newer");
    assert_eq!(server.send(&newer).await.reply(), "Echo: newer");
    // ...which is still refused, though it is no longer remembered.
    let error = server.send(&oldest).await.assert_json_error(401);
    assert!(error.starts_with("replayed"), "{error}");
    assert_eq!(
        server.send(&signed_at(0, "fresh")).await.reply(),
        "Echo: fresh"
    );
}

#[tokio::test]
async fn busy_assistant_answers_503_at_once() {
    let mut config = signed_config();
    config.max_concurrent_replies = 1;
    let server =
        TestServer::start(config, sleepy(Duration::from_millis(800), Arc::default())).await;
    let mut busy = Connection::open(server.addr).await;
    busy.write(&signed_post(&payload("occupying"))).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let response = server.send(&signed_post(&payload("one too many"))).await;
    let error = response.assert_json_error(503);
    assert!(error.contains("too many replies"), "{error}");
    assert_eq!(response.header("retry-after"), Some("1"));
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "503 was not immediate"
    );
    assert_eq!(busy.read_response().await.reply(), "Echo: occupying");
}

#[tokio::test]
async fn memory_budget_refuses_bodies_past_it() {
    let mut config = signed_config().body_limit(64 * 1024);
    config.max_buffered_bytes = 64 * 1024;
    let server = TestServer::start(config, echo()).await;
    // One slow upload that has really sent 63 KiB holds the budget...
    let mut slow = Connection::open(server.addr).await;
    slow.write(&plausible_head("Content-Length: 65536\r\n"))
        .await;
    slow.write(&[b' '; 63 * 1024 + 1]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ...so the next body cannot be buffered.
    let response = server.send(&signed_post(&payload("no room"))).await;
    assert!(response.assert_json_error(503).contains("request bodies"));
    assert_eq!(response.header("retry-after"), Some("1"));
    drop(slow);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn announcing_big_bodies_without_sending_them_holds_no_memory() {
    let mut config = signed_config();
    config.max_buffered_bytes = config.body_limit;
    let server = TestServer::start(config, echo()).await;
    // Each announces the whole budget; none of them sends a byte of it.
    let mut announcers = Vec::new();
    for _ in 0..8 {
        let mut connection = Connection::open(server.addr).await;
        connection
            .write(&plausible_head("Content-Length: 1048576\r\n"))
            .await;
        announcers.push(connection);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn at_capacity_an_idle_keep_alive_connection_gives_way() {
    let mut config = signed_config();
    config.max_connections = 1;
    let server = TestServer::start(config, echo()).await;
    let mut idle = Connection::open(server.addr).await;
    idle.send(&signed_post(&payload("first"))).await.reply();
    // The only slot is held by a connection that is only keeping alive...
    let started = Instant::now();
    let reply = server.send(&signed_post(&payload("second"))).await.reply();
    // ...so it is closed to make room, rather than the new client waiting.
    assert_eq!(reply, "Echo: second");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(idle.is_closed().await, "the idle connection kept its slot");
}

#[tokio::test]
async fn at_capacity_one_idle_connection_gives_way_per_new_client() {
    let mut config = signed_config();
    config.max_connections = 4;
    let server = TestServer::start(config, echo()).await;
    let mut idle = Vec::new();
    for index in 0..4 {
        let mut connection = Connection::open(server.addr).await;
        let reply = connection
            .send(&signed_post(&payload(&format!("idle {index}"))))
            .await;
        assert_eq!(reply.reply(), format!("Echo: idle {index}"));
        idle.push(connection);
    }
    assert_eq!(
        server.send(&signed_post(&payload("new"))).await.reply(),
        "Echo: new"
    );
    // Closed connections read end-of-stream at once; open ones still answer.
    let mut still_open = 0;
    for connection in &mut idle {
        if connection
            .write_raw(&signed_post(&payload("again")))
            .await
            .is_ok()
            && connection.try_read_response().await.is_some()
        {
            still_open += 1;
        }
    }
    assert_eq!(still_open, 3, "one idle connection makes room, not all");
}

#[tokio::test]
async fn at_capacity_a_busy_connection_finishes_its_reply_first() {
    let mut config = signed_config();
    config.max_connections = 1;
    let slow = sleepy(Duration::from_millis(500), Arc::default());
    let server = TestServer::start(config, slow).await;
    let mut busy = Connection::open(server.addr).await;
    busy.write(&signed_post(&payload("first"))).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let addr = server.addr;
    let second = tokio::spawn(async move {
        Connection::open(addr)
            .await
            .send(&signed_post(&payload("second")))
            .await
    });
    // The busy connection gets its whole reply, then gives way...
    let first = busy.read_response().await;
    assert_eq!(first.reply(), "Echo: first");
    assert!(busy.is_closed().await);
    // ...and the waiting client is served once it has.
    assert_eq!(second.await.unwrap().reply(), "Echo: second");
}

#[tokio::test]
async fn panics_under_concurrent_load_only_hit_their_own_request() {
    let panics = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&panics);
    let moody = assistant_fn(move |message: MessageReceived, _: Context| {
        let counted = Arc::clone(&counted);
        async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if message.message.content.ends_with('7') {
                counted.fetch_add(1, Ordering::SeqCst);
                panic!("bug triggered by {}", message.message.content);
            }
            Ok::<_, BoxError>(format!("Echo: {}", message.message.content))
        }
    });
    let server = TestServer::start(signed_config(), moody).await;
    // 60 stays under the default 512 concurrent replies, so none is refused.
    let tasks: Vec<_> = (0..60)
        .map(|index| {
            let request = signed_post(&payload(&format!("load {index}")));
            let addr = server.addr;
            tokio::spawn(async move { (index, Connection::open(addr).await.send(&request).await) })
        })
        .collect();
    for task in tasks {
        let (index, response) = task.await.unwrap();
        if index % 10 == 7 {
            response.assert_json_error(500);
        } else {
            assert_eq!(response.reply(), format!("Echo: load {index}"));
        }
    }
    assert_eq!(panics.load(Ordering::SeqCst), 6);
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn shutdown_cuts_requests_after_the_grace_period() {
    let mut config = signed_config();
    config.shutdown_grace = SHORT;
    let slow = sleepy(Duration::from_secs(30), Arc::default());
    let mut server = TestServer::start(config, slow).await;
    let mut in_flight = Connection::open(server.addr).await;
    in_flight
        .write(&signed_post(&payload("never finishes")))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let stopped = server.begin_shutdown();
    tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .expect("serve did not return after the grace period")
        .unwrap();
    assert!(started.elapsed() >= SHORT);
    assert!(in_flight.is_closed().await, "in-flight connection not cut");
}

#[tokio::test]
async fn impossible_limits_are_setup_errors() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = Config::default().accept_unsigned();
    config.max_buffered_bytes = config.body_limit - 1;
    let error = partner_webhook::Server::from_listener(listener, config, echo()).unwrap_err();
    assert!(error.to_string().contains("max_buffered_bytes"), "{error}");
}
