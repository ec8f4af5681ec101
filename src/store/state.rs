//! [`LimitState`]: the long-lived owner of every counter, outliving config reloads.
//!
//! The config compiler asks it for a table by *identity* (policy name + a hash of
//! the policy's settings, see `policy::limits::identity`). While any snapshot still
//! holds that table, the same `Arc` comes back, so an unrelated reload keeps the
//! counts; a changed policy has a new identity and starts fresh; a table whose last
//! snapshot is gone is dropped (after its rows were flushed) and, when it comes
//! back, is restored from the store.

use super::cells::Timestamp;
use super::local::RedbStore;
use super::table::{Cell, Dirty, Maintain, Single, Table, TableKey};
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
}

impl LimitState {
    /// Opens the embedded store under `state_dir` (created when missing) and
    /// deletes rows of windows that are over.
    pub fn open(state_dir: &Path) -> Result<Arc<LimitState>, String> {
        let store = RedbStore::open(state_dir).map_err(|e| e.to_string())?;
        if let Err(e) = store.sweep(Timestamp::now().secs()) {
            tracing::warn!(error = %e, "sweeping expired counters failed");
        }
        Ok(Self::with_store(Some(Arc::new(store)), StateOptions::default()))
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
            let t = Table::new(identity, g, self.opts.table_capacity);
            if C::persistent(g) {
                t.restore(self.load(identity), Timestamp::now());
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
        let mut dirty: Vec<Dirty> = Vec::new();
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
        store.save(&rows).map_err(|e| e.to_string())?;
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
            let (mut last_prune, mut last_sweep) = (tokio::time::Instant::now(), tokio::time::Instant::now());
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
