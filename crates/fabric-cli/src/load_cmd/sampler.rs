//! Samples the server's memory (and its database's size) every second, in a series of bounded size.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::oneshot;

/// How often the server's `/metrics` is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Most samples kept in a series; past it every other one is dropped and the spacing of
/// new ones doubles, so a long soak keeps a bounded, evenly spaced series.
const MAX_SERIES: usize = 3600;

/// One reading of `/metrics` (and of the database file's size).
#[derive(Debug, Clone, Copy)]
pub(super) struct Sample {
    at_seconds: f64,
    pub(super) rss_bytes: Option<u64>,
    pub(super) db_bytes: Option<u64>,
}

/// The server's memory (and database size) over the run, bounded in size.
#[derive(Debug, Default)]
pub(super) struct Samples {
    series: Vec<Sample>,
    /// Only every `stride`-th reading joins the series.
    stride: u64,
    readings: u64,
    pub(super) rss: Extremes,
    pub(super) db: Extremes,
}

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Extremes {
    pub(super) count: u64,
    pub(super) min: Option<u64>,
    pub(super) max: Option<u64>,
    pub(super) last: Option<u64>,
}

impl Extremes {
    fn add(&mut self, value: Option<u64>) {
        let Some(value) = value else { return };
        self.count += 1;
        self.min = Some(self.min.map_or(value, |m| m.min(value)));
        self.max = Some(self.max.map_or(value, |m| m.max(value)));
        self.last = Some(value);
    }
}

impl Samples {
    fn push(&mut self, sample: Sample) {
        self.rss.add(sample.rss_bytes);
        self.db.add(sample.db_bytes);
        let stride = self.stride.max(1);
        if self.readings.is_multiple_of(stride) {
            self.series.push(sample);
            if self.series.len() >= MAX_SERIES {
                let mut index = 0;
                self.series.retain(|_| {
                    index += 1;
                    index % 2 == 1
                });
                self.stride = stride * 2;
            }
        }
        self.readings += 1;
    }

    pub(super) fn series_json(&self, value: impl Fn(&Sample) -> Option<u64>) -> Value {
        let points: Vec<Value> = self
            .series
            .iter()
            .filter_map(|s| value(s).map(|v| json!([(s.at_seconds * 1000.0).round() / 1000.0, v])))
            .collect();
        Value::Array(points)
    }
}

/// Reads the server's `/metrics` and the database file's size every second.
pub(super) struct Sampler {
    http: reqwest::Client,
    metrics_url: String,
    db_file: Option<PathBuf>,
}

impl Sampler {
    pub(super) fn new(base: &str, db_file: Option<PathBuf>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self {
            http,
            metrics_url: format!("{base}/metrics"),
            db_file,
        }
    }

    /// Samples until `stop`, then once more, and returns what it saw.
    pub(super) async fn run(self, mut stop: oneshot::Receiver<()>) -> Samples {
        let started = Instant::now();
        let mut samples = Samples::default();
        let mut every = tokio::time::interval(SAMPLE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = every.tick() => {
                    let sample = self.sample(started).await;
                    samples.push(sample);
                }
            }
        }
        samples.push(self.sample(started).await);
        samples
    }

    async fn sample(&self, started: Instant) -> Sample {
        let at_seconds = started.elapsed().as_secs_f64();
        let rss_bytes = match self.http.get(&self.metrics_url).send().await {
            Ok(response) => response.text().await.ok().as_deref().and_then(rss_of),
            Err(_) => None,
        };
        Sample {
            at_seconds,
            rss_bytes,
            db_bytes: self.db_file.as_deref().and_then(db_size),
        }
    }
}

/// `fabric_process_resident_memory_bytes` in a Prometheus text exposition.
fn rss_of(metrics: &str) -> Option<u64> {
    metrics.lines().find_map(|line| {
        let value = line
            .strip_prefix("fabric_process_resident_memory_bytes")?
            .strip_prefix(' ')?;
        value.trim().parse::<f64>().ok().map(|v| v as u64)
    })
}

/// The bytes of a SQLite database: the file plus its write-ahead log.
fn db_size(path: &std::path::Path) -> Option<u64> {
    let main = std::fs::metadata(path).ok()?.len();
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal = std::fs::metadata(PathBuf::from(wal)).map_or(0, |m| m.len());
    Some(main + wal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_series_stays_bounded_and_evenly_spaced() {
        let mut samples = Samples::default();
        for i in 0..(MAX_SERIES as u64 * 5) {
            samples.push(Sample {
                at_seconds: i as f64,
                rss_bytes: Some(1000 + i),
                db_bytes: None,
            });
        }
        assert!(samples.series.len() < MAX_SERIES);
        assert_eq!(samples.rss.count, MAX_SERIES as u64 * 5);
        assert_eq!(samples.rss.min, Some(1000));
        let gaps: Vec<f64> = samples
            .series
            .windows(2)
            .map(|w| w[1].at_seconds - w[0].at_seconds)
            .collect();
        assert!(gaps.iter().all(|g| *g == gaps[0]), "{gaps:?}");
    }

    #[test]
    fn rss_is_read_from_the_exposition() {
        let text = "# HELP fabric_process_resident_memory_bytes x\nfabric_process_resident_memory_bytes 123456\nfabric_process_resident_memory_bytes_other 1\n";
        assert_eq!(rss_of(text), Some(123_456));
        assert_eq!(rss_of("fabric_workers 4\n"), None);
    }
}
