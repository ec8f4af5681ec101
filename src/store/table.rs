//! Sharded in-memory tables of counter cells, keyed by app, client IP, key id or
//! parameter value; plus [`Single`] for policy-wide counters.
//!
//! Lookups take a shard read lock and clone the cell's `Arc`; only a new key takes
//! the write lock. Each shard holds at most `cap / SHARDS` entries: when full, the
//! shard drops idle cells (windows that are over, GCRA buckets that are full);
//! when still full, the new key is not tracked (fail open for that key, counted in
//! `overflow`): memory stays bounded under a flood of distinct client IPs while
//! policy-wide limits keep applying.

use super::cells::{GcraCell, GcraRate, QuotaCell, Timestamp, Window, WindowCell};
use super::Row;
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};

const SHARDS: usize = 64;

type Shard<K, C> = RwLock<HashMap<K, Arc<C>>>;

/// A counter cell kept in a table.
pub trait Cell: Send + Sync + Default + 'static {
    /// Time geometry shared by all cells of a table.
    type Geometry: Copy + Send + Sync + 'static;
    fn idle(&self, g: Self::Geometry, now: Timestamp) -> bool;
    fn persistent(g: Self::Geometry) -> bool;
    /// `(row, mark)` when changed since the last flush (persistent cells only).
    fn dirty(&self, g: Self::Geometry) -> Option<(Row, u64)>;
    fn mark_flushed(&self, mark: u64);
    fn restore(g: Self::Geometry, row: Row, now: Timestamp) -> Option<Self>;
}

impl Cell for GcraCell {
    type Geometry = GcraRate;
    fn idle(&self, _: GcraRate, now: Timestamp) -> bool {
        GcraCell::idle(self, now)
    }
    fn persistent(_: GcraRate) -> bool {
        false
    }
    fn dirty(&self, _: GcraRate) -> Option<(Row, u64)> {
        None
    }
    fn mark_flushed(&self, _: u64) {}
    fn restore(_: GcraRate, _: Row, _: Timestamp) -> Option<Self> {
        None
    }
}

impl Cell for WindowCell {
    type Geometry = Window;
    fn idle(&self, w: Window, now: Timestamp) -> bool {
        WindowCell::idle(self, w, now)
    }
    fn persistent(w: Window) -> bool {
        w.persistent()
    }
    fn dirty(&self, w: Window) -> Option<(Row, u64)> {
        WindowCell::dirty(self, w)
            .map(|(window_end, count, mark)| (Row { window_end, count }, mark))
    }
    fn mark_flushed(&self, mark: u64) {
        WindowCell::mark_flushed(self, mark)
    }
    fn restore(w: Window, row: Row, now: Timestamp) -> Option<Self> {
        WindowCell::restore(w, row.window_end, row.count, now)
    }
}

impl Cell for QuotaCell {
    type Geometry = ();
    fn idle(&self, _: (), _: Timestamp) -> bool {
        false
    }
    fn persistent(_: ()) -> bool {
        true
    }
    fn dirty(&self, _: ()) -> Option<(Row, u64)> {
        QuotaCell::dirty(self).map(|count| {
            (
                Row {
                    window_end: 0,
                    count,
                },
                count,
            )
        })
    }
    fn mark_flushed(&self, mark: u64) {
        QuotaCell::mark_flushed(self, mark)
    }
    fn restore(_: (), row: Row, _: Timestamp) -> Option<Self> {
        (row.window_end == 0).then(|| QuotaCell::with_used(row.count))
    }
}

/// Keys of a table and their byte form in the store.
pub trait TableKey: Hash + Eq + Clone + Send + Sync + 'static {
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(b: &[u8]) -> Option<Self>;
}

impl TableKey for String {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
    fn decode(b: &[u8]) -> Option<Self> {
        String::from_utf8(b.to_vec()).ok()
    }
}

impl TableKey for IpAddr {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
            IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
        }
    }
    fn decode(b: &[u8]) -> Option<Self> {
        match b.len() {
            4 => Some(IpAddr::from(<[u8; 4]>::try_from(b).ok()?)),
            16 => Some(IpAddr::from(<[u8; 16]>::try_from(b).ok()?)),
            _ => None,
        }
    }
}

/// A changed persistent cell waiting for the next flush.
pub struct Dirty {
    pub table: Arc<str>,
    pub key: Vec<u8>,
    pub row: Row,
    pub(crate) cell: Arc<dyn Flushable>,
    pub(crate) mark: u64,
}

pub(crate) trait Flushable: Send + Sync {
    fn mark(&self, v: u64);
}
impl<C: Cell> Flushable for C {
    fn mark(&self, v: u64) {
        self.mark_flushed(v)
    }
}

/// What the background task does to every live table.
pub trait Maintain: Send + Sync {
    /// Drops idle cells; returns how many.
    fn prune(&self, now: Timestamp) -> usize;
    fn collect_dirty(&self, out: &mut Vec<Dirty>);
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Rows of tables dropped before the next flush (a removed policy, the last
/// snapshot holding it gone); the next flush writes them.
pub type Orphans = Arc<Mutex<Vec<Dirty>>>;

/// A keyed table.
pub struct Table<K: TableKey, C: Cell> {
    orphans: Option<Orphans>,
    identity: Arc<str>,
    geometry: C::Geometry,
    hasher: RandomState,
    shards: Box<[Shard<K, C>]>,
    shard_cap: usize,
    overflow: AtomicU64,
}

impl<K: TableKey, C: Cell> Table<K, C> {
    pub fn new(identity: &str, geometry: C::Geometry, cap: usize) -> Table<K, C> {
        Table {
            orphans: None,
            identity: identity.into(),
            geometry,
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            shard_cap: (cap / SHARDS).max(1),
            overflow: AtomicU64::new(0),
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn geometry(&self) -> C::Geometry {
        self.geometry
    }

    pub(crate) fn set_orphans(&mut self, o: Orphans) {
        self.orphans = Some(o);
    }

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> &Shard<K, C> {
        let h = self.hasher.hash_one(key);
        &self.shards[(h >> 58) as usize % SHARDS]
    }

    /// The cell of `key`, created when absent; `None` when the shard is full of
    /// live cells (the caller does not count that key).
    pub fn cell<Q>(&self, key: &Q, now: Timestamp) -> Option<Arc<C>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let shard = self.shard(key);
        if let Some(c) = shard.read().unwrap_or_else(|e| e.into_inner()).get(key) {
            return Some(c.clone());
        }
        let mut map = shard.write().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get(key) {
            return Some(c.clone());
        }
        if map.len() >= self.shard_cap {
            let g = self.geometry;
            map.retain(|_, c| !c.idle(g, now));
            if map.len() >= self.shard_cap {
                if self.overflow.fetch_add(1, Relaxed).is_multiple_of(10_000) {
                    tracing::warn!(table = %self.identity, "counter table full; new keys are not limited");
                }
                return None;
            }
        }
        let c = Arc::new(C::default());
        map.insert(key.to_owned(), c.clone());
        Some(c)
    }

    /// The cell of `key` if present (no insertion).
    pub fn get<Q>(&self, key: &Q) -> Option<Arc<C>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shard(key)
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// Keys that could not be tracked because the table was full.
    pub fn overflow(&self) -> u64 {
        self.overflow.load(Relaxed)
    }

    pub(crate) fn restore(&self, rows: Vec<(Vec<u8>, Row)>, now: Timestamp) {
        for (k, row) in rows {
            let (Some(key), Some(cell)) = (K::decode(&k), C::restore(self.geometry, row, now))
            else {
                continue;
            };
            self.shard(&key)
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, Arc::new(cell));
        }
    }
}

impl<K: TableKey, C: Cell> Maintain for Table<K, C> {
    fn prune(&self, now: Timestamp) -> usize {
        let g = self.geometry;
        let mut removed = 0;
        for s in self.shards.iter() {
            let mut map = s.write().unwrap_or_else(|e| e.into_inner());
            let before = map.len();
            map.retain(|_, c| !c.idle(g, now));
            removed += before - map.len();
            if map.capacity() > 64 && map.capacity() > map.len() * 4 {
                map.shrink_to_fit();
            }
        }
        removed
    }

    fn collect_dirty(&self, out: &mut Vec<Dirty>) {
        if !C::persistent(self.geometry) {
            return;
        }
        for s in self.shards.iter() {
            let map = s.read().unwrap_or_else(|e| e.into_inner());
            for (k, c) in map.iter() {
                if let Some((row, mark)) = c.dirty(self.geometry) {
                    let mut key = Vec::new();
                    k.encode(&mut key);
                    out.push(Dirty {
                        table: self.identity.clone(),
                        key,
                        row,
                        cell: c.clone(),
                        mark,
                    });
                }
            }
        }
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

impl<K: TableKey, C: Cell> Drop for Table<K, C> {
    fn drop(&mut self) {
        if let Some(o) = self.orphans.take() {
            let mut rows = o.lock().unwrap_or_else(|e| e.into_inner());
            self.collect_dirty(&mut rows);
        }
    }
}

/// A policy-wide counter (the whole API, the whole service).
pub struct Single<C: Cell> {
    orphans: Option<Orphans>,
    identity: Arc<str>,
    geometry: C::Geometry,
    cell: Arc<C>,
}

impl<C: Cell> Single<C> {
    pub fn new(identity: &str, geometry: C::Geometry) -> Single<C> {
        Single {
            orphans: None,
            identity: identity.into(),
            geometry,
            cell: Arc::default(),
        }
    }
    pub fn cell(&self) -> &C {
        &self.cell
    }
    pub fn geometry(&self) -> C::Geometry {
        self.geometry
    }
    pub fn identity(&self) -> &str {
        &self.identity
    }
    pub(crate) fn set_orphans(&mut self, o: Orphans) {
        self.orphans = Some(o);
    }

    pub(crate) fn restore(&mut self, rows: Vec<(Vec<u8>, Row)>, now: Timestamp) {
        if let Some((_, row)) = rows.into_iter().find(|(k, _)| k.is_empty()) {
            if let Some(c) = C::restore(self.geometry, row, now) {
                self.cell = Arc::new(c);
            }
        }
    }
}

impl<C: Cell> Drop for Single<C> {
    fn drop(&mut self) {
        if let Some(o) = self.orphans.take() {
            let mut rows = o.lock().unwrap_or_else(|e| e.into_inner());
            self.collect_dirty(&mut rows);
        }
    }
}

impl<C: Cell> Maintain for Single<C> {
    fn prune(&self, _: Timestamp) -> usize {
        0
    }
    fn collect_dirty(&self, out: &mut Vec<Dirty>) {
        if let Some((row, mark)) = C::persistent(self.geometry)
            .then(|| self.cell.dirty(self.geometry))
            .flatten()
        {
            out.push(Dirty {
                table: self.identity.clone(),
                key: Vec::new(),
                row,
                cell: self.cell.clone(),
                mark,
            });
        }
    }
    fn len(&self) -> usize {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_with_idle_eviction() {
        let w = Window::new(1);
        let t: Table<IpAddr, WindowCell> = Table::new("t", w, 64 * 4);
        let now = Timestamp::from_secs(1000);
        let mut tracked = 0;
        for i in 0..2000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            if let Some(c) = t.cell(&ip, now) {
                c.acquire(w, 10, now).unwrap();
                tracked += 1;
            }
        }
        assert!(t.len() <= 64 * 4);
        assert!(tracked < 2000 && t.overflow() > 0);
        // a second later every cell is idle: new keys evict them
        let later = Timestamp::from_secs(1001);
        for i in 5000..7000u32 {
            assert!(t.cell(&IpAddr::from(i.to_be_bytes()), later).is_some() || t.len() == 256);
        }
        assert!(t.len() > 0);
        t.prune(Timestamp::from_secs(1002));
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn string_keys_borrowed_lookup() {
        let t: Table<String, QuotaCell> = Table::new("q", (), 1 << 10);
        let now = Timestamp::from_secs(1);
        t.cell("alice", now).unwrap().acquire(5).unwrap();
        assert_eq!(t.get("alice").unwrap().used(), 1);
        let mut out = Vec::new();
        t.collect_dirty(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].key, b"alice");
        assert_eq!(
            out[0].row,
            Row {
                window_end: 0,
                count: 1
            }
        );
    }
}
