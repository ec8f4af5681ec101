//! The front-end protocols a service takes (`protocols`, `https_redirect`): the
//! documents' 请求协议 (HTTP, HTTPS or both) and forced HTTPS.

use crate::body::{empty, Body};
use http::{header, HeaderValue, Method, Response, StatusCode, Uri};

/// What a service takes on which listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrontProtocols {
    pub http: bool,
    pub https: bool,
    /// `https_redirect`: plain requests are redirected to this TLS port.
    pub redirect_port: Option<u16>,
}

impl Default for FrontProtocols {
    fn default() -> Self {
        FrontProtocols {
            http: true,
            https: true,
            redirect_port: None,
        }
    }
}

/// The outcome of [`FrontProtocols::check`].
pub enum Front {
    Pass,
    Redirect(Response<Body>),
    /// The request came on a protocol the service does not take.
    Refuse(&'static str),
}

impl FrontProtocols {
    /// `tls_port`: the port of the first `[server.tls] listen` address, if any.
    pub fn compile(
        protocols: &[String],
        https_redirect: bool,
        tls_port: Option<u16>,
    ) -> Result<FrontProtocols, String> {
        let mut out = FrontProtocols {
            http: false,
            https: false,
            redirect_port: None,
        };
        for p in protocols {
            match p.as_str() {
                "http" => out.http = true,
                "https" => out.https = true,
                other => return Err(format!("protocol {other:?} is not http or https")),
            }
        }
        if !out.http && !out.https {
            return Err("protocols may not be empty".into());
        }
        if https_redirect {
            if !out.https {
                return Err("https_redirect needs \"https\" in protocols".into());
            }
            out.redirect_port = Some(tls_port.unwrap_or(443));
        }
        Ok(out)
    }

    #[inline]
    pub fn check(&self, tls: bool, method: &Method, host: Option<&str>, uri: &Uri) -> Front {
        if tls {
            return if self.https {
                Front::Pass
            } else {
                Front::Refuse("this service takes plain HTTP only")
            };
        }
        if let Some(port) = self.redirect_port {
            return match redirect(port, method, host, uri) {
                Some(r) => Front::Redirect(r),
                None => Front::Refuse("this service takes HTTPS only"),
            };
        }
        if self.http {
            Front::Pass
        } else {
            Front::Refuse("this service takes HTTPS only")
        }
    }
}

/// 301 for GET and HEAD, 308 (method and body kept) otherwise, to the same URL
/// over https on `port`.
fn redirect(port: u16, method: &Method, host: Option<&str>, uri: &Uri) -> Option<Response<Body>> {
    let authority: http::uri::Authority = host?.parse().ok()?;
    let name = authority.host();
    let mut url = String::with_capacity(64);
    url.push_str("https://");
    url.push_str(name);
    if port != 443 {
        url.push(':');
        url.push_str(&port.to_string());
    }
    url.push_str(uri.path_and_query().map_or("/", |pq| pq.as_str()));
    let location = HeaderValue::from_str(&url).ok()?;
    let mut r = Response::new(empty());
    *r.status_mut() = if method == Method::GET || method == Method::HEAD {
        StatusCode::MOVED_PERMANENTLY
    } else {
        StatusCode::PERMANENT_REDIRECT
    };
    r.headers_mut().insert(header::LOCATION, location);
    Some(r)
}

/// The routing prefix of a service with `path_mapping` (the documents' custom
/// domain path mapping): `"/"` → none, `"/name"` → `name`. The mapping is a
/// custom domain's, so the service needs `hosts` and an `environment`.
pub fn mapped_prefix(
    mapping: &str,
    hosts: &[String],
    environment: &Option<String>,
) -> Result<Option<String>, String> {
    if hosts.is_empty() {
        return Err("path_mapping needs hosts (it maps a custom domain's path)".into());
    }
    if environment.is_none() {
        return Err("path_mapping needs an environment to map to".into());
    }
    match mapping.strip_prefix('/') {
        Some("") => Ok(None),
        Some(name)
            if name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Ok(Some(name.to_owned()))
        }
        _ => Err(format!(
            "path_mapping {mapping:?} must be \"/\" or \"/name\" (letters, digits, - or _)"
        )),
    }
}
