//! The immutable snapshot compiled from one config file. Request handling reads
//! it lock-free; a reload builds a new one and swaps it in whole.

use crate::auth::Keys;
use crate::metrics::RouteMetrics;
use crate::path::PathSettings;
use crate::policy::cors::CorsPolicy;
use crate::policy::ip::{IpPolicy, TrustedProxies};
use crate::policy::limits::RouteLimits;
use crate::reject::ErrorStyle;
use crate::reserved::ReservedHeaders;
use crate::route::Router;
use crate::tls::CertStore;
use crate::upstream::Upstream;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::auth::dispatch::{AuthMode, AuthSettings};

pub struct Gateway {
    pub version: ConfigVersion,
    pub router: Router,
    pub apis: Vec<Api>,
    pub keys: Keys,
    pub auth: AuthSettings,
    pub trusted: TrustedProxies,
    pub certs: CertStore,
    pub log: LogSettings,
    /// `[tracing]`: the span exporter, `None` when spans are not exported.
    pub tracing: Option<Arc<crate::trace::otlp::Tracer>>,
    /// See `[server] body_read_timeout`.
    pub body_read_timeout: Duration,
    /// How request paths are made canonical (`[server] normalize_path` ...).
    pub path: PathSettings,
    /// Request headers that are ours in any spelling, stripped before forwarding.
    pub reserved: ReservedHeaders,
    /// Names of what this snapshot holds, to log what a reload changed.
    pub inventory: Inventory,
    /// What the admin views (`/-/routes`, `/-/keys` ...) show of this snapshot.
    pub views: Arc<crate::admin::views::Views>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("version", &self.version)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct ConfigVersion {
    /// SHA-256 of the file's bytes, hex.
    pub hash: String,
    pub loaded_at: SystemTime,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub access: bool,
}

/// What a snapshot holds, by kind: item name → fingerprint of its settings
/// (a hash of the item's parsed form), so that a reload can log what was
/// added, removed and changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Inventory {
    pub routes: BTreeMap<String, u64>,
    pub keys: BTreeMap<String, u64>,
    pub plugins: BTreeMap<String, u64>,
    pub plans: BTreeMap<String, u64>,
}

/// A stable fingerprint of a config item's settings (not a secret: keys are
/// fingerprinted over a hash of their secret, and the value is never shown).
pub fn fingerprint(item: &impl std::fmt::Debug) -> u64 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(format!("{item:?}").as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

impl Inventory {
    /// Human summary of what changed from `old` to `self`.
    pub fn diff(&self, old: &Inventory) -> Vec<String> {
        let mut out = vec![];
        for (what, new, old) in [
            ("route", &self.routes, &old.routes),
            ("key", &self.keys, &old.keys),
            ("plugin", &self.plugins, &old.plugins),
            ("usage plan", &self.plans, &old.plans),
        ] {
            let added: Vec<&str> = new
                .keys()
                .filter(|k| !old.contains_key(*k))
                .map(|k| k.as_str())
                .collect();
            let removed: Vec<&str> = old
                .keys()
                .filter(|k| !new.contains_key(*k))
                .map(|k| k.as_str())
                .collect();
            let changed: Vec<&str> = new
                .iter()
                .filter(|(k, f)| old.get(*k).is_some_and(|o| o != *f))
                .map(|(k, _)| k.as_str())
                .collect();
            for (how, names) in [("added", added), ("removed", removed), ("changed", changed)] {
                if !names.is_empty() {
                    out.push(format!("{what}s {how}: {}", names.join(", ")));
                }
            }
        }
        out
    }
}

pub struct Api {
    pub service: Arc<str>,
    pub name: Arc<str>,
    /// `service/api`, for logs and metrics.
    pub label: Arc<str>,
    /// This API's metric handles, resolved once (they outlive reloads by label).
    pub metrics: Arc<RouteMetrics>,
    pub auth: AuthMode,
    pub style: ErrorStyle,
    pub debug_signatures: bool,
    pub max_body: u64,
    pub cors: Option<Arc<CorsPolicy>>,
    pub ip: Vec<(Arc<str>, Arc<IpPolicy>)>,
    /// key id -> usage plan name, for the plans bound to this API's service.
    /// `None` when the service binds no plan (any valid key passes).
    pub plans: Option<Arc<HashMap<String, Arc<str>>>>,
    pub limits: RouteLimits,
    /// The service's front-end protocols (`protocols`, `https_redirect`).
    pub front: crate::route::front::FrontProtocols,
    /// Declared front-end parameters and their back-end mapping.
    pub inputs: crate::policy::inputs::Inputs,
    /// The `concurrency_control` plugin, when one applies.
    pub concurrency: Option<Arc<crate::policy::concurrency::ConcurrencyPolicy>>,
    pub backend: Backend,
    /// `allow_*` / `deny_*` caller lists, checked after authentication.
    pub acl: Option<Arc<crate::policy::acl::CallerAcl>>,
    /// `[services.apis.request_headers]`, applied to the forwarded request.
    pub request_headers: Option<Arc<crate::policy::headers::HeaderRules>>,
    /// `[services.apis.response_headers]`, applied to the back end's answer.
    pub response_headers: Option<Arc<crate::policy::headers::HeaderRules>>,
    /// Configured `rejected_code` / `rejected_msg` of this API's refusals.
    pub refusals: Refusals,
}

/// Custom refusals: the API's for authentication (and access lists), its
/// `ip_control` plugins' by plugin name, its traffic-control plugin's.
#[derive(Debug, Default)]
pub struct Refusals {
    pub auth: Option<crate::reject::Refusal>,
    pub plugins: HashMap<Arc<str>, crate::reject::Refusal>,
    pub traffic: Option<crate::reject::Refusal>,
}

pub enum Backend {
    Http(HttpBackend),
    Mock(MockBackend),
}

pub struct HttpBackend {
    pub upstream: Arc<Upstream>,
    /// Back-end path template (may hold `{param}`); empty = front path as is.
    pub path: String,
    pub method: Option<Method>,
    pub timeout: Duration,
    pub const_headers: Vec<(HeaderName, HeaderValue)>,
    /// Pre-encoded `a=1&b=2`, appended to the forwarded query.
    pub const_query: String,
    pub preserve_host: bool,
    /// `type = "websocket"`: only GET (the upgrade) is taken.
    pub websocket: bool,
    /// `retries`, `retry_on`, `try_timeout`.
    pub retry: crate::upstream::RetryPolicy,
}

pub struct MockBackend {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}
