//! The three counter cells and their maths, on an explicit clock.
//!
//! - [`GcraCell`]: smooth per-second QPS (GCRA, burst = one second's worth).
//! - [`WindowCell`]: fixed windows aligned to the Unix epoch (a `minute` window is
//!   `[hh:mm:00, hh:mm+1:00)`, a day is a UTC day). A client can therefore send up
//!   to twice the limit across a boundary; in exchange the count, the remaining and
//!   the reset time are exact, cheap (one CAS) and persistable.
//! - [`QuotaCell`]: a lifetime counter.
//!
//! Every acquisition returns a [`Usage`] (limit, remaining, reset) used for the
//! rate-limit headers, `Ok` when admitted and `Err` when refused. Admitted
//! acquisitions can be undone when a later policy refuses the same request, so a
//! refused request counts against nothing.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const NANOS: u64 = 1_000_000_000;

/// Nanoseconds since the Unix epoch. [`Timestamp::now`] is monotonic within a
/// process (a wall-clock anchor taken once plus a monotonic elapsed time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    pub const fn from_nanos(n: u64) -> Timestamp {
        Timestamp(n)
    }
    pub const fn from_secs(s: u64) -> Timestamp {
        Timestamp(s * NANOS)
    }
    pub const fn from_millis(ms: u64) -> Timestamp {
        Timestamp(ms * 1_000_000)
    }
    pub const fn as_nanos(self) -> u64 {
        self.0
    }
    /// Whole seconds since the epoch.
    pub const fn secs(self) -> u64 {
        self.0 / NANOS
    }
    pub fn plus(self, d: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(d.as_nanos().min(u64::MAX as u128) as u64),
        )
    }
    pub fn now() -> Timestamp {
        static ANCHOR: OnceLock<(Instant, u64)> = OnceLock::new();
        let (at, wall) = ANCHOR.get_or_init(|| {
            let wall = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            (Instant::now(), wall)
        });
        Timestamp(wall + at.elapsed().as_nanos() as u64)
    }
}

/// One policy's state after an acquisition, for the rate-limit headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Requests allowed per window (or lifetime, for a quota).
    pub limit: u64,
    /// Requests left in the current window after this one.
    pub remaining: u64,
    /// Seconds until the window resets (GCRA: until the burst is fully
    /// replenished); `None` for a lifetime quota.
    pub reset: Option<u64>,
    /// Window length in seconds; `None` for a lifetime quota.
    pub window: Option<u64>,
    /// On refusal: seconds until a retry can succeed (`None`: never, quota spent).
    pub retry_after: Option<u64>,
}

fn ceil_secs(ns: u64) -> u64 {
    ns.div_ceil(NANOS)
}

/// Rate of a GCRA cell: `qps` requests per second, burst `qps`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcraRate {
    pub qps: u64,
    interval: u64,
    tau: u64,
}

impl GcraRate {
    pub fn per_second(qps: u64) -> GcraRate {
        let qps = qps.max(1);
        let interval = (NANOS / qps).max(1);
        GcraRate {
            qps,
            interval,
            tau: interval.saturating_mul(qps),
        }
    }
}

/// Theoretical arrival time (ns since epoch) of the next request.
#[derive(Debug, Default)]
pub struct GcraCell {
    tat: AtomicU64,
}

impl GcraCell {
    pub fn acquire(&self, rate: &GcraRate, now: Timestamp) -> Result<Usage, Usage> {
        let now = now.0;
        let mut tat = self.tat.load(Relaxed);
        loop {
            let new = tat.max(now) + rate.interval;
            let ahead = new - now;
            if ahead > rate.tau {
                let wait = ahead - rate.tau;
                return Err(Usage {
                    limit: rate.qps,
                    remaining: 0,
                    reset: Some(ceil_secs(tat.max(now) - now)),
                    window: Some(1),
                    retry_after: Some(ceil_secs(wait).max(1)),
                });
            }
            match self.tat.compare_exchange_weak(tat, new, Relaxed, Relaxed) {
                Ok(_) => {
                    return Ok(Usage {
                        limit: rate.qps,
                        remaining: (rate.tau - ahead) / rate.interval,
                        reset: Some(ceil_secs(ahead)),
                        window: Some(1),
                        retry_after: None,
                    })
                }
                Err(t) => tat = t,
            }
        }
    }

    /// Gives back one emission interval (a later policy refused the request).
    pub fn undo(&self, rate: &GcraRate) {
        let _ = self
            .tat
            .fetch_update(Relaxed, Relaxed, |t| Some(t.saturating_sub(rate.interval)));
    }

    /// True when the cell is indistinguishable from a fresh one.
    pub fn idle(&self, now: Timestamp) -> bool {
        self.tat.load(Relaxed) <= now.0
    }
}

/// Geometry of a fixed window: its length in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub secs: u64,
}

impl Window {
    pub fn new(secs: u64) -> Window {
        Window { secs: secs.max(1) }
    }
    fn index(self, now: Timestamp) -> u32 {
        (now.secs() / self.secs) as u32
    }
    fn end_nanos(self, idx: u32) -> u64 {
        (idx as u64 + 1)
            .saturating_mul(self.secs)
            .saturating_mul(NANOS)
    }
    /// Windows of a minute or longer are persisted.
    pub fn persistent(self) -> bool {
        self.secs >= 60
    }
}

fn pack(idx: u32, count: u32) -> u64 {
    ((idx as u64) << 32) | count as u64
}
fn unpack(v: u64) -> (u32, u32) {
    ((v >> 32) as u32, v as u32)
}

/// `(window index, count)` packed in one atomic; counts saturate at `u32::MAX`,
/// so limits above that are effectively "count but never refuse".
#[derive(Debug, Default)]
pub struct WindowCell {
    state: AtomicU64,
    flushed: AtomicU64,
}

impl WindowCell {
    /// Admits when fewer than `limit` requests were counted in the current window.
    /// Returns the window index for [`WindowCell::undo`] inside the usage.
    pub fn acquire(&self, w: Window, limit: u64, now: Timestamp) -> Result<(Usage, u32), Usage> {
        let idx = w.index(now);
        let reset = ceil_secs(w.end_nanos(idx).saturating_sub(now.0));
        let mut cur = self.state.load(Relaxed);
        loop {
            let (i, c) = unpack(cur);
            let count = if i == idx { c } else { 0 };
            if count as u64 >= limit {
                return Err(Usage {
                    limit,
                    remaining: 0,
                    reset: Some(reset),
                    window: Some(w.secs),
                    retry_after: Some(reset.max(1)),
                });
            }
            let next = pack(idx, count.saturating_add(1));
            match self
                .state
                .compare_exchange_weak(cur, next, Relaxed, Relaxed)
            {
                Ok(_) => {
                    let usage = Usage {
                        limit,
                        remaining: limit - (count as u64 + 1),
                        reset: Some(reset),
                        window: Some(w.secs),
                        retry_after: None,
                    };
                    return Ok((usage, idx));
                }
                Err(v) => cur = v,
            }
        }
    }

    pub fn undo(&self, idx: u32) {
        let _ = self.state.fetch_update(Relaxed, Relaxed, |v| {
            let (i, c) = unpack(v);
            (i == idx && c > 0).then(|| pack(i, c - 1))
        });
    }

    /// Raises the count of the window holding `now` to at least `count` (cluster
    /// mode: the shared count seen in Redis), so that a fall-back to local
    /// counting continues from the last shared count rather than from zero.
    pub fn observe(&self, w: Window, now: Timestamp, count: u64) {
        let idx = w.index(now);
        let count = count.min(u32::MAX as u64) as u32;
        let _ = self.state.fetch_update(Relaxed, Relaxed, |v| {
            let (i, c) = unpack(v);
            match i.cmp(&idx) {
                std::cmp::Ordering::Less => Some(pack(idx, count)),
                std::cmp::Ordering::Equal if c < count => Some(pack(idx, count)),
                _ => None,
            }
        });
    }

    /// Count in the current window.
    pub fn count(&self, w: Window, now: Timestamp) -> u64 {
        let (i, c) = unpack(self.state.load(Relaxed));
        if i == w.index(now) {
            c as u64
        } else {
            0
        }
    }

    pub fn idle(&self, w: Window, now: Timestamp) -> bool {
        unpack(self.state.load(Relaxed)).0 < w.index(now)
    }

    /// `(window end in seconds, count)` when changed since the last flush.
    pub fn dirty(&self, w: Window) -> Option<(u64, u64, u64)> {
        let v = self.state.load(Relaxed);
        if v == self.flushed.load(Relaxed) {
            return None;
        }
        let (i, c) = unpack(v);
        Some(((i as u64 + 1) * w.secs, c as u64, v))
    }

    pub fn mark_flushed(&self, v: u64) {
        self.flushed.store(v, Relaxed);
    }

    /// A cell from a stored row, `None` when that window is over.
    pub fn restore(w: Window, window_end: u64, count: u64, now: Timestamp) -> Option<WindowCell> {
        if window_end <= now.secs() || !window_end.is_multiple_of(w.secs) {
            return None;
        }
        let idx = (window_end / w.secs - 1) as u32;
        let v = pack(idx, count.min(u32::MAX as u64) as u32);
        Some(WindowCell {
            state: AtomicU64::new(v),
            flushed: AtomicU64::new(v),
        })
    }
}

/// Lifetime count of requests.
#[derive(Debug, Default)]
pub struct QuotaCell {
    used: AtomicU64,
    flushed: AtomicU64,
}

impl QuotaCell {
    pub fn with_used(used: u64) -> QuotaCell {
        QuotaCell {
            used: AtomicU64::new(used),
            flushed: AtomicU64::new(used),
        }
    }

    pub fn acquire(&self, limit: u64) -> Result<Usage, Usage> {
        match self
            .used
            .fetch_update(Relaxed, Relaxed, |u| (u < limit).then_some(u + 1))
        {
            Ok(u) => Ok(Usage {
                limit,
                remaining: limit - u - 1,
                reset: None,
                window: None,
                retry_after: None,
            }),
            Err(_) => Err(Usage {
                limit,
                remaining: 0,
                reset: None,
                window: None,
                retry_after: None,
            }),
        }
    }

    /// Gives one request back (a later policy refused the same request).
    pub fn undo(&self) {
        let _ = self
            .used
            .fetch_update(Relaxed, Relaxed, |u| u.checked_sub(1));
    }

    pub fn used(&self) -> u64 {
        self.used.load(Relaxed)
    }

    /// Raises the count to at least `used` (cluster mode: the shared count seen
    /// in Redis), so that the local fall-back and the persisted row follow it.
    pub fn observe(&self, used: u64) {
        self.used.fetch_max(used, Relaxed);
    }

    pub fn dirty(&self) -> Option<u64> {
        let v = self.used.load(Relaxed);
        (v != self.flushed.load(Relaxed)).then_some(v)
    }

    pub fn mark_flushed(&self, v: u64) {
        self.flushed.store(v, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_ms(ms: u64) -> Timestamp {
        // an arbitrary epoch-aligned base: 2026-01-01T00:00:00Z
        Timestamp::from_millis(1_767_225_600_000 + ms)
    }

    #[test]
    fn gcra_burst_then_smooth() {
        let r = GcraRate::per_second(10);
        let c = GcraCell::default();
        for i in 0..10 {
            let u = c.acquire(&r, at_ms(0)).expect("burst");
            assert_eq!(u.remaining, 9 - i);
            assert_eq!(u.limit, 10);
        }
        let refused = c.acquire(&r, at_ms(0)).unwrap_err();
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.retry_after, Some(1));
        assert_eq!(refused.reset, Some(1));
        // one interval later exactly one more
        assert!(c.acquire(&r, at_ms(100)).is_ok());
        assert!(c.acquire(&r, at_ms(100)).is_err());
        // after a full second idle the whole burst is back
        assert!(c.idle(at_ms(1100)));
        let u = c.acquire(&r, at_ms(1100)).unwrap();
        assert_eq!(u.remaining, 9);
        assert_eq!(u.reset, Some(1));
    }

    #[test]
    fn gcra_undo_returns_capacity() {
        let r = GcraRate::per_second(2);
        let c = GcraCell::default();
        c.acquire(&r, at_ms(0)).unwrap();
        c.acquire(&r, at_ms(0)).unwrap();
        assert!(c.acquire(&r, at_ms(0)).is_err());
        c.undo(&r);
        assert_eq!(c.acquire(&r, at_ms(0)).unwrap().remaining, 0);
    }

    #[test]
    fn window_counts_and_resets_on_epoch_boundaries() {
        let w = Window::new(60);
        let c = WindowCell::default();
        // 45 s into a minute
        let t = at_ms(45_000);
        let (u, idx) = c.acquire(w, 3, t).unwrap();
        assert_eq!((u.remaining, u.reset, u.window), (2, Some(15), Some(60)));
        c.acquire(w, 3, t).unwrap();
        c.acquire(w, 3, at_ms(59_000)).unwrap();
        let e = c.acquire(w, 3, at_ms(59_500)).unwrap_err();
        assert_eq!((e.remaining, e.reset, e.retry_after), (0, Some(1), Some(1)));
        assert_eq!(c.count(w, t), 3);
        // the next minute starts fresh
        assert!(c.idle(w, at_ms(60_000)));
        let (u, _) = c.acquire(w, 3, at_ms(60_000)).unwrap();
        assert_eq!((u.remaining, u.reset), (2, Some(60)));
        // undo of a past window is a no-op, of the current one gives back
        c.undo(idx);
        assert_eq!(c.count(w, at_ms(60_000)), 1);
        let (_, idx2) = c.acquire(w, 3, at_ms(60_000)).unwrap();
        c.undo(idx2);
        assert_eq!(c.count(w, at_ms(60_000)), 1);
    }

    #[test]
    fn window_persist_roundtrip() {
        let w = Window::new(3600);
        let c = WindowCell::default();
        let t = at_ms(10_000);
        for _ in 0..5 {
            c.acquire(w, 100, t).unwrap();
        }
        let (end, count, mark) = c.dirty(w).unwrap();
        assert_eq!(count, 5);
        assert_eq!(end % 3600, 0);
        c.mark_flushed(mark);
        assert!(c.dirty(w).is_none());
        let r = WindowCell::restore(w, end, count, t).unwrap();
        assert_eq!(r.count(w, t), 5);
        assert!(WindowCell::restore(w, end, count, Timestamp::from_secs(end)).is_none());
    }

    #[test]
    fn quota_is_lifetime() {
        let q = QuotaCell::with_used(8);
        assert_eq!(q.acquire(10).unwrap().remaining, 1);
        assert_eq!(q.acquire(10).unwrap().remaining, 0);
        let e = q.acquire(10).unwrap_err();
        assert_eq!((e.remaining, e.reset, e.retry_after), (0, None, None));
        assert_eq!(q.used(), 10);
        assert_eq!(q.dirty(), Some(10));
        q.undo();
        assert_eq!(q.acquire(10).unwrap().remaining, 0);
        let fresh = QuotaCell::default();
        fresh.undo();
        assert_eq!(fresh.used(), 0, "never below zero");
    }

    #[test]
    fn now_is_monotonic_and_recent() {
        let a = Timestamp::now();
        let b = Timestamp::now();
        assert!(b >= a);
        assert!(a.secs() > 1_700_000_000);
    }
}
