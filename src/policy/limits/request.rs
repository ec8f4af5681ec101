//! What the handler knows of the request when it checks the limits.

use crate::policy::expr;
use http::{HeaderMap, Method};
use std::borrow::Cow;
use std::net::IpAddr;

/// The request as the limits see it (after routing and authentication).
#[derive(Clone, Copy)]
pub struct LimitRequest<'a> {
    /// Authenticated key id (usage-plan QPS and quota are per key).
    pub key_id: Option<&'a str>,
    /// The key's app (traffic_control's app dimension).
    pub app: Option<&'a str>,
    /// Name of the usage plan the key is under on this service.
    pub plan: Option<&'a str>,
    pub client_ip: IpAddr,
    pub method: &'a Method,
    /// Path after environment-prefix removal.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// Raw query string (without `?`).
    pub query: Option<&'a str>,
}

impl expr::Context for LimitRequest<'_> {
    fn header(&self, name: &http::HeaderName) -> Option<Cow<'_, str>> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
    }
    fn query(&self, name: &str) -> Option<Cow<'_, str>> {
        let q = self.query?;
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
    fn path(&self) -> &str {
        self.path
    }
    fn method(&self) -> &str {
        self.method.as_str()
    }
    fn client_ip(&self) -> IpAddr {
        self.client_ip
    }
}
