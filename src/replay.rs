//! Replay: a verified signature is accepted once. A signed request stays valid
//! for the whole replay window, so without this a captured request could be
//! sent again for up to five minutes.

use std::collections::BTreeMap;
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
/// 2 MB (21 bytes a signature, measured with `bench/perf/replay-mem`), which
/// stays its peak while traffic churns through it.
pub struct MemoryReplayCache {
    capacity: usize,
    seen: Mutex<Seen>,
}

/// What the cache keeps of a signature: its first 8 bytes.
///
/// The cache only has to recognise a value it has seen. What it is given is
/// uniform and out of a client's reach: an HMAC tag that verified, or, as an
/// event route's dedupe cache, a SHA-256 digest of a verified request's
/// delivery id or signature. With 64 bits, a new value meets one of the
/// 100,000 a full cache holds with odds of 100,000 / 2^64, about 5 in 10^15:
/// at a thousand requests a second, once in some five thousand years. A
/// collision never lets a replay through; it refuses a genuine request as a
/// replay (`401`), or on an event route answers a new event as a duplicate
/// and drops it. The key is a quarter of the tag because the cache is mostly
/// keys and its table is read at random on every request: 8 bytes instead of
/// 16 halve the table (1 MiB for 100,000) and the bytes a probe run spans.
type Key = u64;

/// Marks a free slot of [`KeySet`].
const EMPTY: Key = 0;

fn key_of(signature: &[u8; 32]) -> Key {
    let mut prefix = [0; 8];
    prefix.copy_from_slice(&signature[..8]);
    // A prefix of zeros (odds 2^-64) would read as a free slot; it shares the
    // key of the prefix 01 00 .. 00 instead, one more collision of the kind
    // above.
    u64::from_le_bytes(prefix).max(1)
}

#[derive(Default)]
struct Seen {
    /// Answers "seen before?". No expiry stored here: the bucket a key sits in
    /// already says it, and a value would widen every slot of the table.
    keys: KeySet,
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
    /// The entry count last set on the gauge: a full cache whose entries are
    /// replaced rather than expired keeps its count, and is not set again.
    reported_entries: usize,
    entries_gauge: measure::ReplayEntriesGauge,
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
        if expires_at <= seen.forgotten_until || seen.keys.contains(key) {
            return false;
        }
        while seen.keys.len() >= self.capacity.max(1) {
            if !seen.forget_earliest() {
                break;
            }
        }
        seen.keys.insert(key);
        seen.file(expires_at, key);
        let entries = seen.keys.len();
        if entries != seen.reported_entries {
            seen.reported_entries = entries;
            seen.entries_gauge.set(entries);
        }
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
            for key in keys {
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
            self.keys.remove(key);
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

/// The set of [`Key`]s: one flat table of 8-byte slots, linear probing,
/// deletion by shifting the rest of the run back.
///
/// `std`'s `HashSet` adds a control byte per slot, and under this cache's churn
/// (every insert at capacity removes a key) its deleted-slot markers fill the
/// table until it rehashes into twice the slots: 262,144 of 9 bytes for
/// 100,000 keys, 2.25 MiB. Shifting back leaves no markers, so the table stays
/// at the first power of two that holds the capacity at most 4/5 full: for
/// 100,000, 131,072 slots of 8 bytes, 1 MiB.
///
/// The home slot is read from the key's own low bits. Keys are prefixes of
/// HMAC tags or digests, uniform and, without the secret, impossible to aim at one slot,
/// so a keyed hash would add only time, paid again for every key a deletion
/// shifts.
#[derive(Default)]
struct KeySet {
    /// `EMPTY` or a key; the length is zero or a power of two.
    slots: Vec<Key>,
    len: usize,
}

impl KeySet {
    fn len(&self) -> usize {
        self.len
    }

    /// The slot holding `key`, or the free slot ending its run.
    fn find(&self, key: Key) -> usize {
        let mask = self.slots.len() - 1;
        let mut slot = key as usize & mask;
        while self.slots[slot] != key && self.slots[slot] != EMPTY {
            slot = (slot + 1) & mask;
        }
        slot
    }

    fn contains(&self, key: Key) -> bool {
        !self.slots.is_empty() && self.slots[self.find(key)] == key
    }

    /// Adds `key`, which must not be there yet.
    fn insert(&mut self, key: Key) {
        // At most 4/5 full: linear probing's runs, and so the cost of a miss,
        // grow fast past that.
        if (self.len + 1) * 5 > self.slots.len() * 4 {
            self.grow();
        }
        let slot = self.find(key);
        debug_assert_eq!(self.slots[slot], EMPTY, "already there");
        self.slots[slot] = key;
        self.len += 1;
    }

    fn remove(&mut self, key: Key) {
        if self.slots.is_empty() {
            return;
        }
        let mask = self.slots.len() - 1;
        let mut hole = self.find(key);
        if self.slots[hole] != key {
            return;
        }
        // Every key further along the run whose probe passed the hole moves
        // into it, which opens a new hole where it was, until the run ends.
        let mut next = hole;
        loop {
            next = (next + 1) & mask;
            let moving = self.slots[next];
            if moving == EMPTY {
                break;
            }
            let home = moving as usize & mask;
            if next.wrapping_sub(home) & mask >= next.wrapping_sub(hole) & mask {
                self.slots[hole] = moving;
                hole = next;
            }
        }
        self.slots[hole] = EMPTY;
        self.len -= 1;
    }

    fn grow(&mut self) {
        let slots = (self.slots.len() * 2).max(16);
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; slots]);
        for key in old.into_iter().filter(|&key| key != EMPTY) {
            let slot = self.find(key);
            self.slots[slot] = key;
        }
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
        assert!(filed.iter().all(|&key| seen.keys.contains(key)));
        let stored = seen.keys.slots.iter().filter(|&&key| key != EMPTY).count();
        assert_eq!(stored, seen.keys.len());
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
    fn a_signature_is_known_by_its_first_eight_bytes() {
        let cache = MemoryReplayCache::new(10);
        let mut signature = [7; 32];
        assert!(cache.record(signature, 400, 100));
        signature[8..].fill(8);
        assert!(!cache.record(signature, 400, 100));
        signature[7] = 8;
        assert!(cache.record(signature, 400, 100));
    }

    /// A key whose home slot is `home` (in any table of more than `home` slots).
    fn key_at(home: u8, tag: u8) -> Key {
        ((u64::from(tag) + 1) << 32) | u64::from(home)
    }

    #[test]
    fn a_removal_shifts_back_what_probed_past_it_round_the_end() {
        let mut set = KeySet::default();
        // One run of 16 slots, wrapping round the end: 14 and 15 hold keys
        // at home; 0, 1 and 2 keys displaced from 14, 0 and 14.
        let keys = [
            key_at(14, 1),
            key_at(15, 1),
            key_at(14, 2),
            key_at(0, 1),
            key_at(14, 3),
        ];
        for key in keys {
            set.insert(key);
        }
        assert_eq!(set.slots.len(), 16);
        assert_eq!(&set.slots[14..], &[key_at(14, 1), key_at(15, 1)]);
        assert_eq!(
            &set.slots[..3],
            &[key_at(14, 2), key_at(0, 1), key_at(14, 3)]
        );
        set.remove(key_at(14, 1));
        set.remove(key_at(99, 9));
        assert_eq!(set.len(), 4);
        assert!(!set.contains(key_at(14, 1)));
        for key in &keys[1..] {
            assert!(set.contains(*key), "{key:x}");
        }
        // 15's probe never passed the hole, so it stays; the other three each
        // move one slot back, and the run ends a slot earlier.
        assert_eq!(&set.slots[14..], &[key_at(14, 2), key_at(15, 1)]);
        assert_eq!(&set.slots[..3], &[key_at(0, 1), key_at(14, 3), EMPTY]);
    }

    #[test]
    fn churn_at_a_steady_size_never_grows_the_table() {
        let mut set = KeySet::default();
        let key = |n: u64| {
            (n.wrapping_mul(0x9e37_79b9_7f4a_7c15) << 32) | ((n * 0x2545_f491) & 0xffff_ffff)
        };
        for n in 1..=1000 {
            set.insert(key(n));
        }
        assert_eq!(set.slots.len(), 2048);
        for n in 1001..=50_000 {
            set.remove(key(n - 1000));
            set.insert(key(n));
        }
        assert_eq!((set.len(), set.slots.len()), (1000, 2048));
        assert!((49_001..=50_000).all(|n| set.contains(key(n))));
        assert!(!(1..=49_000).any(|n| set.contains(key(n))));
    }

    proptest! {
        #[test]
        fn the_key_set_is_a_set(
            steps in proptest::collection::vec((any::<bool>(), 0..40u8, 0..4u8), 1..300),
        ) {
            let mut set = KeySet::default();
            let mut reference = std::collections::HashSet::new();
            for (add, home, tag) in steps {
                let key = key_at(home, tag);
                if add {
                    if reference.insert(key) {
                        set.insert(key);
                    }
                } else {
                    reference.remove(&key);
                    set.remove(key);
                }
                prop_assert_eq!(set.len(), reference.len());
                for home in 0..40 {
                    for tag in 0..4 {
                        let key = key_at(home, tag);
                        prop_assert_eq!(set.contains(key), reference.contains(&key));
                    }
                }
            }
        }
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
                        // Four home slots for all: long runs, wrapping
                        // round the end of the table.
                        let mut signature = [0; 32];
                        signature[0] = 12 + (n % 4) as u8;
                        signature[4..8].copy_from_slice(&(n as u32).to_le_bytes());
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
