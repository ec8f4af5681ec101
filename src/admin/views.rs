//! The admin listener's read-only views of the configuration in force:
//! `/-/routes`, `/-/keys`, `/-/plugins` (JSON); the live parts (target
//! health, a key's usage) are added by `live.rs`.
//!
//! [`Views`] is built once per snapshot from the parsed file (it is what the
//! compiled snapshot was built from, so the two never disagree) and keeps
//! only what is safe to show: never a secret, a secret file's path, a
//! back-end URL's user-info, constant headers (which may carry a back end's
//! credentials) or a JWT key.

use crate::config::raw::{RawBackend, RawConfig, RawPlugin};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// What the views show, precomputed at compile time.
#[derive(Debug, Default)]
pub struct Views {
    routes: Value,
    keys: Value,
    plugins: Value,
    /// key id → names of the usage plans listing it.
    plans_of_key: BTreeMap<String, Vec<String>>,
}

impl Views {
    pub fn from_raw(raw: &RawConfig) -> Views {
        let mut plans_of_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for p in &raw.usage_plans {
            for k in &p.keys {
                plans_of_key
                    .entry(k.clone())
                    .or_default()
                    .push(p.name.clone());
            }
        }
        let mut used_by: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        let mut routes = Vec::new();
        for svc in &raw.services {
            for api in &svc.apis {
                let label = format!("{}/{}", svc.name, api.name);
                let plugins: Vec<&str> = svc
                    .plugins
                    .iter()
                    .chain(&api.plugins)
                    .map(String::as_str)
                    .collect();
                for p in &plugins {
                    used_by.entry(p).or_default().insert(label.clone());
                }
                let methods: Vec<&str> = if api.methods.is_empty() {
                    vec!["ANY"]
                } else {
                    api.methods.iter().map(|m| m.as_str()).collect()
                };
                routes.push(json!({
                    "route": label,
                    "service": svc.name,
                    "api": api.name,
                    "hosts": svc.hosts,
                    "environment": svc.environment,
                    "path": api.path,
                    "methods": methods,
                    "actions": api.actions,
                    "auth": if api.auth.is_empty() { "none" } else { api.auth.as_str() },
                    "jwt_provider": api.jwt_provider,
                    "plugins": plugins,
                    "enable_cors": api.enable_cors,
                    "usage_plans": svc.usage_plans,
                    "qps": { "service": svc.qps, "api": api.qps },
                    "backend": backend(&api.backend),
                }));
            }
        }
        let keys: Vec<Value> = raw
            .keys
            .iter()
            .map(|k| {
                json!({
                    "id": k.id,
                    "app": k.app.as_deref().unwrap_or(&k.id),
                    "enabled": k.enabled,
                    "plans": plans_of_key.get(&k.id).cloned().unwrap_or_default(),
                })
            })
            .collect();
        let plugins: Vec<Value> = raw
            .plugins
            .iter()
            .map(|p| {
                json!({
                    "name": p.name(),
                    "type": p.kind(),
                    "used_by": used_by.get(p.name()).cloned().unwrap_or_default(),
                    "settings": plugin_settings(p),
                })
            })
            .collect();
        Views {
            routes: Value::Array(routes),
            keys: Value::Array(keys),
            plugins: Value::Array(plugins),
            plans_of_key,
        }
    }

    pub fn routes(&self) -> &Value {
        &self.routes
    }

    pub fn keys(&self) -> &Value {
        &self.keys
    }

    pub fn plugins(&self) -> &Value {
        &self.plugins
    }

    /// Names of the usage plans listing `key`.
    pub fn plans_of(&self, key: &str) -> &[String] {
        self.plans_of_key.get(key).map_or(&[], Vec::as_slice)
    }
}

/// A back end without what may be secret: URLs lose their user-info, constant
/// headers and query values are listed by name only.
fn backend(b: &RawBackend) -> Value {
    if b.kind == "mock" {
        return json!({ "type": "mock", "status": b.status.unwrap_or(200) });
    }
    let mut urls: Vec<String> = b.url.iter().chain(&b.urls).map(|u| safe_url(u)).collect();
    urls.extend(b.targets.iter().map(|t| safe_url(&t.url)));
    json!({
        "type": b.kind,
        "urls": urls,
        "path": b.path,
        "method": b.method,
        "timeout": b.timeout.map(|d| humantime::format_duration(d).to_string()),
        "preserve_host": b.preserve_host,
        "const_headers": b.const_headers.keys().collect::<Vec<_>>(),
        "const_query": b.const_query.keys().collect::<Vec<_>>(),
    })
}

/// `scheme://user:pass@host/…` → `scheme://host/…`.
fn safe_url(u: &str) -> String {
    let Some((scheme, rest)) = u.split_once("://") else {
        return u.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://{host}{tail}"),
        None => u.to_string(),
    }
}

/// A plugin's limits and lists (none of which is a credential).
fn plugin_settings(p: &RawPlugin) -> Value {
    match p {
        RawPlugin::IpControl(c) => json!({ "mode": c.mode, "ips": c.ips }),
        RawPlugin::TrafficControl(c) => json!({
            "expire_type": c.expire_type,
            "expire": c.expire,
            "api_rate_limit": c.api_rate_limit,
            "app_rate_limit": c.app_rate_limit,
            "ip_rate_limit": c.ip_rate_limit,
            "special_apps": c.spec_app_rate_limits.len(),
            "special_ips": c.spec_ip_rate_limits.len(),
        }),
        RawPlugin::ParamTrafficControl(c) => json!({
            "default_window": c.default_window,
            "default_rate_limit": c.default_rate_limit,
            "strategies": c.strategies.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        }),
        RawPlugin::ConcurrencyControl(c) => json!({
            "max_in_flight": c.max_in_flight,
            "max_in_flight_per_app": c.max_in_flight_per_app,
            "max_in_flight_per_ip": c.max_in_flight_per_ip,
            "over_limit_status": c.over_limit_status,
        }),
        RawPlugin::Cors(c) => json!({
            "allow_origin": c.allow_origin,
            "allow_methods": c.allow_methods,
            "allow_credentials": c.allow_credentials,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_user_info() {
        assert_eq!(
            safe_url("http://u:p@10.0.0.1:8080/x?a=b"),
            "http://10.0.0.1:8080/x?a=b"
        );
        assert_eq!(safe_url("https://h/p@x"), "https://h/p@x");
        assert_eq!(safe_url("unix:/run/s"), "unix:/run/s");
    }
}
