//! Replay: a verified signature is accepted once. A signed request stays valid
//! for the whole replay window, so without this a captured request could be
//! sent again for up to five minutes.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
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
/// 10 MB.
pub struct MemoryReplayCache {
    capacity: usize,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    expiry_by_signature: HashMap<[u8; 32], u64>,
    by_expiry: BinaryHeap<Reverse<(u64, [u8; 32])>>,
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
        // A poisoned lock only means another request panicked mid-insert; the
        // map and heap are still consistent enough to keep refusing replays.
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        seen.forget_expired(now);
        if expires_at <= seen.forgotten_until || seen.expiry_by_signature.contains_key(&signature) {
            return false;
        }
        while seen.expiry_by_signature.len() >= self.capacity.max(1) {
            let Some(Reverse((expiry, oldest))) = seen.by_expiry.pop() else {
                break;
            };
            seen.expiry_by_signature.remove(&oldest);
            seen.forgotten_until = seen.forgotten_until.max(expiry);
        }
        seen.expiry_by_signature.insert(signature, expires_at);
        seen.by_expiry.push(Reverse((expires_at, signature)));
        measure::replay_cache_entries(seen.expiry_by_signature.len());
        true
    }

    /// How many signatures are remembered now.
    pub fn len(&self) -> usize {
        let seen = self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        seen.expiry_by_signature.len()
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
        while let Some(Reverse((expiry, signature))) = self.by_expiry.peek().copied() {
            if expiry >= now {
                break;
            }
            self.by_expiry.pop();
            self.expiry_by_signature.remove(&signature);
            self.forgotten_until = self.forgotten_until.max(expiry);
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
}
