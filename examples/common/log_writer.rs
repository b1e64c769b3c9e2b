//! A log writer that costs a request no system call: each line is appended to
//! a shared buffer, and one background thread writes the buffer out in one
//! `write` every 50 ms, or as soon as it holds 64 KiB.
//!
//! `tracing_appender::non_blocking` hands every line to its thread through a
//! channel, waking that thread (a futex call) and writing (a `write` call) once
//! per line; at thousands of requests a second that was most of what a log
//! line cost. Here a line costs a lock and a copy.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait in the buffer.
const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// A buffer this full is written at once rather than at the next tick.
const FLUSH_AT: usize = 64 * 1024;
/// Past this, while the output is blocked (a full pipe, a stalled terminal),
/// lines are dropped and counted rather than held without bound.
const HOLD_AT_MOST: usize = 8 * 1024 * 1024;

/// Make one per process; pass it to `tracing_subscriber::fmt().with_writer`.
#[derive(Clone)]
pub(crate) struct BatchedWriter {
    shared: Arc<Shared>,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    closing: bool,
}

/// Writes what is left when dropped: keep it until the end of `main`.
pub(crate) struct FlushOnDrop {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl BatchedWriter {
    /// A writer into `output`, and the guard that flushes it at exit.
    pub(crate) fn new(output: impl Write + Send + 'static) -> (Self, FlushOnDrop) {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            dropped: AtomicU64::new(0),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("log-writer".to_owned())
                .spawn(move || shared.write_out(output))
                .inspect_err(|error| {
                    // Nothing else could report it: lines would pile up to
                    // HOLD_AT_MOST, then be dropped.
                    eprintln!("log-writer: no thread to write the log: {error}");
                })
                .ok()
        };
        let writer = BatchedWriter {
            shared: Arc::clone(&shared),
        };
        (writer, FlushOnDrop { shared, thread })
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding the lock leaves at worst a partial line.
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The background thread: swaps the buffer out under the lock and writes
    /// it outside, so appending never waits for the output.
    fn write_out(&self, mut output: impl Write) {
        let mut batch = Vec::with_capacity(FLUSH_AT);
        loop {
            let closing = {
                let mut pending = self.lock();
                if pending.lines.len() < FLUSH_AT && !pending.closing {
                    pending = self
                        .wake
                        .wait_timeout(pending, FLUSH_EVERY)
                        .map_or_else(|poisoned| poisoned.into_inner().0, |(pending, _)| pending);
                }
                std::mem::swap(&mut pending.lines, &mut batch);
                pending.closing
            };
            let dropped = self.dropped.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                let _ = writeln!(
                    batch,
                    "log-writer: {dropped} log lines dropped while the output was blocked"
                );
            }
            if !batch.is_empty() {
                // Nowhere to report a failed write to: the log is the report.
                let _ = output.write_all(&batch).and_then(|()| output.flush());
                batch.clear();
            }
            // A burst while the output was blocked may have grown it to
            // HOLD_AT_MOST; the two buffers take turns, so both shrink back.
            if batch.capacity() > 4 * FLUSH_AT {
                batch = Vec::with_capacity(FLUSH_AT);
            }
            if closing {
                return;
            }
        }
    }
}

/// How long exit waits for the last lines: an output that stopped reading
/// (a full pipe) must not keep the process from ending.
const EXIT_WAIT: Duration = Duration::from_secs(2);

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        let Some(thread) = self.thread.take() else {
            return;
        };
        let waited = std::time::Instant::now();
        while !thread.is_finished() && waited.elapsed() < EXIT_WAIT {
            std::thread::sleep(Duration::from_millis(5));
        }
        if thread.is_finished() {
            let _ = thread.join();
        }
    }
}

/// One line on its way into the buffer; `tracing_subscriber` writes each
/// formatted line with a single `write_all`.
pub(crate) struct Line<'a>(&'a Shared);

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut pending = self.0.lock();
        if pending.lines.len() + bytes.len() > HOLD_AT_MOST {
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(bytes.len());
        }
        let was_below = pending.lines.len() < FLUSH_AT;
        pending.lines.extend_from_slice(bytes);
        let now_full = pending.lines.len() >= FLUSH_AT;
        drop(pending);
        // One wake per batch, never one per line.
        if was_below && now_full {
            self.0.wake.notify_one();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchedWriter {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line(&self.shared)
    }
}
