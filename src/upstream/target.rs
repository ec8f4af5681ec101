//! One target of an upstream: where to connect and how requests to it are
//! addressed.

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Uri};
use std::net::{IpAddr, SocketAddr};

pub struct Target {
    pub scheme: Scheme,
    pub authority: Authority,
    pub host: HeaderValue,
    /// Path of the target URL without its trailing `/` (`http://h/base` → `/base`).
    pub base_path: String,
    /// The host without IPv6 brackets: what DNS resolves and TLS names.
    pub(crate) hostname: String,
    pub(crate) port: u16,
    /// The address, when the host is an IP literal (no resolution per connection).
    pub(crate) addr: Option<SocketAddr>,
}

impl Target {
    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }

    /// The request target for `pq`: the path alone for HTTP/1.1 (origin form),
    /// the whole URL for HTTP/2 (its `:scheme` and `:authority`).
    pub(crate) fn uri(&self, pq: PathAndQuery, http2: bool) -> Result<Uri, http::Error> {
        if !http2 {
            return Ok(Uri::from(pq));
        }
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
    }

    /// `scheme://host[:port]/base`, without user-info: how the target is named
    /// in logs, metrics and the admin views.
    pub fn display(&self) -> String {
        match self.authority.port_u16() {
            Some(p) => format!(
                "{}://{}:{p}{}",
                self.scheme,
                self.authority.host(),
                self.base_path
            ),
            None => format!(
                "{}://{}{}",
                self.scheme,
                self.authority.host(),
                self.base_path
            ),
        }
    }
}

pub fn parse_target(url: &str) -> Result<Target, String> {
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
    let hostname = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = authority
        .port_u16()
        .unwrap_or(if scheme == Scheme::HTTPS { 443 } else { 80 });
    let addr = hostname
        .parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, port));
    Ok(Target {
        scheme,
        authority,
        host,
        base_path,
        hostname,
        port,
        addr,
    })
}
