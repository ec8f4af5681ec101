//! The cluster-mode half of a limit check (see `crate::cluster`).
//!
//! [`RouteLimits::prepare`](super::limits::RouteLimits::prepare) runs the usual
//! check with a [`Run`] that *collects* window and quota counters (and, with
//! `shared_qps`, QPS) as [`SharedOp`]s instead of counting them; the shared store
//! decides all of them at once and [`Shared::finish`] turns its answer (or the
//! `on_error` fall-back) into the same [`LimitReport`] as a local check, so the
//! rate-limit headers do not change. Each op keeps its local cell: the local
//! fall-back counts with it, and a shared answer is mirrored into it.

use super::limits::{CellRef, LimitReport, PolicyRef, Refused, Run};
use crate::store::cells::{GcraCell, GcraRate, QuotaCell, Timestamp, Usage, Window, WindowCell};
use std::net::IpAddr;

/// Where a counter lives in a shared store: its table's identity and the entry
/// inside it. Only turned into a string in cluster mode.
#[derive(Clone, Copy)]
pub(crate) struct CounterId<'k> {
    table: &'k str,
    entry: Entry<'k>,
}

#[derive(Clone, Copy)]
enum Entry<'k> {
    Whole,
    Str(&'k str),
    Ip(IpAddr),
}

impl<'k> CounterId<'k> {
    pub(crate) fn whole(table: &'k str) -> CounterId<'k> {
        CounterId {
            table,
            entry: Entry::Whole,
        }
    }
    pub(crate) fn keyed(table: &'k str, key: &'k str) -> CounterId<'k> {
        CounterId {
            table,
            entry: Entry::Str(key),
        }
    }
    pub(crate) fn ip(table: &'k str, ip: IpAddr) -> CounterId<'k> {
        CounterId {
            table,
            entry: Entry::Ip(ip),
        }
    }
    /// `TABLE` or `TABLE:ENTRY`; tables are `kind:name:settings-hash/part`.
    pub(super) fn to_key(self) -> String {
        match self.entry {
            Entry::Whole => self.table.to_string(),
            Entry::Str(k) => format!("{}:{k}", self.table),
            Entry::Ip(ip) => format!("{}:{ip}", self.table),
        }
    }
}

/// One counter of a cluster-mode check, waiting for the shared decision.
pub struct SharedOp<'a> {
    pub(super) policy: PolicyRef<'a>,
    /// Counter key without the cluster prefix (and, for windows, without the
    /// window end that the store appends).
    pub key: String,
    pub limit: u64,
    /// Window length in seconds; `0` for a lifetime quota.
    pub window: u64,
    pub(super) local: LocalCell<'a>,
}

pub(super) enum LocalCell<'a> {
    Gcra(CellRef<'a, GcraCell>, &'a GcraRate),
    Window(CellRef<'a, WindowCell>, Window),
    Quota(CellRef<'a, QuotaCell>),
}

pub(super) struct SharedOps<'a> {
    pub(super) ops: Vec<SharedOp<'a>>,
    /// Per-second QPS is shared too (`[cluster] shared_qps`).
    pub(super) qps: bool,
}

/// What the shared store decided for a [`Shared`] check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedOutcome {
    /// Every counter was incremented; `counts[i]` is op `i`'s count after it.
    /// `now_ms` is the store's clock (windows are aligned on it).
    Counted { now_ms: u64, counts: Vec<u64> },
    /// Op `index` is at its limit (`count`); nothing was incremented.
    Refused {
        now_ms: u64,
        index: usize,
        count: u64,
    },
    /// The store is unavailable: decide with this instance's own counters.
    Local,
    /// The store is unavailable: admit without counting.
    Uncounted,
}

/// A cluster-mode check between its local half ([`RouteLimits::prepare`]) and
/// the shared decision ([`Shared::finish`]).
pub struct Shared<'a> {
    pub(super) plan: Option<&'a str>,
    pub(super) run: Run<'a>,
    pub(super) now: Timestamp,
}

impl<'a> Shared<'a> {
    /// The counters to decide on, in check order (empty: nothing to share).
    pub fn ops(&self) -> &[SharedOp<'a>] {
        self.run.shared.as_ref().map_or(&[], |s| &s.ops)
    }

    /// Undoes the local acquisitions (the request is refused for another reason).
    pub fn abort(mut self) {
        self.run.rollback();
    }

    /// Completes the check with the shared store's answer.
    pub fn finish(mut self, outcome: SharedOutcome) -> Result<LimitReport<'a>, LimitReport<'a>> {
        let ops = self.run.shared.take().map(|s| s.ops).unwrap_or_default();
        let result = match outcome {
            SharedOutcome::Counted { now_ms, counts } => {
                let at = Timestamp::from_millis(now_ms);
                for (op, count) in ops.into_iter().zip(counts) {
                    let u = shared_usage(&op, now_ms, count, false);
                    op.local.observe(at, count);
                    self.run.admitted(op.policy, u, None);
                }
                Ok(())
            }
            SharedOutcome::Refused {
                now_ms,
                index,
                count,
            } => match ops.into_iter().nth(index) {
                Some(op) => {
                    let u = shared_usage(&op, now_ms, count, true);
                    op.local.observe(Timestamp::from_millis(now_ms), count);
                    self.run.refuse(op.policy, u)
                }
                None => Ok(()),
            },
            SharedOutcome::Local => ops
                .into_iter()
                .try_for_each(|op| self.run.local(op, self.now)),
            SharedOutcome::Uncounted => Ok(()),
        };
        let report = |run: &Run<'a>, refused| LimitReport {
            plan: self.plan,
            tightest: if refused { run.refused } else { run.best },
            refused,
        };
        match result {
            Ok(()) => Ok(report(&self.run, false)),
            Err(Refused) => {
                let r = report(&self.run, true);
                self.run.rollback();
                Err(r)
            }
        }
    }
}

impl LocalCell<'_> {
    fn observe(&self, at: Timestamp, count: u64) {
        match self {
            LocalCell::Window(c, w) => c.observe(*w, at, count),
            LocalCell::Quota(c) => c.observe(count),
            // GCRA state is not a count; nothing to mirror.
            LocalCell::Gcra(..) => {}
        }
    }
}

/// The rate-limit usage of a shared counter at `count` (after the increment
/// when admitted, the current count when refused).
fn shared_usage(op: &SharedOp<'_>, now_ms: u64, count: u64, refused: bool) -> Usage {
    let remaining = if refused {
        0
    } else {
        op.limit.saturating_sub(count)
    };
    if op.window == 0 {
        return Usage {
            limit: op.limit,
            remaining,
            reset: None,
            window: None,
            retry_after: None,
        };
    }
    let w_ms = op.window.saturating_mul(1000);
    let end_ms = (now_ms / w_ms + 1).saturating_mul(w_ms);
    let reset = (end_ms - now_ms).div_ceil(1000);
    Usage {
        limit: op.limit,
        remaining,
        reset: Some(reset),
        window: Some(op.window),
        retry_after: refused.then_some(reset.max(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::{RawTrafficControl, RawUsagePlan};
    use crate::policy::limits::{
        LimitRequest, LimitState, PlanLimits, PolicyKind, QpsLimit, RouteLimits, TrafficPolicy,
    };
    use http::{HeaderMap, Method};

    /// 2026-01-01T00:00:00Z + ms
    fn at(ms: u64) -> Timestamp {
        Timestamp::from_millis(1_767_225_600_000 + ms)
    }

    fn limits(st: &LimitState) -> (RouteLimits, std::sync::Arc<PlanLimits>) {
        let tc = RawTrafficControl {
            rejected_code: None,
            rejected_msg: None,
            name: "flow".into(),
            expire_type: "minute".into(),
            expire: 1,
            api_rate_limit: Some(10),
            app_rate_limit: None,
            ip_rate_limit: Some(5),
            spec_app_rate_limits: vec![],
            spec_ip_rate_limits: vec![],
            ipv6_prefix: None,
        };
        let plan = PlanLimits::compile(
            &RawUsagePlan {
                name: "gold".into(),
                qps: None,
                quota: Some(100),
                keys: vec![],
            },
            st,
        )
        .unwrap();
        let limits = RouteLimits::new(
            None,
            Some(QpsLimit::api(st, "s", "a", 2).unwrap()),
            Some(TrafficPolicy::compile(&tc, st).unwrap()),
            None,
            vec![plan.clone()],
        );
        (limits, plan)
    }

    fn req<'a>(h: &'a HeaderMap, m: &'a Method) -> LimitRequest<'a> {
        LimitRequest {
            key_id: Some("AKID1"),
            app: Some("AKID1"),
            plan: Some("gold"),
            client_ip: "10.0.0.1".parse().unwrap(),
            method: m,
            path: "/x",
            headers: h,
            query: None,
        }
    }

    #[test]
    fn windows_and_quotas_are_collected_in_check_order_qps_stays_local() {
        let st = LimitState::in_memory();
        let (limits, _) = limits(&st);
        let (h, m) = (HeaderMap::new(), Method::GET);
        let s = limits.prepare(&req(&h, &m), at(0), false).unwrap();
        let ops: Vec<_> = s.ops().iter().map(|o| (o.limit, o.window)).collect();
        assert_eq!(ops, vec![(5, 60), (10, 60), (100, 0)]);
        assert!(
            s.ops()[0].key.starts_with("traffic:flow:") && s.ops()[0].key.ends_with("/ip:10.0.0.1")
        );
        assert!(s.ops()[1].key.ends_with("/api"));
        assert_eq!(s.ops()[2].key, "quota:gold:AKID1");
        s.abort();
        // shared_qps: the API QPS joins them as a one-second window
        let s = limits.prepare(&req(&h, &m), at(0), true).unwrap();
        assert_eq!((s.ops()[0].limit, s.ops()[0].window), (2, 1));
        assert_eq!(s.ops().len(), 4);
    }

    #[test]
    fn shared_counts_give_the_headers_and_are_mirrored_locally() {
        let st = LimitState::in_memory();
        let (limits, plan) = limits(&st);
        let (h, m) = (HeaderMap::new(), Method::GET);
        let s = limits.prepare(&req(&h, &m), at(50_000), false).unwrap();
        // the store's clock is 00:00:50: the minute resets in 10 s
        let r = s
            .finish(SharedOutcome::Counted {
                now_ms: at(50_000).as_nanos() / 1_000_000,
                counts: vec![2, 9, 40],
            })
            .unwrap();
        let (p, u) = r.tightest.unwrap();
        assert_eq!(p.kind, PolicyKind::TrafficApi);
        assert_eq!((u.limit, u.remaining, u.reset), (10, 1, Some(10)));
        assert_eq!(plan.used("AKID1"), 40, "quota mirrored");
        // local fall-back continues from the mirrored counts: 1 left in the window
        let s = limits.prepare(&req(&h, &m), at(50_000), false).unwrap();
        assert!(s.finish(SharedOutcome::Local).is_ok());
        // the API QPS (2 per second) is local and already spent: refused before any op
        assert!(limits.prepare(&req(&h, &m), at(50_000), false).is_err());
        let s = limits.prepare(&req(&h, &m), at(51_000), false).unwrap();
        let e = s.finish(SharedOutcome::Local).unwrap_err();
        assert_eq!(e.policy().unwrap().kind, PolicyKind::TrafficApi);
        assert_eq!(plan.used("AKID1"), 41, "refused request counted nowhere");
    }

    #[test]
    fn a_shared_refusal_undoes_local_qps_and_names_the_policy() {
        let st = LimitState::in_memory();
        let (limits, _) = limits(&st);
        let (h, m) = (HeaderMap::new(), Method::GET);
        for _ in 0..3 {
            let s = limits.prepare(&req(&h, &m), at(0), false).unwrap();
            let e = s
                .finish(SharedOutcome::Refused {
                    now_ms: at(30_000).as_nanos() / 1_000_000,
                    index: 0,
                    count: 5,
                })
                .unwrap_err();
            assert_eq!(e.policy().unwrap().kind, PolicyKind::TrafficIp);
            assert_eq!(e.retry_after(), Some(30));
        }
        // three refusals took nothing from the API's 2 QPS
        let s = limits.prepare(&req(&h, &m), at(0), false).unwrap();
        assert!(s.finish(SharedOutcome::Uncounted).is_ok());
        let s = limits.prepare(&req(&h, &m), at(0), false).unwrap();
        let r = s.finish(SharedOutcome::Uncounted).unwrap();
        assert_eq!(r.tightest.unwrap().0.kind, PolicyKind::ApiQps);
    }
}
