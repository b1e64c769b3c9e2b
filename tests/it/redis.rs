//! RedisReplayCache against a real `redis-server` (Debian's package; `.ci/run`
//! installs it), started on a free port for each test.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use partner_webhook::RedisReplayCache;

use crate::support::*;

/// A `redis-server` on `port`, with no persistence, killed on drop.
pub(crate) struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    async fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is required for these tests (apt-get install redis-server)");
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(started.elapsed() < IO_TIMEOUT, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        RedisServer { child, port }
    }

    pub(crate) async fn on_a_free_port() -> Self {
        let port = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start(port).await
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub(crate) fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn server_sharing(redis: &RedisServer, prefix: &str) -> TestServer {
    let cache = RedisReplayCache::connect(&redis.url())
        .await
        .unwrap()
        .with_prefix(prefix)
        .with_timeout(Duration::from_millis(300));
    let mut config = signed_config();
    config.replay_cache = Arc::new(cache);
    TestServer::start(config, echo()).await
}

#[tokio::test]
async fn two_instances_refuse_each_others_replays() {
    let redis = RedisServer::on_a_free_port().await;
    let first = server_sharing(&redis, "test-a:").await;
    let second = server_sharing(&redis, "test-a:").await;
    let request = signed_post(&payload("once across instances"));
    assert_eq!(
        first.send(&request).await.reply(),
        "Echo: once across instances"
    );
    let error = second.send(&request).await.assert_json_error(401);
    assert!(error.contains("replayed"), "{error}");
    // Another deployment (another prefix) keeps its own record.
    let other = server_sharing(&redis, "test-b:").await;
    assert_eq!(
        other.send(&request).await.reply(),
        "Echo: once across instances"
    );
}

#[tokio::test]
async fn keys_expire_with_the_window() {
    let redis = RedisServer::on_a_free_port().await;
    let server = server_sharing(&redis, "ttl:").await;
    server
        .send(&signed_post(&payload("expiring")))
        .await
        .reply();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("ttl:*")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1);
    let ttl: i64 = redis::cmd("TTL")
        .arg(&keys[0])
        .query_async(&mut connection)
        .await
        .unwrap();
    // Signed now, window 300 s: refused through its last valid second.
    assert!((299..=301).contains(&ttl), "ttl {ttl}");
}

#[tokio::test]
async fn redis_down_is_503_at_once_and_service_resumes_when_it_is_back() {
    let mut redis = RedisServer::on_a_free_port().await;
    let server = server_sharing(&redis, "outage:").await;
    server.send(&signed_post(&payload("before"))).await.reply();
    let ready = server
        .send(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert_eq!(ready.json()["status"], "ready");
    redis.stop();
    let not_ready = server
        .send(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert!(
        not_ready
            .assert_json_error(503)
            .contains("replay store unavailable")
    );
    assert_eq!(
        server
            .send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .status,
        200,
        "liveness does not depend on Redis"
    );
    let started = Instant::now();
    let response = server.send(&signed_post(&payload("during"))).await;
    let error = response.assert_json_error(503);
    assert!(error.contains("replay store unavailable"), "{error}");
    assert_eq!(response.header("retry-after"), Some("1"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let _back = RedisServer::start(redis.port).await;
    let resumed = Instant::now();
    loop {
        let response = server.send(&signed_post(&payload("after"))).await;
        if response.status == 200 {
            assert_eq!(response.reply(), "Echo: after");
            break;
        }
        response.assert_json_error(503);
        assert!(resumed.elapsed() < Duration::from_secs(20), "never resumed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
