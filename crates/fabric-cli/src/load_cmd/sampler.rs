//! Samples the server's memory, open files and database size: every second into a series
//! of bounded size for the report, and with `--samples` every interval as one JSON line of
//! a file, with the tasks finished in that interval.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::oneshot;

/// How often the server's `/metrics` is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Most samples kept in a series; past it every other one is dropped and the spacing of
/// new ones doubles, so a long soak keeps a bounded, evenly spaced series.
const MAX_SERIES: usize = 3600;
/// The line of the samples file growth is measured from: the first after the warm-up
/// (the tenth minute with samples a minute apart).
pub(super) const GROWTH_FROM_LINE: u64 = 10;

/// One reading of `/metrics` (and of the database file's size).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Sample {
    at_seconds: f64,
    pub(super) rss_bytes: Option<u64>,
    pub(super) open_fds: Option<u64>,
    pub(super) db_bytes: Option<u64>,
}

/// The `--samples` file: one JSON line every `every`, and a last one when the run ends.
pub(super) struct SampleLog {
    path: PathBuf,
    every: Duration,
    file: BufWriter<File>,
}

impl SampleLog {
    /// Creates (or truncates) the file at `path`.
    pub(super) fn create(path: PathBuf, every: Duration) -> std::io::Result<Self> {
        let file = BufWriter::new(File::create(&path)?);
        Ok(Self { path, every, file })
    }
}

/// What the samples file holds, for the report: its lines and the growth of each measure
/// from line [`GROWTH_FROM_LINE`] to the last line written while the run went on.
#[derive(Debug, Clone)]
pub(super) struct LogSummary {
    pub(super) path: PathBuf,
    pub(super) every: Duration,
    /// Lines written, the last (`"final": true`, when the run ended) included.
    pub(super) lines: u64,
    pub(super) from: Option<Sample>,
    pub(super) to: Option<Sample>,
    /// Why the file could not be written, if it could not.
    pub(super) error: Option<String>,
}

impl LogSummary {
    /// `(to - from) / from` of one measure, when both lines have it.
    pub(super) fn growth(&self, value: impl Fn(&Sample) -> Option<u64>) -> Option<f64> {
        let from = value(self.from.as_ref()?)?;
        let to = value(self.to.as_ref()?)?;
        (from > 0).then(|| (to as f64 - from as f64) / from as f64)
    }
}

/// The server's memory (and database size) over the run, bounded in size.
#[derive(Debug, Default)]
pub(super) struct Samples {
    series: Vec<Sample>,
    /// Only every `stride`-th reading joins the series.
    stride: u64,
    readings: u64,
    pub(super) rss: Extremes,
    pub(super) fds: Extremes,
    pub(super) db: Extremes,
    /// With `--samples`.
    pub(super) log: Option<LogSummary>,
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
        self.fds.add(sample.open_fds);
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

/// Reads the server's `/metrics` and the database file's size every second (and writes
/// the samples file).
pub(super) struct Sampler {
    http: reqwest::Client,
    metrics_url: String,
    db_file: Option<PathBuf>,
    log: Option<SampleLog>,
    /// Tasks of the run finished so far, as the driver counts them.
    finished: Arc<AtomicU64>,
}

/// Where the samples file's last line left off.
struct LineMark {
    at: Instant,
    finished: u64,
}

impl Sampler {
    pub(super) fn new(
        base: &str,
        db_file: Option<PathBuf>,
        log: Option<SampleLog>,
        finished: Arc<AtomicU64>,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self {
            http,
            metrics_url: format!("{base}/metrics"),
            db_file,
            log,
            finished,
        }
    }

    /// Samples until `stop`, then once more, and returns what it saw.
    pub(super) async fn run(mut self, mut stop: oneshot::Receiver<()>) -> Samples {
        let started = Instant::now();
        let mut samples = Samples {
            log: self.log.as_ref().map(|log| LogSummary {
                path: log.path.clone(),
                every: log.every,
                lines: 0,
                from: None,
                to: None,
                error: None,
            }),
            ..Samples::default()
        };
        let mut every = tokio::time::interval(SAMPLE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Without a samples file this timer is never polled.
        let log_every = self.log.as_ref().map_or(SAMPLE_EVERY, |log| log.every);
        let mut lines = tokio::time::interval_at(
            tokio::time::Instant::from_std(started) + log_every,
            log_every,
        );
        lines.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut mark = LineMark {
            at: started,
            finished: self.finished.load(Ordering::Relaxed),
        };
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = every.tick() => {
                    let sample = self.sample(started).await;
                    samples.push(sample);
                }
                _ = lines.tick(), if self.log.is_some() => {
                    let sample = self.sample(started).await;
                    self.line(&mut samples, &sample, &mut mark, false);
                }
            }
        }
        let sample = self.sample(started).await;
        samples.push(sample);
        if self.log.is_some() {
            self.line(&mut samples, &sample, &mut mark, true);
        }
        samples
    }

    /// Writes one line of the samples file: `sample` and the tasks finished since `mark`.
    fn line(&mut self, samples: &mut Samples, sample: &Sample, mark: &mut LineMark, last: bool) {
        let (Some(log), Some(summary)) = (&mut self.log, &mut samples.log) else {
            return;
        };
        if summary.error.is_some() {
            return;
        }
        let now = Instant::now();
        let finished = self.finished.load(Ordering::Relaxed);
        let interval = now.duration_since(mark.at).as_secs_f64();
        let in_interval = finished.saturating_sub(mark.finished);
        *mark = LineMark { at: now, finished };
        let mut line = json!({
            "elapsed_seconds": round3(sample.at_seconds),
            "rss_bytes": sample.rss_bytes,
            "open_fds": sample.open_fds,
            "store_bytes": sample.db_bytes,
            "finished": in_interval,
            "finished_total": finished,
            "interval_seconds": round3(interval),
            "tasks_per_second": (interval > 0.0).then(|| round3(in_interval as f64 / interval)),
        });
        if last {
            line["final"] = json!(true);
        }
        let written = writeln!(log.file, "{line}").and_then(|()| log.file.flush());
        if let Err(error) = written {
            summary.error = Some(format!("cannot write {}: {error}", log.path.display()));
            return;
        }
        summary.lines += 1;
        if !last {
            if summary.lines == GROWTH_FROM_LINE {
                summary.from = Some(*sample);
            }
            if summary.lines >= GROWTH_FROM_LINE {
                summary.to = Some(*sample);
            }
        }
    }

    async fn sample(&self, started: Instant) -> Sample {
        let at_seconds = started.elapsed().as_secs_f64();
        let metrics = match self.http.get(&self.metrics_url).send().await {
            Ok(response) => response.text().await.ok(),
            Err(_) => None,
        };
        let gauge = |name| metrics.as_deref().and_then(|m| gauge_of(m, name));
        Sample {
            at_seconds,
            rss_bytes: gauge("fabric_process_resident_memory_bytes"),
            open_fds: gauge("fabric_process_open_fds"),
            db_bytes: self.db_file.as_deref().and_then(db_size),
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The value of the unlabelled gauge `name` in a Prometheus text exposition.
fn gauge_of(metrics: &str, name: &str) -> Option<u64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse::<f64>().ok().map(|v| v as u64)
    })
}

/// The bytes of a SQLite database: the file plus its write-ahead log.
fn db_size(path: &Path) -> Option<u64> {
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
                ..Sample::default()
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
    fn gauges_are_read_from_the_exposition() {
        let text = "# HELP fabric_process_resident_memory_bytes x\nfabric_process_resident_memory_bytes 123456\nfabric_process_resident_memory_bytes_other 1\nfabric_process_open_fds 17\n";
        let rss = "fabric_process_resident_memory_bytes";
        assert_eq!(gauge_of(text, rss), Some(123_456));
        assert_eq!(gauge_of(text, "fabric_process_open_fds"), Some(17));
        assert_eq!(gauge_of("fabric_workers 4\n", rss), None);
    }

    #[test]
    fn the_samples_file_has_a_line_per_interval_and_growth_from_the_tenth() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("samples.jsonl");
        let log = SampleLog::create(path.clone(), Duration::from_secs(60)).unwrap();
        let finished = Arc::new(AtomicU64::new(0));
        let db = dir.path().join("db");
        std::fs::write(&db, vec![0u8; 1000]).unwrap();
        let mut sampler = Sampler::new("http://127.0.0.1:1", Some(db), Some(log), finished.clone());
        let started = Instant::now();
        let mut samples = Samples {
            log: Some(LogSummary {
                path: path.clone(),
                every: Duration::from_secs(60),
                lines: 0,
                from: None,
                to: None,
                error: None,
            }),
            ..Samples::default()
        };
        let mut mark = LineMark {
            at: started,
            finished: 0,
        };
        for minute in 1..=12u64 {
            finished.store(minute * 600, Ordering::Relaxed);
            let sample = Sample {
                at_seconds: (minute * 60) as f64,
                rss_bytes: Some(100 + minute),
                open_fds: Some(20),
                db_bytes: Some(1000),
            };
            sampler.line(&mut samples, &sample, &mut mark, false);
        }
        let last = Sample {
            at_seconds: 725.0,
            rss_bytes: Some(50),
            ..Sample::default()
        };
        sampler.line(&mut samples, &last, &mut mark, true);
        drop(sampler);
        let summary = samples.log.unwrap();
        assert_eq!(summary.lines, 13);
        // From the tenth line (110) to the last before the final one (112).
        let growth = summary.growth(|s| s.rss_bytes).unwrap();
        assert!((growth - 2.0 / 110.0).abs() < 1e-9, "{growth}");
        assert_eq!(summary.growth(|s| s.open_fds), Some(0.0));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 13);
        assert_eq!(lines[0]["finished"], 600);
        assert_eq!(lines[11]["finished_total"], 7200);
        assert_eq!(lines[11]["open_fds"], 20);
        assert_eq!(lines[12]["final"], true);
        assert!(lines[0].get("final").is_none());
        for key in [
            "elapsed_seconds",
            "rss_bytes",
            "store_bytes",
            "interval_seconds",
            "tasks_per_second",
        ] {
            assert!(lines[0].get(key).is_some(), "{key} in {}", lines[0]);
        }
    }
}
