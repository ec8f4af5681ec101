//! The embedded store: one redb file `counters.redb` in `[server] state_dir`.

use super::{store_key, CounterStore, Row, RowRef, StoreError};
use redb::{Database, TableDefinition};
use std::path::Path;

const COUNTERS: TableDefinition<&[u8], (u64, u64)> = TableDefinition::new("counters");

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

pub struct RedbStore {
    db: Database,
}

impl RedbStore {
    /// Opens (or creates) `dir/counters.redb`, creating `dir` when needed.
    pub fn open(dir: &Path) -> Result<RedbStore, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError(format!("cannot create state_dir {}: {e}", dir.display())))?;
        let path = dir.join("counters.redb");
        let db = Database::create(&path)
            .map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
        let tx = db.begin_write().map_err(err)?;
        tx.open_table(COUNTERS).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(RedbStore { db })
    }
}

impl CounterStore for RedbStore {
    fn load(&self, table: &str) -> Result<Vec<(Vec<u8>, Row)>, StoreError> {
        let prefix = store_key(table, b"");
        let mut end = prefix.clone();
        *end.last_mut().expect("non-empty") = 1; // `table \x01` sorts after every `table \0 ...`
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(COUNTERS).map_err(err)?;
        let mut out = Vec::new();
        for item in t.range(prefix.as_slice()..end.as_slice()).map_err(err)? {
            let (k, v) = item.map_err(err)?;
            let (window_end, count) = v.value();
            out.push((
                k.value()[prefix.len()..].to_vec(),
                Row { window_end, count },
            ));
        }
        Ok(out)
    }

    fn save(&self, rows: &[RowRef<'_>]) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut t = tx.open_table(COUNTERS).map_err(err)?;
            let mut key = Vec::new();
            for r in rows {
                key.clear();
                key.extend_from_slice(&store_key(r.table, r.key));
                t.insert(key.as_slice(), (r.row.window_end, r.row.count))
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    fn sweep(&self, now_secs: u64) -> Result<usize, StoreError> {
        let tx = self.db.begin_write().map_err(err)?;
        let mut removed = 0;
        {
            let mut t = tx.open_table(COUNTERS).map_err(err)?;
            t.retain(|_, (end, _)| {
                let keep = end == 0 || end > now_secs;
                removed += usize::from(!keep);
                keep
            })
            .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(removed)
    }
}
