//! `[services.apis.backend]`: a mock answer, or an HTTP / websocket upstream
//! with its targets, timeouts, retries, passive and active health checks.

use crate::config::bounds::MIN_DURATION;
use crate::config::error::{err, ConfigError};
use crate::config::raw::{AuthKind, BackendKind, RawApi, RawBackend};
use crate::config::source::expand_env;
use crate::gateway::{Backend, HttpBackend, MockBackend};
use crate::health::HealthSpec;
use crate::state::State;
use crate::upstream::{compile_fail_on, RetryPolicy, UpstreamSpec};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::collections::BTreeMap;
use std::time::Duration;

/// Longest back-end `timeout` of an HTTP API (SPEC §1), and of a websocket one.
const MAX_HTTP_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_WEBSOCKET_TIMEOUT: Duration = Duration::from_secs(1800);

pub(super) fn compile(
    state: &State,
    api: &RawApi,
    auth: Option<AuthKind>,
    at: &str,
    label: &str,
    e: &mut Vec<ConfigError>,
) -> Option<Backend> {
    let b = &api.backend;
    let at = format!("{at} / backend");
    match b.kind.check(&at, "type", e)? {
        BackendKind::Mock => mock(b, &at, e),
        BackendKind::Http => http(state, api, auth, false, &at, label, e),
        BackendKind::Websocket => http(state, api, auth, true, &at, label, e),
    }
}

fn mock(b: &RawBackend, at: &str, e: &mut Vec<ConfigError>) -> Option<Backend> {
    let status = b.status.unwrap_or(200);
    let status = match StatusCode::from_u16(status) {
        Ok(s) if (200..600).contains(&status) => s,
        _ => {
            e.push(err(
                at,
                format!("status {status} is not an HTTP status 200-599"),
            ));
            return None;
        }
    };
    let headers = header_map(&b.headers, at, e);
    Some(Backend::Mock(MockBackend {
        status,
        headers,
        body: Bytes::from(b.body.clone().unwrap_or_default()),
    }))
}

/// The targets with their weights: exactly one of `url`, `urls`, `targets`;
/// a target of weight 0 is disabled (kept in the file, sent nothing). URLs are
/// `${ENV}` expanded; `ws://` / `wss://` (websocket only) become `http(s)://`.
fn targets(
    b: &RawBackend,
    websocket: bool,
    at: &str,
    e: &mut Vec<ConfigError>,
) -> Option<Vec<(String, u32)>> {
    let sources = b.url.is_some() as u8 + !b.urls.is_empty() as u8 + !b.targets.is_empty() as u8;
    if sources != 1 {
        e.push(err(at, "exactly one of url, urls and targets is needed"));
        return None;
    }
    let mut targets: Vec<(String, u32)> = vec![];
    if let Some(u) = &b.url {
        targets.push((u.clone(), 1));
    }
    targets.extend(b.urls.iter().map(|u| (u.clone(), 1)));
    for t in &b.targets {
        if t.weight > 100 {
            e.push(err(at, format!("target {}: weight must be 0-100", t.url)));
        }
        if t.weight > 0 {
            targets.push((t.url.clone(), t.weight));
        }
    }
    if !b.targets.is_empty() && targets.is_empty() {
        e.push(err(at, "every target has weight 0 (disabled)"));
        return None;
    }
    let mut expanded = vec![];
    for (u, w) in targets {
        match expand_env(&u).and_then(|u| ws_url(u, websocket)) {
            Ok(u) => expanded.push((u, w)),
            Err(m) => e.push(err(at, m)),
        }
    }
    Some(expanded)
}

fn http(
    state: &State,
    api: &RawApi,
    auth: Option<AuthKind>,
    websocket: bool,
    at: &str,
    label: &str,
    e: &mut Vec<ConfigError>,
) -> Option<Backend> {
    let b = &api.backend;
    let targets = targets(b, websocket, at, e)?;
    if websocket {
        websocket_methods(api, at, e);
    }
    let timeout = timeout(b, auth, websocket, at, e);
    path(api, at, e);
    let method = b
        .method
        .as_ref()
        .and_then(|m| m.check(at, "method", e))
        .map(|m| m.method());
    let (const_headers, const_query) = constants(b, at, e);
    let retry = retry_policy(b, timeout, at, e);
    let (fail_on_connect, fail_on_5xx) = fail_on(b, at, e);
    let health = b.health_check.as_ref().and_then(|h| {
        HealthSpec::compile(h)
            .map_err(|m| e.extend(m.into_iter().map(|m| err(at, m))))
            .ok()
    });
    let spec = UpstreamSpec {
        targets,
        max_fails: b.max_fails,
        fail_timeout: b.fail_timeout,
        connect_timeout: b
            .connect_timeout
            .unwrap_or(Duration::from_secs(5))
            .min(timeout),
        ca_file: b.ca_file.clone(),
        http2: b.http2,
        fail_on_connect,
        fail_on_5xx,
        health,
    };
    if websocket && b.http2 {
        e.push(err(
            at,
            "http2 = true cannot carry websocket upgrades; use HTTP/1.1 for this back end",
        ));
    }
    let upstream = match state.upstream(&spec, label) {
        Ok(u) => u,
        Err(m) => {
            e.push(err(at, m));
            return None;
        }
    };
    Some(Backend::Http(HttpBackend {
        upstream,
        path: b.path.clone(),
        method,
        timeout,
        const_headers,
        const_query,
        preserve_host: b.preserve_host,
        websocket,
        retry,
    }))
}

/// A websocket upgrade is a GET.
fn websocket_methods(api: &RawApi, at: &str, e: &mut Vec<ConfigError>) {
    for m in &api.methods {
        // Unknown methods are the API's problem, reported there.
        if m.get().is_some() && *m != "GET" && *m != "ANY" {
            e.push(err(
                at,
                format!("type = \"websocket\" takes GET only, not {m}"),
            ));
        }
    }
}

/// The API's back-end timeout: 1 ms to 30 s (30 min for websocket); by
/// default 15 s, 3 s for `openapi` (the platform's longest), the maximum for
/// websocket.
fn timeout(
    b: &RawBackend,
    auth: Option<AuthKind>,
    websocket: bool,
    at: &str,
    e: &mut Vec<ConfigError>,
) -> Duration {
    let max = if websocket {
        MAX_WEBSOCKET_TIMEOUT
    } else {
        MAX_HTTP_TIMEOUT
    };
    let default = match auth {
        _ if websocket => max,
        Some(AuthKind::Openapi) => Duration::from_secs(3),
        _ => Duration::from_secs(15),
    };
    let timeout = b.timeout.unwrap_or(default);
    if timeout < MIN_DURATION || timeout > max {
        e.push(err(
            at,
            format!(
                "timeout must be between 1ms and {}",
                humantime::format_duration(max)
            ),
        ));
    }
    timeout
}

/// The back-end path: absolute, with only `{param}`s the front path captures
/// or the API declares.
fn path(api: &RawApi, at: &str, e: &mut Vec<ConfigError>) {
    let b = &api.backend;
    if !b.path.is_empty() && !b.path.starts_with('/') {
        e.push(err(at, "path must start with /"));
    } else if let Err(m) = crate::route::check_backend_path_with(
        &api.path,
        &b.path,
        &crate::policy::inputs::Inputs::backend_path_names(&api.params),
    ) {
        e.push(err(at, m));
    }
}

/// Constant headers and query (`const_headers`, `const_query`) added to every
/// forwarded request. Constants naming `${param.X}` are filled per request
/// (`policy::inputs`).
fn constants(
    b: &RawBackend,
    at: &str,
    e: &mut Vec<ConfigError>,
) -> (Vec<(HeaderName, HeaderValue)>, String) {
    let fixed = |m: &BTreeMap<String, String>| {
        m.iter()
            .filter(|(_, v)| !crate::policy::inputs::is_param_ref(v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    let headers = header_map(&fixed(&b.const_headers), at, e)
        .into_iter()
        .filter_map(|(k, v)| Some((k?, v)))
        .collect();
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fixed(&b.const_query).iter())
        .finish();
    (headers, query)
}

/// `retries`, `retry_on`, `try_timeout`. The names of `retry_on` are checked
/// here; the policy gets only names it knows.
fn retry_policy(
    b: &RawBackend,
    timeout: Duration,
    at: &str,
    e: &mut Vec<ConfigError>,
) -> RetryPolicy {
    let retry_on = b.retry_on.as_ref().map(|list| {
        list.iter()
            .filter(|r| r.check(at, "retry_on", e).is_some())
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
    });
    RetryPolicy::compile(b.retries, retry_on.as_deref(), b.try_timeout, timeout).unwrap_or_else(
        |m| {
            e.extend(m.into_iter().map(|m| err(at, m)));
            RetryPolicy::default()
        },
    )
}

/// `fail_on`: (transport failures count, 5xx answers count).
fn fail_on(b: &RawBackend, at: &str, e: &mut Vec<ConfigError>) -> (bool, bool) {
    let Some(list) = &b.fail_on else {
        return (true, false);
    };
    let before = e.len();
    for f in list {
        f.check(at, "fail_on", e);
    }
    if e.len() > before {
        return (true, false);
    }
    let names: Vec<String> = list.iter().map(|f| f.to_string()).collect();
    compile_fail_on(Some(&names)).unwrap_or_else(|m| {
        e.push(err(at, m));
        (true, false)
    })
}

/// `ws://` / `wss://` back-end URLs (websocket APIs only) as `http://` / `https://`.
fn ws_url(u: String, websocket: bool) -> Result<String, String> {
    let lower = u.to_ascii_lowercase();
    let rest = match (lower.strip_prefix("ws://"), lower.strip_prefix("wss://")) {
        (Some(_), _) => ("http://", 5),
        (_, Some(_)) => ("https://", 6),
        _ => return Ok(u),
    };
    if !websocket {
        return Err(format!(
            "back-end URL {u:?}: ws:// and wss:// are for type = \"websocket\""
        ));
    }
    Ok(format!("{}{}", rest.0, &u[rest.1..]))
}

fn header_map(h: &BTreeMap<String, String>, at: &str, e: &mut Vec<ConfigError>) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (k, v) in h {
        match (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            (Ok(k), Ok(v)) => {
                out.insert(k, v);
            }
            _ => e.push(err(
                at,
                format!("header {k:?} is not a valid header name and value"),
            )),
        }
    }
    out
}
