//! Open-loop HTTP/1.1 load generator for `benches/load.sh`: latency at a fixed
//! offered rate (what wrk2 / `oha -q` measure; neither is packaged here).
//!
//!   cargo run --release --example fixed_rate -- --url http://127.0.0.1:8080/x \
//!       --rate 5000 --duration 10 [--connections 64] [-H 'Name: value']...
//!
//! Request `i` is due at `start + i / rate`. Up to `connections` keep-alive
//! connections take the due requests in order. Latency is counted from the due
//! time when every connection was still busy then (the wait for a free
//! connection is queueing the server caused: coordinated-omission correction),
//! else from the moment the request was written (the runtime's timer wakes a
//! connection up to ~1 ms late; that slack is the generator's, not the
//! server's).
//!
//! Prints one line: `sent=N ok=N non2xx=N errors=N rps=R p50_us=.. p90_us=..
//! p99_us=.. p999_us=.. max_us=..`.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

struct Args {
    url: http::Uri,
    rate: f64,
    duration: Duration,
    connections: usize,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

fn parse_args() -> Result<Args, String> {
    let mut url = None;
    let mut rate = None;
    let mut duration = Duration::from_secs(10);
    let mut connections = 64;
    let mut headers = vec![];
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--url" => url = Some(val()?.parse().map_err(|e| format!("--url: {e}"))?),
            "--rate" => rate = Some(val()?.parse().map_err(|e| format!("--rate: {e}"))?),
            "--duration" => {
                let v: f64 = val()?
                    .trim_end_matches('s')
                    .parse()
                    .map_err(|e| format!("--duration: {e}"))?;
                duration = Duration::from_secs_f64(v);
            }
            "--connections" | "-c" => {
                connections = val()?.parse().map_err(|e| format!("-c: {e}"))?;
            }
            "-H" | "--header" => {
                let h = val()?;
                let (k, v) = h.split_once(':').ok_or("-H wants 'Name: value'")?;
                headers.push((
                    k.trim().parse().map_err(|e| format!("-H {k}: {e}"))?,
                    v.trim().parse().map_err(|e| format!("-H {k}: {e}"))?,
                ));
            }
            "-h" | "--help" => {
                println!("fixed_rate --url URL --rate RPS [--duration SECS] [--connections N] [-H 'K: V']...");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    let rate: f64 = rate.ok_or("--rate is required")?;
    if rate <= 0.0 || connections == 0 {
        return Err("--rate and --connections must be positive".into());
    }
    Ok(Args {
        url: url.ok_or("--url is required")?,
        rate,
        duration,
        connections,
        headers,
    })
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    ok: u64,
    non2xx: u64,
    errors: u64,
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fixed_rate: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    let (tally, elapsed) = local.block_on(&rt, run(Rc::new(args)));
    let mut lat = tally.latencies_us;
    lat.sort_unstable();
    let pct = |p: f64| -> u32 {
        if lat.is_empty() {
            return 0;
        }
        let i = ((p / 100.0) * lat.len() as f64).ceil() as usize;
        lat[i.clamp(1, lat.len()) - 1]
    };
    println!(
        "sent={} ok={} non2xx={} errors={} rps={:.0} p50_us={} p90_us={} p99_us={} p999_us={} max_us={}",
        tally.ok + tally.non2xx + tally.errors,
        tally.ok,
        tally.non2xx,
        tally.errors,
        (tally.ok + tally.non2xx) as f64 / elapsed.as_secs_f64(),
        pct(50.0),
        pct(90.0),
        pct(99.0),
        pct(99.9),
        lat.last().copied().unwrap_or(0),
    );
}

async fn run(args: Rc<Args>) -> (Tally, Duration) {
    let total = (args.rate * args.duration.as_secs_f64()).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let next = Rc::new(Cell::new(0u64));
    let tally = Rc::new(RefCell::new(Tally {
        latencies_us: Vec::with_capacity(total as usize),
        ..Tally::default()
    }));
    let start = Instant::now() + Duration::from_millis(20);
    let mut tasks = vec![];
    for _ in 0..args.connections {
        tasks.push(tokio::task::spawn_local(conn_loop(
            args.clone(),
            next.clone(),
            total,
            start,
            interval,
            tally.clone(),
        )));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed();
    let t = std::mem::take(&mut *tally.borrow_mut());
    (t, elapsed)
}

type Sender = http1::SendRequest<Empty<Bytes>>;

async fn connect(args: &Args) -> Option<Sender> {
    let auth = args.url.authority()?;
    let addr = format!("{}:{}", auth.host(), auth.port_u16().unwrap_or(80));
    let stream = TcpStream::connect(addr).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Some(sender)
}

async fn conn_loop(
    args: Rc<Args>,
    next: Rc<Cell<u64>>,
    total: u64,
    start: Instant,
    interval: Duration,
    tally: Rc<RefCell<Tally>>,
) {
    let mut sender: Option<Sender> = None;
    let host = args
        .url
        .authority()
        .map(|a| http::HeaderValue::from_str(a.as_str()).expect("host"));
    let pq = args
        .url
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    loop {
        let i = next.get();
        if i >= total {
            return;
        }
        next.set(i + 1);
        let due = start + interval.mul_f64(i as f64);
        let free_at = Instant::now();
        if free_at < due {
            tokio::time::sleep_until(due.into()).await;
        }
        if sender.is_none() {
            sender = connect(&args).await;
        }
        let Some(s) = sender.as_mut() else {
            tally.borrow_mut().errors += 1;
            continue;
        };
        if s.ready().await.is_err() {
            sender = None;
            tally.borrow_mut().errors += 1;
            continue;
        }
        let mut req = http::Request::builder()
            .uri(pq.as_str())
            .body(Empty::<Bytes>::new())
            .expect("request");
        if let Some(h) = &host {
            req.headers_mut().insert(http::header::HOST, h.clone());
        }
        for (k, v) in &args.headers {
            req.headers_mut().insert(k.clone(), v.clone());
        }
        // Late because every connection was busy: count from the due time.
        let sent = Instant::now();
        let from = if free_at > due { due } else { sent };
        match s.send_request(req).await {
            Ok(resp) => {
                let status = resp.status();
                let body = resp.into_body().collect().await;
                let done = Instant::now();
                let mut t = tally.borrow_mut();
                if body.is_err() {
                    t.errors += 1;
                    sender = None;
                    continue;
                }
                t.latencies_us
                    .push(done.duration_since(from).as_micros().min(u32::MAX as u128) as u32);
                if status.is_success() {
                    t.ok += 1;
                } else {
                    t.non2xx += 1;
                }
            }
            Err(_) => {
                tally.borrow_mut().errors += 1;
                sender = None;
            }
        }
    }
}
