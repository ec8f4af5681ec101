//! The flow-control layer as the handler and the config compiler see it.
//!
//! Config compiler (once per reload, against the long-lived [`LimitState`]; the
//! values are validated by the compiler first):
//! ```text
//! let plan  = PlanLimits::compile(&raw_plan, &state);             // per usage plan
//! let svc   = QpsLimit::service(&state, "demo", qps);             // per service (clone per route)
//! let api   = QpsLimit::api(&state, "demo", "echo", qps);         // per API
//! let tc    = TrafficPolicy::new(traffic_spec, &state);           // per traffic_control plugin
//! let pc    = ParamPolicy::new(param_spec, &state);               // per param_traffic_control plugin
//! let route = RouteLimits::new(Some(svc), Some(api), Some(tc), None, vec![plan])?;
//! ```
//! Handler (per request, after routing and authentication), local or cluster mode:
//! ```text
//! let report = Executor::new(cluster).check(&route, &LimitRequest { .. }, Timestamp::now()).await?;
//! report.write_headers(resp.headers_mut());
//! if report.refused { 429 with report.code() / report.message() }
//! ```
//! Each policy contributes counter operations to the request's [`plan`] in a
//! fixed order (usage-plan QPS, service QPS, API QPS, traffic_control,
//! param_traffic_control, usage-plan quota); the executor ([`exec`]) counts them
//! here ([`tally`]) or through Redis. When one refuses, the acquisitions already
//! made are given back, so a refused request counts against nothing (and never
//! burns quota). The headers name the *tightest* policy ([`report`]): the one
//! with the fewest requests remaining (ties: the one resetting last).
//!
//! Adding a limit kind: a file in `policy/` whose type plans its operations
//! (`add_ops`) and says how many it may need (`max_ops`), a field here; a new
//! kind of counter also touches [`plan::Counter`] and the executor.
//!
//! Decisions where the SPEC is silent:
//! - Time is one explicit [`Timestamp`] (ns since the epoch) passed to `check`, so
//!   every limiter is tested on a fake clock. GCRA is a 20-line CAS on one
//!   `AtomicU64` (`store::cells`) rather than governor: governor bakes the clock
//!   into the limiter and gives no "remaining"/"reset" without middleware generics;
//!   the maths are the same (burst = one second's worth).
//! - Windows are fixed and aligned to the epoch (UTC days); `Reset` is exact.
//! - Headers follow draft-ietf-httpapi-ratelimit-headers (-08 and later):
//!   `RateLimit-Policy: "name";q=LIMIT;w=WINDOW` and `RateLimit: "name";r=REM;t=RESET`;
//!   a lifetime quota has no `w`, no `t`, no `X-RateLimit-Reset` and no
//!   `Retry-After` (waiting does not help).
//! - Policy names in headers: `service`, `api`, `plan.NAME`, `plan.NAME.quota`,
//!   `PLUGIN.api|app|ip`, `PLUGIN.default`, `PLUGIN.STRATEGY`.

pub mod exec;
pub(crate) mod plan;
pub mod report;
pub mod request;
pub(crate) mod tally;

pub use super::param::ParamPolicy;
pub use super::qps::QpsLimit;
pub use super::quota::PlanLimits;
pub use super::traffic::TrafficPolicy;
pub use crate::store::{LimitState, StateOptions, Timestamp, Usage};
use plan::{CounterPlan, Plan, MAX_OPS};
pub use report::{LimitReport, PolicyKind, PolicyRef};
pub use request::LimitRequest;
use std::sync::Arc;
use tally::Tally;

/// A route whose policies could need more counter operations per request than
/// one plan holds (reported by the config compiler, at the API).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "its limits may need {ops} counters per request, more than the {MAX_OPS} one \
     decision can hold (fewer param_traffic_control strategies)"
)]
pub struct TooManyCounters {
    pub ops: usize,
}

/// Every limit that applies to one route.
#[derive(Default)]
pub struct RouteLimits {
    service: Option<QpsLimit>,
    api: Option<QpsLimit>,
    traffic: Option<Arc<TrafficPolicy>>,
    param: Option<Arc<ParamPolicy>>,
    plans: Vec<Arc<PlanLimits>>,
}

impl RouteLimits {
    /// `plans`: the usage plans bound to the route's service. Refuses a route
    /// whose counter plan could exceed [`MAX_OPS`](plan::MAX_OPS).
    pub fn new(
        service: Option<QpsLimit>,
        api: Option<QpsLimit>,
        traffic: Option<Arc<TrafficPolicy>>,
        param: Option<Arc<ParamPolicy>>,
        plans: Vec<Arc<PlanLimits>>,
    ) -> Result<RouteLimits, TooManyCounters> {
        let limits = RouteLimits {
            service,
            api,
            traffic,
            param,
            plans,
        };
        match limits.max_ops() {
            ops if ops > MAX_OPS => Err(TooManyCounters { ops }),
            _ => Ok(limits),
        }
    }

    /// Most counter operations one request can need on this route (one usage
    /// plan applies per request).
    pub fn max_ops(&self) -> usize {
        let plan = self.plans.iter().map(|p| p.max_ops()).max().unwrap_or(0);
        plan + self.service.as_ref().map_or(0, QpsLimit::max_ops)
            + self.api.as_ref().map_or(0, QpsLimit::max_ops)
            + self.traffic.as_ref().map_or(0, |t| t.max_ops())
            + self.param.as_ref().map_or(0, |p| p.max_ops())
    }

    pub fn is_empty(&self) -> bool {
        self.service.is_none()
            && self.api.is_none()
            && self.traffic.is_none()
            && self.param.is_none()
            && self.plans.is_empty()
    }

    pub fn plan(&self, name: &str) -> Option<&Arc<PlanLimits>> {
        self.plans.iter().find(|p| p.name() == name)
    }

    /// The route's `traffic_control` policy (read by the admin usage view).
    pub fn traffic(&self) -> Option<&Arc<TrafficPolicy>> {
        self.traffic.as_ref()
    }

    /// Puts the request's counter operations into `plan`, in check order, and
    /// names the usage plan that applied.
    pub(crate) fn add_ops<'a, 'r>(
        &'a self,
        req: &LimitRequest<'r>,
        plan: &mut impl Plan<'a, 'r>,
    ) -> Option<&'a str> {
        let usage_plan = req.plan.and_then(|n| self.plan(n));
        let keyed = usage_plan.zip(req.key_id);
        if let Some((p, key)) = keyed {
            p.add_qps(key, plan);
        }
        if let Some(s) = &self.service {
            s.add_ops(plan);
        }
        if let Some(a) = &self.api {
            a.add_ops(plan);
        }
        if let Some(t) = &self.traffic {
            t.add_ops(req.app, req.client_ip, plan);
        }
        if let Some(p) = &self.param {
            p.add_ops(req, plan);
        }
        if let Some((p, key)) = keyed {
            p.add_quota(key, plan);
        }
        usage_plan.map(|p| p.name())
    }

    /// The request's counter operations collected (nothing is counted).
    pub(crate) fn ops<'a, 'r>(&'a self, req: &LimitRequest<'r>) -> CounterPlan<'a, 'r> {
        let mut ops = CounterPlan::new();
        let usage_plan = self.add_ops(req, &mut ops);
        ops.set_usage_plan(usage_plan);
        debug_assert!(
            ops.len() <= self.max_ops(),
            "a policy plans past its max_ops"
        );
        ops
    }

    /// Counts the request here, on an explicit clock, against every applicable
    /// policy (the executor's local mode). Refused: nothing was counted, the
    /// report names the refusing policy and carries its `retry_after`.
    pub fn check<'a>(&'a self, req: &LimitRequest<'_>, now: Timestamp) -> LimitReport<'a> {
        let mut tally = Tally::new(now);
        let usage_plan = self.add_ops(req, &mut tally);
        tally.finish(usage_plan)
    }
}

#[cfg(test)]
mod tests;
