//! The connection to the shared store, in one of three topologies
//! (`[cluster]` takes exactly one of `redis`, `sentinels`, `nodes`):
//!
//! - `redis = "redis://…"` or `"rediss://…"`: one server (standalone or a fixed
//!   primary), through redis-rs's connection manager, which reconnects.
//! - `sentinels = ["host:port", …]` + `master_name`: the primary is asked of the
//!   sentinels; a call that fails drops the connection, and the next call asks
//!   the sentinels again (a demoted primary answers writes with `READONLY`,
//!   which counts as a failure). A watcher also asks the sentinels every
//!   [`SENTINEL_POLL`] and drops the connection as soon as they name another
//!   primary, so the connection follows the primary after a failover even while
//!   the old one still answers (which it does until Sentinel demotes it).
//! - `nodes = ["host:port" | "redis://…" | "rediss://…", …]`: Redis Cluster,
//!   through redis-rs's cluster client (slot map, `MOVED`/`ASK`, reconnects). The
//!   counter keys are hash-tagged by the caller (see `crate::cluster`).
//!
//! TLS (`rediss://`, or `tls = true` for `host:port` nodes) uses rustls with the
//! webpki roots, or only the CA of `[cluster] ca_file` when it is set.

use crate::config::cluster::{check, host_port, load_ca, node_url, topology, Topology};
use crate::config::raw::RawCluster;
use crate::config::source::expand_env;
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, Pipeline, RedisFuture, RedisResult,
    TlsCertificates, TlsMode, Value,
};
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

pub use crate::config::cluster::check_url;

/// How long a new TCP (and TLS) connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How often the sentinels are asked which server is the primary.
pub const SENTINEL_POLL: Duration = Duration::from_millis(200);

/// The client of one topology. Cheap to share; [`Store::handle`] gives a
/// connection for one call.
pub enum Store {
    Single(ConnectionManager),
    Sentinel(Arc<SentinelStore>),
    Cluster(ClusterConnection),
}

impl Store {
    /// Starts the client without waiting for any server (every topology
    /// connects in the background or on first use).
    pub fn start(raw: &RawCluster, base_dir: &Path, timeout: Duration) -> Result<Store, String> {
        let errors = check(raw, base_dir);
        if let Some((field, m)) = errors.into_iter().next() {
            return Err(format!("{field}: {m}"));
        }
        let certs = match &raw.ca_file {
            Some(f) => Some(TlsCertificates {
                client_tls: None,
                root_cert: Some(load_ca(f, base_dir)?),
            }),
            None => None,
        };
        let password = match &raw.password {
            Some(p) => Some(expand_env(p)?),
            None => None,
        };
        // Redis-level timeout: longer than ours, so that ours decides.
        let response_timeout = timeout * 4;
        let bad = |field: &str, e: redis::RedisError| -> String {
            // The message may quote a URL, and with it a password: kind only.
            format!("{field}: {:?}", e.kind())
        };
        match topology(raw).map_err(|(f, m)| format!("{f}: {m}"))? {
            Topology::Single(url) => {
                let url = expand_env(url)?;
                let client = match certs {
                    Some(c) => redis::Client::build_with_tls(url.as_str(), c),
                    None => redis::Client::open(url.as_str()),
                }
                .map_err(|e| bad("cluster.redis", e))?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(response_timeout))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_millis(500));
                ConnectionManager::new_lazy_with_config(client, config)
                    .map(Store::Single)
                    .map_err(|e| bad("cluster.redis", e))
            }
            Topology::Sentinel {
                sentinels,
                master_name,
            } => {
                let mut addrs = Vec::new();
                for s in sentinels {
                    let (host, port) =
                        host_port(s).map_err(|m| format!("cluster.sentinels: {m}"))?;
                    addrs.push(ConnectionAddr::Tcp(host, port));
                }
                let mut builder =
                    SentinelClientBuilder::new(addrs, master_name, SentinelServerType::Master)
                        .map_err(|e| bad("cluster.sentinels", e))?;
                if raw.tls {
                    builder = builder.set_client_to_redis_tls_mode(TlsMode::Secure);
                    if let Some(c) = certs {
                        builder = builder.set_client_to_redis_certificates(c);
                    }
                }
                if let Some(p) = password {
                    builder = builder.set_client_to_redis_password(p);
                }
                let client = builder.build().map_err(|e| bad("cluster.sentinels", e))?;
                let store = Arc::new(SentinelStore {
                    client: tokio::sync::Mutex::new(client),
                    current: Mutex::new(None),
                    config: AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(CONNECT_TIMEOUT))
                        .set_response_timeout(Some(response_timeout)),
                });
                tokio::spawn(SentinelStore::watch(Arc::downgrade(&store)));
                Ok(Store::Sentinel(store))
            }
            Topology::Cluster(nodes) => {
                let mut urls = Vec::new();
                for n in nodes {
                    let n = expand_env(n)?;
                    urls.push(node_url(&n, raw.tls).map_err(|m| format!("cluster.nodes: {m}"))?);
                }
                let mut builder = redis::cluster::ClusterClientBuilder::new(urls)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(response_timeout)
                    .retries(2);
                if let Some(c) = certs {
                    builder = builder.certs(c);
                }
                if let Some(p) = password {
                    builder = builder.password(p);
                }
                let client = builder.build().map_err(|e| bad("cluster.nodes", e))?;
                Ok(Store::Cluster(
                    client.get_pending_async_connection_with_config(
                        redis::cluster::ClusterConfig::new()
                            .set_connection_timeout(CONNECT_TIMEOUT)
                            .set_response_timeout(response_timeout),
                    ),
                ))
            }
        }
    }

    /// `true` for Redis Cluster: the counter keys of one decision must share a
    /// hash tag.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Store::Cluster(_))
    }

    /// A connection for one call.
    pub async fn handle(&self) -> RedisResult<Handle> {
        match self {
            Store::Single(c) => Ok(Handle::Single(c.clone())),
            Store::Sentinel(s) => s.get().await.map(Handle::Multiplexed),
            Store::Cluster(c) => Ok(Handle::Cluster(c.clone())),
        }
    }

    /// A call failed (error or timeout): with Sentinel, the next call asks the
    /// sentinels for the primary again. The other clients reconnect themselves.
    pub fn failed(&self) {
        if let Store::Sentinel(s) = self {
            s.drop_connection();
        }
    }
}

/// The primary found through the sentinels, kept until a call fails.
pub struct SentinelStore {
    /// Locked while asking the sentinels, so that one failure does not make every
    /// waiting request ask them too.
    client: tokio::sync::Mutex<SentinelClient>,
    /// The primary's address and the connection to it.
    current: Mutex<Option<(ConnectionAddr, MultiplexedConnection)>>,
    config: AsyncConnectionConfig,
}

impl SentinelStore {
    fn current(&self) -> Option<MultiplexedConnection> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(_, c)| c.clone())
    }

    async fn get(&self) -> RedisResult<MultiplexedConnection> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let mut client = self.client.lock().await;
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let primary = client.async_get_client().await?;
        let addr = primary.get_connection_info().addr().clone();
        let c = primary
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some((addr, c.clone()));
        Ok(c)
    }

    fn drop_connection(&self) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Every [`SENTINEL_POLL`], while the store lives: when the sentinels name
    /// another primary than the one connected to, drop the connection.
    async fn watch(store: Weak<SentinelStore>) {
        loop {
            tokio::time::sleep(SENTINEL_POLL).await;
            let Some(s) = store.upgrade() else { return };
            let connected = s
                .current
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|(addr, _)| addr.clone());
            let Some(connected) = connected else { continue };
            let named = {
                let mut client = s.client.lock().await;
                tokio::time::timeout(CONNECT_TIMEOUT, client.async_get_client()).await
            };
            if let Ok(Ok(primary)) = named {
                if *primary.get_connection_info().addr() != connected {
                    tracing::info!("redis sentinel: the primary changed, reconnecting");
                    s.drop_connection();
                }
            }
        }
    }
}

/// One connection of any topology, for `Script::invoke_async` and `query_async`.
#[derive(Clone)]
pub enum Handle {
    Single(ConnectionManager),
    Multiplexed(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Handle {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Handle::Single(c) => c.req_packed_command(cmd),
            Handle::Multiplexed(c) => c.req_packed_command(cmd),
            Handle::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Handle::Single(c) => c.req_packed_commands(cmd, offset, count),
            Handle::Multiplexed(c) => c.req_packed_commands(cmd, offset, count),
            Handle::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Handle::Single(c) => c.get_db(),
            Handle::Multiplexed(c) => c.get_db(),
            Handle::Cluster(c) => c.get_db(),
        }
    }
}
