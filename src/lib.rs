//! Put an assistant (or any reply logic) behind a chat platform's partner
//! webhook, on hyper, in a few lines.
//!
//! The platform POSTs every user message as signed JSON and waits up to 8 s for
//! `{"reply": "..."}`. You implement [`Assistant`]; this crate verifies, parses,
//! limits, logs, and answers.
//!
//! # The journey of a request
//!
//! Each step is one module, in this order:
//!
//! 1. **bytes in** (`server`, `connection`): TCP, HTTP/1.1, the connection limit
//!    (idle connections make room for new ones), header read and write timeouts,
//!    a maximum age and request count per connection, graceful shutdown;
//! 2. **the spine** (`webhook`): calls the steps below, one line each, and logs the request;
//! 3. **limits** (`limits`): `Content-Type`, then the body size, from `Content-Length`
//!    before reading and again while reading, a read timeout, and a memory budget
//!    shared by all requests, charged for what the process really holds;
//! 4. **verify** (`scheme`, `signature`), in two halves: the signature headers
//!    (`X-Timestamp` / `X-Signature` here, another platform's by its [`Scheme`]) and
//!    the replay window are judged from the headers alone, before the body is read,
//!    so a client without the secret is refused at once; then the body is checked in
//!    constant time, with the platform's escaping quirk (it signs non-ASCII as
//!    `\uXXXX` but sends raw UTF-8, see [`escape_non_ascii`]);
//! 5. **replay** (`replay`): once a reply slot is free, the signature is recorded and
//!    an exact replay of an accepted request is refused ([`ReplayCache`]);
//! 6. **parse** (`payload`): the `message_received` body into [`MessageReceived`];
//! 7. **assistant** (`assistant`): your [`Assistant`], with errors and panics caught,
//!    a limit on concurrent calls, and a reply deadline under the platform's 8 s;
//! 8. **reply bytes out** (`response`, `sse`): [`Reply`] as one JSON object or as a
//!    stream of SSE events ([`ReplyFormat`]), or a JSON error with the status of its
//!    [`RequestError`]. The request's guard (`guard`) moves into the body: it holds the
//!    reply slot until the last byte, and logs the request when the body is dropped.
//!
//! **Other platforms' events** take a shorter road after step 4 (`events`): on the
//! paths given to [`Webhook::route`], a verified event is de-duplicated by its
//! signature and delivery id, answered `200 {"status":"received"}` (or
//! `"duplicate"`), and handed to your [`EventHandler`] on a bounded queue after the
//! answer. See [`EventsConfig`].
//!
//! Around the journey: `GET /healthz` (liveness) and `GET /readyz` (readiness, which
//! follows the replay store); metrics through the [`metrics`](https://docs.rs/metrics)
//! facade (`measure`), for the exporter the application installs; and, behind features,
//! a replay cache shared through Redis (`redis`), test helpers ([`testing`], `testing`)
//! and the `partner-webhook` command-line tool (`cli`).
//!
//! # Serving
//!
//! ```no_run
//! use std::convert::Infallible;
//! use partner_webhook::{assistant_fn, Config, Secret, Server};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let config = Config::default()
//!         .addr(([0, 0, 0, 0], 8080))
//!         .secret(Secret::new(std::env::var("WEBHOOK_SECRET")?)?);
//!     let echo = assistant_fn(|message, _context| async move {
//!         Ok::<_, Infallible>(format!("Echo: {}", message.message.content))
//!     });
//!     let server = Server::bind(config, echo).await?;
//!     server.serve(async { tokio::signal::ctrl_c().await.ok(); }).await;
//!     Ok(())
//! }
//! ```
//!
//! # A signed request, end to end, without a network
//!
//! ```
//! use std::time::{SystemTime, UNIX_EPOCH};
//! use http_body_util::{BodyExt, Full};
//! use hyper::{body::Bytes, Request};
//! use partner_webhook::{
//!     async_trait, escape_non_ascii, sign, Assistant, BoxError, Config, Context,
//!     MessageReceived, Reply, Secret, Webhook,
//! };
//!
//! struct Greeter;
//!
//! #[async_trait]
//! impl Assistant for Greeter {
//!     async fn reply(&self, message: MessageReceived, context: Context) -> Result<Reply, BoxError> {
//!         assert!(context.verified);
//!         Ok(Reply::new(format!("Bonjour ! Vous avez dit : {}", message.message.content)))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let secret = Secret::new("3f9a1c0e5b7d2468")?;
//! let webhook = Webhook::new(&Config::default().secret(secret.clone()), Greeter)?;
//!
//! let body = r#"{"version":"1.0","event":"message_received","app":{"id":"a1","name":""},"thread":{"id":"t1","customer_id":null},"message":{"id":"m1","seq":1,"role":"user","content":"Ça va ?","content_json":{}},"history_tail":[],"timestamp":"2026-11-23T12:00:00Z"}"#;
//! let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
//! // Sign the way the platform does: over the \u-escaped text, sending raw UTF-8.
//! let signature = sign(&secret, now, escape_non_ascii(body).as_bytes());
//! let request = Request::post("/webhook")
//!     .header("Content-Type", "application/json")
//!     .header("X-Timestamp", now.to_string())
//!     .header("X-Signature", signature)
//!     .body(Full::new(Bytes::from(body)))?;
//!
//! let response = webhook.handle(request).await;
//! assert_eq!(response.status(), 200);
//! let json = response.into_body().collect().await?.to_bytes();
//! assert_eq!(json, r#"{"reply":"Bonjour ! Vous avez dit : Ça va ?"}"#);
//! # Ok(())
//! # }
//! ```

// Declared in the order a request travels through them.
// Setup: configuration and secrets.
mod config;
// Bytes in: the listening socket, the connection limit, shutdown.
mod server;
// One connection's lifetime: write deadline, age, request count, making room.
mod connection;
// The spine that calls the steps below.
mod webhook;
// Limits before and while reading the body.
mod limits;
// Verify: how each platform signs, as data.
mod scheme;
// Verify the signature.
mod signature;
// Refuse exact replays.
mod replay;
// Refuse replays across instances, in Redis.
#[cfg(feature = "redis")]
mod replay_redis;
// Parse the payload.
mod payload;
// Call the assistant.
mod assistant;
// Or, for another platform's event: de-duplicate, queue, acknowledge, handle.
mod events;
// Reply bytes out.
mod response;
// Reply bytes out, streamed as SSE frames.
mod sse;
// Storing a streamed reply through the platform's Partner API.
mod store;
// The per-request guard: slot, memory, span, and the request's log line.
mod guard;
// Metrics, through the `metrics` facade.
mod measure;
// The statuses every failure maps to.
mod error;

pub use assistant::{Assistant, AssistantFn, Context, assistant_fn};
pub use async_trait::async_trait;
pub use config::{Config, ReplyFormat, Secret, SetupError};
pub use error::{BoxError, Overload, RequestError};
pub use events::{
    Event, EventHandler, EventHandlerFn, EventsConfig, SendSevenEvent, WhatsAppEvent,
    event_handler_fn,
};
pub use payload::{App, HistoryEntry, Message, MessageReceived, Role, Thread};
pub use replay::{MemoryReplayCache, ReplayCache};
#[cfg(feature = "redis")]
pub use replay_redis::RedisReplayCache;
pub use response::{Reply, ResponseBody};
pub use scheme::{Encoding, Scheme};
pub use server::Server;
pub use signature::{
    SIGNATURE_HEADER, SignatureError, SignedHeaders, TIMESTAMP_HEADER, Verified, Verifier,
    escape_non_ascii, sign,
};
pub use webhook::Webhook;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

/// Compiles the README's code so that it stays true (its testing example
/// needs the `testing` feature, which the README's test command enables).
#[cfg(all(doctest, feature = "testing"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
