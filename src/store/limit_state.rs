//! [`LimitState`]: the long-lived owner of every counter, outliving config reloads.
//!
//! The config compiler asks it for a table by *identity* (policy name + a hash of
//! the policy's settings, see `policy::limits::plan::identity`). While any snapshot still
//! holds that table, the same `Arc` comes back, so an unrelated reload keeps the
//! counts; a changed policy has a new identity and starts fresh; a table whose last
//! snapshot is gone is dropped (after its rows were flushed) and, when it comes
//! back, is restored from the store.

use super::cells::Timestamp;
use super::local::RedbStore;
use super::table::{Cell, Dirty, Maintain, Orphans, Single, Table, TableKey};
use super::{CounterStore, RowRef};
use std::any::Any;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct StateOptions {
    /// Most entries of one keyed table (per-IP, per-app, per-value counters).
    pub table_capacity: usize,
    pub flush_every: Duration,
    pub prune_every: Duration,
    /// How often expired rows are deleted from the store.
    pub sweep_every: Duration,
}

impl Default for StateOptions {
    fn default() -> Self {
        StateOptions {
            table_capacity: 1 << 20,
            flush_every: Duration::from_secs(1),
            prune_every: Duration::from_secs(10),
            sweep_every: Duration::from_secs(300),
        }
    }
}

struct Registered {
    any: Weak<dyn Any + Send + Sync>,
    maint: Weak<dyn Maintain>,
}

/// Sizes for metrics and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateStats {
    pub tables: usize,
    pub entries: usize,
}

pub struct LimitState {
    store: RwLock<Option<Arc<dyn CounterStore>>>,
    registry: Mutex<HashMap<String, Registered>>,
    opts: StateOptions,
    stopped: AtomicBool,
    stop: Arc<tokio::sync::Notify>,
    flush_lock: Mutex<()>,
    orphans: Orphans,
}

impl LimitState {
    /// Opens the embedded store under `state_dir` (created when missing) and
    /// deletes rows of windows that are over.
    pub fn open(state_dir: &Path) -> Result<Arc<LimitState>, String> {
        let store = RedbStore::open(state_dir).map_err(|e| e.to_string())?;
        if let Err(e) = store.sweep(Timestamp::now().secs()) {
            tracing::warn!(error = %e, "sweeping expired counters failed");
        }
        Ok(Self::with_store(
            Some(Arc::new(store)),
            StateOptions::default(),
        ))
    }

    /// Counters in memory only (tests, benches).
    pub fn in_memory() -> Arc<LimitState> {
        Self::with_store(None, StateOptions::default())
    }

    pub fn with_store(store: Option<Arc<dyn CounterStore>>, opts: StateOptions) -> Arc<LimitState> {
        Arc::new(LimitState {
            store: RwLock::new(store),
            registry: Mutex::default(),
            opts,
            stopped: AtomicBool::new(false),
            stop: Arc::new(tokio::sync::Notify::new()),
            flush_lock: Mutex::new(()),
            orphans: Orphans::default(),
        })
    }

    pub fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn store(&self) -> Option<Arc<dyn CounterStore>> {
        self.store.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn obtain<T, F>(&self, identity: &str, make: F) -> Arc<T>
    where
        T: Maintain + Send + Sync + 'static,
        F: FnOnce() -> T,
    {
        let mut reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = reg
            .get(identity)
            .and_then(|r| r.any.upgrade())
            .and_then(|a| a.downcast::<T>().ok())
        {
            return found;
        }
        let t = Arc::new(make());
        let any: Arc<dyn Any + Send + Sync> = t.clone();
        let maint: Arc<dyn Maintain> = t.clone();
        reg.insert(
            identity.to_string(),
            Registered {
                any: Arc::downgrade(&any),
                maint: Arc::downgrade(&maint),
            },
        );
        t
    }

    fn load(&self, identity: &str) -> Vec<(Vec<u8>, super::Row)> {
        let Some(store) = self.store() else {
            return Vec::new();
        };
        store.load(identity).unwrap_or_else(|e| {
            tracing::warn!(table = identity, error = %e, "cannot restore counters; starting at zero");
            Vec::new()
        })
    }

    /// The keyed table of this identity (restored from the store when persistent).
    pub fn table<K: TableKey, C: Cell>(&self, identity: &str, g: C::Geometry) -> Arc<Table<K, C>> {
        self.obtain(identity, || {
            let mut t = Table::new(identity, g, self.opts.table_capacity);
            if C::persistent(g) {
                t.restore(self.load(identity), Timestamp::now());
                t.set_orphans(self.orphans.clone());
            }
            t
        })
    }

    /// The single (policy-wide) counter of this identity.
    pub fn single<C: Cell>(&self, identity: &str, g: C::Geometry) -> Arc<Single<C>> {
        self.obtain(identity, || {
            let mut s = Single::new(identity, g);
            if C::persistent(g) {
                s.restore(self.load(identity), Timestamp::now());
                s.set_orphans(self.orphans.clone());
            }
            s
        })
    }

    fn live(&self) -> Vec<Arc<dyn Maintain>> {
        let mut reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        reg.retain(|_, r| r.maint.strong_count() > 0);
        reg.values().filter_map(|r| r.maint.upgrade()).collect()
    }

    /// Writes every changed persistent counter; returns how many rows.
    pub fn flush(&self) -> Result<usize, String> {
        let _one = self.flush_lock.lock().unwrap_or_else(|e| e.into_inner());
        let Some(store) = self.store() else {
            return Ok(0);
        };
        let mut dirty: Vec<Dirty> =
            std::mem::take(&mut *self.orphans.lock().unwrap_or_else(|e| e.into_inner()));
        for t in self.live() {
            t.collect_dirty(&mut dirty);
        }
        if dirty.is_empty() {
            return Ok(0);
        }
        let rows: Vec<RowRef<'_>> = dirty
            .iter()
            .map(|d| RowRef {
                table: &d.table,
                key: &d.key,
                row: d.row,
            })
            .collect();
        if let Err(e) = store.save(&rows) {
            drop(rows);
            // keep the rows of dropped tables for the next attempt
            let mut o = self.orphans.lock().unwrap_or_else(|e| e.into_inner());
            o.extend(
                dirty
                    .into_iter()
                    .filter(|d| Arc::strong_count(&d.cell) == 1),
            );
            return Err(e.to_string());
        }
        for d in &dirty {
            d.cell.mark(d.mark);
        }
        Ok(dirty.len())
    }

    /// Drops idle entries of every table; returns how many.
    pub fn prune(&self, now: Timestamp) -> usize {
        self.live().iter().map(|t| t.prune(now)).sum()
    }

    pub fn stats(&self) -> StateStats {
        let live = self.live();
        StateStats {
            tables: live.len(),
            entries: live.iter().map(|t| t.len()).sum(),
        }
    }

    /// Final flush, stops the background task and closes the store. Counting goes
    /// on in memory afterwards (requests still draining) but is no longer saved.
    pub fn shutdown(&self) -> Result<usize, String> {
        self.stopped.store(true, Ordering::SeqCst);
        self.stop.notify_waiters();
        let n = self.flush();
        let _one = self.flush_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.store.write().unwrap_or_else(|e| e.into_inner()).take();
        n
    }

    /// Flushes every `flush_every`, prunes every `prune_every`, sweeps the store
    /// every `sweep_every`, until [`LimitState::shutdown`] or the state is dropped.
    pub fn spawn_background(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let opts = self.opts.clone();
        let stop = self.stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(opts.flush_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let (mut last_prune, mut last_sweep) =
                (tokio::time::Instant::now(), tokio::time::Instant::now());
            loop {
                let stopped = stop.notified();
                match weak.upgrade() {
                    Some(s) if !s.stopped.load(Ordering::SeqCst) => {}
                    _ => break,
                }
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped => break,
                }
                let Some(s) = weak.upgrade() else { break };
                let now = tokio::time::Instant::now();
                let prune = now.duration_since(last_prune) >= opts.prune_every;
                let sweep = now.duration_since(last_sweep) >= opts.sweep_every;
                if prune {
                    last_prune = now;
                }
                if sweep {
                    last_sweep = now;
                }
                let work = tokio::task::spawn_blocking(move || {
                    if s.stopped.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Err(e) = s.flush() {
                        tracing::warn!(error = %e, "flushing counters failed");
                    }
                    if prune {
                        let n = s.prune(Timestamp::now());
                        tracing::debug!(removed = n, "pruned idle counters");
                    }
                    if sweep {
                        if let Some(store) = s.store() {
                            if let Err(e) = store.sweep(Timestamp::now().secs()) {
                                tracing::warn!(error = %e, "sweeping expired counters failed");
                            }
                        }
                    }
                });
                let _ = work.await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::{RawTrafficControl, RawUsagePlan};
    use crate::policy::limits::{LimitRequest, PlanLimits, RouteLimits, TrafficPolicy};
    use crate::store::MemoryStore;
    use http::{HeaderMap, Method};
    use std::net::IpAddr;

    fn plan(quota: u64) -> RawUsagePlan {
        RawUsagePlan {
            name: "gold".into(),
            qps: Some(100),
            quota: Some(quota),
            keys: vec![],
        }
    }

    fn tc(expire_type: &str, expire: u64, api: u64) -> RawTrafficControl {
        RawTrafficControl {
            rejected_code: None,
            rejected_msg: None,
            name: "flow".into(),
            expire_type: expire_type.into(),
            expire,
            api_rate_limit: Some(api),
            app_rate_limit: Some(1000),
            ip_rate_limit: None,
            spec_app_rate_limits: vec![],
            spec_ip_rate_limits: vec![],
            ipv6_prefix: None,
        }
    }

    fn hit(limits: &RouteLimits, n: usize, now: Timestamp) {
        let (h, m) = (HeaderMap::new(), Method::GET);
        let req = LimitRequest {
            key_id: Some("AKID"),
            app: Some("mobile"),
            plan: Some("gold"),
            client_ip: IpAddr::from([127, 0, 0, 1]),
            method: &m,
            path: "/",
            headers: &h,
            query: None,
        };
        for _ in 0..n {
            assert!(!limits.check(&req, now).refused);
        }
    }

    fn route(
        st: &LimitState,
        quota: u64,
        minutes: u64,
        api: u64,
    ) -> (RouteLimits, Arc<PlanLimits>, Arc<TrafficPolicy>) {
        let p = PlanLimits::compile(&plan(quota), st);
        let t = crate::config::compile::traffic_policy(&tc("minute", minutes, api), st).unwrap();
        let s = crate::config::compile::traffic_policy(&tc("second", 1, api), st).unwrap();
        let _ = s;
        (
            RouteLimits::new(None, None, Some(t.clone()), None, vec![p.clone()]).unwrap(),
            p,
            t,
        )
    }

    #[test]
    fn quotas_and_long_windows_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let now = Timestamp::now();
        {
            let st = LimitState::open(dir.path()).unwrap();
            let (limits, p, _) = route(&st, 1000, 10, 500);
            hit(&limits, 7, now);
            assert_eq!(p.used("AKID"), 7);
            // quota row + api window row + app window row
            assert_eq!(st.flush().unwrap(), 3);
            assert_eq!(st.flush().unwrap(), 0, "nothing changed since");
            hit(&limits, 1, now);
            // like kill -9 after a flush: no shutdown, the last request is not saved
            assert_eq!(st.flush().unwrap(), 3);
            hit(&limits, 1, now);
            drop(limits);
            st.shutdown().unwrap();
        }
        let st = LimitState::open(dir.path()).unwrap();
        let (limits, p, t) = route(&st, 1000, 10, 500);
        assert_eq!(p.used("AKID"), 9);
        let ip = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(t.counts(Some("mobile"), ip, now), (9, 9, 0));
        hit(&limits, 1, now);
        assert_eq!(p.used("AKID"), 10);
        // a changed plugin starts fresh; the quota (identified by plan name) does not
        let (_, p2, t2) = route(&st, 2000, 10, 501);
        assert_eq!(t2.counts(Some("mobile"), ip, now), (0, 0, 0));
        assert_eq!(p2.used("AKID"), 10);
        st.shutdown().unwrap();
    }

    #[test]
    fn second_windows_and_qps_are_not_persisted() {
        let store = Arc::new(MemoryStore::default());
        let st = LimitState::with_store(Some(store.clone()), StateOptions::default());
        let t = crate::config::compile::traffic_policy(&tc("second", 30, 500), &st).unwrap();
        let limits = RouteLimits::new(None, None, Some(t), None, vec![]).unwrap();
        hit(&limits, 3, Timestamp::now());
        assert_eq!(st.flush().unwrap(), 0);
    }

    #[test]
    fn unused_tables_are_released_and_restored() {
        let store = Arc::new(MemoryStore::default());
        let st = LimitState::with_store(Some(store.clone()), StateOptions::default());
        let now = Timestamp::now();
        let (limits, _, _) = route(&st, 50, 10, 500);
        hit(&limits, 4, now);
        st.flush().unwrap();
        drop(limits);
        assert_eq!(st.stats().tables, 0, "last snapshot gone: tables freed");
        let (_, p, _) = route(&st, 50, 10, 500);
        assert_eq!(p.used("AKID"), 4);
        assert_eq!(st.stats().tables, 2, "quota and plan qps");
    }

    #[test]
    fn prune_drops_idle_entries() {
        let st = LimitState::in_memory();
        let mut raw = tc("second", 1, 1_000_000);
        raw.ip_rate_limit = Some(10);
        let t = crate::config::compile::traffic_policy(&raw, &st).unwrap();
        let limits = RouteLimits::new(None, None, Some(t), None, vec![]).unwrap();
        let (h, m) = (HeaderMap::new(), Method::GET);
        let now = Timestamp::from_secs(2_000_000_000);
        for i in 0..1000u32 {
            let req = LimitRequest {
                key_id: None,
                app: None,
                plan: None,
                client_ip: IpAddr::from(i.to_be_bytes()),
                method: &m,
                path: "/",
                headers: &h,
                query: None,
            };
            assert!(!limits.check(&req, now).refused);
        }
        assert!(st.stats().entries >= 1000);
        assert_eq!(st.prune(now), 0);
        assert_eq!(st.prune(now.plus(Duration::from_secs(1))), 1000);
    }

    #[tokio::test]
    async fn background_task_flushes_and_stops() {
        let store = Arc::new(MemoryStore::default());
        let opts = StateOptions {
            flush_every: Duration::from_millis(20),
            ..StateOptions::default()
        };
        let st = LimitState::with_store(Some(store.clone()), opts);
        let task = st.spawn_background();
        let (limits, p, _) = route(&st, 100, 10, 500);
        hit(&limits, 2, Timestamp::now());
        let quota_table = "quota:gold";
        let mut saved = 0;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            saved = store
                .load(quota_table)
                .unwrap()
                .first()
                .map_or(0, |(_, r)| r.count);
            if saved == 2 {
                break;
            }
        }
        assert_eq!(saved, p.used("AKID"));
        st.shutdown().unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("background task ends on shutdown")
            .unwrap();
    }
}
