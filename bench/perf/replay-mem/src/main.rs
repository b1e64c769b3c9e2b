//! The memory a full [`MemoryReplayCache`] holds, read as the process sees it:
//! VmRSS and VmHWM from `/proc/self/status`, before and after filling a
//! `MemoryReplayCache::default()` with distinct signatures, then after more
//! traffic has churned through it (entries expiring and being evicted).
//!
//! Traffic is shaped like the real thing at ~333 requests a second: pseudo-random
//! 32-byte signatures, `now` advancing one second every 333 requests, and each
//! request's timestamp `now` or (one in ten) a second behind it, so that expiries
//! (`timestamp + 300`) spread over 300 seconds and arrive slightly out of order.
//!
//! ```sh
//! cargo run --release              # 100,000 to fill, then 200,000 more
//! cargo run --release -- 100000 0  # fill only
//! ```
//!
//! Run it once per build to compare (one process per measurement: the allocator
//! keeps what it has been given, so two caches in one process would blur).

use std::time::Instant;

use partner_webhook::{MemoryReplayCache, ReplayCache};

const WINDOW: u64 = 300;
const PER_SECOND: u64 = 333;
const T0: u64 = 1_796_000_000;

/// `(VmRSS, VmHWM)` in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// splitmix64: distinct, random-looking values without a dependency.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn signature(&mut self) -> [u8; 32] {
        let mut signature = [0; 32];
        for chunk in signature.chunks_exact_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        signature
    }
}

async fn send(cache: &MemoryReplayCache, random: &mut Random, from: u64, to: u64) -> u64 {
    let mut refused = 0;
    for request in from..to {
        let now = T0 + request / PER_SECOND;
        let timestamp = if random.next().is_multiple_of(10) {
            now - 1
        } else {
            now
        };
        let signature = random.signature();
        if !cache
            .first_seen(signature, timestamp + WINDOW, now)
            .await
            .expect("the memory cache never fails")
        {
            refused += 1;
        }
    }
    refused
}

fn report(stage: &str, before: (u64, u64), entries: usize) {
    let (rss, hwm) = rss_kib();
    let per_entry = |kib: u64| (kib * 1024) as f64 / entries.max(1) as f64;
    println!(
        "{stage}: {entries} entries; VmRSS {rss} KiB (+{} KiB, {:.1} B/entry); \
         VmHWM {hwm} KiB (+{} KiB, {:.1} B/entry)",
        rss - before.0,
        per_entry(rss - before.0),
        hwm - before.1,
        per_entry(hwm - before.1),
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let fill: u64 = args
        .next()
        .map_or(100_000, |n| n.parse().expect("fill count"));
    let churn: u64 = args
        .next()
        .map_or(200_000, |n| n.parse().expect("churn count"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let cache = MemoryReplayCache::default();
        let mut random = Random(0x5eed);
        let before = rss_kib();
        println!("before: VmRSS {} KiB, VmHWM {} KiB", before.0, before.1);
        let started = Instant::now();
        let refused = send(&cache, &mut random, 0, fill).await;
        let took = started.elapsed();
        assert_eq!(refused, 0, "every fresh signature fits while filling");
        report("filled", before, cache.len());
        println!(
            "  {:.0} ns per first_seen while filling",
            took.as_nanos() as f64 / fill.max(1) as f64
        );
        if churn > 0 {
            let refused = send(&cache, &mut random, fill, fill + churn).await;
            report("churned", before, cache.len());
            println!("  {churn} more sent, {refused} refused, {cache:?}");
        }
    });
}
