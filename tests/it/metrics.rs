//! Metrics: a known mix of requests, then a scrape of the Prometheus
//! endpoint over a real socket. The server and its global recorder run in a
//! child process, so other tests' requests do not count. The webhook keeps
//! handles for what every request records when the recorder is installed
//! before it is built, and records through the `metrics` macros otherwise:
//! both ways are scraped.

use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use partner_webhook::ReplyFormat;

use crate::support::*;

const CHILD: &str = "metrics::metrics_child_server";
const CHILD_RECORDER_AFTER: &str = "metrics::metrics_child_server_recorder_after";

/// The server half: the echo server and a Prometheus endpoint, installed
/// first, as the examples do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the server process of a_scrape_counts_a_known_mix_of_requests"]
async fn metrics_child_server() {
    if !ChildServer::is_child(CHILD) {
        return;
    }
    let metrics_addr = install_prometheus().await;
    let (json, sse) = echo_servers().await;
    ChildServer::serve_until_parent_leaves(&[
        json.addr.port(),
        metrics_addr.port(),
        sse.addr.port(),
    ])
    .await;
}

/// The same with the recorder installed after the webhook is built.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the server process of a_recorder_installed_after_the_webhook_counts_the_same"]
async fn metrics_child_server_recorder_after() {
    if !ChildServer::is_child(CHILD_RECORDER_AFTER) {
        return;
    }
    let (json, sse) = echo_servers().await;
    let metrics_addr = install_prometheus().await;
    ChildServer::serve_until_parent_leaves(&[
        json.addr.port(),
        metrics_addr.port(),
        sse.addr.port(),
    ])
    .await;
}

/// The echo server answering JSON, and one streaming SSE.
async fn echo_servers() -> (TestServer, TestServer) {
    let sse = TestServer::start(signed_config().reply_format(ReplyFormat::Sse), echo()).await;
    (TestServer::echo().await, sse)
}

async fn install_prometheus() -> std::net::SocketAddr {
    let free = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = free.local_addr().unwrap();
    drop(free);
    PrometheusBuilder::new()
        .with_http_listener(metrics_addr)
        .install()
        .unwrap();
    metrics_addr
}

/// The value of the series whose line starts with `series` (name and labels
/// as Prometheus prints them), 0 when absent.
fn value(scrape: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .lines()
        .filter(|line| line.starts_with(name) && !line.starts_with('#'))
        .filter(|line| {
            labels
                .iter()
                .all(|(key, value)| line.contains(&format!("{key}=\"{value}\"")))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_counts_a_known_mix_of_requests() {
    scrape_counts_a_known_mix(CHILD, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorder_installed_after_the_webhook_counts_the_same() {
    scrape_counts_a_known_mix(CHILD_RECORDER_AFTER, false).await;
}

/// The Prometheus text the child serves on `port`.
async fn scrape(port: u16) -> String {
    let mut scrape = Connection::open(([127, 0, 0, 1], port).into()).await;
    scrape
        .write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let response = scrape.read_head().await;
    assert_eq!(response.status, 200);
    scrape.read_to_end().await
}

/// `held`: the webhook holds handles (the recorder was installed first), so
/// the series it holds show before any request, at zero.
async fn scrape_counts_a_known_mix(server: &str, held: bool) {
    let child = ChildServer::start(server);
    let before = scrape(child.ports[1]).await;
    let never_sent = r#"partner_webhook_sse_frames_total{event="error"} 0"#;
    assert_eq!(before.contains(never_sent), held, "{before}");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], child.ports[0]));
    let send = |request: Vec<u8>| async move { Connection::open(addr).await.send(&request).await };
    // Three good, one replay of the first, one unsigned, one bad JSON.
    let first = signed_post(&payload("one"));
    send(first.clone()).await.reply();
    send(signed_post(&payload("two"))).await.reply();
    send(signed_post(&payload("three"))).await.reply();
    send(first).await.assert_json_error(401);
    let body = body_of(&payload("unsigned"));
    send(request("POST", "/", &platform_headers(), &body))
        .await
        .assert_json_error(401);
    // One streamed reply: a delta and done.
    let mut stream = Connection::open(([127, 0, 0, 1], child.ports[2]).into()).await;
    stream.write(&signed_post(&payload("streamed"))).await;
    assert_eq!(stream.read_head().await.status, 200);
    let mut frames = Vec::new();
    while let Some(chunk) = stream.read_chunk().await {
        frames.extend(chunk);
    }
    assert!(
        String::from_utf8_lossy(&frames).contains("event: done"),
        "{frames:?}"
    );
    let garbage = b"{not json".to_vec();
    let mut headers = platform_headers();
    headers.extend(platform_signature(SECRET, now(), &garbage));
    send(request("POST", "/", &headers, &garbage))
        .await
        .assert_json_error(400);

    // Lines are logged and counted when each response's body is dropped.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = scrape(child.ports[1]).await;

    let requests = "partner_webhook_requests_total";
    assert_eq!(
        value(
            &text,
            requests,
            &[("outcome", "replied"), ("status", "200")]
        ),
        4.0,
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            requests,
            &[("outcome", "refused"), ("status", "401")]
        ),
        2.0
    );
    assert_eq!(
        value(
            &text,
            requests,
            &[("outcome", "refused"), ("status", "400")]
        ),
        1.0
    );
    let rejections = "partner_webhook_rejections_total";
    assert_eq!(value(&text, rejections, &[("reason", "replayed")]), 1.0);
    assert_eq!(
        value(&text, rejections, &[("reason", "signature_missing")]),
        1.0
    );
    assert_eq!(
        value(&text, rejections, &[("reason", "malformed_json")]),
        1.0
    );
    assert_eq!(
        value(&text, "partner_webhook_replay_cache_entries", &[]),
        4.0
    );
    assert!(
        text.contains("partner_webhook_assistant_duration_seconds"),
        "{text}"
    );
    assert!(
        text.contains("partner_webhook_signing_skew_seconds"),
        "{text}"
    );
    let frames = "partner_webhook_sse_frames_total";
    assert_eq!(value(&text, frames, &[("event", "delta")]), 1.0, "{text}");
    assert_eq!(value(&text, frames, &[("event", "done")]), 1.0, "{text}");
    assert_eq!(value(&text, "partner_webhook_requests_in_flight", &[]), 0.0);
}
