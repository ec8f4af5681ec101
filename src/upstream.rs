//! Upstreams: a pooled keep-alive client over one or several targets, and the
//! header hygiene of forwarding (hop-by-hop removal, X-Forwarded-*).

use crate::balance::Balancer;
use crate::body::Body;
use crate::reject::Reject;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::cell::Cell;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Everything that identifies an upstream's pool; equal specs share one pool
/// across reloads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamSpec {
    pub targets: Vec<(String, u32)>,
    pub max_fails: u32,
    pub fail_timeout: Duration,
    pub connect_timeout: Duration,
    pub ca_file: Option<String>,
}

impl UpstreamSpec {
    pub fn identity(&self) -> String {
        format!("{self:?}")
    }
}

pub struct Target {
    pub scheme: Scheme,
    pub authority: Authority,
    pub host: HeaderValue,
    /// Path of the target URL without its trailing `/` (`http://h/base` → `/base`).
    pub base_path: String,
}

type Pool = Client<HttpsConnector<HttpConnector>, Body>;

pub struct Upstream {
    balancer: Balancer<Target>,
    connector: HttpsConnector<HttpConnector>,
    /// One connection pool per worker (`[server] runtime = "per-core"`), made on
    /// first use: hyper-util's pool sits behind one lock, and a connection
    /// driven by another thread's runtime costs a cross-thread wake-up per
    /// request. With the shared runtime there is one.
    pools: Box<[OnceLock<Pool>]>,
}

static POOLS_PER_UPSTREAM: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// How many per-worker pools each upstream made from now on holds.
pub fn set_pools_per_upstream(n: usize) {
    POOLS_PER_UPSTREAM.store(n.max(1), Ordering::Relaxed);
}

/// Mark the calling thread as worker `i`: its requests use pool `i`.
pub fn set_current_worker(i: usize) {
    WORKER.with(|w| w.set(i));
}

fn new_pool(connector: HttpsConnector<HttpConnector>) -> Pool {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(1024)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .set_host(false)
        .build(connector)
}

impl Upstream {
    pub fn new(spec: &UpstreamSpec, base: &Path) -> Result<Upstream, String> {
        let mut targets = Vec::with_capacity(spec.targets.len());
        for (url, weight) in &spec.targets {
            targets.push((parse_target(url)?, (*weight).max(1)));
        }
        if targets.is_empty() {
            return Err("no target URL".into());
        }
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(spec.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let tls = client_tls(spec.ca_file.as_deref().map(|f| base.join(f)).as_deref())?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let n = POOLS_PER_UPSTREAM.load(Ordering::Relaxed);
        Ok(Upstream {
            balancer: Balancer::new(targets, spec.max_fails, spec.fail_timeout),
            connector: https,
            pools: (0..n).map(|_| OnceLock::new()).collect(),
        })
    }

    fn pool(&self) -> &Pool {
        let i = WORKER.with(Cell::get) % self.pools.len();
        self.pools[i].get_or_init(|| new_pool(self.connector.clone()))
    }

    /// Send `req`, whose URI holds only the path and query, to the next target.
    pub async fn send(
        &self,
        mut req: Request<Body>,
        timeout: Duration,
        preserve_host: bool,
    ) -> Result<Response<Incoming>, Reject> {
        let now = Instant::now();
        let (idx, target) = self
            .balancer
            .pick(now)
            .ok_or_else(|| Reject::UpstreamUnavailable("no target available".into()))?;
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let full = if target.base_path.is_empty() {
            PathAndQuery::try_from(pq)
        } else {
            PathAndQuery::try_from(format!("{}{}", target.base_path, pq))
        }
        .map_err(|_| Reject::BadRequest("invalid forwarded path".into()))?;
        *req.uri_mut() = Uri::builder()
            .scheme(target.scheme.clone())
            .authority(target.authority.clone())
            .path_and_query(full)
            .build()
            .map_err(|e| Reject::Internal(format!("upstream uri: {e}")))?;
        if !preserve_host || !req.headers().contains_key(header::HOST) {
            req.headers_mut().insert(header::HOST, target.host.clone());
        }
        match tokio::time::timeout(timeout, self.pool().request(req)).await {
            Err(_) => {
                self.balancer.report(idx, false, Instant::now());
                Err(Reject::UpstreamTimeout)
            }
            Ok(Err(e)) => {
                if let Some(limit) = body_limit_error(&e) {
                    return Err(Reject::BodyTooLarge(limit));
                }
                self.balancer.report(idx, false, Instant::now());
                if e.is_connect() {
                    Err(Reject::UpstreamUnavailable(
                        "connection to back end failed".into(),
                    ))
                } else {
                    Err(Reject::UpstreamUnavailable(
                        "back end closed the connection".into(),
                    ))
                }
            }
            Ok(Ok(resp)) => {
                self.balancer.report(idx, true, Instant::now());
                Ok(resp)
            }
        }
    }
}

/// Marker error a size-limited request body yields when the client sends too much.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds {0} bytes")]
pub struct BodyLimitExceeded(pub u64);

fn body_limit_error(e: &(dyn std::error::Error + 'static)) -> Option<u64> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(b) = err.downcast_ref::<BodyLimitExceeded>() {
            return Some(b.0);
        }
        cur = err.source();
    }
    None
}

fn parse_target(url: &str) -> Result<Target, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("bad back-end URL {url:?}: {e}"))?;
    let scheme = uri
        .scheme()
        .cloned()
        .ok_or_else(|| format!("back-end URL {url:?} needs http:// or https://"))?;
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        return Err(format!(
            "back-end URL {url:?}: only http and https are supported"
        ));
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("back-end URL {url:?} has no host"))?;
    if uri.query().is_some() {
        return Err(format!(
            "back-end URL {url:?} may not carry a query; use const_query"
        ));
    }
    let host = HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?;
    let base_path = uri.path().trim_end_matches('/').to_string();
    Ok(Target {
        scheme,
        authority,
        host,
        base_path,
    })
}

fn client_tls(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
            for c in rustls_pemfile::certs(&mut pem.as_slice()) {
                let c = c.map_err(|e| format!("bad CA PEM {}: {e}", path.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("bad CA {}: {e}", path.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Headers that describe one hop and are never forwarded (RFC 9110 §7.6.1),
/// plus h2c upgrade material.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("http2-settings"),
];

/// Remove hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for h in &HOP_BY_HOP {
        headers.remove(h);
    }
}

/// Is this an HTTP/1.1 upgrade request (websocket)? h2c upgrades are not passed on.
pub fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let conn_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        });
    let up = headers.get(header::UPGRADE)?;
    if !conn_upgrade || up.as_bytes().eq_ignore_ascii_case(b"h2c") {
        return None;
    }
    Some(up.clone())
}
