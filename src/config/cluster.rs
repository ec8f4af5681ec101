//! What a `[cluster]` section means: its one topology, its addresses and CA
//! file, and every rule it must follow. The compiler reports these problems;
//! the Redis client (`cluster/conn.rs`) builds its connections from the same
//! functions.

use super::error::{err, ConfigError};
use super::raw::RawCluster;
use super::source::expand_env;
use redis::IntoConnectionInfo;
use std::path::Path;
use std::time::Duration;

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
pub fn host_port(s: &str) -> Result<(String, u16), String> {
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
pub fn node_url(entry: &str, tls: bool) -> Result<String, String> {
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

/// Longest `[cluster] timeout`: it is added to a request when Redis stalls.
const MAX_TIMEOUT: Duration = Duration::from_secs(10);

/// Every problem of a `[cluster]` section, as config errors.
pub fn problems(raw: &RawCluster, base_dir: &Path) -> Vec<ConfigError> {
    check(raw, base_dir)
        .into_iter()
        .map(|(field, m)| err(field, m))
        .collect()
}

/// Every rule of `[cluster]`: its settings, the addresses of its topology and
/// its CA file; messages are located by field. Compiling a config runs it; the
/// Redis client runs it again before starting, as a guard.
pub fn check(raw: &RawCluster, base_dir: &Path) -> Vec<(&'static str, String)> {
    let mut errors = Vec::new();
    if let Some(m) = raw.on_error.problem("") {
        errors.push(("cluster.on_error", m));
    }
    addresses(raw, &mut errors);
    if let Some(p) = &raw.password {
        if let Err(m) = expand_env(p) {
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
    if raw.timeout < super::bounds::MIN_DURATION || raw.timeout > MAX_TIMEOUT {
        errors.push((
            "cluster.timeout",
            "must be between 1ms and 10s (it is added to a request when Redis stalls)".into(),
        ));
    }
    if raw.prefix.is_empty() {
        errors.push(("cluster.prefix", "must not be empty".into()));
    }
    errors
}

/// The one topology and each of its addresses (after `${ENV}` expansion).
fn addresses(raw: &RawCluster, errors: &mut Vec<(&'static str, String)>) {
    match topology(raw) {
        Err(e) => errors.push(e),
        Ok(Topology::Single(url)) => match expand_env(url) {
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
                match expand_env(n) {
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
}

/// The PEM of `ca_file` (relative to the config's directory), with at least one
/// certificate in it.
pub fn load_ca(file: &str, base_dir: &Path) -> Result<Vec<u8>, String> {
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
