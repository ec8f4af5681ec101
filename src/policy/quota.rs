//! Usage plans (SPEC §5): per-key QPS (GCRA, burst = one second's worth) and a
//! lifetime quota per key that no reload or restart resets.
//!
//! The quota's counters are identified by the plan's name only: raising or
//! lowering `quota` keeps what each key has used; renaming the plan starts over.
//! They are persisted by `LimitState` (flushed every second and on shutdown).

use super::limits::plan::{identity, Counter, Plan, Slot};
use super::limits::report::{PolicyKind, PolicyRef};
use crate::config::raw::RawUsagePlan;
use crate::store::cells::{GcraCell, GcraRate, QuotaCell};
use crate::store::table::Table;
use crate::store::LimitState;
use std::borrow::Cow;
use std::num::{NonZeroU32, NonZeroU64};
use std::sync::Arc;

pub struct PlanLimits {
    name: Box<str>,
    /// Per-key GCRA cells; the rate is the table's geometry.
    qps: Option<Arc<Table<String, GcraCell>>>,
    quota: Option<(u64, Arc<Table<String, QuotaCell>>)>,
    /// Policy names in headers: `plan.NAME` and `plan.NAME.quota`.
    labels: [Box<str>; 2],
}

impl PlanLimits {
    /// Obtains the plan's counters from `state`. Precondition: the config
    /// compiler refused `qps = 0` and `quota = 0` (a zero here means unlimited).
    pub fn compile(raw: &RawUsagePlan, state: &LimitState) -> Arc<PlanLimits> {
        let qps = raw.qps.and_then(NonZeroU32::new).map(|q| {
            let rate = GcraRate::per_second(u64::from(q.get()));
            let id = identity("plan-qps", &raw.name, &q.to_string());
            state.table(&id, rate)
        });
        let quota = raw.quota.and_then(NonZeroU64::new).map(|q| {
            let id = format!("quota:{}", raw.name.escape_default());
            (q.get(), state.table(&id, ()))
        });
        Arc::new(PlanLimits {
            labels: [
                format!("plan.{}", raw.name).into(),
                format!("plan.{}.quota", raw.name).into(),
            ],
            name: raw.name.as_str().into(),
            qps,
            quota,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn qps(&self) -> Option<u64> {
        self.qps.as_ref().map(|t| t.geometry().qps)
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

    pub(crate) fn max_ops(&self) -> usize {
        usize::from(self.qps.is_some()) + usize::from(self.quota.is_some())
    }

    /// The key's QPS: first of the route's operations.
    pub(crate) fn add_qps<'a, 'r>(&'a self, key: &'r str, plan: &mut impl Plan<'a, 'r>) {
        if let Some(table) = &self.qps {
            let p = PolicyRef {
                kind: PolicyKind::PlanQps,
                name: &self.labels[0],
            };
            plan.push(p, Counter::Rate(Slot::Key(table, Cow::Borrowed(key))));
        }
    }

    /// The key's quota: last of the route's operations, so that a request
    /// another policy refuses is not even counted against it for a moment.
    pub(crate) fn add_quota<'a, 'r>(&'a self, key: &'r str, plan: &mut impl Plan<'a, 'r>) {
        if let Some((limit, table)) = &self.quota {
            let p = PolicyRef {
                kind: PolicyKind::PlanQuota,
                name: &self.labels[1],
            };
            plan.push(
                p,
                Counter::Quota(Slot::Key(table, Cow::Borrowed(key)), *limit),
            );
        }
    }
}
