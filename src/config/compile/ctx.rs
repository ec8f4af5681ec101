//! What the APIs of a file are compiled against: the file's compiled
//! sections, then their service's.

use super::auth::Auth;
use super::plans::{KeyPlans, Plans};
use super::plugins::Plugins;
use crate::config::raw::{RawConfig, RawService};
use crate::policy::limits::PlanLimits;
use crate::state::State;
use std::sync::Arc;

/// What every service and API is compiled against.
pub(super) struct Shared<'a> {
    pub raw: &'a RawConfig,
    pub state: &'a State,
    pub auth: &'a Auth,
    pub plans: &'a Plans<'a>,
    pub plugins: &'a Plugins<'a>,
}

/// What every API of one service shares.
pub(super) struct ServiceCtx<'a> {
    pub shared: &'a Shared<'a>,
    pub svc: &'a RawService,
    /// The service's protocols as written (their problems are the service's).
    pub protocols: Vec<String>,
    /// Conflicts among the service's own plugins, reported at the service.
    pub plugin_conflicts: Vec<String>,
}

pub(super) struct ApiCtx<'a> {
    pub service: &'a ServiceCtx<'a>,
    /// key id → plan name over the plans bound to the API (and its service).
    pub key_plans: Option<KeyPlans>,
    pub plan_limits: Vec<Arc<PlanLimits>>,
}
