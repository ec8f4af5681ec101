//! Memory of per-IP limiter state under a million distinct client IPs.
//! `cargo run --release --example rss_million_ips`

use http::{HeaderMap, Method};
use keygate::config::compile;
use keygate::policy::limits::{LimitRequest, LimitState, Timestamp};
use keygate::state::State;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let cfg = r#"
[[plugins]]
name = "per-ip"
type = "traffic_control"
expire_type = "second"
expire = 10
api_rate_limit = 1000000000
ip_rate_limit = 100
[[services]]
name = "s"
[[services.apis]]
name = "a"
path = "/"
plugins = ["per-ip"]
[services.apis.backend]
type = "mock"
"#;
    let raw = compile::parse(cfg).expect("parse");
    let limits = LimitState::in_memory();
    let state = State::new(std::path::Path::new("."), 16, limits.clone());
    let gw = compile::compile(&raw, "x".into(), &state).expect("compile");
    let api = &gw.apis[0];
    let headers = HeaderMap::new();
    let before = rss_kib();
    let now = Timestamp::now();
    for i in 0..1_000_000u32 {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i));
        let req = LimitRequest {
            key_id: None,
            app: None,
            plan: None,
            client_ip: ip,
            method: &Method::GET,
            path: "/",
            headers: &headers,
            query: None,
        };
        let _ = api.limits.check(&req, now);
    }
    let full = rss_kib();
    let stats = limits.stats();
    let pruned = limits.prune(now.plus(Duration::from_secs(60)));
    let after = rss_kib();
    println!("RSS before: {} MiB", before / 1024);
    println!(
        "RSS with 1,000,000 distinct client IPs: {} MiB (+{} MiB, {} entries in {} tables)",
        full / 1024,
        (full - before) / 1024,
        stats.entries,
        stats.tables
    );
    println!(
        "pruned {pruned} idle entries; RSS after prune: {} MiB",
        after / 1024
    );
}
