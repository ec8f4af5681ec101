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
use crate::store::cells::{Timestamp, Window, WindowCell};
use crate::store::table::{Single, Table};
use crate::store::LimitState;
use ipnet::IpNet;
use std::borrow::Cow;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU64;
use std::sync::Arc;

/// A `traffic_control` plugin as the config compiler accepted it
/// (`config/compile/limits.rs` holds the rules: at least one dimension,
/// distinct special entries, at most `MAX_SPECIAL` of each, a prefix of 1-128).
pub struct TrafficSpec {
    pub name: String,
    pub window: Window,
    pub api: Option<NonZeroU64>,
    pub app: Option<NonZeroU64>,
    pub ip: Option<NonZeroU64>,
    /// Special apps, each listed once.
    pub spec_apps: Vec<(String, NonZeroU64)>,
    /// Special networks (truncated to their prefix), each listed once.
    pub spec_ips: Vec<(IpNet, NonZeroU64)>,
    pub ipv6_prefix: Option<u8>,
    /// The settings as written, in one canonical line: the counters' identity
    /// hashes it (same settings, same counters across reloads and restarts).
    pub settings: String,
}

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

impl TrafficPolicy {
    /// The policy of an accepted plugin, with its counters from `state`.
    pub fn new(spec: TrafficSpec, state: &LimitState) -> Arc<TrafficPolicy> {
        let TrafficSpec {
            name,
            window,
            api,
            app,
            ip,
            spec_apps,
            mut spec_ips,
            ipv6_prefix,
            settings,
        } = spec;
        spec_ips.sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix_len()));
        let id = identity("traffic", &name, &settings);
        let has_apps = app.is_some() || !spec_apps.is_empty();
        let has_ips = ip.is_some() || !spec_ips.is_empty();
        Arc::new(TrafficPolicy {
            labels: [
                format!("{name}.api").into(),
                format!("{name}.app").into(),
                format!("{name}.ip").into(),
            ],
            window,
            api_limit: api.map(NonZeroU64::get),
            api: api.map(|_| state.single(&format!("{id}/api"), window)),
            app_limit: app.map(NonZeroU64::get),
            spec_apps: spec_apps
                .into_iter()
                .map(|(a, l)| (a.into_boxed_str(), l.get()))
                .collect(),
            apps: has_apps.then(|| state.table(&format!("{id}/app"), window)),
            ip_limit: ip.map(NonZeroU64::get),
            spec_ips: spec_ips.into_iter().map(|(n, l)| (n, l.get())).collect(),
            ips: has_ips.then(|| state.table(&format!("{id}/ip"), window)),
            ipv6_prefix,
            name: name.into_boxed_str(),
        })
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
    use crate::config::compile::traffic_policy;
    use crate::config::raw::RawTrafficControl;

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
            let p = traffic_policy(&r, &st).expect("valid");
            assert_eq!(p.window_secs(), 2 * secs);
        }
    }

    #[test]
    fn a_limit_per_address_alone_counts_each_address() {
        // Per-IP alone: the API as a whole is not counted, each address is.
        let mut r = raw();
        r.api_rate_limit = None;
        r.ip_rate_limit = Some(2);
        let st = LimitState::in_memory();
        let p = traffic_policy(&r, &st).expect("ip only");
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
    }

    #[test]
    fn the_most_specific_special_network_wins() {
        let mut r = raw();
        r.ip_rate_limit = Some(100);
        r.ipv6_prefix = Some(64);
        for (key, limit) in [("10.0.0.0/8", 1), ("10.1.0.0/16", 2), ("10.1.2.3", 3)] {
            r.spec_ip_rate_limits.push(crate::config::raw::RawSpecIp {
                ip_key: key.into(),
                rate_limit: limit,
            });
        }
        let p = traffic_policy(&r, &LimitState::in_memory()).expect("valid");
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(p.ip_limit(ip("10.1.2.3")), Some(3));
        assert_eq!(p.ip_limit(ip("::ffff:10.1.2.4")), Some(2));
        assert_eq!(p.ip_limit(ip("10.2.0.1")), Some(1));
        assert_eq!(p.ip_limit(ip("192.0.2.1")), Some(100));
        assert_eq!(p.ip_bucket(ip("2001:db8::1:2")), ip("2001:db8::"));
    }
}
