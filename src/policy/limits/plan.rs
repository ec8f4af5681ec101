//! A request's counter plan: the counter operations its route's policies ask
//! for, in check order.
//!
//! A policy only says *what* to count ([`Counter`]: a GCRA rate, a fixed window
//! or a lifetime quota, and the [`Slot`] holding the count) by pushing it into a
//! [`Plan`]; the executor (`super::exec`) decides *where*. Locally the plan is a
//! `Tally` that counts each operation as it arrives (and ignores the rest after
//! a refusal: a request refused early creates no table entries for the policies
//! after the refusing one); in cluster mode a [`CounterPlan`] collects them for
//! one decision by Redis. Either way every acquisition is given back when a
//! later operation refuses.
//!
//! A route's plan holds at most [`MAX_OPS`] operations, so that it (and the
//! record of what to give back) lives on the stack. The bound is enforced where
//! a route is compiled (`RouteLimits::new` refuses a route whose policies could
//! need more); nothing is dropped at run time (past the bound, a policy that
//! under-reports its `max_ops` would only cost a heap allocation).

use super::report::PolicyRef;
use crate::store::cells::{GcraCell, QuotaCell, Timestamp, WindowCell};
use crate::store::table::{Cell, Single, Table};
use sha2::{Digest, Sha256};
use smallvec::SmallVec;
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

/// Most counter operations one request may need. Today's largest route needs
/// 18: a usage plan's QPS and quota (2), service and API QPS (2), the three
/// dimensions of `traffic_control` (3), `param_traffic_control`'s default and
/// its at most 10 strategies (11).
pub const MAX_OPS: usize = 24;

/// Stable identity of a policy's counters: kind, name and a hash of the settings
/// that shape them. Same settings → same counters across reloads and restarts.
pub(crate) fn identity(kind: &str, name: &str, settings: &str) -> String {
    let digest = Sha256::digest(settings.as_bytes());
    format!("{kind}:{name}:{}", hex::encode(&digest[..8]))
}

/// A counter cell: borrowed from a policy-wide [`Single`], or shared with the
/// table it was looked up in (a prune may drop the entry meanwhile).
pub(crate) enum CellRef<'a, C> {
    Borrowed(&'a C),
    Shared(Arc<C>),
}

impl<C> std::ops::Deref for CellRef<'_, C> {
    type Target = C;
    fn deref(&self) -> &C {
        match self {
            CellRef::Borrowed(c) => c,
            CellRef::Shared(c) => c,
        }
    }
}

/// Where a count lives: a policy-wide cell or one entry of a keyed table.
pub(crate) enum Slot<'a, 'r, C: Cell> {
    Whole(&'a Single<C>),
    Key(&'a Table<String, C>, Cow<'r, str>),
    Ip(&'a Table<IpAddr, C>, IpAddr),
}

impl<'a, C: Cell> Slot<'a, '_, C> {
    /// The rate or window shared by every cell of the table.
    pub(crate) fn geometry(&self) -> C::Geometry {
        match self {
            Slot::Whole(s) => s.geometry(),
            Slot::Key(t, _) => t.geometry(),
            Slot::Ip(t, _) => t.geometry(),
        }
    }

    /// The cell, created when absent; `None` when its table is full of live
    /// cells (that key is not counted by this instance).
    pub(crate) fn cell(&self, now: Timestamp) -> Option<CellRef<'a, C>> {
        match self {
            Slot::Whole(s) => Some(CellRef::Borrowed(s.cell())),
            Slot::Key(t, k) => t.cell(&**k, now).map(CellRef::Shared),
            Slot::Ip(t, ip) => t.cell(ip, now).map(CellRef::Shared),
        }
    }

    /// The counter's name in a shared store: `TABLE` or `TABLE:ENTRY`, tables
    /// being `kind:name:settings-hash/part`.
    pub(crate) fn shared_key(&self) -> String {
        match self {
            Slot::Whole(s) => s.identity().to_string(),
            Slot::Key(t, k) => format!("{}:{k}", t.identity()),
            Slot::Ip(t, ip) => format!("{}:{ip}", t.identity()),
        }
    }
}

/// What one operation counts the request against.
pub(crate) enum Counter<'a, 'r> {
    /// Smooth per-second QPS (GCRA); the rate is the slot's geometry.
    Rate(Slot<'a, 'r, GcraCell>),
    /// A fixed window (the slot's geometry) admitting `limit` requests.
    Window(Slot<'a, 'r, WindowCell>, u64),
    /// A lifetime quota of `limit` requests.
    Quota(Slot<'a, 'r, QuotaCell>, u64),
}

impl Counter<'_, '_> {
    pub(crate) fn is_rate(&self) -> bool {
        matches!(self, Counter::Rate(_))
    }

    /// `(limit, window in seconds)` as a shared store counts it: a rate as a
    /// one-second window, a quota with window `0`.
    pub(crate) fn shared_limit(&self) -> (u64, u64) {
        match self {
            Counter::Rate(s) => (s.geometry().qps, 1),
            Counter::Window(s, limit) => (*limit, s.geometry().secs),
            Counter::Quota(_, limit) => (*limit, 0),
        }
    }

    pub(crate) fn shared_key(&self) -> String {
        match self {
            Counter::Rate(s) => s.shared_key(),
            Counter::Window(s, _) => s.shared_key(),
            Counter::Quota(s, _) => s.shared_key(),
        }
    }
}

/// Where a route's policies put their counter operations, in check order.
pub(crate) trait Plan<'a, 'r> {
    fn push(&mut self, policy: PolicyRef<'a>, counter: Counter<'a, 'r>);
}

/// One counter operation: the policy it answers for and what it counts.
pub(crate) struct Op<'a, 'r> {
    pub(crate) policy: PolicyRef<'a>,
    pub(crate) counter: Counter<'a, 'r>,
}

/// The counter operations of one request collected, in check order. `'a` is
/// the route's lifetime (policies, cells, names in the report), `'r` the
/// request's (keys taken from it).
pub(crate) struct CounterPlan<'a, 'r> {
    usage_plan: Option<&'a str>,
    /// On the stack for any route within the bound.
    ops: SmallVec<[Op<'a, 'r>; MAX_OPS]>,
}

impl<'a, 'r> Plan<'a, 'r> for CounterPlan<'a, 'r> {
    fn push(&mut self, policy: PolicyRef<'a>, counter: Counter<'a, 'r>) {
        self.ops.push(Op { policy, counter });
    }
}

impl<'a, 'r> CounterPlan<'a, 'r> {
    pub(crate) fn new() -> CounterPlan<'a, 'r> {
        CounterPlan {
            usage_plan: None,
            ops: SmallVec::new(),
        }
    }

    /// Names the usage plan that applied (for the report).
    pub(crate) fn set_usage_plan(&mut self, name: Option<&'a str>) {
        self.usage_plan = name;
    }

    pub(crate) fn usage_plan(&self) -> Option<&'a str> {
        self.usage_plan
    }

    pub(crate) fn ops(&self) -> impl Iterator<Item = &Op<'a, 'r>> {
        self.ops.iter()
    }

    pub(crate) fn len(&self) -> usize {
        self.ops.len()
    }
}
