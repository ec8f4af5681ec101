//! Time of a configuration reload with 10,000 keys and 1,000 routes (issue 5
//! target: ≤ 50 ms in release).
//!
//!   cargo run --release --example reload_time [-- KEYS ROUTES RUNS]
//!
//! Generates the file once, then times, as the admin `/reload` does: read and
//! parse the file, and compile it against the long-lived state (whose upstream
//! pools an unchanged back end keeps). The first compile (start-up, which also
//! creates the pools) is printed apart from the reloads.

use keygate::config::{compile, source};
use keygate::policy::limits::LimitState;
use keygate::state::State;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

fn config(keys: usize, routes: usize) -> String {
    let services = routes.div_ceil(100).max(1);
    let plans = (keys / 100).max(1);
    let mut s = String::new();
    s.push_str(
        "[server]\nwatch = false\n\n[auth.hmac]\nalgorithms = [\"hmac-sha1\", \"hmac-sha256\"]\n\n",
    );
    for i in 0..keys {
        let _ = writeln!(
            s,
            "[[keys]]\nid = \"AKID{i:06}\"\nsecret = \"secret-{i:06}-0123456789abcdef\"\napp = \"app{}\"\n",
            i % 500
        );
    }
    for p in 0..plans {
        let members: Vec<String> = (0..keys)
            .filter(|k| k % plans == p)
            .map(|k| format!("\"AKID{k:06}\""))
            .collect();
        let _ = writeln!(
            s,
            "[[usage_plans]]\nname = \"plan{p}\"\nqps = 1000\nkeys = [{}]\n",
            members.join(", ")
        );
    }
    s.push_str(
        "[[plugins]]\nname = \"flow\"\ntype = \"traffic_control\"\nexpire_type = \"second\"\nexpire = 1\napi_rate_limit = 100000\nip_rate_limit = 1000\n\n",
    );
    s.push_str(
        "[[plugins]]\nname = \"cors\"\ntype = \"cors\"\nallow_origin = [\"https://app.example\"]\nallow_methods = [\"GET\", \"POST\"]\n\n",
    );
    let mut left = routes;
    for sv in 0..services {
        let plan_list: Vec<String> = (0..plans)
            .filter(|p| p % services == sv)
            .map(|p| format!("\"plan{p}\""))
            .collect();
        let _ = writeln!(
            s,
            "[[services]]\nname = \"svc{sv}\"\nqps = 100000\nusage_plans = [{}]\n",
            plan_list.join(", ")
        );
        for a in 0..100.min(left) {
            let _ = writeln!(
                s,
                "[[services.apis]]\nname = \"api{sv}-{a}\"\npath = \"/svc{sv}/v1/items{a}/{{id}}\"\nmethods = [\"GET\", \"POST\"]\nauth = \"hmac\"\nplugins = [\"flow\", \"cors\"]\n[services.apis.backend]\ntype = \"http\"\nurl = \"http://10.0.{}.{}:8080\"\npath = \"/items/{{id}}\"\ntimeout = \"5s\"\n",
                sv % 256,
                a % 8 + 1
            );
        }
        left = left.saturating_sub(100);
    }
    s
}

/// CPU time of this thread: unlike wall time, it does not grow when other
/// processes compete for the cores.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let keys = args.first().copied().unwrap_or(10_000);
    let routes = args.get(1).copied().unwrap_or(1_000);
    let runs = args.get(2).copied().unwrap_or(7).max(1);
    let dir = std::env::temp_dir().join(format!("keygate-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("keygate.toml");
    let text = config(keys, routes);
    std::fs::write(&path, &text).expect("write config");

    let state = State::new(&dir, 1024, LimitState::in_memory());
    let t = Instant::now();
    let (raw, hash) = source::read_file(&path).expect("parse");
    let parsed = t.elapsed();
    let gw = compile::compile(&raw, hash, &state).expect("compile");
    let first = t.elapsed();
    assert_eq!(gw.apis.len(), routes);
    let mut keep = vec![gw];

    let mut times = vec![];
    let mut parse_times = vec![];
    let mut cpu_times = vec![];
    for _ in 0..runs {
        let c = thread_cpu();
        let t = Instant::now();
        let (raw, hash) = source::read_file(&path).expect("parse");
        let p = t.elapsed();
        let gw = compile::compile(&raw, hash, &state).expect("compile");
        times.push(t.elapsed());
        cpu_times.push(thread_cpu() - c);
        parse_times.push(p);
        // The previous snapshot is dropped after the swap, as in a real reload.
        keep.push(gw);
        keep.remove(0);
    }
    times.sort();
    parse_times.sort();
    cpu_times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "config: {keys} keys, {routes} routes, {} KiB of TOML",
        text.len() / 1024
    );
    println!(
        "start-up: read+parse {:.1} ms, +compile {:.1} ms (creates upstream pools)",
        ms(parsed),
        ms(first)
    );
    println!(
        "reload ({runs} runs): median {:.1} ms (read+parse {:.1} ms), min {:.1} ms, max {:.1} ms",
        ms(times[times.len() / 2]),
        ms(parse_times[parse_times.len() / 2]),
        ms(times[0]),
        ms(times[times.len() - 1])
    );
    println!(
        "reload CPU time (this thread; the figure to compare on a busy machine): median {:.1} ms",
        ms(cpu_times[cpu_times.len() / 2])
    );
    let _ = std::fs::remove_dir_all(&dir);
}
