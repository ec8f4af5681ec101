//! Metric kinds of our own for prometheus-client: a lock-free latency
//! histogram, an info gauge replaced as a whole, a counter read at scrape time.

use super::LATENCY_BUCKETS;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A fixed-bucket histogram of durations made of atomics only (no lock per sample).
#[derive(Clone, Default)]
pub struct LatencyHistogram(Arc<HistogramInner>);

struct HistogramInner {
    /// `LATENCY_BUCKETS` in nanoseconds.
    bounds_ns: [u64; LATENCY_BUCKETS.len()],
    /// Per-bucket (not cumulative) counts; the last one is `+Inf`.
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl Default for HistogramInner {
    fn default() -> Self {
        HistogramInner {
            bounds_ns: LATENCY_BUCKETS.map(|s| (s * 1e9).round() as u64),
            counts: Default::default(),
            sum_ns: AtomicU64::new(0),
        }
    }
}

impl LatencyHistogram {
    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = self.0.bounds_ns.partition_point(|b| *b < ns);
        self.0.counts[i].fetch_add(1, Ordering::Relaxed);
        self.0.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// `(sum in seconds, count, per-bucket counts with +Inf last)`.
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
        let mut count = 0;
        for (i, c) in self.0.counts.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            count += n;
            let le = LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((le, n));
        }
        let sum = self.0.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        (sum, count, buckets)
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Info-style gauge: one series `{hash="…"} 1`, replaced as a whole on change
/// (so a scrape never sees two versions, nor none).
#[derive(Clone, Default)]
pub(super) struct ConfigInfo(Arc<Mutex<Option<String>>>);

impl ConfigInfo {
    pub(super) fn set(&self, hash: &str) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(hash.to_string());
    }
}

impl std::fmt::Debug for ConfigInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConfigInfo")
    }
}

impl TypedMetric for ConfigInfo {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for ConfigInfo {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let hash = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(hash) = hash {
            encoder
                .encode_family(&[("hash", hash.as_str())])?
                .encode_gauge(&1i64)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LatencyHistogram")
    }
}

/// A counter read from a function at scrape time (state owned elsewhere).
#[derive(Clone, Copy)]
pub(super) struct FnCounter(pub(super) fn() -> u64);

impl std::fmt::Debug for FnCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnCounter")
    }
}

impl TypedMetric for FnCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for FnCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&(self.0)(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}
