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

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

mod process;

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

/// Pre-resolved handles of one route. Counters of label sets that may never
/// occur (a status class, a refusal reason) are created on first use.
pub struct RouteMetrics {
    route: Arc<str>,
    families: Arc<Families>,
    requests: CodeCounters,
    valid: Counter,
    frontend: [Counter; REASONS.len()],
    backend_responses: CodeCounters,
    backend_errors: [Counter; 2],
    latency: LatencyHistogram,
    upstream_latency: LatencyHistogram,
    bytes_in: Counter,
    bytes_out: Counter,
}

impl RouteMetrics {
    fn new(route: &str, families: Arc<Families>) -> RouteMetrics {
        let route: Arc<str> = Arc::from(route);
        let l = RouteLabels {
            route: route.clone(),
        };
        let latency = families.latency.get_or_create(&l).clone();
        let upstream_latency = families.upstream_latency.get_or_create(&l).clone();
        let bytes_in = families.bytes_in.get_or_create(&l).clone();
        let bytes_out = families.bytes_out.get_or_create(&l).clone();
        let valid = families.valid.get_or_create(&l).clone();
        let frontend = REASONS.map(|reason| {
            families
                .frontend
                .get_or_create(&ReasonLabels {
                    route: route.clone(),
                    reason,
                })
                .clone()
        });
        let backend_errors = ["4xx", "5xx"].map(|class| {
            families
                .backend_errors
                .get_or_create(&ClassLabels {
                    route: route.clone(),
                    class,
                })
                .clone()
        });
        RouteMetrics {
            route,
            families,
            requests: CodeCounters::default(),
            valid,
            frontend,
            backend_responses: CodeCounters::default(),
            backend_errors,
            latency,
            upstream_latency,
            bytes_in,
            bytes_out,
        }
    }

    /// Request body bytes received, counted as they stream.
    pub fn add_bytes_in(&self, n: u64) {
        self.bytes_in.inc_by(n);
    }

    /// Response body bytes sent, counted as they stream.
    pub fn add_bytes_out(&self, n: u64) {
        self.bytes_out.inc_by(n);
    }

    /// A request is tried again on another target (`connect`, `5xx`, `timeout`).
    pub fn retry(&self, reason: &'static str) {
        self.families
            .retries
            .get_or_create(&ReasonLabels {
                route: self.route.clone(),
                reason,
            })
            .inc();
    }

    /// Record one answered request of this route.
    pub fn record(&self, s: Sample) {
        let f = &*self.families;
        self.requests.inc(s.status, || {
            f.requests
                .get_or_create(&CodeLabels {
                    route: self.route.clone(),
                    code: s.status,
                })
                .clone()
        });
        match s.reject {
            None => {
                self.valid.inc();
            }
            Some("backend") => {}
            Some(reason) => {
                let i = REASONS
                    .iter()
                    .position(|r| *r == reason)
                    .unwrap_or(REASONS.len() - 1);
                self.frontend[i].inc();
            }
        }
        // The back end's own answer, or the gateway's 502/504 when it failed.
        let backend = match (s.upstream_status, s.reject) {
            (Some(u), _) => Some(u),
            (None, Some("backend")) => Some(s.status),
            _ => None,
        };
        if let Some(b) = backend {
            self.backend_responses.inc(b, || {
                f.backend_responses
                    .get_or_create(&CodeLabels {
                        route: self.route.clone(),
                        code: b,
                    })
                    .clone()
            });
            if b >= 400 {
                self.backend_errors[usize::from(b >= 500)].inc();
            }
        }
        self.latency.observe(s.latency);
        if let Some(u) = s.upstream_latency {
            self.upstream_latency.observe(u);
        }
    }
}

/// Counters by status code, resolved once per code: one lazily allocated block
/// of 100 handles per hundred (`1xx` … `9xx`), so a route seeing only 2xx and
/// 4xx answers holds two blocks.
#[derive(Default)]
struct CodeCounters {
    blocks: [OnceLock<Box<[OnceLock<Counter>]>>; 9],
}

impl CodeCounters {
    fn inc(&self, code: u16, make: impl FnOnce() -> Counter) {
        let hundred = usize::from(code / 100);
        let (Some(block), true) = (hundred.checked_sub(1), (100..1000).contains(&code)) else {
            make().inc();
            return;
        };
        let block = self.blocks[block].get_or_init(|| (0..100).map(|_| OnceLock::new()).collect());
        block[usize::from(code % 100)].get_or_init(make).inc();
    }
}

/// Whether an `Accept` header prefers the Prometheus text format 0.0.4
/// (`text/plain`) to OpenMetrics: by quality, OpenMetrics winning ties and
/// answering `*/*` or no preference.
pub fn prefers_text_004(accept: &str) -> bool {
    let (mut om, mut text) = (-1.0f32, -1.0f32);
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .and_then(|(_, v)| v.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "application/openmetrics-text" => om = om.max(q),
            "text/plain" => text = text.max(q),
            _ => {}
        }
    }
    text > 0.0 && text > om
}

/// The OpenMetrics text of [`Metrics::encode`] in the Prometheus text format
/// 0.0.4: counters' `HELP`/`TYPE` name the `_total` series, `UNIT` and `EOF`
/// lines are dropped. Samples are written the same way in both.
pub fn to_text_004(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((p, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(p);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// A fixed-bucket histogram of durations made of atomics only (no lock per sample).
#[derive(Clone, Default)]
pub struct LatencyHistogram(Arc<HistogramInner>);

struct HistogramInner {
    /// `LATENCY_BUCKETS` in nanoseconds.
    bounds_ns: [u64; LATENCY_BUCKETS.len()],
    /// Per-bucket (not cumulative) counts; the last one is `+Inf`.
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl Default for HistogramInner {
    fn default() -> Self {
        HistogramInner {
            bounds_ns: LATENCY_BUCKETS.map(|s| (s * 1e9).round() as u64),
            counts: Default::default(),
            sum_ns: AtomicU64::new(0),
        }
    }
}

impl LatencyHistogram {
    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = self.0.bounds_ns.partition_point(|b| *b < ns);
        self.0.counts[i].fetch_add(1, Ordering::Relaxed);
        self.0.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// `(sum in seconds, count, per-bucket counts with +Inf last)`.
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
        let mut count = 0;
        for (i, c) in self.0.counts.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            count += n;
            let le = LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((le, n));
        }
        let sum = self.0.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        (sum, count, buckets)
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Info-style gauge: one series `{hash="…"} 1`, replaced as a whole on change
/// (so a scrape never sees two versions, nor none).
#[derive(Clone, Default)]
struct ConfigInfo(Arc<Mutex<Option<String>>>);

impl ConfigInfo {
    fn set(&self, hash: &str) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(hash.to_string());
    }
}

impl std::fmt::Debug for ConfigInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConfigInfo")
    }
}

impl TypedMetric for ConfigInfo {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for ConfigInfo {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let hash = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(hash) = hash {
            encoder
                .encode_family(&[("hash", hash.as_str())])?
                .encode_gauge(&1i64)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LatencyHistogram")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(status: u16, ms: u64) -> Sample {
        Sample {
            status,
            reject: None,
            upstream_status: Some(status),
            latency: Duration::from_millis(ms),
            upstream_latency: Some(Duration::from_millis(ms)),
        }
    }

    fn has(text: &str, line: &str) {
        assert!(
            text.lines().any(|l| l == line),
            "missing line {line:?} in:\n{text}"
        );
    }

    #[test]
    fn records_and_encodes() {
        let m = Arc::new(Metrics::new());
        for (status, ms) in [(200, 3), (200, 40), (404, 1), (502, 1)] {
            m.record("demo/echo", ok(status, ms));
            m.route("demo/echo").add_bytes_in(10);
            m.route("demo/echo").add_bytes_out(100);
        }
        m.record(
            "demo/echo",
            Sample {
                status: 502,
                reject: Some("backend"),
                latency: Duration::from_micros(50),
                ..Sample::default()
            },
        );
        m.record(
            "demo/private",
            Sample {
                status: 401,
                reject: Some("auth"),
                latency: Duration::from_micros(50),
                ..Sample::default()
            },
        );
        m.route("demo/private").add_bytes_out(80);
        m.record(
            NO_ROUTE,
            Sample {
                status: 404,
                reject: Some("route"),
                latency: Duration::from_micros(20),
                ..Sample::default()
            },
        );
        m.record(
            "demo/echo",
            Sample {
                status: 429,
                reject: Some("limit"),
                latency: Duration::from_secs(60),
                ..Sample::default()
            },
        );
        {
            let _a = m.conn_guard();
            let _b = m.conn_guard();
        }
        m.conn_opened();
        m.reload(true);
        m.reload(true);
        m.reload(false);
        m.set_config_version("abc123", 1_700_000_000);
        m.set_config_version("def456", 1_700_000_100);
        let t = m.encode();

        has(
            &t,
            "keygate_requests_total{route=\"demo/echo\",code=\"200\"} 2",
        );
        has(
            &t,
            "keygate_requests_total{route=\"demo/echo\",code=\"404\"} 1",
        );
        has(
            &t,
            "keygate_requests_total{route=\"demo/echo\",code=\"429\"} 1",
        );
        has(
            &t,
            "keygate_requests_total{route=\"demo/echo\",code=\"502\"} 2",
        );
        has(&t, "keygate_requests_total{route=\"-\",code=\"404\"} 1");
        has(&t, "keygate_valid_calls_total{route=\"demo/echo\"} 4");
        has(
            &t,
            "keygate_frontend_errors_total{route=\"demo/private\",reason=\"auth\"} 1",
        );
        has(
            &t,
            "keygate_frontend_errors_total{route=\"-\",reason=\"route\"} 1",
        );
        has(
            &t,
            "keygate_frontend_errors_total{route=\"demo/echo\",reason=\"limit\"} 1",
        );
        // Known label values are there from the start, with 0.
        has(
            &t,
            "keygate_frontend_errors_total{route=\"demo/echo\",reason=\"cors\"} 0",
        );
        has(&t, "keygate_valid_calls_total{route=\"demo/private\"} 0");
        assert!(!t.contains("reason=\"backend\""), "{t}");
        has(
            &t,
            "keygate_backend_errors_total{route=\"demo/echo\",class=\"4xx\"} 1",
        );
        has(
            &t,
            "keygate_backend_errors_total{route=\"demo/echo\",class=\"5xx\"} 2",
        );
        has(
            &t,
            "keygate_backend_responses_total{route=\"demo/echo\",code=\"200\"} 2",
        );
        has(
            &t,
            "keygate_backend_responses_total{route=\"demo/echo\",code=\"404\"} 1",
        );
        has(
            &t,
            "keygate_backend_responses_total{route=\"demo/echo\",code=\"502\"} 2",
        );
        // Refusals by the gateway are not back-end errors.
        has(
            &t,
            "keygate_backend_errors_total{route=\"demo/private\",class=\"4xx\"} 0",
        );
        assert!(
            !t.contains("keygate_backend_responses_total{route=\"demo/private\""),
            "{t}"
        );
        assert!(!t.contains("keygate_backend_502"), "{t}");
        has(&t, "# TYPE keygate_request_duration_seconds histogram");
        has(
            &t,
            "keygate_request_duration_seconds_count{route=\"demo/echo\"} 6",
        );
        has(
            &t,
            "keygate_request_duration_seconds_bucket{le=\"0.0001\",route=\"demo/echo\"} 1",
        );
        has(
            &t,
            "keygate_request_duration_seconds_bucket{le=\"0.001\",route=\"demo/echo\"} 3",
        );
        has(
            &t,
            "keygate_request_duration_seconds_bucket{le=\"0.005\",route=\"demo/echo\"} 4",
        );
        has(
            &t,
            "keygate_request_duration_seconds_bucket{le=\"0.05\",route=\"demo/echo\"} 5",
        );
        has(
            &t,
            "keygate_request_duration_seconds_bucket{le=\"30.0\",route=\"demo/echo\"} 5",
        );
        has(
            &t,
            "keygate_request_duration_seconds_bucket{le=\"+Inf\",route=\"demo/echo\"} 6",
        );
        // The back end's share: only the samples that reached one.
        has(
            &t,
            "keygate_upstream_duration_seconds_count{route=\"demo/echo\"} 4",
        );
        has(
            &t,
            "keygate_upstream_duration_seconds_count{route=\"demo/private\"} 0",
        );
        has(&t, "keygate_bytes_in_total{route=\"demo/echo\"} 40");
        has(&t, "keygate_bytes_out_total{route=\"demo/echo\"} 400");
        has(&t, "keygate_bytes_out_total{route=\"demo/private\"} 80");
        has(&t, "keygate_open_connections 1");
        has(&t, "keygate_connections_total 3");
        has(&t, "keygate_reloads_total{result=\"ok\"} 2");
        has(&t, "keygate_reloads_total{result=\"failed\"} 1");
        has(&t, "keygate_config_info{hash=\"def456\"} 1");
        assert!(!t.contains("abc123"), "{t}");
        has(&t, "keygate_config_loaded_timestamp_seconds 1700000100");
        has(
            &t,
            &format!(
                "keygate_build_info{{version=\"{}\",commit=\"{BUILD_COMMIT}\"}} 1",
                env!("CARGO_PKG_VERSION")
            ),
        );
        has(&t, "# TYPE process_cpu_seconds counter");
        assert!(t.contains("\nprocess_resident_memory_bytes "), "{t}");
        assert!(t.ends_with("# EOF\n"));
        assert_eq!(t.matches("# EOF").count(), 1);
    }

    #[test]
    fn counters_start_at_zero() {
        let m = Metrics::new();
        let t = m.encode();
        has(&t, "keygate_reloads_total{result=\"ok\"} 0");
        has(&t, "keygate_reloads_total{result=\"failed\"} 0");
        has(&t, "keygate_valid_calls_total{route=\"-\"} 0");
        has(
            &t,
            "keygate_frontend_errors_total{route=\"-\",reason=\"route\"} 0",
        );
        has(&t, "keygate_open_connections 0");
        has(&t, "keygate_connections_total 0");
        // Status codes are an open set: no series before the first answer.
        assert!(!t.contains("keygate_requests_total{"), "{t}");
        m.route("s/a");
        has(
            &m.encode(),
            "keygate_frontend_errors_total{route=\"s/a\",reason=\"auth\"} 0",
        );
    }

    #[test]
    fn refused_preflight_is_no_valid_call() {
        let m = Metrics::new();
        m.record(
            "s/c",
            Sample {
                status: 403,
                reject: Some("cors"),
                ..Sample::default()
            },
        );
        let t = m.encode();
        has(&t, "keygate_valid_calls_total{route=\"s/c\"} 0");
        has(
            &t,
            "keygate_frontend_errors_total{route=\"s/c\",reason=\"cors\"} 1",
        );
        has(&t, "keygate_requests_total{route=\"s/c\",code=\"403\"} 1");
    }

    #[test]
    fn accept_negotiation() {
        // Prometheus 2.x/3.x default scrape protocols.
        assert!(!prefers_text_004("application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"));
        assert!(prefers_text_004("text/plain;version=0.0.4"));
        assert!(prefers_text_004(
            "text/plain; version=0.0.4; q=0.9, application/openmetrics-text; q=0.5"
        ));
        assert!(!prefers_text_004("*/*"));
        assert!(!prefers_text_004("text/plain;q=0"));
        assert!(!prefers_text_004(""));
    }

    #[test]
    fn text_004_names_counters_by_their_samples() {
        let m = Metrics::new();
        m.reload(true);
        let (t, ct) = m.encode_for(Some("text/plain"));
        assert_eq!(ct, CONTENT_TYPE_TEXT);
        has(&t, "# TYPE keygate_reloads_total counter");
        has(&t, "keygate_reloads_total{result=\"ok\"} 1");
        has(&t, "# TYPE keygate_config_loaded_timestamp_seconds gauge");
        has(&t, "# TYPE process_cpu_seconds_total counter");
        assert!(!t.contains("# EOF") && !t.contains("# UNIT"), "{t}");
        let (om, ct) = m.encode_for(None);
        assert_eq!(ct, CONTENT_TYPE);
        has(&om, "# TYPE keygate_reloads counter");
    }

    #[test]
    fn route_handles_are_shared() {
        let m = Metrics::new();
        let a = m.route("s/a");
        let b = m.route("s/a");
        assert!(Arc::ptr_eq(&a, &b));
        a.record(ok(200, 1));
        m.record("s/a", ok(200, 1));
        assert!(m
            .encode()
            .contains("keygate_requests_total{route=\"s/a\",code=\"200\"} 2"));
    }

    /// Cost of the hot path; run with `cargo test --release --lib metrics -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn record_cost() {
        let m = Arc::new(Metrics::new());
        for i in 0..50 {
            m.route(&format!("svc/api{i}"));
        }
        let n = 2_000_000u32;
        let per = |f: &dyn Fn()| {
            let t = std::time::Instant::now();
            for _ in 0..n {
                f();
            }
            t.elapsed() / n
        };
        let by_name = per(&|| m.record("svc/api7", ok(200, 2)));
        let h = m.route("svc/api7");
        let by_handle = per(&|| h.record(ok(200, 2)));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || {
                    let t = std::time::Instant::now();
                    for _ in 0..n {
                        m.record("svc/api7", ok(200, 2));
                    }
                    t.elapsed() / n
                })
            })
            .collect();
        let contended: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        println!("record by name: {by_name:?}, by handle: {by_handle:?}, 2 threads by name: {contended:?}");
    }
}

/// A counter read from a function at scrape time (state owned elsewhere).
#[derive(Clone, Copy)]
struct FnCounter(fn() -> u64);

impl std::fmt::Debug for FnCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnCounter")
    }
}

impl TypedMetric for FnCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for FnCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&(self.0)(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}
