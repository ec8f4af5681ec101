//! Raw config + long-lived state → an immutable `Gateway` snapshot. All
//! validation lives here; every problem is reported with its location.

use super::locate::did_you_mean;
use super::raw::*;
use crate::auth::hmac::HmacSettings;
use crate::auth::jwt::JwtProvider;
use crate::auth::tc1::Tc1Settings;
use crate::auth::tc3::Tc3Settings;
use crate::auth::{Key, Keys};
use crate::gateway::*;
use crate::health::HealthSpec;
use crate::policy::concurrency::ConcurrencyPolicy;
use crate::policy::cors::CorsPolicy;
use crate::policy::ip::{IpPolicy, TrustedProxies};
use crate::policy::limits::{ParamPolicy, PlanLimits, QpsLimit, RouteLimits, TrafficPolicy};
use crate::reject::ErrorStyle;
use crate::route::{ApiSpec, Router, ServiceSpec};
use crate::state::State;
use crate::tls::CertStore;
use crate::upstream::{compile_fail_on, RetryPolicy, UpstreamSpec};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// One problem of a config file and where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct ConfigError {
    pub location: String,
    pub message: String,
}

fn err(location: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        location: location.into(),
        message: message.into(),
    }
}

/// Read and parse a config file (no compilation).
pub fn read_file(path: &Path) -> Result<(RawConfig, String), Vec<ConfigError>> {
    let (text, hash) = read_text(path)?;
    Ok((parse_file(path, &text)?, hash))
}

/// A config file's text and the hex SHA-256 of its bytes (the config version).
pub fn read_text(path: &Path) -> Result<(String, String), Vec<ConfigError>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![err(path.display().to_string(), format!("cannot read: {e}"))])?;
    let hash = hex::encode(Sha256::digest(text.as_bytes()));
    Ok((text, hash))
}

/// Parse the text of the file at `path`; errors are located in that file.
pub fn parse_file(path: &Path, text: &str) -> Result<RawConfig, Vec<ConfigError>> {
    parse(text).map_err(|e| {
        vec![ConfigError {
            location: format!("{} {}", path.display(), e.location),
            message: e.message,
        }]
    })
}

pub fn parse(text: &str) -> Result<RawConfig, ConfigError> {
    toml::from_str::<RawConfig>(text).map_err(|e| {
        // A problem inside one [[plugins]] item: its own line and name.
        if let Some(p) = super::locate::plugin_problem(text) {
            return p;
        }
        let location = match e.span() {
            Some(span) => {
                let line = text.as_bytes()[..span.start.min(text.len())]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count()
                    + 1;
                format!("line {line}")
            }
            None => "config".into(),
        };
        ConfigError {
            location,
            message: super::locate::suggest_in_message(e.message()),
        }
    })
}

/// Validate the server-level settings that are bound once at start.
pub fn listen_addrs(raw: &RawServer) -> Result<Vec<SocketAddr>, Vec<ConfigError>> {
    let mut errors = vec![];
    let mut out = vec![];
    for (i, l) in raw.listen.iter().enumerate() {
        match l.parse::<SocketAddr>() {
            Ok(a) => out.push(a),
            Err(_) => errors.push(err(
                format!("server.listen[{i}]"),
                format!("{l:?} is not an address:port"),
            )),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Expand `${VAR}` from the environment; an unset variable is an error.
pub fn expand_env(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after.find('}').ok_or("unterminated ${")?;
        let name = &after[..end];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("invalid variable name {name:?}"));
        }
        let v =
            std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))?;
        out.push_str(&v);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

pub fn compile(raw: &RawConfig, hash: String, state: &State) -> Result<Gateway, Vec<ConfigError>> {
    let mut e = vec![];
    let base = state.base_dir.clone();

    // Server.
    if let Err(mut le) = listen_addrs(&raw.server) {
        e.append(&mut le);
    }
    if let Some(a) = &raw.server.admin {
        if a.parse::<SocketAddr>().is_err() {
            e.push(err("server.admin", format!("{a:?} is not an address:port")));
        }
    }
    let trusted = TrustedProxies::parse(&raw.server.trusted_proxies).unwrap_or_else(|m| {
        e.push(err("server.trusted_proxies", m));
        TrustedProxies::default()
    });
    if raw.server.max_body_bytes == 0 {
        e.push(err("server.max_body_bytes", "must be positive"));
    }
    if !(crate::budget::MIN_BYTES..=crate::budget::MAX_BYTES)
        .contains(&raw.server.max_buffered_bytes)
    {
        e.push(err(
            "server.max_buffered_bytes",
            "must be between 64 KiB and 1 TiB",
        ));
    }
    if raw.server.max_header_bytes < 8192 {
        e.push(err("server.max_header_bytes", "must be at least 8192"));
    }
    if raw.server.max_headers == 0 {
        e.push(err("server.max_headers", "must be positive"));
    }
    e.extend(super::bounds::check(raw));
    let certs = match &raw.server.tls {
        Some(tls) => {
            for (i, l) in tls.listen.iter().enumerate() {
                if l.parse::<SocketAddr>().is_err() {
                    e.push(err(
                        format!("server.tls.listen[{i}]"),
                        format!("{l:?} is not an address:port"),
                    ));
                }
            }
            if tls.certs.is_empty() {
                e.push(err(
                    "server.tls.certs",
                    "at least one certificate is needed",
                ));
            }
            CertStore::load(&tls.certs, &base).unwrap_or_else(|msgs| {
                e.extend(msgs.into_iter().map(|m| err("server.tls", m)));
                CertStore::default()
            })
        }
        None => CertStore::default(),
    };
    if let Some(c) = &raw.cluster {
        if !["local", "allow", "deny"].contains(&c.on_error.as_str()) {
            e.push(err(
                "cluster.on_error",
                format!("{:?} is not one of local, allow, deny", c.on_error),
            ));
        }
        for (field, m) in crate::cluster::conn::check(c, &base) {
            e.push(err(field, m));
        }
        if c.timeout < super::bounds::MIN_DURATION || c.timeout > Duration::from_secs(10) {
            e.push(err(
                "cluster.timeout",
                "must be between 1ms and 10s (it is added to a request when Redis stalls)",
            ));
        }
        if c.prefix.is_empty() {
            e.push(err("cluster.prefix", "must not be empty"));
        }
    }
    if !["text", "json"].contains(&raw.log.format.as_str()) {
        e.push(err(
            "log.format",
            format!("{:?} is not text or json", raw.log.format),
        ));
    }

    // Auth settings.
    let hmac = HmacSettings::from_raw(&raw.auth.hmac)
        .map_err(|m| e.push(err("auth.hmac", m)))
        .ok();
    let tc3 = Tc3Settings::from_raw(&raw.auth.tc3)
        .map_err(|m| e.push(err("auth.tc3", m)))
        .ok();
    let tc1 = Tc1Settings::from_raw(&raw.auth.tc1)
        .map_err(|m| e.push(err("auth.tc1", m)))
        .ok();

    // Keys.
    let mut keys: Keys = HashMap::new();
    let mut key_prints = BTreeMap::new();
    for (i, k) in raw.keys.iter().enumerate() {
        let at = format!("keys[{i}] ({})", k.id);
        if k.id.is_empty()
            || k.id.len() > 128
            || !k.id.bytes().all(|b| b.is_ascii_graphic() && b != b'"')
        {
            e.push(err(
                &at,
                "id must be 1-128 visible characters without quotes",
            ));
            continue;
        }
        let secret = match (&k.secret, &k.secret_file) {
            (Some(s), None) => expand_env(s),
            (None, Some(f)) => std::fs::read_to_string(base.join(f))
                .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
                .map_err(|err| format!("cannot read secret_file {f:?}: {err}")),
            _ => Err("exactly one of secret and secret_file is needed".into()),
        };
        match secret {
            Ok(s) if s.is_empty() => e.push(err(&at, "secret is empty")),
            Ok(s) => {
                let print = (&k.id, &k.app, k.enabled, Sha256::digest(s.as_bytes()));
                key_prints.insert(k.id.clone(), fingerprint(&print));
                let key = Key::new(k.id.clone(), s, k.app.clone(), k.enabled);
                if keys.insert(k.id.clone(), Arc::new(key)).is_some() {
                    e.push(err(&at, "duplicate key id"));
                }
            }
            Err(m) => e.push(err(&at, m)),
        }
    }

    // JWT providers.
    let mut jwt = HashMap::new();
    for p in &raw.jwt_providers {
        let at = format!("jwt_providers ({})", p.name);
        match JwtProvider::from_raw_in(p, &base, &state.jwks) {
            Ok(j) => {
                if jwt.insert(p.name.clone(), Arc::new(j)).is_some() {
                    e.push(err(&at, "duplicate name"));
                }
            }
            Err(m) => e.push(err(&at, m)),
        }
    }

    let reserved =
        crate::reserved::ReservedHeaders::new(jwt.values().flat_map(|p| p.header_names()));
    let key_index = crate::auth::key::KeyIndex::new(&keys);
    if let Err(m) = crate::auth::key::KeySource::new(
        raw.auth.key.key_header.as_deref(),
        raw.auth.key.key_query.as_deref(),
    ) {
        e.push(err("auth.key", m));
    }
    if raw
        .services
        .iter()
        .flat_map(|s| &s.apis)
        .any(|a| a.auth == "key")
    {
        for (a, b) in crate::auth::key::KeyIndex::shared_secrets(&keys) {
            e.push(err(
                format!("keys ({b})"),
                format!("same secret as key {a:?}: with auth = \"key\" the secret names the key"),
            ));
        }
    }

    // Usage plans.
    let mut plans: HashMap<&str, &RawUsagePlan> = HashMap::new();
    let raw_key_ids: std::collections::HashSet<&str> =
        raw.keys.iter().map(|k| k.id.as_str()).collect();
    let mut plan_limits: HashMap<&str, Arc<PlanLimits>> = HashMap::new();
    for p in &raw.usage_plans {
        let at = format!("usage_plans ({})", p.name);
        if plans.insert(&p.name, p).is_some() {
            e.push(err(&at, "duplicate name"));
        }
        match PlanLimits::compile(p, &state.limits) {
            Ok(l) => {
                plan_limits.insert(&p.name, l);
            }
            Err(msgs) => e.extend(msgs.into_iter().map(|m| err(&at, m))),
        }
        if p.qps == Some(0) {
            e.push(err(&at, "qps must be positive (omit it for unlimited)"));
        }
        if p.quota == Some(0) {
            e.push(err(&at, "quota must be positive (omit it for unlimited)"));
        }
        for k in &p.keys {
            if !raw_key_ids.contains(k.as_str()) {
                let hint = did_you_mean(k, raw_key_ids.iter().copied());
                e.push(err(
                    &at,
                    format!("key {k:?} is not defined in [[keys]]{hint}"),
                ));
            }
        }
    }

    // Plugins.
    let mut plugins: HashMap<&str, Plugin> = HashMap::new();
    // Every plugin the file defines, valid or not: a reference to one that
    // failed is not reported again ("not defined" would be a follow-on error).
    let declared: HashSet<&str> = raw.plugins.iter().map(|p| p.name()).collect();
    let mut plugin_refusals: HashMap<&str, crate::reject::Refusal> = HashMap::new();
    for p in &raw.plugins {
        let name = p.name();
        let at = format!("plugins ({name})");
        if !valid_plugin_name(name) {
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
        match crate::reject::Refusal::new(refusal.0, refusal.1) {
            Ok(Some(r)) => {
                plugin_refusals.insert(name, r);
            }
            Ok(None) => {}
            Err(m) => e.push(err(&at, m)),
        }
        let compiled = match p {
            RawPlugin::IpControl(ip) => {
                IpPolicy::parse(&ip.mode, &ip.ips).map(|x| Plugin::Ip(Arc::new(x)))
            }
            RawPlugin::Cors(c) => CorsPolicy::from_raw(c).map(|x| Plugin::Cors(Arc::new(x))),
            RawPlugin::TrafficControl(t) => TrafficPolicy::compile(t, &state.limits)
                .map(Plugin::Traffic)
                .map_err(|m| m.join("; ")),
            RawPlugin::ParamTrafficControl(p) => ParamPolicy::compile(p, &state.limits)
                .map(Plugin::ParamTraffic)
                .map_err(|m| m.join("; ")),
            RawPlugin::ConcurrencyControl(c) => ConcurrencyPolicy::compile(c, &state.concurrency)
                .map(|x| Plugin::Concurrency(Arc::new(x))),
        };
        match compiled {
            Ok(c) => {
                if plugins.insert(name, c).is_some() {
                    e.push(err(&at, "duplicate name"));
                }
            }
            Err(m) => e.push(err(&at, m)),
        }
    }

    // Services and APIs.
    let mut apis = vec![];
    let mut specs = vec![];
    let mut inventory = Inventory {
        keys: key_prints,
        plugins: raw
            .plugins
            .iter()
            .map(|p| (p.name().to_string(), fingerprint(p)))
            .collect(),
        plans: plans
            .iter()
            .map(|(n, p)| (n.to_string(), fingerprint(p)))
            .collect(),
        ..Default::default()
    };
    let mut service_names = HashSet::new();
    let mut bound_hosts: HashMap<(String, Option<String>), String> = HashMap::new();
    for svc in &raw.services {
        let sat = format!("services ({})", svc.name);
        if !valid_service_name(&svc.name) {
            e.push(err(
                &sat,
                "name must be 1-30 lower-case letters, digits, - or _, starting with a letter",
            ));
        }
        if !service_names.insert(&svc.name) {
            e.push(err(&sat, "duplicate service name"));
        }
        if let Some(env) = &svc.environment {
            if env.is_empty()
                || !env
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                e.push(err(&sat, format!("environment {env:?} must be lower-case letters, digits or - (release, prepub, test)")));
            }
        }
        if svc.qps == Some(0) {
            e.push(err(&sat, "qps must be positive (omit it for unlimited)"));
        }
        if let Err(m) =
            crate::route::front::FrontProtocols::compile(&svc.protocols, svc.https_redirect, None)
        {
            e.push(err(&sat, m));
        }
        let tls_port_zero = raw.server.tls.as_ref().is_some_and(|t| {
            t.listen
                .first()
                .and_then(|l| l.parse::<SocketAddr>().ok())
                .is_some_and(|a| a.port() == 0)
        });
        if svc.https_redirect && tls_port_zero {
            e.push(err(
                &sat,
                "https_redirect needs a fixed port on the first [server.tls] listen address, not 0",
            ));
        }
        let key_plans = service_plans(svc, &plans, &sat, &mut e);
        for p in &svc.plugins {
            if !declared.contains(p.as_str()) {
                let hint = did_you_mean(p, declared.iter().copied());
                e.push(err(&sat, format!("plugin {p:?} is not defined{hint}")));
            }
        }
        let environment = match &svc.path_mapping {
            None => svc.environment.clone(),
            Some(p) => crate::route::front::mapped_prefix(p, &svc.hosts, &svc.environment)
                .unwrap_or_else(|m| {
                    e.push(err(&sat, m));
                    svc.environment.clone()
                }),
        };
        // A custom domain (and path prefix) belongs to one service.
        for h in &svc.hosts {
            let key = (
                h.trim_end_matches('.').to_ascii_lowercase(),
                environment.clone(),
            );
            match bound_hosts.get(&key) {
                Some(other) if *other != svc.name => e.push(err(
                    &sat,
                    format!(
                        "host {h:?} is bound to service {other} already{}; a custom domain belongs to one service (share it between environments with path_mapping)",
                        environment.as_ref().map(|p| format!(" under /{p}")).unwrap_or_default()
                    ),
                )),
                _ => {
                    bound_hosts.insert(key, svc.name.clone());
                }
            }
        }
        let mut spec = ServiceSpec {
            name: svc.name.clone(),
            hosts: svc.hosts.clone(),
            environment,
            apis: vec![],
        };
        let mut api_names = HashSet::new();
        for api in &svc.apis {
            let at = format!("services ({}) / apis ({})", svc.name, api.name);
            if api.name.is_empty() || api.name.chars().count() > 60 {
                e.push(err(&at, "name must be 1-60 characters"));
            }
            if !api_names.insert(&api.name) {
                e.push(err(&at, "duplicate API name in this service"));
            }
            // Plans bound to the API itself add to the service's (BindType=API).
            let (api_key_plans, plan_names) = if api.usage_plans.is_empty() {
                (
                    key_plans.clone(),
                    svc.usage_plans.iter().collect::<Vec<_>>(),
                )
            } else {
                api_plans(svc, api, &plans, &at, &mut e)
            };
            let ctx = ApiCtx {
                raw,
                state,
                plugins: &plugins,
                declared: &declared,
                plugin_refusals: &plugin_refusals,
                reserved: &reserved,
                jwt: &jwt,
                key_plans: api_key_plans,
                plan_limits: plan_names
                    .iter()
                    .filter_map(|n| plan_limits.get(n.as_str()).cloned())
                    .collect(),
            };
            match compile_api(&ctx, svc, api, &at) {
                Ok(a) => {
                    let print = (&svc.hosts, &svc.environment, svc.qps, api);
                    let print = (print, &svc.usage_plans, &svc.plugins);
                    inventory.routes.insert(
                        format!("{}/{} {}", svc.name, api.name, api.path),
                        fingerprint(&print),
                    );
                    spec.apis.push(ApiSpec {
                        id: apis.len(),
                        name: api.name.clone(),
                        path: api.path.clone(),
                        methods: api.methods.clone(),
                        actions: api.actions.clone(),
                    });
                    apis.push(a);
                }
                Err(mut errs) => e.append(&mut errs),
            }
        }
        specs.push(spec);
    }
    let router = Router::build(&specs).unwrap_or_else(|msgs| {
        e.extend(msgs.into_iter().map(|m| err("routes", m)));
        Router::build(&[]).unwrap_or_else(|_| unreachable_router())
    });

    let (Some(hmac), Some(tc3), Some(tc1)) = (hmac, tc3, tc1) else {
        return Err(e);
    };
    if !e.is_empty() {
        return Err(e);
    }
    Ok(Gateway {
        version: ConfigVersion {
            hash,
            loaded_at: SystemTime::now(),
        },
        router,
        apis,
        keys,
        auth: AuthSettings {
            replay: raw.auth.replay,
            strip_credentials: raw.auth.strip_credentials,
            hmac,
            tc3,
            tc1,
            jwt_leeway: raw.auth.jwt.leeway,
            key_index,
        },
        trusted,
        certs,
        log: LogSettings {
            access: raw.log.access,
        },
        body_read_timeout: raw.server.body_read_timeout,
        path: crate::path::PathSettings {
            normalize: raw.server.normalize_path,
            merge_slashes: raw.server.merge_slashes,
            escaped_slashes: raw.server.path_with_escaped_slashes_action,
        },
        reserved,
        inventory,
        views: Arc::new(crate::admin::views::Views::from_raw(raw)),
    })
}

fn unreachable_router() -> Router {
    // `Router::build(&[])` has nothing to reject; this keeps the types honest
    // without a panic path.
    match Router::build(&[]) {
        Ok(r) => r,
        Err(_) => std::process::abort(),
    }
}

enum Plugin {
    Ip(Arc<IpPolicy>),
    Cors(Arc<CorsPolicy>),
    Traffic(Arc<TrafficPolicy>),
    ParamTraffic(Arc<ParamPolicy>),
    Concurrency(Arc<ConcurrencyPolicy>),
}

struct ApiCtx<'a> {
    raw: &'a RawConfig,
    state: &'a State,
    plugins: &'a HashMap<&'a str, Plugin>,
    declared: &'a HashSet<&'a str>,
    plugin_refusals: &'a HashMap<&'a str, crate::reject::Refusal>,
    reserved: &'a crate::reserved::ReservedHeaders,
    jwt: &'a HashMap<String, Arc<JwtProvider>>,
    key_plans: Option<Arc<HashMap<String, Arc<str>>>>,
    plan_limits: Vec<Arc<PlanLimits>>,
}

/// key id → plan name over the plans bound to `svc`; a key in two of them is an error.
fn service_plans(
    svc: &RawService,
    plans: &HashMap<&str, &RawUsagePlan>,
    at: &str,
    e: &mut Vec<ConfigError>,
) -> Option<Arc<HashMap<String, Arc<str>>>> {
    if svc.usage_plans.is_empty() {
        return None;
    }
    let mut map: HashMap<String, Arc<str>> = HashMap::new();
    for name in &svc.usage_plans {
        let Some(plan) = plans.get(name.as_str()) else {
            let hint = did_you_mean(name, plans.keys().copied());
            e.push(err(at, format!("usage plan {name:?} is not defined{hint}")));
            continue;
        };
        let pname: Arc<str> = Arc::from(name.as_str());
        for k in &plan.keys {
            if let Some(prev) = map.insert(k.clone(), pname.clone()) {
                if &*prev != name.as_str() {
                    e.push(err(at, format!("key {k:?} is bound by two usage plans of this service: {prev} and {name}")));
                }
            }
        }
    }
    Some(Arc::new(map))
}

/// key id → usage plan name.
type KeyPlans = Arc<HashMap<String, Arc<str>>>;

/// key id → plan name over the plans bound to `svc` and to `api`, and the
/// plans' names; a key in two of them is an error.
fn api_plans<'r>(
    svc: &'r RawService,
    api: &'r RawApi,
    plans: &HashMap<&str, &RawUsagePlan>,
    at: &str,
    e: &mut Vec<ConfigError>,
) -> (Option<KeyPlans>, Vec<&'r String>) {
    let mut names: Vec<&String> = svc.usage_plans.iter().collect();
    for n in &api.usage_plans {
        if names.contains(&n) {
            e.push(err(
                at,
                format!("usage plan {n:?} is bound to the service already"),
            ));
        } else {
            names.push(n);
        }
    }
    let mut map: HashMap<String, Arc<str>> = HashMap::new();
    for name in &names {
        let Some(plan) = plans.get(name.as_str()) else {
            if api.usage_plans.contains(name) {
                e.push(err(at, format!("usage plan {name:?} is not defined")));
            }
            continue;
        };
        let pname: Arc<str> = Arc::from(name.as_str());
        for k in &plan.keys {
            if let Some(prev) = map.insert(k.clone(), pname.clone()) {
                e.push(err(
                    at,
                    format!("key {k:?} is bound by two usage plans of this API: {prev} and {name}"),
                ));
            }
        }
    }
    (Some(Arc::new(map)), names)
}

/// An API's own `[auth.hmac]` when it sets `hmac_enforce_headers`.
fn hmac_override(
    ctx: &ApiCtx,
    api: &RawApi,
    at: &str,
    e: &mut Vec<ConfigError>,
) -> Option<Arc<HmacSettings>> {
    let list = api.hmac_enforce_headers.as_ref()?;
    let enforce = crate::auth::hmac::parse_enforce_headers(list)
        .map_err(|m| e.push(err(at, format!("hmac_enforce_headers: {m}"))))
        .ok()?;
    // Errors of the global section are reported once, at `auth.hmac`.
    let mut s = HmacSettings::from_raw(&ctx.raw.auth.hmac).ok()?;
    s.enforce_headers = enforce;
    Some(Arc::new(s))
}

fn compile_api(
    ctx: &ApiCtx,
    svc: &RawService,
    api: &RawApi,
    at: &str,
) -> Result<Api, Vec<ConfigError>> {
    let mut e = vec![];
    for m in &api.methods {
        if ![
            "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "ANY",
        ]
        .contains(&m.as_str())
        {
            e.push(err(
                at,
                format!("method {m:?} is not one of GET POST PUT DELETE PATCH HEAD OPTIONS ANY"),
            ));
        }
    }
    if api.methods.is_empty() {
        e.push(err(at, "methods may not be empty (use [\"ANY\"])"));
    }
    if api.qps == Some(0) {
        e.push(err(at, "qps must be positive (omit it for unlimited)"));
    }
    let auth = match api.auth.as_str() {
        "none" => AuthMode::None,
        "hmac" => AuthMode::Hmac {
            settings: hmac_override(ctx, api, at, &mut e),
        },
        "tc3" => AuthMode::Tc3 {
            service: api.tc3_service.clone(),
            require_signed_payload: api.tc3_require_signed_payload,
        },
        "tc1" => AuthMode::Tc1,
        "openapi" => AuthMode::OpenApi,
        "key" => {
            let k = &ctx.raw.auth.key;
            let header = api.key_header.as_deref().or(k.key_header.as_deref());
            let query = api.key_query.as_deref().or(k.key_query.as_deref());
            match crate::auth::key::KeySource::new(header, query) {
                Ok(s) => AuthMode::Key(Arc::new(s)),
                Err(m) => {
                    // A mistake of [auth.key] alone is reported once, there.
                    if api.key_header.is_some() || api.key_query.is_some() {
                        e.push(err(at, m));
                    }
                    AuthMode::None
                }
            }
        }
        "external" => match &api.external_auth {
            None => {
                e.push(err(
                    at,
                    "auth = \"external\" needs [services.apis.external_auth]",
                ));
                AuthMode::None
            }
            Some(x) => match crate::auth::external::ExternalAuth::new(x, &ctx.state.base_dir) {
                Ok(x) => AuthMode::External(Arc::new(x)),
                Err(errs) => {
                    for (_, m) in errs {
                        e.push(err(format!("{at} / external_auth"), m));
                    }
                    AuthMode::None
                }
            },
        },
        "jwt" => match api.jwt_provider.as_deref().map(|p| (p, ctx.jwt.get(p))) {
            Some((_, Some(p))) => AuthMode::Jwt(p.clone()),
            Some((name, None)) => {
                // A provider that failed to load was reported already.
                if !ctx.raw.jwt_providers.iter().any(|p| p.name == name) {
                    let names = ctx.raw.jwt_providers.iter().map(|p| p.name.as_str());
                    let hint = did_you_mean(name, names);
                    e.push(err(
                        at,
                        format!("jwt_provider {name:?} is not defined{hint}"),
                    ));
                }
                AuthMode::None
            }
            None => {
                e.push(err(at, "auth = \"jwt\" needs jwt_provider"));
                AuthMode::None
            }
        },
        other => {
            e.push(err(
                at,
                format!(
                    "auth {other:?} is not one of none, hmac, tc3, tc1, jwt, openapi, key, external{}",
                    did_you_mean(
                        other,
                        ["none", "hmac", "tc3", "tc1", "jwt", "openapi", "key", "external"]
                    )
                ),
            ));
            AuthMode::None
        }
    };
    if api.hmac_enforce_headers.is_some() && api.auth != "hmac" {
        e.push(err(
            at,
            "hmac_enforce_headers is only used with auth = \"hmac\"",
        ));
    }
    if api.external_auth.is_some() && api.auth != "external" {
        e.push(err(
            at,
            "external_auth is only used with auth = \"external\"",
        ));
    }
    if api.jwt_provider.is_some() && api.auth != "jwt" {
        e.push(err(at, "jwt_provider is only used with auth = \"jwt\""));
    }
    if api.tc3_service.is_some() && api.auth != "tc3" {
        e.push(err(at, "tc3_service is only used with auth = \"tc3\""));
    }
    let http_status = api
        .cloud_error_status
        .unwrap_or(ctx.raw.auth.cloud_error_status)
        == crate::config::raw::CloudErrorStatus::Http;
    if (api.key_header.is_some() || api.key_query.is_some()) && api.auth != "key" {
        e.push(err(
            at,
            "key_header and key_query are only used with auth = \"key\"",
        ));
    }
    let caller = compile_caller_rules(ctx, api, at, &mut e);
    let style = match api.auth.as_str() {
        "tc3" | "tc1" => ErrorStyle::Cloud { http_status },
        "openapi" => ErrorStyle::OpenApi { http_status },
        _ => ErrorStyle::Json,
    };
    if api.cloud_error_status.is_some() && matches!(style, ErrorStyle::Json) {
        e.push(err(
            at,
            "cloud_error_status is only used with auth = \"tc3\", \"tc1\" or \"openapi\"",
        ));
    }
    if !api.actions.is_empty() && !matches!(api.auth.as_str(), "tc3" | "tc1") {
        e.push(err(
            at,
            "actions is only used with auth = \"tc3\" or \"tc1\"",
        ));
    }
    for a in &api.actions {
        if let Err(m) = crate::route::check_action_pattern(a) {
            e.push(err(at, m));
        }
    }

    // Plugins: the service's, then the API's own.
    let mut ip = vec![];
    let mut cors = None;
    let mut traffic_kinds = vec![];
    let mut traffic = None;
    let mut param = None;
    let mut concurrency = None;
    let mut seen = HashSet::new();
    for name in svc.plugins.iter().chain(api.plugins.iter()) {
        if !seen.insert(name) {
            continue;
        }
        match ctx.plugins.get(name.as_str()) {
            None => {
                if api.plugins.contains(name) && !ctx.declared.contains(name.as_str()) {
                    let hint = did_you_mean(name, ctx.declared.iter().copied());
                    e.push(err(at, format!("plugin {name:?} is not defined{hint}")));
                }
            }
            Some(Plugin::Ip(p)) => ip.push((Arc::from(name.as_str()), p.clone())),
            Some(Plugin::Cors(c)) => {
                if cors.is_some() {
                    e.push(err(
                        at,
                        format!("plugin {name:?}: only one cors plugin per API"),
                    ));
                }
                cors = Some(c.clone());
            }
            Some(Plugin::Traffic(t)) => {
                traffic_kinds.push(name.clone());
                traffic = Some(t.clone());
            }
            Some(Plugin::ParamTraffic(p)) => {
                traffic_kinds.push(name.clone());
                param = Some(p.clone());
            }
            Some(Plugin::Concurrency(c)) => {
                if concurrency.is_some() {
                    e.push(err(
                        at,
                        format!("plugin {name:?}: only one concurrency_control plugin per API"),
                    ));
                }
                concurrency = Some(c.clone());
            }
        }
    }
    if traffic_kinds.len() > 1 {
        e.push(err(
            at,
            format!(
                "at most one traffic-control plugin per API, found {}",
                traffic_kinds.join(", ")
            ),
        ));
    }
    if cors.is_none() && api.enable_cors {
        cors = Some(Arc::new(CorsPolicy::allow_any()));
    }

    let max_body = api.max_body_bytes.unwrap_or(ctx.raw.server.max_body_bytes);
    if max_body == 0 {
        e.push(err(at, "max_body_bytes must be positive"));
    }
    let service_qps = svc
        .qps
        .map(|q| QpsLimit::service(&ctx.state.limits, &svc.name, q));
    let api_qps = api
        .qps
        .map(|q| QpsLimit::api(&ctx.state.limits, &svc.name, &api.name, q));
    let (service_qps, api_qps) = match (service_qps.transpose(), api_qps.transpose()) {
        (Ok(s), Ok(a)) => (s, a),
        (s, a) => {
            for m in [s.err(), a.err()].into_iter().flatten() {
                e.push(err(at, m));
            }
            (None, None)
        }
    };
    let limits = RouteLimits::new(
        service_qps,
        api_qps,
        traffic,
        param,
        ctx.plan_limits.clone(),
    );
    let tls_port = ctx.raw.server.tls.as_ref().and_then(|t| {
        t.listen
            .first()
            .and_then(|l| l.parse::<SocketAddr>().ok())
            .map(|a| a.port())
    });
    let front =
        crate::route::front::FrontProtocols::compile(&svc.protocols, svc.https_redirect, tls_port)
            // An error is reported once, at the service.
            .unwrap_or_default();
    let mut refusals = Refusals {
        auth: caller.refusal,
        ..Refusals::default()
    };
    for name in svc.plugins.iter().chain(api.plugins.iter()) {
        if let Some(r) = ctx.plugin_refusals.get(name.as_str()) {
            match ctx.plugins.get(name.as_str()) {
                Some(Plugin::Traffic(_) | Plugin::ParamTraffic(_)) => {
                    refusals.traffic = Some(r.clone())
                }
                _ => {
                    refusals.plugins.insert(Arc::from(name.as_str()), r.clone());
                }
            }
        }
    }
    let inputs = crate::policy::inputs::Inputs::compile(
        &api.params,
        &crate::route::param_names(&api.path).unwrap_or_default(),
        (api.backend.kind != "mock").then_some(api.backend.path.as_str()),
        &api.backend.const_query,
        &api.backend.const_headers,
    )
    .unwrap_or_else(|msgs| {
        e.extend(msgs.into_iter().map(|m| err(at, m)));
        Default::default()
    });
    let label = format!("{}/{}", svc.name, api.name);
    let backend = compile_backend(ctx, api, at, &label, &mut e);
    if !e.is_empty() {
        return Err(e);
    }
    let Some(backend) = backend else {
        return Err(e);
    };
    let label: Arc<str> = Arc::from(label);
    Ok(Api {
        service: Arc::from(svc.name.as_str()),
        name: Arc::from(api.name.as_str()),
        metrics: ctx.state.metrics.route(&label),
        label,
        auth,
        style,
        debug_signatures: api
            .debug_signatures
            .unwrap_or(ctx.raw.auth.debug_signatures),
        max_body,
        cors,
        ip,
        plans: ctx.key_plans.clone(),
        limits,
        front,
        inputs,
        concurrency,
        backend,
        acl: caller.acl,
        request_headers: caller.request_headers,
        response_headers: caller.response_headers,
        refusals,
    })
}

/// What an API does with a caller once authenticated.
struct CallerRules {
    acl: Option<Arc<crate::policy::acl::CallerAcl>>,
    request_headers: Option<Arc<crate::policy::headers::HeaderRules>>,
    response_headers: Option<Arc<crate::policy::headers::HeaderRules>>,
    refusal: Option<crate::reject::Refusal>,
}

/// Access lists, header rules and the custom auth refusal of one API.
fn compile_caller_rules(
    ctx: &ApiCtx,
    api: &RawApi,
    at: &str,
    e: &mut Vec<ConfigError>,
) -> CallerRules {
    use crate::policy::headers::{HeaderRules, Side};
    let lists = [
        ("allow_keys", &api.allow_keys),
        ("deny_keys", &api.deny_keys),
        ("allow_apps", &api.allow_apps),
        ("deny_apps", &api.deny_apps),
    ];
    let any_list = lists.iter().any(|(_, l)| !l.is_empty());
    let anonymous = api.auth == "none";
    if any_list && anonymous {
        e.push(err(
            at,
            "allow_apps, deny_apps, allow_keys and deny_keys need an auth scheme (auth is \"none\")",
        ));
    }
    for (what, list) in &lists[..2] {
        for k in list.iter() {
            if !ctx.raw.keys.iter().any(|x| &x.id == k) {
                e.push(err(
                    at,
                    format!("{what}: key {k:?} is not defined in [[keys]]"),
                ));
            }
        }
    }
    // JWT callers may be subjects outside [[keys]] (their app is the subject).
    if api.auth != "jwt" {
        for (what, list) in &lists[2..] {
            for a in list.iter() {
                let known = ctx
                    .raw
                    .keys
                    .iter()
                    .any(|x| x.app.as_deref().unwrap_or(&x.id) == a);
                if !known {
                    e.push(err(at, format!("{what}: no key in [[keys]] has app {a:?}")));
                }
            }
        }
    }
    let acl = crate::policy::acl::CallerAcl::new(
        &api.allow_apps,
        &api.deny_apps,
        &api.allow_keys,
        &api.deny_keys,
    )
    .map(Arc::new);
    let mut rules = |raw: &RawHeaderRules, side: Side, what: &str| match HeaderRules::compile(
        raw,
        side,
        ctx.reserved,
    ) {
        Ok(r) => r.map(Arc::new),
        Err(msgs) => {
            e.extend(msgs.into_iter().map(|m| err(format!("{at} / {what}"), m)));
            None
        }
    };
    let request_headers = rules(&api.request_headers, Side::Request, "request_headers");
    let response_headers = rules(&api.response_headers, Side::Response, "response_headers");
    let refusal =
        match crate::reject::Refusal::new(api.auth_rejected_code, api.auth_rejected_msg.as_deref())
        {
            Ok(r) => r,
            Err(m) => {
                e.push(err(at, format!("auth_{m}")));
                None
            }
        };
    if refusal.is_some() && anonymous {
        e.push(err(
            at,
            "auth_rejected_code / auth_rejected_msg need an auth scheme (auth is \"none\")",
        ));
    }
    CallerRules {
        acl,
        request_headers,
        response_headers,
        refusal,
    }
}

fn compile_backend(
    ctx: &ApiCtx,
    api: &RawApi,
    at: &str,
    label: &str,
    e: &mut Vec<ConfigError>,
) -> Option<Backend> {
    let b = &api.backend;
    let at = format!("{at} / backend");
    match b.kind.as_str() {
        "mock" => {
            let status = b.status.unwrap_or(200);
            let status = match StatusCode::from_u16(status) {
                Ok(s) if (200..600).contains(&status) => s,
                _ => {
                    e.push(err(
                        &at,
                        format!("status {status} is not an HTTP status 200-599"),
                    ));
                    return None;
                }
            };
            let headers = header_map(&b.headers, &at, e);
            Some(Backend::Mock(MockBackend {
                status,
                headers,
                body: Bytes::from(b.body.clone().unwrap_or_default()),
            }))
        }
        "http" | "websocket" => {
            let mut targets: Vec<(String, u32)> = vec![];
            let sources =
                b.url.is_some() as u8 + !b.urls.is_empty() as u8 + !b.targets.is_empty() as u8;
            if sources != 1 {
                e.push(err(&at, "exactly one of url, urls and targets is needed"));
                return None;
            }
            if let Some(u) = &b.url {
                targets.push((u.clone(), 1));
            }
            targets.extend(b.urls.iter().map(|u| (u.clone(), 1)));
            for t in &b.targets {
                if t.weight > 100 {
                    e.push(err(&at, format!("target {}: weight must be 0-100", t.url)));
                }
                // Weight 0: the target is disabled (kept in the file, sent nothing).
                if t.weight > 0 {
                    targets.push((t.url.clone(), t.weight));
                }
            }
            if !b.targets.is_empty() && targets.is_empty() {
                e.push(err(&at, "every target has weight 0 (disabled)"));
                return None;
            }
            let websocket = b.kind == "websocket";
            let mut expanded = vec![];
            for (u, w) in targets {
                match expand_env(&u).and_then(|u| ws_url(u, websocket)) {
                    Ok(u) => expanded.push((u, w)),
                    Err(m) => e.push(err(&at, m)),
                }
            }
            if websocket {
                for m in &api.methods {
                    if m != "GET" && m != "ANY" {
                        e.push(err(
                            &at,
                            format!("type = \"websocket\" takes GET only, not {m}"),
                        ));
                    }
                }
            }
            let max = if websocket {
                Duration::from_secs(1800)
            } else {
                Duration::from_secs(30)
            };
            let default = if api.auth == "openapi" {
                Duration::from_secs(3)
            } else {
                Duration::from_secs(15)
            };
            let timeout = b.timeout.unwrap_or(if websocket { max } else { default });
            if timeout < super::bounds::MIN_DURATION || timeout > max {
                e.push(err(
                    &at,
                    format!(
                        "timeout must be between 1ms and {}",
                        humantime::format_duration(max)
                    ),
                ));
            }
            if !b.path.is_empty() && !b.path.starts_with('/') {
                e.push(err(&at, "path must start with /"));
            } else if let Err(m) = crate::route::check_backend_path_with(
                &api.path,
                &b.path,
                &crate::policy::inputs::Inputs::backend_path_names(&api.params),
            ) {
                e.push(err(&at, m));
            }
            let method = match &b.method {
                None => None,
                Some(m) => match Method::from_bytes(m.as_bytes()) {
                    Ok(m)
                        if ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
                            .contains(&m.as_str()) =>
                    {
                        Some(m)
                    }
                    _ => {
                        e.push(err(&at, format!("method {m:?} is not an HTTP method")));
                        None
                    }
                },
            };
            // Constants naming `${param.X}` are filled per request (policy::inputs).
            let fixed = |m: &std::collections::BTreeMap<String, String>| {
                m.iter()
                    .filter(|(_, v)| !crate::policy::inputs::is_param_ref(v))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<std::collections::BTreeMap<_, _>>()
            };
            let const_headers = header_map(&fixed(&b.const_headers), &at, e)
                .into_iter()
                .filter_map(|(k, v)| Some((k?, v)))
                .collect();
            let const_query = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(fixed(&b.const_query).iter())
                .finish();
            let retry =
                RetryPolicy::compile(b.retries, b.retry_on.as_deref(), b.try_timeout, timeout)
                    .unwrap_or_else(|m| {
                        e.extend(m.into_iter().map(|m| err(&at, m)));
                        RetryPolicy::default()
                    });
            let (fail_on_connect, fail_on_5xx) = compile_fail_on(b.fail_on.as_deref())
                .unwrap_or_else(|m| {
                    e.push(err(&at, m));
                    (true, false)
                });
            let health = b.health_check.as_ref().and_then(|h| {
                HealthSpec::compile(h)
                    .map_err(|m| e.extend(m.into_iter().map(|m| err(&at, m))))
                    .ok()
            });
            let spec = UpstreamSpec {
                targets: expanded,
                max_fails: b.max_fails,
                fail_timeout: b.fail_timeout,
                connect_timeout: b
                    .connect_timeout
                    .unwrap_or(Duration::from_secs(5))
                    .min(timeout),
                ca_file: b.ca_file.clone(),
                http2: b.http2,
                fail_on_connect,
                fail_on_5xx,
                health,
            };
            if websocket && b.http2 {
                e.push(err(
                    &at,
                    "http2 = true cannot carry websocket upgrades; use HTTP/1.1 for this back end",
                ));
            }
            let upstream = match ctx.state.upstream(&spec, label) {
                Ok(u) => u,
                Err(m) => {
                    e.push(err(&at, m));
                    return None;
                }
            };
            Some(Backend::Http(HttpBackend {
                upstream,
                path: b.path.clone(),
                method,
                timeout,
                const_headers,
                const_query,
                preserve_host: b.preserve_host,
                websocket,
                retry,
            }))
        }
        other => {
            e.push(err(
                &at,
                format!("type {other:?} is not one of http, mock, websocket"),
            ));
            None
        }
    }
}

/// `ws://` / `wss://` back-end URLs (websocket APIs only) as `http://` / `https://`.
fn ws_url(u: String, websocket: bool) -> Result<String, String> {
    let lower = u.to_ascii_lowercase();
    let rest = match (lower.strip_prefix("ws://"), lower.strip_prefix("wss://")) {
        (Some(_), _) => ("http://", 5),
        (_, Some(_)) => ("https://", 6),
        _ => return Ok(u),
    };
    if !websocket {
        return Err(format!(
            "back-end URL {u:?}: ws:// and wss:// are for type = \"websocket\""
        ));
    }
    Ok(format!("{}{}", rest.0, &u[rest.1..]))
}

fn header_map(
    h: &std::collections::BTreeMap<String, String>,
    at: &str,
    e: &mut Vec<ConfigError>,
) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (k, v) in h {
        match (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            (Ok(k), Ok(v)) => {
                out.insert(k, v);
            }
            _ => e.push(err(
                at,
                format!("header {k:?} is not a valid header name and value"),
            )),
        }
    }
    out
}

fn valid_plugin_name(n: &str) -> bool {
    (2..=50).contains(&n.len())
        && n.starts_with(|c: char| c.is_ascii_alphabetic())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn valid_service_name(n: &str) -> bool {
    (1..=30).contains(&n.len())
        && n.starts_with(|c: char| c.is_ascii_lowercase())
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// For reporting: the set of names, to log what a reload changed.
pub fn names<T: AsRef<str>>(it: impl Iterator<Item = T>) -> BTreeSet<String> {
    it.map(|s| s.as_ref().to_string()).collect()
}
