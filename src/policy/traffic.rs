//! `traffic_control` (SPEC §4.2): fixed windows of `expire` × second / minute /
//! hour / day, aligned to the Unix epoch (see `store::cells`), counted for the whole
//! API, per app and per client IP.
//!
//! - A special app (`spec_app_rate_limits`) gets its own limit instead of
//!   `app_rate_limit`; a special IP/CIDR (`spec_ip_rate_limits`, most specific
//!   match wins) gets its own limit instead of `ip_rate_limit`. The API limit
//!   applies when set. Special entries count even when the generic limit is unset.
//! - Every dimension is optional (per-IP or per-app limits alone are common);
//!   at least one is required.
//! - Counting is per app and per client address; with `ipv6_prefix` IPv6 clients
//!   are counted per prefix (e.g. /64). IPv4-mapped IPv6 addresses count as IPv4.
//! - Check order: client IP, app, API (the most specific refusal is reported).

use super::limits::plan::{identity, Counter, Plan, Slot};
use super::limits::report::{PolicyKind, PolicyRef};
use crate::config::raw::RawTrafficControl;
use crate::store::cells::{Timestamp, Window, WindowCell};
use crate::store::table::{Single, Table};
use crate::store::LimitState;
use ipnet::IpNet;
use std::borrow::Cow;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

/// Most special apps / special IPs per plugin.
pub const MAX_SPECIAL: usize = 30;

pub struct TrafficPolicy {
    name: Box<str>,
    window: Window,
    /// The whole API's limit and counter, when `api_rate_limit` is set.
    api_limit: Option<u64>,
    api: Option<Arc<Single<WindowCell>>>,
    app_limit: Option<u64>,
    spec_apps: Vec<(Box<str>, u64)>,
    apps: Option<Arc<Table<String, WindowCell>>>,
    ip_limit: Option<u64>,
    /// Sorted most specific first.
    spec_ips: Vec<(IpNet, u64)>,
    ips: Option<Arc<Table<IpAddr, WindowCell>>>,
    ipv6_prefix: Option<u8>,
    /// Header names of the three dimensions: `NAME.api`, `NAME.app`, `NAME.ip`.
    labels: [Box<str>; 3],
}

fn unit_secs(expire_type: &str) -> Option<u64> {
    match expire_type {
        "second" => Some(1),
        "minute" => Some(60),
        "hour" => Some(3600),
        "day" => Some(86_400),
        _ => None,
    }
}

fn positive(errs: &mut Vec<String>, field: &str, v: u64) {
    if v == 0 {
        errs.push(format!("{field}: must be a positive integer"));
    }
}

fn spec_apps(raw: &RawTrafficControl, errs: &mut Vec<String>) -> Vec<(Box<str>, u64)> {
    let mut spec_apps: Vec<(Box<str>, u64)> = Vec::new();
    for (i, s) in raw.spec_app_rate_limits.iter().enumerate() {
        let field = format!("spec_app_rate_limits[{i}]");
        positive(errs, &format!("{field}.rate_limit"), s.rate_limit);
        if s.app_id.is_empty() {
            errs.push(format!("{field}.app_id: must not be empty"));
        } else if spec_apps.iter().any(|(a, _)| **a == *s.app_id) {
            errs.push(format!("{field}.app_id: {:?} listed twice", s.app_id));
        }
        spec_apps.push((s.app_id.as_str().into(), s.rate_limit));
    }
    spec_apps
}

fn spec_ips(raw: &RawTrafficControl, errs: &mut Vec<String>) -> Vec<(IpNet, u64)> {
    let mut spec_ips: Vec<(IpNet, u64)> = Vec::new();
    for (i, s) in raw.spec_ip_rate_limits.iter().enumerate() {
        let field = format!("spec_ip_rate_limits[{i}]");
        positive(errs, &format!("{field}.rate_limit"), s.rate_limit);
        let key = s.ip_key.trim();
        let net = key
            .parse::<IpNet>()
            .or_else(|_| key.parse::<IpAddr>().map(IpNet::from));
        match net {
            Ok(n) if spec_ips.iter().any(|(m, _)| *m == n.trunc()) => {
                errs.push(format!("{field}.ip_key: {key:?} listed twice"))
            }
            Ok(n) => spec_ips.push((n.trunc(), s.rate_limit)),
            Err(_) => errs.push(format!(
                "{field}.ip_key: {key:?} is not an IP address or CIDR"
            )),
        }
    }
    spec_ips
}

/// Canonical settings string hashed into the counters' identity.
fn settings(raw: &RawTrafficControl) -> String {
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

impl TrafficPolicy {
    /// Validates the plugin and obtains its counters from `state`. Error messages
    /// start with the field (`spec_ip_rate_limits[2].ip_key: ...`); the caller
    /// prefixes the plugin's location.
    pub fn compile(
        raw: &RawTrafficControl,
        state: &LimitState,
    ) -> Result<Arc<TrafficPolicy>, Vec<String>> {
        let mut errs = Vec::new();
        let unit = unit_secs(&raw.expire_type);
        if unit.is_none() {
            errs.push(format!(
                "expire_type: {:?} is not one of second, minute, hour, day",
                raw.expire_type
            ));
        }
        positive(&mut errs, "expire", raw.expire);
        let window_secs = unit.unwrap_or(1).checked_mul(raw.expire);
        if window_secs.is_none_or(|w| w > 366 * 86_400) {
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
        if raw.spec_app_rate_limits.len() > MAX_SPECIAL {
            errs.push(format!(
                "spec_app_rate_limits: {} entries, at most {MAX_SPECIAL}",
                raw.spec_app_rate_limits.len()
            ));
        }
        if raw.spec_ip_rate_limits.len() > MAX_SPECIAL {
            errs.push(format!(
                "spec_ip_rate_limits: {} entries, at most {MAX_SPECIAL}",
                raw.spec_ip_rate_limits.len()
            ));
        }
        let spec_apps = spec_apps(raw, &mut errs);
        let mut spec_ips = spec_ips(raw, &mut errs);
        if !errs.is_empty() {
            return Err(errs);
        }
        spec_ips.sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix_len()));

        let window = Window::new(window_secs.unwrap_or(1));
        let id = identity("traffic", &raw.name, &settings(raw));
        let has_apps = raw.app_rate_limit.is_some() || !spec_apps.is_empty();
        let has_ips = raw.ip_rate_limit.is_some() || !spec_ips.is_empty();
        Ok(Arc::new(TrafficPolicy {
            labels: [
                format!("{}.api", raw.name).into(),
                format!("{}.app", raw.name).into(),
                format!("{}.ip", raw.name).into(),
            ],
            name: raw.name.as_str().into(),
            window,
            api_limit: raw.api_rate_limit,
            api: raw
                .api_rate_limit
                .map(|_| state.single(&format!("{id}/api"), window)),
            app_limit: raw.app_rate_limit,
            spec_apps,
            apps: has_apps.then(|| state.table(&format!("{id}/app"), window)),
            ip_limit: raw.ip_rate_limit,
            spec_ips,
            ips: has_ips.then(|| state.table(&format!("{id}/ip"), window)),
            ipv6_prefix: raw.ipv6_prefix,
        }))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn window_secs(&self) -> u64 {
        self.window.secs
    }

    /// The limit for this app, if any.
    pub fn app_limit(&self, app: &str) -> Option<u64> {
        self.spec_apps
            .iter()
            .find(|(a, _)| **a == *app)
            .map(|(_, l)| *l)
            .or(self.app_limit)
    }

    /// The limit for this client address, if any.
    pub fn ip_limit(&self, ip: IpAddr) -> Option<u64> {
        let ip = ip.to_canonical();
        self.spec_ips
            .iter()
            .find(|(n, _)| n.contains(&ip))
            .map(|(_, l)| *l)
            .or(self.ip_limit)
    }

    /// The key a client address is counted under (its IPv6 prefix when configured).
    pub fn ip_bucket(&self, ip: IpAddr) -> IpAddr {
        match (ip.to_canonical(), self.ipv6_prefix) {
            (IpAddr::V6(a), Some(p)) if p < 128 => {
                let mask = u128::MAX << (128 - p as u32);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
            (ip, _) => ip,
        }
    }

    /// Counts in the current window: (api, app, ip), for tests and the admin.
    pub fn counts(&self, app: Option<&str>, ip: IpAddr, now: Timestamp) -> (u64, u64, u64) {
        let w = self.window;
        let app = match (&self.apps, app) {
            (Some(t), Some(a)) => t.get(a).map_or(0, |c| c.count(w, now)),
            _ => 0,
        };
        let ip = match &self.ips {
            Some(t) => t.get(&self.ip_bucket(ip)).map_or(0, |c| c.count(w, now)),
            None => 0,
        };
        let api = self.api.as_ref().map_or(0, |a| a.cell().count(w, now));
        (api, app, ip)
    }

    pub(crate) fn max_ops(&self) -> usize {
        usize::from(self.ips.is_some())
            + usize::from(self.apps.is_some())
            + usize::from(self.api.is_some())
    }

    /// Client IP, app, API: the most specific refusal is reported.
    pub(crate) fn add_ops<'a, 'r>(
        &'a self,
        app: Option<&'r str>,
        ip: IpAddr,
        plan: &mut impl Plan<'a, 'r>,
    ) {
        if let (Some(t), Some(limit)) = (&self.ips, self.ip_limit(ip)) {
            let p = PolicyRef {
                kind: PolicyKind::TrafficIp,
                name: &self.labels[2],
            };
            plan.push(p, Counter::Window(Slot::Ip(t, self.ip_bucket(ip)), limit));
        }
        if let (Some(t), Some(app)) = (&self.apps, app) {
            if let Some(limit) = self.app_limit(app) {
                let p = PolicyRef {
                    kind: PolicyKind::TrafficApp,
                    name: &self.labels[1],
                };
                plan.push(p, Counter::Window(Slot::Key(t, Cow::Borrowed(app)), limit));
            }
        }
        if let (Some(api), Some(limit)) = (&self.api, self.api_limit) {
            let p = PolicyRef {
                kind: PolicyKind::TrafficApi,
                name: &self.labels[0],
            };
            plan.push(p, Counter::Window(Slot::Whole(api), limit));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::{RawSpecApp, RawSpecIp};

    fn raw() -> RawTrafficControl {
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

    fn errors(r: &RawTrafficControl) -> Vec<String> {
        match TrafficPolicy::compile(r, &LimitState::in_memory()) {
            Ok(_) => vec![],
            Err(e) => e,
        }
    }

    #[test]
    fn windows_of_each_unit() {
        let st = LimitState::in_memory();
        for (unit, secs) in [
            ("second", 1),
            ("minute", 60),
            ("hour", 3600),
            ("day", 86_400),
        ] {
            let mut r = raw();
            r.expire_type = unit.into();
            r.expire = 2;
            assert_eq!(
                TrafficPolicy::compile(&r, &st).unwrap().window_secs(),
                2 * secs
            );
        }
    }

    #[test]
    fn validation_names_the_field() {
        let mut r = raw();
        r.expire_type = "week".into();
        r.expire = 0;
        r.api_rate_limit = Some(0);
        r.app_rate_limit = Some(0);
        r.ip_rate_limit = Some(0);
        r.ipv6_prefix = Some(0);
        let e = errors(&r);
        for field in [
            "expire_type: \"week\"",
            "expire: must",
            "api_rate_limit:",
            "app_rate_limit:",
            "ip_rate_limit:",
            "ipv6_prefix:",
        ] {
            assert!(
                e.iter().any(|m| m.starts_with(field)),
                "{field} missing in {e:?}"
            );
        }

        let mut r = raw();
        r.spec_app_rate_limits = (0..31)
            .map(|i| RawSpecApp {
                app_id: format!("a{i}"),
                rate_limit: 1,
            })
            .collect();
        r.spec_ip_rate_limits = vec![
            RawSpecIp {
                ip_key: "10.0.0.0/8".into(),
                rate_limit: 1,
            },
            RawSpecIp {
                ip_key: "10.1.0.0/8".into(),
                rate_limit: 2,
            },
            RawSpecIp {
                ip_key: "10.0.0.300".into(),
                rate_limit: 1,
            },
            RawSpecIp {
                ip_key: "2001:db8::/32".into(),
                rate_limit: 0,
            },
        ];
        let e = errors(&r);
        assert!(
            e.contains(&"spec_app_rate_limits: 31 entries, at most 30".to_string()),
            "{e:?}"
        );
        assert!(
            e.contains(&"spec_ip_rate_limits[1].ip_key: \"10.1.0.0/8\" listed twice".to_string())
        );
        assert!(e.contains(
            &"spec_ip_rate_limits[2].ip_key: \"10.0.0.300\" is not an IP address or CIDR"
                .to_string()
        ));
        assert!(e.contains(
            &"spec_ip_rate_limits[3].rate_limit: must be a positive integer".to_string()
        ));

        let mut r = raw();
        r.spec_app_rate_limits = vec![
            RawSpecApp {
                app_id: "x".into(),
                rate_limit: 1,
            },
            RawSpecApp {
                app_id: "x".into(),
                rate_limit: 1,
            },
        ];
        assert_eq!(
            errors(&r),
            vec!["spec_app_rate_limits[1].app_id: \"x\" listed twice"]
        );
        assert!(errors(&raw()).is_empty());
    }

    #[test]
    fn every_dimension_is_optional_but_one_is_needed() {
        let mut r = raw();
        r.api_rate_limit = None;
        let e = errors(&r);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("no limit: set at least one of"), "{e:?}");

        // Per-IP alone: the API as a whole is not counted, each address is.
        r.ip_rate_limit = Some(2);
        let st = LimitState::in_memory();
        let p = TrafficPolicy::compile(&r, &st).expect("ip only");
        let limits =
            crate::policy::limits::RouteLimits::new(None, None, Some(p.clone()), None, vec![])
                .expect("within bounds");
        let now = Timestamp::from_millis(1_767_225_600_000);
        let headers = http::HeaderMap::new();
        let mut refused = 0;
        for ip in [
            "192.0.2.1",
            "192.0.2.1",
            "192.0.2.1",
            "192.0.2.2",
            "192.0.2.2",
        ] {
            let req = crate::policy::limits::LimitRequest {
                key_id: None,
                app: None,
                plan: None,
                client_ip: ip.parse().expect("ip"),
                method: &http::Method::GET,
                path: "/",
                headers: &headers,
                query: None,
            };
            if limits.check(&req, now).refused {
                refused += 1;
            }
        }
        assert_eq!(refused, 1, "only the third request of one address is over");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        assert_eq!(p.counts(None, b, now), (0, 0, 2));

        let mut r = raw();
        r.api_rate_limit = None;
        r.app_rate_limit = Some(5);
        assert!(errors(&r).is_empty());
    }
}
