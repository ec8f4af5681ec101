//! `[[usage_plans]]`: each plan's limits and keys, and which plan binds a
//! caller's key on a service (`usage_plans` of the service) or an API (its own
//! `usage_plans`, added to the service's).

use super::limits;
use crate::config::error::{err, ConfigError};
use crate::config::locate::did_you_mean;
use crate::config::raw::{RawApi, RawConfig, RawService, RawUsagePlan};
use crate::gateway::fingerprint;
use crate::policy::limits::PlanLimits;
use crate::state::State;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// key id → usage plan name.
pub(super) type KeyPlans = Arc<HashMap<String, Arc<str>>>;

pub(super) struct Plans<'a> {
    /// Every plan the file defines, valid or not, by name.
    by_name: HashMap<&'a str, &'a RawUsagePlan>,
    /// The limits of each valid plan.
    limits: HashMap<&'a str, Arc<PlanLimits>>,
}

pub(super) fn compile<'a>(
    raw: &'a RawConfig,
    state: &State,
    e: &mut Vec<ConfigError>,
) -> Plans<'a> {
    let mut out = Plans {
        by_name: HashMap::new(),
        limits: HashMap::new(),
    };
    let key_ids: HashSet<&str> = raw.keys.iter().map(|k| k.id.as_str()).collect();
    for p in &raw.usage_plans {
        let at = format!("usage_plans ({})", p.name);
        if out.by_name.insert(&p.name, p).is_some() {
            e.push(err(&at, "duplicate name"));
        }
        let before = e.len();
        limits::positive_or_unlimited(p.qps.map(u64::from), &at, "qps", e);
        limits::positive_or_unlimited(p.quota, &at, "quota", e);
        let valid = e.len() == before;
        for k in &p.keys {
            if !key_ids.contains(k.as_str()) {
                let hint = did_you_mean(k, key_ids.iter().copied());
                e.push(err(
                    &at,
                    format!("key {k:?} is not defined in [[keys]]{hint}"),
                ));
            }
        }
        if valid {
            out.limits
                .insert(&p.name, PlanLimits::compile(p, &state.limits));
        }
    }
    out
}

impl<'a> Plans<'a> {
    /// Fingerprints of the plans, to log what a reload changed.
    pub(super) fn prints(&self) -> BTreeMap<String, u64> {
        self.by_name
            .iter()
            .map(|(n, p)| (n.to_string(), fingerprint(p)))
            .collect()
    }

    /// The limits of the valid plans among `names`.
    pub(super) fn limits_of(&self, names: &[&String]) -> Vec<Arc<PlanLimits>> {
        names
            .iter()
            .filter_map(|n| self.limits.get(n.as_str()).cloned())
            .collect()
    }

    /// key id → plan name over the plans bound to `svc`; a key in two of them
    /// is an error (of the service).
    pub(super) fn of_service(
        &self,
        svc: &RawService,
        at: &str,
        e: &mut Vec<ConfigError>,
    ) -> Option<KeyPlans> {
        if svc.usage_plans.is_empty() {
            return None;
        }
        let mut map: HashMap<String, Arc<str>> = HashMap::new();
        for name in &svc.usage_plans {
            let Some(plan) = self.by_name.get(name.as_str()) else {
                let hint = did_you_mean(name, self.by_name.keys().copied());
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

    /// key id → plan name over the plans bound to `svc` and to `api`, and the
    /// plans' names. Only the API's own mistakes are reported here: those of
    /// the service's plans were reported at the service.
    pub(super) fn of_api<'r>(
        &self,
        svc: &'r RawService,
        api: &'r RawApi,
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
            let own = !svc.usage_plans.contains(name);
            let Some(plan) = self.by_name.get(name.as_str()) else {
                if own {
                    e.push(err(at, format!("usage plan {name:?} is not defined")));
                }
                continue;
            };
            let pname: Arc<str> = Arc::from(name.as_str());
            for k in &plan.keys {
                if let Some(prev) = map.insert(k.clone(), pname.clone()) {
                    if own && &*prev != name.as_str() {
                        e.push(err(
                            at,
                            format!("key {k:?} is bound by two usage plans of this API: {prev} and {name}"),
                        ));
                    }
                }
            }
        }
        (Some(Arc::new(map)), names)
    }
}
