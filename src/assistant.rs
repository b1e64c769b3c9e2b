//! Assistant: the user's reply logic, called with the parsed message, with a
//! panic turned into a 500 instead of a dropped connection.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use async_trait::async_trait;
use hyper::body::Bytes;

use crate::error::{BoxError, RequestError};
use crate::payload::MessageReceived;
use crate::response::Reply;

/// Your reply logic: one message in, one [`Reply`] out.
///
/// An `Err` becomes a `500` with a generic message; its text goes to the log
/// only. A panic is caught and answered the same way, and the server keeps
/// serving. Any error type works with `?`, since every `std::error::Error +
/// Send + Sync` converts into [`BoxError`].
///
/// The trait uses [`async_trait`](macro@async_trait) because the server keeps the assistant as an
/// `Arc<dyn Assistant>` and needs `Send` futures through that trait object,
/// which a native `async fn` in a trait cannot promise yet. Implement it with
/// `#[async_trait::async_trait]`, or wrap an async closure in [`assistant_fn`].
///
/// ```
/// use partner_webhook::{async_trait, Assistant, BoxError, Context, MessageReceived, Reply};
///
/// struct Shout;
///
/// #[async_trait]
/// impl Assistant for Shout {
///     async fn reply(&self, message: MessageReceived, _context: Context) -> Result<Reply, BoxError> {
///         Ok(message.message.content.to_uppercase().into())
///     }
/// }
/// ```
#[async_trait]
pub trait Assistant: Send + Sync + 'static {
    /// Answers one message. `context` carries the ids and what the signature
    /// proved.
    async fn reply(&self, message: MessageReceived, context: Context) -> Result<Reply, BoxError>;
}

/// What is known about the request besides the parsed message.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Context {
    /// The App id, from the signed body (`app.id`). The platform also sends it
    /// as `X-App-Id`, but that header is not signed: when the two disagree the
    /// body wins and the disagreement is logged.
    pub app_id: String,
    /// The thread id, from the signed body (`thread.id`); `X-Thread-Id` is
    /// not trusted, as for [`app_id`](Context::app_id).
    pub thread_id: String,
    /// The `X-Timestamp` the signature covered; `None` when the request was not
    /// verified.
    pub signed_at: Option<u64>,
    /// Whether the signature was checked and matched. `false` only on a
    /// server configured with [`Config::accept_unsigned`](crate::Config::accept_unsigned).
    pub verified: bool,
    /// The raw request body, for fields [`MessageReceived`] does not model yet.
    pub body: Bytes,
}

/// Wraps an async closure as an [`Assistant`].
///
/// ```
/// use std::convert::Infallible;
/// use partner_webhook::assistant_fn;
///
/// let echo = assistant_fn(|message, _context| async move {
///     Ok::<_, Infallible>(format!("Echo: {}", message.message.content))
/// });
/// ```
pub fn assistant_fn<F, Fut, R, E>(reply: F) -> AssistantFn<F>
where
    F: Fn(MessageReceived, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    R: Into<Reply>,
    E: Into<BoxError>,
{
    AssistantFn(reply)
}

/// An [`Assistant`] made from a closure by [`assistant_fn`].
pub struct AssistantFn<F>(F);

impl<F> fmt::Debug for AssistantFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AssistantFn")
    }
}

#[async_trait]
impl<F, Fut, R, E> Assistant for AssistantFn<F>
where
    F: Fn(MessageReceived, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    R: Into<Reply>,
    E: Into<BoxError>,
{
    async fn reply(&self, message: MessageReceived, context: Context) -> Result<Reply, BoxError> {
        (self.0)(message, context)
            .await
            .map(Into::into)
            .map_err(Into::into)
    }
}

/// Calls the assistant; an `Err` or a panic becomes [`RequestError::Assistant`].
///
/// Not an `async fn`: the message and context move into the assistant's own
/// (boxed) future at once, rather than waiting in this one's state, and in
/// every future that holds it, until the first poll.
pub(crate) fn call(
    assistant: &dyn Assistant,
    message: MessageReceived,
    context: Context,
) -> impl Future<Output = Result<Reply, RequestError>> + Send + '_ {
    let replying = CatchUnwind::call(|| assistant.reply(message, context));
    async move {
        match replying.await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(error)) => Err(RequestError::Assistant(error)),
            Err(panic) => Err(RequestError::Assistant(
                format!("assistant panicked: {}", panic_message(panic)).into(),
            )),
        }
    }
}

/// A future of the user's, called and polled inside `catch_unwind`: an
/// assistant's panic reaches the client as a 500 rather than as a connection
/// closed without an answer, and an event handler's is logged with its
/// event. The call itself is caught too: a trait implemented without the
/// `async_trait` macro may run code before it returns its future.
pub(crate) struct CatchUnwind<F>(Result<F, Option<Box<dyn Any + Send>>>);

impl<F: Future + Unpin> CatchUnwind<F> {
    pub(crate) fn call(start: impl FnOnce() -> F) -> Self {
        CatchUnwind(std::panic::catch_unwind(AssertUnwindSafe(start)).map_err(Some))
    }
}

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let inner = match &mut self.0 {
            Ok(inner) => inner,
            Err(panic) => {
                return Poll::Ready(Err(panic
                    .take()
                    .unwrap_or_else(|| Box::new("polled again after its panic"))));
            }
        };
        // The future is dropped right after a panic and never polled again, so
        // no broken state it might hold can be observed.
        match std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// The text a panic was raised with.
pub(crate) fn panic_message(panic: Box<dyn Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-text panic payload")
        .to_owned()
}
