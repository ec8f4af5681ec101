//! `[server]`, `[server.tls]` and `[log]`: the listeners, the limits of a
//! request, the trusted proxies and the certificates.

use crate::config::error::{err, ConfigError};
use crate::config::raw::{RawConfig, RawLog, RawServer};
use crate::policy::ip::TrustedProxies;
use crate::tls::CertStore;
use std::net::SocketAddr;
use std::path::Path;

pub(super) struct Server {
    pub trusted: TrustedProxies,
    pub certs: CertStore,
}

/// Validate the server-level settings that are bound once at start.
pub fn listen_addrs(raw: &RawServer) -> Result<Vec<SocketAddr>, Vec<ConfigError>> {
    let mut errors = vec![];
    let mut out = vec![];
    for (i, l) in raw.listen.iter().enumerate() {
        match l.parse::<SocketAddr>() {
            Ok(a) => out.push(a),
            Err(_) => errors.push(err(
                format!("server.listen[{i}]"),
                format!("{l:?} is not an address:port"),
            )),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// The port of the first `[server.tls]` listen address, when it parses.
pub(super) fn tls_port(raw: &RawServer) -> Option<u16> {
    raw.tls.as_ref().and_then(|t| {
        t.listen
            .first()
            .and_then(|l| l.parse::<SocketAddr>().ok())
            .map(|a| a.port())
    })
}

pub(super) fn compile(raw: &RawConfig, base: &Path, e: &mut Vec<ConfigError>) -> Server {
    let s = &raw.server;
    if let Err(mut le) = listen_addrs(s) {
        e.append(&mut le);
    }
    if let Some(a) = &s.admin {
        if a.parse::<SocketAddr>().is_err() {
            e.push(err("server.admin", format!("{a:?} is not an address:port")));
        }
    }
    let trusted = TrustedProxies::parse(&s.trusted_proxies).unwrap_or_else(|m| {
        e.push(err("server.trusted_proxies", m));
        TrustedProxies::default()
    });
    if s.max_body_bytes == 0 {
        e.push(err("server.max_body_bytes", "must be positive"));
    }
    if !(crate::budget::MIN_BYTES..=crate::budget::MAX_BYTES).contains(&s.max_buffered_bytes) {
        e.push(err(
            "server.max_buffered_bytes",
            "must be between 64 KiB and 1 TiB",
        ));
    }
    if s.max_header_bytes < 8192 {
        e.push(err("server.max_header_bytes", "must be at least 8192"));
    }
    if s.max_headers == 0 {
        e.push(err("server.max_headers", "must be positive"));
    }
    e.extend(crate::config::bounds::check(raw));
    let certs = match &s.tls {
        Some(tls) => {
            for (i, l) in tls.listen.iter().enumerate() {
                if l.parse::<SocketAddr>().is_err() {
                    e.push(err(
                        format!("server.tls.listen[{i}]"),
                        format!("{l:?} is not an address:port"),
                    ));
                }
            }
            if tls.certs.is_empty() {
                e.push(err(
                    "server.tls.certs",
                    "at least one certificate is needed",
                ));
            }
            CertStore::load(&tls.certs, base).unwrap_or_else(|msgs| {
                e.extend(msgs.into_iter().map(|m| err("server.tls", m)));
                CertStore::default()
            })
        }
        None => CertStore::default(),
    };
    Server { trusted, certs }
}

/// `[log]`: the rest of it is read at start by `logging`.
pub(super) fn log(raw: &RawLog, e: &mut Vec<ConfigError>) {
    raw.format.check("log.format", "", e);
}
