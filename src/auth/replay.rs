//! TEMPORARY stub (replaced on merge).
use super::AuthError;
use std::time::{Duration, Instant};
pub struct ReplayCache;
impl ReplayCache {
    pub fn new(_c: usize) -> Self {
        ReplayCache
    }
    pub fn check_and_insert(
        &self,
        _k: &str,
        _t: &str,
        _ttl: Duration,
        _now: Instant,
    ) -> Result<(), AuthError> {
        Ok(())
    }
}
