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

use super::expr;
pub use super::param::ParamPolicy;
pub use super::quota::PlanLimits;
pub use super::traffic::TrafficPolicy;
use crate::store::cells::{GcraCell, GcraRate, QuotaCell, Window, WindowCell};
use crate::store::table::Single;
pub use crate::store::{LimitState, StateOptions, Timestamp, Usage};
use http::{HeaderMap, HeaderValue, Method};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::fmt::Write as _;
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

    /// Adds `X-UsagePlan-ID`, `X-RateLimit-Limit/Remaining/Reset`, `RateLimit-Policy`,
    /// `RateLimit` and, on refusal, `Retry-After` (absent for a spent lifetime quota).
    pub fn write_headers(&self, h: &mut HeaderMap) {
        if let Some(plan) = self.plan.and_then(|p| HeaderValue::from_str(p).ok()) {
            h.insert("x-usageplan-id", plan);
        }
        let Some((p, u)) = self.tightest else { return };
        h.insert("x-ratelimit-limit", HeaderValue::from(u.limit));
        h.insert("x-ratelimit-remaining", HeaderValue::from(u.remaining));
        if let Some(r) = u.reset {
            h.insert("x-ratelimit-reset", HeaderValue::from(r));
        }
        let name = sf_string(p.name);
        let mut policy = format!("{name};q={}", u.limit);
        if let Some(w) = u.window {
            let _ = write!(policy, ";w={w}");
        }
        let mut state = format!("{name};r={}", u.remaining);
        if let Some(r) = u.reset {
            let _ = write!(state, ";t={r}");
        }
        if let Ok(v) = HeaderValue::from_str(&policy) {
            h.insert("ratelimit-policy", v);
        }
        if let Ok(v) = HeaderValue::from_str(&state) {
            h.insert("ratelimit", v);
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
    let mut out = String::with_capacity(s.len() + 2);
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
        Self::make(state, PolicyKind::ApiQps, "api", &format!("{service}/{api}"), qps)
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
        run.gcra(p, CellRef::Borrowed(self.cell.cell()), &self.rate, now)
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

enum Held<'a> {
    Gcra(CellRef<'a, GcraCell>, &'a GcraRate),
    Window(CellRef<'a, WindowCell>, u32),
}

const MAX_HELD: usize = 24;

/// Acquisitions of one check: what to undo on refusal, and the tightest usage.
pub(crate) struct Run<'a> {
    held: [Option<Held<'a>>; MAX_HELD],
    n: usize,
    best: Option<(PolicyRef<'a>, Usage)>,
    refused: Option<(PolicyRef<'a>, Usage)>,
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
        }
    }

    fn admitted(&mut self, p: PolicyRef<'a>, u: Usage, held: Option<Held<'a>>) {
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

    fn refuse(&mut self, p: PolicyRef<'a>, u: Usage) -> Result<(), Refused> {
        self.refused = Some((p, u));
        Err(Refused)
    }

    pub(crate) fn gcra(
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

    pub(crate) fn window(
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
    pub(crate) fn quota(&mut self, p: PolicyRef<'a>, cell: &QuotaCell, limit: u64) -> Result<(), Refused> {
        match cell.acquire(limit) {
            Ok(u) => {
                self.admitted(p, u, None);
                Ok(())
            }
            Err(u) => self.refuse(p, u),
        }
    }

    fn rollback(&mut self) {
        for h in self.held[..self.n].iter_mut().filter_map(Option::take) {
            match h {
                Held::Gcra(c, rate) => c.undo(rate),
                Held::Window(c, idx) => c.undo(idx),
            }
        }
        self.n = 0;
    }
}

