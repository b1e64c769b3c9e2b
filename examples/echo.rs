//! Echo assistant: answers every message with `Echo: <content>`, like the
//! platform's reference servers, so it can stand in for them.
//!
//! ```sh
//! WEBHOOK_SECRET=<the App's webhook secret> cargo run --example echo
//! ```
//!
//! `PORT` (default 8080), `WEBHOOK_SECRET`, `REPLY_FORMAT` (`sse`, the default,
//! for the dashboard's Chat screen; `json` for the run API) and
//! `PLATFORM_API_URL` (to store streamed replies) come from the environment.
//! With a secret it listens on every interface. Without one it accepts
//! unsigned requests, says so loudly, and listens on loopback only (the
//! platform on the same machine reaches `localhost`); `ALLOW_UNSIGNED_PUBLIC=1`
//! opts in to every interface. A `WEBHOOK_SECRET` that is set but empty stops
//! it at start-up: the platform would stop signing.

use std::convert::Infallible;
use std::error::Error;

use partner_webhook::assistant_fn;

mod common;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let echo = assistant_fn(|message, _context| async move {
        Ok::<_, Infallible>(format!("Echo: {}", message.message.content))
    });
    common::serve(echo).await
}
