//! The handles of one route ([`RouteMetrics`]): resolved once per route, then
//! plain atomics on the request path.

use super::{
    ClassLabels, CodeLabels, Families, LatencyHistogram, ReasonLabels, RouteLabels, Sample, REASONS,
};
use prometheus_client::metrics::counter::Counter;
use std::sync::{Arc, OnceLock};

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
    pub(super) fn new(route: &str, families: Arc<Families>) -> RouteMetrics {
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
