//! Replay: a verified signature is accepted once. A signed request stays valid
//! for the whole replay window, so without this a captured request could be
//! sent again for up to five minutes.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::error::BoxError;
use crate::measure;

/// Remembers the signatures accepted inside the replay window.
///
/// The default, [`MemoryReplayCache`], serves one process. When several
/// instances run behind one Webhook URL, implement this over a shared store
/// so that a replay sent to another instance is caught too.
///
/// Only requests with a valid signature reach the cache, so its size follows
/// genuine traffic, never an attacker's. The platform puts a microsecond
/// timestamp in every body, so two genuine requests never share a signature.
///
/// # The rule an implementation must keep
///
/// A request passes the window check while `now <= timestamp + window`, both
/// ends included. `expires_at` is that last second, so a recorded signature
/// must be refused for every `now <= expires_at` and may be forgotten only
/// once `now > expires_at`. Any earlier and a captured request is accepted a
/// second time at the window's edge. `now` is the clock reading the request
/// was verified with; use it instead of reading a clock again, so the window
/// check and the cache agree. Over Redis, for instance, that is
/// `SET key 1 NX EX <expires_at + 1 - now>`: atomic, and relative to the
/// verifying clock rather than the store's.
#[async_trait]
pub trait ReplayCache: std::fmt::Debug + Send + Sync + 'static {
    /// Records `signature` until after `expires_at` (unix seconds), as of
    /// `now`. Returns `Ok(false)` when it is already recorded: the request is a
    /// replay. An `Err` is answered with 503, never by letting the request
    /// through.
    async fn first_seen(
        &self,
        signature: [u8; 32],
        expires_at: u64,
        now: u64,
    ) -> Result<bool, BoxError>;

    /// Whether the store can answer now; `GET /readyz` reports it. A store
    /// in this process always can, so the default is `Ok`.
    async fn ready(&self) -> Result<(), BoxError> {
        Ok(())
    }
}

/// An in-memory [`ReplayCache`] with a fixed capacity.
///
/// Entries expire with the window. When it is full, the entries closest to
/// expiry are forgotten, and from then on any request signed no later than a
/// forgotten one is treated as a replay: the cache can no longer vouch for it.
/// Genuine requests carry the newest timestamps, so they keep flowing; under
/// a flood the effective replay window shrinks to what the cache holds, and
/// nothing is ever let through unchecked. The default capacity of 100,000
/// holds the full 5-minute window up to about 330 messages a second, in about
/// 4 MB when filled and 6 MB once traffic has churned through it
/// (`bench/perf/replay-mem`).
pub struct MemoryReplayCache {
    capacity: usize,
    seen: Mutex<Seen>,
}

/// What the cache keeps of a signature: its first half.
///
/// The cache only has to recognise a tag it has seen, and 128 bits of an
/// HMAC-SHA256 tag do that as well as 256: two of a million genuine tags share
/// a prefix with odds of about 2^-89, and only verified signatures get here, so
/// nobody without the secret can pick one to collide. A collision could only
/// refuse a genuine request as a replay, never accept a replay. Halving the key
/// halves what the two copies below cost.
type Key = [u8; 16];

fn key_of(signature: &[u8; 32]) -> Key {
    let mut key = [0; 16];
    key.copy_from_slice(&signature[..16]);
    key
}

#[derive(Default)]
struct Seen {
    /// Answers "seen before?". No expiry stored here: the bucket a key sits in
    /// already says it, and a value would widen every slot of the table.
    keys: HashSet<Key>,
    /// The same keys by the second they expire, earliest first. Expiries are
    /// whole seconds and a window's traffic shares a few hundred of them, so a
    /// bucket per second stores the expiry once per second rather than once per
    /// entry, and forgetting takes whole buckets from the front. A map rather
    /// than a ring indexed by second: `expires_at` follows the sender's clock,
    /// arrives out of order, and may be any value.
    by_expiry: BTreeMap<u64, Vec<Key>>,
    /// Latest expiry among the entries forgotten, to make room or because they
    /// expired: a request expiring no later than this cannot be checked any
    /// more. It also closes a race: a request verified with a clock reading a
    /// second behind another's would otherwise find its entry already expired
    /// by the later reading.
    forgotten_until: u64,
}

impl MemoryReplayCache {
    /// A cache holding at most `capacity` unexpired signatures.
    pub fn new(capacity: usize) -> Self {
        MemoryReplayCache {
            capacity,
            seen: Mutex::new(Seen::default()),
        }
    }

    fn record(&self, signature: [u8; 32], expires_at: u64, now: u64) -> bool {
        // A poisoned lock only means another request panicked while holding it.
        // Nothing below panics short of running out of memory (which aborts),
        // and a key is filed in the set before its bucket, so at worst a key
        // would stay refused for good: never one let through.
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        seen.forget_expired(now);
        let key = key_of(&signature);
        if expires_at <= seen.forgotten_until || !seen.keys.insert(key) {
            return false;
        }
        // The new key is in the set but in no bucket yet, so making room never
        // picks it: the entries closest to expiry among the others go, as if
        // it had been inserted after them.
        while seen.keys.len() > self.capacity.max(1) {
            if !seen.forget_earliest() {
                break;
            }
        }
        seen.file(expires_at, key);
        measure::replay_cache_entries(seen.keys.len());
        true
    }

    /// How many signatures are remembered now.
    pub fn len(&self) -> usize {
        let seen = self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        seen.keys.len()
    }

    /// Whether no signature is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Capacity and size only: the remembered signatures would flood any log.
impl std::fmt::Debug for MemoryReplayCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryReplayCache")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

impl Default for MemoryReplayCache {
    fn default() -> Self {
        MemoryReplayCache::new(100_000)
    }
}

impl Seen {
    /// Forgets what the window check refuses by itself: entries whose last
    /// valid second has passed (`expiry < now`), never one still valid now.
    fn forget_expired(&mut self, now: u64) {
        while let Some(bucket) = self.by_expiry.first_entry() {
            if *bucket.key() >= now {
                break;
            }
            let (expiry, keys) = bucket.remove_entry();
            for key in &keys {
                self.keys.remove(key);
            }
            self.forgotten_until = self.forgotten_until.max(expiry);
        }
    }

    /// Forgets one entry of the earliest second to make room; `false` when
    /// there is none.
    ///
    /// Which entry of that second goes does not matter: from now on
    /// `forgotten_until` refuses every request expiring then, the replays of
    /// the ones kept included.
    fn forget_earliest(&mut self) -> bool {
        let Some(mut bucket) = self.by_expiry.first_entry() else {
            return false;
        };
        let expiry = *bucket.key();
        if let Some(key) = bucket.get_mut().pop() {
            self.keys.remove(&key);
        }
        if bucket.get().is_empty() {
            bucket.remove();
        }
        self.forgotten_until = self.forgotten_until.max(expiry);
        true
    }

    fn file(&mut self, expires_at: u64, key: Key) {
        let bucket = self.by_expiry.entry(expires_at).or_default();
        if bucket.len() == bucket.capacity() {
            // Doubling would leave a second of 333 keys in room for 512, a
            // third of the buckets' memory unused; growing by a quarter wastes
            // at most a fifth, for a few more copies of a few KB a second.
            bucket.reserve_exact((bucket.len() / 4).max(4));
        }
        bucket.push(key);
    }
}

#[async_trait]
impl ReplayCache for MemoryReplayCache {
    async fn first_seen(
        &self,
        signature: [u8; 32],
        expires_at: u64,
        now: u64,
    ) -> Result<bool, BoxError> {
        Ok(self.record(signature, expires_at, now))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_signature_is_accepted_once_until_it_expires() {
        let cache = MemoryReplayCache::new(10);
        assert!(cache.record([1; 32], 400, 100));
        assert!(!cache.record([1; 32], 400, 399));
        assert!(cache.record([2; 32], 400, 399));
        // Once expired, the window check rejects the old timestamp anyway, so
        // the entry can go.
        assert!(
            !cache.record([1; 32], 800, 400),
            "still valid at its last second"
        );
        assert!(cache.record([1; 32], 800, 401));
        assert_eq!(cache.len(), 1);
        assert_eq!(
            format!("{cache:?}"),
            "MemoryReplayCache { capacity: 10, len: 1 }"
        );
    }

    #[test]
    fn a_full_cache_forgets_the_oldest_and_refuses_anything_that_old() {
        let cache = MemoryReplayCache::new(2);
        assert!(cache.record([1; 32], 400, 100));
        assert!(cache.record([2; 32], 410, 110));
        // Full: [1] (expiring at 400) is forgotten to make room...
        assert!(cache.record([3; 32], 420, 120));
        assert_eq!(cache.len(), 2);
        // ...so a replay of it is still refused, as is anything signed earlier.
        assert!(!cache.record([1; 32], 400, 121));
        assert!(!cache.record([9; 32], 395, 121));
        // Newer requests keep flowing.
        assert!(cache.record([4; 32], 430, 130));
        assert!(!cache.record([3; 32], 420, 131));
    }

    #[test]
    fn an_entry_forgotten_by_a_later_clock_is_still_refused() {
        let cache = MemoryReplayCache::new(10);
        assert!(cache.record([1; 32], 400, 100));
        // Another request, verified a second later, lets [1] expire...
        assert!(cache.record([2; 32], 700, 401));
        // ...but a replay verified at 400, when [1] was still valid, is refused.
        assert!(!cache.record([1; 32], 400, 400));
    }

    /// Every key is in exactly one bucket, and the buckets hold nothing else.
    fn assert_consistent(cache: &MemoryReplayCache) {
        let seen = cache.seen.lock().expect("not poisoned");
        let filed: Vec<Key> = seen.by_expiry.values().flatten().copied().collect();
        assert_eq!(filed.len(), seen.keys.len());
        assert!(filed.iter().all(|key| seen.keys.contains(key)));
        assert!(seen.by_expiry.values().all(|bucket| !bucket.is_empty()));
    }

    #[test]
    fn a_full_cache_forgets_by_expiry_not_by_arrival() {
        let cache = MemoryReplayCache::new(3);
        assert!(cache.record([1; 32], 410, 100));
        assert!(cache.record([2; 32], 400, 100));
        assert!(cache.record([3; 32], 420, 100));
        // Full: [2] expires first though it came second, so it goes.
        assert!(cache.record([4; 32], 430, 100));
        assert!(!cache.record([2; 32], 400, 100));
        assert!(
            !cache.record([9; 32], 400, 100),
            "no later than a forgotten one"
        );
        assert!(!cache.record([1; 32], 410, 100), "kept");
        // Still room after 400 but before the earliest kept: it is accepted,
        // and [1] (410) makes room for it.
        assert!(cache.record([5; 32], 405, 100));
        assert_eq!(cache.len(), 3);
        assert!(!cache.record([1; 32], 410, 100));
        assert!(!cache.record([8; 32], 410, 100));
        assert!(cache.record([6; 32], 411, 100));
        assert_consistent(&cache);
    }

    #[test]
    fn entries_of_one_second_share_a_bucket_and_leave_together() {
        let cache = MemoryReplayCache::new(10);
        for (byte, now) in (1..=4).zip([100, 150, 200, 399]) {
            assert!(cache.record([byte; 32], 400, now));
        }
        assert!(cache.record([5; 32], 401, 399));
        assert_eq!(cache.seen.lock().expect("not poisoned").by_expiry.len(), 2);
        for byte in 1..=4 {
            assert!(!cache.record([byte; 32], 400, 400));
        }
        // At 401 all of second 400 goes at once; 401 stays, its last second.
        assert!(cache.record([6; 32], 500, 401));
        assert_eq!(cache.len(), 2);
        assert!(!cache.record([5; 32], 401, 401));
        assert!(!cache.record([7; 32], 400, 401), "second 400 is closed");
        assert_consistent(&cache);
    }

    #[test]
    fn room_made_inside_a_second_refuses_the_rest_of_it() {
        let cache = MemoryReplayCache::new(3);
        for byte in 1..=3 {
            assert!(cache.record([byte; 32], 400, 100));
        }
        // One of the three expiring at 400 goes; whichever it was, none of
        // them can be replayed, and the other two still count.
        assert!(cache.record([4; 32], 500, 100));
        assert_eq!(cache.len(), 3);
        for byte in 1..=3 {
            assert!(!cache.record([byte; 32], 400, 100));
        }
        assert!(cache.record([5; 32], 500, 100));
        assert!(cache.record([6; 32], 500, 100));
        assert_eq!(cache.len(), 3);
        assert!(!cache.record([4; 32], 500, 100));
        assert_consistent(&cache);
    }

    #[test]
    fn an_entry_lasts_through_its_expiry_second() {
        let cache = MemoryReplayCache::new(10);
        assert!(cache.record([1; 32], 400, 100));
        assert!(cache.record([2; 32], 700, 400));
        assert_eq!(cache.len(), 2, "expiry == now is still valid");
        assert!(!cache.record([1; 32], 400, 400));
        assert!(cache.record([3; 32], 700, 401));
        assert_eq!(cache.len(), 2, "expiry < now is forgotten");
        assert_consistent(&cache);
    }

    #[test]
    fn a_signature_is_known_by_its_first_half() {
        let cache = MemoryReplayCache::new(10);
        let mut signature = [7; 32];
        assert!(cache.record(signature, 400, 100));
        signature[16..].fill(8);
        assert!(!cache.record(signature, 400, 100));
        signature[15] = 8;
        assert!(cache.record(signature, 400, 100));
    }

    /// The layout this replaced, kept as the reference for its behaviour: a
    /// map of full signatures and a heap of (expiry, signature).
    #[derive(Default)]
    struct Reference {
        capacity: usize,
        expiry_by_signature: std::collections::HashMap<[u8; 32], u64>,
        by_expiry: std::collections::BinaryHeap<std::cmp::Reverse<(u64, [u8; 32])>>,
        forgotten_until: u64,
    }

    impl Reference {
        fn record(&mut self, signature: [u8; 32], expires_at: u64, now: u64) -> bool {
            use std::cmp::Reverse;
            while let Some(Reverse((expiry, old))) = self.by_expiry.peek().copied() {
                if expiry >= now {
                    break;
                }
                self.by_expiry.pop();
                self.expiry_by_signature.remove(&old);
                self.forgotten_until = self.forgotten_until.max(expiry);
            }
            if expires_at <= self.forgotten_until
                || self.expiry_by_signature.contains_key(&signature)
            {
                return false;
            }
            while self.expiry_by_signature.len() >= self.capacity.max(1) {
                let Some(Reverse((expiry, oldest))) = self.by_expiry.pop() else {
                    break;
                };
                self.expiry_by_signature.remove(&oldest);
                self.forgotten_until = self.forgotten_until.max(expiry);
            }
            self.expiry_by_signature.insert(signature, expires_at);
            self.by_expiry.push(Reverse((expires_at, signature)));
            true
        }
    }

    /// One step of traffic: the clock moves by `tick - 1` seconds (a step back
    /// is a request verified with an older reading), then either a fresh
    /// request signed `age` seconds ago arrives, or request `replay` (modulo
    /// those sent so far) is sent again.
    #[derive(Debug, Clone)]
    struct Step {
        tick: u64,
        age: u64,
        replay: Option<usize>,
    }

    fn step() -> impl Strategy<Value = Step> {
        (
            0..4u64,
            0..8u64,
            proptest::option::weighted(0.3, any::<usize>()),
        )
            .prop_map(|(tick, age, replay)| Step { tick, age, replay })
    }

    proptest! {
        #[test]
        fn behaves_as_the_map_and_heap_it_replaced(
            capacity in 0..8usize,
            window in 1..6u64,
            steps in proptest::collection::vec(step(), 1..200),
        ) {
            let cache = MemoryReplayCache::new(capacity);
            let mut reference = Reference { capacity, ..Reference::default() };
            let mut now = 1_000u64;
            let mut sent: Vec<([u8; 32], u64)> = Vec::new();
            for (n, step) in steps.iter().enumerate() {
                now = (now + step.tick).saturating_sub(1);
                let (signature, expires_at) = match step.replay {
                    Some(index) if !sent.is_empty() => sent[index % sent.len()],
                    _ => {
                        let mut signature = [0; 32];
                        signature[..8].copy_from_slice(&(n as u64).to_le_bytes());
                        signature[8..16].fill(n as u8);
                        (signature, now - step.age + window)
                    }
                };
                sent.push((signature, expires_at));
                prop_assert_eq!(
                    cache.record(signature, expires_at, now),
                    reference.record(signature, expires_at, now),
                    "step {} at {}: expiring {}", n, now, expires_at
                );
                prop_assert_eq!(cache.len(), reference.expiry_by_signature.len());
            }
            assert_consistent(&cache);
        }
    }
}
