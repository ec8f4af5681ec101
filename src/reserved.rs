//! Request headers that are the gateway's own (identity headers, `X-UsagePlan-ID`,
//! every `claims_to_headers` name of every JWT provider, anything `x-keygate-*`):
//! a client's copies are removed before forwarding, in any spelling. Names are
//! compared after folding `_` to `-` (header names are already lower case), because
//! WSGI, CGI and PHP back ends read `X_Keygate_Key_Id` as `X-Keygate-Key-Id`.

use http::header::{HeaderMap, HeaderName};
use rustc_hash::FxHashSet;

/// Looked-up names come from clients, but the set is fixed per snapshot and small:
/// a fast non-keyed hash is safe.
type NameSet = FxHashSet<Box<str>>;

const PREFIX: &str = "x-keygate-";
const FIXED: [&str; 4] = [
    "x-keygate-key-id",
    "x-keygate-app",
    "x-keygate-usage-plan",
    "x-usageplan-id",
];

/// The compiled set of reserved names (folded), one per snapshot.
#[derive(Debug, Clone)]
pub struct ReservedHeaders {
    names: NameSet,
    /// Longest name in `names`: longer header names skip the lookup.
    longest: usize,
}

impl Default for ReservedHeaders {
    fn default() -> Self {
        ReservedHeaders::new(std::iter::empty::<&HeaderName>())
    }
}

impl ReservedHeaders {
    /// The fixed names plus `extra` (the JWT providers' `claims_to_headers`).
    pub fn new<'a>(extra: impl IntoIterator<Item = &'a HeaderName>) -> Self {
        let mut names: NameSet = FIXED.iter().map(|&n| n.into()).collect();
        names.extend(extra.into_iter().map(|n| fold(n.as_str()).into()));
        let longest = names.iter().map(|n| n.len()).max().unwrap_or(0);
        ReservedHeaders { names, longest }
    }

    pub fn is_reserved(&self, name: &HeaderName) -> bool {
        let n = name.as_str();
        if n.contains('_') {
            let f = fold(n);
            f.starts_with(PREFIX) || self.names.contains(f.as_str())
        } else {
            n.starts_with(PREFIX) || (n.len() <= self.longest && self.names.contains(n))
        }
    }

    /// Remove every reserved header from `h`.
    pub fn strip(&self, h: &mut HeaderMap) {
        let doomed: Vec<HeaderName> = h.keys().filter(|k| self.is_reserved(k)).cloned().collect();
        for name in doomed {
            h.remove(name);
        }
    }
}

fn fold(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn strips_every_spelling() {
        let claim = HeaderName::from_static("x-user-email");
        let r = ReservedHeaders::new([&claim]);
        let mut h = HeaderMap::new();
        for n in [
            "x-keygate-key-id",
            "x_keygate_key_id",
            "x-keygate_key-id",
            "x_keygate_app",
            "x-keygate-usage-plan",
            "x_usageplan_id",
            "x-usageplan-id",
            "x-keygate-anything",
            "x_user_email",
            "x-user-email",
            "accept",
            "x-user",
            "x_other",
        ] {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).expect("name"),
                HeaderValue::from_static("v"),
            );
        }
        r.strip(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "x-user", "x_other"]);
    }

    #[test]
    fn default_has_the_fixed_names() {
        let r = ReservedHeaders::default();
        assert!(r.is_reserved(&HeaderName::from_static("x-usageplan-id")));
        assert!(!r.is_reserved(&HeaderName::from_static("x-user-email")));
    }
}
