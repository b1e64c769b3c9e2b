//! Integration tests: a real server on 127.0.0.1:0, real sockets, raw HTTP/1.1.
#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
#![allow(
    unreachable_pub,
    reason = "helpers are shared between the test modules"
)]

#[cfg(feature = "cli")]
mod cli;
mod connections;
mod events;
mod hostile;
mod http_semantics;
mod lifetimes;
mod llm;
mod log_line;
mod log_writer;
mod memory;
mod metrics;
mod payloads;
mod platform_sender;
mod properties;
#[cfg(feature = "redis")]
mod redis;
mod signatures;
mod storing;
mod streaming;
mod support;
