//! Replay cache shared by the signature schemes (SPEC §8).
//!
//! Remembers a keyed 64-bit hash of `(key id, token)` — never the raw signature
//! or nonce — until its time to live has passed. When full of live entries it
//! refuses new ones (`ReplayCacheFull`) instead of evicting: evicting a live entry
//! would reopen the door to a replay of it.
//!
//! Sharded by hash (up to 64 mutex-protected shards). Inside a shard, entries are
//! kept in a hash map plus one FIFO per distinct TTL; since `now` only moves
//! forward, each FIFO is ordered by expiry and pruning pops expired entries from
//! its front: amortised O(1) per insertion, each entry removed once.

use super::AuthError;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Map keys are already uniformly random (keyed SipHash), so hash them as-is.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Ms = u64;

#[derive(Default)]
struct Shard {
    /// hash -> expiry (ms since the cache's epoch)
    live: HashMap<u64, Ms, BuildHasherDefault<IdentityHasher>>,
    /// One FIFO of (expiry, hash) per distinct TTL (ms).
    queues: Vec<(Ms, VecDeque<(Ms, u64)>)>,
}

impl Shard {
    fn prune(&mut self, now: Ms) {
        for (_, q) in &mut self.queues {
            while let Some(&(exp, h)) = q.front() {
                if exp > now {
                    break;
                }
                q.pop_front();
                // The hash may have been re-inserted later with a later expiry.
                if self.live.get(&h) == Some(&exp) {
                    self.live.remove(&h);
                }
            }
        }
        self.queues.retain(|(_, q)| !q.is_empty());
    }

    fn insert(&mut self, h: u64, ttl: Ms, exp: Ms) {
        self.live.insert(h, exp);
        match self.queues.iter_mut().find(|(t, _)| *t == ttl) {
            Some((_, q)) => q.push_back((exp, h)),
            None => self.queues.push((ttl, VecDeque::from([(exp, h)]))),
        }
    }
}

/// A bounded, sharded set of recently seen signed requests.
pub struct ReplayCache {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    hasher: RandomState,
    epoch: Instant,
}

impl std::fmt::Debug for ReplayCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayCache")
            .field("shards", &self.shards.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl ReplayCache {
    /// A cache holding at most `capacity` live entries (at least 1). Small caches
    /// use a single shard so that the capacity is exact; large ones up to 64.
    pub fn new(capacity: usize) -> ReplayCache {
        let capacity = capacity.max(1);
        let mut shards = 1usize;
        while shards < 64 && capacity / (shards * 2) >= 4096 {
            shards *= 2;
        }
        ReplayCache {
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: capacity.div_ceil(shards),
            hasher: RandomState::new(),
            // Slightly in the past so that `now` values from just before creation work.
            epoch: Instant::now()
                .checked_sub(Duration::from_secs(1))
                .unwrap_or_else(Instant::now),
        }
    }

    pub fn capacity(&self) -> usize {
        self.per_shard * self.shards.len()
    }

    /// Number of entries held (live or not yet pruned).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).live.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn hash(&self, key_id: &str, token: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write_usize(key_id.len());
        h.write(key_id.as_bytes());
        h.write(token.as_bytes());
        h.finish()
    }

    fn ms(&self, t: Instant) -> Ms {
        t.saturating_duration_since(self.epoch).as_millis() as Ms
    }

    /// Records `(key_id, token)` for `ttl`. `Replay` when it was already seen
    /// and is still live; `ReplayCacheFull` when no room is left for it.
    pub fn check_and_insert(
        &self,
        key_id: &str,
        token: &str,
        ttl: Duration,
        now: Instant,
    ) -> Result<(), AuthError> {
        let h = self.hash(key_id, token);
        let now = self.ms(now);
        let ttl_ms = ttl.as_millis().min(u128::from(u32::MAX)) as Ms;
        let shard = &self.shards[(h >> 32) as usize % self.shards.len()];
        let mut shard = lock(shard);
        shard.prune(now);
        if shard.live.get(&h).is_some_and(|&exp| exp > now) {
            return Err(AuthError::Replay);
        }
        if shard.live.len() >= self.per_shard {
            return Err(AuthError::ReplayCacheFull);
        }
        shard.insert(h, ttl_ms, now.saturating_add(ttl_ms));
        Ok(())
    }

    /// Drops expired entries everywhere (for a periodic background task; the
    /// cache also prunes a shard on every insertion into it).
    pub fn prune(&self, now: Instant) {
        let now = self.ms(now);
        for s in self.shards.iter() {
            lock(s).prune(now);
        }
    }
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A panic while holding the lock cannot leave the shard inconsistent in a
    // way that matters here; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn replay_is_refused_while_live() {
        let c = ReplayCache::new(10);
        let t = Instant::now();
        c.check_and_insert("k", "sig", 10 * S, t).unwrap();
        assert_eq!(
            c.check_and_insert("k", "sig", 10 * S, t + 9 * S),
            Err(AuthError::Replay)
        );
        // other key, same token: not a replay
        c.check_and_insert("k2", "sig", 10 * S, t).unwrap();
        // key/token boundary is unambiguous
        c.check_and_insert("ks", "ig", 10 * S, t).unwrap();
        // expired: accepted again
        c.check_and_insert("k", "sig", 10 * S, t + 10 * S).unwrap();
        assert_eq!(
            c.check_and_insert("k", "sig", 10 * S, t + 11 * S),
            Err(AuthError::Replay)
        );
    }

    #[test]
    fn full_of_live_entries_refuses_and_never_evicts() {
        let c = ReplayCache::new(3);
        let t = Instant::now();
        for i in 0..3 {
            c.check_and_insert("k", &i.to_string(), 10 * S, t).unwrap();
        }
        assert_eq!(
            c.check_and_insert("k", "x", 10 * S, t),
            Err(AuthError::ReplayCacheFull)
        );
        // the live ones are still remembered
        assert_eq!(
            c.check_and_insert("k", "0", 10 * S, t),
            Err(AuthError::Replay)
        );
        // once they expire there is room again
        c.check_and_insert("k", "x", 10 * S, t + 10 * S).unwrap();
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn mixed_ttls_are_pruned() {
        let c = ReplayCache::new(2);
        let t = Instant::now();
        c.check_and_insert("k", "long", 100 * S, t).unwrap();
        c.check_and_insert("k", "short", S, t).unwrap();
        assert_eq!(
            c.check_and_insert("k", "x", S, t),
            Err(AuthError::ReplayCacheFull)
        );
        c.check_and_insert("k", "x", S, t + 2 * S).unwrap();
        c.prune(t + 200 * S);
        assert!(c.is_empty());
    }

    #[test]
    fn large_caches_are_sharded_and_concurrent() {
        let c = Arc::new(ReplayCache::new(1_000_000));
        assert_eq!(c.shards.len(), 64);
        assert!(c.capacity() >= 1_000_000);
        let t = Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|n| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        c.check_and_insert("k", &format!("{n}-{i}"), 60 * S, t)
                            .unwrap();
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        assert_eq!(c.len(), 8000);
        assert_eq!(
            c.check_and_insert("k", "3-1999", 60 * S, t),
            Err(AuthError::Replay)
        );
    }
}
