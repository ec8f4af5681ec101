//! `auth = "external"`: an external authorization service decides (Envoy
//! ext_authz in HTTP mode, APISIX forward-auth, the documents' CustomAuth).
//!
//! keygate sends the auth service a `GET` to its `url` carrying the request's
//! method, canonical path and query, host and client address in
//! `X-Forwarded-*` / `X-Real-IP` headers, plus the client headers the API
//! names. The request body is never sent. A 2xx answer admits (optionally
//! naming the caller's key id / app); any other status refuses with that
//! status. A timeout or an unreachable service refuses with 503 unless
//! `on_error = "allow"`. Admissions may be cached for a short TTL, keyed by
//! the values of every header sent.

use crate::body::{full, Body};
use crate::config::raw::RawExternalAuth;
use crate::reject::{Refusal, Reject};
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// An answer body up to this size is passed to the client as is.
const MAX_PASSED_BODY: usize = 4096;
/// Most cached admissions; when full, expired ones go, then all.
const MAX_CACHED: usize = 10_000;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// One API's compiled settings, with its pooled client (one per snapshot).
pub struct ExternalAuth {
    url: Uri,
    timeout: Duration,
    request_headers: Vec<HeaderName>,
    response_headers: Vec<HeaderName>,
    key_id_header: Option<HeaderName>,
    app_header: Option<HeaderName>,
    allow_on_error: bool,
    cache: Option<Cache>,
    client: HttpsClient,
}

/// What a 2xx answer said: headers to copy and the caller it named.
#[derive(Debug, Clone, Default)]
pub struct Admitted {
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub key_id: Option<String>,
    pub app: Option<String>,
}

/// Why a request was not admitted.
pub enum Refused {
    /// The auth service's own answer (status and small body), passed as is.
    Answer(Box<Response<Body>>),
    /// A refusal written in the API's error style.
    Reject(Reject),
}

/// The request as the auth service is told of it.
pub struct Subject<'a> {
    pub method: &'a Method,
    /// Canonical path.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub host: Option<&'a HeaderValue>,
    pub client_ip: IpAddr,
    pub headers: &'a HeaderMap,
}

impl ExternalAuth {
    /// Compiles the raw settings; errors are `(field, message)`.
    pub fn new(
        raw: &RawExternalAuth,
        base: &Path,
    ) -> Result<ExternalAuth, Vec<(&'static str, String)>> {
        let mut e = vec![];
        let url = match check_url(&raw.url) {
            Ok(u) => Some(u),
            Err(m) => {
                e.push(("url", m));
                None
            }
        };
        let timeout = raw.timeout.unwrap_or(DEFAULT_TIMEOUT);
        if timeout < Duration::from_millis(1) {
            e.push(("timeout", "timeout must be at least 1ms".to_string()));
        }
        if raw.cache_ttl.is_some_and(|t| t < Duration::from_millis(1)) {
            e.push((
                "cache_ttl",
                "cache_ttl must be at least 1ms (omit it for no cache)".to_string(),
            ));
        }
        let allow_on_error = match raw.on_error.as_deref() {
            None | Some("deny") => false,
            Some("allow") => true,
            Some(o) => {
                e.push((
                    "on_error",
                    format!("on_error {o:?} is not one of deny, allow"),
                ));
                false
            }
        };
        let request_headers = names("request_headers", &raw.request_headers, &mut e, |h| {
            is_sent_by_keygate(h) || is_framing(h)
        });
        let response_headers = names("response_headers", &raw.response_headers, &mut e, |h| {
            is_framing(h) || is_sent_by_keygate(h) || is_identity(h)
        });
        let one = |field: &'static str, v: &Option<String>, e: &mut Vec<_>| {
            let v = v.as_deref()?;
            match HeaderName::from_bytes(v.as_bytes()) {
                Ok(h) => Some(h),
                Err(_) => {
                    e.push((field, format!("{field} {v:?} is not a header name")));
                    None
                }
            }
        };
        let key_id_header = one("key_id_header", &raw.key_id_header, &mut e);
        let app_header = one("app_header", &raw.app_header, &mut e);
        let ca_file = raw.ca_file.as_deref().map(|f| base.join(f));
        let client = match client(ca_file.as_deref()) {
            Ok(c) => Some(c),
            Err(m) => {
                e.push(("ca_file", format!("ca_file: {m}")));
                None
            }
        };
        let (Some(url), Some(client), true) = (url, client, e.is_empty()) else {
            return Err(e);
        };
        Ok(ExternalAuth {
            url,
            timeout,
            request_headers,
            response_headers,
            key_id_header,
            app_header,
            allow_on_error,
            cache: raw.cache_ttl.map(Cache::new),
            client,
        })
    }

    /// Asks the auth service (or the cache) about `s`. Boxed: the client's
    /// future is deep, and the request pipeline's type must stay provable `Send`.
    pub fn check<'a>(
        &'a self,
        s: &'a Subject<'a>,
    ) -> Pin<Box<dyn Future<Output = Result<Admitted, Refused>> + Send + 'a>> {
        Box::pin(self.decide(s))
    }

    async fn decide(&self, s: &Subject<'_>) -> Result<Admitted, Refused> {
        let sent = self.headers_sent(s);
        let cache_key = self.cache.as_ref().map(|_| cache_key(&sent));
        if let (Some(c), Some(k)) = (&self.cache, &cache_key) {
            if let Some(a) = c.get(k, Instant::now()) {
                return Ok(a);
            }
        }
        let asked = tokio::time::timeout(self.timeout, self.ask(sent)).await;
        let (status, headers, body) = match asked {
            Ok(Ok(answer)) => answer,
            Ok(Err(m)) => return self.on_error(m),
            Err(_) => return self.on_error(format!("no answer within {:?}", self.timeout)),
        };
        if status.is_success() {
            let admitted = self.admitted(&headers);
            if let (Some(c), Some(k)) = (&self.cache, cache_key) {
                c.put(k, admitted.clone(), Instant::now());
            }
            return Ok(admitted);
        }
        Err(refusal(status, &headers, body))
    }

    fn on_error(&self, why: String) -> Result<Admitted, Refused> {
        if self.allow_on_error {
            tracing::warn!(error = %why, "external authorization unavailable; admitted (on_error = \"allow\")");
            return Ok(Admitted::default());
        }
        let inner = Reject::UpstreamUnavailable(format!("external authorization: {why}"));
        let refusal = Refusal {
            status: Some(StatusCode::SERVICE_UNAVAILABLE),
            message: Some("external authorization service unavailable".into()),
        };
        tracing::warn!(error = %why, "external authorization unavailable");
        Err(Refused::Reject(refusal.apply(inner)))
    }

    fn headers_sent(&self, s: &Subject<'_>) -> HeaderMap {
        let mut h = HeaderMap::new();
        for name in &self.request_headers {
            for v in s.headers.get_all(name) {
                h.append(name.clone(), v.clone());
            }
        }
        h.insert(X_FORWARDED_METHOD, value(s.method.as_str()));
        let uri = match s.query {
            Some(q) => format!("{}?{q}", s.path),
            None => s.path.to_string(),
        };
        h.insert(X_FORWARDED_URI, value(&uri));
        if let Some(host) = s.host {
            h.insert(X_FORWARDED_HOST, host.clone());
        }
        let ip = value(&s.client_ip.to_string());
        h.insert(X_FORWARDED_FOR, ip.clone());
        h.insert(X_REAL_IP, ip);
        h
    }

    async fn ask(&self, sent: HeaderMap) -> Result<(StatusCode, HeaderMap, Bytes), String> {
        let mut req = Request::get(self.url.clone())
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        *req.headers_mut() = sent;
        let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        // Read (and so free the pooled connection) up to a bound; a longer body
        // is not passed on.
        let body = Limited::new(body, MAX_PASSED_BODY)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Ok((parts.status, parts.headers, body))
    }

    fn admitted(&self, h: &HeaderMap) -> Admitted {
        let mut headers = vec![];
        for name in &self.response_headers {
            for v in h.get_all(name) {
                headers.push((name.clone(), v.clone()));
            }
        }
        let text = |n: &Option<HeaderName>| {
            let v = h.get(n.as_ref()?)?.to_str().ok()?.trim();
            (!v.is_empty()).then(|| v.to_string())
        };
        Admitted {
            headers,
            key_id: text(&self.key_id_header),
            app: text(&self.app_header),
        }
    }

    /// The configured answer-header names: a client's own copies of them are
    /// dropped before the auth service's are added.
    pub fn copied_headers(&self) -> &[HeaderName] {
        &self.response_headers
    }
}

impl Admitted {
    /// Replaces the client's copies of the copied headers with the answer's.
    pub fn apply(&self, names: &[HeaderName], h: &mut HeaderMap) {
        for n in names {
            h.remove(n);
        }
        for (k, v) in &self.headers {
            h.append(k.clone(), v.clone());
        }
    }
}

fn refusal(status: StatusCode, headers: &HeaderMap, body: Bytes) -> Refused {
    if !body.is_empty() && body.len() < MAX_PASSED_BODY {
        let mut r = Response::new(full(body));
        *r.status_mut() = status;
        if let Some(ct) = headers.get(CONTENT_TYPE) {
            r.headers_mut().insert(CONTENT_TYPE, ct.clone());
        }
        if let Some(w) = headers.get(http::header::WWW_AUTHENTICATE) {
            r.headers_mut()
                .insert(http::header::WWW_AUTHENTICATE, w.clone());
        }
        return Refused::Answer(Box::new(r));
    }
    let inner = Reject::Auth(super::AuthError::InvalidToken(
        "refused by the external authorization service".into(),
    ));
    let r = Refusal {
        status: Some(status),
        message: None,
    };
    Refused::Reject(r.apply(inner))
}

fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

fn names(
    field: &'static str,
    list: &[String],
    e: &mut Vec<(&'static str, String)>,
    refused: impl Fn(&HeaderName) -> bool,
) -> Vec<HeaderName> {
    let mut out = vec![];
    for n in list {
        match HeaderName::from_bytes(n.as_bytes()) {
            Err(_) => e.push((field, format!("{field}: {n:?} is not a header name"))),
            Ok(h) if refused(&h) => e.push((
                field,
                format!("{field}: {n:?} is a header keygate sets or frames itself"),
            )),
            Ok(h) => out.push(h),
        }
    }
    out
}

fn is_framing(h: &HeaderName) -> bool {
    matches!(
        h.as_str(),
        "host"
            | "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "upgrade"
            | "te"
            | "trailer"
            | "proxy-connection"
    )
}

fn is_sent_by_keygate(h: &HeaderName) -> bool {
    let n = h.as_str();
    n.starts_with("x-forwarded-") || n == "x-real-ip" || n == "x-request-id"
}

fn is_identity(h: &HeaderName) -> bool {
    h.as_str().starts_with("x-keygate-")
}

/// `url`: an absolute `http` or `https` URL.
fn check_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|_| format!("url {url:?} is not a URL"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(h)) if !h.is_empty() => Ok(uri),
        _ => Err(format!("url {url:?} must be an http:// or https:// URL")),
    }
}

fn client(ca_file: Option<&Path>) -> Result<HttpsClient, String> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let tls = crate::upstream::tls::client_tls(ca_file)?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// Every sent header, length-prefixed: equal keys mean equal questions.
fn cache_key(sent: &HeaderMap) -> Vec<u8> {
    let mut k = vec![];
    for (n, v) in sent {
        for part in [n.as_str().as_bytes(), v.as_bytes()] {
            k.extend_from_slice(&(part.len() as u32).to_be_bytes());
            k.extend_from_slice(part);
        }
    }
    k
}

/// Admissions by question, each kept for `ttl`; at most `MAX_CACHED`.
struct Cache {
    ttl: Duration,
    map: Mutex<HashMap<Vec<u8>, (Instant, Admitted)>>,
}

impl Cache {
    fn new(ttl: Duration) -> Cache {
        Cache {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, k: &[u8], now: Instant) -> Option<Admitted> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(k) {
            Some((until, a)) if *until > now => Some(a.clone()),
            _ => None,
        }
    }

    fn put(&self, k: Vec<u8>, a: Admitted, now: Instant) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_CACHED {
            map.retain(|_, (until, _)| *until > now);
            if map.len() >= MAX_CACHED {
                map.clear();
            }
        }
        map.insert(k, (now + self.ttl, a));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(toml_text: &str) -> RawExternalAuth {
        toml::from_str(toml_text).expect("raw")
    }

    #[test]
    fn settings_are_checked() {
        let ok = ExternalAuth::new(&raw("url = \"http://127.0.0.1:9/auth\""), Path::new("."));
        assert!(ok.is_ok());
        let bad = ExternalAuth::new(&raw(
            "url = \"ftp://x\"\ntimeout = \"0ms\"\non_error = \"maybe\"\nrequest_headers = [\"X-Forwarded-Uri\"]\nresponse_headers = [\"X-Keygate-Key-Id\", \"bad name\"]",
        ), Path::new("."));
        let fields: Vec<&str> = match &bad {
            Err(e) => e.iter().map(|(f, _)| *f).collect(),
            Ok(_) => vec![],
        };
        assert_eq!(
            fields,
            [
                "url",
                "timeout",
                "on_error",
                "request_headers",
                "response_headers",
                "response_headers"
            ]
        );
    }

    #[test]
    fn cache_keeps_admissions_for_their_ttl_and_stays_bounded() {
        let c = Cache::new(Duration::from_secs(1));
        let t = Instant::now();
        let a = Admitted {
            key_id: Some("alice".into()),
            ..Admitted::default()
        };
        c.put(b"k".to_vec(), a, t);
        assert_eq!(
            c.get(b"k", t + Duration::from_millis(500))
                .and_then(|a| a.key_id),
            Some("alice".to_string())
        );
        assert!(c.get(b"k", t + Duration::from_secs(2)).is_none());
        for i in 0..(MAX_CACHED + 5) {
            c.put(i.to_be_bytes().to_vec(), Admitted::default(), t);
        }
        assert!(c.map.lock().map(|m| m.len()).unwrap_or(0) <= MAX_CACHED);
    }
}
