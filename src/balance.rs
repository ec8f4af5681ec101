//! Weighted round robin over the targets of one upstream, with passive ejection.
//!
//! The order is nginx's smooth weighted round robin, computed once when the balancer
//! is built (weights 5:1:1 give `a a b a c a a`); `pick` is one atomic increment plus
//! one atomic load on the hot path, no lock. Targets reported as failing `max_fails`
//! times in a row are skipped for `fail_timeout`. Once that time is over a target is
//! tried again and a single further failure ejects it again (half-open), while one
//! success resets its count. When every target is ejected, the one whose ejection ends
//! first is returned: trying a probably-broken target beats failing for sure.
//!
//! Active health checks (src/health.rs) mark targets down and up again; a target
//! that is down is skipped like an ejected one. A retry asks for a target other
//! than the ones already tried ([`Balancer::pick_except`]).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Longest precomputed schedule; larger weight sums are scaled down to fit.
const MAX_SCHEDULE: u64 = 1 << 14;

pub struct Balancer<T> {
    targets: Vec<Target<T>>,
    /// Target indices in smooth weighted round-robin order.
    schedule: Box<[u32]>,
    cursor: AtomicUsize,
    max_fails: u32,
    fail_timeout: Duration,
    /// Origin of the nanosecond clock stored in the atomics.
    epoch: Instant,
}

struct Target<T> {
    value: T,
    weight: u32,
    /// Consecutive failures.
    fails: AtomicU32,
    /// Ejected while `now < ejected_until` (nanoseconds since `epoch`; 0 = never).
    ejected_until: AtomicU64,
    /// Up according to the active health check (always true without one).
    healthy: AtomicBool,
}

impl<T: fmt::Debug> fmt::Debug for Balancer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let targets: Vec<_> = self.targets.iter().map(|t| (&t.value, t.weight)).collect();
        f.debug_struct("Balancer")
            .field("targets", &targets)
            .field("max_fails", &self.max_fails)
            .field("fail_timeout", &self.fail_timeout)
            .finish_non_exhaustive()
    }
}

impl<T> Balancer<T> {
    /// `targets` with their weights (0 is taken as 1). `max_fails = 0` disables
    /// ejection.
    pub fn new(targets: Vec<(T, u32)>, max_fails: u32, fail_timeout: Duration) -> Self {
        let weights: Vec<u32> = targets.iter().map(|(_, w)| (*w).max(1)).collect();
        let schedule = smooth_schedule(&weights).into_boxed_slice();
        let now = Instant::now();
        // An origin in the past, so that instants taken just before `new` still count.
        let epoch = [86_400, 3_600, 60, 1]
            .iter()
            .find_map(|&s| now.checked_sub(Duration::from_secs(s)))
            .unwrap_or(now);
        Balancer {
            targets: targets
                .into_iter()
                .zip(weights)
                .map(|((value, _), weight)| Target {
                    value,
                    weight,
                    fails: AtomicU32::new(0),
                    ejected_until: AtomicU64::new(0),
                    healthy: AtomicBool::new(true),
                })
                .collect(),
            schedule,
            cursor: AtomicUsize::new(0),
            max_fails,
            fail_timeout,
            epoch,
        }
    }

    /// The next target, skipping ejected ones; `None` only when there is no target.
    pub fn pick(&self, now: Instant) -> Option<(usize, &T)> {
        self.pick_except(now, &[])
    }

    /// The next target that is not in `tried`, skipping ejected and unhealthy
    /// ones. When every untried target is out, the one whose ejection ends first
    /// (a healthy one before an unhealthy one) is returned; `None` only when
    /// every target was tried.
    pub fn pick_except(&self, now: Instant, tried: &[usize]) -> Option<(usize, &T)> {
        let n = self.targets.len();
        let fresh = |i: usize| !tried.contains(&i);
        if n <= 1 {
            return self
                .targets
                .first()
                .filter(|_| fresh(0))
                .map(|t| (0, &t.value));
        }
        let start = self.cursor.fetch_add(1, Relaxed);
        let len = self.schedule.len();
        let t = self.nanos(now);
        let up = |i: usize| fresh(i) && self.targets[i].is_up(t);
        if let Some(i) = (0..len)
            .map(|k| self.schedule[(start + k) % len] as usize)
            .find(|&i| up(i))
        {
            return Some((i, &self.targets[i].value));
        }
        self.targets
            .iter()
            .enumerate()
            .filter(|(i, _)| fresh(*i))
            .min_by_key(|(_, x)| (!x.healthy.load(Relaxed), x.ejected_until.load(Relaxed)))
            .map(|(i, x)| (i, &x.value))
    }

    /// The active health check's verdict on target `idx`. Coming back up also
    /// ends a passive ejection: the probe has just seen the target answer.
    pub fn set_healthy(&self, idx: usize, healthy: bool) {
        let Some(target) = self.targets.get(idx) else {
            return;
        };
        target.healthy.store(healthy, Relaxed);
        if healthy {
            target.fails.store(0, Relaxed);
            target.ejected_until.store(0, Relaxed);
        }
    }

    /// Whether target `idx` is up according to the active health check.
    pub fn is_healthy(&self, idx: usize) -> bool {
        self.targets
            .get(idx)
            .is_some_and(|t| t.healthy.load(Relaxed))
    }

    /// Records the outcome of a request sent to target `idx`.
    pub fn report(&self, idx: usize, ok: bool, now: Instant) {
        let Some(target) = self.targets.get(idx) else {
            return;
        };
        if ok {
            if target.fails.load(Relaxed) != 0 {
                target.fails.store(0, Relaxed);
            }
            return;
        }
        if self.max_fails == 0 {
            return;
        }
        let fails = target
            .fails
            .fetch_update(Relaxed, Relaxed, |f| Some(f.saturating_add(1)))
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        let t = self.nanos(now);
        if fails >= self.max_fails && !target.is_ejected(t) {
            let timeout = u64::try_from(self.fail_timeout.as_nanos()).unwrap_or(u64::MAX);
            target
                .ejected_until
                .store(t.saturating_add(timeout).max(1), Relaxed);
        }
    }

    /// Whether target `idx` is ejected at `now`.
    pub fn is_ejected(&self, idx: usize, now: Instant) -> bool {
        self.targets
            .get(idx)
            .is_some_and(|t| t.is_ejected(self.nanos(now)))
    }

    /// Target `idx`.
    pub fn get(&self, idx: usize) -> Option<&T> {
        self.targets.get(idx).map(|t| &t.value)
    }

    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The targets with their (effective) weights.
    pub fn targets(&self) -> impl Iterator<Item = (&T, u32)> {
        self.targets.iter().map(|t| (&t.value, t.weight))
    }

    fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }
}

impl<T> Target<T> {
    #[inline]
    fn is_ejected(&self, now_nanos: u64) -> bool {
        now_nanos < self.ejected_until.load(Relaxed)
    }

    #[inline]
    fn is_up(&self, now_nanos: u64) -> bool {
        !self.is_ejected(now_nanos) && self.healthy.load(Relaxed)
    }
}

/// nginx's smooth weighted round robin, unrolled over one period (weights reduced by
/// their gcd, and scaled down when the period would exceed [`MAX_SCHEDULE`]).
fn smooth_schedule(weights: &[u32]) -> Vec<u32> {
    if weights.is_empty() {
        return vec![0];
    }
    let g = weights.iter().fold(0u64, |g, &w| gcd(g, u64::from(w)));
    let mut w: Vec<u64> = weights.iter().map(|&x| u64::from(x) / g).collect();
    let sum: u64 = w.iter().sum();
    if sum > MAX_SCHEDULE {
        for x in &mut w {
            *x = (*x * MAX_SCHEDULE / sum).max(1);
        }
    }
    let total: u64 = w.iter().sum();
    let total_i = i64::try_from(total).expect("bounded schedule");
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(usize::try_from(total).expect("bounded schedule"));
    for _ in 0..total {
        for (c, &wi) in current.iter_mut().zip(&w) {
            *c += i64::try_from(wi).expect("bounded weight");
        }
        let best = argmax(&current);
        current[best] -= total_i;
        out.push(u32::try_from(best).expect("fewer than 2^32 targets"));
    }
    out
}

/// First index of the largest value.
fn argmax(v: &[i64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(b: &Balancer<&str>, picks: usize, now: Instant) -> Vec<usize> {
        let mut c = vec![0; b.len()];
        for _ in 0..picks {
            c[b.pick(now).unwrap().0] += 1;
        }
        c
    }

    fn order(b: &Balancer<&str>, picks: usize, now: Instant) -> String {
        (0..picks).map(|_| *b.pick(now).unwrap().1).collect()
    }

    #[test]
    fn weights_are_respected_exactly_over_a_period() {
        let now = Instant::now();
        let b = Balancer::new(vec![("a", 3), ("b", 1)], 1, Duration::from_secs(10));
        assert_eq!(counts(&b, 400, now), vec![300, 100]);
        let b = Balancer::new(
            vec![("a", 1), ("b", 1), ("c", 1)],
            1,
            Duration::from_secs(10),
        );
        assert_eq!(counts(&b, 300, now), vec![100, 100, 100]);
        let b = Balancer::new(vec![("a", 0), ("b", 2)], 1, Duration::from_secs(10));
        assert_eq!(counts(&b, 300, now), vec![100, 200]);
    }

    #[test]
    fn order_is_smooth() {
        let now = Instant::now();
        let b = Balancer::new(
            vec![("a", 5), ("b", 1), ("c", 1)],
            1,
            Duration::from_secs(1),
        );
        assert_eq!(order(&b, 14, now), "aabacaaaabacaa");
        let b = Balancer::new(vec![("a", 3), ("b", 1)], 1, Duration::from_secs(1));
        assert_eq!(order(&b, 8, now), "aabaaaba");
    }

    #[test]
    fn huge_weights_are_scaled_not_unrolled() {
        let now = Instant::now();
        let b = Balancer::new(
            vec![("a", 3_000_001), ("b", 1_000_000)],
            1,
            Duration::from_secs(1),
        );
        assert!(b.schedule.len() as u64 <= MAX_SCHEDULE + 2);
        let c = counts(&b, 40_000, now);
        assert!((29_000..=31_000).contains(&c[0]), "{c:?}");
    }

    #[test]
    fn failures_eject_for_the_timeout_then_recover() {
        let t0 = Instant::now();
        let ft = Duration::from_secs(10);
        let b = Balancer::new(vec![("a", 1), ("b", 1)], 2, ft);
        b.report(0, false, t0);
        assert!(!b.is_ejected(0, t0), "one failure is below max_fails");
        b.report(0, false, t0);
        assert!(b.is_ejected(0, t0));
        assert_eq!(counts(&b, 50, t0), vec![0, 50]);
        let later = t0 + Duration::from_secs(5);
        assert_eq!(counts(&b, 10, later), vec![0, 10]);
        // The ejection ends after fail_timeout.
        let after = t0 + ft;
        assert!(!b.is_ejected(0, after));
        assert_eq!(counts(&b, 10, after), vec![5, 5]);
        // Half-open: one more failure ejects it again...
        b.report(0, false, after);
        assert!(b.is_ejected(0, after + Duration::from_secs(9)));
        assert!(!b.is_ejected(0, after + ft));
        // ...while a success resets the count.
        b.report(0, true, after + ft);
        b.report(0, false, after + ft);
        assert!(!b.is_ejected(0, after + ft));
    }

    #[test]
    fn success_resets_consecutive_failures() {
        let t0 = Instant::now();
        let b = Balancer::new(vec![("a", 1), ("b", 1)], 3, Duration::from_secs(1));
        for _ in 0..5 {
            b.report(1, false, t0);
            b.report(1, false, t0);
            b.report(1, true, t0);
        }
        assert!(!b.is_ejected(1, t0));
        b.report(1, false, t0);
        b.report(1, false, t0);
        b.report(1, false, t0);
        assert!(b.is_ejected(1, t0));
    }

    #[test]
    fn all_ejected_returns_the_one_recovering_first() {
        let t0 = Instant::now();
        let b = Balancer::new(
            vec![("a", 1), ("b", 1), ("c", 1)],
            1,
            Duration::from_secs(10),
        );
        b.report(1, false, t0);
        b.report(0, false, t0 + Duration::from_secs(1));
        b.report(2, false, t0 + Duration::from_secs(2));
        let now = t0 + Duration::from_secs(3);
        for _ in 0..5 {
            assert_eq!(b.pick(now), Some((1, &"b")));
        }
        // b recovers first; then it is the only one picked.
        assert_eq!(counts(&b, 6, t0 + Duration::from_secs(10)), vec![0, 6, 0]);
    }

    #[test]
    fn weighted_choice_among_remaining_targets() {
        let t0 = Instant::now();
        let b = Balancer::new(
            vec![("a", 1), ("b", 3), ("c", 1)],
            1,
            Duration::from_secs(10),
        );
        b.report(0, false, t0);
        let c = counts(&b, 500, t0);
        assert_eq!(c[0], 0);
        assert_eq!(c[1] + c[2], 500);
        assert!(c[1] >= 3 * c[2] - 10, "{c:?}");
    }

    #[test]
    fn retries_skip_tried_and_unhealthy_targets() {
        let t0 = Instant::now();
        let b = Balancer::new(
            vec![("a", 1), ("b", 1), ("c", 1)],
            1,
            Duration::from_secs(10),
        );
        for _ in 0..10 {
            let (i, _) = b.pick_except(t0, &[0, 2]).unwrap();
            assert_eq!(i, 1);
        }
        assert_eq!(b.pick_except(t0, &[0, 1, 2]), None);
        b.set_healthy(1, false);
        assert!(!b.is_healthy(1));
        let c = counts(&b, 40, t0);
        assert_eq!((c[1], c[0] + c[2]), (0, 40), "{c:?}");
        // Only the unhealthy one is left untried: it is still tried.
        assert_eq!(b.pick_except(t0, &[0, 2]), Some((1, &"b")));
        // An ejected target beats an unhealthy one when all are out.
        b.report(0, false, t0);
        b.set_healthy(2, false);
        assert_eq!(b.pick(t0).map(|p| p.0), Some(0));
        // Coming back up ends a passive ejection too.
        b.set_healthy(0, true);
        assert!(!b.is_ejected(0, t0));
        let one = Balancer::new(vec![("only", 1)], 1, Duration::from_secs(1));
        assert_eq!(one.pick_except(t0, &[0]), None);
    }

    #[test]
    fn edge_cases() {
        let t0 = Instant::now();
        let empty: Balancer<&str> = Balancer::new(vec![], 1, Duration::from_secs(1));
        assert_eq!(empty.pick(t0), None);
        assert!(empty.is_empty());
        let one = Balancer::new(vec![("only", 5)], 1, Duration::from_secs(1));
        one.report(0, false, t0);
        assert!(one.is_ejected(0, t0));
        assert_eq!(one.pick(t0), Some((0, &"only")));
        one.report(7, false, t0); // out of range: ignored
        let never = Balancer::new(vec![("a", 1), ("b", 1)], 0, Duration::from_secs(1));
        for _ in 0..10 {
            never.report(0, false, t0);
        }
        assert!(!never.is_ejected(0, t0));
        assert_eq!(
            never.targets().collect::<Vec<_>>(),
            vec![(&"a", 1), (&"b", 1)]
        );
        // An instant taken before `new` still works.
        let b = Balancer::new(vec![("a", 1), ("b", 1)], 1, Duration::from_secs(5));
        b.report(0, false, t0);
        assert!(b.is_ejected(0, t0 + Duration::from_secs(4)));
        assert!(!b.is_ejected(0, t0 + Duration::from_secs(5)));
    }
}
