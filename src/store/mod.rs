//! Counter stores for windows and quotas.
//!
//! Counting happens in memory ([`table`]: sharded maps of atomic [`cells`]); a
//! [`CounterStore`] only persists and restores rows. [`LimitState`] owns the live
//! tables (keyed by policy identity so that they survive reloads), flushes changed
//! persistent rows at least once per second and prunes idle entries.
//!
//! Cluster mode (`crate::cluster`) does not go through a `CounterStore`: each
//! decision is one atomic Redis script over the request's counters
//! (`policy::limits::exec`), and these in-memory cells serve as the `on_error = local`
//! fall-back, mirroring the last shared counts.

pub mod cells;
pub mod limit_state;
pub mod local;
pub mod table;

pub use cells::{Timestamp, Usage};
pub use limit_state::{LimitState, StateOptions};

use std::collections::BTreeMap;
use std::sync::Mutex;

/// One persisted counter: `window_end` is the end of its window in seconds since
/// the epoch, `0` for a lifetime counter (quota).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row {
    pub window_end: u64,
    pub count: u64,
}

/// A row to write: the table (policy identity), the entry key inside it.
pub struct RowRef<'a> {
    pub table: &'a str,
    pub key: &'a [u8],
    pub row: Row,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("counter store: {0}")]
pub struct StoreError(pub String);

/// Persistence of counter rows (not on the request path).
pub trait CounterStore: Send + Sync {
    /// Every stored row of `table`.
    fn load(&self, table: &str) -> Result<Vec<(Vec<u8>, Row)>, StoreError>;
    /// Writes the rows atomically (one transaction).
    fn save(&self, rows: &[RowRef<'_>]) -> Result<(), StoreError>;
    /// Deletes windowed rows whose window ended at or before `now_secs`.
    fn sweep(&self, now_secs: u64) -> Result<usize, StoreError>;
}

/// Composite store key: `table \0 key`.
pub(crate) fn store_key(table: &str, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(table.len() + 1 + key.len());
    k.extend_from_slice(table.as_bytes());
    k.push(0);
    k.extend_from_slice(key);
    k
}

/// A store in memory (tests; a process without a state directory).
#[derive(Default)]
pub struct MemoryStore {
    rows: Mutex<BTreeMap<Vec<u8>, Row>>,
}

impl CounterStore for MemoryStore {
    fn load(&self, table: &str) -> Result<Vec<(Vec<u8>, Row)>, StoreError> {
        let prefix = store_key(table, b"");
        let rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        Ok(rows
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, r)| (k[prefix.len()..].to_vec(), *r))
            .collect())
    }
    fn save(&self, rows: &[RowRef<'_>]) -> Result<(), StoreError> {
        let mut map = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        for r in rows {
            map.insert(store_key(r.table, r.key), r.row);
        }
        Ok(())
    }
    fn sweep(&self, now_secs: u64) -> Result<usize, StoreError> {
        let mut map = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        let before = map.len();
        map.retain(|_, r| r.window_end == 0 || r.window_end > now_secs);
        Ok(before - map.len())
    }
}
