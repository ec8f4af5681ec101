//! The live parts of the admin views, read from the snapshot in force and
//! its state at request time: `/-/routes` with each target's health, and
//! `/-/usage?key=ID`. The rest of the views is precomputed (`views.rs`).

use crate::gateway::{Backend, Gateway};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// `/-/routes`: the routes with the live state of each HTTP back end's
/// targets: the active health check's verdict and passive ejection
/// (`healthy`, `ejected`).
pub fn routes(gw: &Gateway) -> Value {
    let mut routes = gw.views.routes().clone();
    let now = std::time::Instant::now();
    if let Value::Array(list) = &mut routes {
        for r in list.iter_mut() {
            let label = r["route"].as_str().unwrap_or_default().to_owned();
            let Some(api) = gw.apis.iter().find(|a| *a.label == *label) else {
                continue;
            };
            if let Backend::Http(b) = &api.backend {
                let targets: Vec<Value> = b
                    .upstream
                    .target_states(now)
                    .into_iter()
                    .map(|(url, healthy, ejected)| {
                        json!({ "url": url, "healthy": healthy, "ejected": ejected })
                    })
                    .collect();
                r["backend"]["targets"] = Value::Array(targets);
            }
        }
    }
    routes
}

/// `/-/usage?key=ID`: the key's usage plans with quota used and remaining, and
/// the current windows of the `traffic_control` policies counting its app,
/// read from the counters without touching them. `None`: no such key.
pub fn usage(gw: &Gateway, key: &str, cluster: bool) -> Option<Value> {
    let k = gw.keys.get(key)?;
    let names = gw.views.plans_of(key);
    let mut plans = Vec::new();
    for name in names {
        // A plan's counters live with the APIs of the services bound to it.
        let limits = gw.apis.iter().find_map(|a| a.limits.plan(name));
        let (qps, quota, used) = match limits {
            Some(p) => (p.qps(), p.quota(), p.quota().map(|_| p.used(key))),
            None => (None, None, None),
        };
        plans.push(json!({
            "plan": name,
            "bound": limits.is_some(),
            "qps": qps,
            "quota": quota,
            "used": used,
            "remaining": quota.zip(used).map(|(q, u)| q.saturating_sub(u)),
        }));
    }
    // The current windows of the traffic_control policies that count this
    // key's app (once per policy, whichever routes share it).
    let now = crate::store::Timestamp::now();
    let mut windows: BTreeMap<String, Value> = BTreeMap::new();
    for api in &gw.apis {
        let Some(t) = api.limits.traffic() else {
            continue;
        };
        let entry = windows.entry(t.name().to_string()).or_insert_with(|| {
            let limit = t.app_limit(&k.app);
            let (_, used, _) = t.counts(
                Some(&k.app),
                std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                now,
            );
            json!({
                "plugin": t.name(),
                "window_seconds": t.window_secs(),
                "app": k.app,
                "app_limit": limit,
                "used": used,
                "remaining": limit.map(|l| l.saturating_sub(used)),
                "routes": [],
            })
        });
        if let Some(r) = entry["routes"].as_array_mut() {
            r.push(json!(&*api.label));
        }
    }
    Some(json!({
        "key": k.id,
        "app": k.app,
        "enabled": k.enabled,
        "plans": plans,
        "windows": windows.into_values().collect::<Vec<_>>(),
        // Under [cluster], Redis holds the shared counts; these are this node's.
        "counts": if cluster { "local (cluster: Redis holds the shared counts)" } else { "local" },
    }))
}
