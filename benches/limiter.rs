//! Limiter micro benchmarks: the per-request cost of each kind of check.
//! Run: cargo bench --bench limiter -- --warm-up-time 1 --measurement-time 2

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::{HeaderMap, Method};
use keygate::config::compile::{param_policy, traffic_policy};
use keygate::config::raw::{
    RawParamTrafficControl, RawStrategy, RawStrategyParam, RawTrafficControl, RawUsagePlan,
};
use keygate::policy::expr::Expr;
use keygate::policy::limits::{
    LimitRequest, LimitState, PlanLimits, QpsLimit, RouteLimits, Timestamp,
};
use std::net::IpAddr;
use std::num::NonZeroU32;

fn request<'a>(headers: &'a HeaderMap, method: &'a Method, ip: IpAddr) -> LimitRequest<'a> {
    LimitRequest {
        key_id: Some("AKIDdemo"),
        app: Some("mobile"),
        plan: Some("gold"),
        client_ip: ip,
        method,
        path: "/v1/users/42",
        headers,
        query: Some("page=3&user=alice"),
    }
}

fn benches(c: &mut Criterion) {
    let st = LimitState::in_memory();
    let mut headers = HeaderMap::new();
    headers.insert("x-user", "alice".parse().unwrap());
    headers.insert("user-agent", "bench/1.0".parse().unwrap());
    let method = Method::POST;
    let ip: IpAddr = "10.1.2.3".parse().unwrap();
    let req = request(&headers, &method, ip);

    let qps = RouteLimits::new(
        Some(QpsLimit::service(&st, "svc", NonZeroU32::MAX)),
        Some(QpsLimit::api(&st, "svc", "api", NonZeroU32::MAX)),
        None,
        None,
        vec![],
    )
    .unwrap();
    c.bench_function("qps_check_service_and_api", |b| {
        b.iter(|| black_box(qps.check(black_box(&req), Timestamp::now()).refused))
    });

    let tc = traffic_policy(
        &RawTrafficControl {
            rejected_code: None,
            rejected_msg: None,
            name: "flow".into(),
            expire_type: "minute".into(),
            expire: 1,
            api_rate_limit: Some(u64::MAX),
            app_rate_limit: Some(u64::MAX),
            ip_rate_limit: Some(u64::MAX),
            spec_app_rate_limits: vec![],
            spec_ip_rate_limits: vec![],
            ipv6_prefix: Some(64),
        },
        &st,
    )
    .unwrap();
    let window = RouteLimits::new(None, None, Some(tc), None, vec![]).unwrap();
    c.bench_function("window_check_api_app_ip", |b| {
        b.iter(|| black_box(window.check(black_box(&req), Timestamp::now()).refused))
    });

    let pc = param_policy(
        &RawParamTrafficControl {
            rejected_code: None,
            rejected_msg: None,
            name: "pflow".into(),
            default_window: 0,
            default_rate_limit: 0,
            strategies: vec![RawStrategy {
                name: "by-user".into(),
                strategy_weight: 10,
                condition: "method == 'POST' && query.page > 1".into(),
                parameters: vec![RawStrategyParam {
                    kind: "header".into(),
                    name: "x-user".into(),
                }],
                rate_limit: u64::MAX,
                window: 60,
            }],
        },
        &st,
    )
    .unwrap();
    let param = RouteLimits::new(None, None, None, Some(pc), vec![]).unwrap();
    c.bench_function("param_strategy_check", |b| {
        b.iter(|| black_box(param.check(black_box(&req), Timestamp::now()).refused))
    });

    let plan = PlanLimits::compile(
        &RawUsagePlan {
            name: "gold".into(),
            qps: Some(u32::MAX),
            quota: Some(u64::MAX),
            keys: vec![],
        },
        &st,
    );
    let full = RouteLimits::new(
        Some(QpsLimit::service(&st, "svc", NonZeroU32::MAX)),
        Some(QpsLimit::api(&st, "svc", "api", NonZeroU32::MAX)),
        None,
        None,
        vec![plan],
    )
    .unwrap();
    c.bench_function("plan_qps_quota_service_api", |b| {
        b.iter(|| {
            let r = full.check(black_box(&req), Timestamp::now());
            let mut h = HeaderMap::new();
            if !r.refused {
                r.write_headers(&mut h);
            }
            black_box(h.len())
        })
    });

    let expr = Expr::parse(
        "(method == 'POST' || method == 'PUT') && header.x-user != '' && query.page >= 2 && !(path == '/health')",
    )
    .unwrap();
    c.bench_function("expr_eval", |b| {
        b.iter(|| black_box(expr.eval(black_box(&req))))
    });
    c.bench_function("expr_parse", |b| {
        b.iter(|| {
            Expr::parse(black_box(
                "method == 'POST' && header.x-user != '' || query.page > 1",
            ))
        })
    });
}

criterion_group!(limiter, benches);
criterion_main!(limiter);
