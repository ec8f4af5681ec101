//! One `[[services.apis]]` entry: methods, authentication (`caller.rs`), the
//! plugins and limits that apply to it, and its back end (`backend.rs`).

use super::ctx::ApiCtx;
use super::plugins::{Plugin, Plugins};
use super::{backend, caller, limits, server};
use crate::config::error::{err, ConfigError};
use crate::config::locate::did_you_mean;
use crate::config::raw::{AuthKind, BackendKind, CloudErrorStatus, RawApi, RawService};
use crate::gateway::{Api, Refusals};
use crate::policy::concurrency::ConcurrencyPolicy;
use crate::policy::cors::CorsPolicy;
use crate::policy::inputs::Inputs;
use crate::policy::ip::IpPolicy;
use crate::policy::limits::{ParamPolicy, RouteLimits, TrafficPolicy};
use crate::reject::ErrorStyle;
use crate::route::front::FrontProtocols;
use std::collections::HashSet;
use std::sync::Arc;

pub(super) fn compile(ctx: &ApiCtx, api: &RawApi, at: &str) -> Result<Api, Vec<ConfigError>> {
    let sh = ctx.service.shared;
    let svc = ctx.service.svc;
    let mut e = vec![];
    for m in &api.methods {
        m.check(at, "method", &mut e);
    }
    if api.methods.is_empty() {
        e.push(err(at, "methods may not be empty (use [\"ANY\"])"));
    }
    limits::positive_or_unlimited(api.qps.map(u64::from), at, "qps", &mut e);
    let kind = api.auth.check(at, "auth", &mut e);
    let auth = caller::auth_mode(ctx, api, kind, at, &mut e);
    let http_status = api
        .cloud_error_status
        .unwrap_or(sh.raw.auth.cloud_error_status)
        == CloudErrorStatus::Http;
    let style = match kind {
        Some(AuthKind::Tc3 | AuthKind::Tc1) => ErrorStyle::Cloud { http_status },
        Some(AuthKind::Openapi) => ErrorStyle::OpenApi { http_status },
        _ => ErrorStyle::Json,
    };
    // With an unknown scheme, what goes with which scheme is not known.
    if let Some(kind) = kind {
        for m in misplaced(api, kind) {
            e.push(err(at, m));
        }
    }
    let callers = caller::rules(ctx, api, kind, at, &mut e);
    for a in &api.actions {
        if let Err(m) = crate::route::check_action_pattern(a) {
            e.push(err(at, m));
        }
    }
    let bound = plugins(ctx, api, at, &mut e);
    let max_body = api.max_body_bytes.unwrap_or(sh.raw.server.max_body_bytes);
    // A zero `[server] max_body_bytes` is reported once, at the server.
    if api.max_body_bytes == Some(0) {
        e.push(err(at, "max_body_bytes must be positive"));
    }
    let limits = route_limits(ctx, api, bound.traffic, bound.param, at, &mut e);
    let front = FrontProtocols::compile(
        &ctx.service.protocols,
        svc.https_redirect,
        server::tls_port(&sh.raw.server),
    )
    // An error is reported once, at the service.
    .unwrap_or_default();
    let refusals = refusals(sh.plugins, svc, api, callers.refusal);
    let inputs = inputs(api, at, &mut e);
    let label = format!("{}/{}", svc.name, api.name);
    let backend = backend::compile(sh.state, api, kind, at, &label, &mut e);
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
        metrics: sh.state.metrics.route(&label),
        label,
        auth,
        style,
        debug_signatures: api.debug_signatures.unwrap_or(sh.raw.auth.debug_signatures),
        max_body,
        cors: bound.cors,
        ip: bound.ip,
        plans: ctx.key_plans.clone(),
        limits,
        front,
        inputs,
        concurrency: bound.concurrency,
        backend,
        acl: callers.acl,
        request_headers: callers.request_headers,
        response_headers: callers.response_headers,
        refusals,
    })
}

/// The plugins of the service, then the API's own. Only the API's own
/// mistakes are reported here (the service's were reported at the service).
fn plugins(ctx: &ApiCtx, api: &RawApi, at: &str, e: &mut Vec<ConfigError>) -> Bound {
    let (plugins, svc) = (ctx.service.shared.plugins, ctx.service.svc);
    let mut bound = bind(plugins, svc.plugins.iter().chain(api.plugins.iter()));
    for name in &bound.missing {
        let own = api.plugins.contains(name) && !svc.plugins.contains(name);
        if own && !plugins.declared.contains(name.as_str()) {
            let hint = did_you_mean(name, plugins.declared.iter().copied());
            e.push(err(at, format!("plugin {name:?} is not defined{hint}")));
        }
    }
    for m in &bound.conflicts {
        if !ctx.service.plugin_conflicts.contains(m) {
            e.push(err(at, m));
        }
    }
    if bound.cors.is_none() && api.enable_cors {
        bound.cors = Some(Arc::new(CorsPolicy::allow_any()));
    }
    bound
}

/// Every counting limit of the API: service and API QPS, its traffic plugin,
/// the usage plans of its callers.
fn route_limits(
    ctx: &ApiCtx,
    api: &RawApi,
    traffic: Option<Arc<TrafficPolicy>>,
    param: Option<Arc<ParamPolicy>>,
    at: &str,
    e: &mut Vec<ConfigError>,
) -> RouteLimits {
    let (state, svc) = (ctx.service.shared.state, ctx.service.svc);
    // A zero QPS is reported at the service or the API, not here.
    let service_qps = limits::service_qps(state, svc);
    let api_qps = limits::api_qps(state, svc, api);
    RouteLimits::new(
        service_qps,
        api_qps,
        traffic,
        param,
        ctx.plan_limits.clone(),
    )
    .unwrap_or_else(|m| {
        e.push(err(at, m.to_string()));
        RouteLimits::default()
    })
}

/// The API's declared parameters.
fn inputs(api: &RawApi, at: &str, e: &mut Vec<ConfigError>) -> Inputs {
    let mock = api.backend.kind.get() == Some(BackendKind::Mock);
    Inputs::compile(
        &api.params,
        &crate::route::param_names(&api.path).unwrap_or_default(),
        (!mock).then_some(api.backend.path.as_str()),
        &api.backend.const_query,
        &api.backend.const_headers,
    )
    .unwrap_or_else(|msgs| {
        e.extend(msgs.into_iter().map(|m| err(at, m)));
        Default::default()
    })
}

/// Settings that belong to another scheme than the API's `auth`.
fn misplaced(api: &RawApi, kind: AuthKind) -> Vec<&'static str> {
    let cloud = matches!(kind, AuthKind::Tc3 | AuthKind::Tc1);
    [
        (
            api.hmac_enforce_headers.is_some() && kind != AuthKind::Hmac,
            "hmac_enforce_headers is only used with auth = \"hmac\"",
        ),
        (
            api.external_auth.is_some() && kind != AuthKind::External,
            "external_auth is only used with auth = \"external\"",
        ),
        (
            api.jwt_provider.is_some() && kind != AuthKind::Jwt,
            "jwt_provider is only used with auth = \"jwt\"",
        ),
        (
            api.tc3_service.is_some() && kind != AuthKind::Tc3,
            "tc3_service is only used with auth = \"tc3\"",
        ),
        (
            (api.key_header.is_some() || api.key_query.is_some()) && kind != AuthKind::Key,
            "key_header and key_query are only used with auth = \"key\"",
        ),
        (
            api.cloud_error_status.is_some() && !cloud && kind != AuthKind::Openapi,
            "cloud_error_status is only used with auth = \"tc3\", \"tc1\" or \"openapi\"",
        ),
        (
            !api.actions.is_empty() && !cloud,
            "actions is only used with auth = \"tc3\" or \"tc1\"",
        ),
    ]
    .into_iter()
    .filter_map(|(wrong, m)| wrong.then_some(m))
    .collect()
}

/// The plugins bound to an API (or a service), and what is wrong with the set.
#[derive(Default)]
struct Bound {
    ip: Vec<(Arc<str>, Arc<IpPolicy>)>,
    cors: Option<Arc<CorsPolicy>>,
    traffic: Option<Arc<TrafficPolicy>>,
    param: Option<Arc<ParamPolicy>>,
    concurrency: Option<Arc<ConcurrencyPolicy>>,
    /// Names that did not compile (undefined, or reported at the plugin).
    missing: Vec<String>,
    conflicts: Vec<String>,
}

/// Binds `names` in order (a name bound twice counts once).
fn bind<'n>(plugins: &Plugins, names: impl Iterator<Item = &'n String>) -> Bound {
    let mut b = Bound::default();
    let mut traffic_kinds = vec![];
    let mut seen = HashSet::new();
    for name in names {
        if !seen.insert(name) {
            continue;
        }
        match plugins.compiled.get(name.as_str()) {
            None => b.missing.push(name.clone()),
            Some(Plugin::Ip(p)) => b.ip.push((Arc::from(name.as_str()), p.clone())),
            Some(Plugin::Cors(c)) => {
                if b.cors.is_some() {
                    b.conflicts
                        .push(format!("plugin {name:?}: only one cors plugin per API"));
                }
                b.cors = Some(c.clone());
            }
            Some(Plugin::Traffic(t)) => {
                traffic_kinds.push(name.clone());
                b.traffic = Some(t.clone());
            }
            Some(Plugin::ParamTraffic(p)) => {
                traffic_kinds.push(name.clone());
                b.param = Some(p.clone());
            }
            Some(Plugin::Concurrency(c)) => {
                if b.concurrency.is_some() {
                    b.conflicts.push(format!(
                        "plugin {name:?}: only one concurrency_control plugin per API"
                    ));
                }
                b.concurrency = Some(c.clone());
            }
        }
    }
    if traffic_kinds.len() > 1 {
        b.conflicts.push(format!(
            "at most one traffic-control plugin per API, found {}",
            traffic_kinds.join(", ")
        ));
    }
    b
}

/// Conflicts among the plugins a service binds to all its APIs.
pub(super) fn plugin_conflicts(plugins: &Plugins, names: &[String]) -> Vec<String> {
    bind(plugins, names.iter()).conflicts
}

/// The custom refusals of the API's plugins and of its authentication.
fn refusals(
    plugins: &Plugins,
    svc: &RawService,
    api: &RawApi,
    auth: Option<crate::reject::Refusal>,
) -> Refusals {
    let mut refusals = Refusals {
        auth,
        ..Refusals::default()
    };
    for name in svc.plugins.iter().chain(api.plugins.iter()) {
        if let Some(r) = plugins.refusals.get(name.as_str()) {
            match plugins.compiled.get(name.as_str()) {
                Some(Plugin::Traffic(_) | Plugin::ParamTraffic(_)) => {
                    refusals.traffic = Some(r.clone())
                }
                _ => {
                    refusals.plugins.insert(Arc::from(name.as_str()), r.clone());
                }
            }
        }
    }
    refusals
}
