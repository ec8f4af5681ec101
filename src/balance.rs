//! TEMPORARY stub with the interface of the real balancer (replaced on merge).
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
pub struct Balancer<T> {
    targets: Vec<(T, u32)>,
    next: AtomicUsize,
}
impl<T> Balancer<T> {
    pub fn new(targets: Vec<(T, u32)>, _max_fails: u32, _fail_timeout: Duration) -> Self {
        Balancer {
            targets,
            next: AtomicUsize::new(0),
        }
    }
    pub fn pick(&self, _now: Instant) -> Option<(usize, &T)> {
        if self.targets.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.targets.len();
        Some((i, &self.targets[i].0))
    }
    pub fn report(&self, _idx: usize, _ok: bool, _now: Instant) {}
}
