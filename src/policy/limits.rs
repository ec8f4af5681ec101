//! The flow-control layer as the handler and the config compiler see it.
//!
//! Config compiler (once per reload, against the long-lived [`LimitState`]):
//! ```text
//! let plan  = PlanLimits::compile(&raw_plan, &state)?;            // per usage plan
//! let svc   = QpsLimit::service(&state, "demo", qps)?;            // per service (clone per route)
//! let api   = QpsLimit::api(&state, "demo", "echo", qps)?;        // per API
//! let tc    = TrafficPolicy::compile(&raw_tc, &state)?;           // per traffic_control plugin
//! let pc    = ParamPolicy::compile(&raw_pc, &state)?;             // per param_traffic_control plugin
//! let route = RouteLimits::new(Some(svc), Some(api), Some(tc), None, vec![plan]);
//! ```
//! Handler (per request, after routing and authentication):
//! ```text
//! match route.limits.check(&LimitRequest { .. }, Timestamp::now()) {
//!     Ok(report)  => { forward; report.write_headers(resp.headers_mut()) }
//!     Err(report) => 429 with report.code() / report.message(), report.write_headers(..)
//! }
//! ```
//! Every policy that applies is acquired in a fixed order (usage-plan QPS, service
//! QPS, API QPS, traffic_control, param_traffic_control, usage-plan quota); when one
//! refuses, the acquisitions already made are undone, so a refused request counts
//! against nothing (and never burns quota). The headers name the *tightest* policy:
//! the one with the fewest requests remaining (ties: the one resetting last).
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

use super::expr;
pub use super::param::ParamPolicy;
pub use super::quota::PlanLimits;
pub(crate) use super::shared::CounterId;
use super::shared::{LocalCell, SharedOps};
pub use super::shared::{Shared, SharedOp, SharedOutcome};
pub use super::traffic::TrafficPolicy;
use crate::store::cells::{GcraCell, GcraRate, QuotaCell, Window, WindowCell};
use crate::store::table::Single;
pub use crate::store::{LimitState, StateOptions, Timestamp, Usage};
use http::{HeaderMap, HeaderValue, Method};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

/// What the handler knows of the request when it checks the limits.
#[derive(Clone, Copy)]
pub struct LimitRequest<'a> {
    /// Authenticated key id (usage-plan QPS and quota are per key).
    pub key_id: Option<&'a str>,
    /// The key's app (traffic_control's app dimension).
    pub app: Option<&'a str>,
    /// Name of the usage plan the key is under on this service.
    pub plan: Option<&'a str>,
    pub client_ip: IpAddr,
    pub method: &'a Method,
    /// Path after environment-prefix removal.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// Raw query string (without `?`).
    pub query: Option<&'a str>,
}

impl expr::Context for LimitRequest<'_> {
    fn header(&self, name: &http::HeaderName) -> Option<Cow<'_, str>> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
    }
    fn query(&self, name: &str) -> Option<Cow<'_, str>> {
        let q = self.query?;
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
    fn path(&self) -> &str {
        self.path
    }
    fn method(&self) -> &str {
        self.method.as_str()
    }
    fn client_ip(&self) -> IpAddr {
        self.client_ip
    }
}

/// Which kind of policy a usage (or a refusal) belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyKind {
    PlanQps,
    PlanQuota,
    ServiceQps,
    ApiQps,
    TrafficApi,
    TrafficApp,
    TrafficIp,
    ParamDefault,
    ParamStrategy,
}

impl PolicyKind {
    /// A lifetime quota (code `LimitExceeded`) rather than a rate.
    pub fn is_quota(self) -> bool {
        self == PolicyKind::PlanQuota
    }
    /// Error code of the cloud API vocabulary (SPEC §3.5).
    pub fn code(self) -> &'static str {
        if self.is_quota() {
            "LimitExceeded"
        } else {
            "RequestLimitExceeded"
        }
    }
    fn what(self) -> &'static str {
        match self {
            PolicyKind::PlanQps => "usage plan rate limit exceeded",
            PolicyKind::PlanQuota => "usage plan quota exceeded",
            PolicyKind::ServiceQps => "service rate limit exceeded",
            PolicyKind::ApiQps | PolicyKind::TrafficApi => "api rate limit exceeded",
            PolicyKind::TrafficApp => "app rate limit exceeded",
            PolicyKind::TrafficIp => "client ip rate limit exceeded",
            PolicyKind::ParamDefault => "api rate limit exceeded",
            PolicyKind::ParamStrategy => "parameter rate limit exceeded",
        }
    }
}

/// A policy as named in the headers (`RateLimit-Policy: "api";q=50;w=1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyRef<'a> {
    pub kind: PolicyKind,
    pub name: &'a str,
}

/// The outcome of [`RouteLimits::check`]: the usage plan that applied and the
/// tightest policy (on refusal: the refusing one).
#[derive(Clone, Copy, Debug)]
pub struct LimitReport<'a> {
    pub plan: Option<&'a str>,
    pub tightest: Option<(PolicyRef<'a>, Usage)>,
    pub refused: bool,
}

impl LimitReport<'_> {
    pub fn policy(&self) -> Option<PolicyRef<'_>> {
        self.tightest.map(|(p, _)| p)
    }
    pub fn is_quota(&self) -> bool {
        self.refused && self.tightest.is_some_and(|(p, _)| p.kind.is_quota())
    }
    /// `LimitExceeded` for a spent quota, `RequestLimitExceeded` otherwise.
    pub fn code(&self) -> &'static str {
        self.tightest
            .map_or("RequestLimitExceeded", |(p, _)| p.kind.code())
    }
    /// Human message for a refusal, e.g. `api rate limit exceeded`.
    pub fn message(&self) -> String {
        match self.tightest {
            None => "rate limit exceeded".into(),
            Some((p, _)) => match p.kind {
                PolicyKind::TrafficApi
                | PolicyKind::TrafficApp
                | PolicyKind::TrafficIp
                | PolicyKind::ParamDefault
                | PolicyKind::ParamStrategy => format!("{} (policy {})", p.kind.what(), p.name),
                _ => p.kind.what().to_string(),
            },
        }
    }
    pub fn retry_after(&self) -> Option<u64> {
        self.tightest.and_then(|(_, u)| u.retry_after)
    }

    /// Adds `X-UsagePlan-ID`, `X-RateLimit-Limit/Remaining/Reset` (and `Used` on
    /// usage-plan APIs), `RateLimit-Policy`,
    /// `RateLimit` and, on refusal, `Retry-After` (absent for a spent lifetime quota).
    pub fn write_headers(&self, h: &mut HeaderMap) {
        // Constant names: a `&str` key is parsed and validated on every insert.
        use http::HeaderName as N;
        const PLAN: N = N::from_static("x-usageplan-id");
        const LIMIT: N = N::from_static("x-ratelimit-limit");
        const REMAINING: N = N::from_static("x-ratelimit-remaining");
        const USED: N = N::from_static("x-ratelimit-used");
        const RESET: N = N::from_static("x-ratelimit-reset");
        const POLICY: N = N::from_static("ratelimit-policy");
        const STATE: N = N::from_static("ratelimit");
        if let Some(plan) = self.plan.and_then(|p| HeaderValue::from_str(p).ok()) {
            h.insert(PLAN, plan);
        }
        let Some((p, u)) = self.tightest else { return };
        h.insert(LIMIT, HeaderValue::from(u.limit));
        h.insert(REMAINING, HeaderValue::from(u.remaining));
        if self.plan.is_some() {
            // The documents' `X-RateLimit-Used`, on usage-plan APIs.
            h.insert(USED, HeaderValue::from(u.limit.saturating_sub(u.remaining)));
        }
        if let Some(r) = u.reset {
            h.insert(RESET, HeaderValue::from(r));
        }
        // `"name";q=N;w=W` and `"name";r=N;t=T`, built without `format!`.
        let mut policy = sf_string(p.name);
        let mut state = policy.clone();
        let mut num = itoa::Buffer::new();
        policy.push_str(";q=");
        policy.push_str(num.format(u.limit));
        if let Some(w) = u.window {
            policy.push_str(";w=");
            policy.push_str(num.format(w));
        }
        state.push_str(";r=");
        state.push_str(num.format(u.remaining));
        if let Some(r) = u.reset {
            state.push_str(";t=");
            state.push_str(num.format(r));
        }
        if let Ok(v) = HeaderValue::from_str(&policy) {
            h.insert(POLICY, v);
        }
        if let Ok(v) = HeaderValue::from_str(&state) {
            h.insert(STATE, v);
        }
        if self.refused {
            if let Some(r) = u.retry_after {
                h.insert(http::header::RETRY_AFTER, HeaderValue::from(r));
            }
        }
    }
}

/// A structured-field string: printable ASCII, `"` and `\` escaped.
fn sf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 32);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
    out
}

/// Stable identity of a policy's counters: kind, name and a hash of the settings
/// that shape them. Same settings → same counters across reloads and restarts.
pub(crate) fn identity(kind: &str, name: &str, settings: &str) -> String {
    let digest = Sha256::digest(settings.as_bytes());
    format!("{kind}:{name}:{}", hex::encode(&digest[..8]))
}

/// Per-second QPS of a service or an API (GCRA, burst = one second's worth).
#[derive(Clone)]
pub struct QpsLimit {
    kind: PolicyKind,
    name: Box<str>,
    rate: GcraRate,
    cell: Arc<Single<GcraCell>>,
}

impl QpsLimit {
    /// Service-wide QPS; every API of the service shares the same bucket.
    pub fn service(state: &LimitState, service: &str, qps: u32) -> Result<QpsLimit, String> {
        Self::make(state, PolicyKind::ServiceQps, "service", service, qps)
    }

    /// QPS of one API.
    pub fn api(state: &LimitState, service: &str, api: &str, qps: u32) -> Result<QpsLimit, String> {
        Self::make(
            state,
            PolicyKind::ApiQps,
            "api",
            &format!("{service}/{api}"),
            qps,
        )
    }

    fn make(
        state: &LimitState,
        kind: PolicyKind,
        label: &str,
        name: &str,
        qps: u32,
    ) -> Result<QpsLimit, String> {
        if qps == 0 {
            return Err("qps: must be a positive integer".into());
        }
        let rate = GcraRate::per_second(qps as u64);
        let id = identity(&format!("{label}-qps"), name, &qps.to_string());
        Ok(QpsLimit {
            kind,
            name: label.into(),
            rate,
            cell: state.single(&id, rate),
        })
    }

    pub fn qps(&self) -> u64 {
        self.rate.qps
    }

    fn check<'a>(&'a self, run: &mut Run<'a>, now: Timestamp) -> Result<(), Refused> {
        let p = PolicyRef {
            kind: self.kind,
            name: &self.name,
        };
        let id = CounterId::whole(self.cell.identity());
        run.gcra(p, CellRef::Borrowed(self.cell.cell()), &self.rate, now, id)
    }
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
    /// `plans`: the usage plans bound to the route's service.
    pub fn new(
        service: Option<QpsLimit>,
        api: Option<QpsLimit>,
        traffic: Option<Arc<TrafficPolicy>>,
        param: Option<Arc<ParamPolicy>>,
        plans: Vec<Arc<PlanLimits>>,
    ) -> RouteLimits {
        RouteLimits {
            service,
            api,
            traffic,
            param,
            plans,
        }
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

    /// Cluster mode, first half of a check: per-second QPS is acquired locally
    /// (unless `shared_qps`), windows and quotas are collected, uncounted, in a
    /// [`Shared`] for one decision by Redis. `Err`: a local QPS limit refused.
    pub fn prepare<'a>(
        &'a self,
        req: &LimitRequest<'_>,
        now: Timestamp,
        shared_qps: bool,
    ) -> Result<Shared<'a>, LimitReport<'a>> {
        let plan = req.plan.and_then(|n| self.plan(n));
        let mut run = Run::new();
        run.shared = Some(SharedOps {
            ops: Vec::new(),
            qps: shared_qps,
        });
        let plan_name = plan.map(|p| p.name());
        match self.run(&mut run, plan.map(|p| &**p), req, now) {
            Ok(()) => Ok(Shared {
                plan: plan_name,
                run,
                now,
            }),
            Err(Refused) => {
                let r = LimitReport {
                    plan: plan_name,
                    tightest: run.refused,
                    refused: true,
                };
                run.rollback();
                Err(r)
            }
        }
    }

    /// Counts the request against every applicable policy. `Ok`: admitted (the
    /// report names the tightest policy); `Err`: refused, nothing was counted, the
    /// report names the refusing policy and carries its `retry_after`.
    pub fn check<'a>(
        &'a self,
        req: &LimitRequest<'_>,
        now: Timestamp,
    ) -> Result<LimitReport<'a>, LimitReport<'a>> {
        let plan = req.plan.and_then(|n| self.plan(n));
        let mut run = Run::new();
        let outcome = self.run(&mut run, plan.map(|p| &**p), req, now);
        let report = |refused| LimitReport {
            plan: plan.map(|p| p.name()),
            tightest: if refused { run.refused } else { run.best },
            refused,
        };
        match outcome {
            Ok(()) => Ok(report(false)),
            Err(Refused) => {
                let r = report(true);
                run.rollback();
                Err(r)
            }
        }
    }

    fn run<'a>(
        &'a self,
        run: &mut Run<'a>,
        plan: Option<&'a PlanLimits>,
        req: &LimitRequest<'_>,
        now: Timestamp,
    ) -> Result<(), Refused> {
        let keyed_plan = plan.zip(req.key_id);
        if let Some((plan, key)) = keyed_plan {
            plan.check_qps(key, run, now)?;
        }
        if let Some(s) = &self.service {
            s.check(run, now)?;
        }
        if let Some(a) = &self.api {
            a.check(run, now)?;
        }
        if let Some(t) = &self.traffic {
            t.check(req.app, req.client_ip, run, now)?;
        }
        if let Some(p) = &self.param {
            p.check(req, run, now)?;
        }
        if let Some((plan, key)) = keyed_plan {
            plan.check_quota(key, run, now)?;
        }
        Ok(())
    }
}

/// A refusal already recorded in the [`Run`].
#[derive(Debug)]
pub(crate) struct Refused;

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

pub(super) enum Held<'a> {
    Gcra(CellRef<'a, GcraCell>, &'a GcraRate),
    Window(CellRef<'a, WindowCell>, u32),
}

const MAX_HELD: usize = 24;

/// Acquisitions of one check: what to undo on refusal, and the tightest usage.
pub(crate) struct Run<'a> {
    held: [Option<Held<'a>>; MAX_HELD],
    n: usize,
    pub(super) best: Option<(PolicyRef<'a>, Usage)>,
    pub(super) refused: Option<(PolicyRef<'a>, Usage)>,
    /// Cluster mode: shared counters are collected here instead of counted.
    pub(super) shared: Option<SharedOps<'a>>,
}

fn tighter(a: &Usage, b: &Usage) -> bool {
    let reset = |u: &Usage| u.reset.unwrap_or(u64::MAX);
    a.remaining < b.remaining || (a.remaining == b.remaining && reset(a) > reset(b))
}

impl<'a> Run<'a> {
    fn new() -> Run<'a> {
        Run {
            held: Default::default(),
            n: 0,
            best: None,
            refused: None,
            shared: None,
        }
    }

    /// Counts a collected op with this instance's cells (fall-back).
    pub(super) fn local(&mut self, op: SharedOp<'a>, now: Timestamp) -> Result<(), Refused> {
        match op.local {
            LocalCell::Gcra(c, rate) => self.gcra_local(op.policy, c, rate, now),
            LocalCell::Window(c, w) => self.window_local(op.policy, c, w, op.limit, now),
            LocalCell::Quota(c) => self.quota_local(op.policy, &c, op.limit),
        }
    }

    pub(super) fn admitted(&mut self, p: PolicyRef<'a>, u: Usage, held: Option<Held<'a>>) {
        if self.best.as_ref().is_none_or(|(_, b)| tighter(&u, b)) {
            self.best = Some((p, u));
        }
        if let Some(h) = held {
            if self.n < MAX_HELD {
                self.held[self.n] = Some(h);
                self.n += 1;
            }
        }
    }

    pub(super) fn refuse(&mut self, p: PolicyRef<'a>, u: Usage) -> Result<(), Refused> {
        self.refused = Some((p, u));
        Err(Refused)
    }

    pub(crate) fn gcra(
        &mut self,
        p: PolicyRef<'a>,
        cell: CellRef<'a, GcraCell>,
        rate: &'a GcraRate,
        now: Timestamp,
        id: CounterId<'_>,
    ) -> Result<(), Refused> {
        // Shared QPS: a one-second window in the store (an approximation of
        // GCRA: bursts are not smoothed inside the second).
        if let Some(s) = self.shared.as_mut().filter(|s| s.qps) {
            s.ops.push(SharedOp {
                policy: p,
                key: id.to_key(),
                limit: rate.qps,
                window: 1,
                local: LocalCell::Gcra(cell, rate),
            });
            return Ok(());
        }
        self.gcra_local(p, cell, rate, now)
    }

    fn gcra_local(
        &mut self,
        p: PolicyRef<'a>,
        cell: CellRef<'a, GcraCell>,
        rate: &'a GcraRate,
        now: Timestamp,
    ) -> Result<(), Refused> {
        match cell.acquire(rate, now) {
            Ok(u) => {
                self.admitted(p, u, Some(Held::Gcra(cell, rate)));
                Ok(())
            }
            Err(u) => self.refuse(p, u),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn window(
        &mut self,
        p: PolicyRef<'a>,
        cell: CellRef<'a, WindowCell>,
        w: Window,
        limit: u64,
        now: Timestamp,
        id: CounterId<'_>,
    ) -> Result<(), Refused> {
        if let Some(s) = &mut self.shared {
            s.ops.push(SharedOp {
                policy: p,
                key: id.to_key(),
                limit,
                window: w.secs,
                local: LocalCell::Window(cell, w),
            });
            return Ok(());
        }
        self.window_local(p, cell, w, limit, now)
    }

    fn window_local(
        &mut self,
        p: PolicyRef<'a>,
        cell: CellRef<'a, WindowCell>,
        w: Window,
        limit: u64,
        now: Timestamp,
    ) -> Result<(), Refused> {
        match cell.acquire(w, limit, now) {
            Ok((u, idx)) => {
                self.admitted(p, u, Some(Held::Window(cell, idx)));
                Ok(())
            }
            Err(u) => self.refuse(p, u),
        }
    }

    /// Quotas come last: nothing after them can refuse, so they are never undone.
    pub(crate) fn quota(
        &mut self,
        p: PolicyRef<'a>,
        cell: CellRef<'a, QuotaCell>,
        limit: u64,
        id: CounterId<'_>,
    ) -> Result<(), Refused> {
        if let Some(s) = &mut self.shared {
            s.ops.push(SharedOp {
                policy: p,
                key: id.to_key(),
                limit,
                window: 0,
                local: LocalCell::Quota(cell),
            });
            return Ok(());
        }
        self.quota_local(p, &cell, limit)
    }

    fn quota_local(
        &mut self,
        p: PolicyRef<'a>,
        cell: &QuotaCell,
        limit: u64,
    ) -> Result<(), Refused> {
        match cell.acquire(limit) {
            Ok(u) => {
                self.admitted(p, u, None);
                Ok(())
            }
            Err(u) => self.refuse(p, u),
        }
    }

    pub(super) fn rollback(&mut self) {
        for h in self.held[..self.n].iter_mut().filter_map(Option::take) {
            match h {
                Held::Gcra(c, rate) => c.undo(rate),
                Held::Window(c, idx) => c.undo(idx),
            }
        }
        self.n = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::{
        RawParamTrafficControl, RawSpecApp, RawSpecIp, RawStrategy, RawStrategyParam,
        RawTrafficControl, RawUsagePlan,
    };

    /// 2026-01-01T00:00:00Z + ms
    fn at(ms: u64) -> Timestamp {
        Timestamp::from_millis(1_767_225_600_000 + ms)
    }

    fn tc(name: &str, expire_type: &str, api: u64) -> RawTrafficControl {
        RawTrafficControl {
            rejected_code: None,
            rejected_msg: None,
            name: name.into(),
            expire_type: expire_type.into(),
            expire: 1,
            api_rate_limit: Some(api),
            app_rate_limit: None,
            ip_rate_limit: None,
            spec_app_rate_limits: vec![],
            spec_ip_rate_limits: vec![],
            ipv6_prefix: None,
        }
    }

    struct Req {
        headers: HeaderMap,
        method: Method,
        path: String,
        query: Option<String>,
        ip: IpAddr,
        key: Option<&'static str>,
        plan: Option<&'static str>,
    }

    impl Req {
        fn new() -> Req {
            Req {
                headers: HeaderMap::new(),
                method: Method::GET,
                path: "/echo".into(),
                query: None,
                ip: "10.0.0.1".parse().unwrap(),
                key: None,
                plan: None,
            }
        }
        fn lr(&self) -> LimitRequest<'_> {
            LimitRequest {
                key_id: self.key,
                app: self.key,
                plan: self.plan,
                client_ip: self.ip,
                method: &self.method,
                path: &self.path,
                headers: &self.headers,
                query: self.query.as_deref(),
            }
        }
    }

    fn admitted(limits: &RouteLimits, req: &Req, now: Timestamp, n: usize) -> usize {
        (0..n)
            .filter(|_| limits.check(&req.lr(), now).is_ok())
            .count()
    }

    #[test]
    fn doc_example_tightest_wins() {
        // plugin 500/s, service 100 QPS, API 50 QPS → 50 effective
        let st = LimitState::in_memory();
        let limits = RouteLimits::new(
            Some(QpsLimit::service(&st, "demo", 100).unwrap()),
            Some(QpsLimit::api(&st, "demo", "echo", 50).unwrap()),
            Some(TrafficPolicy::compile(&tc("flow", "second", 500), &st).unwrap()),
            None,
            vec![],
        );
        let req = Req::new();
        let ok = limits.check(&req.lr(), at(0)).unwrap();
        let (p, u) = ok.tightest.unwrap();
        assert_eq!((p.kind, p.name), (PolicyKind::ApiQps, "api"));
        assert_eq!((u.limit, u.remaining, u.reset), (50, 49, Some(1)));
        assert_eq!(admitted(&limits, &req, at(0), 100), 49);
        let err = limits.check(&req.lr(), at(0)).unwrap_err();
        assert!(err.refused);
        assert_eq!(err.policy().unwrap().kind, PolicyKind::ApiQps);
        assert_eq!(err.message(), "api rate limit exceeded");
        assert_eq!(err.code(), "RequestLimitExceeded");
        assert_eq!(err.retry_after(), Some(1));
        // refused requests were not counted by the service or the plugin
        let tp = limits.traffic.as_ref().unwrap();
        assert_eq!(tp.counts(None, req.ip, at(0)).0, 50);
        // a second later, 50 more
        assert_eq!(admitted(&limits, &req, at(1000), 100), 50);
    }

    #[test]
    fn headers_name_the_tightest_policy() {
        let st = LimitState::in_memory();
        let plan = PlanLimits::compile(
            &RawUsagePlan {
                name: "gold".into(),
                qps: Some(1000),
                quota: Some(3),
                keys: vec![],
            },
            &st,
        )
        .unwrap();
        let mut t = tc("flow", "minute", 10);
        t.expire = 1;
        let limits = RouteLimits::new(
            None,
            None,
            Some(TrafficPolicy::compile(&t, &st).unwrap()),
            None,
            vec![plan.clone()],
        );
        let mut req = Req::new();
        req.key = Some("AKID1");
        req.plan = Some("gold");
        // at 00:00:45 the minute window resets in 15 s
        let r = limits.check(&req.lr(), at(45_000)).unwrap();
        let mut h = HeaderMap::new();
        r.write_headers(&mut h);
        assert_eq!(h["x-usageplan-id"], "gold");
        // quota remaining 2 < window remaining 9 → the quota is the tightest
        assert_eq!(h["x-ratelimit-limit"], "3");
        assert_eq!(h["x-ratelimit-remaining"], "2");
        assert!(h.get("x-ratelimit-reset").is_none());
        assert_eq!(h["ratelimit-policy"], "\"plan.gold.quota\";q=3");
        assert_eq!(h["ratelimit"], "\"plan.gold.quota\";r=2");
        assert!(h.get("retry-after").is_none());

        limits.check(&req.lr(), at(45_000)).unwrap();
        limits.check(&req.lr(), at(45_000)).unwrap();
        let refused = limits.check(&req.lr(), at(45_000)).unwrap_err();
        assert!(refused.is_quota());
        assert_eq!(refused.code(), "LimitExceeded");
        assert_eq!(refused.message(), "usage plan quota exceeded");
        assert_eq!(plan.used("AKID1"), 3);
        // the refused request was not counted by the window either
        assert_eq!(
            limits
                .traffic
                .as_ref()
                .unwrap()
                .counts(None, req.ip, at(45_000))
                .0,
            3
        );

        // a route without a plan (same plugin settings → same counters: 3 used)
        let other = RouteLimits::new(
            None,
            None,
            Some(TrafficPolicy::compile(&t, &st).unwrap()),
            None,
            vec![],
        );
        let anon = Req::new();
        let r = other.check(&anon.lr(), at(45_000)).unwrap();
        let mut h = HeaderMap::new();
        r.write_headers(&mut h);
        assert!(h.get("x-usageplan-id").is_none());
        assert_eq!(h["x-ratelimit-limit"], "10");
        assert_eq!(h["x-ratelimit-remaining"], "6");
        assert_eq!(h["x-ratelimit-reset"], "15");
        assert_eq!(h["ratelimit-policy"], "\"flow.api\";q=10;w=60");
        assert_eq!(h["ratelimit"], "\"flow.api\";r=6;t=15");
        for _ in 0..6 {
            other.check(&anon.lr(), at(50_000)).unwrap();
        }
        let e = other.check(&anon.lr(), at(50_000)).unwrap_err();
        let mut h = HeaderMap::new();
        e.write_headers(&mut h);
        assert_eq!(h["retry-after"], "10");
        assert_eq!(h["x-ratelimit-remaining"], "0");
    }

    #[test]
    fn special_app_and_ip_override_generic_limits() {
        let st = LimitState::in_memory();
        let mut t = tc("flow", "second", 1000);
        t.app_rate_limit = Some(2);
        t.ip_rate_limit = Some(3);
        t.spec_app_rate_limits = vec![RawSpecApp {
            app_id: "vip".into(),
            rate_limit: 5,
        }];
        t.spec_ip_rate_limits = vec![
            RawSpecIp {
                ip_key: "172.16.0.0/16".into(),
                rate_limit: 10,
            },
            RawSpecIp {
                ip_key: "172.16.0.1".into(),
                rate_limit: 20,
            },
        ];
        let tp = TrafficPolicy::compile(&t, &st).unwrap();
        let limits = RouteLimits::new(None, None, Some(tp.clone()), None, vec![]);
        let mut req = Req::new();
        req.key = Some("plain");
        assert_eq!(admitted(&limits, &req, at(0), 10), 2);
        let e = limits.check(&req.lr(), at(0)).unwrap_err();
        assert_eq!(e.policy().unwrap().kind, PolicyKind::TrafficApp);
        assert_eq!(e.message(), "app rate limit exceeded (policy flow.app)");
        // special app, other IP: 5 for the app... but its IP limit (3) still applies
        req.key = Some("vip");
        req.ip = "10.0.0.2".parse().unwrap();
        assert_eq!(admitted(&limits, &req, at(0), 10), 3);
        req.ip = "10.0.0.3".parse().unwrap();
        assert_eq!(admitted(&limits, &req, at(0), 10), 2);
        assert_eq!(
            limits
                .check(&req.lr(), at(0))
                .unwrap_err()
                .policy()
                .unwrap()
                .kind,
            PolicyKind::TrafficApp
        );
        // special IPs: most specific entry wins, unauthenticated (no app dimension)
        req.key = None;
        req.ip = "172.16.0.1".parse().unwrap();
        assert_eq!(admitted(&limits, &req, at(0), 30), 20);
        req.ip = "172.16.9.9".parse().unwrap();
        assert_eq!(admitted(&limits, &req, at(0), 30), 10);
        assert_eq!(tp.ip_limit("192.168.1.1".parse().unwrap()), Some(3));
        assert_eq!(tp.app_limit("vip"), Some(5));
        // the API limit still applies to everyone
        let mut t2 = tc("flow2", "second", 4);
        t2.spec_ip_rate_limits = vec![RawSpecIp {
            ip_key: "10.0.0.1".into(),
            rate_limit: 100,
        }];
        let limits = RouteLimits::new(
            None,
            None,
            Some(TrafficPolicy::compile(&t2, &st).unwrap()),
            None,
            vec![],
        );
        let req = Req::new();
        assert_eq!(admitted(&limits, &req, at(0), 10), 4);
        assert_eq!(
            limits
                .check(&req.lr(), at(0))
                .unwrap_err()
                .policy()
                .unwrap()
                .kind,
            PolicyKind::TrafficApi
        );
    }

    #[test]
    fn ipv6_clients_bucketed_by_prefix() {
        let st = LimitState::in_memory();
        let mut t = tc("v6", "minute", 1000);
        t.ip_rate_limit = Some(3);
        t.ipv6_prefix = Some(64);
        let limits = RouteLimits::new(
            None,
            None,
            Some(TrafficPolicy::compile(&t, &st).unwrap()),
            None,
            vec![],
        );
        let mut req = Req::new();
        // rotating addresses inside one /64 share the counter
        for i in 1..=3u16 {
            req.ip = format!("2001:db8:1:2::{i:x}").parse().unwrap();
            assert!(limits.check(&req.lr(), at(0)).is_ok());
        }
        req.ip = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        assert!(limits.check(&req.lr(), at(0)).is_err());
        // another /64 is another client
        req.ip = "2001:db8:1:3::1".parse().unwrap();
        assert!(limits.check(&req.lr(), at(0)).is_ok());
        // without bucketing every address counts alone; v4-mapped counts as v4
        let mut t = tc("v6b", "minute", 1000);
        t.ip_rate_limit = Some(1);
        let tp = TrafficPolicy::compile(&t, &st).unwrap();
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(tp.ip_bucket(a), a);
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(tp.ip_bucket(mapped), "10.1.2.3".parse::<IpAddr>().unwrap());
    }

    fn strategy(
        name: &str,
        weight: u32,
        cond: &str,
        kind: &str,
        pname: &str,
        limit: u64,
    ) -> RawStrategy {
        RawStrategy {
            name: name.into(),
            strategy_weight: weight,
            condition: cond.into(),
            parameters: vec![RawStrategyParam {
                kind: kind.into(),
                name: pname.into(),
            }],
            rate_limit: limit,
            window: 60,
        }
    }

    #[test]
    fn param_strategies_order_and_per_value_counters() {
        let st = LimitState::in_memory();
        let raw = RawParamTrafficControl {
            rejected_code: None,
            rejected_msg: None,
            name: "pflow".into(),
            default_window: 1,
            default_rate_limit: 100,
            strategies: vec![
                strategy("by-user", 10, "", "header", "X-User", 2),
                strategy("posts", 90, "method == 'POST'", "query", "page", 1),
                strategy("by-path", 50, "header.x-user != 'admin'", "path", "", 3),
            ],
        };
        let pp = ParamPolicy::compile(&raw, &st).unwrap();
        assert_eq!(pp.order(), vec!["posts", "by-path", "by-user"]);
        let limits = RouteLimits::new(None, None, None, Some(pp.clone()), vec![]);
        let mut req = Req::new();
        req.headers.insert("x-user", "alice".parse().unwrap());
        assert!(limits.check(&req.lr(), at(0)).is_ok());
        assert!(limits.check(&req.lr(), at(0)).is_ok());
        let e = limits.check(&req.lr(), at(0)).unwrap_err();
        assert_eq!(e.policy().unwrap().name, "pflow.by-user");
        assert_eq!(
            e.message(),
            "parameter rate limit exceeded (policy pflow.by-user)"
        );
        assert_eq!(pp.count("by-user", "alice", at(0)), 2);
        // another value has its own counter; the path strategy (3) now refuses
        req.headers.insert("x-user", "bob".parse().unwrap());
        assert!(limits.check(&req.lr(), at(0)).is_ok());
        let e = limits.check(&req.lr(), at(0)).unwrap_err();
        assert_eq!(e.policy().unwrap().name, "pflow.by-path");
        assert_eq!(pp.count("by-path", "/echo", at(0)), 3);
        assert_eq!(
            pp.count("by-user", "bob", at(0)),
            1,
            "refused request was undone"
        );
        // condition false → strategy skipped; missing parameter → not counted
        req.headers.insert("x-user", "admin".parse().unwrap());
        assert!(limits.check(&req.lr(), at(0)).is_ok());
        assert!(limits.check(&req.lr(), at(0)).is_ok());
        req.headers.clear();
        req.path = "/other".into();
        for _ in 0..3 {
            assert!(limits.check(&req.lr(), at(0)).is_ok());
        }
        // highest weight first: POST with page=1 is refused by "posts" before the others
        req.method = Method::POST;
        req.query = Some("page=1&x=y".into());
        req.path = "/third".into();
        assert!(limits.check(&req.lr(), at(0)).is_ok());
        let e = limits.check(&req.lr(), at(0)).unwrap_err();
        assert_eq!(e.policy().unwrap().name, "pflow.posts");
        req.query = Some("page=2".into());
        assert!(limits.check(&req.lr(), at(0)).is_ok());
        assert_eq!(pp.count("posts", "1", at(0)), 1);
        // the default strategy comes first
        let raw = RawParamTrafficControl {
            rejected_code: None,
            rejected_msg: None,
            name: "p2".into(),
            default_window: 10,
            default_rate_limit: 2,
            strategies: vec![strategy("u", 1, "", "query", "u", 100)],
        };
        let limits = RouteLimits::new(
            None,
            None,
            None,
            Some(ParamPolicy::compile(&raw, &st).unwrap()),
            vec![],
        );
        let req = Req::new();
        assert_eq!(admitted(&limits, &req, at(0), 5), 2);
        let e = limits.check(&req.lr(), at(0)).unwrap_err();
        assert_eq!(e.policy().unwrap().kind, PolicyKind::ParamDefault);
        assert_eq!(e.retry_after(), Some(10));
    }

    #[test]
    fn plan_qps_is_per_key() {
        let st = LimitState::in_memory();
        let plan = PlanLimits::compile(
            &RawUsagePlan {
                name: "silver".into(),
                qps: Some(2),
                quota: None,
                keys: vec![],
            },
            &st,
        )
        .unwrap();
        let limits = RouteLimits::new(None, None, None, None, vec![plan]);
        let mut req = Req::new();
        req.plan = Some("silver");
        req.key = Some("k1");
        assert_eq!(admitted(&limits, &req, at(0), 5), 2);
        let e = limits.check(&req.lr(), at(0)).unwrap_err();
        assert_eq!(e.message(), "usage plan rate limit exceeded");
        req.key = Some("k2");
        assert_eq!(admitted(&limits, &req, at(0), 5), 2);
        assert_eq!(admitted(&limits, &req, at(500), 5), 1);
        // unknown plan name: no plan applies
        req.plan = Some("nope");
        let r = limits.check(&req.lr(), at(0)).unwrap();
        assert!(r.plan.is_none() && r.tightest.is_none());
    }

    #[test]
    fn identity_same_settings_share_changed_settings_fresh() {
        let st = LimitState::in_memory();
        let a = TrafficPolicy::compile(&tc("flow", "minute", 5), &st).unwrap();
        let la = RouteLimits::new(None, None, Some(a), None, vec![]);
        let req = Req::new();
        assert_eq!(admitted(&la, &req, at(0), 3), 3);
        // "reload": same settings → same counters while the old snapshot lives
        let b = TrafficPolicy::compile(&tc("flow", "minute", 5), &st).unwrap();
        let lb = RouteLimits::new(None, None, Some(b), None, vec![]);
        assert_eq!(admitted(&lb, &req, at(0), 5), 2);
        // changed settings → fresh counters
        let c = TrafficPolicy::compile(&tc("flow", "minute", 6), &st).unwrap();
        let lc = RouteLimits::new(None, None, Some(c), None, vec![]);
        assert_eq!(admitted(&lc, &req, at(0), 10), 6);
        // QPS of a service is shared by all its APIs
        let s1 = QpsLimit::service(&st, "svc", 2).unwrap();
        let s2 = QpsLimit::service(&st, "svc", 2).unwrap();
        let r1 = RouteLimits::new(Some(s1), None, None, None, vec![]);
        let r2 = RouteLimits::new(Some(s2), None, None, None, vec![]);
        assert!(r1.check(&req.lr(), at(0)).is_ok());
        assert!(r2.check(&req.lr(), at(0)).is_ok());
        assert!(r1.check(&req.lr(), at(0)).is_err());
        assert!(QpsLimit::api(&st, "svc", "a", 0).is_err());
    }

    #[test]
    fn empty_route_admits_without_headers() {
        let limits = RouteLimits::default();
        assert!(limits.is_empty());
        let req = Req::new();
        let r = limits.check(&req.lr(), at(0)).unwrap();
        let mut h = HeaderMap::new();
        r.write_headers(&mut h);
        assert!(h.is_empty());
    }
}
