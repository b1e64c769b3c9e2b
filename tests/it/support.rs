//! A test server on 127.0.0.1:0 that shuts down on drop, and a raw HTTP/1.1
//! client that writes requests byte for byte as the platform's sender does.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use partner_webhook::{
    Assistant, Config, Context, MessageReceived, Secret, Server, Webhook, assistant_fn,
};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const SECRET: &str = "9b1c0e5f7d2468ace13579bdf02468ace13579bdf02468ace13579bdf024680a";
/// Every client read gives up after this, so a hung server fails the test
/// instead of hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    pub async fn start(config: Config, assistant: impl Assistant) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Server::from_listener(listener, config, assistant).unwrap();
        Self::serve(server)
    }

    /// Serves a `Webhook` built by the test (event routes, a fixed clock).
    pub async fn with_webhook(config: &Config, webhook: Webhook) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(Server::with_webhook(listener, config, webhook).unwrap())
    }

    fn serve(server: Server) -> Self {
        let addr = server.local_addr();
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    /// The echo assistant of `examples/echo.rs`, with [`SECRET`].
    pub async fn echo() -> Self {
        Self::start(signed_config(), echo()).await
    }

    /// Starts a graceful shutdown and returns the task that ends with it.
    pub fn begin_shutdown(&mut self) -> JoinHandle<()> {
        let _ = self.shutdown.take().unwrap().send(());
        self.task.take().unwrap()
    }

    pub async fn send(&self, request: &[u8]) -> HttpResponse {
        Connection::open(self.addr).await.send(request).await
    }
}

/// After every rejection the same server must still answer a valid request.
pub async fn assert_still_serving(server: &TestServer) {
    let reply = server
        .send(&signed_post(&payload("still there?")))
        .await
        .reply();
    assert_eq!(reply, "Echo: still there?");
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

pub fn signed_config() -> Config {
    Config::default().secret(Secret::new(SECRET).unwrap())
}

pub fn echo() -> impl Assistant {
    assistant_fn(|message: MessageReceived, _: Context| async move {
        Ok::<_, Infallible>(format!("Echo: {}", message.message.content))
    })
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The normal payload the platform sends for `content`. Like the platform's,
/// its `timestamp` has microseconds and differs on every call, so two
/// requests never share a signature (the server refuses exact replays).
pub fn payload(content: &str) -> Value {
    static SENT: AtomicU64 = AtomicU64::new(0);
    let micros = SENT.fetch_add(1, Ordering::Relaxed) % 1_000_000;
    json!({
        "version": "1.0",
        "event": "message_received",
        "app": {"id": "6f1c2a4e-8b1d-4c1e-9a37-0d2f5e8b9c10", "name": "Shop"},
        "thread": {"id": "0b8e7d6c-5a4f-4e3d-8c2b-1a0f9e8d7c6b", "customer_id": null},
        "message": {"id": "4d3c2b1a-0f9e-4d8c-8b7a-6f5e4d3c2b1a", "seq": 2, "role": "user",
                    "content": content, "content_json": {}},
        "history_tail": [
            {"role": "assistant", "content": "Hello there! How can I help you today?",
             "content_json": {"source": "system"}},
            {"role": "user", "content": content, "content_json": {}}
        ],
        "timestamp": format!("2026-11-23T12:00:00.{micros:06}+00:00")
    })
}

/// Compact JSON with raw UTF-8, as the platform sends it.
pub fn body_of(payload: &Value) -> Vec<u8> {
    serde_json::to_vec(payload).unwrap()
}

/// Headers the platform's sender (httpx) writes, in its order, before
/// `Content-Length`.
pub fn platform_headers() -> Vec<(String, String)> {
    [
        ("Host", "127.0.0.1"),
        ("Accept", "*/*"),
        ("Accept-Encoding", "gzip, deflate"),
        ("Connection", "keep-alive"),
        ("User-Agent", "python-httpx/0.28.1"),
        ("Content-Type", "application/json"),
        ("X-App-Id", "6f1c2a4e-8b1d-4c1e-9a37-0d2f5e8b9c10"),
        ("X-Thread-Id", "0b8e7d6c-5a4f-4e3d-8c2b-1a0f9e8d7c6b"),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect()
}

/// `X-Timestamp` and `X-Signature` exactly as the platform computes them: over
/// the `\u`-escaped text, not the raw UTF-8 body it sends.
pub fn platform_signature(secret: &str, timestamp: u64, body: &[u8]) -> Vec<(String, String)> {
    let secret = Secret::new(secret).unwrap();
    let signature = partner_webhook::testing::platform_signature(&secret, timestamp, body);
    vec![
        ("X-Timestamp".to_owned(), timestamp.to_string()),
        ("X-Signature".to_owned(), signature),
    ]
}

/// Signature header lines that pass the checks made before the body is read
/// (well formed, a fresh timestamp) but match no body: for requests whose body
/// the server must read before refusing it.
pub fn plausible_signature_lines() -> String {
    format!(
        "X-Timestamp: {}\r\nX-Signature: sha256={}\r\n",
        now(),
        "0".repeat(64)
    )
}

/// A request head (ending in the blank line) with [`plausible_signature_lines`],
/// and `extra` header lines (each ending in `\r\n`).
pub fn plausible_head(extra: &str) -> Vec<u8> {
    format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{}{extra}\r\n",
        plausible_signature_lines()
    )
    .into_bytes()
}

/// A complete request: request line, headers in order, `Content-Length`, body.
pub fn request(method: &str, path: &str, headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let mut raw = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
    for (name, value) in headers {
        raw.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    raw.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    raw.extend_from_slice(body);
    raw
}

/// A POST signed with [`SECRET`] the way the platform signs, for `payload`.
pub fn signed_post(payload: &Value) -> Vec<u8> {
    let body = body_of(payload);
    let mut headers = platform_headers();
    headers.extend(platform_signature(SECRET, now(), &body));
    request("POST", "/", &headers, &body)
}

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("body is not JSON ({error}): {:?}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts the shape every error response must have.
    pub fn assert_json_error(&self, status: u16) -> String {
        assert_eq!(
            self.status,
            status,
            "unexpected status, body: {}",
            self.text()
        );
        assert_eq!(self.header("content-type"), Some("application/json"));
        let error = self.json()["error"].as_str().map(str::to_owned);
        let error = error.unwrap_or_else(|| panic!("no \"error\" string in {}", self.text()));
        assert!(!error.contains(SECRET), "error body leaks the secret");
        error
    }

    pub fn reply(&self) -> String {
        assert_eq!(self.status, 200, "body: {}", self.text());
        assert_eq!(self.header("content-type"), Some("application/json"));
        self.json()["reply"].as_str().unwrap().to_owned()
    }
}

/// One client connection, reusable for keep-alive.
pub struct Connection {
    stream: BufReader<TcpStream>,
}

impl Connection {
    pub async fn open(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        Connection {
            stream: BufReader::new(stream),
        }
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        self.write_raw(bytes).await.unwrap();
    }

    /// Writes without asserting success: the server may already have closed.
    pub async fn write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.get_mut().write_all(bytes).await
    }

    /// A response if the server sends one before closing, `None` if it only
    /// closes the connection.
    pub async fn try_read_response(&mut self) -> Option<HttpResponse> {
        let peeked = tokio::time::timeout(IO_TIMEOUT, self.stream.fill_buf())
            .await
            .expect("the server neither answered nor closed in time");
        match peeked {
            Ok([]) | Err(_) => None,
            Ok(_) => Some(self.read_response().await),
        }
    }

    pub async fn send(&mut self, request: &[u8]) -> HttpResponse {
        self.write(request).await;
        self.read_response().await
    }

    pub async fn read_response(&mut self) -> HttpResponse {
        tokio::time::timeout(IO_TIMEOUT, self.read_response_inner())
            .await
            .expect("the server did not answer in time")
    }

    /// The status line and headers of a response whose body is read
    /// separately (a stream).
    pub async fn read_head(&mut self) -> HttpResponse {
        tokio::time::timeout(IO_TIMEOUT, self.read_head_inner())
            .await
            .expect("the server did not answer in time")
    }

    /// The next chunk of a `Transfer-Encoding: chunked` body, `None` after the
    /// last. Each is one body frame the server sent.
    pub async fn read_chunk(&mut self) -> Option<Vec<u8>> {
        tokio::time::timeout(IO_TIMEOUT, async {
            let mut size_line = String::new();
            self.stream.read_line(&mut size_line).await.unwrap();
            let size = usize::from_str_radix(size_line.trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
            let mut chunk = vec![0; size + 2];
            self.stream.read_exact(&mut chunk).await.unwrap();
            assert!(chunk.ends_with(b"\r\n"), "chunk not terminated by CRLF");
            chunk.truncate(size);
            (size > 0).then_some(chunk)
        })
        .await
        .expect("the server sent no chunk in time")
    }

    async fn read_head_inner(&mut self) -> HttpResponse {
        let mut status_line = String::new();
        self.stream.read_line(&mut status_line).await.unwrap();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line).await.unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            headers.push((name.to_owned(), value.trim().to_owned()));
        }
        HttpResponse {
            status,
            headers,
            body: Vec::new(),
        }
    }

    async fn read_response_inner(&mut self) -> HttpResponse {
        let HttpResponse {
            status, headers, ..
        } = self.read_head_inner().await;
        let length: usize = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .map(|(_, value)| value.parse().unwrap())
            .expect("every response has a Content-Length");
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await.unwrap();
        HttpResponse {
            status,
            headers,
            body,
        }
    }

    /// One read of whatever arrived; 0 at end of stream (or a reset).
    pub async fn read_raw(&mut self, buffer: &mut [u8]) -> usize {
        self.stream.read(buffer).await.unwrap_or(0)
    }

    /// Everything left until the server closes, as text.
    pub async fn read_to_end(&mut self) -> String {
        let mut rest = Vec::new();
        tokio::time::timeout(IO_TIMEOUT, self.stream.read_to_end(&mut rest))
            .await
            .expect("the server did not close in time")
            .unwrap();
        String::from_utf8_lossy(&rest).into_owned()
    }

    /// True when the server closed the connection (reads end of stream).
    pub async fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(IO_TIMEOUT, self.stream.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

/// A server in a child process (this test binary, re-run on one ignored
/// test), so that what it records (its memory, a global metrics recorder)
/// is its own. Killed on drop.
pub struct ChildServer {
    child: std::process::Child,
    /// The ports the child printed.
    pub ports: Vec<u16>,
}

const CHILD_ENV: &str = "PARTNER_WEBHOOK_CHILD";

impl ChildServer {
    /// Runs the ignored test `test` (its full path) as the child.
    pub fn start(test: &str) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                test,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, test)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let ports = stdout
            .lines()
            .map_while(Result::ok)
            // libtest may print the test's name on the same line first.
            .find_map(|line| {
                let ports = line.split_once("LISTENING ")?.1;
                ports
                    .split_whitespace()
                    .map(|port| port.parse().ok())
                    .collect()
            })
            .expect("the child server did not start");
        ChildServer { child, ports }
    }

    /// In the ignored test: whether this process is the child running it.
    pub fn is_child(test: &str) -> bool {
        std::env::var(CHILD_ENV).is_ok_and(|running| running == test)
    }

    /// In the child: tells the parent the ports, then serves until the parent
    /// closes our stdin.
    pub async fn serve_until_parent_leaves(ports: &[u16]) {
        let ports: Vec<String> = ports.iter().map(ToString::to_string).collect();
        #[allow(
            clippy::print_stdout,
            reason = "the parent process reads the ports here"
        )]
        {
            println!("LISTENING {}", ports.join(" "));
        }
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink)
        })
        .await;
    }

    /// `VmRSS` or `VmHWM` (peak) in KiB, from /proc.
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| {
                line.strip_prefix(field)?
                    .trim_start_matches(':')
                    .trim()
                    .strip_suffix(" kB")?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Log lines written while it is the thread's default subscriber. The
/// current-thread runtime runs the server's tasks on this thread too.
#[derive(Clone, Default)]
pub struct CapturedLog(Arc<Mutex<Vec<u8>>>);

impl Write for CapturedLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLog {
    /// Captures, in tracing-subscriber's default format without colours, what
    /// is logged on this thread at `info` until the guard is dropped.
    pub fn start() -> (Self, tracing::subscriber::DefaultGuard) {
        let log = CapturedLog::default();
        let writer = log.clone();
        let logging = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (log, tracing::subscriber::set_default(logging))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}
