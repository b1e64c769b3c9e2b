//! The examples' batched log writer (`examples/common/log_writer.rs`): every
//! line arrives, in order, by the time its guard is dropped; a blocked output
//! drops lines with a count instead of holding them without bound.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

#[path = "../../examples/common/log_writer.rs"]
#[allow(dead_code, reason = "the examples' writer, tested here")]
mod examples_log_writer;

use examples_log_writer::BatchedWriter;

/// An output that records what it was given, and can be held shut.
#[derive(Clone, Default)]
struct Output {
    written: Arc<Mutex<Vec<u8>>>,
    writes: Arc<Mutex<usize>>,
    gate: Arc<Mutex<()>>,
}

impl Write for Output {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let _open = self.gate.lock().unwrap();
        self.written.lock().unwrap().extend_from_slice(bytes);
        *self.writes.lock().unwrap() += 1;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn every_line_arrives_in_order_in_few_writes() {
    let output = Output::default();
    let (writer, flush) = BatchedWriter::new(output.clone());
    let expected: String = (0..10_000).map(|n| format!("line {n}\n")).collect();
    for line in expected.lines() {
        writer
            .make_writer()
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
    }
    drop(flush);
    assert_eq!(
        String::from_utf8(output.written.lock().unwrap().clone()).unwrap(),
        expected
    );
    let writes = *output.writes.lock().unwrap();
    assert!(writes < 100, "{writes} writes for 10,000 lines");
}

#[test]
fn a_blocked_output_drops_lines_with_a_count_instead_of_growing() {
    let output = Output::default();
    let shut = output.gate.lock().unwrap();
    let (writer, flush) = BatchedWriter::new(output.clone());
    // Let the thread take the first batch and block writing it.
    writer.make_writer().write_all(b"first\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let line = vec![b'x'; 1023];
    for _ in 0..12 * 1024 {
        let mut line = line.clone();
        line.push(b'\n');
        writer.make_writer().write_all(&line).unwrap();
    }
    drop(shut);
    drop(flush);
    let written = output.written.lock().unwrap().clone();
    let text = String::from_utf8_lossy(&written);
    assert!(text.starts_with("first\n"));
    // 12 MiB offered while blocked, at most 8 MiB held.
    assert!(
        written.len() < 9 * 1024 * 1024,
        "{} bytes held",
        written.len()
    );
    let notice = text
        .lines()
        .find(|line| line.contains("log lines dropped"))
        .expect("a notice of the dropped lines");
    let dropped: u64 = notice.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!((3 * 1024..=5 * 1024).contains(&dropped), "{notice}");
}

#[test]
fn exit_gives_up_on_an_output_that_never_reads_again() {
    let output = Output::default();
    let shut = output.gate.lock().unwrap();
    let (writer, flush) = BatchedWriter::new(output.clone());
    writer.make_writer().write_all(b"stuck\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // A process whose stdout is a pipe nobody reads still exits: the guard
    // waits a couple of seconds for the last lines, not forever.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(flush);
        let _ = done_tx.send(());
    });
    let exited = done_rx.recv_timeout(Duration::from_secs(30));
    drop(shut);
    assert!(
        exited.is_ok(),
        "dropping the guard hung on a blocked output"
    );
}
