//! Prometheus metrics (SPEC §6): one [`Metrics`] per process, kept in `State`,
//! recorded once per request by the handler and encoded by the admin listener's
//! `/metrics`.
//!
//! Families (all names start with `keygate_`; counters get `_total` appended
//! by the encoder):
//!
//! | family | type | labels |
//! | --- | --- | --- |
//! | `keygate_requests_total` | counter | `route`, `code` (status sent to the client) |
//! | `keygate_valid_calls_total` | counter | `route` |
//! | `keygate_frontend_errors_total` | counter | `route`, `reason` (`auth` `ip` `limit` `route` `request` `cors` `other`) |
//! | `keygate_backend_responses_total` | counter | `route`, `code` (the back end's status, or the gateway's 502/504 when it failed) |
//! | `keygate_backend_errors_total` | counter | `route`, `class` (`4xx`, `5xx`) |
//! | `keygate_request_duration_seconds` | histogram | `route` |
//! | `keygate_upstream_duration_seconds` | histogram | `route` (back end's share: request sent → response head) |
//! | `keygate_open_connections` | gauge | – |
//! | `keygate_connections_total` | counter | – |
//! | `keygate_bytes_in_total` / `keygate_bytes_out_total` | counter | `route` |
//! | `keygate_reloads_total` | counter | `result` (`ok`, `failed`) |
//! | `keygate_config_info` | gauge (=1) | `hash` |
//! | `keygate_config_loaded_timestamp_seconds` | gauge | – |
//! | `keygate_build_info` | gauge (=1) | `version`, `commit` |
//! | `keygate_cluster_mode` | gauge (1 = active) | `mode` (`shared`, `local`, `allow`, `deny`) |
//! | `keygate_cluster_redis_errors_total` | counter | `kind` (`timeout`, `error`, `reply`) |
//! | `keygate_cluster_fallback_decisions_total` | counter | – |
//! | `keygate_upstream_retries_total` | counter | `route`, `reason` (`connect`, `5xx`, `timeout`) |
//! | `keygate_upstream_target_healthy` | gauge (1 up, 0 down) | `upstream`, `target` |
//!
//! `upstream_target_healthy` exists for the targets of upstreams with an active
//! `health_check`; `upstream` is the label of the first API that uses the pool.
//!
//! | `process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`, `process_start_time_seconds` | | – (from `/proc`, read at scrape time) |
//!
//! The `cluster_mode` and `cluster_redis_errors` series appear only with a `[cluster]` section.
//!
//! The `route` label is the API's `service/api` label from the config (a finite
//! set), or `-` for a request no API matched. Every counter whose label values
//! are known in advance is exported from the start with 0 (reloads by result,
//! and per route: valid calls, refusals by reason, back-end errors by class,
//! and the histograms); only the `code` series, whose values are open, appear
//! on first use.
//!
//! [`Metrics::encode_for`] answers in the OpenMetrics text format, or in the
//! Prometheus text format 0.0.4 when the scraper's `Accept` prefers `text/plain`.
//!
//! The hot path allocates nothing once a route has been seen: a route's handles
//! ([`RouteMetrics`]) are resolved once and cached (by name, behind a read
//! lock), and each handle is a plain atomic. The latency histogram is a
//! lock-free one of this module (the crate's own takes a mutex per sample).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

mod format;
mod kinds;
mod process;
mod route;

pub use format::{prefers_text_004, to_text_004};
pub use kinds::LatencyHistogram;
use kinds::{ConfigInfo, FnCounter};
pub use route::RouteMetrics;

/// The `Content-Type` of [`Metrics::encode`]'s output (OpenMetrics text, which
/// Prometheus scrapes natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `Content-Type` of the Prometheus text format 0.0.4 ([`to_text_004`]).
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The commit keygate was built from (`git rev-parse --short HEAD` at build
/// time, `unknown` outside a git checkout); see `build.rs`.
pub const BUILD_COMMIT: &str = env!("KEYGATE_COMMIT");

/// Route label of requests that matched no API.
pub const NO_ROUTE: &str = "-";

/// Upper bounds of the response-time histogram, in seconds (100 µs … 30 s).
pub const LATENCY_BUCKETS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Most distinct route labels kept; past it, new names are counted under `(overflow)`.
/// Routes come from the config, so this only guards against a caller bug.
const MAX_ROUTES: usize = 4096;
const OVERFLOW_ROUTE: &str = "(overflow)";

/// Front-end refusal reasons (`Reject::reason`, and `cors` for a refused
/// preflight); `backend` is counted as a back-end error instead.
const REASONS: [&str; 7] = ["auth", "ip", "limit", "route", "request", "cors", "other"];

/// One request as the handler saw it, for [`Metrics::record`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// Status sent to the client.
    pub status: u16,
    /// `Some(Reject::reason())` when the gateway refused or failed the request:
    /// `"auth" | "ip" | "limit" | "route" | "request" | "backend"`, or `"cors"`
    /// for a refused preflight (not a valid call).
    pub reject: Option<&'static str>,
    /// Status the back end answered, when the request reached one.
    pub upstream_status: Option<u16>,
    /// From the request's arrival to the response head.
    pub latency: Duration,
    /// The back end's share of `latency`: from sending the request to its
    /// response head, when the request reached one.
    pub upstream_latency: Option<Duration>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    route: Arc<str>,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    route: Arc<str>,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    route: Arc<str>,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// Every labelled family, shared by the registry and the route handles.
#[derive(Default)]
struct Families {
    requests: Family<CodeLabels, Counter>,
    valid: Family<RouteLabels, Counter>,
    frontend: Family<ReasonLabels, Counter>,
    backend_responses: Family<CodeLabels, Counter>,
    backend_errors: Family<ClassLabels, Counter>,
    latency: Family<RouteLabels, LatencyHistogram>,
    upstream_latency: Family<RouteLabels, LatencyHistogram>,
    bytes_in: Family<RouteLabels, Counter>,
    bytes_out: Family<RouteLabels, Counter>,
    retries: Family<ReasonLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    upstream: String,
    target: String,
}

/// The process-wide metrics.
pub struct Metrics {
    registry: Registry,
    /// `process_*`, without the `keygate_` prefix.
    process: Registry,
    families: Arc<Families>,
    routes: RwLock<HashMap<Box<str>, Arc<RouteMetrics>>>,
    open_connections: Gauge,
    connections: Counter,
    reloads: Family<ResultLabels, Counter>,
    config: ConfigInfo,
    config_loaded: Gauge,
    cluster_mode: Family<ModeLabels, Gauge>,
    cluster_errors: Family<KindLabels, Counter>,
    cluster_fallbacks: Counter,
    target_healthy: Family<TargetLabels, Gauge>,
    /// Which health-check task last wrote each target's series: a pool
    /// replaced on reload must not remove its successor's series.
    target_owners: Mutex<HashMap<TargetLabels, u64>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabels {
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// Values of `keygate_cluster_mode{mode}`.
const CLUSTER_MODES: [&str; 4] = ["shared", "local", "allow", "deny"];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let families = Arc::new(Families::default());
        let open_connections = Gauge::default();
        let connections = Counter::default();
        let reloads = Family::<ResultLabels, Counter>::default();
        let config = ConfigInfo::default();
        let config_loaded = Gauge::default();
        let mut r = Registry::with_prefix("keygate");
        let f = &families;
        r.register(
            "requests",
            "Requests answered, by route and status code sent to the client",
            f.requests.clone(),
        );
        r.register(
            "valid_calls",
            "Requests forwarded or mocked without a gateway refusal",
            f.valid.clone(),
        );
        r.register(
            "frontend_errors",
            "Requests refused by the gateway, by reason",
            f.frontend.clone(),
        );
        r.register(
            "backend_errors",
            "Back-end answers with status >= 400, or back-end failures (502/504)",
            f.backend_errors.clone(),
        );
        r.register(
            "backend_responses",
            "Back-end answers by status code (502/504 also when the back end failed)",
            f.backend_responses.clone(),
        );
        r.register_with_unit(
            "request_duration",
            "Time from the request's arrival to the response head",
            Unit::Seconds,
            f.latency.clone(),
        );
        r.register_with_unit(
            "upstream_duration",
            "The back end's share of the latency: request sent to response head",
            Unit::Seconds,
            f.upstream_latency.clone(),
        );
        r.register(
            "bytes_in",
            "Request body bytes received from clients",
            f.bytes_in.clone(),
        );
        r.register(
            "bytes_out",
            "Response body bytes sent to clients",
            f.bytes_out.clone(),
        );
        r.register(
            "open_connections",
            "Client connections currently open",
            open_connections.clone(),
        );
        r.register(
            "connections",
            "Client connections accepted",
            connections.clone(),
        );
        r.register(
            "reloads",
            "Configuration reloads, by result",
            reloads.clone(),
        );
        r.register(
            "config_info",
            "Hash of the configuration in force (value is always 1)",
            config.clone(),
        );
        r.register_with_unit(
            "config_loaded_timestamp",
            "Unix time the configuration in force was loaded",
            Unit::Seconds,
            config_loaded.clone(),
        );
        for result in ["ok", "failed"] {
            let _ = reloads.get_or_create(&ResultLabels { result });
        }
        let build = Family::<[(&'static str, &'static str); 2], Gauge>::default();
        build
            .get_or_create(&[
                ("version", env!("CARGO_PKG_VERSION")),
                ("commit", BUILD_COMMIT),
            ])
            .set(1);
        r.register(
            "build_info",
            "keygate version and commit (value is always 1)",
            build,
        );
        let cluster_mode = Family::<ModeLabels, Gauge>::default();
        let cluster_errors = Family::<KindLabels, Counter>::default();
        let cluster_fallbacks = Counter::default();
        r.register(
            "cluster_mode",
            "Cluster mode in force: shared (Redis answers) or the on_error fall-back (value 1)",
            cluster_mode.clone(),
        );
        r.register(
            "cluster_redis_errors",
            "Redis calls that failed or timed out, by kind",
            cluster_errors.clone(),
        );
        r.register(
            "cluster_fallback_decisions",
            "Limit or replay decisions made by the on_error fall-back instead of Redis",
            cluster_fallbacks.clone(),
        );
        r.register(
            "upstream_retries",
            "Requests tried again on another target, by route and cause",
            f.retries.clone(),
        );
        let target_healthy = Family::<TargetLabels, Gauge>::default();
        r.register(
            "upstream_target_healthy",
            "Active health check verdict per target (1 up, 0 down)",
            target_healthy.clone(),
        );
        r.register(
            "log_dropped_lines",
            "Log lines dropped because the log sink fell too far behind",
            FnCounter(crate::logging::dropped_lines),
        );
        let mut process = Registry::default();
        process.register_collector(Box::new(process::ProcessCollector::new()));
        let m = Metrics {
            registry: r,
            process,
            families,
            routes: RwLock::new(HashMap::new()),
            open_connections,
            connections,
            reloads,
            config,
            config_loaded,
            cluster_mode,
            cluster_errors,
            cluster_fallbacks,
            target_healthy,
            target_owners: Mutex::new(HashMap::new()),
        };
        // Requests no API matched are counted from the start too.
        m.route(NO_ROUTE);
        m
    }

    /// The active health check's verdict on `target` of `upstream`, written by
    /// the health-check task `owner`.
    pub fn set_target_healthy(&self, upstream: &str, target: &str, up: bool, owner: u64) {
        let labels = TargetLabels {
            upstream: upstream.to_string(),
            target: target.to_string(),
        };
        let mut owners = self.target_owners.lock().unwrap_or_else(|p| p.into_inner());
        owners.insert(labels.clone(), owner);
        self.target_healthy
            .get_or_create(&labels)
            .set(i64::from(up));
    }

    /// Task `owner` stopped: its targets' series go, unless a newer task
    /// (a pool that replaced it on reload) writes them now.
    pub fn forget_target(&self, upstream: &str, target: &str, owner: u64) {
        let labels = TargetLabels {
            upstream: upstream.to_string(),
            target: target.to_string(),
        };
        let mut owners = self.target_owners.lock().unwrap_or_else(|p| p.into_inner());
        if owners.get(&labels) == Some(&owner) {
            owners.remove(&labels);
            self.target_healthy.remove(&labels);
        }
    }

    /// The cluster mode now in force: `shared` or the `on_error` fall-back.
    pub fn set_cluster_mode(&self, mode: &str) {
        for kind in ["timeout", "error", "reply"] {
            let _ = self.cluster_errors.get_or_create(&KindLabels { kind });
        }
        for m in CLUSTER_MODES {
            self.cluster_mode
                .get_or_create(&ModeLabels { mode: m })
                .set(i64::from(m == mode));
        }
    }

    /// A Redis call failed (`timeout`, `error`, `reply`; `open`: not attempted).
    pub fn cluster_error(&self, kind: &'static str) {
        if kind != "open" {
            self.cluster_errors
                .get_or_create(&KindLabels { kind })
                .inc();
        }
    }

    /// A decision was made without Redis.
    pub fn cluster_fallback(&self) {
        self.cluster_fallbacks.inc();
    }

    /// The handles of one route, resolved once. A caller may keep the `Arc`
    /// (e.g. next to the compiled API) and call [`RouteMetrics::record`] to skip
    /// even the name lookup.
    pub fn route(&self, route: &str) -> Arc<RouteMetrics> {
        if let Some(r) = self
            .routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(route)
        {
            return r.clone();
        }
        let mut map = self.routes.write().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = map.get(route) {
            return r.clone();
        }
        let name = if map.len() >= MAX_ROUTES {
            OVERFLOW_ROUTE
        } else {
            route
        };
        let r = map
            .entry(name.into())
            .or_insert_with(|| Arc::new(RouteMetrics::new(name, self.families.clone())))
            .clone();
        r
    }

    /// Record one answered request. `route` is the API's label or [`NO_ROUTE`].
    pub fn record(&self, route: &str, s: Sample) {
        let map = self.routes.read().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = map.get(route) {
            r.record(s);
            return;
        }
        drop(map);
        self.route(route).record(s);
    }

    /// A client connection was accepted.
    pub fn conn_opened(&self) {
        self.open_connections.inc();
        self.connections.inc();
    }

    /// A client connection ended.
    pub fn conn_closed(&self) {
        self.open_connections.dec();
    }

    /// [`conn_opened`](Self::conn_opened) now and [`conn_closed`](Self::conn_closed)
    /// when the guard drops (whatever way the connection task ends).
    pub fn conn_guard(self: &Arc<Self>) -> ConnGuard {
        self.conn_opened();
        ConnGuard(self.clone())
    }

    /// A reload was attempted (file change, SIGHUP or admin call).
    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
    }

    /// The configuration now in force (call at start and after each successful reload).
    pub fn set_config_version(&self, hash: &str, loaded_at_unix: u64) {
        self.config.set(hash);
        self.config_loaded
            .set(i64::try_from(loaded_at_unix).unwrap_or(i64::MAX));
    }

    /// Every family in the OpenMetrics text format (serve with [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::with_capacity(8192);
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_registry(&mut out, &self.process);
        let _ = encode_eof(&mut out);
        out
    }

    /// The exposition the scraper's `Accept` header asks for: `(body, content type)`.
    pub fn encode_for(&self, accept: Option<&str>) -> (String, &'static str) {
        let om = self.encode();
        if accept.is_some_and(prefers_text_004) {
            (to_text_004(&om), CONTENT_TYPE_TEXT)
        } else {
            (om, CONTENT_TYPE)
        }
    }
}

/// Keeps a connection counted as open; see [`Metrics::conn_guard`].
pub struct ConnGuard(Arc<Metrics>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.conn_closed();
    }
}

#[cfg(test)]
mod tests;
