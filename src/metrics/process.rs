//! The standard `process_*` metrics (as the Prometheus client libraries export
//! them), read from `/proc/self` at scrape time. A value that cannot be read
//! (not Linux, `/proc` not mounted) is left out rather than reported as 0.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

/// Collects `process_*` on each scrape.
#[derive(Debug)]
pub struct ProcessCollector {
    /// Unix time the process started, in seconds (fixed, so read once).
    start_time: Option<f64>,
}

impl ProcessCollector {
    pub fn new() -> ProcessCollector {
        // Without /proc/stat (systemd's `ProcSubset=pid` hides it), the time
        // the metrics were created, early in the process, stands in.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs_f64());
        ProcessCollector {
            start_time: start_time().or(now),
        }
    }
}

/// What `/proc/self/stat` says, in base units.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stat {
    cpu_seconds: f64,
    virtual_bytes: u64,
    resident_bytes: u64,
    /// Clock ticks after boot at which the process started.
    start_ticks: u64,
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf takes an integer name and reads no memory of ours.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn page_size() -> u64 {
    // SAFETY: as above.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p).ok().filter(|p| *p > 0).unwrap_or(4096)
}

/// Parses `/proc/<pid>/stat`: the fields after the parenthesised command name
/// (which may itself hold spaces and parentheses).
fn parse_stat(text: &str, ticks: f64, page: u64) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `fields[0]` is field 3 (state) of proc(5).
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let utime = field(14)?;
    let stime = field(15)?;
    Some(Stat {
        cpu_seconds: (utime + stime) as f64 / ticks,
        start_ticks: field(22)?,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)?.saturating_mul(page),
    })
}

fn read_stat() -> Option<Stat> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_stat(&text, clock_ticks(), page_size())
}

fn start_time() -> Option<f64> {
    let stat = read_stat()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let btime: u64 = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(btime as f64 + stat.start_ticks as f64 / clock_ticks())
}

fn open_fds() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

fn max_fds() -> Option<u64> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we pass.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) };
    (rc == 0).then_some(l.rlim_cur)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(s) = read_stat() {
            encoder
                .encode_descriptor(
                    "process_cpu",
                    "Total user and system CPU time spent",
                    Some(&Unit::Seconds),
                    MetricType::Counter,
                )?
                .encode_counter::<NoLabelSet, _, u64>(&s.cpu_seconds, None)?;
            encoder
                .encode_descriptor(
                    "process_resident_memory",
                    "Resident memory size",
                    Some(&Unit::Bytes),
                    MetricType::Gauge,
                )?
                .encode_gauge(&s.resident_bytes)?;
            encoder
                .encode_descriptor(
                    "process_virtual_memory",
                    "Virtual memory size",
                    Some(&Unit::Bytes),
                    MetricType::Gauge,
                )?
                .encode_gauge(&s.virtual_bytes)?;
        }
        if let Some(n) = open_fds() {
            encoder
                .encode_descriptor(
                    "process_open_fds",
                    "Open file descriptors",
                    None,
                    MetricType::Gauge,
                )?
                .encode_gauge(&n)?;
        }
        if let Some(n) = max_fds() {
            encoder
                .encode_descriptor(
                    "process_max_fds",
                    "Most file descriptors the process may open",
                    None,
                    MetricType::Gauge,
                )?
                .encode_gauge(&n)?;
        }
        if let Some(t) = self.start_time {
            encoder
                .encode_descriptor(
                    "process_start_time",
                    "Start time of the process since the Unix epoch",
                    Some(&Unit::Seconds),
                    MetricType::Gauge,
                )?
                .encode_gauge(&t)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_name() {
        let line = "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 777 104857600 2048 18446744073709551615";
        let s = parse_stat(line, 100.0, 4096).expect("parsed");
        assert_eq!(s.cpu_seconds, 3.0);
        assert_eq!(s.start_ticks, 777);
        assert_eq!(s.virtual_bytes, 104_857_600);
        assert_eq!(s.resident_bytes, 2048 * 4096);
        assert_eq!(parse_stat("garbage", 100.0, 4096), None);
    }

    #[test]
    fn reads_this_process() {
        let s = read_stat().expect("/proc/self/stat");
        assert!(s.resident_bytes > 0);
        assert!(open_fds().expect("fds") >= 3);
        let started = start_time().expect("start time");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        assert!(started > 1.7e9 && started <= now + 1.0, "{started} {now}");
    }
}
