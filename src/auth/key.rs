//! `auth = "key"`: a plain API key (Kong key-auth, APISIX key-auth). The key's
//! `secret` is the API key, sent in a header (`X-API-Key` by default) or, when
//! enabled, in a query parameter.
//!
//! Keys are found through a map from SHA-256(secret) to the key, then the
//! secret is compared in constant time: the lookup's timing depends only on a
//! hash the client cannot steer towards a stored secret, and the final
//! comparison does not stop at the first differing byte.

use super::mac::ct_eq;
use super::{AuthError, Key, Keys, RequestParts, Verified};
use http::HeaderName;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// The default header carrying the key.
pub const DEFAULT_HEADER: HeaderName = HeaderName::from_static("x-api-key");

/// Where an API reads the key from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySource {
    pub header: HeaderName,
    /// Query parameter name; `None`: the query is never read.
    pub query: Option<String>,
}

impl Default for KeySource {
    fn default() -> Self {
        KeySource {
            header: DEFAULT_HEADER,
            query: None,
        }
    }
}

impl KeySource {
    /// From the `key_header` / `key_query` settings; errors name the bad value.
    pub fn new(header: Option<&str>, query: Option<&str>) -> Result<KeySource, String> {
        let header = match header {
            None => DEFAULT_HEADER,
            Some(h) => HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| format!("key_header {h:?} is not a header name"))?,
        };
        if is_protected(&header) {
            return Err(format!(
                "key_header {:?} is a header keygate reads or sets itself",
                header.as_str()
            ));
        }
        let query = match query {
            None => None,
            Some(q) if q.is_empty() || q.contains(['&', '=', '#', ' ']) => {
                return Err(format!(
                    "key_query {q:?} must be a non-empty name without & = # or spaces"
                ))
            }
            Some(q) => Some(q.to_string()),
        };
        Ok(KeySource { header, query })
    }
}

fn is_protected(h: &HeaderName) -> bool {
    let n = h.as_str();
    matches!(
        n,
        "host" | "authorization" | "content-length" | "transfer-encoding" | "connection"
    ) || n.starts_with("x-keygate-")
}

/// SHA-256(secret) -> key, built once per snapshot.
#[derive(Debug, Default)]
pub struct KeyIndex {
    by_hash: HashMap<[u8; 32], Arc<Key>>,
}

impl KeyIndex {
    pub fn new(keys: &Keys) -> KeyIndex {
        let by_hash = keys
            .values()
            .map(|k| (digest(k.secret.as_bytes()), k.clone()))
            .collect();
        KeyIndex { by_hash }
    }

    /// Ids of keys whose secrets are equal (an API key must name one key).
    pub fn shared_secrets(keys: &Keys) -> Vec<(String, String)> {
        let mut seen: HashMap<[u8; 32], &str> = HashMap::new();
        let mut ids: Vec<&Arc<Key>> = keys.values().collect();
        ids.sort_by(|a, b| a.id.cmp(&b.id));
        let mut out = vec![];
        for k in ids {
            if let Some(prev) = seen.insert(digest(k.secret.as_bytes()), &k.id) {
                out.push((prev.to_string(), k.id.clone()));
            }
        }
        out
    }

    fn find(&self, presented: &[u8]) -> Option<&Arc<Key>> {
        let k = self.by_hash.get(&digest(presented))?;
        ct_eq(k.secret.as_bytes(), presented).then_some(k)
    }
}

fn digest(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// Verifies the API key of `rp`.
pub fn verify(
    source: &KeySource,
    index: &KeyIndex,
    rp: &RequestParts<'_>,
) -> Result<Verified, AuthError> {
    let mut values = rp.headers.get_all(&source.header).iter();
    let presented: Cow<[u8]> = match (values.next(), values.next()) {
        (Some(_), Some(_)) => {
            return Err(AuthError::Malformed(format!(
                "several {} headers",
                source.header.as_str()
            )))
        }
        (Some(v), None) => Cow::Borrowed(v.as_bytes()),
        (None, _) => match source.query.as_deref().map(|q| from_query(rp, q)) {
            Some(Ok(Some(v))) => Cow::Owned(v),
            Some(Err(e)) => return Err(e),
            _ => return Err(AuthError::Missing(missing_message(source))),
        },
    };
    if presented.is_empty() {
        return Err(AuthError::Missing(missing_message(source)));
    }
    match index.find(&presented) {
        None => Err(AuthError::UnknownKey),
        Some(k) if !k.enabled => Err(AuthError::DisabledKey),
        Some(k) => Ok(Verified {
            key: k.clone(),
            replay: None,
        }),
    }
}

fn missing_message(source: &KeySource) -> String {
    match &source.query {
        None => format!("the {} header", source.header.as_str()),
        Some(q) => format!(
            "the {} header or the {q} query parameter",
            source.header.as_str()
        ),
    }
}

/// The decoded value of query parameter `name`; several of them are refused.
fn from_query(rp: &RequestParts<'_>, name: &str) -> Result<Option<Vec<u8>>, AuthError> {
    let query = rp.uri.query().unwrap_or("");
    let mut found = None;
    for (k, v) in super::form_pairs(query.as_bytes()) {
        if k == name.as_bytes() {
            if found.is_some() {
                return Err(AuthError::Malformed(format!(
                    "several {name} query parameters"
                )));
            }
            found = Some(v);
        }
    }
    Ok(found)
}

/// `query` without any `name=...` parameter (compared after decoding the name),
/// every other parameter kept byte for byte.
pub fn strip_query<'q>(query: &'q str, name: &str) -> Cow<'q, str> {
    let is_key = |seg: &str| {
        let raw = seg.split_once('=').map_or(seg, |(k, _)| k);
        super::form_pairs(raw.as_bytes())
            .first()
            .is_some_and(|(k, _)| k == name.as_bytes())
    };
    if !query.split('&').any(is_key) {
        return Cow::Borrowed(query);
    }
    let kept: Vec<&str> = query
        .split('&')
        .filter(|s| !s.is_empty() && !is_key(s))
        .collect();
    Cow::Owned(kept.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::testkit::{headers, keys};
    use http::{Method, Uri, Version};

    fn run(source: &KeySource, h: &[(&str, &str)], uri: &str) -> Result<String, AuthError> {
        let k = keys(&[("alice", "sk-alice", true), ("off", "sk-off", false)]);
        let index = KeyIndex::new(&k);
        let headers = headers(h);
        let uri: Uri = uri.parse().expect("uri");
        let rp = RequestParts {
            method: &Method::GET,
            uri: &uri,
            version: Version::HTTP_11,
            headers: &headers,
            body: None,
        };
        verify(source, &index, &rp).map(|v| v.key.id.clone())
    }

    #[test]
    fn header_key_is_found_and_checked() {
        let s = KeySource::default();
        assert_eq!(
            run(&s, &[("x-api-key", "sk-alice")], "/"),
            Ok("alice".into())
        );
        assert_eq!(
            run(&s, &[("x-api-key", "sk-alicf")], "/"),
            Err(AuthError::UnknownKey)
        );
        assert_eq!(
            run(&s, &[("x-api-key", "sk-off")], "/"),
            Err(AuthError::DisabledKey)
        );
        assert!(matches!(run(&s, &[], "/"), Err(AuthError::Missing(_))));
        assert!(matches!(
            run(&s, &[("x-api-key", "")], "/"),
            Err(AuthError::Missing(_))
        ));
        assert!(matches!(
            run(
                &s,
                &[("x-api-key", "sk-alice"), ("x-api-key", "sk-alice")],
                "/"
            ),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn query_key_only_when_enabled() {
        let off = KeySource::default();
        assert!(matches!(
            run(&off, &[], "/?apikey=sk-alice"),
            Err(AuthError::Missing(_))
        ));
        let on = KeySource::new(Some("x-key"), Some("apikey")).expect("source");
        assert_eq!(run(&on, &[], "/?a=1&apikey=sk%2Dalice"), Ok("alice".into()));
        assert_eq!(run(&on, &[("x-key", "sk-alice")], "/"), Ok("alice".into()));
        assert!(matches!(
            run(&on, &[], "/?apikey=sk-alice&apikey=x"),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn bad_sources_are_refused() {
        assert!(KeySource::new(Some("bad header"), None).is_err());
        assert!(KeySource::new(Some("Authorization"), None).is_err());
        assert!(KeySource::new(Some("x-keygate-key-id"), None).is_err());
        assert!(KeySource::new(None, Some("a=b")).is_err());
        assert!(KeySource::new(None, Some("")).is_err());
    }

    #[test]
    fn strip_query_removes_only_the_key() {
        assert_eq!(strip_query("a=1&apikey=x&b=2", "apikey"), "a=1&b=2");
        assert_eq!(strip_query("apikey=x", "apikey"), "");
        assert_eq!(strip_query("api%6Bey=x&c=%20", "apikey"), "c=%20");
        assert!(matches!(
            strip_query("a=1&b=2", "apikey"),
            Cow::Borrowed("a=1&b=2")
        ));
    }

    #[test]
    fn equal_secrets_are_reported() {
        let k = keys(&[("a", "same", true), ("b", "same", true), ("c", "x", true)]);
        assert_eq!(
            KeyIndex::shared_secrets(&k),
            vec![("a".to_string(), "b".to_string())]
        );
    }
}
