//! Replay: a verified signature is accepted once. A signed request stays valid
//! for the whole replay window, so without this a captured request could be
//! sent again for up to five minutes.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::error::BoxError;

/// Remembers the signatures accepted inside the replay window.
///
/// The default, [`MemoryReplayCache`], serves one process. When several
/// instances run behind one Webhook URL, implement this over a shared store
/// (e.g. Redis `SET key NX EXAT expires_at`) so that a replay sent to another
/// instance is caught too.
///
/// Only requests with a valid signature reach the cache, so its size follows
/// genuine traffic, never an attacker's. The platform puts a microsecond
/// timestamp in every body, so two genuine requests never share a signature.
#[async_trait]
pub trait ReplayCache: std::fmt::Debug + Send + Sync + 'static {
    /// Records `signature` until `expires_at` (unix seconds). Returns
    /// `Ok(false)` when it is already recorded: the request is a replay.
    /// An `Err` is answered with 503, never by letting the request through.
    async fn first_seen(&self, signature: [u8; 32], expires_at: u64) -> Result<bool, BoxError>;
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
    /// Latest expiry among entries dropped to make room: requests expiring no
    /// later than this cannot be checked any more.
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

    /// [`ReplayCache::first_seen`] as if the clock read `now` (unix seconds).
    pub fn first_seen_at(
        &self,
        signature: [u8; 32],
        expires_at: u64,
        now: u64,
    ) -> Result<bool, BoxError> {
        // A poisoned lock only means another request panicked mid-insert; the
        // map and heap are still consistent enough to keep refusing replays.
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        seen.forget_expired(now);
        if expires_at <= seen.forgotten_until || seen.expiry_by_signature.contains_key(&signature) {
            return Ok(false);
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
        Ok(true)
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
    fn forget_expired(&mut self, now: u64) {
        while let Some(Reverse((expiry, signature))) = self.by_expiry.peek().copied() {
            if expiry > now {
                break;
            }
            self.by_expiry.pop();
            self.expiry_by_signature.remove(&signature);
        }
    }
}

#[async_trait]
impl ReplayCache for MemoryReplayCache {
    async fn first_seen(&self, signature: [u8; 32], expires_at: u64) -> Result<bool, BoxError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        self.first_seen_at(signature, expires_at, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_accepted_once_until_it_expires() {
        let cache = MemoryReplayCache::new(10);
        assert!(cache.first_seen_at([1; 32], 400, 100).expect("room"));
        assert!(!cache.first_seen_at([1; 32], 400, 399).expect("room"));
        assert!(cache.first_seen_at([2; 32], 400, 399).expect("room"));
        // Once expired, the window check rejects the old timestamp anyway, so
        // the entry can go.
        assert!(cache.first_seen_at([1; 32], 800, 400).expect("room"));
        assert_eq!(cache.len(), 1);
        assert_eq!(
            format!("{cache:?}"),
            "MemoryReplayCache { capacity: 10, len: 1 }"
        );
    }

    #[test]
    fn a_full_cache_forgets_the_oldest_and_refuses_anything_that_old() {
        let cache = MemoryReplayCache::new(2);
        assert!(cache.first_seen_at([1; 32], 400, 100).expect("room"));
        assert!(cache.first_seen_at([2; 32], 410, 110).expect("room"));
        // Full: [1] (expiring at 400) is forgotten to make room...
        assert!(cache.first_seen_at([3; 32], 420, 120).expect("room"));
        assert_eq!(cache.len(), 2);
        // ...so a replay of it is still refused, as is anything signed earlier.
        assert!(!cache.first_seen_at([1; 32], 400, 121).expect("answer"));
        assert!(!cache.first_seen_at([9; 32], 395, 121).expect("answer"));
        // Newer requests keep flowing.
        assert!(cache.first_seen_at([4; 32], 430, 130).expect("room"));
        assert!(!cache.first_seen_at([3; 32], 420, 131).expect("answer"));
    }
}
