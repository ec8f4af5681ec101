//! A circuit breaker in front of Redis, so that a dead or frozen Redis does not
//! add its timeout to every request.
//!
//! Closed: every call goes through; `THRESHOLD` consecutive failures open it.
//! Open: calls fail at once, without touching the network, until the backoff
//! has passed; then exactly one call (the probe) is let through and the next
//! probe is scheduled one backoff later, so a probe whose request was dropped
//! mid-flight cannot wedge the breaker. A success closes it.
//!
//! Two atomics, no lock: `open_until` is 0 while closed, otherwise the time
//! (ms on this breaker's own monotonic clock, never 0) before which calls are
//! refused.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Consecutive failures that open the breaker.
pub const THRESHOLD: u32 = 3;

/// A state change worth a log line and a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Opened,
    Closed,
}

#[derive(Debug)]
pub struct Breaker {
    failures: AtomicU32,
    open_until: AtomicU64,
    backoff: Duration,
    epoch: Instant,
}

impl Breaker {
    pub fn new(backoff: Duration) -> Breaker {
        Breaker {
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            backoff,
            epoch: Instant::now(),
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        // +1: 0 means "closed".
        at.saturating_duration_since(self.epoch).as_millis() as u64 + 1
    }

    fn backoff_ms(&self) -> u64 {
        self.backoff.as_millis().max(1) as u64
    }

    pub fn is_open(&self) -> bool {
        self.open_until.load(Relaxed) != 0
    }

    /// May a call go to Redis now?
    pub fn allow(&self, at: Instant) -> bool {
        let until = self.open_until.load(Relaxed);
        if until == 0 {
            return true;
        }
        let now = self.ms(at);
        if now < until {
            return false;
        }
        // The first caller past the deadline is the probe; the others wait for
        // its outcome or for the next deadline.
        self.open_until
            .compare_exchange(until, now + self.backoff_ms(), Relaxed, Relaxed)
            .is_ok()
    }

    pub fn success(&self) -> Option<Transition> {
        self.failures.store(0, Relaxed);
        (self.open_until.swap(0, Relaxed) != 0).then_some(Transition::Closed)
    }

    pub fn failure(&self, at: Instant) -> Option<Transition> {
        let n = self.failures.fetch_add(1, Relaxed).saturating_add(1);
        let until = self.ms(at) + self.backoff_ms();
        if self.is_open() {
            // A failed probe: wait a full backoff from now.
            self.open_until.store(until, Relaxed);
            return None;
        }
        (n >= THRESHOLD
            && self
                .open_until
                .compare_exchange(0, until, Relaxed, Relaxed)
                .is_ok())
        .then_some(Transition::Opened)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn opens_after_threshold_probes_after_backoff_closes_on_success() {
        let b = Breaker::new(1000 * MS);
        let t = Instant::now();
        assert!(b.allow(t));
        assert_eq!(b.failure(t), None);
        assert_eq!(b.failure(t), None);
        assert_eq!(b.failure(t), Some(Transition::Opened));
        assert!(b.is_open());
        assert!(!b.allow(t + 10 * MS));
        assert!(!b.allow(t + 999 * MS));
        // one probe after the backoff, not two
        assert!(b.allow(t + 1001 * MS));
        assert!(!b.allow(t + 1002 * MS));
        // failed probe: another full backoff
        assert_eq!(b.failure(t + 1050 * MS), None);
        assert!(!b.allow(t + 2000 * MS));
        assert!(b.allow(t + 2051 * MS));
        assert_eq!(b.success(), Some(Transition::Closed));
        assert!(b.allow(t + 2052 * MS));
        assert_eq!(b.success(), None);
    }

    #[test]
    fn a_lost_probe_does_not_wedge_it() {
        let b = Breaker::new(100 * MS);
        let t = Instant::now();
        for _ in 0..THRESHOLD {
            b.failure(t);
        }
        assert!(b.allow(t + 101 * MS));
        // the probe never reports back; a new one is allowed a backoff later
        assert!(!b.allow(t + 150 * MS));
        assert!(b.allow(t + 202 * MS));
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let b = Breaker::new(100 * MS);
        let t = Instant::now();
        b.failure(t);
        b.failure(t);
        b.success();
        assert_eq!(b.failure(t), None);
        assert!(!b.is_open());
    }
}
