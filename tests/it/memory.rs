//! Memory under bodies trickled in tiny chunks from many connections, judged
//! by the server process's own peak RSS: the server runs in a child process
//! (this test binary, re-run on one ignored test), so the client's memory does
//! not count.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::*;

const CHILD: &str = "memory::memory_child_server";
const CONNECTIONS: usize = 400;
const WRITES_PER_CONNECTION: usize = 100;

/// The server half: runs only when the parent test starts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the server process of trickled_bodies_hold_memory_in_proportion_to_the_bytes_counted"]
async fn memory_child_server() {
    if !ChildServer::is_child(CHILD) {
        return;
    }
    let server = TestServer::echo().await;
    ChildServer::serve_until_parent_leaves(&[server.addr.port()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_bodies_hold_memory_in_proportion_to_the_bytes_counted() {
    let child = ChildServer::start(CHILD);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], child.ports[0]));
    // Warm up: the first requests allocate what every later one reuses.
    let mut warm = Connection::open(addr).await;
    for round in 0..3 {
        let reply = warm
            .send(&signed_post(&payload(&format!("warm {round}"))))
            .await
            .reply();
        assert_eq!(reply, format!("Echo: warm {round}"));
    }
    drop(warm);
    let baseline_kib = child.memory_kib("VmRSS");

    let mut streams = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        // Headers that could verify, so the server reads the body.
        stream
            .write_all(&plausible_head("Transfer-Encoding: chunked\r\n"))
            .await
            .unwrap();
        streams.push(stream);
    }
    // One byte per write, each round its own TCP segment and server read.
    for _ in 0..WRITES_PER_CONNECTION {
        for stream in &mut streams {
            stream.write_all(b"1\r\n \r\n").await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let peak_kib = child.memory_kib("VmHWM");
    drop(streams);

    let counted_kib = (CONNECTIONS * WRITES_PER_CONNECTION / 1024) as u64;
    let grown_kib = peak_kib.saturating_sub(baseline_kib);
    // The README's bound: what the body budget charges (each body's buffer
    // starts at 1 KiB) plus, per connection, a request head (16 KiB at most)
    // and its task and socket state. Before bodies were copied out of hyper's
    // read buffer, each 1-byte frame pinned about 4 KiB: 160 MiB here.
    let per_connection_kib = 16 + 16;
    let bound_kib = (CONNECTIONS as u64) * (1 + per_connection_kib);
    eprintln!(
        "baseline {baseline_kib} KiB, peak {peak_kib} KiB, grown {grown_kib} KiB \
         for {counted_kib} KiB counted over {CONNECTIONS} connections (bound {bound_kib} KiB)"
    );
    assert!(
        grown_kib <= bound_kib,
        "grew {grown_kib} KiB, over the {bound_kib} KiB bound"
    );
    let after = Connection::open(addr)
        .await
        .send(&signed_post(&payload("after")))
        .await;
    assert_eq!(after.reply(), "Echo: after");
}
