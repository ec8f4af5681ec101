//! `[[services]]`: each service's own settings (name, environment, hosts,
//! protocols, QPS, plans, plugins), then its APIs (`api.rs`). A mistake in a
//! service setting is reported once, at the service, not at each of its APIs.

use super::api;
use super::ctx::{ApiCtx, ServiceCtx, Shared};
use super::{limits, server};
use crate::config::error::{err, ConfigError};
use crate::config::locate::did_you_mean;
use crate::config::raw::{RawApi, RawService};
use crate::gateway::{fingerprint, Api};
use crate::route::front::FrontProtocols;
use crate::route::{ApiSpec, ServiceSpec};
use std::collections::{BTreeMap, HashMap, HashSet};

pub(super) struct Routes {
    pub apis: Vec<Api>,
    pub specs: Vec<ServiceSpec>,
    /// Fingerprints of the routes, to log what a reload changed.
    pub prints: BTreeMap<String, u64>,
}

pub(super) fn compile(sh: &Shared, e: &mut Vec<ConfigError>) -> Routes {
    let mut out = Routes {
        apis: vec![],
        specs: vec![],
        prints: BTreeMap::new(),
    };
    let mut service_names = HashSet::new();
    // (host, path prefix) → the service it is bound to.
    let mut bound_hosts: HashMap<(String, Option<String>), String> = HashMap::new();
    for svc in &sh.raw.services {
        let sat = format!("services ({})", svc.name);
        if !valid_name(&svc.name) {
            e.push(err(
                &sat,
                "name must be 1-30 lower-case letters, digits, - or _, starting with a letter",
            ));
        }
        if !service_names.insert(&svc.name) {
            e.push(err(&sat, "duplicate service name"));
        }
        let environment = service_settings(sh, svc, &sat, e);
        bind_hosts(&mut bound_hosts, svc, &environment, &sat, e);
        let key_plans = sh.plans.of_service(svc, &sat, e);
        let ctx = ServiceCtx {
            shared: sh,
            svc,
            protocols: protocols(svc),
            plugin_conflicts: api::plugin_conflicts(sh.plugins, &svc.plugins),
        };
        // Reported where they matter: at a service that has APIs.
        if !svc.apis.is_empty() {
            for m in &ctx.plugin_conflicts {
                e.push(err(&sat, m));
            }
        }
        let mut spec = ServiceSpec {
            name: svc.name.clone(),
            hosts: svc.hosts.clone(),
            environment,
            apis: vec![],
        };
        let mut api_names = HashSet::new();
        for a in &svc.apis {
            let at = format!("services ({}) / apis ({})", svc.name, a.name);
            if a.name.is_empty() || a.name.chars().count() > 60 {
                e.push(err(&at, "name must be 1-60 characters"));
            }
            if !api_names.insert(&a.name) {
                e.push(err(&at, "duplicate API name in this service"));
            }
            // Plans bound to the API itself add to the service's (BindType=API).
            let (key_plans, plan_names) = if a.usage_plans.is_empty() {
                (
                    key_plans.clone(),
                    svc.usage_plans.iter().collect::<Vec<_>>(),
                )
            } else {
                sh.plans.of_api(svc, a, &at, e)
            };
            let actx = ApiCtx {
                service: &ctx,
                key_plans,
                plan_limits: sh.plans.limits_of(&plan_names),
            };
            match api::compile(&actx, a, &at) {
                Ok(compiled) => out.add(svc, a, compiled, &mut spec),
                Err(mut errs) => e.append(&mut errs),
            }
        }
        out.specs.push(spec);
    }
    out
}

impl Routes {
    /// A compiled API: its route, and its fingerprint.
    fn add(&mut self, svc: &RawService, a: &RawApi, compiled: Api, spec: &mut ServiceSpec) {
        let print = (&svc.hosts, &svc.environment, svc.qps, a);
        let print = (print, &svc.usage_plans, &svc.plugins);
        self.prints.insert(
            format!("{}/{} {}", svc.name, a.name, a.path),
            fingerprint(&print),
        );
        spec.apis.push(ApiSpec {
            id: self.apis.len(),
            name: a.name.clone(),
            path: a.path.clone(),
            methods: a.methods.iter().map(|m| m.to_string()).collect(),
            actions: a.actions.clone(),
        });
        self.apis.push(compiled);
    }
}

/// A custom domain (and path prefix) belongs to one service.
fn bind_hosts(
    bound: &mut HashMap<(String, Option<String>), String>,
    svc: &RawService,
    environment: &Option<String>,
    sat: &str,
    e: &mut Vec<ConfigError>,
) {
    for h in &svc.hosts {
        let key = (
            h.trim_end_matches('.').to_ascii_lowercase(),
            environment.clone(),
        );
        match bound.get(&key) {
            Some(other) if *other != svc.name => e.push(err(
                sat,
                format!(
                    "host {h:?} is bound to service {other} already{}; a custom domain belongs to one service (share it between environments with path_mapping)",
                    environment.as_ref().map(|p| format!(" under /{p}")).unwrap_or_default()
                ),
            )),
            _ => {
                bound.insert(key, svc.name.clone());
            }
        }
    }
}

/// The service's own settings; returns its path prefix (environment, or the
/// `path_mapping` on its hosts).
fn service_settings(
    sh: &Shared,
    svc: &RawService,
    sat: &str,
    e: &mut Vec<ConfigError>,
) -> Option<String> {
    if let Some(env) = &svc.environment {
        if env.is_empty()
            || !env
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            e.push(err(sat, format!("environment {env:?} must be lower-case letters, digits or - (release, prepub, test)")));
        }
    }
    limits::positive_or_unlimited(svc.qps.map(u64::from), sat, "qps", e);
    let before = e.len();
    for p in &svc.protocols {
        p.check(sat, "protocol", e);
    }
    if e.len() == before {
        if let Err(m) = FrontProtocols::compile(&protocols(svc), svc.https_redirect, None) {
            e.push(err(sat, m));
        }
    }
    if svc.https_redirect && server::tls_port(&sh.raw.server) == Some(0) {
        e.push(err(
            sat,
            "https_redirect needs a fixed port on the first [server.tls] listen address, not 0",
        ));
    }
    for p in &svc.plugins {
        if !sh.plugins.declared.contains(p.as_str()) {
            let hint = did_you_mean(p, sh.plugins.declared.iter().copied());
            e.push(err(sat, format!("plugin {p:?} is not defined{hint}")));
        }
    }
    match &svc.path_mapping {
        None => svc.environment.clone(),
        Some(p) => crate::route::front::mapped_prefix(p, &svc.hosts, &svc.environment)
            .unwrap_or_else(|m| {
                e.push(err(sat, m));
                svc.environment.clone()
            }),
    }
}

/// The service's protocols as written (checked by `service_settings`).
fn protocols(svc: &RawService) -> Vec<String> {
    svc.protocols.iter().map(|p| p.to_string()).collect()
}

fn valid_name(n: &str) -> bool {
    (1..=30).contains(&n.len())
        && n.starts_with(|c: char| c.is_ascii_lowercase())
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}
