//! Usage plans (SPEC §5): per-key QPS (GCRA, burst = one second's worth) and a
//! lifetime quota per key that no reload or restart resets.
//!
//! The quota's counters are identified by the plan's name only: raising or
//! lowering `quota` keeps what each key has used; renaming the plan starts over.
//! They are persisted by `LimitState` (flushed every second and on shutdown).

use super::limits::{identity, CellRef, CounterId, PolicyKind, PolicyRef, Refused, Run};
use crate::config::raw::RawUsagePlan;
use crate::store::cells::{GcraCell, GcraRate, QuotaCell, Timestamp};
use crate::store::table::Table;
use crate::store::LimitState;
use std::sync::Arc;

pub struct PlanLimits {
    name: Box<str>,
    qps: Option<(GcraRate, Arc<Table<String, GcraCell>>)>,
    quota: Option<(u64, Arc<Table<String, QuotaCell>>)>,
    /// Policy names in headers: `plan.NAME` and `plan.NAME.quota`.
    labels: [Box<str>; 2],
}

impl PlanLimits {
    pub fn compile(raw: &RawUsagePlan, state: &LimitState) -> Result<Arc<PlanLimits>, Vec<String>> {
        let mut errs = Vec::new();
        if raw.qps == Some(0) {
            errs.push("qps: must be a positive integer (omit it for unlimited)".to_string());
        }
        if raw.quota == Some(0) {
            errs.push("quota: must be a positive integer (omit it for unlimited)".to_string());
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        let qps = raw.qps.map(|q| {
            let rate = GcraRate::per_second(q as u64);
            let id = identity("plan-qps", &raw.name, &q.to_string());
            (rate, state.table(&id, rate))
        });
        let quota = raw.quota.map(|q| {
            let id = format!("quota:{}", raw.name.escape_default());
            (q, state.table(&id, ()))
        });
        Ok(Arc::new(PlanLimits {
            labels: [
                format!("plan.{}", raw.name).into(),
                format!("plan.{}.quota", raw.name).into(),
            ],
            name: raw.name.as_str().into(),
            qps,
            quota,
        }))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn qps(&self) -> Option<u64> {
        self.qps.as_ref().map(|(r, _)| r.qps)
    }

    pub fn quota(&self) -> Option<u64> {
        self.quota.as_ref().map(|(q, _)| *q)
    }

    /// Requests `key_id` has used of its lifetime quota.
    pub fn used(&self, key_id: &str) -> u64 {
        self.quota
            .as_ref()
            .and_then(|(_, t)| t.get(key_id))
            .map_or(0, |c| c.used())
    }

    pub(crate) fn check_qps<'a>(
        &'a self,
        key: &str,
        run: &mut Run<'a>,
        now: Timestamp,
    ) -> Result<(), Refused> {
        let Some((rate, table)) = &self.qps else {
            return Ok(());
        };
        let Some(cell) = table.cell(key, now) else {
            return Ok(());
        };
        let p = PolicyRef {
            kind: PolicyKind::PlanQps,
            name: &self.labels[0],
        };
        let id = CounterId::keyed(table.identity(), key);
        run.gcra(p, CellRef::Shared(cell), rate, now, id)
    }

    pub(crate) fn check_quota<'a>(
        &'a self,
        key: &str,
        run: &mut Run<'a>,
        now: Timestamp,
    ) -> Result<(), Refused> {
        let Some((limit, table)) = &self.quota else {
            return Ok(());
        };
        let Some(cell) = table.cell(key, now) else {
            return Ok(());
        };
        let p = PolicyRef {
            kind: PolicyKind::PlanQuota,
            name: &self.labels[1],
        };
        let id = CounterId::keyed(table.identity(), key);
        run.quota(p, CellRef::Shared(cell), *limit, id)
    }
}
