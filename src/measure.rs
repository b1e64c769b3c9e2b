//! Metrics, through the `metrics` facade: the library records, the
//! application installs an exporter (the examples serve Prometheus text).
//! Without a recorder installed, each record is a no-op.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `partner_webhook_requests_total` | counter | `outcome`, `status` (+ `app_id` if opted in) |
//! | `partner_webhook_rejections_total` | counter | `reason` ([`RequestError::reason`](crate::RequestError::reason)) |
//! | `partner_webhook_request_duration_seconds` | histogram | `outcome` |
//! | `partner_webhook_assistant_duration_seconds` | histogram | |
//! | `partner_webhook_signing_skew_seconds` | histogram | (server clock minus `X-Timestamp`) |
//! | `partner_webhook_deadline_misses_total` | counter | `answered` (`fallback` or `504`) |
//! | `partner_webhook_requests_in_flight` | gauge | |
//! | `partner_webhook_assistant_calls_in_flight` | gauge | |
//! | `partner_webhook_replay_cache_entries` | gauge | (the in-memory cache) |
//! | `partner_webhook_replay_store_errors_total` | counter | |
//! | `partner_webhook_sse_frames_total` | counter | `event` |
//! | `partner_webhook_streams_cut_total` | counter | `why` (`client_hung_up`, `error`, `timeout`) |
//! | `partner_webhook_stored_replies_total` | counter | `result` (`ok`, `failed`) |
//! | `partner_webhook_events_queued` | gauge | (accepted events not yet handled, all routes) |
//! | `partner_webhook_events_handled_total` | counter | `result` (`ok`, `failed`, `panicked`, `dropped`) |

use metrics::{counter, gauge, histogram};

pub(crate) fn request_finished(
    outcome: &'static str,
    status: u16,
    seconds: f64,
    app_id: Option<&str>,
) {
    // The statuses this crate answers, as labels without an allocation each.
    let status: metrics::SharedString = match status {
        200 => "200".into(),
        400 => "400".into(),
        401 => "401".into(),
        404 => "404".into(),
        405 => "405".into(),
        408 => "408".into(),
        413 => "413".into(),
        415 => "415".into(),
        422 => "422".into(),
        500 => "500".into(),
        503 => "503".into(),
        504 => "504".into(),
        other => other.to_string().into(),
    };
    match app_id {
        Some(app_id) => counter!(
            "partner_webhook_requests_total",
            "outcome" => outcome, "status" => status, "app_id" => app_id.to_owned()
        )
        .increment(1),
        None => {
            counter!("partner_webhook_requests_total", "outcome" => outcome, "status" => status)
                .increment(1)
        }
    }
    histogram!("partner_webhook_request_duration_seconds", "outcome" => outcome).record(seconds);
}

pub(crate) fn rejected(reason: &'static str) {
    counter!("partner_webhook_rejections_total", "reason" => reason).increment(1);
}

pub(crate) fn signing_skew(seconds: f64) {
    histogram!("partner_webhook_signing_skew_seconds").record(seconds);
}

pub(crate) fn assistant_time(seconds: f64) {
    histogram!("partner_webhook_assistant_duration_seconds").record(seconds);
}

pub(crate) fn deadline_missed(answered: &'static str) {
    counter!("partner_webhook_deadline_misses_total", "answered" => answered).increment(1);
}

pub(crate) fn replay_cache_entries(entries: usize) {
    gauge!("partner_webhook_replay_cache_entries").set(entries as f64);
}

pub(crate) fn replay_store_error() {
    counter!("partner_webhook_replay_store_errors_total").increment(1);
}

pub(crate) fn sse_frame(event: &'static str) {
    counter!("partner_webhook_sse_frames_total", "event" => event).increment(1);
}

pub(crate) fn stream_cut(why: &'static str) {
    counter!("partner_webhook_streams_cut_total", "why" => why).increment(1);
}

pub(crate) fn stored(ok: bool) {
    let result = if ok { "ok" } else { "failed" };
    counter!("partner_webhook_stored_replies_total", "result" => result).increment(1);
}

pub(crate) fn event_queued(change: f64) {
    gauge!("partner_webhook_events_queued").increment(change);
}

pub(crate) fn event_handled(result: &'static str) {
    counter!("partner_webhook_events_handled_total", "result" => result).increment(1);
}

/// Counts one unit in a gauge while alive.
#[derive(Debug)]
pub(crate) struct InFlight(&'static str);

impl InFlight {
    pub(crate) fn requests() -> Self {
        Self::start("partner_webhook_requests_in_flight")
    }

    pub(crate) fn assistant_calls() -> Self {
        Self::start("partner_webhook_assistant_calls_in_flight")
    }

    fn start(name: &'static str) -> Self {
        gauge!(name).increment(1.0);
        InFlight(name)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        gauge!(self.0).decrement(1.0);
    }
}
