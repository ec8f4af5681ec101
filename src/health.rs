//! Active health checks: one task per upstream probes each target with a GET of
//! `health_check.path` every `interval`. `unhealthy` failed probes in a row take
//! a target out of the balancer; `healthy` good ones (2xx or 3xx within
//! `timeout`) bring it back, which also ends a passive ejection.
//!
//! The task belongs to the upstream's pool ([`crate::upstream::Upstream`]): a
//! reload with the same `UpstreamSpec` keeps pool and task, and the task stops
//! when the pool is dropped ([`Prober`] aborts it).

use crate::balance::Balancer;
use crate::body::{empty, Body};
use crate::config::raw::RawHealthCheck;
use crate::metrics::Metrics;
use crate::upstream::Target;
use http::uri::PathAndQuery;
use http::{header, Method, Request, Uri, Version};
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A validated health check; part of the upstream's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthSpec {
    pub path: PathAndQuery,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy: u32,
    pub unhealthy: u32,
}

impl HealthSpec {
    /// Checks the raw table; the messages are for `keygate check`.
    pub fn compile(raw: &RawHealthCheck) -> Result<HealthSpec, Vec<String>> {
        let mut e = vec![];
        let path = match PathAndQuery::try_from(raw.path.as_str()) {
            Ok(p) if raw.path.starts_with('/') => Some(p),
            _ => {
                e.push(format!(
                    "health_check.path {:?} must be a path starting with /",
                    raw.path
                ));
                None
            }
        };
        if raw.interval < Duration::from_millis(100) || raw.interval > Duration::from_secs(3600) {
            e.push("health_check.interval must be between 100ms and 1h".into());
        }
        if raw.timeout.is_zero() || raw.timeout > raw.interval {
            e.push("health_check.timeout must be positive and at most the interval".into());
        }
        for (name, n) in [("healthy", raw.healthy), ("unhealthy", raw.unhealthy)] {
            if !(1..=100).contains(&n) {
                e.push(format!("health_check.{name} must be 1-100"));
            }
        }
        match path {
            Some(path) if e.is_empty() => Ok(HealthSpec {
                path,
                interval: raw.interval,
                timeout: raw.timeout,
                healthy: raw.healthy,
                unhealthy: raw.unhealthy,
            }),
            _ => Err(e),
        }
    }
}

type Pool = Client<HttpsConnector<HttpConnector>, Body>;

/// The probing task of one upstream; dropping it stops the task and removes
/// the upstream's `keygate_upstream_target_healthy` series.
pub struct Prober {
    task: tokio::task::AbortHandle,
    metrics: Option<(Arc<Metrics>, String, Vec<String>)>,
    /// Tells this task's metric series from those of a pool that replaced it.
    id: u64,
}

static NEXT_PROBER: AtomicU64 = AtomicU64::new(1);

impl Drop for Prober {
    fn drop(&mut self) {
        self.task.abort();
        if let Some((m, upstream, targets)) = &self.metrics {
            for t in targets {
                m.forget_target(upstream, t, self.id);
            }
        }
    }
}

/// Starts probing on the current runtime; `None` outside one (`keygate check`).
pub fn start(
    spec: HealthSpec,
    balancer: Arc<Balancer<Target>>,
    pool: Pool,
    http2: bool,
    metrics: Option<(Arc<Metrics>, String)>,
) -> Option<Prober> {
    let rt = tokio::runtime::Handle::try_current().ok()?;
    let names: Vec<String> = balancer
        .targets()
        .map(|(t, _)| format!("{}://{}{}", t.scheme, t.authority, t.base_path))
        .collect();
    let id = NEXT_PROBER.fetch_add(1, Ordering::Relaxed);
    if let Some((m, upstream)) = &metrics {
        for n in &names {
            m.set_target_healthy(upstream, n, true, id);
        }
    }
    let gauge = metrics.clone().map(|(m, u)| (m, u, id));
    let task = rt.spawn(probe_loop(
        spec,
        balancer,
        pool,
        http2,
        gauge,
        names.clone(),
    ));
    Some(Prober {
        task: task.abort_handle(),
        metrics: metrics.map(|(m, u)| (m, u, names)),
        id,
    })
}

async fn probe_loop(
    spec: HealthSpec,
    balancer: Arc<Balancer<Target>>,
    pool: Pool,
    http2: bool,
    metrics: Option<(Arc<Metrics>, String, u64)>,
    names: Vec<String>,
) {
    let n = balancer.len();
    // Consecutive good and bad probes of each target.
    let mut good = vec![0u32; n];
    let mut bad = vec![0u32; n];
    let mut tick = tokio::time::interval(spec.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let probes = (0..n).map(|i| {
            let pool = &pool;
            let spec = &spec;
            let balancer = &balancer;
            async move {
                match balancer.get(i) {
                    Some(t) => probe(pool, http2, t, spec).await,
                    None => false,
                }
            }
        });
        let results = futures_util::future::join_all(probes).await;
        for (i, ok) in results.into_iter().enumerate() {
            let was_up = balancer.is_healthy(i);
            if ok {
                good[i] = good[i].saturating_add(1);
                bad[i] = 0;
            } else {
                bad[i] = bad[i].saturating_add(1);
                good[i] = 0;
            }
            let now_up = if was_up {
                bad[i] < spec.unhealthy
            } else {
                good[i] >= spec.healthy
            };
            if now_up != was_up {
                balancer.set_healthy(i, now_up);
                let target = names.get(i).map(String::as_str).unwrap_or("-");
                tracing::warn!(
                    url = target,
                    up = now_up,
                    "health check changed a target's state"
                );
                if let Some((m, upstream, id)) = &metrics {
                    m.set_target_healthy(upstream, target, now_up, *id);
                }
            }
        }
    }
}

/// One probe: a GET of the health path, good on 2xx or 3xx within the timeout.
async fn probe(pool: &Pool, http2: bool, t: &Target, spec: &HealthSpec) -> bool {
    let uri = Uri::builder()
        .scheme(t.scheme.clone())
        .authority(t.authority.clone())
        .path_and_query(spec.path.clone())
        .build();
    let Ok(uri) = uri else { return false };
    let mut req = Request::new(empty());
    *req.method_mut() = Method::GET;
    *req.uri_mut() = uri;
    // HTTP/2 takes `:authority` from the URI; HTTP/1.1 needs `Host`.
    if http2 {
        *req.version_mut() = Version::HTTP_2;
    } else {
        req.headers_mut().insert(header::HOST, t.host.clone());
    }
    req.headers_mut().insert(
        header::USER_AGENT,
        http::HeaderValue::from_static("keygate-health-check"),
    );
    let call = async {
        let resp = pool.request(req).await.ok()?;
        let status = resp.status();
        // Read the (small) body so the connection goes back to the pool.
        let _ = resp.into_body().collect().await;
        Some(status.is_success() || status.is_redirection())
    };
    matches!(
        tokio::time::timeout(spec.timeout, call).await,
        Ok(Some(true))
    )
}
