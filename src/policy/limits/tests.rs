use super::*;
use crate::config::compile::{param_policy, traffic_policy};
use crate::config::raw::{
    RawParamTrafficControl, RawSpecApp, RawSpecIp, RawStrategy, RawStrategyParam,
    RawTrafficControl, RawUsagePlan,
};
use http::{HeaderMap, Method};
use std::net::IpAddr;
use std::num::NonZeroU32;

fn route(
    service: Option<QpsLimit>,
    api: Option<QpsLimit>,
    traffic: Option<Arc<TrafficPolicy>>,
    param: Option<Arc<ParamPolicy>>,
    plans: Vec<Arc<PlanLimits>>,
) -> RouteLimits {
    RouteLimits::new(service, api, traffic, param, plans).expect("within the bound")
}

/// `n` path strategies with no condition, past the number the compiler
/// accepts (for tests of the route bound).
fn with_strategies(n: u32, limit: u64, state: &LimitState) -> Arc<ParamPolicy> {
    use crate::policy::param::{ParamSource, ParamSpec, StrategySpec};
    let limit = std::num::NonZeroU64::new(limit).expect("positive");
    let strategies = (0..n)
        .map(|i| StrategySpec {
            name: format!("s{i}"),
            weight: n - i,
            condition: None,
            source: ParamSource::Path,
            limit,
            window: crate::store::cells::Window::new(60),
        })
        .collect();
    let spec = ParamSpec {
        name: "many".into(),
        default: None,
        strategies,
        settings: "test".into(),
    };
    ParamPolicy::new(spec, state)
}

fn nz(qps: u32) -> NonZeroU32 {
    NonZeroU32::new(qps).expect("positive")
}

/// The report of an admitted check.
#[track_caller]
fn must_pass(r: LimitReport<'_>) -> LimitReport<'_> {
    assert!(!r.refused, "refused by {:?}", r.policy());
    r
}

/// The report of a refused check.
#[track_caller]
fn must_refuse(r: LimitReport<'_>) -> LimitReport<'_> {
    assert!(r.refused, "admitted ({:?})", r.policy());
    r
}

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
        .filter(|_| !limits.check(&req.lr(), now).refused)
        .count()
}

#[test]
fn doc_example_tightest_wins() {
    // plugin 500/s, service 100 QPS, API 50 QPS → 50 effective
    let st = LimitState::in_memory();
    let limits = route(
        Some(QpsLimit::service(&st, "demo", nz(100))),
        Some(QpsLimit::api(&st, "demo", "echo", nz(50))),
        Some(traffic_policy(&tc("flow", "second", 500), &st).unwrap()),
        None,
        vec![],
    );
    let req = Req::new();
    let ok = must_pass(limits.check(&req.lr(), at(0)));
    let (p, u) = ok.tightest.unwrap();
    assert_eq!((p.kind, p.name), (PolicyKind::ApiQps, "api"));
    assert_eq!((u.limit, u.remaining, u.reset), (50, 49, Some(1)));
    assert_eq!(admitted(&limits, &req, at(0), 100), 49);
    let err = must_refuse(limits.check(&req.lr(), at(0)));
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
    );
    let mut t = tc("flow", "minute", 10);
    t.expire = 1;
    let limits = route(
        None,
        None,
        Some(traffic_policy(&t, &st).unwrap()),
        None,
        vec![plan.clone()],
    );
    let mut req = Req::new();
    req.key = Some("AKID1");
    req.plan = Some("gold");
    // at 00:00:45 the minute window resets in 15 s
    let r = must_pass(limits.check(&req.lr(), at(45_000)));
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

    must_pass(limits.check(&req.lr(), at(45_000)));
    must_pass(limits.check(&req.lr(), at(45_000)));
    let refused = must_refuse(limits.check(&req.lr(), at(45_000)));
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
    let other = route(
        None,
        None,
        Some(traffic_policy(&t, &st).unwrap()),
        None,
        vec![],
    );
    let anon = Req::new();
    let r = must_pass(other.check(&anon.lr(), at(45_000)));
    let mut h = HeaderMap::new();
    r.write_headers(&mut h);
    assert!(h.get("x-usageplan-id").is_none());
    assert_eq!(h["x-ratelimit-limit"], "10");
    assert_eq!(h["x-ratelimit-remaining"], "6");
    assert_eq!(h["x-ratelimit-reset"], "15");
    assert_eq!(h["ratelimit-policy"], "\"flow.api\";q=10;w=60");
    assert_eq!(h["ratelimit"], "\"flow.api\";r=6;t=15");
    for _ in 0..6 {
        must_pass(other.check(&anon.lr(), at(50_000)));
    }
    let e = must_refuse(other.check(&anon.lr(), at(50_000)));
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
    let tp = traffic_policy(&t, &st).unwrap();
    let limits = route(None, None, Some(tp.clone()), None, vec![]);
    let mut req = Req::new();
    req.key = Some("plain");
    assert_eq!(admitted(&limits, &req, at(0), 10), 2);
    let e = must_refuse(limits.check(&req.lr(), at(0)));
    assert_eq!(e.policy().unwrap().kind, PolicyKind::TrafficApp);
    assert_eq!(e.message(), "app rate limit exceeded (policy flow.app)");
    // special app, other IP: 5 for the app... but its IP limit (3) still applies
    req.key = Some("vip");
    req.ip = "10.0.0.2".parse().unwrap();
    assert_eq!(admitted(&limits, &req, at(0), 10), 3);
    req.ip = "10.0.0.3".parse().unwrap();
    assert_eq!(admitted(&limits, &req, at(0), 10), 2);
    assert_eq!(
        must_refuse(limits.check(&req.lr(), at(0)))
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
    let limits = route(
        None,
        None,
        Some(traffic_policy(&t2, &st).unwrap()),
        None,
        vec![],
    );
    let req = Req::new();
    assert_eq!(admitted(&limits, &req, at(0), 10), 4);
    assert_eq!(
        must_refuse(limits.check(&req.lr(), at(0)))
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
    let limits = route(
        None,
        None,
        Some(traffic_policy(&t, &st).unwrap()),
        None,
        vec![],
    );
    let mut req = Req::new();
    // rotating addresses inside one /64 share the counter
    for i in 1..=3u16 {
        req.ip = format!("2001:db8:1:2::{i:x}").parse().unwrap();
        assert!(!limits.check(&req.lr(), at(0)).refused);
    }
    req.ip = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
    assert!(limits.check(&req.lr(), at(0)).refused);
    // another /64 is another client
    req.ip = "2001:db8:1:3::1".parse().unwrap();
    assert!(!limits.check(&req.lr(), at(0)).refused);
    // without bucketing every address counts alone; v4-mapped counts as v4
    let mut t = tc("v6b", "minute", 1000);
    t.ip_rate_limit = Some(1);
    let tp = traffic_policy(&t, &st).unwrap();
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
    let pp = param_policy(&raw, &st).unwrap();
    assert_eq!(pp.order(), vec!["posts", "by-path", "by-user"]);
    let limits = route(None, None, None, Some(pp.clone()), vec![]);
    let mut req = Req::new();
    req.headers.insert("x-user", "alice".parse().unwrap());
    assert!(!limits.check(&req.lr(), at(0)).refused);
    assert!(!limits.check(&req.lr(), at(0)).refused);
    let e = must_refuse(limits.check(&req.lr(), at(0)));
    assert_eq!(e.policy().unwrap().name, "pflow.by-user");
    assert_eq!(
        e.message(),
        "parameter rate limit exceeded (policy pflow.by-user)"
    );
    assert_eq!(pp.count("by-user", "alice", at(0)), 2);
    // another value has its own counter; the path strategy (3) now refuses
    req.headers.insert("x-user", "bob".parse().unwrap());
    assert!(!limits.check(&req.lr(), at(0)).refused);
    let e = must_refuse(limits.check(&req.lr(), at(0)));
    assert_eq!(e.policy().unwrap().name, "pflow.by-path");
    assert_eq!(pp.count("by-path", "/echo", at(0)), 3);
    assert_eq!(
        pp.count("by-user", "bob", at(0)),
        1,
        "refused request was undone"
    );
    // condition false → strategy skipped; missing parameter → not counted
    req.headers.insert("x-user", "admin".parse().unwrap());
    assert!(!limits.check(&req.lr(), at(0)).refused);
    assert!(!limits.check(&req.lr(), at(0)).refused);
    req.headers.clear();
    req.path = "/other".into();
    for _ in 0..3 {
        assert!(!limits.check(&req.lr(), at(0)).refused);
    }
    // highest weight first: POST with page=1 is refused by "posts" before the others
    req.method = Method::POST;
    req.query = Some("page=1&x=y".into());
    req.path = "/third".into();
    assert!(!limits.check(&req.lr(), at(0)).refused);
    let e = must_refuse(limits.check(&req.lr(), at(0)));
    assert_eq!(e.policy().unwrap().name, "pflow.posts");
    req.query = Some("page=2".into());
    assert!(!limits.check(&req.lr(), at(0)).refused);
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
    let limits = route(
        None,
        None,
        None,
        Some(param_policy(&raw, &st).unwrap()),
        vec![],
    );
    let req = Req::new();
    assert_eq!(admitted(&limits, &req, at(0), 5), 2);
    let e = must_refuse(limits.check(&req.lr(), at(0)));
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
    );
    let limits = route(None, None, None, None, vec![plan]);
    let mut req = Req::new();
    req.plan = Some("silver");
    req.key = Some("k1");
    assert_eq!(admitted(&limits, &req, at(0), 5), 2);
    let e = must_refuse(limits.check(&req.lr(), at(0)));
    assert_eq!(e.message(), "usage plan rate limit exceeded");
    req.key = Some("k2");
    assert_eq!(admitted(&limits, &req, at(0), 5), 2);
    assert_eq!(admitted(&limits, &req, at(500), 5), 1);
    // unknown plan name: no plan applies
    req.plan = Some("nope");
    let r = must_pass(limits.check(&req.lr(), at(0)));
    assert!(r.plan.is_none() && r.tightest.is_none());
}

#[test]
fn identity_same_settings_share_changed_settings_fresh() {
    let st = LimitState::in_memory();
    let a = traffic_policy(&tc("flow", "minute", 5), &st).unwrap();
    let la = route(None, None, Some(a), None, vec![]);
    let req = Req::new();
    assert_eq!(admitted(&la, &req, at(0), 3), 3);
    // "reload": same settings → same counters while the old snapshot lives
    let b = traffic_policy(&tc("flow", "minute", 5), &st).unwrap();
    let lb = route(None, None, Some(b), None, vec![]);
    assert_eq!(admitted(&lb, &req, at(0), 5), 2);
    // changed settings → fresh counters
    let c = traffic_policy(&tc("flow", "minute", 6), &st).unwrap();
    let lc = route(None, None, Some(c), None, vec![]);
    assert_eq!(admitted(&lc, &req, at(0), 10), 6);
    // QPS of a service is shared by all its APIs
    let s1 = QpsLimit::service(&st, "svc", nz(2));
    let s2 = QpsLimit::service(&st, "svc", nz(2));
    let r1 = route(Some(s1), None, None, None, vec![]);
    let r2 = route(Some(s2), None, None, None, vec![]);
    assert!(!r1.check(&req.lr(), at(0)).refused);
    assert!(!r2.check(&req.lr(), at(0)).refused);
    assert!(r1.check(&req.lr(), at(0)).refused);
}

#[test]
fn empty_route_admits_without_headers() {
    let limits = RouteLimits::default();
    assert!(limits.is_empty());
    let req = Req::new();
    let r = must_pass(limits.check(&req.lr(), at(0)));
    let mut h = HeaderMap::new();
    r.write_headers(&mut h);
    assert!(h.is_empty());
}

#[test]
fn the_largest_valid_route_fits_the_bound_and_more_is_refused() {
    let st = LimitState::in_memory();
    // Every policy at its largest: 2 + 1 + 1 + 3 + (1 + 10) operations.
    let mut t = tc("flow", "minute", 1000);
    t.app_rate_limit = Some(1000);
    t.ip_rate_limit = Some(1000);
    let raw = RawParamTrafficControl {
        rejected_code: None,
        rejected_msg: None,
        name: "pflow".into(),
        default_window: 60,
        default_rate_limit: 1000,
        strategies: (0..10)
            .map(|i| strategy(&format!("s{i}"), i, "", "path", "", 1000))
            .collect(),
    };
    let plan = PlanLimits::compile(
        &RawUsagePlan {
            name: "gold".into(),
            qps: Some(1000),
            quota: Some(1000),
            keys: vec![],
        },
        &st,
    );
    let service = || Some(QpsLimit::service(&st, "svc", nz(1000)));
    let api = || Some(QpsLimit::api(&st, "svc", "a", nz(1000)));
    let limits = route(
        service(),
        api(),
        Some(traffic_policy(&t, &st).unwrap()),
        Some(param_policy(&raw, &st).unwrap()),
        vec![plan.clone()],
    );
    assert_eq!(limits.max_ops(), 18);
    let mut req = Req::new();
    req.key = Some("AKID1");
    req.plan = Some("gold");
    assert_eq!(limits.ops(&req.lr()).len(), 18);
    must_pass(limits.check(&req.lr(), at(0)));

    // 7 operations besides the strategies: 17 strategies fill the bound exactly,
    // 18 are one too many, refused when the route is built (not capped later).
    let traffic = || Some(traffic_policy(&t, &st).unwrap());
    let too_many = RouteLimits::new(
        service(),
        api(),
        traffic(),
        Some(with_strategies(18, 1000, &st)),
        vec![plan.clone()],
    );
    let e = too_many.err().expect("over the bound");
    assert_eq!(e, TooManyCounters { ops: MAX_OPS + 1 });
    assert!(e.to_string().contains("25 counters") && e.to_string().contains("24"));

    // At the bound, a refusal by the last operation gives back all the others.
    let quota_one = PlanLimits::compile(
        &RawUsagePlan {
            name: "one".into(),
            qps: Some(1000),
            quota: Some(1),
            keys: vec![],
        },
        &st,
    );
    let many = with_strategies(17, 1000, &st);
    let full = route(
        service(),
        api(),
        traffic(),
        Some(many.clone()),
        vec![quota_one.clone()],
    );
    assert_eq!(full.max_ops(), MAX_OPS);
    req.plan = Some("one");
    req.path = "/full".into();
    assert_eq!(full.ops(&req.lr()).len(), MAX_OPS);
    let r = must_pass(full.check(&req.lr(), at(0)));
    assert_eq!(r.policy().unwrap().kind, PolicyKind::PlanQuota);
    let e = must_refuse(full.check(&req.lr(), at(0)));
    assert!(e.is_quota());
    assert_eq!(quota_one.used("AKID1"), 1);
    for s in many.order() {
        assert_eq!(many.count(s, "/full", at(0)), 1, "{s} given back");
    }
    let tp = full.traffic().unwrap();
    assert_eq!(
        tp.counts(Some("AKID1"), req.ip, at(0)),
        (2, 2, 2),
        "both routes' admitted requests; the refused one given back"
    );
}
