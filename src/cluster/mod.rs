//! Cluster mode (SPEC §6, §7 `[cluster]`): several keygate instances share their
//! window counters, lifetime quotas and replay cache through one Redis.
//!
//! - One round trip per decision: every window and quota counter that applies to a
//!   request goes to [`LIMIT_SCRIPT`], which increments them all only when none is
//!   at its limit (a refused request counts against nothing, as in local mode).
//!   Windows are aligned on Redis's clock (`TIME`), so instances whose clocks
//!   drift still share one window. Per-second QPS stays local (GCRA) unless
//!   `shared_qps`, which makes it a one-second window in Redis.
//! - Replay cache: `SET key 1 NX PX ttl`, the key an HMAC (by the caller key's
//!   secret) of the key id and the signature or nonce, never the raw value.
//! - This module knows counters and keys, not policies: the limit executor
//!   (`policy::limits::exec`) hands it a request's [`SharedCounter`]s and the
//!   replay check (`auth::replay`) its key; both apply the [`OnError`] it
//!   returns when Redis cannot answer.
//! - Failure: every call has a short timeout (`[cluster] timeout`, 50 ms by
//!   default) and goes through a [`Breaker`]; a failed call is decided by
//!   `on_error` (`local`: this instance's own counters and replay cache, which
//!   mirror the last shared counts; `allow`: admitted uncounted; `deny`: 503).
//!   While the breaker is open no call waits on Redis at all; a probe every
//!   second closes it again when Redis answers. Transitions are logged and shown
//!   by `keygate_cluster_mode{mode}`.
//! - The connection is made in the background, so a dead Redis never delays
//!   startup. Three topologies ([`conn`]): one server (`redis`, `rediss://` for
//!   TLS), Redis Sentinel (`sentinels` + `master_name`; the connection follows
//!   the primary after a failover) and Redis Cluster (`nodes`).
//! - Redis Cluster: the counter keys of one decision must be in one hash slot
//!   for one script to touch them all. Counters are shared across requests of
//!   different shapes (an API's window by every caller, a key's plan quota by
//!   every API it calls), so any per-API or per-key tag would split some
//!   request's counters across slots; instead every counter key carries the
//!   hash tag `{PREFIX}` (one slot, one primary), which keeps each decision one
//!   atomic script exactly as with one server. Replay keys are single keys and
//!   carry no tag: they spread over all primaries.
//!
//! Limits of the design, stated: counts made while falling back are not pushed
//! to Redis afterwards; a call that timed out may still be applied by Redis once
//! it wakes up (at most a few requests counted twice); with Redis Cluster the
//! counters are served by the one primary that owns their slot (the window keys
//! are derived inside the script, within that slot).

pub mod breaker;
pub mod conn;

use crate::config::raw::RawCluster;
use crate::metrics::Metrics;
use breaker::{Breaker, Transition};
use conn::Store;
use redis::{RedisResult, Script};
use sha2::{Digest, Sha256};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Checks every counter, then increments them all, or none.
///
/// `KEYS[i]`: counter i (its window end is appended for a window);
/// `ARGV[2i-1]`: its limit; `ARGV[2i]`: its window in seconds, 0 for a lifetime
/// quota. Returns `{0, now_ms, count_1, …}` (counts after the increment) or
/// `{i, now_ms, count_i}` when counter i is at its limit.
pub const LIMIT_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now_s = tonumber(t[1])
local now_ms = now_s * 1000 + math.floor(tonumber(t[2]) / 1000)
local keys = {}
for i = 1, #KEYS do
  local w = tonumber(ARGV[2 * i])
  local k = KEYS[i]
  if w > 0 then
    k = k .. ':' .. string.format('%d', (math.floor(now_s / w) + 1) * w)
  end
  keys[i] = k
  local c = tonumber(redis.call('GET', k) or '0')
  if c >= tonumber(ARGV[2 * i - 1]) then
    return {i, now_ms, c}
  end
end
local out = {0, now_ms}
for i = 1, #KEYS do
  local c = redis.call('INCR', keys[i])
  local w = tonumber(ARGV[2 * i])
  if w > 0 and c == 1 then
    local end_ms = (math.floor(now_s / w) + 1) * w * 1000
    -- a second of slack: an instance may still read it right after the end
    redis.call('PEXPIRE', keys[i], end_ms - now_ms + 1000)
  end
  out[i + 2] = c
end
return out
"#;

/// Backoff of the breaker between probes of a Redis that failed.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// One counter of a shared decision: its key (without the cluster prefix; for a
/// window, without the window end that the script appends), its limit and its
/// window in seconds (`0`: a lifetime quota).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedCounter {
    pub key: String,
    pub limit: u64,
    pub window: u64,
}

/// What Redis decided for a list of [`SharedCounter`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedOutcome {
    /// Every counter was incremented; `counts[i]` is counter `i`'s count after it.
    /// `now_ms` is the store's clock (windows are aligned on it).
    Counted { now_ms: u64, counts: Vec<u64> },
    /// Counter `index` is at its limit (`count`); nothing was incremented.
    Refused {
        now_ms: u64,
        index: usize,
        count: u64,
    },
}

/// What a request is decided by when Redis cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    Local,
    Allow,
    Deny,
}

impl OnError {
    pub fn parse(s: &str) -> Option<OnError> {
        match s {
            "local" => Some(OnError::Local),
            "allow" => Some(OnError::Allow),
            "deny" => Some(OnError::Deny),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            OnError::Local => "local",
            OnError::Allow => "allow",
            OnError::Deny => "deny",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster.on_error: {0:?} is not one of local, allow, deny")]
    OnError(String),
    #[error("cluster: cannot start the Redis client: {0}")]
    Client(String),
}

#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("circuit open")]
    Open,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply: {0}")]
    Reply(String),
}

impl CallError {
    fn kind(&self) -> &'static str {
        match self {
            CallError::Open => "open",
            CallError::Timeout(_) => "timeout",
            CallError::Redis(_) => "error",
            CallError::Reply(_) => "reply",
        }
    }
}

pub use conn::check_url;

/// Identity of the cluster settings: a reload that changes it needs a restart.
pub fn fingerprint(raw: Option<&RawCluster>) -> String {
    match raw {
        None => String::new(),
        Some(c) => {
            let s = format!(
                "{:?}|{:?}|{:?}|{:?}|{}|{:?}|{:?}|{}|{:?}|{}|{}",
                c.redis,
                c.sentinels,
                c.master_name,
                c.nodes,
                c.tls,
                c.ca_file,
                c.password,
                c.on_error,
                c.timeout,
                c.shared_qps,
                c.prefix
            );
            hex::encode(Sha256::digest(s.as_bytes()))
        }
    }
}

/// The shared store: a Redis connection, its breaker and the failure policy.
pub struct Cluster {
    store: Store,
    /// Counter keys start with this: `PREFIX`, or `{PREFIX}` (one hash slot)
    /// with Redis Cluster.
    counter_prefix: String,
    limit_script: Script,
    timeout: Duration,
    on_error: OnError,
    shared_qps: bool,
    prefix: String,
    breaker: Breaker,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the URL: it may carry a password.
        f.debug_struct("Cluster")
            .field("on_error", &self.on_error)
            .field("timeout", &self.timeout)
            .field("shared_qps", &self.shared_qps)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Starts the client without waiting for Redis (the connection is made in the
    /// background on first use). `base_dir` is the config's directory (for
    /// `ca_file`). Must be called inside the Tokio runtime.
    pub fn start(
        raw: &RawCluster,
        base_dir: &std::path::Path,
        metrics: Arc<Metrics>,
    ) -> Result<Cluster, ClusterError> {
        let on_error = OnError::parse(&raw.on_error)
            .ok_or_else(|| ClusterError::OnError(raw.on_error.to_string()))?;
        let timeout = raw.timeout.max(Duration::from_millis(1));
        let store = Store::start(raw, base_dir, timeout).map_err(ClusterError::Client)?;
        let counter_prefix = if store.is_cluster() {
            format!("{{{}}}", raw.prefix)
        } else {
            raw.prefix.clone()
        };
        metrics.set_cluster_mode("shared");
        tracing::info!(
            topology = if store.is_cluster() {
                "cluster"
            } else if raw.sentinels.is_empty() {
                "single"
            } else {
                "sentinel"
            },
            on_error = on_error.name(),
            timeout_ms = raw.timeout.as_millis() as u64,
            shared_qps = raw.shared_qps,
            "cluster mode: window counters, quotas and the replay cache are shared through Redis"
        );
        Ok(Cluster {
            store,
            counter_prefix,
            limit_script: Script::new(LIMIT_SCRIPT),
            timeout,
            on_error,
            shared_qps: raw.shared_qps,
            prefix: raw.prefix.clone(),
            breaker: Breaker::new(PROBE_EVERY),
            metrics,
        })
    }

    pub fn on_error(&self) -> OnError {
        self.on_error
    }

    /// `shared`, or the `on_error` mode while the breaker is open.
    pub fn mode(&self) -> &'static str {
        if self.breaker.is_open() {
            self.on_error.name()
        } else {
            "shared"
        }
    }

    /// One Redis call through the breaker and the timeout. `make` builds the
    /// call only when it is allowed to go out.
    async fn call<T, F>(&self, make: impl FnOnce() -> F) -> Result<T, CallError>
    where
        F: Future<Output = Result<T, CallError>>,
    {
        if !self.breaker.allow(Instant::now()) {
            self.metrics.cluster_fallback();
            return Err(CallError::Open);
        }
        let result = match tokio::time::timeout(self.timeout, make()).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout(self.timeout)),
        };
        match &result {
            Ok(_) => {
                if let Some(t) = self.breaker.success() {
                    self.transition(t, None);
                }
            }
            Err(e) => {
                self.store.failed();
                self.metrics.cluster_error(e.kind());
                self.metrics.cluster_fallback();
                tracing::debug!(error = %e, "redis call failed");
                if let Some(t) = self.breaker.failure(Instant::now()) {
                    self.transition(t, Some(e));
                }
            }
        }
        result
    }

    fn transition(&self, t: Transition, error: Option<&CallError>) {
        match t {
            Transition::Opened => {
                let mode = self.on_error.name();
                self.metrics.set_cluster_mode(mode);
                let error = error.map(ToString::to_string).unwrap_or_default();
                tracing::warn!(
                    mode,
                    %error,
                    "redis unavailable: limits and replay checks fall back to on_error = {mode}"
                );
            }
            Transition::Closed => {
                self.metrics.set_cluster_mode("shared");
                tracing::info!(
                    mode = "shared",
                    "redis reachable again: shared counting resumed"
                );
            }
        }
    }

    /// Per-second QPS is shared too (`[cluster] shared_qps`).
    pub fn shared_qps(&self) -> bool {
        self.shared_qps
    }

    /// One atomic decision over `counters` ([`LIMIT_SCRIPT`]): all incremented,
    /// or none when one is at its limit. `Err`: Redis did not answer (or the
    /// breaker is open); the request is decided by the returned `on_error`.
    pub async fn count(&self, counters: &[SharedCounter]) -> Result<SharedOutcome, OnError> {
        let n = counters.len();
        self.call(|| self.limit_call(counters))
            .await
            .and_then(|reply| parse_limit_reply(&reply, n))
            .map_err(|_| self.on_error)
    }

    fn limit_call<'s>(
        &'s self,
        counters: &[SharedCounter],
    ) -> impl Future<Output = Result<Vec<i64>, CallError>> + Send + 's {
        let mut inv = self.limit_script.prepare_invoke();
        for c in counters {
            inv.key(format!("{}:{}", self.counter_prefix, c.key));
            inv.arg(c.limit);
            inv.arg(c.window);
        }
        async move {
            let mut conn = self.store.handle().await?;
            Ok(inv.invoke_async::<Vec<i64>>(&mut conn).await?)
        }
    }

    /// `SET PREFIX:key 1 NX PX ttl` (the replay cache, SPEC §8): `true` when the
    /// key was new. A single key with no hash tag, so such keys spread over all
    /// primaries of a Redis Cluster. `Err`: Redis did not answer; the request is
    /// decided by the returned `on_error`.
    pub async fn insert_once(&self, key: &str, ttl: Duration) -> Result<bool, OnError> {
        let key = format!("{}:{key}", self.prefix);
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.call(|| {
            let mut cmd = redis::cmd("SET");
            cmd.arg(key).arg(1).arg("NX").arg("PX").arg(ttl_ms);
            async move {
                let mut conn = self.store.handle().await?;
                let r: RedisResult<Option<String>> = cmd.query_async(&mut conn).await;
                Ok(r?.is_some())
            }
        })
        .await
        .map_err(|_| self.on_error)
    }
}

fn parse_limit_reply(reply: &[i64], n: usize) -> Result<SharedOutcome, CallError> {
    let bad = || CallError::Reply(format!("{} integers for {n} counters", reply.len()));
    let (&status, &now_ms) = match reply {
        [s, t, ..] => (s, t),
        _ => return Err(bad()),
    };
    let now_ms = u64::try_from(now_ms).map_err(|_| bad())?;
    let counts = &reply[2..];
    if status == 0 {
        if counts.len() != n {
            return Err(bad());
        }
        let counts = counts.iter().map(|&c| c.max(0) as u64).collect();
        return Ok(SharedOutcome::Counted { now_ms, counts });
    }
    match (usize::try_from(status), counts) {
        (Ok(i), [c]) if (1..=n).contains(&i) => Ok(SharedOutcome::Refused {
            now_ms,
            index: i - 1,
            count: (*c).max(0) as u64,
        }),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_replies_are_parsed_strictly() {
        assert_eq!(
            parse_limit_reply(&[0, 5000, 3, 7], 2).unwrap(),
            SharedOutcome::Counted {
                now_ms: 5000,
                counts: vec![3, 7]
            }
        );
        assert_eq!(
            parse_limit_reply(&[2, 5000, 100], 2).unwrap(),
            SharedOutcome::Refused {
                now_ms: 5000,
                index: 1,
                count: 100
            }
        );
        assert!(parse_limit_reply(&[0, 5000, 3], 2).is_err());
        assert!(parse_limit_reply(&[3, 5000, 1], 2).is_err());
        assert!(parse_limit_reply(&[-1, 5000, 1], 2).is_err());
        assert!(parse_limit_reply(&[0], 0).is_err());
    }
}
