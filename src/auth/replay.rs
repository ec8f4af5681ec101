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
//!
//! What is remembered is chosen by [`ReplayMode`] (`[auth] replay`): by default
//! only tokens the client meant to be unique (tc1's `Nonce`, a signed `hmac` nonce
//! header); in strict mode also every signature. Tokens are canonical: a nonce is
//! `n:` + its value, a signature `s:` + the hex of its decoded MAC bytes, so that
//! no re-encoding of a captured signature (padding, hex case) is a new token.
//!
//! `ReplayCache::check` (in `replay/check.rs`) is the one call for both modes: in cluster
//! mode the token goes to Redis (`SET NX PX`, see `crate::cluster`) under an HMAC
//! of it, and this cache is the `on_error = local` fall-back (it mirrors what
//! Redis accepted).

mod check;

use super::AuthError;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Which requests the replay cache refuses (`[auth] replay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplayMode {
    /// No replay check.
    Off,
    /// Refuse a nonce seen again (tc1 `Nonce`, a signed `hmac` nonce header);
    /// signatures without a nonce are not remembered, so identical calls made
    /// in the same second (one-second timestamps) both pass.
    #[default]
    Nonce,
    /// Also refuse any signature (hmac, tc3) seen again inside its window.
    Strict,
}

impl ReplayMode {
    /// Parses `off`, `nonce`, `strict` (and `true` = `nonce`, `false` = `off`).
    pub fn from_name(name: &str) -> Option<ReplayMode> {
        match name.trim().to_ascii_lowercase().as_str() {
            "off" | "false" => Some(ReplayMode::Off),
            "nonce" | "true" => Some(ReplayMode::Nonce),
            "strict" => Some(ReplayMode::Strict),
            _ => None,
        }
    }

    /// True when a token of `kind` is checked in this mode.
    pub fn checks(self, kind: TokenKind) -> bool {
        match (self, kind) {
            (ReplayMode::Off, _) => false,
            (ReplayMode::Nonce, TokenKind::Nonce) => true,
            (ReplayMode::Nonce, TokenKind::Signature) => false,
            (ReplayMode::Strict, _) => true,
        }
    }
}

/// `[auth] replay`: a bool (the SPEC §7 form; `true` = `"nonce"`) or one of
/// `"off"`, `"nonce"`, `"strict"`.
pub fn de_replay_mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ReplayMode, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bool(bool),
        Text(String),
    }
    match <Raw as serde::Deserialize>::deserialize(d)? {
        Raw::Bool(true) => Ok(ReplayMode::Nonce),
        Raw::Bool(false) => Ok(ReplayMode::Off),
        Raw::Text(t) => ReplayMode::from_name(&t).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "replay = {t:?}: expected \"off\", \"nonce\", \"strict\", true or false"
            ))
        }),
    }
}

/// What a replay token stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A value the client meant to be unique.
    Nonce,
    /// The request's MAC: two identical requests in one second share it.
    Signature,
}

/// The replay identity of a verified request, and how long to remember it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayToken {
    pub kind: TokenKind,
    /// `n:<nonce>` (`N:<hex>` when not UTF-8) or `s:<hex of the decoded MAC>`;
    /// keyed with the key id by the cache.
    pub token: String,
    pub ttl: Duration,
}

impl ReplayToken {
    /// From a nonce's bytes: `n:<text>`, or `N:<hex>` when they are not UTF-8
    /// (a lossy conversion would make distinct nonces one identity).
    pub fn nonce(value: &[u8], ttl: Duration) -> ReplayToken {
        let mut token = String::with_capacity(2 + 2 * value.len());
        match std::str::from_utf8(value) {
            Ok(text) => {
                token.push_str("n:");
                token.push_str(text);
            }
            Err(_) => {
                token.push_str("N:");
                token.push_str(&hex::encode(value));
            }
        }
        ReplayToken {
            kind: TokenKind::Nonce,
            token,
            ttl,
        }
    }

    /// From the decoded MAC bytes (never from their text encoding).
    pub fn signature(mac: &[u8], ttl: Duration) -> ReplayToken {
        // hex::encode goes through `char`s: several times the cost per byte.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut bytes = Vec::with_capacity(2 + 2 * mac.len());
        bytes.extend_from_slice(b"s:");
        for &b in mac {
            bytes.push(HEX[usize::from(b >> 4)]);
            bytes.push(HEX[usize::from(b & 0xf)]);
        }
        // ASCII by construction.
        let token = String::from_utf8(bytes).unwrap_or_default();
        ReplayToken {
            kind: TokenKind::Signature,
            token,
            ttl,
        }
    }
}

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
    fn modes_parse_from_bool_and_text() {
        #[derive(serde::Deserialize)]
        struct T {
            #[serde(deserialize_with = "de_replay_mode")]
            replay: ReplayMode,
        }
        let parse = |s: &str| toml::from_str::<T>(s).map(|t| t.replay);
        assert_eq!(parse("replay = true").unwrap(), ReplayMode::Nonce);
        assert_eq!(parse("replay = false").unwrap(), ReplayMode::Off);
        assert_eq!(parse("replay = \"off\"").unwrap(), ReplayMode::Off);
        assert_eq!(parse("replay = \"nonce\"").unwrap(), ReplayMode::Nonce);
        assert_eq!(parse("replay = \"Strict\"").unwrap(), ReplayMode::Strict);
        let e = parse("replay = \"always\"").unwrap_err().to_string();
        assert!(e.contains("strict"), "{e}");
        assert!(parse("replay = 1").is_err());
    }

    #[test]
    fn modes_check_kinds() {
        use TokenKind::*;
        assert!(!ReplayMode::Off.checks(Nonce) && !ReplayMode::Off.checks(Signature));
        assert!(ReplayMode::Nonce.checks(Nonce) && !ReplayMode::Nonce.checks(Signature));
        assert!(ReplayMode::Strict.checks(Nonce) && ReplayMode::Strict.checks(Signature));
    }

    #[test]
    fn tokens_are_canonical_and_namespaced() {
        let a = ReplayToken::signature(&[0xab, 0x01], S);
        assert_eq!(a.token, "s:ab01");
        assert_eq!(a.kind, TokenKind::Signature);
        let n = ReplayToken::nonce(b"s:ab01", S);
        assert_eq!(n.token, "n:s:ab01");
        assert_ne!(
            ReplayToken::nonce(b"\xff", S).token,
            ReplayToken::nonce(b"\xfe", S).token
        );
        let c = ReplayCache::new(10);
        let t = Instant::now();
        c.check_and_insert("k", &a.token, S, t).unwrap();
        c.check_and_insert("k", &n.token, S, t).unwrap();
    }

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
