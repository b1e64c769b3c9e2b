//! Each request's log line, through the examples' format
//! (`examples/common/log_line.rs`) on a real server: it names its request
//! itself, and the `request` span names the assistant's lines too when it is
//! turned on; plain values go unquoted, and a client-chosen value cannot
//! start a line of its own or move a terminal's cursor.

use std::time::Duration;

use tracing::subscriber;

use crate::support::*;

#[path = "../../examples/common/log_line.rs"]
mod examples_log_line;

use examples_log_line::{LAST_FOUR_DIGIT_SECOND, LogLine, is_bare, write_utc};

/// Lines logged on this thread, in the examples' format, under `filter`,
/// until the guard is dropped. The current-thread runtime serves on this
/// thread too.
fn capture(filter: &str) -> (CapturedLog, subscriber::DefaultGuard) {
    let log = CapturedLog::default();
    let writer = log.clone();
    let logging = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(false)
        .event_format(LogLine)
        .fmt_fields(LogLine)
        .with_writer(move || writer.clone())
        .finish();
    (log, subscriber::set_default(logging))
}

/// The `replied` lines logged so far, waiting up to 5 s for `count` of them:
/// a request's line is written when its response ends, just after the client
/// has it.
async fn replied_lines(log: &CapturedLog, count: usize) -> Vec<String> {
    for _ in 0..500 {
        let lines: Vec<String> = log
            .text()
            .lines()
            .filter(|line| line.contains(": replied "))
            .map(str::to_owned)
            .collect();
        if lines.len() >= count {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("fewer than {count} replied lines in:\n{}", log.text());
}

#[tokio::test]
async fn a_request_line_keeps_every_field_and_a_hostile_id_stays_on_its_line() {
    let (log, _logging) = capture("info");
    let server = TestServer::echo().await;

    let plain = payload("hello");
    assert_eq!(server.send(&signed_post(&plain)).await.status, 200);
    let line = &replied_lines(&log, 1).await[0];
    let fields = format!(
        " INFO partner_webhook::guard: replied method=POST path=/ app_id={} thread_id={} \
         message_id={} status=200 latency_ms=",
        plain["app"]["id"].as_str().unwrap(),
        plain["thread"]["id"].as_str().unwrap(),
        plain["message"]["id"].as_str().unwrap(),
    );
    assert!(line.contains(&fields), "{line}\nlacks\n{fields}");
    let (time, _) = line.split_once(' ').unwrap();
    assert!(
        time.len() == "2026-11-30T13:28:24.123456Z".len() && time.ends_with('Z'),
        "{line}"
    );

    // The message id is the sender's to choose, and it is signed, so it is
    // logged: quoted and escaped, never as a second line.
    let mut hostile = payload("hello again");
    let forged = "2026-11-30T00:00:00.000000Z  INFO forged: replied status=200";
    hostile["message"]["id"] = format!("m 1\n{forged}\u{1b}[2J\u{9b}2J\u{2028}\u{202e}").into();
    assert_eq!(server.send(&signed_post(&hostile)).await.status, 200);
    let lines = replied_lines(&log, 2).await;
    assert_eq!(lines.len(), 2, "{}", log.text());
    assert!(
        lines[1].contains(&format!(
            r#" message_id="m 1\n{forged}\u{{1b}}[2J\u{{9b}}2J\u{{2028}}\u{{202e}}" status=200 "#
        )),
        "{}",
        lines[1]
    );
    assert!(!log.text().lines().any(|line| line.starts_with(forged)));
    for unsafe_char in ['\u{1b}', '\u{9b}', '\u{2028}', '\u{202e}'] {
        assert!(!log.text().contains(unsafe_char), "{unsafe_char:?}");
    }

    // Refused before its body is parsed, a request is named by the unsigned
    // id headers, whatever they hold.
    let mut headers = platform_headers();
    headers.retain(|(name, _)| name != "X-Thread-Id");
    headers.push(("X-Thread-Id".to_owned(), "t 1".to_owned()));
    let unsigned = request("POST", "/", &headers, &body_of(&payload("no signature")));
    assert_eq!(server.send(&unsigned).await.status, 401);
    let rejected = wait_for_line(&log, ": request rejected ").await;
    let app_id = plain["app"]["id"].as_str().unwrap();
    assert!(
        rejected.contains(&format!(
            " WARN partner_webhook::guard: request rejected method=POST path=/ app_id={app_id} \
             thread_id=\"t 1\" status=401 "
        )),
        "{rejected}"
    );
}

#[tokio::test]
async fn with_the_request_span_on_the_assistants_own_lines_are_named_too() {
    let (log, _logging) = capture("info,partner_webhook::request=debug");
    let thinking = partner_webhook::assistant_fn(|message, _context| async move {
        let said = message.message.content.clone();
        let doubt = std::io::Error::other("no\u{2028}way");
        tracing::info!(
            %said,
            doubt = &doubt as &(dyn std::error::Error + 'static),
            "thinking about {said}"
        );
        Ok::<_, std::convert::Infallible>(format!("Echo: {said}"))
    });
    let server = TestServer::start(signed_config(), thinking).await;

    let plain = payload("hi\u{2028}there x=1");
    assert_eq!(server.send(&signed_post(&plain)).await.status, 200);
    let line = &replied_lines(&log, 1).await[0];
    let (app_id, thread_id, message_id) = (
        plain["app"]["id"].as_str().unwrap(),
        plain["thread"]["id"].as_str().unwrap(),
        plain["message"]["id"].as_str().unwrap(),
    );
    let names =
        format!("method=POST path=/ app_id={app_id} thread_id={thread_id} message_id={message_id}");
    // The line names its request whether or not the span is shown.
    assert!(
        line.contains(&format!(
            " INFO request{{{names}}}: partner_webhook::guard: replied {names} status=200 "
        )),
        "{line}"
    );
    let own = wait_for_line(&log, ": thinking about ").await;
    assert!(
        own.contains(&format!(
            r#" INFO request{{{names}}}: it::log_line: thinking about hi\u{{2028}}there x=1 said="hi\u{{2028}}there x=1" doubt="no\u{{2028}}way""#
        )),
        "{own}"
    );
    assert!(!log.text().contains('\u{2028}'));
}

/// The first line holding `marker`, waiting up to 5 s for it.
async fn wait_for_line(log: &CapturedLog, marker: &str) -> String {
    for _ in 0..500 {
        if let Some(line) = log.text().lines().find(|line| line.contains(marker)) {
            return line.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no line with {marker:?} in:\n{}", log.text());
}

#[test]
fn a_value_goes_unquoted_only_when_it_reads_unambiguously() {
    for bare in ["POST", "/webhook", "4f3c-00aa", "0.123"] {
        assert!(is_bare(bare), "{bare}");
    }
    for quoted in [
        "",
        "two words",
        "a=b",
        "quote\"",
        "back\\slash",
        "line\nbreak",
        "café",
    ] {
        assert!(!is_bare(quoted), "{quoted:?}");
    }
}

#[test]
fn a_record_from_the_log_crate_shows_its_own_target_and_no_bridge_fields() {
    let (log, _logging) = capture("info");
    // Installed once for the whole test binary; a second test may have done it.
    let _ = tracing_log::LogTracer::init();
    tracing_log::log::info!(target: "some_crate::client", "pool ready");
    let text = log.text();
    assert!(
        text.contains(" INFO some_crate::client: pool ready\n"),
        "{text}"
    );
    assert!(!text.contains("log."), "{text}");
}

#[tokio::test]
async fn a_streamed_reply_is_named_on_its_line_when_its_stream_ends() {
    let (log, _logging) = capture("info");
    let sse = signed_config().reply_format(partner_webhook::ReplyFormat::Sse);
    let server = TestServer::start(sse, echo()).await;
    let streamed = payload("stream me");
    let mut connection = Connection::open(server.addr).await;
    connection.write(&signed_post(&streamed)).await;
    assert_eq!(connection.read_head().await.status, 200);
    let mut frames = Vec::new();
    while let Some(chunk) = connection.read_chunk().await {
        frames.extend(chunk);
    }
    let frames = String::from_utf8(frames).unwrap();
    assert!(frames.contains("event: done"), "{frames}");
    let line = &replied_lines(&log, 1).await[0];
    let names = format!(
        "replied method=POST path=/ app_id={} thread_id={} message_id={} status=200 ",
        streamed["app"]["id"].as_str().unwrap(),
        streamed["thread"]["id"].as_str().unwrap(),
        streamed["message"]["id"].as_str().unwrap(),
    );
    assert!(line.contains(&names), "{line}");
}

#[test]
fn the_line_time_is_the_calendar_date_in_utc() {
    let utc = |secs: u64, micros: u32| {
        let mut text = String::new();
        write_utc(&mut text, Duration::new(secs, micros * 1_000)).unwrap();
        text
    };
    // Python's datetime.fromtimestamp(secs, timezone.utc) for each second.
    assert_eq!(utc(0, 0), "1970-01-01T00:00:00.000000Z");
    assert_eq!(utc(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
    assert_eq!(utc(1_764_525_612, 184_555), "2025-11-30T18:00:12.184555Z");
    assert_eq!(utc(4_107_542_399, 999_999), "2100-02-28T23:59:59.999999Z");
    // 2100 is not a leap year: the day after 28 February is 1 March.
    assert_eq!(utc(4_107_542_400, 0), "2100-03-01T00:00:00.000000Z");
    assert_eq!(
        utc(LAST_FOUR_DIGIT_SECOND, 0),
        "9999-12-31T23:59:59.000000Z"
    );
    // Lines in the same second reuse its date and time with their own
    // microseconds; the second after gets its own.
    assert_eq!(utc(86_399, 0), "1970-01-01T23:59:59.000000Z");
    assert_eq!(utc(86_399, 123_456), "1970-01-01T23:59:59.123456Z");
    assert_eq!(utc(86_399, 999_999), "1970-01-01T23:59:59.999999Z");
    assert_eq!(utc(86_400, 1), "1970-01-02T00:00:00.000001Z");
    assert_eq!(utc(86_399, 5), "1970-01-01T23:59:59.000005Z");
}

#[test]
fn the_line_time_reads_as_the_default_format_would() {
    use tracing_subscriber::fmt::format::Writer;
    use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
    // Both read the clock; a second may turn between them, so try again.
    for _ in 0..5 {
        let mut ours = String::new();
        let since_epoch = std::time::UNIX_EPOCH.elapsed().unwrap();
        write_utc(&mut ours, since_epoch).unwrap();
        let mut theirs = String::new();
        SystemTime
            .format_time(&mut Writer::new(&mut theirs))
            .unwrap();
        assert_eq!(ours.len(), theirs.len(), "{ours} against {theirs}");
        if ours[..19] == theirs[..19] {
            return;
        }
    }
    panic!("the two never agreed to the second");
}
