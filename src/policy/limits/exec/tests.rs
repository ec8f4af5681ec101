use super::*;
use crate::config::raw::{RawTrafficControl, RawUsagePlan};
use crate::policy::limits::{LimitState, PlanLimits, PolicyKind, QpsLimit, RouteLimits};
use http::{HeaderMap, Method};
use std::num::NonZeroU32;

/// 2026-01-01T00:00:00Z + ms
fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(1_767_225_600_000 + ms)
}

fn ms(t: Timestamp) -> u64 {
    t.as_nanos() / 1_000_000
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
    );
    let two = NonZeroU32::new(2).unwrap();
    let limits = RouteLimits::new(
        None,
        Some(QpsLimit::api(st, "s", "a", two)),
        Some(crate::config::compile::traffic_policy(&tc, st).unwrap()),
        None,
        vec![plan.clone()],
    )
    .unwrap();
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

fn prepare<'a>(
    limits: &'a RouteLimits,
    req: &LimitRequest<'a>,
    now: Timestamp,
    shared_qps: bool,
) -> Result<Pending<'a, 'a>, LimitReport<'a>> {
    Pending::prepare(limits.ops(req), now, shared_qps)
}

#[test]
fn windows_and_quotas_are_collected_in_check_order_qps_stays_local() {
    let st = LimitState::in_memory();
    let (limits, _) = limits(&st);
    let (h, m) = (HeaderMap::new(), Method::GET);
    let r = req(&h, &m);
    let s = prepare(&limits, &r, at(0), false).unwrap();
    let c = s.counters();
    let ops: Vec<_> = c.iter().map(|o| (o.limit, o.window)).collect();
    assert_eq!(ops, vec![(5, 60), (10, 60), (100, 0)]);
    assert!(c[0].key.starts_with("traffic:flow:") && c[0].key.ends_with("/ip:10.0.0.1"));
    assert!(c[1].key.ends_with("/api"));
    assert_eq!(c[2].key, "quota:gold:AKID1");
    // Redis unreachable with on_error = deny: 503, the local QPS given back
    assert!(matches!(
        s.finish(Err(OnError::Deny)),
        Err(Reject::ClusterUnavailable)
    ));
    // shared_qps: the API QPS joins them as a one-second window
    let s = prepare(&limits, &r, at(0), true).unwrap();
    let c = s.counters();
    assert_eq!((c[0].limit, c[0].window), (2, 1));
    assert_eq!(c.len(), 4);
}

#[test]
fn shared_counts_give_the_headers_and_are_mirrored_locally() {
    let st = LimitState::in_memory();
    let (limits, plan) = limits(&st);
    let (h, m) = (HeaderMap::new(), Method::GET);
    let r = req(&h, &m);
    let s = prepare(&limits, &r, at(50_000), false).unwrap();
    // the store's clock is 00:00:50: the minute resets in 10 s
    let rep = s
        .finish(Ok(SharedOutcome::Counted {
            now_ms: ms(at(50_000)),
            counts: vec![2, 9, 40],
        }))
        .unwrap();
    assert!(!rep.refused);
    let (p, u) = rep.tightest.unwrap();
    assert_eq!(p.kind, PolicyKind::TrafficApi);
    assert_eq!((u.limit, u.remaining, u.reset), (10, 1, Some(10)));
    assert_eq!(plan.used("AKID1"), 40, "quota mirrored");
    // local fall-back continues from the mirrored counts: 1 left in the window
    let s = prepare(&limits, &r, at(50_000), false).unwrap();
    assert!(!s.finish(Err(OnError::Local)).unwrap().refused);
    // the API QPS (2 per second) is local and already spent: refused before any op
    let e = prepare(&limits, &r, at(50_000), false).err().unwrap();
    assert!(e.refused);
    assert_eq!(e.policy().unwrap().kind, PolicyKind::ApiQps);
    let s = prepare(&limits, &r, at(51_000), false).unwrap();
    let e = s.finish(Err(OnError::Local)).unwrap();
    assert!(e.refused);
    assert_eq!(e.policy().unwrap().kind, PolicyKind::TrafficApi);
    assert_eq!(plan.used("AKID1"), 41, "refused request counted nowhere");
}

#[test]
fn a_shared_refusal_undoes_local_qps_and_names_the_policy() {
    let st = LimitState::in_memory();
    let (limits, _) = limits(&st);
    let (h, m) = (HeaderMap::new(), Method::GET);
    let r = req(&h, &m);
    for _ in 0..3 {
        let s = prepare(&limits, &r, at(0), false).unwrap();
        let e = s
            .finish(Ok(SharedOutcome::Refused {
                now_ms: ms(at(30_000)),
                index: 0,
                count: 5,
            }))
            .unwrap();
        assert!(e.refused);
        assert_eq!(e.policy().unwrap().kind, PolicyKind::TrafficIp);
        assert_eq!(e.retry_after(), Some(30));
    }
    // three refusals took nothing from the API's 2 QPS
    let s = prepare(&limits, &r, at(0), false).unwrap();
    assert!(!s.finish(Err(OnError::Allow)).unwrap().refused);
    let s = prepare(&limits, &r, at(0), false).unwrap();
    let rep = s.finish(Err(OnError::Allow)).unwrap();
    assert!(!rep.refused);
    assert_eq!(rep.tightest.unwrap().0.kind, PolicyKind::ApiQps);
}

#[tokio::test]
async fn without_a_cluster_the_executor_counts_here() {
    let st = LimitState::in_memory();
    let (limits, plan) = limits(&st);
    let (h, m) = (HeaderMap::new(), Method::GET);
    let r = req(&h, &m);
    let local = Executor::new(None);
    for _ in 0..2 {
        let rep = local.check(&limits, &r, at(0)).await.unwrap();
        assert!(!rep.refused);
        assert_eq!(rep.plan, Some("gold"));
    }
    let rep = local.check(&limits, &r, at(0)).await.unwrap();
    assert!(rep.refused);
    assert_eq!(rep.policy().unwrap().kind, PolicyKind::ApiQps);
    assert_eq!(plan.used("AKID1"), 2);
}
