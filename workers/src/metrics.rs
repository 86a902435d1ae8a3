//! Pool-wide metrics. Every process adds to counters in one Redis hash, so a
//! single scrape of any api process shows the whole pool (a per-process
//! registry would need every worker to be scraped). Increments are summed in
//! memory and flushed about once a second, so the hot path never waits on
//! Redis.
//!
//! Series are stored by their full Prometheus name with labels, e.g.
//! `crm_calls_total{provider="hubspot",status="201"}`; histograms as their
//! `_bucket`, `_sum` and `_count` series.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncCommands;

use crate::error::Error;
use crate::queue::Queue;

/// Upper bounds (seconds) of the duration histograms.
pub const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram's series name and labels.
type HistogramKey = (String, Vec<(String, String)>);

/// One histogram's observations since the last flush, per bucket (not yet
/// cumulative).
#[derive(Default)]
struct Histogram {
    buckets: [i64; BUCKETS.len()],
    count: i64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if let Some(i) = BUCKETS.iter().position(|le| seconds <= *le) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }
}

#[derive(Default)]
struct Pending {
    counts: HashMap<String, i64>,
    sums: HashMap<String, f64>,
    /// Kept apart until the flush writes them as their `_bucket`, `_count`
    /// and `_sum` series: an observation then costs one map entry, not the
    /// fourteen formatted series names it stands for.
    histograms: HashMap<HistogramKey, Histogram>,
}

impl Pending {
    /// Moves the histograms into `counts` and `sums`, as the series they
    /// stand for (buckets cumulative, as Prometheus reads them).
    fn expand_histograms(&mut self) {
        for ((name, labels), h) in std::mem::take(&mut self.histograms) {
            let labels: Vec<(&str, &str)> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let bucket_name = format!("{name}_bucket");
            let mut below = 0;
            for (le, n) in BUCKETS.iter().zip(h.buckets) {
                below += n;
                if below == 0 {
                    continue;
                }
                let le = le.to_string();
                let mut l = labels.clone();
                l.push(("le", &le));
                *self.counts.entry(series(&bucket_name, &l)).or_default() += below;
            }
            let mut l = labels.clone();
            l.push(("le", "+Inf"));
            *self.counts.entry(series(&bucket_name, &l)).or_default() += h.count;
            *self
                .counts
                .entry(series(&format!("{name}_count"), &labels))
                .or_default() += h.count;
            *self
                .sums
                .entry(series(&format!("{name}_sum"), &labels))
                .or_default() += h.sum;
        }
    }
}

/// A handle to the pool-wide metrics. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    queue: Queue,
    pending: Arc<Mutex<Pending>>,
}

/// Formats `name{k="v",…}`, escaping label values.
pub fn series(name: &str, labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return name.to_owned();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}=\"{}\"",
                v.replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n")
            )
        })
        .collect();
    format!("{name}{{{}}}", inner.join(","))
}

impl Metrics {
    /// Metrics kept in the queue's Redis and namespace; starts the flusher.
    pub fn new(queue: &Queue) -> Self {
        let m = Self {
            queue: queue.clone(),
            pending: Arc::default(),
        };
        let weak = Arc::downgrade(&m.pending);
        let q = queue.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let Some(p) = weak.upgrade() else { return };
                let handle = Metrics {
                    queue: q.clone(),
                    pending: p,
                };
                if let Err(e) = handle.flush().await {
                    tracing::warn!(error = %e, "flushing metrics failed");
                }
            }
        });
        m
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `n` to a counter.
    pub fn add(&self, name: &str, labels: &[(&str, &str)], n: i64) {
        *self.lock().counts.entry(series(name, labels)).or_default() += n;
    }

    /// Adds one to a counter.
    pub fn inc(&self, name: &str, labels: &[(&str, &str)]) {
        self.add(name, labels, 1);
    }

    /// Records one observation of a duration histogram.
    pub fn observe(&self, name: &str, labels: &[(&str, &str)], seconds: f64) {
        let key = (
            name.to_owned(),
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        self.lock()
            .histograms
            .entry(key)
            .or_default()
            .observe(seconds);
    }

    /// Writes what was counted since the last flush.
    ///
    /// # Errors
    /// When Redis fails (the increments are then kept for the next flush).
    pub async fn flush(&self) -> Result<(), Error> {
        let mut taken = std::mem::take(&mut *self.lock());
        taken.expand_histograms();
        if taken.counts.is_empty() && taken.sums.is_empty() {
            return Ok(());
        }
        let key = self.queue.keys.metrics();
        let mut pipe = redis::pipe();
        for (k, v) in &taken.counts {
            pipe.hincr(&key, k, *v).ignore();
        }
        for (k, v) in &taken.sums {
            pipe.cmd("HINCRBYFLOAT").arg(&key).arg(k).arg(*v).ignore();
        }
        let mut conn = self.queue.conn.clone();
        if let Err(e) = pipe.query_async::<()>(&mut conn).await {
            let mut p = self.lock();
            for (k, v) in taken.counts {
                *p.counts.entry(k).or_default() += v;
            }
            for (k, v) in taken.sums {
                *p.sums.entry(k).or_default() += v;
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// Every stored series with its value.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn read(&self) -> Result<Vec<(String, f64)>, Error> {
        let mut conn = self.queue.conn.clone();
        let all: HashMap<String, String> = conn.hgetall(self.queue.keys.metrics()).await?;
        let mut out: Vec<(String, f64)> = all
            .into_iter()
            .filter_map(|(k, v)| v.parse::<f64>().ok().map(|v| (k, v)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_written_as_cumulative_bucket_series() {
        let mut p = Pending::default();
        let key: HistogramKey = ("d_seconds".into(), vec![("q".into(), "a".into())]);
        let h = p.histograms.entry(key).or_default();
        for seconds in [0.003, 0.02, 20.0] {
            h.observe(seconds);
        }
        p.expand_histograms();
        let count = |le: &str| {
            p.counts
                .get(&format!("d_seconds_bucket{{q=\"a\",le=\"{le}\"}}"))
                .copied()
        };
        assert_eq!(count("0.005"), Some(1));
        assert_eq!(count("0.01"), Some(1));
        assert_eq!(count("0.025"), Some(2));
        assert_eq!(count("10"), Some(2));
        assert_eq!(count("+Inf"), Some(3));
        assert_eq!(p.counts.get("d_seconds_count{q=\"a\"}"), Some(&3));
        let sum = p.sums["d_seconds_sum{q=\"a\"}"];
        assert!((sum - 20.023).abs() < 1e-9, "{sum}");
        assert!(p.histograms.is_empty());
    }

    #[test]
    fn series_escape_label_values() {
        assert_eq!(series("x_total", &[]), "x_total");
        assert_eq!(
            series("x", &[("a", "b\"c"), ("d", "e")]),
            "x{a=\"b\\\"c\",d=\"e\"}"
        );
    }
}
