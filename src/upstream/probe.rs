//! Active health checks: one task per upstream probes each target with a GET of
//! `health_check.path` every `interval`, through a pool of its own, and tells
//! the balancer when a target goes down or comes back ([`HealthSpec`]).
//!
//! The task belongs to the upstream ([`super::Upstream`]): a reload with the
//! same `UpstreamSpec` keeps upstream and task, and the task stops when the
//! upstream is dropped ([`Prober`] aborts it).

use super::pool::Pool;
use super::target::Target;
use crate::balance::Balancer;
use crate::body::empty;
use crate::health::HealthSpec;
use crate::metrics::Metrics;
use http::{header, Method, Request};
use http_body_util::BodyExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
                    Some(t) => probe(pool, http2, i, t, spec).await,
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
async fn probe(pool: &Pool, http2: bool, i: usize, t: &Target, spec: &HealthSpec) -> bool {
    let Ok(uri) = t.uri(spec.path.clone(), http2) else {
        return false;
    };
    let mut req = Request::new(empty());
    *req.method_mut() = Method::GET;
    *req.uri_mut() = uri;
    // HTTP/2 takes `:authority` from the URI; HTTP/1.1 needs `Host`.
    if http2 {
        *req.version_mut() = http::Version::HTTP_2;
    } else {
        req.headers_mut().insert(header::HOST, t.host.clone());
    }
    req.headers_mut().insert(
        header::USER_AGENT,
        http::HeaderValue::from_static("keygate-health-check"),
    );
    let call = async {
        let (resp, lease) = pool
            .send(0, i, t, req, std::time::Instant::now())
            .await
            .ok()?;
        let status = resp.status();
        // Read the (small) body so the connection can serve the next probe.
        if resp.into_body().collect().await.is_ok() {
            if let Some(l) = lease {
                l.release();
            }
        }
        Some(status.is_success() || status.is_redirection())
    };
    matches!(
        tokio::time::timeout(spec.timeout, call).await,
        Ok(Some(true))
    )
}
