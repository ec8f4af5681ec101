//! The rules of every counting limit: usage-plan, service and API QPS, and the
//! `traffic_control` and `param_traffic_control` plugins, checked here and
//! nowhere else. A plugin that passes becomes a typed spec (parsed networks,
//! conditions and parameter sources, positive limits) that the policy
//! constructors (`TrafficPolicy::new`, `ParamPolicy::new`) take as it is.
//! Messages start with the field; the caller adds the location.

use crate::config::bounds::{MAX_SPECIAL, MAX_STRATEGIES, MAX_WEIGHT};
use crate::config::error::{err, ConfigError};
use crate::config::raw::{
    ExpireType, ParamIn, RawApi, RawParamTrafficControl, RawService, RawStrategy, RawTrafficControl,
};
use crate::policy::expr::Expr;
use crate::policy::limits::{LimitState, ParamPolicy, QpsLimit, TrafficPolicy};
use crate::policy::param::{ParamSource, ParamSpec, StrategySpec};
use crate::policy::traffic::TrafficSpec;
use crate::state::State;
use crate::store::cells::Window;
use ipnet::IpNet;
use std::collections::HashSet;
use std::net::IpAddr;
use std::num::{NonZeroU32, NonZeroU64};
use std::sync::Arc;

/// Longest window of a `traffic_control` plugin.
const MAX_WINDOW_SECS: u64 = 366 * 86_400;

/// A limit that is either absent (unlimited) or positive.
pub(super) fn positive_or_unlimited(
    v: Option<u64>,
    at: &str,
    field: &str,
    e: &mut Vec<ConfigError>,
) {
    if v == Some(0) {
        e.push(err(
            at,
            format!("{field} must be positive (omit it for unlimited)"),
        ));
    }
}

/// The service's QPS limit, when it has a valid one (a zero is reported once,
/// at the service).
pub(super) fn service_qps(state: &State, svc: &RawService) -> Option<QpsLimit> {
    let q = NonZeroU32::new(svc.qps?)?;
    Some(QpsLimit::service(&state.limits, &svc.name, q))
}

/// The API's own QPS limit, when it has a valid one (a zero is reported at the API).
pub(super) fn api_qps(state: &State, svc: &RawService, api: &RawApi) -> Option<QpsLimit> {
    let q = NonZeroU32::new(api.qps?)?;
    Some(QpsLimit::api(&state.limits, &svc.name, &api.name, q))
}

/// `v`, or a problem when it is zero.
fn positive(errs: &mut Vec<String>, field: &str, v: u64) -> Option<NonZeroU64> {
    let n = NonZeroU64::new(v);
    if n.is_none() {
        errs.push(format!("{field}: must be a positive integer"));
    }
    n
}

/// A `traffic_control` plugin, checked, with its counters from `state`; its
/// problems otherwise (each starts with the field).
pub fn traffic_policy(
    raw: &RawTrafficControl,
    state: &LimitState,
) -> Result<Arc<TrafficPolicy>, Vec<String>> {
    traffic(raw).map(|spec| TrafficPolicy::new(spec, state))
}

/// A `param_traffic_control` plugin, checked, with its counters from `state`;
/// its problems otherwise (each starts with the field).
pub fn param_policy(
    raw: &RawParamTrafficControl,
    state: &LimitState,
) -> Result<Arc<ParamPolicy>, Vec<String>> {
    param(raw).map(|spec| ParamPolicy::new(spec, state))
}

fn done<T>(errs: Vec<String>, value: T) -> Result<T, Vec<String>> {
    if errs.is_empty() {
        Ok(value)
    } else {
        Err(errs)
    }
}

/// Every problem of a `traffic_control` plugin, or the plugin.
fn traffic(raw: &RawTrafficControl) -> Result<TrafficSpec, Vec<String>> {
    let mut errs = Vec::new();
    let unit = raw.expire_type.get();
    errs.extend(raw.expire_type.problem("expire_type"));
    let expire = positive(&mut errs, "expire", raw.expire);
    let window = unit
        .unwrap_or(ExpireType::Second)
        .secs()
        .checked_mul(raw.expire)
        .filter(|w| *w <= MAX_WINDOW_SECS);
    if window.is_none() {
        errs.push("expire: window longer than a year".into());
    }
    let api = raw
        .api_rate_limit
        .and_then(|v| positive(&mut errs, "api_rate_limit", v));
    if raw.api_rate_limit.is_none()
        && raw.app_rate_limit.is_none()
        && raw.ip_rate_limit.is_none()
        && raw.spec_app_rate_limits.is_empty()
        && raw.spec_ip_rate_limits.is_empty()
    {
        errs.push(
            "no limit: set at least one of api_rate_limit, app_rate_limit, ip_rate_limit, \
             spec_app_rate_limits, spec_ip_rate_limits"
                .into(),
        );
    }
    let app = raw
        .app_rate_limit
        .and_then(|v| positive(&mut errs, "app_rate_limit", v));
    let ip = raw
        .ip_rate_limit
        .and_then(|v| positive(&mut errs, "ip_rate_limit", v));
    if let Some(p) = raw.ipv6_prefix {
        if !(1..=128).contains(&p) {
            errs.push(format!("ipv6_prefix: {p} is not between 1 and 128"));
        }
    }
    for (field, n) in [
        ("spec_app_rate_limits", raw.spec_app_rate_limits.len()),
        ("spec_ip_rate_limits", raw.spec_ip_rate_limits.len()),
    ] {
        if n > MAX_SPECIAL {
            errs.push(format!("{field}: {n} entries, at most {MAX_SPECIAL}"));
        }
    }
    let mut spec_apps: Vec<(String, NonZeroU64)> = Vec::new();
    let mut apps: HashSet<&str> = HashSet::new();
    for (i, s) in raw.spec_app_rate_limits.iter().enumerate() {
        let field = format!("spec_app_rate_limits[{i}]");
        let limit = positive(&mut errs, &format!("{field}.rate_limit"), s.rate_limit);
        if s.app_id.is_empty() {
            errs.push(format!("{field}.app_id: must not be empty"));
        } else if !apps.insert(&s.app_id) {
            errs.push(format!("{field}.app_id: {:?} listed twice", s.app_id));
        } else if let Some(l) = limit {
            spec_apps.push((s.app_id.clone(), l));
        }
    }
    let mut spec_ips: Vec<(IpNet, NonZeroU64)> = Vec::new();
    let mut nets: HashSet<IpNet> = HashSet::new();
    for (i, s) in raw.spec_ip_rate_limits.iter().enumerate() {
        let field = format!("spec_ip_rate_limits[{i}]");
        let limit = positive(&mut errs, &format!("{field}.rate_limit"), s.rate_limit);
        let key = s.ip_key.trim();
        let net = key
            .parse::<IpNet>()
            .or_else(|_| key.parse::<IpAddr>().map(IpNet::from));
        match net {
            Ok(n) if !nets.insert(n.trunc()) => {
                errs.push(format!("{field}.ip_key: {key:?} listed twice"))
            }
            Ok(n) => spec_ips.extend(limit.map(|l| (n.trunc(), l))),
            Err(_) => errs.push(format!(
                "{field}.ip_key: {key:?} is not an IP address or CIDR"
            )),
        }
    }
    let (Some(_), Some(_), Some(window)) = (unit, expire, window) else {
        return Err(errs);
    };
    done(
        errs,
        TrafficSpec {
            name: raw.name.clone(),
            window: Window::new(window),
            api,
            app,
            ip,
            spec_apps,
            spec_ips,
            ipv6_prefix: raw.ipv6_prefix,
            settings: traffic_settings(raw),
        },
    )
}

/// The canonical settings line hashed into a `traffic_control` plugin's
/// counter identity. Its format is kept: a changed line resets the counters
/// of every deployed plugin (persisted windows, shared Redis counters).
fn traffic_settings(raw: &RawTrafficControl) -> String {
    let apps: Vec<_> = raw
        .spec_app_rate_limits
        .iter()
        .map(|s| (&s.app_id, s.rate_limit))
        .collect();
    let ips: Vec<_> = raw
        .spec_ip_rate_limits
        .iter()
        .map(|s| (&s.ip_key, s.rate_limit))
        .collect();
    format!(
        "v1|{}|{}|{}|{:?}|{:?}|{:?}|{:?}|{:?}",
        raw.expire_type,
        raw.expire,
        // As before the limit became optional, so that persisted counters keep their identity.
        raw.api_rate_limit.map_or(String::new(), |v| v.to_string()),
        raw.app_rate_limit,
        raw.ip_rate_limit,
        apps,
        ips,
        raw.ipv6_prefix
    )
}

/// The canonical settings line of a `param_traffic_control` plugin (see
/// [`traffic_settings`]).
fn param_settings(raw: &RawParamTrafficControl) -> String {
    let mut s = format!("v1|{}|{}", raw.default_window, raw.default_rate_limit);
    for st in &raw.strategies {
        s.push_str(&format!(
            "|{:?},{},{:?},{},{}",
            st.name, st.strategy_weight, st.condition, st.rate_limit, st.window
        ));
        for p in &st.parameters {
            s.push_str(&format!(",{:?}:{:?}", p.kind, p.name));
        }
    }
    s
}

/// Every problem of a `param_traffic_control` plugin, or the plugin.
fn param(raw: &RawParamTrafficControl) -> Result<ParamSpec, Vec<String>> {
    let mut errs = Vec::new();
    let default = match (raw.default_window, NonZeroU64::new(raw.default_rate_limit)) {
        (0, _) => None,
        (w, Some(limit)) => Some((Window::new(w), limit)),
        (_, None) => {
            errs.push(
                "default_rate_limit: must be a positive integer when default_window is set".into(),
            );
            None
        }
    };
    let n = raw.strategies.len();
    if n == 0 || n > MAX_STRATEGIES {
        errs.push(format!(
            "strategies: {n} given, 1 to {MAX_STRATEGIES} required"
        ));
    }
    let (mut names, mut weights) = (HashSet::new(), HashSet::new());
    let mut strategies = Vec::with_capacity(n);
    for (i, st) in raw.strategies.iter().enumerate() {
        let f = format!("strategies[{i}]");
        if st.name.trim().is_empty() {
            errs.push(format!("{f}.name: must not be empty"));
        } else if !names.insert(st.name.as_str()) {
            errs.push(format!("{f}.name: {:?} used by two strategies", st.name));
        }
        if st.strategy_weight > MAX_WEIGHT {
            errs.push(format!(
                "{f}.strategy_weight: {} is not between 0 and {MAX_WEIGHT}",
                st.strategy_weight
            ));
        } else if !weights.insert(st.strategy_weight) {
            errs.push(format!(
                "{f}.strategy_weight: {} used by two strategies",
                st.strategy_weight
            ));
        }
        let limit = NonZeroU64::new(st.rate_limit);
        if limit.is_none() {
            errs.push(format!("{f}.rate_limit: must be a positive integer"));
        }
        if st.window == 0 {
            errs.push(format!("{f}.window: must be a positive number of seconds"));
        }
        let condition = match st.condition.trim() {
            "" => Ok(None),
            _ => Expr::parse(&st.condition)
                .map(Some)
                .map_err(|e| errs.push(format!("{f}.condition: {e}"))),
        };
        let source = strategy_parameter(&f, st, &mut errs);
        if let (Some(limit), Ok(condition), Some(source)) = (limit, condition, source) {
            strategies.push(StrategySpec {
                name: st.name.clone(),
                weight: st.strategy_weight,
                condition,
                source,
                limit,
                window: Window::new(st.window),
            });
        }
    }
    done(
        errs,
        ParamSpec {
            name: raw.name.clone(),
            default,
            strategies,
            settings: param_settings(raw),
        },
    )
}

/// A strategy's one parameter: where it is read and under which name.
fn strategy_parameter(f: &str, st: &RawStrategy, errs: &mut Vec<String>) -> Option<ParamSource> {
    let [p] = st.parameters.as_slice() else {
        errs.push(format!(
            "{f}.parameters: exactly one parameter required, {} given",
            st.parameters.len()
        ));
        return None;
    };
    let Some(kind) = p.kind.get() else {
        errs.extend(p.kind.problem(&format!("{f}.parameters[0].type")));
        return None;
    };
    match kind {
        ParamIn::Query | ParamIn::Header if p.name.is_empty() => {
            errs.push(format!(
                "{f}.parameters[0].name: required for type {:?}",
                p.kind
            ));
            None
        }
        ParamIn::Query => Some(ParamSource::Query(p.name.clone())),
        ParamIn::Header => match http::HeaderName::from_bytes(p.name.as_bytes()) {
            Ok(h) => Some(ParamSource::Header(h)),
            Err(_) => {
                errs.push(format!(
                    "{f}.parameters[0].name: {:?} is not a header name",
                    p.name
                ));
                None
            }
        },
        ParamIn::Path => Some(ParamSource::Path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::{RawSpecApp, RawSpecIp, RawStrategyParam};

    fn tc() -> RawTrafficControl {
        RawTrafficControl {
            rejected_code: None,
            rejected_msg: None,
            name: "flow".into(),
            expire_type: "minute".into(),
            expire: 1,
            api_rate_limit: Some(10),
            app_rate_limit: None,
            ip_rate_limit: None,
            spec_app_rate_limits: vec![],
            spec_ip_rate_limits: vec![],
            ipv6_prefix: None,
        }
    }

    fn traffic_problems(r: &RawTrafficControl) -> Vec<String> {
        traffic(r).err().unwrap_or_default()
    }

    #[test]
    fn traffic_problems_name_the_field() {
        assert!(traffic_problems(&tc()).is_empty());
        let mut r = tc();
        r.expire_type = "week".into();
        r.expire = 0;
        r.api_rate_limit = Some(0);
        r.app_rate_limit = Some(0);
        r.ip_rate_limit = Some(0);
        r.ipv6_prefix = Some(0);
        assert_eq!(
            traffic_problems(&r),
            [
                "expire_type \"week\" is not one of second, minute, hour, day",
                "expire: must be a positive integer",
                "api_rate_limit: must be a positive integer",
                "app_rate_limit: must be a positive integer",
                "ip_rate_limit: must be a positive integer",
                "ipv6_prefix: 0 is not between 1 and 128",
            ]
        );

        let mut r = tc();
        r.expire_type = "day".into();
        r.expire = 367;
        assert_eq!(traffic_problems(&r), ["expire: window longer than a year"]);

        let mut r = tc();
        r.spec_app_rate_limits = (0..31)
            .map(|i| RawSpecApp {
                app_id: format!("a{i}"),
                rate_limit: 1,
            })
            .collect();
        let ip = |key: &str, rate_limit| RawSpecIp {
            ip_key: key.into(),
            rate_limit,
        };
        r.spec_ip_rate_limits = vec![
            ip("10.0.0.0/8", 1),
            ip("10.1.0.0/8", 2),
            ip("10.0.0.300", 1),
            ip("2001:db8::/32", 0),
        ];
        assert_eq!(
            traffic_problems(&r),
            [
                "spec_app_rate_limits: 31 entries, at most 30",
                "spec_ip_rate_limits[1].ip_key: \"10.1.0.0/8\" listed twice",
                "spec_ip_rate_limits[2].ip_key: \"10.0.0.300\" is not an IP address or CIDR",
                "spec_ip_rate_limits[3].rate_limit: must be a positive integer",
            ]
        );

        let mut r = tc();
        let app = |id: &str| RawSpecApp {
            app_id: id.into(),
            rate_limit: 1,
        };
        r.spec_app_rate_limits = vec![app("x"), app("x"), app("")];
        assert_eq!(
            traffic_problems(&r),
            [
                "spec_app_rate_limits[1].app_id: \"x\" listed twice",
                "spec_app_rate_limits[2].app_id: must not be empty",
            ]
        );
    }

    #[test]
    fn every_traffic_dimension_is_optional_but_one_is_needed() {
        let mut r = tc();
        r.api_rate_limit = None;
        assert_eq!(
            traffic_problems(&r),
            [
                "no limit: set at least one of api_rate_limit, app_rate_limit, ip_rate_limit, \
              spec_app_rate_limits, spec_ip_rate_limits"
            ]
        );
        for set in [
            |r: &mut RawTrafficControl| r.app_rate_limit = Some(5),
            |r: &mut RawTrafficControl| r.ip_rate_limit = Some(5),
            |r: &mut RawTrafficControl| {
                r.spec_app_rate_limits = vec![RawSpecApp {
                    app_id: "a".into(),
                    rate_limit: 5,
                }]
            },
            |r: &mut RawTrafficControl| {
                r.spec_ip_rate_limits = vec![RawSpecIp {
                    ip_key: "10.0.0.1".into(),
                    rate_limit: 5,
                }]
            },
        ] {
            let mut one = tc();
            one.api_rate_limit = None;
            set(&mut one);
            assert!(traffic_problems(&one).is_empty());
        }
    }

    #[test]
    fn the_counter_identity_follows_the_settings_as_written() {
        let st = LimitState::in_memory();
        let a = traffic_policy(&tc(), &st).expect("valid");
        let b = traffic_policy(&tc(), &st).expect("valid");
        let mut r = tc();
        r.api_rate_limit = Some(11);
        let c = traffic_policy(&r, &st).expect("valid");
        assert_eq!(
            traffic_settings(&tc()),
            "v1|minute|1|10|None|None|[]|[]|None",
            "the line of persisted and shared counters"
        );
        let ip = IpAddr::from([192, 0, 2, 1]);
        let req_now = crate::store::Timestamp::from_secs(2_000_000_000);
        let limits = crate::policy::limits::RouteLimits::new(None, None, Some(a), None, vec![])
            .expect("within bounds");
        let headers = http::HeaderMap::new();
        let req = crate::policy::limits::LimitRequest {
            key_id: None,
            app: None,
            plan: None,
            client_ip: ip,
            method: &http::Method::GET,
            path: "/",
            headers: &headers,
            query: None,
        };
        assert!(!limits.check(&req, req_now).refused);
        assert_eq!(
            b.counts(None, ip, req_now).0,
            1,
            "same settings, same counter"
        );
        assert_eq!(
            c.counts(None, ip, req_now).0,
            0,
            "changed settings, new counter"
        );
    }

    fn strat(name: &str, weight: u32, kind: &str, pname: &str) -> RawStrategy {
        RawStrategy {
            name: name.into(),
            strategy_weight: weight,
            condition: String::new(),
            parameters: vec![RawStrategyParam {
                kind: kind.into(),
                name: pname.into(),
            }],
            rate_limit: 1,
            window: 1,
        }
    }

    fn param_problems(
        strategies: Vec<RawStrategy>,
        default_window: u64,
        default_rate_limit: u64,
    ) -> Vec<String> {
        let raw = RawParamTrafficControl {
            rejected_code: None,
            rejected_msg: None,
            name: "p".into(),
            default_window,
            default_rate_limit,
            strategies,
        };
        param(&raw).err().unwrap_or_default()
    }

    #[test]
    fn param_problems_name_the_field() {
        assert!(param_problems(vec![strat("a", 0, "path", "")], 0, 0).is_empty());
        assert!(param_problems(vec![strat("a", 0, "Header", "X-User")], 60, 5).is_empty());
        assert_eq!(
            param_problems(vec![], 0, 0),
            ["strategies: 0 given, 1 to 10 required"]
        );
        let eleven = (0..11)
            .map(|i| strat(&format!("s{i}"), i, "path", ""))
            .collect();
        assert_eq!(
            param_problems(eleven, 0, 0),
            ["strategies: 11 given, 1 to 10 required"]
        );
        assert_eq!(
            param_problems(vec![strat("a", 0, "path", "")], 60, 0),
            ["default_rate_limit: must be a positive integer when default_window is set"]
        );
        let mut bad = strat("a", 101, "cookie", "x");
        bad.rate_limit = 0;
        bad.window = 0;
        bad.condition = "method == ".into();
        assert_eq!(
            param_problems(
                vec![
                    bad,
                    strat("a", 5, "query", ""),
                    strat("b", 5, "header", "bad header"),
                    strat(" ", 6, "path", ""),
                ],
                0,
                0,
            ),
            [
                "strategies[0].strategy_weight: 101 is not between 0 and 100",
                "strategies[0].rate_limit: must be a positive integer",
                "strategies[0].window: must be a positive number of seconds",
                "strategies[0].condition: at byte 10: expected an operand, found end of expression",
                "strategies[0].parameters[0].type \"cookie\" is not one of query, header, path",
                "strategies[1].name: \"a\" used by two strategies",
                "strategies[1].parameters[0].name: required for type \"query\"",
                "strategies[2].strategy_weight: 5 used by two strategies",
                "strategies[2].parameters[0].name: \"bad header\" is not a header name",
                "strategies[3].name: must not be empty",
            ]
        );
        let mut two = strat("c", 1, "path", "");
        two.parameters.push(RawStrategyParam {
            kind: "query".into(),
            name: "q".into(),
        });
        assert_eq!(
            param_problems(vec![two], 0, 0),
            ["strategies[0].parameters: exactly one parameter required, 2 given"]
        );
    }
}
