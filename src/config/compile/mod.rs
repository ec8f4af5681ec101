//! Raw config + long-lived state → an immutable `Gateway` snapshot.
//!
//! One file per section, in the order a file is read: `server` (listeners,
//! TLS, log), `auth` (scheme settings, keys, JWT providers), `plans` (usage
//! plans and their keys), `plugins` (each plugin, with the limit rules of
//! `limits`), `services` (services and the APIs in them, through `api`,
//! `caller` and `backend`, against the contexts of `ctx`). `[cluster]` is
//! checked by `config/cluster.rs`, counts and durations by `config/bounds.rs`.
//!
//! Every mistake is reported once, with its location: a mistake in a shared
//! item (a plugin, a plan, a service setting) is reported at that item, never
//! again at each API that uses it, and a name outside its closed set has no
//! follow-on problems. The limit plugins are checked here alone and
//! handed to their policies as typed specs. Where a rule is checked here and
//! also by the runtime constructor of the setting (the `ip_control` mode, the
//! `cors` methods, `retry_on`, `fail_on`, `external_auth.on_error`), the
//! constructor is called only with values this check accepted, or its refusal
//! of the same value is dropped. Settings no rule here covers are checked by
//! their constructor alone (address lists, origins, header rules, keys of JWT
//! providers, ...).

mod api;
mod auth;
mod backend;
mod caller;
mod ctx;
mod limits;
mod plans;
mod plugins;
mod server;
mod services;

pub use limits::{param_policy, traffic_policy};
pub use server::listen_addrs;
// The parse step moved to `config::source`; kept here for the tests, benches
// and examples that call `config::compile::parse`.
pub use super::source::parse;

use super::error::ConfigError;
use super::raw::RawConfig;
use crate::auth::dispatch::AuthSettings;
use crate::gateway::{ConfigVersion, Gateway, Inventory, LogSettings};
use crate::route::Router;
use crate::state::State;
use std::sync::Arc;
use std::time::SystemTime;

pub fn compile(raw: &RawConfig, hash: String, state: &State) -> Result<Gateway, Vec<ConfigError>> {
    let mut e = vec![];
    let base = state.base_dir.clone();
    let server = server::compile(raw, &base, &mut e);
    if let Some(c) = &raw.cluster {
        e.extend(super::cluster::problems(c, &base));
    }
    server::log(&raw.log, &mut e);
    let tracing = state
        .tracers
        .compile(raw.tracing.as_ref(), &super::source::expand_env)
        .map_err(|m| e.extend(m.into_iter().map(|(at, m)| super::error::err(at, m))))
        .ok()
        .flatten();
    let auth = auth::compile(raw, &base, &state.jwks, &mut e);
    let plans = plans::compile(raw, state, &mut e);
    let plugins = plugins::compile(raw, state, &mut e);
    let routes = services::compile(
        &ctx::Shared {
            raw,
            state,
            auth: &auth,
            plans: &plans,
            plugins: &plugins,
        },
        &mut e,
    );
    let router = Router::build(&routes.specs).unwrap_or_else(|msgs| {
        e.extend(msgs.into_iter().map(|m| super::error::err("routes", m)));
        Router::build(&[]).unwrap_or_else(|_| unreachable_router())
    });

    let (Some(hmac), Some(tc3), Some(tc1)) = (auth.hmac, auth.tc3, auth.tc1) else {
        return Err(e);
    };
    if !e.is_empty() {
        return Err(e);
    }
    let inventory = Inventory {
        routes: routes.prints,
        keys: auth.key_prints,
        plugins: plugins.prints,
        plans: plans.prints(),
    };
    Ok(Gateway {
        version: ConfigVersion {
            hash,
            loaded_at: SystemTime::now(),
        },
        router,
        apis: routes.apis,
        keys: auth.keys,
        auth: AuthSettings {
            replay: raw.auth.replay,
            strip_credentials: raw.auth.strip_credentials,
            hmac,
            tc3,
            tc1,
            jwt_leeway: raw.auth.jwt.leeway,
            key_index: auth.key_index,
        },
        trusted: server.trusted,
        certs: server.certs,
        log: LogSettings {
            access: raw.log.access,
        },
        tracing,
        body_read_timeout: raw.server.body_read_timeout,
        path: crate::path::PathSettings {
            normalize: raw.server.normalize_path,
            merge_slashes: raw.server.merge_slashes,
            escaped_slashes: raw.server.path_with_escaped_slashes_action,
        },
        reserved: auth.reserved,
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

#[cfg(test)]
mod tests;
