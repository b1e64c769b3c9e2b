//! The cost of one replay check (`ReplayCache::first_seen`), in memory and
//! through Redis on loopback, as the server pays it: one distinct signature
//! per call, awaited one after the other.
//!
//! ```sh
//! redis-server --port 6390 --save "" --appendonly no &
//! cargo run --release -- redis://127.0.0.1:6390/ 20000
//! ```

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use partner_webhook::{MemoryReplayCache, RedisReplayCache, ReplayCache};

async fn per_call(cache: &dyn ReplayCache, calls: u32, salt: u8) -> f64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let started = Instant::now();
    for call in 0..calls {
        let mut signature = [salt; 32];
        signature[..4].copy_from_slice(&call.to_le_bytes());
        let fresh = cache.first_seen(signature, now + 300, now).await;
        assert!(matches!(fresh, Ok(true)), "call {call}: {fresh:?}");
    }
    started.elapsed().as_secs_f64() * 1e6 / f64::from(calls)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379/".to_owned());
    let calls: u32 = args.next().map_or(Ok(20_000), |n| n.parse())?;
    let redis = RedisReplayCache::connect(&url).await?.with_prefix(format!(
        "replay-cost:{}:",
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos()
    ));
    let memory = MemoryReplayCache::default();
    // Warm both, then measure each twice, interleaved.
    per_call(&memory, 1000, 1).await;
    per_call(&redis, 1000, 1).await;
    let mut results = Vec::new();
    for round in 0..2u8 {
        let memory_us = per_call(&memory, calls, 10 + round).await;
        let redis_us = per_call(&redis, calls, 20 + round).await;
        results.push((memory_us, redis_us));
    }
    for (round, (memory_us, redis_us)) in results.iter().enumerate() {
        println!(
            "round {}: memory {memory_us:.2} us/check, redis {redis_us:.2} us/check, ratio {:.1}",
            round + 1,
            redis_us / memory_us
        );
    }
    Ok(())
}
