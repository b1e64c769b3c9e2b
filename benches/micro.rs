//! Micro-benchmarks of the pure per-request work (issue 10, item 1), by body
//! size, through the crate's public API only:
//!
//! ```sh
//! cargo bench --features testing --bench micro
//! ```
//!
//! - `sha256`: plain SHA-256 over the body bytes, the floor of any signature check;
//! - `verify_raw`: [`Verifier::verify_at`] on an ASCII body signed as sent;
//! - `verify_escaped`: the same on a body with non-ASCII text, signed in the
//!   `\uXXXX`-escaped form the real sender signs (the raw check fails first);
//! - `escape_non_ascii`: materialising that escaped form (what a naive server does);
//! - `parse`: [`MessageReceived::from_json`];
//! - `replay_insert`: [`ReplayCache::first_seen`] on a [`MemoryReplayCache`] of the
//!   default capacity, empty-ish and full (every insert then evicts one entry);
//! - `webhook_json` / `webhook_sse`: a whole signed request through
//!   [`testing::call`] on a [`Webhook`] without a socket (echo assistant, fixed clock,
//!   no log subscriber installed): headers, verify, replay cache, parse, assistant,
//!   reply encoding (JSON, or SSE frames), and reading the answer back. Reply and SSE
//!   frame encoding have no public entry point of their own, so their cost is what
//!   this adds over verify + parse (see BENCHMARKS.md).
//! - `log_line`: `webhook_json` on the 0.4 KB body under `tracing_subscriber::fmt`,
//!   writing into a sink: `none` (no subscriber), `warn` (no request line),
//!   `info_ansi` and `info_plain` through `tracing_appender`'s background writer, with
//!   and without colour codes (the examples' logging before), `info_batched` through
//!   the examples' batched writer (`examples/common/log_writer.rs`, now), and
//!   `info_format_only` (formatting into the sink directly), and `info_log_line`: the
//!   examples' line format (`examples/common/log_line.rs`) through the batched writer, as
//!   the examples log now. The difference to `none` is what the request's span and log
//!   line cost the request's own thread.
//! - `as_served`: `webhook_json` as the echo example runs it, with the examples' log
//!   line (batched writer, into a sink) and a Prometheus recorder taking the metrics,
//!   installed before the webhook is built, as the examples do.

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::FutureExt;
use hyper::HeaderMap;
use partner_webhook::testing::{self, FixedClock};
use partner_webhook::{
    Config, MemoryReplayCache, MessageReceived, ReplayCache, ReplyFormat, Secret, Verifier,
    Webhook, assistant_fn, escape_non_ascii, sign,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tracing_subscriber::fmt::writer::BoxMakeWriter;

#[path = "../examples/common/log_line.rs"]
#[allow(unreachable_pub, reason = "the examples' line format, measured here")]
mod log_line;

#[path = "../examples/common/log_writer.rs"]
#[allow(
    dead_code,
    unreachable_pub,
    reason = "the examples' writer, measured here"
)]
mod log_writer;

const NOW: u64 = 1_796_000_000;
const ASCII_TEXT: &str = "Hello, I ordered a pair of running shoes last week and the tracking \
    page still says the parcel is waiting at the depot. Could you check where it is and when \
    it will be delivered? The order number is in my account. Thanks a lot for your help, Alex. ";
const MULTI_TEXT: &str = "Où est ma commande ? Ça fait déjà une semaine, señor. Größe 42, bitte. \
    我的订单在哪里？请尽快帮我查一下。谢谢！ Где мой заказ? Пожалуйста, проверьте статус доставки. \
    注文はどこですか。 Thanks! 👋🙂📦🚚 ";

/// The body kinds of bench/perf/gen_pool.py: (name, history entries, content bytes each).
const SIZES: [(&str, usize, usize); 3] = [("0.4KB", 0, 0), ("3KB", 10, 185), ("63KB", 10, 6000)];

/// `source` repeated and cut at a character boundary to `size` UTF-8 bytes, padded
/// with dots to exactly `size`.
fn text_of_bytes(source: &str, size: usize) -> String {
    let mut out = String::with_capacity(size);
    'fill: loop {
        for ch in source.chars() {
            if out.len() + ch.len_utf8() > size {
                break 'fill;
            }
            out.push(ch);
        }
    }
    while out.len() < size {
        out.push('.');
    }
    out
}

/// A `message_received` body like the load matrix's, in raw UTF-8.
fn body(entries: usize, size: usize, multilingual: bool) -> Vec<u8> {
    let source = if multilingual { MULTI_TEXT } else { ASCII_TEXT };
    let (content, history, seq) = if entries == 0 {
        let short = if multilingual {
            "Où est ma commande ? 我的订单在哪里？ Где мой заказ? 👋"
        } else {
            "Hello, I ordered a pair of running shoes last week and the"
        };
        (short.to_owned(), Vec::new(), 1)
    } else {
        let content = text_of_bytes(source, size);
        let mut history = vec![json!({"role": "assistant",
            "content": "Hello there! How can I help you today?", "content_json": {"source": "system"}})];
        for turn in 1..entries - 1 {
            let user = turn % 2 == 1;
            let rotated = format!(
                "{}{source}",
                source.chars().skip(turn % 7).collect::<String>()
            );
            history.push(json!({
                "role": if user { "user" } else { "assistant" },
                "content": text_of_bytes(&rotated, size),
                "content_json": if user { json!({}) } else { json!({"source": "webhook"}) },
            }));
        }
        history.push(json!({"role": "user", "content": content, "content_json": {}}));
        (content, history, entries)
    };
    let payload = json!({
        "version": "1.0",
        "event": "message_received",
        "app": {"id": "6545ada8-659f-4c57-a257-bbaffc0b0364", "name": "Bench Bot"},
        "thread": {"id": "a3bb28b6-52c7-49be-abdd-b70faaa191ef", "customer_id": "bench-customer"},
        "message": {"id": "b449b20f-e8a5-43c1-ac37-0000000493de", "seq": seq, "role": "user",
                    "content": content, "content_json": {}},
        "history_tail": Value::Array(history),
        "timestamp": "2026-11-30T10:24:28.002399+00:00",
    });
    // serde_json keeps insertion order only with preserve_order; the order of keys
    // does not change any cost measured here.
    payload.to_string().into_bytes()
}

fn secret() -> Secret {
    Secret::new("4f6c2a1e9b8d7c6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e")
        .expect("a non-empty secret")
}

fn headers(timestamp: u64, signature: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-timestamp",
        timestamp
            .to_string()
            .parse()
            .expect("digits are a valid header value"),
    );
    headers.insert(
        "x-signature",
        signature.parse().expect("hex is a valid header value"),
    );
    headers
}

fn bodies(multilingual: bool) -> Vec<(&'static str, Vec<u8>)> {
    SIZES
        .iter()
        .map(|&(name, entries, size)| (name, body(entries, size, multilingual)))
        .collect()
}

fn hashing_and_verify(c: &mut Criterion) {
    let secret = secret();
    let verifier =
        Verifier::new(vec![secret.clone()], Duration::from_secs(300)).expect("one secret");

    let mut group = c.benchmark_group("sha256");
    for (name, body) in bodies(false) {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &body, |b, body| {
            b.iter(|| Sha256::digest(black_box(body)));
        });
    }
    group.finish();

    let mut group = c.benchmark_group("verify_raw");
    for (name, body) in bodies(false) {
        let headers = headers(NOW, &sign(&secret, NOW, &body));
        assert!(verifier.verify_at(&headers, &body, NOW).is_ok());
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &body, |b, body| {
            b.iter(|| verifier.verify_at(black_box(&headers), black_box(body), NOW));
        });
    }
    group.finish();

    let mut group = c.benchmark_group("verify_escaped");
    for (name, body) in bodies(true) {
        let text = std::str::from_utf8(&body).expect("UTF-8");
        let headers = headers(NOW, &sign(&secret, NOW, escape_non_ascii(text).as_bytes()));
        assert!(verifier.verify_at(&headers, &body, NOW).is_ok());
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &body, |b, body| {
            b.iter(|| verifier.verify_at(black_box(&headers), black_box(body), NOW));
        });
    }
    group.finish();

    let mut group = c.benchmark_group("sha256_multilingual");
    for (name, body) in bodies(true) {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &body, |b, body| {
            b.iter(|| Sha256::digest(black_box(body)));
        });
    }
    group.finish();

    let mut group = c.benchmark_group("escape_non_ascii");
    for (name, body) in bodies(true) {
        let text = String::from_utf8(body).expect("UTF-8");
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &text, |b, text| {
            b.iter(|| escape_non_ascii(black_box(text)).len());
        });
    }
    group.finish();
}

fn parse(c: &mut Criterion) {
    // UTF-8 validation, which both verify (before escaping) and parse run on a
    // multilingual body: std against simdutf8.
    let mut group = c.benchmark_group("utf8");
    for multilingual in [false, true] {
        let body = body(10, 185, multilingual);
        let id = if multilingual {
            "3KB-multilingual"
        } else {
            "3KB"
        };
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new("std", id), &body, |b, body| {
            b.iter(|| std::str::from_utf8(black_box(body)).is_ok());
        });
        group.bench_with_input(BenchmarkId::new("simdutf8", id), &body, |b, body| {
            b.iter(|| simdutf8::basic::from_utf8(black_box(body)).is_ok());
        });
    }
    group.finish();
    let mut group = c.benchmark_group("parse");
    for multilingual in [false, true] {
        for (name, body) in bodies(multilingual) {
            assert!(MessageReceived::from_json(&body).is_ok());
            let id = if multilingual {
                format!("{name}-multilingual")
            } else {
                name.to_owned()
            };
            group.throughput(Throughput::Bytes(body.len() as u64));
            group.bench_with_input(BenchmarkId::from_parameter(id), &body, |b, body| {
                b.iter(|| MessageReceived::from_json(black_box(body)));
            });
        }
    }
    group.finish();
}

/// A distinct, uniformly random-looking signature per counter, as HMAC tags are: a
/// counter in the first bytes would fill a table that places keys by their own bits
/// in order, never colliding, and flatter it.
fn signature_for(counter: u64) -> [u8; 32] {
    let mut signature = [0; 32];
    for (word, chunk) in (0u64..).zip(signature.chunks_exact_mut(8)) {
        // splitmix64 of (counter, word): a bijection per word, so distinct counters
        // give distinct signatures.
        let mut z = counter
            .wrapping_mul(4)
            .wrapping_add(word)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    signature
}

fn replay_insert(c: &mut Criterion) {
    // 1,000 requests a second: `now` advances every 1,000 inserts, each entry expires
    // 300 s after its second, as the webhook records them.
    let insert = |cache: &MemoryReplayCache, counter: u64| {
        let now = NOW + counter / 1000;
        cache
            .first_seen(signature_for(counter), now + 300, now)
            .now_or_never()
            .expect("the memory cache never waits")
            .expect("the memory cache never fails")
    };
    let mut group = c.benchmark_group("replay_insert");
    for (name, prefill) in [("filling", 0u64), ("full_100k", 100_000)] {
        let cache = MemoryReplayCache::default();
        for counter in 0..prefill {
            assert!(insert(&cache, counter));
        }
        let mut counter = prefill;
        group.bench_function(name, |b| {
            b.iter(|| {
                counter += 1;
                insert(&cache, counter)
            });
        });
        counter += 1;
        assert!(
            insert(&cache, counter),
            "a fresh signature must be accepted"
        );
    }
    group.finish();
}

fn webhook(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let secret = secret();
    for (group_name, format) in [
        ("webhook_json", ReplyFormat::Json),
        ("webhook_sse", ReplyFormat::Sse),
    ] {
        let clock = FixedClock::new(NOW);
        let echo = assistant_fn(|message, _context| async move {
            Ok::<_, Infallible>(format!("Echo: {}", message.message.content))
        });
        let config = Config::default()
            .secret(secret.clone())
            .reply_format(format);
        let webhook = Webhook::new(&config, echo)
            .expect("a valid config")
            .with_clock(clock.clone());
        let mut group = c.benchmark_group(group_name);
        let mut cases = bodies(false);
        cases.extend(
            bodies(true)
                .into_iter()
                .filter(|(name, _)| *name == "3KB")
                .map(|(_, body)| ("3KB-multilingual", body)),
        );
        for (name, body) in cases {
            // Each request is distinct: the clock advances a second per request and
            // the request is signed (as the platform signs) at that second.
            let request = || {
                clock.advance(1);
                testing::signed_request(&body, Some(&secret), clock.now())
            };
            let answered = runtime.block_on(testing::call(&webhook, request()));
            assert_eq!(answered.status, 200, "{group_name} {name}: {answered:?}");
            group.throughput(Throughput::Bytes(body.len() as u64));
            let mut refused = 0_u64;
            group.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter_batched(
                    request,
                    |request| {
                        let status = runtime.block_on(testing::call(&webhook, request)).status;
                        refused += u64::from(status != 200);
                        status
                    },
                    BatchSize::NumIterations(100),
                );
            });
            assert_eq!(
                refused, 0,
                "{group_name} {name}: requests refused during the bench"
            );
        }
        group.finish();
    }
}

/// Where a log line goes, all ending in a sink.
#[derive(Clone, Copy)]
enum Writer {
    Appender,
    Batched,
    Sink,
}

/// One way of logging a request.
struct Logging {
    level: &'static str,
    ansi: bool,
    writer: Writer,
    /// The examples' line format (`examples/common/log_line.rs`), else the default.
    examples_format: bool,
}

impl Logging {
    /// The subscriber, and what must live as long as it (its writer's flush guard).
    fn dispatch(&self) -> (tracing::Dispatch, Box<dyn std::any::Any>) {
        let (writer, flush): (BoxMakeWriter, Box<dyn std::any::Any>) = match self.writer {
            Writer::Appender => {
                let (writer, flush) = tracing_appender::non_blocking(std::io::sink());
                (BoxMakeWriter::new(writer), Box::new(flush))
            }
            Writer::Batched => {
                let (writer, flush) = log_writer::BatchedWriter::new(std::io::sink());
                (BoxMakeWriter::new(writer), Box::new(flush))
            }
            Writer::Sink => (BoxMakeWriter::new(std::io::sink), Box::new(())),
        };
        let builder = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(self.level))
            .with_ansi(self.ansi)
            .with_writer(writer);
        let dispatch = if self.examples_format {
            tracing::Dispatch::new(
                builder
                    .event_format(log_line::LogLine)
                    .fmt_fields(log_line::LogLine)
                    .finish(),
            )
        } else {
            tracing::Dispatch::new(builder.finish())
        };
        (dispatch, flush)
    }
}

fn log_line(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let secret = secret();
    let clock = FixedClock::new(NOW + 10_000_000);
    let echo = assistant_fn(|message, _context| async move {
        Ok::<_, Infallible>(format!("Echo: {}", message.message.content))
    });
    let webhook = Webhook::new(&Config::default().secret(secret.clone()), echo)
        .expect("a valid config")
        .with_clock(clock.clone());
    let body = body(0, 0, false);
    let mut group = c.benchmark_group("log_line");
    let logged = |level, ansi, writer, examples_format| {
        Some(Logging {
            level,
            ansi,
            writer,
            examples_format,
        })
    };
    let variants = [
        ("none", None),
        ("warn", logged("warn", false, Writer::Appender, false)),
        ("info_ansi", logged("info", true, Writer::Appender, false)),
        ("info_plain", logged("info", false, Writer::Appender, false)),
        (
            "info_batched",
            logged("info", false, Writer::Batched, false),
        ),
        (
            "info_format_only",
            logged("info", false, Writer::Sink, false),
        ),
        (
            "info_log_line",
            logged("info", false, Writer::Batched, true),
        ),
    ];
    for (name, logging) in variants {
        let (dispatch, _flush) = logging.as_ref().map(Logging::dispatch).unzip();
        let mut run = || {
            group.bench_function(name, |b| {
                b.iter_batched(
                    || {
                        clock.advance(1);
                        testing::signed_request(&body, Some(&secret), clock.now())
                    },
                    |request| runtime.block_on(testing::call(&webhook, request)).status,
                    BatchSize::NumIterations(100),
                );
            });
        };
        match dispatch {
            Some(dispatch) => tracing::dispatcher::with_default(&dispatch, run),
            None => run(),
        }
    }
    group.finish();
}

/// `webhook_json` as the echo example serves it: the examples' log line through the
/// batched writer, and a Prometheus recorder taking every metric. What the socket
/// matrix's `json` server spends in the crate, without hyper and the kernel.
fn as_served(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let secret = secret();
    let clock = FixedClock::new(NOW + 20_000_000);
    let echo = assistant_fn(|message, _context| async move {
        Ok::<_, Infallible>(format!("Echo: {}", message.message.content))
    });
    let (dispatch, _flush) = Logging {
        level: "info",
        ansi: false,
        writer: Writer::Batched,
        examples_format: true,
    }
    .dispatch();
    // As the examples do: the recorder installed, globally, before the webhook
    // is built. The last group to run, so the others run without it.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    // The examples' exporter drains histogram samples every 100 ms; without
    // it they would pile up here for the whole run.
    let upkeep = recorder.handle();
    let mut requests = 0_u64;
    metrics::set_global_recorder(recorder).expect("as_served installs the only global recorder");
    let webhook = Webhook::new(&Config::default().secret(secret.clone()), echo)
        .expect("a valid config")
        .with_clock(clock.clone());
    let mut group = c.benchmark_group("as_served");
    for (name, body) in bodies(false) {
        if name == "63KB" {
            continue;
        }
        group.throughput(Throughput::Bytes(body.len() as u64));
        let run = || {
            group.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter_batched(
                    || {
                        requests += 1;
                        if requests.is_multiple_of(2000) {
                            upkeep.run_upkeep();
                        }
                        clock.advance(1);
                        testing::signed_request(&body, Some(&secret), clock.now())
                    },
                    |request| runtime.block_on(testing::call(&webhook, request)).status,
                    BatchSize::NumIterations(100),
                );
            });
        };
        tracing::dispatcher::with_default(&dispatch, run);
    }
    group.finish();
}

criterion_group! {
    name = micro;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(3))
        .sample_size(40);
    targets = hashing_and_verify, parse, replay_insert, webhook, log_line, as_served
}
criterion_main!(micro);
