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
use crate::config::raw::{RawParamTrafficControl, RawStrategy};
use crate::store::cells::{Timestamp, Window, WindowCell};
use crate::store::table::{Single, Table};
use crate::store::LimitState;
use http::HeaderName;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

pub const MAX_STRATEGIES: usize = 10;
pub const MAX_WEIGHT: u32 = 100;
const MAX_KEY_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamSource {
    Query(String),
    Header(HeaderName),
    Path,
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

fn settings(raw: &RawParamTrafficControl) -> String {
    let mut s = format!("v1|{}|{}", raw.default_window, raw.default_rate_limit);
    for st in &raw.strategies {
        s.push_str(&format!(
            "|{:?},{},{:?},{},{}",
            st.name, st.strategy_weight, st.condition, st.rate_limit, st.window
        ));
        for p in &st.parameters {
            s.push_str(&format!(",{:?}:{:?}", p.kind, p.name));
        }
    }
    s
}

impl ParamPolicy {
    /// Validates the plugin (errors start with the field, e.g.
    /// `strategies[1].condition: at byte 7: ...`) and obtains its counters.
    pub fn compile(
        raw: &RawParamTrafficControl,
        state: &LimitState,
    ) -> Result<Arc<ParamPolicy>, Vec<String>> {
        let mut errs = Vec::new();
        if raw.default_window > 0 && raw.default_rate_limit == 0 {
            errs.push(
                "default_rate_limit: must be a positive integer when default_window is set".into(),
            );
        }
        let n = raw.strategies.len();
        if n == 0 || n > MAX_STRATEGIES {
            errs.push(format!(
                "strategies: {n} given, 1 to {MAX_STRATEGIES} required"
            ));
        }
        let (mut names, mut weights) = (HashSet::new(), HashSet::new());
        let mut parsed = Vec::new();
        for (i, st) in raw.strategies.iter().enumerate() {
            let f = format!("strategies[{i}]");
            if st.name.trim().is_empty() {
                errs.push(format!("{f}.name: must not be empty"));
            } else if !names.insert(st.name.as_str()) {
                errs.push(format!("{f}.name: {:?} used by two strategies", st.name));
            }
            if st.strategy_weight > MAX_WEIGHT {
                errs.push(format!(
                    "{f}.strategy_weight: {} is not between 0 and {MAX_WEIGHT}",
                    st.strategy_weight
                ));
            } else if !weights.insert(st.strategy_weight) {
                errs.push(format!(
                    "{f}.strategy_weight: {} used by two strategies",
                    st.strategy_weight
                ));
            }
            if st.rate_limit == 0 {
                errs.push(format!("{f}.rate_limit: must be a positive integer"));
            }
            if st.window == 0 {
                errs.push(format!("{f}.window: must be a positive number of seconds"));
            }
            let condition = if st.condition.trim().is_empty() {
                None
            } else {
                match Expr::parse(&st.condition) {
                    Ok(e) => Some(e),
                    Err(e) => {
                        errs.push(format!("{f}.condition: {e}"));
                        None
                    }
                }
            };
            let source = parse_source(&f, st, &mut errs);
            parsed.push((st, condition, source));
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        let id = identity("param", &raw.name, &settings(raw));
        let default = (raw.default_window > 0).then(|| {
            let window = Window::new(raw.default_window);
            Default_ {
                label: format!("{}.default", raw.name).into(),
                limit: raw.default_rate_limit,
                cell: state.single(&format!("{id}/default"), window),
            }
        });
        let mut strategies: Vec<Strategy> = parsed
            .into_iter()
            .map(|(st, condition, source)| {
                let window = Window::new(st.window);
                Strategy {
                    label: format!("{}.{}", raw.name, st.name).into(),
                    weight: st.strategy_weight,
                    condition,
                    source: source.expect("validated"),
                    limit: st.rate_limit,
                    table: state.table(&format!("{id}/s/{}", st.name.escape_default()), window),
                }
            })
            .collect();
        strategies.sort_by_key(|s| std::cmp::Reverse(s.weight));
        Ok(Arc::new(ParamPolicy {
            name: raw.name.as_str().into(),
            default,
            strategies,
        }))
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

#[cfg(test)]
impl ParamPolicy {
    /// `n` path strategies with no condition, past the number `compile` accepts
    /// (for tests of the route bound).
    pub(crate) fn with_strategies(n: u32, limit: u64, state: &LimitState) -> Arc<ParamPolicy> {
        let strategies = (0..n)
            .map(|i| Strategy {
                label: format!("many.s{i}").into(),
                weight: n - i,
                condition: None,
                source: ParamSource::Path,
                limit,
                table: state.table(&format!("param:many:test/s/{i}"), Window::new(60)),
            })
            .collect();
        Arc::new(ParamPolicy {
            name: "many".into(),
            default: None,
            strategies,
        })
    }
}

fn parse_source(f: &str, st: &RawStrategy, errs: &mut Vec<String>) -> Option<ParamSource> {
    let [p] = st.parameters.as_slice() else {
        errs.push(format!(
            "{f}.parameters: exactly one parameter required, {} given",
            st.parameters.len()
        ));
        return None;
    };
    let kind = p.kind.to_ascii_lowercase();
    if (kind == "query" || kind == "header") && p.name.is_empty() {
        errs.push(format!(
            "{f}.parameters[0].name: required for type {:?}",
            p.kind
        ));
        return None;
    }
    match kind.as_str() {
        "path" => Some(ParamSource::Path),
        "query" => Some(ParamSource::Query(p.name.clone())),
        "header" => match HeaderName::from_bytes(p.name.as_bytes()) {
            Ok(h) => Some(ParamSource::Header(h)),
            Err(_) => {
                errs.push(format!(
                    "{f}.parameters[0].name: {:?} is not a header name",
                    p.name
                ));
                None
            }
        },
        other => {
            errs.push(format!(
                "{f}.parameters[0].type: {other:?} is not one of query, header, path"
            ));
            None
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
    use crate::config::raw::RawStrategyParam;

    fn strat(name: &str, weight: u32, kind: &str, pname: &str) -> RawStrategy {
        RawStrategy {
            name: name.into(),
            strategy_weight: weight,
            condition: String::new(),
            parameters: vec![RawStrategyParam {
                kind: kind.into(),
                name: pname.into(),
            }],
            rate_limit: 1,
            window: 1,
        }
    }

    fn errors(
        strategies: Vec<RawStrategy>,
        default_window: u64,
        default_rate_limit: u64,
    ) -> Vec<String> {
        let raw = RawParamTrafficControl {
            rejected_code: None,
            rejected_msg: None,
            name: "p".into(),
            default_window,
            default_rate_limit,
            strategies,
        };
        match ParamPolicy::compile(&raw, &LimitState::in_memory()) {
            Ok(_) => vec![],
            Err(e) => e,
        }
    }

    #[test]
    fn validation_names_the_field() {
        assert!(errors(vec![strat("a", 0, "path", "")], 0, 0).is_empty());
        assert_eq!(
            errors(vec![], 0, 0),
            vec!["strategies: 0 given, 1 to 10 required"]
        );
        let eleven = (0..11)
            .map(|i| strat(&format!("s{i}"), i, "path", ""))
            .collect();
        assert_eq!(
            errors(eleven, 0, 0),
            vec!["strategies: 11 given, 1 to 10 required"]
        );
        assert_eq!(
            errors(vec![strat("a", 0, "path", "")], 60, 0),
            vec!["default_rate_limit: must be a positive integer when default_window is set"]
        );
        let mut bad = strat("a", 101, "cookie", "x");
        bad.rate_limit = 0;
        bad.window = 0;
        bad.condition = "method == ".into();
        let e = errors(
            vec![
                bad,
                strat("a", 5, "query", ""),
                strat("b", 5, "header", "bad header"),
            ],
            0,
            0,
        );
        let expect = [
            "strategies[0].strategy_weight: 101 is not between 0 and 100",
            "strategies[0].rate_limit: must be a positive integer",
            "strategies[0].window: must be a positive number of seconds",
            "strategies[0].condition: at byte 10: expected an operand, found end of expression",
            "strategies[0].parameters[0].type: \"cookie\" is not one of query, header, path",
            "strategies[1].name: \"a\" used by two strategies",
            "strategies[1].parameters[0].name: required for type \"query\"",
            "strategies[2].strategy_weight: 5 used by two strategies",
            "strategies[2].parameters[0].name: \"bad header\" is not a header name",
        ];
        for m in expect {
            assert!(e.contains(&m.to_string()), "{m:?} not in {e:#?}");
        }
        let mut two = strat("c", 1, "path", "");
        two.parameters.push(RawStrategyParam {
            kind: "query".into(),
            name: "q".into(),
        });
        assert_eq!(
            errors(vec![two], 0, 0),
            vec!["strategies[0].parameters: exactly one parameter required, 2 given"]
        );
    }

    #[test]
    fn long_values_are_hashed() {
        let long = "x".repeat(1000);
        let k = counter_key(Cow::Borrowed(&long));
        assert_eq!(k.len(), 65);
        assert!(k.starts_with('#'));
        assert_eq!(counter_key(Cow::Borrowed("short")), "short");
    }
}
