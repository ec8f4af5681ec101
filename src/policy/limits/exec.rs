//! The executor: runs a route's counter plan in this instance's cells, or through
//! the cluster's Redis, and answers with one [`LimitReport`] either way.
//!
//! Cluster mode (`crate::cluster`): per-second QPS is counted here first (unless
//! `shared_qps`); the windows and quotas (and then QPS, as one-second windows)
//! go to Redis as one atomic decision ([`Pending`]). Its answer is mirrored into
//! the local cells, so that the `on_error = local` fall-back continues from the
//! last shared counts; a refusal gives back what was counted here. The headers
//! are the same as in local mode.

use super::plan::{CounterPlan, Op};
use super::report::LimitReport;
use super::request::LimitRequest;
use super::tally::{mirror, Tally};
use crate::cluster::{Cluster, OnError, SharedCounter, SharedOutcome};
use crate::policy::limits::RouteLimits;
use crate::reject::Reject;
use crate::store::cells::Timestamp;
use crate::store::Usage;

/// Where counters are counted: here, or through a cluster's Redis.
#[derive(Clone, Copy)]
pub struct Executor<'c> {
    cluster: Option<&'c Cluster>,
}

impl<'c> Executor<'c> {
    /// Counts through `cluster` when there is one, else here.
    pub fn new(cluster: Option<&'c Cluster>) -> Executor<'c> {
        Executor { cluster }
    }

    /// Step 5 of the pipeline: counts the request against every limit of its
    /// route. The report says whether it is refused (nothing counted then) and
    /// names the policy for the headers. `Err` only when Redis cannot answer and
    /// `[cluster] on_error = "deny"`.
    pub async fn check<'a>(
        &self,
        limits: &'a RouteLimits,
        req: &LimitRequest<'_>,
        now: Timestamp,
    ) -> Result<LimitReport<'a>, Reject> {
        let Some(cluster) = self.cluster else {
            return Ok(limits.check(req, now));
        };
        // Boxed: the shared half holds the whole plan across Redis's answer
        // (several KiB), which every request's future would otherwise carry
        // and copy, cluster mode or not.
        Box::pin(Self::shared(cluster, limits, req, now)).await
    }

    async fn shared<'a>(
        cluster: &Cluster,
        limits: &'a RouteLimits,
        req: &LimitRequest<'_>,
        now: Timestamp,
    ) -> Result<LimitReport<'a>, Reject> {
        let pending = match Pending::prepare(limits.ops(req), now, cluster.shared_qps()) {
            Ok(p) => p,
            Err(refused) => return Ok(refused),
        };
        let counters = pending.counters();
        if counters.is_empty() {
            return Ok(pending.admit_local());
        }
        let outcome = cluster.count(&counters).await;
        pending.finish(outcome)
    }
}

/// A cluster-mode check between its local half and the shared decision.
pub(crate) struct Pending<'a, 'r> {
    plan: CounterPlan<'a, 'r>,
    tally: Tally<'a>,
    shared_qps: bool,
}

impl<'a, 'r> Pending<'a, 'r> {
    /// The local half: per-second QPS is counted here unless `shared_qps`.
    /// `Err`: a local QPS limit refused (nothing stays counted).
    pub(crate) fn prepare(
        plan: CounterPlan<'a, 'r>,
        now: Timestamp,
        shared_qps: bool,
    ) -> Result<Pending<'a, 'r>, LimitReport<'a>> {
        let mut tally = Tally::new(now);
        let local = plan.ops().filter(|op| !is_shared(op, shared_qps));
        for op in local {
            if tally.count(op.policy, &op.counter).is_err() {
                tally.rollback();
                return Err(tally.report(plan.usage_plan()));
            }
        }
        Ok(Pending {
            plan,
            tally,
            shared_qps,
        })
    }

    fn shared(&self) -> impl Iterator<Item = &Op<'a, 'r>> {
        let shared_qps = self.shared_qps;
        self.plan.ops().filter(move |op| is_shared(op, shared_qps))
    }

    /// The counters for Redis, in check order (empty: nothing to share).
    pub(crate) fn counters(&self) -> Vec<SharedCounter> {
        self.shared()
            .map(|op| {
                let (limit, window) = op.counter.shared_limit();
                SharedCounter {
                    key: op.counter.shared_key(),
                    limit,
                    window,
                }
            })
            .collect()
    }

    /// Nothing to share: the local half decided.
    pub(crate) fn admit_local(self) -> LimitReport<'a> {
        self.tally.report(self.plan.usage_plan())
    }

    /// Completes the check with Redis's answer, or with the `on_error` mode
    /// when it had none.
    pub(crate) fn finish(
        self,
        outcome: Result<SharedOutcome, OnError>,
    ) -> Result<LimitReport<'a>, Reject> {
        let Pending {
            plan,
            mut tally,
            shared_qps,
        } = self;
        let mut shared = plan.ops().filter(|op| is_shared(op, shared_qps));
        let result = match outcome {
            Ok(SharedOutcome::Counted { now_ms, counts }) => {
                let at = Timestamp::from_millis(now_ms);
                for (op, count) in shared.zip(counts) {
                    mirror(&op.counter, at, count);
                    tally.admit(op.policy, shared_usage(op, now_ms, count, false));
                }
                Ok(())
            }
            Ok(SharedOutcome::Refused {
                now_ms,
                index,
                count,
            }) => match shared.nth(index) {
                Some(op) => {
                    mirror(&op.counter, Timestamp::from_millis(now_ms), count);
                    tally.refuse(op.policy, shared_usage(op, now_ms, count, true))
                }
                None => Ok(()),
            },
            Err(OnError::Local) => shared.try_for_each(|op| tally.count(op.policy, &op.counter)),
            Err(OnError::Allow) => Ok(()),
            Err(OnError::Deny) => {
                tally.rollback();
                return Err(Reject::ClusterUnavailable);
            }
        };
        if result.is_err() {
            tally.rollback();
        }
        Ok(tally.report(plan.usage_plan()))
    }
}

/// Decided by Redis rather than here: windows and quotas always, QPS with
/// `shared_qps` (a one-second window there: an approximation of GCRA, bursts
/// are not smoothed inside the second).
fn is_shared(op: &Op<'_, '_>, shared_qps: bool) -> bool {
    shared_qps || !op.counter.is_rate()
}

/// The rate-limit usage of a shared counter at `count` (after the increment
/// when admitted, the current count when refused).
fn shared_usage(op: &Op<'_, '_>, now_ms: u64, count: u64, refused: bool) -> Usage {
    let (limit, window) = op.counter.shared_limit();
    let remaining = if refused {
        0
    } else {
        limit.saturating_sub(count)
    };
    if window == 0 {
        return Usage {
            limit,
            remaining,
            reset: None,
            window: None,
            retry_after: None,
        };
    }
    let w_ms = window.saturating_mul(1000);
    let end_ms = (now_ms / w_ms + 1).saturating_mul(w_ms);
    let reset = (end_ms - now_ms).div_ceil(1000);
    Usage {
        limit,
        remaining,
        reset: Some(reset),
        window: Some(window),
        retry_after: refused.then_some(reset.max(1)),
    }
}

#[cfg(test)]
mod tests;
