//! What a limit check answers: the policy that decided (the tightest one when
//! admitted, the refusing one otherwise) and the rate-limit headers naming it.

use crate::header_list::HeaderSink;
use crate::store::Usage;
use http::HeaderValue;

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

/// The outcome of a limit check: the usage plan that applied and the tightest
/// policy (on refusal: the refusing one).
#[derive(Clone, Copy, Debug)]
pub struct LimitReport<'a> {
    pub plan: Option<&'a str>,
    pub tightest: Option<(PolicyRef<'a>, Usage)>,
    /// The request is refused (429); nothing was counted for it.
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
    pub fn write_headers<H: HeaderSink + ?Sized>(&self, h: &mut H) {
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
            h.put(PLAN, plan);
        }
        let Some((p, u)) = self.tightest else { return };
        h.put(LIMIT, HeaderValue::from(u.limit));
        h.put(REMAINING, HeaderValue::from(u.remaining));
        if self.plan.is_some() {
            // The documents' `X-RateLimit-Used`, on usage-plan APIs.
            h.put(USED, HeaderValue::from(u.limit.saturating_sub(u.remaining)));
        }
        if let Some(r) = u.reset {
            h.put(RESET, HeaderValue::from(r));
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
            h.put(POLICY, v);
        }
        if let Ok(v) = HeaderValue::from_str(&state) {
            h.put(STATE, v);
        }
        if self.refused {
            if let Some(r) = u.retry_after {
                h.put(http::header::RETRY_AFTER, HeaderValue::from(r));
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
