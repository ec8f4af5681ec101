//! Per-second QPS of a service or an API (`qps = N`): GCRA, burst = one
//! second's worth, one counter for the whole service (shared by its APIs) or API.

use super::limits::plan::{identity, Counter, Plan, Slot};
use super::limits::report::{PolicyKind, PolicyRef};
use crate::store::cells::{GcraCell, GcraRate};
use crate::store::table::Single;
use crate::store::LimitState;
use std::num::NonZeroU32;
use std::sync::Arc;

#[derive(Clone)]
pub struct QpsLimit {
    kind: PolicyKind,
    /// `service` or `api`, the policy name in headers.
    name: Box<str>,
    /// The rate is the cell's geometry.
    cell: Arc<Single<GcraCell>>,
}

impl QpsLimit {
    /// Service-wide QPS; every API of the service shares the same bucket.
    pub fn service(state: &LimitState, service: &str, qps: NonZeroU32) -> QpsLimit {
        Self::make(state, PolicyKind::ServiceQps, "service", service, qps)
    }

    /// QPS of one API.
    pub fn api(state: &LimitState, service: &str, api: &str, qps: NonZeroU32) -> QpsLimit {
        let name = format!("{service}/{api}");
        Self::make(state, PolicyKind::ApiQps, "api", &name, qps)
    }

    fn make(
        state: &LimitState,
        kind: PolicyKind,
        label: &str,
        name: &str,
        qps: NonZeroU32,
    ) -> QpsLimit {
        let rate = GcraRate::per_second(u64::from(qps.get()));
        let id = identity(&format!("{label}-qps"), name, &qps.to_string());
        QpsLimit {
            kind,
            name: label.into(),
            cell: state.single(&id, rate),
        }
    }

    pub fn qps(&self) -> u64 {
        self.cell.geometry().qps
    }

    pub(crate) fn max_ops(&self) -> usize {
        1
    }

    pub(crate) fn add_ops<'a, 'r>(&'a self, plan: &mut impl Plan<'a, 'r>) {
        let p = PolicyRef {
            kind: self.kind,
            name: &self.name,
        };
        plan.push(p, Counter::Rate(Slot::Whole(&self.cell)));
    }
}
