//! The minimal Pingora proxy measured by `benches/load.sh` (issue 13): one
//! `ProxyHttp` whose `upstream_peer` returns the one back end, plain HTTP/1.1
//! on both sides, Pingora's defaults everywhere else (its upstream keep-alive
//! pool of 128 idle connections, the work-stealing runtime).
//!
//!   pingora-bench --listen 127.0.0.1:PORT --backend 127.0.0.1:PORT [--threads N]
//!
//! Logging: Pingora writes through the `log` facade and installs no logger of
//! its own, and it has no access log (`ProxyHttp::logging` does nothing by
//! default). This binary installs no logger either, so it prints nothing but
//! panics; the examples of the Pingora repository add `env_logger`.
//!
//! SIGTERM (what load.sh sends) is Pingora's graceful terminate, whose grace
//! period is 5 minutes by default: here it is 0 s, with 1 s for the runtimes
//! to stop.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session};

struct Minimal {
    backend: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Minimal {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> pingora_core::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.backend, false, String::new())))
    }
}

struct Args {
    listen: String,
    backend: SocketAddr,
    threads: usize,
}

const USAGE: &str =
    "usage: pingora-bench --listen ADDR:PORT --backend ADDR:PORT [--threads N (default 1)]";

fn parse_args() -> Result<Args, String> {
    let mut listen = None;
    let mut backend = None;
    let mut threads = 1usize;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} wants a value"));
        match flag.as_str() {
            "--listen" => listen = Some(value()?),
            "--backend" => {
                let v = value()?;
                backend = Some(v.parse().map_err(|e| format!("--backend {v}: {e}"))?);
            }
            "--threads" => {
                let v = value()?;
                threads = v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("--threads {v}: want a positive integer"))?;
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args {
        listen: listen.ok_or("--listen is required")?,
        backend: backend.ok_or("--backend is required")?,
        threads,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("pingora-bench: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };

    let conf = ServerConf {
        threads: args.threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    // No `Opt`: Pingora would parse this binary's own arguments.
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let conf: Arc<ServerConf> = server.configuration.clone();
    let mut proxy = pingora_proxy::http_proxy_service(
        &conf,
        Minimal {
            backend: args.backend,
        },
    );
    proxy.add_tcp(&args.listen);
    server.add_service(proxy);
    server.run_forever()
}
