//! Resident memory of a proxy holding idle keep-alive connections (issue 5
//! target: keygate ≤ 30 MB with 1,000).
//!
//!   cargo run --release --example idle_conns -- --addr 127.0.0.1:8080 \
//!       --path /bench --pid PID [--connections 1000] [--hold SECS] [-H 'K: V']...
//!
//! Opens the connections, sends one keep-alive GET on each and reads its
//! answer, then leaves them all open and idle; prints the process's VmRSS
//! (and VmHWM) before and after, read from /proc/PID/status.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Read one response: the head, then Content-Length bytes of body.
fn read_response(s: &mut TcpStream) -> std::io::Result<u16> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk)?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(status);
        }
    }
}

fn main() {
    let mut addr = "127.0.0.1:8080".to_string();
    let mut path = "/".to_string();
    let mut pid = 0u32;
    let mut n = 1000usize;
    let mut hold = 0u64;
    let mut headers = vec![];
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let v = it.next().unwrap_or_default();
        match a.as_str() {
            "--addr" => addr = v,
            "--path" => path = v,
            "--pid" => pid = v.parse().expect("--pid"),
            "--connections" | "-c" => n = v.parse().expect("--connections"),
            "--hold" => hold = v.parse().expect("--hold"),
            "-H" => headers.push(v),
            _ => {
                eprintln!("usage: idle_conns --addr HOST:PORT --path P --pid PID [--connections N] [--hold SECS] [-H 'K: V']...");
                std::process::exit(2);
            }
        }
    }
    let rss0 = status_kib(pid, "VmRSS:");
    let mut extra = String::new();
    for h in &headers {
        extra.push_str(h);
        extra.push_str("\r\n");
    }
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}\r\n");
    let mut conns = Vec::with_capacity(n);
    let mut ok = 0;
    for _ in 0..n {
        let mut s = match TcpStream::connect(&addr) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("connect: {e}");
                break;
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        if s.write_all(req.as_bytes()).is_ok() {
            if let Ok(200) = read_response(&mut s) {
                ok += 1;
            }
        }
        conns.push(s);
    }
    std::thread::sleep(Duration::from_secs(1));
    let rss1 = status_kib(pid, "VmRSS:");
    let hwm = status_kib(pid, "VmHWM:");
    println!(
        "connections={} answered_200={ok} rss_before_kib={rss0} rss_idle_kib={rss1} rss_idle_mib={:.1} hwm_mib={:.1}",
        conns.len(),
        rss1 as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    if hold > 0 {
        std::thread::sleep(Duration::from_secs(hold));
    }
    drop(conns);
}
