//! Long-lived state that outlives config snapshots: upstream pools, the replay
//! cache, limiter counters. A snapshot asks for its parts by identity, so an
//! unchanged upstream or policy keeps its pool and counts across reloads.

use crate::auth::jwt::JwksCache;
use crate::auth::replay::ReplayCache;
use crate::budget::BodyBudget;
use crate::cluster::{Cluster, ClusterError};
use crate::config::raw::RawCluster;
use crate::gateway::ConfigVersion;
use crate::metrics::Metrics;
use crate::policy::limits::LimitState;
use crate::upstream::{Upstream, UpstreamSpec};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

pub struct State {
    /// Directory of the config file; relative paths in it are resolved here.
    pub base_dir: PathBuf,
    upstreams: Mutex<HashMap<String, Weak<Upstream>>>,
    /// Threads with a runtime of their own that send to upstreams (`[server]
    /// runtime = "per-core"`): each upstream keeps connections for each. Set
    /// at start.
    pub upstream_workers: usize,
    pub replay: ReplayCache,
    /// `[server] max_buffered_bytes`: bodies buffered for signature checks.
    /// Set at start; a reload does not resize it.
    pub body_budget: BodyBudget,
    /// Limiter, window and quota counters, keyed by policy identity.
    pub limits: Arc<LimitState>,
    /// In-flight counts of `concurrency_control` plugins, by plugin name.
    pub concurrency: crate::policy::concurrency::ConcurrencyState,
    pub draining: AtomicBool,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// Prometheus metrics of the process (admin `/metrics`).
    pub metrics: Arc<Metrics>,
    /// Cluster mode: the shared store (Redis). Built once at start; a reload
    /// that changes `[cluster]` takes effect on restart only.
    pub cluster: Option<Cluster>,
    /// [`crate::cluster::fingerprint`] of the `[cluster]` section in force.
    pub cluster_settings: String,
    /// `[tracing]` span exporters by settings, kept across reloads.
    pub tracers: crate::trace::otlp::Tracers,
    /// The last good key set of each `jwks_url`: a reload starts from it.
    pub jwks: JwksCache,
}

impl State {
    pub fn new(base_dir: &Path, replay_capacity: usize, limits: Arc<LimitState>) -> State {
        State {
            base_dir: base_dir.to_path_buf(),
            upstreams: Mutex::new(HashMap::new()),
            upstream_workers: 1,
            replay: ReplayCache::new(replay_capacity),
            body_budget: BodyBudget::default(),
            limits,
            concurrency: Default::default(),
            draining: AtomicBool::new(false),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            metrics: Arc::new(Metrics::new()),
            cluster: None,
            cluster_settings: String::new(),
            tracers: Default::default(),
            jwks: JwksCache::default(),
        }
    }

    /// Starts cluster mode when the config has a `[cluster]` section. Does not
    /// wait for Redis: the connection is made in the background.
    pub fn start_cluster(&mut self, raw: Option<&RawCluster>) -> Result<(), ClusterError> {
        let Some(raw) = raw else { return Ok(()) };
        self.cluster = Some(Cluster::start(raw, &self.base_dir, self.metrics.clone())?);
        self.cluster_settings = crate::cluster::fingerprint(Some(raw));
        Ok(())
    }

    /// The pool for `spec`: the live one when an equal spec is in use, else a new one.
    /// `label` names a new pool in metrics (the first API that uses it).
    pub fn upstream(&self, spec: &UpstreamSpec, label: &str) -> Result<Arc<Upstream>, String> {
        let id = spec.identity();
        let mut map = self.upstreams.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = map.get(&id).and_then(Weak::upgrade) {
            return Ok(u);
        }
        let metrics = Some((self.metrics.clone(), label.to_string()));
        let u = Arc::new(Upstream::new(
            spec,
            &self.base_dir,
            metrics,
            self.upstream_workers,
        )?);
        map.retain(|_, w| w.strong_count() > 0);
        map.insert(id, Arc::downgrade(&u));
        Ok(u)
    }

    /// Count a reload attempt and, when it took, publish the new version.
    pub fn note_reload(&self, taken: Option<&ConfigVersion>) {
        match taken {
            Some(v) => {
                self.reloads_ok.fetch_add(1, Ordering::Relaxed);
                self.note_version(v);
            }
            None => {
                self.reloads_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.metrics.reload(taken.is_some());
    }

    /// The configuration now in force, for `/metrics`.
    pub fn note_version(&self, v: &ConfigVersion) {
        let unix = v
            .loaded_at
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.metrics.set_config_version(&v.hash, unix);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}
