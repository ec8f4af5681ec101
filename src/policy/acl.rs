//! Per-API caller access lists (Kong acl, APISIX consumer-restriction):
//! `allow_apps`, `deny_apps`, `allow_keys`, `deny_keys`, checked once the
//! caller is authenticated.
//!
//! A deny list always wins. When any allow list is set, the caller must be
//! named by one of them (its key id in `allow_keys` or its app in
//! `allow_apps`); with no allow list every caller not denied passes.

use std::collections::HashSet;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CallerAcl {
    allow_apps: HashSet<String>,
    deny_apps: HashSet<String>,
    allow_keys: HashSet<String>,
    deny_keys: HashSet<String>,
}

impl CallerAcl {
    /// `None` when all four lists are empty (nothing to check).
    pub fn new(
        allow_apps: &[String],
        deny_apps: &[String],
        allow_keys: &[String],
        deny_keys: &[String],
    ) -> Option<CallerAcl> {
        let set = |l: &[String]| l.iter().cloned().collect::<HashSet<String>>();
        let acl = CallerAcl {
            allow_apps: set(allow_apps),
            deny_apps: set(deny_apps),
            allow_keys: set(allow_keys),
            deny_keys: set(deny_keys),
        };
        (acl != CallerAcl::default()).then_some(acl)
    }

    pub fn allows(&self, key_id: &str, app: &str) -> bool {
        if self.deny_keys.contains(key_id) || self.deny_apps.contains(app) {
            return false;
        }
        if self.allow_keys.is_empty() && self.allow_apps.is_empty() {
            return true;
        }
        self.allow_keys.contains(key_id) || self.allow_apps.contains(app)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn empty_lists_build_nothing() {
        assert_eq!(CallerAcl::new(&[], &[], &[], &[]), None);
    }

    #[test]
    fn deny_wins_and_allow_lists_are_a_union() {
        let acl = CallerAcl::new(&v(&["shop"]), &[], &v(&["k2"]), &v(&["k1"])).expect("acl");
        assert!(
            !acl.allows("k1", "shop"),
            "denied key even though its app is allowed"
        );
        assert!(acl.allows("k3", "shop"), "app allowed");
        assert!(acl.allows("k2", "other"), "key allowed");
        assert!(!acl.allows("k4", "other"), "neither allowed");
    }

    #[test]
    fn deny_only() {
        let acl = CallerAcl::new(&[], &v(&["bad"]), &[], &[]).expect("acl");
        assert!(acl.allows("k", "good"));
        assert!(!acl.allows("k", "bad"));
    }
}
