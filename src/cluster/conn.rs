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

use crate::config::raw::RawCluster;
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, IntoConnectionInfo, Pipeline, RedisFuture,
    RedisResult, TlsCertificates, TlsMode, Value,
};
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// How long a new TCP (and TLS) connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How often the sentinels are asked which server is the primary.
pub const SENTINEL_POLL: Duration = Duration::from_millis(200);

/// Which of the three topologies a `[cluster]` section names, or why none.
pub enum Topology<'a> {
    Single(&'a str),
    Sentinel {
        sentinels: &'a [String],
        master_name: &'a str,
    },
    Cluster(&'a [String]),
}

/// The one topology of `raw`, or the located error (field, message).
pub fn topology(raw: &RawCluster) -> Result<Topology<'_>, (&'static str, String)> {
    let given = [
        raw.redis.is_some(),
        !raw.sentinels.is_empty(),
        !raw.nodes.is_empty(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err((
            "cluster",
            "needs exactly one of redis (one server), sentinels (Redis Sentinel) \
             or nodes (Redis Cluster)"
                .into(),
        ));
    }
    if let Some(url) = &raw.redis {
        if raw.master_name.is_some() {
            return Err(("cluster.master_name", "only goes with sentinels".into()));
        }
        return Ok(Topology::Single(url));
    }
    if !raw.sentinels.is_empty() {
        let master_name = match raw.master_name.as_deref() {
            Some(n) if !n.is_empty() => n,
            _ => {
                return Err((
                    "cluster.master_name",
                    "is required with sentinels (the name the sentinels monitor)".into(),
                ))
            }
        };
        return Ok(Topology::Sentinel {
            sentinels: &raw.sentinels,
            master_name,
        });
    }
    if raw.master_name.is_some() {
        return Err(("cluster.master_name", "only goes with sentinels".into()));
    }
    Ok(Topology::Cluster(&raw.nodes))
}

/// `host:port` with a port, as `sentinels` and `nodes` entries are written.
fn host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not host:port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{s:?}: the port is not a number in 1..65535"))?;
    if host.is_empty() || host.contains('/') || host.contains('@') {
        return Err(format!("{s:?} is not host:port"));
    }
    Ok((host.to_string(), port))
}

/// A `redis` URL (after `${ENV}` expansion) as this build supports it.
pub fn check_url(url: &str) -> Result<(), String> {
    if !url.starts_with("redis://") && !url.starts_with("rediss://") {
        return Err("must be a redis:// or rediss:// (TLS) URL".into());
    }
    url.into_connection_info()
        .map(|_| ())
        // The parser's message may quote the URL, and with it a password.
        .map_err(|_| "not a valid redis:// or rediss:// URL".into())
}

/// The URL of a `nodes` entry: itself when it is a URL, else `redis://host:port`
/// (`rediss://` with `tls = true`).
fn node_url(entry: &str, tls: bool) -> Result<String, String> {
    if entry.contains("://") {
        check_url(entry)?;
        return Ok(entry.to_string());
    }
    let (host, port) = host_port(entry)?;
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let scheme = if tls { "rediss" } else { "redis" };
    Ok(format!("{scheme}://{host}:{port}"))
}

/// Checks every address of the topology and the CA file; messages are located
/// by field. Used by `keygate check` and before starting.
pub fn check(raw: &RawCluster, base_dir: &Path) -> Vec<(&'static str, String)> {
    let mut errors = Vec::new();
    match topology(raw) {
        Err(e) => errors.push(e),
        Ok(Topology::Single(url)) => match crate::config::compile::expand_env(url) {
            Ok(u) => {
                if let Err(m) = check_url(&u) {
                    errors.push(("cluster.redis", m));
                }
            }
            Err(m) => errors.push(("cluster.redis", m)),
        },
        Ok(Topology::Sentinel { sentinels, .. }) => {
            for s in sentinels {
                if let Err(m) = host_port(s) {
                    errors.push(("cluster.sentinels", m));
                }
            }
        }
        Ok(Topology::Cluster(nodes)) => {
            if raw.prefix.contains(['{', '}']) {
                errors.push((
                    "cluster.prefix",
                    "must not contain { or } with Redis Cluster (it is the counters' hash tag)"
                        .into(),
                ));
            }
            for n in nodes {
                match crate::config::compile::expand_env(n) {
                    Ok(n) => {
                        if let Err(m) = node_url(&n, raw.tls) {
                            errors.push(("cluster.nodes", m));
                        }
                    }
                    Err(m) => errors.push(("cluster.nodes", m)),
                }
            }
        }
    }
    if let Some(p) = &raw.password {
        if let Err(m) = crate::config::compile::expand_env(p) {
            errors.push(("cluster.password", m));
        }
    }
    if let Some(f) = &raw.ca_file {
        if let Err(m) = load_ca(f, base_dir) {
            errors.push(("cluster.ca_file", m));
        }
    }
    if let Ok(t) = topology(raw) {
        let single = matches!(t, Topology::Single(_));
        if raw.tls && single {
            errors.push((
                "cluster.tls",
                "applies to sentinels and nodes; with redis, write rediss://".into(),
            ));
        }
        let uses_tls = match t {
            Topology::Single(url) => url.starts_with("rediss://"),
            Topology::Sentinel { .. } => raw.tls,
            Topology::Cluster(nodes) => raw.tls || nodes.iter().any(|n| n.starts_with("rediss://")),
        };
        if raw.ca_file.is_some() && !uses_tls {
            errors.push((
                "cluster.ca_file",
                "is for TLS: use rediss:// (or tls = true with sentinels or nodes)".into(),
            ));
        }
    }
    errors
}

/// The PEM of `ca_file` (relative to the config's directory), with at least one
/// certificate in it.
fn load_ca(file: &str, base_dir: &Path) -> Result<Vec<u8>, String> {
    let path = base_dir.join(file);
    let pem = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut certs = 0;
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        c.map_err(|e| format!("{}: {e}", path.display()))?;
        certs += 1;
    }
    if certs == 0 {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(pem)
}

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
            Some(p) => Some(crate::config::compile::expand_env(p)?),
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
                let url = crate::config::compile::expand_env(url)?;
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
                    let n = crate::config::compile::expand_env(n)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_without_echoing_them() {
        assert!(check_url("redis://127.0.0.1:6379").is_ok());
        assert!(check_url("redis://:pw@10.0.0.1:6379/2").is_ok());
        assert!(check_url("rediss://h:6380").is_ok());
        assert!(check_url("http://h").is_err());
        let e = check_url("redis://:secret@h:notaport").unwrap_err();
        assert!(!e.contains("secret"));
    }

    #[test]
    fn node_entries_become_urls() {
        assert_eq!(
            node_url("127.0.0.1:7000", false).unwrap(),
            "redis://127.0.0.1:7000"
        );
        assert_eq!(node_url("h:7000", true).unwrap(), "rediss://h:7000");
        assert_eq!(node_url("[::1]:7000", false).unwrap(), "redis://[::1]:7000");
        assert_eq!(node_url("rediss://h:1", false).unwrap(), "rediss://h:1");
        assert!(node_url("h", false).is_err());
        assert!(node_url("h:0", false).is_err());
        assert!(node_url("h:99999", false).is_err());
        assert!(node_url("u@h:1", false).is_err());
    }
}
