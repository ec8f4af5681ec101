//! The `cors` plugin and the API flag `enable_cors` (SPEC §4.4, §8).
//!
//! Decisions where the spec is silent:
//! - A refused preflight (origin, method or a header not allowed) is answered
//!   `403` without any `Access-Control-*` header; the browser then fails the
//!   request, and the developer sees a clear status in the network panel.
//!   An accepted preflight is `204`.
//! - `apply` is authoritative: `Access-Control-*` headers coming from the upstream
//!   are removed first, so a response never carries two `Allow-Origin` values and a
//!   refused origin never gets the upstream's grant.
//! - `["*"]` without credentials answers `*` to every request (origin-independent,
//!   so no `Vary`). `*` grants no credentials, so this includes the `null` origin.
//!   With credentials, `*` echoes the request's origin (never `null`, which is only
//!   accepted when listed literally) with `Vary: Origin`.
//! - `Vary: Origin` is added to every response whose CORS headers depend on the
//!   origin, including responses to refused or missing origins (caches must not
//!   reuse one origin's answer for another).
//! - Configured origins are compared case-insensitively; a default port
//!   (`:443` for https, `:80` for http) and a trailing `/` are dropped, as browsers
//!   never send them.

use crate::config::raw::RawCors;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

/// Methods that may appear in `allow_methods`.
const KNOWN_METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

/// Response headers a browser always exposes (Fetch "CORS-safelisted response-header names").
const SAFELISTED_RESPONSE: [&str; 7] = [
    "cache-control",
    "content-language",
    "content-length",
    "content-type",
    "expires",
    "last-modified",
    "pragma",
];

const STAR: HeaderValue = HeaderValue::from_static("*");
const TRUE: HeaderValue = HeaderValue::from_static("true");

/// A compiled CORS policy.
#[derive(Debug, Clone)]
pub struct CorsPolicy {
    any_origin: bool,
    /// Normalised (lower-case) origins, `null` included only when listed.
    origins: Vec<String>,
    credentials: bool,
    methods: Vec<Method>,
    methods_value: Option<HeaderValue>,
    any_header: bool,
    headers: Vec<HeaderName>,
    headers_value: Option<HeaderValue>,
    expose_any: bool,
    expose_value: Option<HeaderValue>,
    max_age: HeaderValue,
}

impl CorsPolicy {
    /// Validates and precomputes a `cors` plugin.
    pub fn from_raw(raw: &RawCors) -> Result<CorsPolicy, String> {
        if raw.max_age == 0 {
            return Err("cors max_age must be > 0".into());
        }
        let mut any_origin = false;
        let mut origins = Vec::new();
        for o in &raw.allow_origin {
            let o = o.trim();
            if o == "*" {
                any_origin = true;
            } else if o.eq_ignore_ascii_case("null") {
                push_unique(&mut origins, "null".to_string());
            } else {
                let n = normalize_origin(o).ok_or_else(|| {
                    format!("cors allow_origin {o:?} is not `*`, `null` or scheme://host[:port]")
                })?;
                push_unique(&mut origins, n);
            }
        }
        if !any_origin && origins.is_empty() {
            return Err("cors allow_origin lists no origin".into());
        }
        let mut methods = Vec::new();
        for m in &raw.allow_methods {
            let up = m.trim().to_ascii_uppercase();
            if !KNOWN_METHODS.contains(&up.as_str()) {
                return Err(format!(
                    "cors allow_methods: unknown method {m:?} (known: {})",
                    KNOWN_METHODS.join(", ")
                ));
            }
            let method = Method::from_bytes(up.as_bytes()).map_err(|e| e.to_string())?;
            push_unique(&mut methods, method);
        }
        let (any_header, headers) = header_list(&raw.allow_headers, "allow_headers")?;
        let (expose_any, expose) = header_list(&raw.expose_headers, "expose_headers")?;
        Ok(CorsPolicy {
            any_origin,
            origins,
            credentials: raw.allow_credentials,
            methods_value: join_value(methods.iter().map(Method::as_str)),
            methods,
            any_header,
            headers_value: join_value(headers.iter().map(HeaderName::as_str)),
            headers,
            expose_any,
            expose_value: if expose_any {
                Some(STAR)
            } else {
                join_value(expose.iter().map(HeaderName::as_str))
            },
            max_age: HeaderValue::from(raw.max_age),
        })
    }

    /// The API flag `enable_cors = true`: responses get `Access-Control-Allow-Origin: *`
    /// only (no credentials, nothing exposed). Preflights are answered permissively:
    /// every known method, any header, max age one day.
    pub fn allow_any() -> CorsPolicy {
        let methods: Vec<Method> = KNOWN_METHODS
            .iter()
            .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
            .collect();
        CorsPolicy {
            any_origin: true,
            origins: Vec::new(),
            credentials: false,
            methods_value: join_value(methods.iter().map(Method::as_str)),
            methods,
            any_header: true,
            headers: Vec::new(),
            headers_value: None,
            expose_any: false,
            expose_value: None,
            max_age: HeaderValue::from_static("86400"),
        }
    }

    /// A CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
    pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
        method == Method::OPTIONS
            && headers.contains_key(ORIGIN)
            && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// The method a preflight asks about (`Access-Control-Request-Method`), by
    /// which it is routed: a browser preflights `PUT /x` to the API taking
    /// `PUT /x`, whether or not that API lists `OPTIONS`.
    pub fn requested_method(method: &Method, headers: &HeaderMap) -> Option<Method> {
        if !Self::is_preflight(method, headers) {
            return None;
        }
        let v = headers.get(ACCESS_CONTROL_REQUEST_METHOD)?.to_str().ok()?;
        Method::from_bytes(v.trim().as_bytes()).ok()
    }

    /// Whether the answer depends on the request's origin (then `Vary: Origin`).
    fn varies(&self) -> bool {
        !self.any_origin || self.credentials
    }

    /// The `Access-Control-Allow-Origin` value for this request, if its origin is allowed.
    fn allowed_origin(&self, req: &HeaderMap) -> Option<HeaderValue> {
        self.allowed(single_origin(req)?)
    }

    fn allowed(&self, value: &HeaderValue) -> Option<HeaderValue> {
        if self.any_origin && !self.credentials {
            return Some(STAR);
        }
        let text = value.to_str().ok()?.trim();
        if self.origins.iter().any(|o| o.eq_ignore_ascii_case(text)) {
            return Some(value.clone());
        }
        // `*` with credentials: echo any well-formed origin, never `null`.
        if self.any_origin && normalize_origin(text).is_some() {
            return Some(value.clone());
        }
        None
    }

    /// Answers a preflight (never forwarded, never authenticated): `204` with the
    /// CORS headers when the origin, the requested method and every requested header
    /// are allowed, otherwise `403` without CORS headers. `Vary` is set either way
    /// when the answer depends on the request.
    pub fn preflight(&self, req: &HeaderMap) -> (StatusCode, HeaderMap) {
        let mut h = HeaderMap::new();
        if self.varies() {
            h.append(VARY, HeaderValue::from_static("Origin"));
        }
        if self.any_header {
            h.append(
                VARY,
                HeaderValue::from_static("Access-Control-Request-Headers"),
            );
        }
        let refused = (StatusCode::FORBIDDEN, h.clone());
        let Some(origin) = self.allowed_origin(req) else {
            return refused;
        };
        if !self.method_allowed(req) {
            return refused;
        }
        let Some(requested) = self.requested_headers(req) else {
            return refused;
        };
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if self.credentials {
            h.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE);
        }
        if let Some(m) = &self.methods_value {
            h.insert(ACCESS_CONTROL_ALLOW_METHODS, m.clone());
        }
        let allow_headers = if self.any_header && !self.credentials {
            // `*` does not cover `Authorization` (Fetch): name it when asked for.
            Some(if requested_authorization(req) {
                HeaderValue::from_static("*, authorization")
            } else {
                STAR
            })
        } else if self.any_header {
            requested
        } else {
            self.headers_value.clone()
        };
        if let Some(v) = allow_headers {
            h.insert(ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
        h.insert(ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        (StatusCode::NO_CONTENT, h)
    }

    fn method_allowed(&self, req: &HeaderMap) -> bool {
        let mut all = req.get_all(ACCESS_CONTROL_REQUEST_METHOD).iter();
        let (Some(v), None) = (all.next(), all.next()) else {
            return false;
        };
        let Ok(text) = v.to_str() else {
            return false;
        };
        let text = text.trim();
        self.methods
            .iter()
            .any(|m| m.as_str().eq_ignore_ascii_case(text))
    }

    /// Checks `Access-Control-Request-Headers` (all instances, comma-separated,
    /// case-insensitive). `None`: a header is not allowed or not a header name.
    /// `Some(v)`: allowed; `v` is the normalised list to echo (None when empty).
    fn requested_headers(&self, req: &HeaderMap) -> Option<Option<HeaderValue>> {
        let mut names: Vec<HeaderName> = Vec::new();
        for value in req.get_all(ACCESS_CONTROL_REQUEST_HEADERS) {
            let text = value.to_str().ok()?;
            for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let name = HeaderName::from_bytes(item.as_bytes()).ok()?;
                if !self.any_header && !self.headers.contains(&name) {
                    return None;
                }
                push_unique(&mut names, name);
            }
        }
        Some(join_value(names.iter().map(HeaderName::as_str)))
    }

    /// Decorates an actual response (upstream or gateway-generated 401/403/429).
    /// Upstream `Access-Control-*` headers are replaced by the policy's answer.
    pub fn apply(&self, req: &HeaderMap, resp: &mut HeaderMap) {
        self.apply_origin(single_origin(req), resp)
    }

    /// [`Self::apply`] for a request whose one `Origin` header is `origin`
    /// (`None`: no `Origin`, or several, which is ambiguous and granted nothing).
    pub fn apply_origin(&self, origin: Option<&HeaderValue>, resp: &mut HeaderMap) {
        for name in [
            ACCESS_CONTROL_ALLOW_ORIGIN,
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            ACCESS_CONTROL_EXPOSE_HEADERS,
            ACCESS_CONTROL_ALLOW_METHODS,
            ACCESS_CONTROL_ALLOW_HEADERS,
            ACCESS_CONTROL_MAX_AGE,
        ] {
            resp.remove(name);
        }
        if self.varies() {
            add_vary_origin(resp);
        }
        let Some(origin) = origin.and_then(|o| self.allowed(o)) else {
            return;
        };
        resp.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if self.credentials {
            resp.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE);
        }
        let expose = if self.expose_any && self.credentials {
            // `*` is literal in credentialed mode: list the response's own headers.
            join_value(
                resp.keys()
                    .map(HeaderName::as_str)
                    .filter(|n| !SAFELISTED_RESPONSE.contains(n))
                    .filter(|n| !n.starts_with("access-control-"))
                    .filter(|n| !matches!(*n, "set-cookie" | "vary"))
                    .collect::<Vec<_>>()
                    .into_iter(),
            )
        } else {
            self.expose_value.clone()
        };
        if let Some(v) = expose {
            resp.insert(ACCESS_CONTROL_EXPOSE_HEADERS, v);
        }
    }
}

fn requested_authorization(req: &HeaderMap) -> bool {
    req.get_all(ACCESS_CONTROL_REQUEST_HEADERS).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("authorization"))
        })
    })
}

/// Appends `Vary: Origin` unless a `Vary` already names `Origin` or is `*`.
fn add_vary_origin(resp: &mut HeaderMap) {
    let present = resp.get_all(VARY).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .map(str::trim)
                .any(|t| t == "*" || t.eq_ignore_ascii_case("origin"))
        })
    });
    if !present {
        resp.append(VARY, HeaderValue::from_static("Origin"));
    }
}

fn push_unique<T: PartialEq>(v: &mut Vec<T>, item: T) {
    if !v.contains(&item) {
        v.push(item);
    }
}

/// `(is_star, names)` of an allow/expose header list; `*` anywhere means any.
fn header_list(list: &[String], field: &str) -> Result<(bool, Vec<HeaderName>), String> {
    let mut any = false;
    let mut names = Vec::new();
    for h in list {
        let h = h.trim();
        if h == "*" {
            any = true;
            continue;
        }
        let name = HeaderName::from_bytes(h.as_bytes())
            .map_err(|_| format!("cors {field}: invalid header name {h:?}"))?;
        push_unique(&mut names, name);
    }
    if any {
        names.clear();
    }
    Ok((any, names))
}

/// `a, b, c` as a header value; `None` for an empty list.
fn join_value<'a>(items: impl Iterator<Item = &'a str>) -> Option<HeaderValue> {
    let joined = items.collect::<Vec<_>>().join(", ");
    if joined.is_empty() {
        return None;
    }
    HeaderValue::from_str(&joined).ok()
}

/// Validates a serialized origin `scheme://host[:port]` and returns it lower-cased
/// without a default port or trailing `/`. `None` when it is not an origin.
pub fn normalize_origin(s: &str) -> Option<String> {
    let s = s.trim();
    let s = s.strip_suffix('/').unwrap_or(s);
    let (scheme, rest) = s.split_once("://")?;
    let scheme_ok = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok || rest.is_empty() {
        return None;
    }
    // host: bracketed IPv6 or reg-name / IPv4; then an optional :port.
    let (host, port) = if let Some(r) = rest.strip_prefix('[') {
        let (inner, after) = r.split_once(']')?;
        inner.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (&rest[..inner.len() + 2], port)
    } else {
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        };
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
        if !host_ok {
            return None;
        }
        (host, port)
    };
    let scheme = scheme.to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    let port = match port {
        None => None,
        Some(p) => {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let n: u16 = p.parse().ok()?;
            if n == 0 {
                return None;
            }
            let default = matches!((scheme.as_str(), n), ("https", 443) | ("http", 80));
            (!default).then_some(n)
        }
    };
    Some(match port {
        Some(p) => format!("{scheme}://{host}:{p}"),
        None => format!("{scheme}://{host}"),
    })
}

/// The request's `Origin` when it has exactly one (several are ambiguous).
pub fn single_origin(req: &HeaderMap) -> Option<&HeaderValue> {
    let mut all = req.get_all(ORIGIN).iter();
    let value = all.next()?;
    match all.next() {
        Some(_) => None,
        None => Some(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(origins: &[&str], creds: bool) -> RawCors {
        RawCors {
            name: "c".into(),
            allow_origin: origins.iter().map(|s| s.to_string()).collect(),
            allow_methods: vec!["GET".into(), "put".into(), "POST".into()],
            allow_headers: vec!["X-Token".into(), "content-type".into()],
            expose_headers: vec!["X-Request-Id".into()],
            allow_credentials: creds,
            max_age: 600,
        }
    }

    fn req(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn get<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
        h.get(name).map(|v| v.to_str().unwrap())
    }

    fn vary(h: &HeaderMap) -> Vec<String> {
        h.get_all(VARY)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn validation() {
        let mut r = raw(&["https://a.example"], false);
        r.max_age = 0;
        assert!(CorsPolicy::from_raw(&r).unwrap_err().contains("max_age"));
        let mut r = raw(&["https://a.example"], false);
        r.allow_methods = vec!["FETCH".into()];
        assert!(CorsPolicy::from_raw(&r).unwrap_err().contains("FETCH"));
        let mut r = raw(&["https://a.example"], false);
        r.allow_headers = vec!["bad header".into()];
        assert!(CorsPolicy::from_raw(&r).is_err());
        for bad in [
            "a.example",
            "https://",
            "https://a.example/path",
            "https://a.example:99999",
            "https://a.example:",
            "https://user@a.example",
            "https://a.example?x",
            "1http://a",
            "https://[zz]",
        ] {
            let e = CorsPolicy::from_raw(&raw(&[bad], false));
            assert!(e.is_err(), "{bad} accepted");
        }
        assert!(CorsPolicy::from_raw(&raw(&[], false)).is_err());
        for good in [
            "*",
            "null",
            "https://a.example",
            "http://localhost:3000",
            "https://[::1]:8443",
            "HTTPS://A.Example/",
        ] {
            assert!(CorsPolicy::from_raw(&raw(&[good], false)).is_ok(), "{good}");
        }
    }

    #[test]
    fn origin_normalisation() {
        assert_eq!(
            normalize_origin("HTTPS://A.Example:443/").as_deref(),
            Some("https://a.example")
        );
        assert_eq!(
            normalize_origin("http://a.example:80").as_deref(),
            Some("http://a.example")
        );
        assert_eq!(
            normalize_origin("http://a.example:443").as_deref(),
            Some("http://a.example:443")
        );
        assert_eq!(
            normalize_origin("https://[::1]:8443").as_deref(),
            Some("https://[::1]:8443")
        );
        assert_eq!(normalize_origin("null"), None);
    }

    #[test]
    fn listed_origin_without_credentials() {
        let p = CorsPolicy::from_raw(&raw(&["https://a.example:443"], false)).unwrap();
        let r = req(&[("origin", "https://a.example")]);
        let mut resp = HeaderMap::new();
        p.apply(&r, &mut resp);
        assert_eq!(
            get(&resp, "access-control-allow-origin"),
            Some("https://a.example")
        );
        assert_eq!(get(&resp, "access-control-allow-credentials"), None);
        assert_eq!(
            get(&resp, "access-control-expose-headers"),
            Some("x-request-id")
        );
        assert_eq!(vary(&resp), vec!["Origin"]);
        // Case-insensitive match, echoing what the browser sent.
        let mut resp = HeaderMap::new();
        p.apply(&req(&[("origin", "https://A.EXAMPLE")]), &mut resp);
        assert_eq!(
            get(&resp, "access-control-allow-origin"),
            Some("https://A.EXAMPLE")
        );
    }

    #[test]
    fn refused_origin_gets_nothing_but_vary() {
        let p = CorsPolicy::from_raw(&raw(&["https://a.example"], true)).unwrap();
        let mut resp = HeaderMap::new();
        resp.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        resp.insert("vary", HeaderValue::from_static("Accept-Encoding"));
        p.apply(&req(&[("origin", "https://evil.example")]), &mut resp);
        assert_eq!(get(&resp, "access-control-allow-origin"), None);
        assert_eq!(get(&resp, "access-control-allow-credentials"), None);
        assert_eq!(vary(&resp), vec!["Accept-Encoding", "Origin"]);
        // No Origin at all.
        let mut resp = HeaderMap::new();
        p.apply(&HeaderMap::new(), &mut resp);
        assert_eq!(get(&resp, "access-control-allow-origin"), None);
        assert_eq!(vary(&resp), vec!["Origin"]);
        // Two Origin headers: ambiguous.
        let mut resp = HeaderMap::new();
        let r = req(&[
            ("origin", "https://a.example"),
            ("origin", "https://a.example"),
        ]);
        p.apply(&r, &mut resp);
        assert_eq!(get(&resp, "access-control-allow-origin"), None);
    }

    #[test]
    fn star_with_and_without_credentials() {
        let p = CorsPolicy::from_raw(&raw(&["*"], false)).unwrap();
        let mut resp = HeaderMap::new();
        p.apply(&req(&[("origin", "https://x.example")]), &mut resp);
        assert_eq!(get(&resp, "access-control-allow-origin"), Some("*"));
        assert!(vary(&resp).is_empty());

        let p = CorsPolicy::from_raw(&raw(&["*"], true)).unwrap();
        let mut resp = HeaderMap::new();
        resp.insert("vary", HeaderValue::from_static("origin, accept"));
        p.apply(&req(&[("origin", "https://x.example")]), &mut resp);
        assert_eq!(
            get(&resp, "access-control-allow-origin"),
            Some("https://x.example")
        );
        assert_eq!(get(&resp, "access-control-allow-credentials"), Some("true"));
        assert_eq!(vary(&resp), vec!["origin, accept"]); // not duplicated
    }

    #[test]
    fn null_origin() {
        let r = req(&[("origin", "null")]);
        let p = CorsPolicy::from_raw(&raw(&["*"], true)).unwrap();
        let mut resp = HeaderMap::new();
        p.apply(&r, &mut resp);
        assert_eq!(get(&resp, "access-control-allow-origin"), None);
        let p = CorsPolicy::from_raw(&raw(&["https://a.example"], false)).unwrap();
        let mut resp = HeaderMap::new();
        p.apply(&r, &mut resp);
        assert_eq!(get(&resp, "access-control-allow-origin"), None);
        let p = CorsPolicy::from_raw(&raw(&["https://a.example", "null"], true)).unwrap();
        let mut resp = HeaderMap::new();
        p.apply(&r, &mut resp);
        assert_eq!(get(&resp, "access-control-allow-origin"), Some("null"));
        // Garbage origins are never echoed by `*` + credentials.
        let p = CorsPolicy::from_raw(&raw(&["*"], true)).unwrap();
        let mut resp = HeaderMap::new();
        p.apply(&req(&[("origin", "garbage")]), &mut resp);
        assert_eq!(get(&resp, "access-control-allow-origin"), None);
    }

    #[test]
    fn expose_star() {
        let mut r = raw(&["*"], false);
        r.expose_headers = vec!["*".into()];
        let p = CorsPolicy::from_raw(&r).unwrap();
        let mut resp = HeaderMap::new();
        p.apply(&req(&[("origin", "https://x.example")]), &mut resp);
        assert_eq!(get(&resp, "access-control-expose-headers"), Some("*"));

        let mut r = raw(&["https://x.example"], true);
        r.expose_headers = vec!["*".into()];
        let p = CorsPolicy::from_raw(&r).unwrap();
        let mut resp = HeaderMap::new();
        resp.insert("content-type", HeaderValue::from_static("text/plain"));
        resp.insert("x-ratelimit-limit", HeaderValue::from_static("10"));
        resp.insert("set-cookie", HeaderValue::from_static("a=b"));
        p.apply(&req(&[("origin", "https://x.example")]), &mut resp);
        assert_eq!(
            get(&resp, "access-control-expose-headers"),
            Some("x-ratelimit-limit")
        );
    }

    #[test]
    fn is_preflight() {
        let r = req(&[
            ("origin", "https://a"),
            ("access-control-request-method", "PUT"),
        ]);
        assert!(CorsPolicy::is_preflight(&Method::OPTIONS, &r));
        assert!(!CorsPolicy::is_preflight(&Method::GET, &r));
        let r = req(&[("origin", "https://a")]);
        assert!(!CorsPolicy::is_preflight(&Method::OPTIONS, &r));
        let r = req(&[("access-control-request-method", "PUT")]);
        assert!(!CorsPolicy::is_preflight(&Method::OPTIONS, &r));
    }

    #[test]
    fn preflight_allowed() {
        let p = CorsPolicy::from_raw(&raw(&["https://a.example"], true)).unwrap();
        let r = req(&[
            ("origin", "https://a.example"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "X-TOKEN, Content-Type"),
        ]);
        let (status, h) = p.preflight(&r);
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(
            get(&h, "access-control-allow-origin"),
            Some("https://a.example")
        );
        assert_eq!(get(&h, "access-control-allow-credentials"), Some("true"));
        assert_eq!(
            get(&h, "access-control-allow-methods"),
            Some("GET, PUT, POST")
        );
        assert_eq!(
            get(&h, "access-control-allow-headers"),
            Some("x-token, content-type")
        );
        assert_eq!(get(&h, "access-control-max-age"), Some("600"));
        assert_eq!(vary(&h), vec!["Origin"]);
    }

    #[test]
    fn preflight_refused() {
        let p = CorsPolicy::from_raw(&raw(&["https://a.example"], false)).unwrap();
        let base = [
            ("origin", "https://a.example"),
            ("access-control-request-method", "PUT"),
        ];
        let cases: Vec<Vec<(&str, &str)>> = vec![
            vec![
                ("origin", "https://b.example"),
                ("access-control-request-method", "PUT"),
            ],
            vec![
                ("origin", "https://a.example"),
                ("access-control-request-method", "DELETE"),
            ],
            vec![
                base[0],
                base[1],
                ("access-control-request-headers", "x-token, x-other"),
            ],
            vec![
                base[0],
                base[1],
                ("access-control-request-headers", "bad header"),
            ],
            vec![base[0], base[1], ("access-control-request-method", "GET")],
            vec![("origin", "null"), ("access-control-request-method", "GET")],
        ];
        for c in cases {
            let (status, h) = p.preflight(&req(&c));
            assert_eq!(status, StatusCode::FORBIDDEN, "{c:?}");
            assert!(h.get("access-control-allow-origin").is_none());
            assert!(h.get("access-control-allow-methods").is_none());
        }
        let (status, _) = p.preflight(&req(&base));
        assert_eq!(status, StatusCode::NO_CONTENT);
    }

    #[test]
    fn preflight_any_header() {
        let mut r = raw(&["*"], false);
        r.allow_headers = vec!["*".into()];
        let p = CorsPolicy::from_raw(&r).unwrap();
        let q = req(&[
            ("origin", "https://z.example"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "x-a,x-b"),
        ]);
        let (status, h) = p.preflight(&q);
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(get(&h, "access-control-allow-origin"), Some("*"));
        assert_eq!(get(&h, "access-control-allow-headers"), Some("*"));
        assert_eq!(vary(&h), vec!["Access-Control-Request-Headers"]);

        let mut r = raw(&["https://z.example"], true);
        r.allow_headers = vec!["*".into()];
        let p = CorsPolicy::from_raw(&r).unwrap();
        let (status, h) = p.preflight(&q);
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(
            get(&h, "access-control-allow-origin"),
            Some("https://z.example")
        );
        assert_eq!(get(&h, "access-control-allow-headers"), Some("x-a, x-b"));
        assert_eq!(vary(&h), vec!["Origin", "Access-Control-Request-Headers"]);
    }

    #[test]
    fn allow_any_flag() {
        let p = CorsPolicy::allow_any();
        let mut resp = HeaderMap::new();
        p.apply(&req(&[("origin", "https://q.example")]), &mut resp);
        assert_eq!(get(&resp, "access-control-allow-origin"), Some("*"));
        assert_eq!(resp.len(), 1);
        let (status, h) = p.preflight(&req(&[
            ("origin", "https://q.example"),
            ("access-control-request-method", "PATCH"),
            ("access-control-request-headers", "authorization"),
        ]));
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(get(&h, "access-control-allow-origin"), Some("*"));
        assert_eq!(
            get(&h, "access-control-allow-headers"),
            Some("*, authorization")
        );
        assert_eq!(get(&h, "access-control-allow-credentials"), None);
    }
}
