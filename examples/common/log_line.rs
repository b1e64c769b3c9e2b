//! The examples' log line: what `tracing_subscriber::fmt`'s default format
//! writes (time, level, the span and its fields, target, message, fields),
//! at a fraction of its cost per request.
//!
//! The default format quotes every string field through `Debug` and styles
//! each part through `nu_ansi_term` even when colours are off; together with
//! the span it was a fifth of an echo request's CPU (BENCHMARKS.md). Here a
//! field's value is written as it is when it holds nothing a reader or a log
//! parser would trip on, and quoted and escaped otherwise; only the level is
//! coloured, and only on a terminal. Nothing is ever written raw that could
//! move the cursor or end a line (control characters, C1 included, line and
//! paragraph separators, bidi overrides): a client-chosen id cannot forge a
//! log line. Records from the `log` crate are shown with their own target,
//! as the default format shows them.
//!
//! ```text
//! 2026-11-30T13:28:24.123456Z  INFO partner_webhook::guard: replied method=POST path=/ app_id=4f3c… thread_id=… message_id=… status=200 latency_ms=0.123
//! ```

use std::cell::{Cell, RefCell};
use std::fmt::{self, Write as _};
use std::time::{Duration, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// 9999-12-31T23:59:59Z, the last second [`write_utc`] can write.
pub(crate) const LAST_FOUR_DIGIT_SECOND: u64 = 253_402_300_799;

/// Writes `since_epoch` as `tracing_subscriber`'s `SystemTime` does (RFC 3339
/// in UTC, microseconds, `2026-11-30T13:28:24.123456Z`), for a time no later
/// than [`LAST_FOUR_DIGIT_SECOND`]. The date and time of day are worked out
/// once a second per thread, and a line writes only its microseconds: the
/// calendar was nearly a third of the line's formatting in the echo server's profile
/// (0.9 of 2.9 % of its samples).
pub(crate) fn write_utc(writer: &mut impl fmt::Write, since_epoch: Duration) -> fmt::Result {
    thread_local! {
        static SECOND: Cell<Option<(u64, [u8; 20])>> = const { Cell::new(None) };
    }
    let secs = since_epoch.as_secs();
    let prefix = SECOND.with(|second| match second.get() {
        Some((cached, prefix)) if cached == secs => Ok(prefix),
        _ => {
            let prefix = date_and_time(secs).ok_or(fmt::Error)?;
            second.set(Some((secs, prefix)));
            Ok(prefix)
        }
    })?;
    let mut text = [0u8; 27];
    text[..20].copy_from_slice(&prefix);
    let mut micros = since_epoch.subsec_micros();
    for digit in text[20..26].iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    text[26] = b'Z';
    writer.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
}

/// `YYYY-MM-DDTHH:MM:SS.` of a second since the epoch, for a second no
/// later than [`LAST_FOUR_DIGIT_SECOND`].
fn date_and_time(secs: u64) -> Option<[u8; 20]> {
    let at = time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).ok()?).ok()?;
    let mut text = *b"0000-00-00T00:00:00.";
    let mut put = |at: usize, width: usize, mut value: u32| {
        for digit in text[at..at + width].iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, u32::try_from(at.year()).ok()?);
    put(5, 2, u32::from(u8::from(at.month())));
    put(8, 2, u32::from(at.day()));
    put(11, 2, u32::from(at.hour()));
    put(14, 2, u32::from(at.minute()));
    put(17, 2, u32::from(at.second()));
    Some(text)
}

/// Formats both the line and the span fields it repeats: pass it to
/// `tracing_subscriber::fmt().event_format(..).fmt_fields(..)`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LogLine;

impl<S, N> FormatEvent<S, N> for LogLine
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
    N: for<'writer> FormatFields<'writer> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        match UNIX_EPOCH.elapsed() {
            Ok(since_epoch) if since_epoch.as_secs() <= LAST_FOUR_DIGIT_SECOND => {
                write_utc(&mut writer, since_epoch)?;
            }
            // A clock before 1970 or past 9999: the default format has the
            // signs and extra digits for it.
            _ => SystemTime.format_time(&mut writer)?,
        }
        let normalized = event.normalized_metadata();
        let metadata = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let (level, colour) = match *metadata.level() {
            Level::ERROR => ("ERROR", "\x1b[31m"),
            Level::WARN => (" WARN", "\x1b[33m"),
            Level::INFO => (" INFO", "\x1b[32m"),
            Level::DEBUG => ("DEBUG", "\x1b[34m"),
            Level::TRACE => ("TRACE", "\x1b[35m"),
        };
        writer.write_char(' ')?;
        if writer.has_ansi_escapes() {
            write!(writer, "{colour}{level}\x1b[0m ")?;
        } else {
            writer.write_str(level)?;
            writer.write_char(' ')?;
        }
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                writer.write_str(span.name())?;
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    writer.write_char('{')?;
                    writer.write_str(fields)?;
                    writer.write_char('}')?;
                }
                writer.write_char(':')?;
            }
            writer.write_char(' ')?;
        }
        writer.write_str(metadata.target())?;
        writer.write_str(": ")?;
        ctx.format_fields(writer.by_ref(), event)?;
        writer.write_char('\n')
    }
}

impl<'writer> FormatFields<'writer> for LogLine {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = Fields {
            writer,
            empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

/// Writes `name=value` pairs, space-separated; the event's message comes
/// without its name.
struct Fields<'writer> {
    writer: Writer<'writer>,
    /// Nothing written yet, so no separator before the next pair.
    empty: bool,
    result: fmt::Result,
}

impl Fields<'_> {
    fn pair(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        // What the `log` bridge adds; the line shows it as the target.
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        self.result = (|| {
            if !std::mem::take(&mut self.empty) {
                self.writer.write_char(' ')?;
            }
            if field.name() != "message" {
                self.writer.write_str(field.name())?;
                self.writer.write_char('=')?;
            }
            value(&mut self.writer)
        })();
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let message = field.name() == "message";
        self.pair(field, |writer| {
            if message || is_bare(value) {
                Sanitized(writer).write_str(value)
            } else {
                write!(writer, "{value:?}")
            }
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.pair(field, |writer| write!(writer, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.pair(field, |writer| write!(writer, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.pair(field, |writer| write!(writer, "{value}"));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_formatted(field, |text| {
            let _ = write!(text, "{value}");
            let mut source = value.source();
            while let Some(cause) = source {
                let _ = write!(text, ": {cause}");
                source = cause.source();
            }
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.pair(field, |writer| write!(Sanitized(writer), "{value:?}"));
        } else {
            self.record_formatted(field, |text| {
                let _ = write!(text, "{value:?}");
            });
        }
    }
}

impl Fields<'_> {
    /// A `%`, `?` or error value, judged like a string once written out.
    fn record_formatted(&mut self, field: &Field, format: impl FnOnce(&mut String)) {
        thread_local! {
            static TEXT: RefCell<String> = const { RefCell::new(String::new()) };
        }
        TEXT.with(|text| match text.try_borrow_mut() {
            Ok(mut text) => {
                text.clear();
                format(&mut text);
                self.record_str(field, &text);
            }
            // Only a Display impl that itself logs gets here.
            Err(_) => {
                let mut text = String::new();
                format(&mut text);
                self.record_str(field, &text);
            }
        });
    }
}

/// A value that reads unambiguously without quotes: printable ASCII with no
/// space, quote, backslash or `=`.
pub(crate) fn is_bare(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|byte| byte.is_ascii_graphic() && !matches!(byte, b'"' | b'\\' | b'='))
}

/// Escapes what could move the cursor or end a line in what passes
/// through; everything else is written as it is.
struct Sanitized<'a, 'writer>(&'a mut Writer<'writer>);

impl fmt::Write for Sanitized<'_, '_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        if text.bytes().all(|byte| (b' '..b'\x7f').contains(&byte)) {
            return self.0.write_str(text);
        }
        for ch in text.chars() {
            if is_unsafe(ch) {
                write!(self.0, "{}", ch.escape_default())?;
            } else {
                self.0.write_char(ch)?;
            }
        }
        Ok(())
    }
}

/// Control characters (C0, DEL, C1), line and paragraph separators, and
/// the bidi controls that reorder what a terminal shows.
fn is_unsafe(ch: char) -> bool {
    ch.is_control()
        || matches!(
            ch,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{61c}'
        )
        || ('\u{202a}'..='\u{202e}').contains(&ch)
        || ('\u{2066}'..='\u{2069}').contains(&ch)
}
