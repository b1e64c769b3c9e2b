//! The examples' log line (`examples/common/log_line.rs`) on a real server:
//! each request's line keeps every field of the default format, plain values
//! go unquoted, and a client-chosen value cannot start a line of its own.

use std::time::Duration;

use tracing::subscriber;

use crate::support::*;

#[path = "../../examples/common/log_line.rs"]
mod examples_log_line;

use examples_log_line::{LogLine, is_bare};

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
    let log = CapturedLog::default();
    let writer = log.clone();
    let logging = tracing_subscriber::fmt()
        .with_ansi(false)
        .event_format(LogLine)
        .fmt_fields(LogLine)
        .with_writer(move || writer.clone())
        .finish();
    let _logging = subscriber::set_default(logging);
    let server = TestServer::echo().await;

    let plain = payload("hello");
    assert_eq!(server.send(&signed_post(&plain)).await.status, 200);
    let line = &replied_lines(&log, 1).await[0];
    let fields = format!(
        " INFO request{{method=POST path=/ app_id={} thread_id={} message_id={}}}: \
         partner_webhook::guard: replied status=200 latency_ms=",
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
    hostile["message"]["id"] = format!("m 1\n{forged}\u{1b}[2J").into();
    assert_eq!(server.send(&signed_post(&hostile)).await.status, 200);
    let lines = replied_lines(&log, 2).await;
    assert_eq!(lines.len(), 2, "{}", log.text());
    assert!(
        lines[1].contains(&format!(r#"message_id="m 1\n{forged}\u{{1b}}[2J"}}"#)),
        "{}",
        lines[1]
    );
    assert!(!log.text().lines().any(|line| line.starts_with(forged)));
    assert!(!log.text().contains('\u{1b}'));
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
