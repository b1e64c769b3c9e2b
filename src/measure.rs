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

use metrics::{Counter, Gauge, Histogram, Recorder, counter, gauge, histogram};

/// Handles for what every request records, registered once, when the webhook
/// is built. Through the macros each record is a registration: a key built,
/// hashed and looked up, and for Prometheus copied (an allocation per label
/// set): about 1 µs of a request in process, 2.5–3 µs over sockets
/// (BENCHMARKS.md).
///
/// A handle belongs to the recorder it was registered with, so the handles
/// are kept only when that is the process's global recorder, and used only
/// while it is still the one in effect: a global recorder is never replaced
/// or freed, so its address names it for good. A webhook built before the
/// recorder was installed, or under a thread's local recorder, records
/// through the macros, as before: the same series, just slower.
///
/// An exporter that deletes idle series (`PrometheusBuilder::idle_timeout`)
/// does not know a handle is held: after a quiet spell longer than its
/// timeout, a held series stops rendering. With such an exporter, install it
/// after building the webhook (the README says so).
#[derive(Debug, Default)]
pub(crate) struct Meters {
    handles: Option<Handles>,
}

#[derive(Debug)]
struct Handles {
    recorder: usize,
    requests_in_flight: Gauge,
    assistant_calls_in_flight: Gauge,
    signing_skew: Histogram,
    assistant_duration: Histogram,
    /// `requests_total` and `request_duration_seconds` of a reply, the
    /// outcome of almost every request; none when `app_id` labels them.
    replied: Option<(Counter, Histogram)>,
    /// `sse_frames_total` by event: `delta`, `done`, `error`.
    sse_frames: [Counter; 3],
}

impl Meters {
    /// Handles for a webhook with an assistant; `by_app` when
    /// `requests_total` carries `app_id`, which then has no series to hold.
    /// A webhook for events only records none of these per request.
    pub(crate) fn register(has_assistant: bool, by_app: bool) -> Self {
        let Some(here) = current_recorder().filter(|_| has_assistant) else {
            return Meters::default();
        };
        if global_recorder() != Some(here) {
            return Meters::default();
        }
        let replied = (!by_app).then(|| {
            (
                counter!(REQUESTS, "outcome" => "replied", "status" => "200"),
                histogram!(REQUEST_DURATION, "outcome" => "replied"),
            )
        });
        Meters {
            handles: Some(Handles {
                recorder: here,
                requests_in_flight: gauge!(REQUESTS_IN_FLIGHT),
                assistant_calls_in_flight: gauge!(ASSISTANT_CALLS_IN_FLIGHT),
                signing_skew: histogram!(SIGNING_SKEW),
                assistant_duration: histogram!(ASSISTANT_DURATION),
                replied,
                sse_frames: SSE_EVENTS.map(|event| counter!(SSE_FRAMES, "event" => event)),
            }),
        }
    }

    /// The handles, while their recorder is the one in effect.
    fn handles(&self) -> Option<&Handles> {
        self.handles
            .as_ref()
            .filter(|handles| current_recorder() == Some(handles.recorder))
    }
}

/// The global recorder's address, once there is one. A new thread has no
/// local recorder, so what it sees is the global one; once installed, a
/// global recorder stays, so one probe per process finds it.
fn global_recorder() -> Option<usize> {
    static GLOBAL: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    if let Some(global) = GLOBAL.get() {
        return Some(*global);
    }
    let seen = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("metrics-probe".to_owned())
            .spawn_scoped(scope, current_recorder)
            .ok()
            .and_then(|probe| probe.join().ok())
            .flatten()
    })?;
    Some(*GLOBAL.get_or_init(|| seen))
}

/// The address of the recorder in effect on this thread; `None` for one
/// without state (the no-op recorder when none is installed): nothing to
/// register with, and a zero-sized value's address names nothing.
fn current_recorder() -> Option<usize> {
    metrics::with_recorder(|recorder: &dyn Recorder| {
        (size_of_val(recorder) != 0).then(|| std::ptr::from_ref(recorder).cast::<()>() as usize)
    })
}

const REQUESTS: &str = "partner_webhook_requests_total";
const REQUEST_DURATION: &str = "partner_webhook_request_duration_seconds";
const REQUESTS_IN_FLIGHT: &str = "partner_webhook_requests_in_flight";
const ASSISTANT_CALLS_IN_FLIGHT: &str = "partner_webhook_assistant_calls_in_flight";
const SIGNING_SKEW: &str = "partner_webhook_signing_skew_seconds";
const ASSISTANT_DURATION: &str = "partner_webhook_assistant_duration_seconds";
const SSE_FRAMES: &str = "partner_webhook_sse_frames_total";
const REPLAY_CACHE_ENTRIES: &str = "partner_webhook_replay_cache_entries";
const SSE_EVENTS: [&str; 3] = ["delta", "done", "error"];

pub(crate) fn request_finished(
    meters: &Meters,
    outcome: &'static str,
    status: u16,
    seconds: f64,
    app_id: Option<&str>,
) {
    let replied = meters
        .handles()
        .and_then(|handles| handles.replied.as_ref());
    if let (Some((count, duration)), "replied", 200, None) = (replied, outcome, status, app_id) {
        count.increment(1);
        duration.record(seconds);
        return;
    }
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
            REQUESTS,
            "outcome" => outcome, "status" => status, "app_id" => app_id.to_owned()
        )
        .increment(1),
        None => counter!(REQUESTS, "outcome" => outcome, "status" => status).increment(1),
    }
    histogram!(REQUEST_DURATION, "outcome" => outcome).record(seconds);
}

pub(crate) fn rejected(reason: &'static str) {
    counter!("partner_webhook_rejections_total", "reason" => reason).increment(1);
}

pub(crate) fn signing_skew(meters: &Meters, seconds: f64) {
    match meters.handles() {
        Some(handles) => handles.signing_skew.record(seconds),
        None => histogram!(SIGNING_SKEW).record(seconds),
    }
}

pub(crate) fn assistant_time(meters: &Meters, seconds: f64) {
    match meters.handles() {
        Some(handles) => handles.assistant_duration.record(seconds),
        None => histogram!(ASSISTANT_DURATION).record(seconds),
    }
}

pub(crate) fn deadline_missed(answered: &'static str) {
    counter!("partner_webhook_deadline_misses_total", "answered" => answered).increment(1);
}

/// `partner_webhook_replay_cache_entries`, as the in-memory cache sets it on
/// every change of its count: on most requests, while entries expire as fast
/// as they come. Through the macro each set was a registration (an allocation
/// and a registry lookup); the handle is kept as [`Meters`] keeps its own,
/// only for the global recorder and only while it is in effect.
#[derive(Debug, Default)]
pub(crate) struct ReplayEntriesGauge {
    /// The recorder seen at the last set, with its handle when it is the
    /// global one: the probe for that runs once per recorder, not per set.
    held: Option<(usize, Option<Gauge>)>,
}

impl ReplayEntriesGauge {
    pub(crate) fn set(&mut self, entries: usize) {
        let here = current_recorder();
        if let Some(here) = here
            && !matches!(self.held, Some((recorder, _)) if recorder == here)
        {
            let kept = (global_recorder() == Some(here)).then(|| gauge!(REPLAY_CACHE_ENTRIES));
            self.held = Some((here, kept));
        }
        let kept = self
            .held
            .as_ref()
            .filter(|(recorder, _)| Some(*recorder) == here)
            .and_then(|(_, kept)| kept.as_ref());
        match kept {
            Some(gauge) => gauge.set(entries as f64),
            None => gauge!(REPLAY_CACHE_ENTRIES).set(entries as f64),
        }
    }
}

pub(crate) fn replay_store_error() {
    counter!("partner_webhook_replay_store_errors_total").increment(1);
}

pub(crate) fn sse_frame(meters: &Meters, event: &'static str) {
    let cached = meters.handles().and_then(|handles| {
        let at = SSE_EVENTS.iter().position(|known| *known == event)?;
        Some(&handles.sse_frames[at])
    });
    match cached {
        Some(counter) => counter.increment(1),
        None => counter!(SSE_FRAMES, "event" => event).increment(1),
    }
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

/// Counts one unit in a gauge while alive; the unit is taken back from the
/// gauge it was added to.
#[derive(Debug)]
pub(crate) struct InFlight(Gauge);

impl InFlight {
    pub(crate) fn requests(meters: &Meters) -> Self {
        Self::start(match meters.handles() {
            Some(handles) => handles.requests_in_flight.clone(),
            None => gauge!(REQUESTS_IN_FLIGHT),
        })
    }

    pub(crate) fn assistant_calls(meters: &Meters) -> Self {
        Self::start(match meters.handles() {
            Some(handles) => handles.assistant_calls_in_flight.clone(),
            None => gauge!(ASSISTANT_CALLS_IN_FLIGHT),
        })
    }

    fn start(gauge: Gauge) -> Self {
        gauge.increment(1.0);
        InFlight(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;

    #[test]
    fn a_local_recorder_gets_every_record_through_the_macros() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let scrape = recorder.handle();
        // Not the global recorder: a local one's address may be reused by
        // the next, so no handle is kept for it.
        let meters = metrics::with_local_recorder(&recorder, || Meters::register(true, false));
        assert!(meters.handles.is_none());
        metrics::with_local_recorder(&recorder, || {
            let in_flight = InFlight::requests(&meters);
            request_finished(&meters, "replied", 200, 0.001, None);
            signing_skew(&meters, 1.0);
            drop(in_flight);
        });
        let text = scrape.render();
        assert!(
            text.contains(r#"partner_webhook_requests_total{outcome="replied",status="200"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("partner_webhook_signing_skew_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains("partner_webhook_requests_in_flight 0"),
            "{text}"
        );
    }

    #[test]
    fn the_replay_gauge_follows_each_recorder_and_keeps_no_handle_for_a_local_one() {
        let mut gauge = ReplayEntriesGauge::default();
        // No recorder: nothing to keep, nothing probed.
        gauge.set(1);
        assert!(gauge.held.is_none());
        let first = PrometheusBuilder::new().build_recorder();
        let second = PrometheusBuilder::new().build_recorder();
        metrics::with_local_recorder(&first, || {
            gauge.set(2);
            gauge.set(3);
        });
        assert!(matches!(gauge.held, Some((_, None))), "{:?}", gauge.held);
        metrics::with_local_recorder(&second, || gauge.set(7));
        assert!(
            first
                .handle()
                .render()
                .contains("partner_webhook_replay_cache_entries 3"),
            "{}",
            first.handle().render()
        );
        assert!(
            second
                .handle()
                .render()
                .contains("partner_webhook_replay_cache_entries 7"),
            "{}",
            second.handle().render()
        );
    }
}
