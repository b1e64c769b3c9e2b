//! Other chat platforms' signed webhooks on one server: each event is
//! verified, de-duplicated, answered `200 {"status":"received"}` at once and
//! logged with its id by the handler, which runs after the answer.
//!
//! ```sh
//! SENDSEVEN_SECRET=<SendSeven's webhook secret> WHATSAPP_SECRET=<your WhatsApp API's> \
//!     cargo run --example events
//! ```
//!
//! - `/sendseven`: SendSeven's `X-Sendseven-Signature: sha256=<hex>` over
//!   `{X-Sendseven-Timestamp}.{body}`, secret from `SENDSEVEN_SECRET`. Retries
//!   keep `X-Sendseven-Delivery-Id` and are answered `{"status":"duplicate"}`.
//! - `/whatsapp`: the `X-Webhook-Signature` family, an HMAC of the body written
//!   `sha256=<hex>` or as bare hex, secret from `WHATSAPP_SECRET`. No timestamp
//!   is signed, so replays are caught only by remembering each event for
//!   3 h, the WhatsApp API guide's retry horizon.
//!
//! At least one secret must be set; a route whose secret is unset is not
//! served (`404`). `PORT` (default 8080), `REDIS_URL` (de-duplication shared by
//! every instance, with `--features redis`), `METRICS_ADDR` and `RUST_LOG` as
//! in the other examples. Listens on every interface: every route verifies.

use std::convert::Infallible;
use std::error::Error;

use partner_webhook::{
    Config, Event, EventHandler, EventsConfig, Scheme, SendSevenEvent, Webhook, WhatsAppEvent,
    event_handler_fn,
};

mod common;

/// Logs each verified event with its id, and the text of a message.
fn log_events() -> impl EventHandler {
    event_handler_fn(|event: Event| async move {
        let text = if &*event.route == "/sendseven" {
            event.parse::<SendSevenEvent>().ok().and_then(|sendseven| {
                sendseven.data["message"]["text"]
                    .as_str()
                    .map(str::to_owned)
            })
        } else {
            event
                .parse::<WhatsAppEvent>()
                .ok()
                .and_then(|whatsapp| whatsapp.text.or(whatsapp.message))
        };
        tracing::info!(
            route = %event.route,
            id = event.id.as_deref().unwrap_or("-"),
            kind = event.kind.as_deref().unwrap_or("-"),
            text = text.as_deref().unwrap_or("-"),
            "verified event"
        );
        Ok::<_, Infallible>(())
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let _flush_logs_on_exit = common::init_logging();
    common::serve_metrics();
    let config = Config::default().addr(([0, 0, 0, 0], common::port()?));
    let shared = common::shared_replay_cache().await?;
    let with_cache = |events: EventsConfig| match &shared {
        Some(cache) => events.dedupe_cache(cache.clone()),
        None => events,
    };
    let mut webhook = Webhook::for_events(&config)?;
    let mut served = Vec::new();
    if let Some(secret) = common::secret_from_env("SENDSEVEN_SECRET")? {
        let sendseven = with_cache(EventsConfig::new(Scheme::sendseven(), secret));
        webhook = webhook.route("/sendseven", &sendseven, log_events())?;
        served.push("/sendseven");
    }
    if let Some(secret) = common::secret_from_env("WHATSAPP_SECRET")? {
        let whatsapp = with_cache(
            EventsConfig::new(Scheme::webhook_signature(), secret)
                .accept_replays_caught_by_dedupe_only(),
        );
        webhook = webhook.route("/whatsapp", &whatsapp, log_events())?;
        served.push("/whatsapp");
    }
    if served.is_empty() {
        return Err("set SENDSEVEN_SECRET and/or WHATSAPP_SECRET: every route verifies".into());
    }
    common::serve_webhook(&config, webhook, |port| {
        tracing::info!(
            routes = served.join(", "),
            port,
            "point each platform's webhook at http://<this host>:<port><route>"
        );
    })
    .await
}
