//! Choosing among APIs that share one path rule by cloud-API action.
//!
//! The official SDKs call `/` for every operation and name it in `X-TC-Action`
//! (TC3) or the `Action` parameter (v1). APIs with `actions` that share a rule
//! (same host group, environment and rule text) form one *action group*: the rule
//! table holds a single entry for the group, so path lookup costs what it did, and
//! the matched [`RouteMatch`](super::RouteMatch) carries the group's candidates for
//! the caller to pick from once it knows the action.

use http::Method;

use super::method_bit;

/// Action names an API takes: exact names or trailing-`*` prefixes; empty = any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionSet {
    exact: Vec<Box<str>>,
    prefixes: Vec<Box<str>>,
}

impl ActionSet {
    pub(crate) fn new(patterns: &[String]) -> ActionSet {
        let mut set = ActionSet::default();
        for p in patterns {
            let p = p.trim();
            match p.strip_suffix('*') {
                Some(prefix) => set.prefixes.push(prefix.into()),
                None => set.exact.push(p.into()),
            }
        }
        set
    }

    /// True when no action was listed: the API takes any action (a group's fallback).
    pub fn is_any(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
    }

    /// Whether `action` is taken. Names are compared exactly (the cloud API's
    /// action names are case-sensitive).
    pub fn takes(&self, action: Option<&str>) -> bool {
        if self.is_any() {
            return true;
        }
        let Some(a) = action else { return false };
        self.exact.iter().any(|e| **e == *a) || self.prefixes.iter().any(|p| a.starts_with(&**p))
    }
}

/// One API of an action group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub api: usize,
    pub(crate) methods: u16,
    pub actions: ActionSet,
}

/// Validates one entry of `actions` (for the config compiler): letters, digits,
/// `_` `.` `-`, optionally ending in `*`.
pub fn check_action_pattern(p: &str) -> Result<(), String> {
    let body = p.strip_suffix('*').unwrap_or(p);
    if p.is_empty()
        || !body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(format!(
            "action {p:?}: expected a name of letters, digits, '_', '.' or '-', optionally ending in '*'"
        ));
    }
    Ok(())
}

/// The first candidate, in declaration order with the fallback (no `actions`) last,
/// that allows `method` and takes the action `action_of(api)` returns for it.
pub(crate) fn pick<'s>(
    candidates: &[Candidate],
    method: &Method,
    mut action_of: impl FnMut(usize) -> Option<&'s str>,
) -> Option<usize> {
    let bit = method_bit(method);
    candidates
        .iter()
        .filter(|c| c.methods & bit != 0)
        .find(|c| c.actions.takes(action_of(c.api)))
        .map(|c| c.api)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_prefix_patterns() {
        let s = ActionSet::new(&["DescribeInstances".into(), "Run*".into()]);
        assert!(s.takes(Some("DescribeInstances")));
        assert!(!s.takes(Some("describeinstances")));
        assert!(!s.takes(Some("DescribeInstancesX")));
        assert!(s.takes(Some("RunInstances")));
        assert!(s.takes(Some("Run")));
        assert!(!s.takes(None));
        assert!(ActionSet::new(&[]).takes(None));
    }

    #[test]
    fn pattern_validation() {
        assert!(check_action_pattern("Describe*").is_ok());
        assert!(check_action_pattern("*").is_ok());
        assert!(check_action_pattern("").is_err());
        assert!(check_action_pattern("A*B").is_err());
        assert!(check_action_pattern("A B").is_err());
    }

    #[test]
    fn pick_respects_method_and_order() {
        let c = vec![
            Candidate {
                api: 1,
                methods: 1, // GET
                actions: ActionSet::new(&["A*".into()]),
            },
            Candidate {
                api: 2,
                methods: u16::MAX,
                actions: ActionSet::new(&["A1".into(), "B".into()]),
            },
            Candidate {
                api: 3,
                methods: u16::MAX,
                actions: ActionSet::default(),
            },
        ];
        assert_eq!(pick(&c, &Method::GET, |_| Some("A1")), Some(1));
        assert_eq!(pick(&c, &Method::POST, |_| Some("A1")), Some(2));
        assert_eq!(pick(&c, &Method::POST, |_| Some("Z")), Some(3));
        assert_eq!(pick(&c[..2], &Method::POST, |_| Some("Z")), None);
        assert_eq!(pick(&c[..2], &Method::GET, |_| None), None);
        // Each API may see the action its own scheme carries.
        assert_eq!(
            pick(&c, &Method::GET, |api| (api == 2).then_some("B")),
            Some(2)
        );
    }
}
