//! The rules of every counting limit: usage-plan, service and API QPS, and the
//! `traffic_control` and `param_traffic_control` plugins. The policy
//! constructors (`policy/*`) are called only with values these rules
//! accepted. Messages start with the field; the caller adds the location.

use crate::config::bounds::{MAX_SPECIAL, MAX_STRATEGIES, MAX_WEIGHT};
use crate::config::error::{err, ConfigError};
use crate::config::raw::{
    ParamIn, RawApi, RawParamTrafficControl, RawService, RawStrategy, RawTrafficControl,
};
use crate::policy::expr::Expr;
use crate::policy::limits::QpsLimit;
use crate::state::State;
use ipnet::IpNet;
use std::collections::HashSet;
use std::net::IpAddr;
use std::num::NonZeroU32;

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

fn positive(errs: &mut Vec<String>, field: &str, v: u64) {
    if v == 0 {
        errs.push(format!("{field}: must be a positive integer"));
    }
}

/// Every problem of a `traffic_control` plugin.
pub(super) fn traffic(raw: &RawTrafficControl) -> Vec<String> {
    let mut errs = Vec::new();
    if let Some(m) = raw.expire_type.problem("expire_type") {
        errs.push(m);
    }
    positive(&mut errs, "expire", raw.expire);
    let unit = raw.expire_type.get().map_or(1, |t| t.secs());
    if unit
        .checked_mul(raw.expire)
        .is_none_or(|w| w > MAX_WINDOW_SECS)
    {
        errs.push("expire: window longer than a year".into());
    }
    if let Some(v) = raw.api_rate_limit {
        positive(&mut errs, "api_rate_limit", v);
    }
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
    if let Some(v) = raw.app_rate_limit {
        positive(&mut errs, "app_rate_limit", v);
    }
    if let Some(v) = raw.ip_rate_limit {
        positive(&mut errs, "ip_rate_limit", v);
    }
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
    let mut apps: HashSet<&str> = HashSet::new();
    for (i, s) in raw.spec_app_rate_limits.iter().enumerate() {
        let field = format!("spec_app_rate_limits[{i}]");
        positive(&mut errs, &format!("{field}.rate_limit"), s.rate_limit);
        if s.app_id.is_empty() {
            errs.push(format!("{field}.app_id: must not be empty"));
        } else if !apps.insert(&s.app_id) {
            errs.push(format!("{field}.app_id: {:?} listed twice", s.app_id));
        }
    }
    let mut nets: HashSet<IpNet> = HashSet::new();
    for (i, s) in raw.spec_ip_rate_limits.iter().enumerate() {
        let field = format!("spec_ip_rate_limits[{i}]");
        positive(&mut errs, &format!("{field}.rate_limit"), s.rate_limit);
        let key = s.ip_key.trim();
        let net = key
            .parse::<IpNet>()
            .or_else(|_| key.parse::<IpAddr>().map(IpNet::from));
        match net {
            Ok(n) if !nets.insert(n.trunc()) => {
                errs.push(format!("{field}.ip_key: {key:?} listed twice"))
            }
            Ok(_) => {}
            Err(_) => errs.push(format!(
                "{field}.ip_key: {key:?} is not an IP address or CIDR"
            )),
        }
    }
    errs
}

/// Every problem of a `param_traffic_control` plugin.
pub(super) fn param(raw: &RawParamTrafficControl) -> Vec<String> {
    let mut errs = Vec::new();
    if raw.default_window > 0 && raw.default_rate_limit == 0 {
        errs.push(
            "default_rate_limit: must be a positive integer when default_window is set".into(),
        );
    }
    let n = raw.strategies.len();
    if n == 0 || n > MAX_STRATEGIES {
        errs.push(format!(
            "strategies: {n} given, 1 to {MAX_STRATEGIES} required"
        ));
    }
    let (mut names, mut weights) = (HashSet::new(), HashSet::new());
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
        if st.rate_limit == 0 {
            errs.push(format!("{f}.rate_limit: must be a positive integer"));
        }
        if st.window == 0 {
            errs.push(format!("{f}.window: must be a positive number of seconds"));
        }
        if !st.condition.trim().is_empty() {
            if let Err(e) = Expr::parse(&st.condition) {
                errs.push(format!("{f}.condition: {e}"));
            }
        }
        strategy_parameter(&f, st, &mut errs);
    }
    errs
}

/// A strategy's one parameter: where it is read and under which name.
fn strategy_parameter(f: &str, st: &RawStrategy, errs: &mut Vec<String>) {
    let [p] = st.parameters.as_slice() else {
        errs.push(format!(
            "{f}.parameters: exactly one parameter required, {} given",
            st.parameters.len()
        ));
        return;
    };
    let Some(kind) = p.kind.get() else {
        errs.extend(p.kind.problem(&format!("{f}.parameters[0].type")));
        return;
    };
    match kind {
        ParamIn::Query | ParamIn::Header if p.name.is_empty() => errs.push(format!(
            "{f}.parameters[0].name: required for type {:?}",
            p.kind
        )),
        ParamIn::Header if http::HeaderName::from_bytes(p.name.as_bytes()).is_err() => errs.push(
            format!("{f}.parameters[0].name: {:?} is not a header name", p.name),
        ),
        _ => {}
    }
}
