//! `param_traffic_control` (SPEC §4.3).
//!
//! The default strategy (an API-wide limit over `default_window` seconds; 0 = off)
//! is checked first, then the strategies by weight, highest first. A strategy
//! whose condition holds (an empty condition always holds) counts the request
//! under the value of its parameter: `query` (first value of that name, form
//! decoded), `header` (case-insensitive name) or `path` (the whole path after the
//! environment prefix). Each distinct value has its own counter in a window of
//! `window` seconds aligned to the epoch. A request *without* the parameter is not
//! counted by that strategy. Any exceeded limit refuses the request (429).
//! Values longer than 128 bytes are counted under their SHA-256, bounding memory.

use super::expr::Expr;
use super::limits::plan::{identity, Counter, Plan, Slot};
use super::limits::report::{PolicyKind, PolicyRef};
use super::limits::request::LimitRequest;
use crate::store::cells::{Timestamp, Window, WindowCell};
use crate::store::table::{Single, Table};
use crate::store::LimitState;
use http::HeaderName;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::num::NonZeroU64;
use std::sync::Arc;

const MAX_KEY_LEN: usize = 128;

/// Where a strategy reads the value it counts under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamSource {
    Query(String),
    Header(HeaderName),
    Path,
}

/// A `param_traffic_control` plugin as the config compiler accepted it
/// (`config/compile/limits.rs` holds the rules: 1 to `MAX_STRATEGIES`
/// strategies with distinct names and weights of at most `MAX_WEIGHT`).
pub struct ParamSpec {
    pub name: String,
    /// The API-wide default strategy: its window and limit, when set.
    pub default: Option<(Window, NonZeroU64)>,
    pub strategies: Vec<StrategySpec>,
    /// The settings as written, in one canonical line: the counters' identity
    /// hashes it.
    pub settings: String,
}

/// One accepted strategy.
pub struct StrategySpec {
    pub name: String,
    pub weight: u32,
    /// `None`: the strategy always applies.
    pub condition: Option<Expr>,
    pub source: ParamSource,
    pub limit: NonZeroU64,
    pub window: Window,
}

struct Default_ {
    label: Box<str>,
    limit: u64,
    /// The window is the cell's geometry.
    cell: Arc<Single<WindowCell>>,
}

struct Strategy {
    /// `PLUGIN.STRATEGY`, the policy name in headers.
    label: Box<str>,
    weight: u32,
    condition: Option<Expr>,
    source: ParamSource,
    limit: u64,
    /// Per-value counters; the window is the table's geometry.
    table: Arc<Table<String, WindowCell>>,
}

pub struct ParamPolicy {
    name: Box<str>,
    default: Option<Default_>,
    /// Highest weight first.
    strategies: Vec<Strategy>,
}

impl ParamPolicy {
    /// The policy of an accepted plugin, with its counters from `state`.
    pub fn new(spec: ParamSpec, state: &LimitState) -> Arc<ParamPolicy> {
        let name = spec.name;
        let id = identity("param", &name, &spec.settings);
        let default = spec.default.map(|(window, limit)| Default_ {
            label: format!("{name}.default").into(),
            limit: limit.get(),
            cell: state.single(&format!("{id}/default"), window),
        });
        let mut strategies: Vec<Strategy> = spec
            .strategies
            .into_iter()
            .map(|st| Strategy {
                label: format!("{name}.{}", st.name).into(),
                weight: st.weight,
                condition: st.condition,
                source: st.source,
                limit: st.limit.get(),
                table: state.table(&format!("{id}/s/{}", st.name.escape_default()), st.window),
            })
            .collect();
        strategies.sort_by_key(|s| std::cmp::Reverse(s.weight));
        Arc::new(ParamPolicy {
            name: name.into_boxed_str(),
            default,
            strategies,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Strategy names in checking order.
    pub fn order(&self) -> Vec<&str> {
        self.strategies
            .iter()
            .map(|s| &s.label[self.name.len() + 1..])
            .collect()
    }

    /// Count of `value` in strategy `strategy`'s current window (tests, admin).
    pub fn count(&self, strategy: &str, value: &str, now: Timestamp) -> u64 {
        self.strategies
            .iter()
            .find(|s| &s.label[self.name.len() + 1..] == strategy)
            .and_then(|s| {
                s.table
                    .get(&*counter_key(Cow::Borrowed(value)))
                    .map(|c| c.count(s.table.geometry(), now))
            })
            .unwrap_or(0)
    }

    pub(crate) fn max_ops(&self) -> usize {
        usize::from(self.default.is_some()) + self.strategies.len()
    }

    /// The default strategy, then every strategy whose condition holds and
    /// whose parameter the request carries, highest weight first.
    pub(crate) fn add_ops<'a, 'r>(&'a self, req: &LimitRequest<'r>, plan: &mut impl Plan<'a, 'r>) {
        if let Some(d) = &self.default {
            let p = PolicyRef {
                kind: PolicyKind::ParamDefault,
                name: &d.label,
            };
            plan.push(p, Counter::Window(Slot::Whole(&d.cell), d.limit));
        }
        for s in &self.strategies {
            if s.condition.as_ref().is_some_and(|c| !c.eval(req)) {
                continue;
            }
            let Some(value) = param_value(&s.source, req) else {
                continue;
            };
            let p = PolicyRef {
                kind: PolicyKind::ParamStrategy,
                name: &s.label,
            };
            let key = counter_key(value);
            plan.push(p, Counter::Window(Slot::Key(&s.table, key), s.limit));
        }
    }
}

fn param_value<'r>(src: &ParamSource, req: &LimitRequest<'r>) -> Option<Cow<'r, str>> {
    match src {
        ParamSource::Path => Some(Cow::Borrowed(req.path)),
        ParamSource::Header(h) => req
            .headers
            .get(h)
            .map(|v| String::from_utf8_lossy(v.as_bytes())),
        ParamSource::Query(n) => form_urlencoded::parse(req.query?.as_bytes())
            .find(|(k, _)| k == n)
            .map(|(_, v)| v),
    }
}

fn counter_key(v: Cow<'_, str>) -> Cow<'_, str> {
    if v.len() <= MAX_KEY_LEN {
        v
    } else {
        Cow::Owned(format!("#{}", hex::encode(Sha256::digest(v.as_bytes()))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_hashed() {
        let long = "x".repeat(1000);
        let k = counter_key(Cow::Borrowed(&long));
        assert_eq!(k.len(), 65);
        assert!(k.starts_with('#'));
        assert_eq!(counter_key(Cow::Borrowed("short")), "short");
    }
}
