//! `[[plugins]]`: each plugin compiled once, by name, for every API that binds it.
//! A plugin's problems are reported at the plugin; an API that binds a plugin
//! that failed is not reported again.

use super::limits;
use crate::config::error::{err, ConfigError};
use crate::config::raw::{RawConfig, RawCors, RawIpControl, RawPlugin};
use crate::gateway::fingerprint;
use crate::policy::concurrency::ConcurrencyPolicy;
use crate::policy::cors::CorsPolicy;
use crate::policy::ip::IpPolicy;
use crate::policy::limits::{ParamPolicy, TrafficPolicy};
use crate::reject::Refusal;
use crate::state::State;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

pub(super) enum Plugin {
    Ip(Arc<IpPolicy>),
    Cors(Arc<CorsPolicy>),
    Traffic(Arc<TrafficPolicy>),
    ParamTraffic(Arc<ParamPolicy>),
    Concurrency(Arc<ConcurrencyPolicy>),
}

pub(super) struct Plugins<'a> {
    /// The plugins that compiled, by name.
    pub compiled: HashMap<&'a str, Plugin>,
    /// Every plugin the file defines, valid or not: a reference to one that
    /// failed is not reported again ("not defined" would be a follow-on error).
    pub declared: HashSet<&'a str>,
    /// Custom refusals (`rejected_code` / `rejected_msg`), by plugin name.
    pub refusals: HashMap<&'a str, Refusal>,
    /// Fingerprints of the plugins, to log what a reload changed.
    pub prints: BTreeMap<String, u64>,
}

pub(super) fn compile<'a>(
    raw: &'a RawConfig,
    state: &State,
    e: &mut Vec<ConfigError>,
) -> Plugins<'a> {
    let mut out = Plugins {
        compiled: HashMap::new(),
        declared: raw.plugins.iter().map(|p| p.name()).collect(),
        refusals: HashMap::new(),
        prints: raw
            .plugins
            .iter()
            .map(|p| (p.name().to_string(), fingerprint(p)))
            .collect(),
    };
    for p in &raw.plugins {
        let name = p.name();
        let at = format!("plugins ({name})");
        if !valid_name(name) {
            e.push(err(
                &at,
                "name must be 2-50 letters, digits, _ or -, starting with a letter",
            ));
        }
        let refusal = match p {
            RawPlugin::IpControl(x) => (x.rejected_code, x.rejected_msg.as_deref()),
            RawPlugin::TrafficControl(x) => (x.rejected_code, x.rejected_msg.as_deref()),
            RawPlugin::ParamTrafficControl(x) => (x.rejected_code, x.rejected_msg.as_deref()),
            // Its refusal status is `over_limit_status`.
            RawPlugin::Cors(_) | RawPlugin::ConcurrencyControl(_) => (None, None),
        };
        match Refusal::new(refusal.0, refusal.1) {
            Ok(Some(r)) => {
                out.refusals.insert(name, r);
            }
            Ok(None) => {}
            Err(m) => e.push(err(&at, m)),
        }
        let compiled = match p {
            RawPlugin::IpControl(ip) => ip_control(ip).map(|x| Plugin::Ip(Arc::new(x))),
            RawPlugin::Cors(c) => cors(c).map(|x| Plugin::Cors(Arc::new(x))),
            RawPlugin::TrafficControl(t) => {
                limits::traffic_policy(t, &state.limits).map(Plugin::Traffic)
            }
            RawPlugin::ParamTrafficControl(p) => {
                limits::param_policy(p, &state.limits).map(Plugin::ParamTraffic)
            }
            RawPlugin::ConcurrencyControl(c) => ConcurrencyPolicy::compile(c, &state.concurrency)
                .map(|x| Plugin::Concurrency(Arc::new(x)))
                .map_err(|m| vec![m]),
        };
        match compiled {
            Ok(c) => {
                if out.compiled.insert(name, c).is_some() {
                    e.push(err(&at, "duplicate name"));
                }
            }
            Err(msgs) => e.extend(msgs.into_iter().map(|m| err(&at, m))),
        }
    }
    out
}

/// `mode` is checked here; with a wrong mode the address list is still
/// checked (as a white list), so that both mistakes show at once.
fn ip_control(ip: &RawIpControl) -> Result<IpPolicy, Vec<String>> {
    match ip.mode.problem("mode") {
        None => IpPolicy::parse(&ip.mode, &ip.ips).map_err(|m| vec![m]),
        Some(m) => {
            let mut msgs = vec![m];
            msgs.extend(IpPolicy::parse("white", &ip.ips).err());
            Err(msgs)
        }
    }
}

/// `allow_methods` is checked here, the rest by the policy.
fn cors(c: &RawCors) -> Result<CorsPolicy, Vec<String>> {
    let methods: Vec<String> = c
        .allow_methods
        .iter()
        .filter_map(|m| m.problem("allow_methods:"))
        .collect();
    if !methods.is_empty() {
        return Err(methods);
    }
    CorsPolicy::from_raw(c).map_err(|m| vec![m])
}

fn valid_name(n: &str) -> bool {
    (2..=50).contains(&n.len())
        && n.starts_with(|c: char| c.is_ascii_alphabetic())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
