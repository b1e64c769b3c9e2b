//! One connection's lifetime: a write deadline, a maximum age and request
//! count, and giving way when the server is full, so that no connection
//! lives forever and a client without the secret cannot hold a slot for long.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{CONNECTION, HeaderValue};
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tracing::debug;

use crate::config::Config;
use crate::response::ResponseBody;
use crate::webhook::Webhook;

/// The limits every connection lives under, from [`Config`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lifetime {
    write_timeout: Duration,
    /// No new request starts after this age.
    max_age: Duration,
    /// Cut outright at this age: `max_age` plus the longest one request may
    /// take once started.
    cut_at: Duration,
    max_requests: usize,
}

impl Lifetime {
    pub(crate) fn new(config: &Config) -> Self {
        let longest_request = config.header_read_timeout
            + config.body_read_timeout
            + config.reply_deadline
            + config.write_timeout;
        Lifetime {
            write_timeout: config.write_timeout,
            max_age: config.max_connection_age,
            cut_at: config.max_connection_age + longest_request,
            max_requests: config.max_requests_per_connection,
        }
    }
}

/// What the accept loop tells every connection; each connection subscribes
/// afresh, so it only sees what is said after it was accepted.
#[derive(Debug)]
pub(crate) struct Signals {
    /// Becomes `true` at shutdown: finish the request in progress, then close.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Bumped while a new client waits for a free slot: a stalled writer is
    /// cut, and one idle keep-alive connection (the one that claims
    /// [`RoomWanted`]) closes.
    pub(crate) make_room: watch::Receiver<u64>,
    pub(crate) room_wanted: RoomWanted,
}

/// One slot wanted by a client waiting at capacity; the first idle
/// connection to claim it closes, so one waiting client costs one keep-alive
/// connection, not all of them.
#[derive(Debug, Clone, Default)]
pub(crate) struct RoomWanted(Arc<AtomicBool>);

impl RoomWanted {
    pub(crate) fn ask(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub(crate) fn withdraw(&self) {
        self.0.store(false, Ordering::Relaxed);
    }

    fn claim(&self) -> bool {
        self.0
            .compare_exchange(true, false, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

/// Serves one connection until it closes, is closed by its limits, or is cut.
pub(crate) async fn serve(
    stream: TcpStream,
    builder: &http1::Builder,
    webhook: Webhook,
    lifetime: Lifetime,
    mut signals: Signals,
) -> Result<(), hyper::Error> {
    let write_stalled = Arc::new(AtomicBool::new(false));
    let io = WriteDeadline::new(stream, lifetime.write_timeout, Arc::clone(&write_stalled));
    let requests = Arc::new(RequestCounts::default());
    let service = CountedRequests {
        webhook,
        counts: Arc::clone(&requests),
        max_requests: lifetime.max_requests,
    };
    let connection = builder.serve_connection(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    let aged = tokio::time::sleep(lifetime.max_age);
    let cut = tokio::time::sleep(lifetime.cut_at);
    let (mut aged, mut cut) = (std::pin::pin!(aged), std::pin::pin!(cut));
    let mut closing = false;
    loop {
        // hyper's graceful shutdown closes an idle connection at once and a
        // busy one after its response.
        tokio::select! {
            result = connection.as_mut() => return result,
            () = &mut aged, if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            Ok(()) = signals.shutdown.changed(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            Ok(()) = signals.make_room.changed() => {
                if write_stalled.load(Ordering::Relaxed) {
                    debug!("cut a connection whose peer stopped reading, to make room");
                    return Ok(());
                }
                // Only a connection that has been answered and has nothing in
                // progress is keeping alive; a new one may have its first
                // request in flight (its head is bounded by the header read
                // timeout).
                if !closing && requests.is_idle() && signals.room_wanted.claim() {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
            () = &mut cut => {
                debug!(age_secs = lifetime.cut_at.as_secs_f64(), "cut a connection at its maximum age");
                return Ok(());
            }
        }
    }
}

/// The webhook with a count of the requests served on this connection; the
/// last one allowed is answered with `Connection: close`, which makes hyper
/// close the connection after writing it.
struct CountedRequests {
    webhook: Webhook,
    counts: Arc<RequestCounts>,
    max_requests: usize,
}

/// Requests started and finished on one connection; a request finishes
/// when its response body is dropped (after its last byte, a streamed reply
/// included), not when its handler returns.
#[derive(Debug, Default)]
struct RequestCounts {
    started: AtomicUsize,
    finished: AtomicUsize,
}

impl RequestCounts {
    /// Answered at least once and nothing in progress: keeping alive.
    fn is_idle(&self) -> bool {
        let finished = self.finished.load(Ordering::Relaxed);
        finished > 0 && self.started.load(Ordering::Relaxed) == finished
    }
}

type CountedFuture =
    Pin<Box<dyn Future<Output = Result<Response<CountedBody>, std::convert::Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for CountedRequests {
    type Response = Response<CountedBody>;
    type Error = std::convert::Infallible;
    type Future = CountedFuture;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let is_last = self.counts.started.fetch_add(1, Ordering::Relaxed) + 1 >= self.max_requests;
        let webhook = self.webhook.clone();
        let counts = Arc::clone(&self.counts);
        Box::pin(async move {
            let mut response = webhook.handle(request).await;
            if is_last {
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(response.map(|body| CountedBody { body, counts }))
        })
    }
}

/// A response body that counts its request as finished when dropped.
struct CountedBody {
    body: ResponseBody,
    counts: Arc<RequestCounts>,
}

impl Body for CountedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for CountedBody {
    fn drop(&mut self) {
        self.counts.finished.fetch_add(1, Ordering::Relaxed);
    }
}

/// A socket whose writes fail once they have made no progress for the write
/// timeout: hyper has no write timeout of its own, so without this a peer
/// that stops reading keeps its connection, and its slot, forever.
struct WriteDeadline {
    stream: TcpStream,
    timeout: Duration,
    /// Armed while a write is pending; reset on every bit of progress.
    deadline: Pin<Box<Sleep>>,
    armed: bool,
    /// Shared with the connection's task, which cuts a stalled connection
    /// when the server needs room.
    stalled: Arc<AtomicBool>,
}

impl WriteDeadline {
    fn new(stream: TcpStream, timeout: Duration, stalled: Arc<AtomicBool>) -> Self {
        WriteDeadline {
            stream,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            armed: false,
            stalled,
        }
    }

    /// Passes a write's result through, timing how long it has been pending.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            if self.armed {
                self.armed = false;
                self.stalled.store(false, Ordering::Relaxed);
            }
            return poll;
        }
        if !self.armed {
            self.armed = true;
            self.stalled.store(true, Ordering::Relaxed);
            let deadline = Instant::now() + self.timeout;
            self.deadline.as_mut().reset(deadline);
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer stopped reading the response",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.stream).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.stream).poll_shutdown(cx);
        self.watch(cx, poll)
    }
}
