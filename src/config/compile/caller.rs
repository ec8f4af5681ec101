//! Who may call an API: its authentication scheme with that scheme's
//! settings, then what it does with an authenticated caller (access lists,
//! header rules, the custom refusal).

use super::ctx::ApiCtx;
use crate::auth::dispatch::AuthMode;
use crate::auth::hmac::HmacSettings;
use crate::config::error::{err, ConfigError};
use crate::config::locate::did_you_mean;
use crate::config::raw::{AuthKind, RawApi, RawExternalAuth, RawHeaderRules};
use crate::policy::acl::CallerAcl;
use crate::policy::headers::{HeaderRules, Side};
use crate::reject::Refusal;
use std::sync::Arc;

/// The API's scheme (`None` when `auth` names none: reported already).
pub(super) fn auth_mode(
    ctx: &ApiCtx,
    api: &RawApi,
    kind: Option<AuthKind>,
    at: &str,
    e: &mut Vec<ConfigError>,
) -> AuthMode {
    let sh = ctx.service.shared;
    let Some(kind) = kind else {
        return AuthMode::None;
    };
    match kind {
        AuthKind::None => AuthMode::None,
        AuthKind::Hmac => AuthMode::Hmac {
            settings: hmac_override(ctx, api, at, e),
        },
        AuthKind::Tc3 => AuthMode::Tc3 {
            service: api.tc3_service.clone(),
            require_signed_payload: api.tc3_require_signed_payload,
        },
        AuthKind::Tc1 => AuthMode::Tc1,
        AuthKind::Openapi => AuthMode::OpenApi,
        AuthKind::Key => {
            let k = &sh.raw.auth.key;
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
        AuthKind::External => match &api.external_auth {
            None => {
                e.push(err(
                    at,
                    "auth = \"external\" needs [services.apis.external_auth]",
                ));
                AuthMode::None
            }
            Some(x) => external(ctx, x, &format!("{at} / external_auth"), e),
        },
        AuthKind::Jwt => match api.jwt_provider.as_deref().map(|p| (p, sh.auth.jwt.get(p))) {
            Some((_, Some(p))) => AuthMode::Jwt(p.clone()),
            Some((name, None)) => {
                // A provider that failed to load was reported already.
                if !sh.raw.jwt_providers.iter().any(|p| p.name == name) {
                    let names = sh.raw.jwt_providers.iter().map(|p| p.name.as_str());
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
    }
}

/// `auth = "external"`: `on_error` is checked here, the rest by the client.
fn external(ctx: &ApiCtx, x: &RawExternalAuth, at: &str, e: &mut Vec<ConfigError>) -> AuthMode {
    let on_error = x.on_error.as_ref().and_then(|o| o.problem("on_error"));
    let wrong_on_error = on_error.is_some();
    e.extend(on_error.map(|m| err(at, m)));
    match crate::auth::external::ExternalAuth::new(x, &ctx.service.shared.state.base_dir) {
        Ok(x) if !wrong_on_error => AuthMode::External(Arc::new(x)),
        Ok(_) => AuthMode::None,
        Err(errs) => {
            for (field, m) in errs {
                // Its own refusal of `on_error` is the problem reported above.
                if field != "on_error" {
                    e.push(err(at, m));
                }
            }
            AuthMode::None
        }
    }
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
    let mut s = HmacSettings::from_raw(&ctx.service.shared.raw.auth.hmac).ok()?;
    s.enforce_headers = enforce;
    Some(Arc::new(s))
}

/// What an API does with a caller once authenticated.
pub(super) struct CallerRules {
    pub acl: Option<Arc<CallerAcl>>,
    pub request_headers: Option<Arc<HeaderRules>>,
    pub response_headers: Option<Arc<HeaderRules>>,
    pub refusal: Option<Refusal>,
}

/// Access lists, header rules and the custom auth refusal of one API.
pub(super) fn rules(
    ctx: &ApiCtx,
    api: &RawApi,
    kind: Option<AuthKind>,
    at: &str,
    e: &mut Vec<ConfigError>,
) -> CallerRules {
    let sh = ctx.service.shared;
    let anonymous = kind == Some(AuthKind::None);
    check_lists(ctx, api, kind, at, e);
    let acl = CallerAcl::new(
        &api.allow_apps,
        &api.deny_apps,
        &api.allow_keys,
        &api.deny_keys,
    )
    .map(Arc::new);
    let mut rules = |raw: &RawHeaderRules, side: Side, what: &str| match HeaderRules::compile(
        raw,
        side,
        &sh.auth.reserved,
    ) {
        Ok(r) => r.map(Arc::new),
        Err(msgs) => {
            e.extend(msgs.into_iter().map(|m| err(format!("{at} / {what}"), m)));
            None
        }
    };
    let request_headers = rules(&api.request_headers, Side::Request, "request_headers");
    let response_headers = rules(&api.response_headers, Side::Response, "response_headers");
    let refusal = match Refusal::new(api.auth_rejected_code, api.auth_rejected_msg.as_deref()) {
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

/// The caller access lists: with an auth scheme, and naming keys and apps
/// that exist.
fn check_lists(
    ctx: &ApiCtx,
    api: &RawApi,
    kind: Option<AuthKind>,
    at: &str,
    e: &mut Vec<ConfigError>,
) {
    let sh = ctx.service.shared;
    let lists = [
        ("allow_keys", &api.allow_keys),
        ("deny_keys", &api.deny_keys),
        ("allow_apps", &api.allow_apps),
        ("deny_apps", &api.deny_apps),
    ];
    let any_list = lists.iter().any(|(_, l)| !l.is_empty());
    if any_list && kind == Some(AuthKind::None) {
        e.push(err(
            at,
            "allow_apps, deny_apps, allow_keys and deny_keys need an auth scheme (auth is \"none\")",
        ));
    }
    for (what, list) in &lists[..2] {
        for k in list.iter() {
            if !sh.raw.keys.iter().any(|x| &x.id == k) {
                e.push(err(
                    at,
                    format!("{what}: key {k:?} is not defined in [[keys]]"),
                ));
            }
        }
    }
    // JWT callers may be subjects outside [[keys]] (their app is the subject);
    // with an unknown scheme, the apps are not checked either.
    if kind.is_some_and(|k| k != AuthKind::Jwt) {
        for (what, list) in &lists[2..] {
            for a in list.iter() {
                let known = sh
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
}
