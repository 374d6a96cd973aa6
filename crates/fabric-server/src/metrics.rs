//! Prometheus metrics: counters and histograms kept with atomics on the hot paths, and the
//! text exposition of `/metrics`, which adds gauges read at scrape time (queue depth,
//! running attempts, module cache, process RSS, CPU and file descriptors).

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fabric_sandbox::CacheStats;
use fabric_store::Stats;
use fabric_types::{Attempt, Outcome, Priority, TaskState};

/// Upper bounds of the latency histograms, in seconds (50 µs to 60 s).
const SECONDS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Upper bounds of the fuel histogram (1k to 100G units).
const FUEL: &[f64] = &[1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11];
/// Upper bounds of the memory histogram (64 KiB to 4 GiB).
const BYTES: &[f64] = &[
    65_536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
    268_435_456.0,
    1_073_741_824.0,
    4_294_967_296.0,
];

/// A cumulative histogram with fixed buckets.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    /// The sum, as `f64` bits.
    sum: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    pub fn observe(&self, value: f64) {
        if let Some(bucket) = self.bounds.iter().position(|bound| value <= *bound) {
            self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let sum = f64::from_bits(self.sum.load(Ordering::Relaxed));
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// The store operations whose latency is measured.
#[derive(Debug, Clone, Copy)]
pub enum StoreOp {
    Insert,
    Claim,
    Complete,
    Heartbeat,
    Cancel,
    Maintenance,
    ModulePut,
}

impl StoreOp {
    const ALL: [StoreOp; 7] = [
        StoreOp::Insert,
        StoreOp::Claim,
        StoreOp::Complete,
        StoreOp::Heartbeat,
        StoreOp::Cancel,
        StoreOp::Maintenance,
        StoreOp::ModulePut,
    ];

    fn as_str(self) -> &'static str {
        match self {
            StoreOp::Insert => "task_insert",
            StoreOp::Claim => "task_claim",
            StoreOp::Complete => "task_complete",
            StoreOp::Heartbeat => "task_heartbeat",
            StoreOp::Cancel => "task_cancel",
            StoreOp::Maintenance => "maintenance",
            StoreOp::ModulePut => "module_put",
        }
    }
}

/// Every metric the server keeps.
#[derive(Debug)]
pub struct Metrics {
    submitted: [AtomicU64; 5],
    finished: [AtomicU64; TaskState::ALL.len()],
    attempts: [AtomicU64; 9],
    attempt_seconds: Histogram,
    fuel: Histogram,
    peak_memory: Histogram,
    spawn_seconds: Histogram,
    store_commit: Vec<Histogram>,
    rpc_calls: Mutex<std::collections::BTreeMap<(String, &'static str), u64>>,
    rpc_batches: AtomicU64,
    events_dropped: AtomicU64,
    /// Outbound requests by (policy, decision); policies are the operator's, so few.
    egress_requests: Mutex<std::collections::BTreeMap<(String, &'static str), u64>>,
    /// Time to a response's headers, by policy.
    egress_seconds: Mutex<std::collections::BTreeMap<String, Histogram>>,
    /// The agents' KPIs, by module and name (capped).
    pub kpis: crate::kpi_metrics::KpiMetrics,
    /// Schedule ticks this node fired, by result.
    pub schedules: crate::schedules::FiringCounts,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            submitted: Default::default(),
            finished: Default::default(),
            attempts: Default::default(),
            attempt_seconds: Histogram::new(SECONDS),
            fuel: Histogram::new(FUEL),
            peak_memory: Histogram::new(BYTES),
            spawn_seconds: Histogram::new(SECONDS),
            store_commit: StoreOp::ALL
                .iter()
                .map(|_| Histogram::new(SECONDS))
                .collect(),
            rpc_calls: Mutex::default(),
            rpc_batches: AtomicU64::new(0),
            events_dropped: AtomicU64::new(0),
            egress_requests: Mutex::default(),
            egress_seconds: Mutex::default(),
            kpis: crate::kpi_metrics::KpiMetrics::new(),
            schedules: Default::default(),
        }
    }
}

/// What `/metrics` reads at scrape time.
#[derive(Debug, Clone, Copy)]
pub struct Gauges {
    pub stats: Option<Stats>,
    pub running: usize,
    pub workers: u32,
    pub cache: CacheStats,
    pub ready: bool,
    /// This node runs the maintenance services (the only one among nodes sharing a store).
    pub leader: bool,
}

impl Metrics {
    pub fn task_submitted(&self, priority: Priority) {
        self.submitted[usize::from(priority.rank())].fetch_add(1, Ordering::Relaxed);
    }

    pub fn task_finished(&self, state: TaskState) {
        if let Some(index) = TaskState::ALL.iter().position(|s| *s == state) {
            self.finished[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn attempt_ended(&self, attempt: &Attempt) {
        if let Some(index) = Outcome::ALL.iter().position(|o| *o == attempt.outcome) {
            self.attempts[index].fetch_add(1, Ordering::Relaxed);
        }
        if attempt.outcome != Outcome::Lost {
            self.attempt_seconds
                .observe(attempt.usage.wall_ms as f64 / 1000.0);
            self.fuel.observe(attempt.usage.fuel_consumed as f64);
            self.peak_memory
                .observe(attempt.usage.peak_memory_bytes as f64);
        }
    }

    pub fn spawned(&self, took: Duration) {
        self.spawn_seconds.observe(took.as_secs_f64());
    }

    /// One outbound request of a guest: counted by policy (`none` when no policy matched)
    /// and decision, and timed to its response when it was answered.
    pub fn egress(&self, event: &fabric_sandbox::EgressEvent) {
        let policy = event.policy.clone().unwrap_or_else(|| "none".into());
        if let Some(took) = event.elapsed {
            self.egress_seconds
                .lock()
                .expect("metrics lock")
                .entry(policy.clone())
                .or_insert_with(|| Histogram::new(SECONDS))
                .observe(took.as_secs_f64());
        }
        *self
            .egress_requests
            .lock()
            .expect("metrics lock")
            .entry((policy, event.decision.as_str()))
            .or_insert(0) += 1;
    }

    pub fn store_op(&self, op: StoreOp, took: Duration) {
        let index = StoreOp::ALL
            .iter()
            .position(|o| o.as_str() == op.as_str())
            .unwrap_or(0);
        self.store_commit[index].observe(took.as_secs_f64());
    }

    /// One JSON-RPC call answered; `error` is its error code, if any.
    pub fn rpc_call(&self, method: &str, error: Option<i64>) {
        let known = crate::methods::METHODS.iter().any(|m| m.name == method);
        let method = if known { method } else { "unknown" };
        let result = if error.is_some() { "error" } else { "ok" };
        let mut calls = self.rpc_calls.lock().expect("metrics lock");
        *calls.entry((method.to_string(), result)).or_default() += 1;
    }

    pub fn rpc_batch(&self, _len: usize) {
        self.rpc_batches.fetch_add(1, Ordering::Relaxed);
    }

    pub fn events_dropped(&self, count: u64) {
        self.events_dropped.fetch_add(count, Ordering::Relaxed);
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self, gauges: Gauges) -> String {
        let mut out = String::with_capacity(16 << 10);
        let o = &mut out;
        header(
            o,
            "fabric_tasks_submitted_total",
            "counter",
            "Tasks accepted by task.submit(_batch), by priority (deduplicated submissions not counted).",
        );
        for (priority, count) in Priority::ALL.iter().zip(&self.submitted) {
            let _ = writeln!(
                o,
                "fabric_tasks_submitted_total{{priority=\"{priority}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        header(
            o,
            "fabric_tasks_finished_total",
            "counter",
            "Tasks that reached a terminal state on this node, by state.",
        );
        for (state, count) in TaskState::ALL.iter().zip(&self.finished) {
            if state.is_terminal() {
                let _ = writeln!(
                    o,
                    "fabric_tasks_finished_total{{state=\"{state}\"}} {}",
                    count.load(Ordering::Relaxed)
                );
            }
        }
        header(
            o,
            "fabric_attempts_total",
            "counter",
            "Attempts that ended on this node, by outcome.",
        );
        for (outcome, count) in Outcome::ALL.iter().zip(&self.attempts) {
            let _ = writeln!(
                o,
                "fabric_attempts_total{{outcome=\"{outcome}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        header(
            o,
            "fabric_attempt_duration_seconds",
            "histogram",
            "Wall-clock time of attempts, instantiation included.",
        );
        self.attempt_seconds
            .render(o, "fabric_attempt_duration_seconds", "");
        header(
            o,
            "fabric_attempt_fuel_consumed",
            "histogram",
            "Fuel (about one unit per Wasm instruction) consumed by attempts.",
        );
        self.fuel.render(o, "fabric_attempt_fuel_consumed", "");
        header(
            o,
            "fabric_attempt_peak_memory_bytes",
            "histogram",
            "Peak linear memory of attempts.",
        );
        self.peak_memory
            .render(o, "fabric_attempt_peak_memory_bytes", "");
        header(
            o,
            "fabric_store_commit_duration_seconds",
            "histogram",
            "Latency of store writes (each a committed transaction or a share of a group commit), by operation.",
        );
        for (op, histogram) in StoreOp::ALL.iter().zip(&self.store_commit) {
            histogram.render(
                o,
                "fabric_store_commit_duration_seconds",
                &format!("op=\"{}\"", op.as_str()),
            );
        }
        header(
            o,
            "fabric_spawn_duration_seconds",
            "histogram",
            "Time from the start of an attempt until its guest is instantiated and about to run.",
        );
        self.spawn_seconds
            .render(o, "fabric_spawn_duration_seconds", "");
        header(
            o,
            "fabric_egress_requests_total",
            "counter",
            "Guests' outbound HTTP requests, by egress policy (none: no policy matched) and decision (answered, failed, denied).",
        );
        for ((policy, decision), count) in self.egress_requests.lock().expect("metrics lock").iter()
        {
            let _ = writeln!(
                o,
                "fabric_egress_requests_total{{policy=\"{policy}\",decision=\"{decision}\"}} {count}"
            );
        }
        header(
            o,
            "fabric_egress_response_duration_seconds",
            "histogram",
            "Time from a guest's outbound request to its response's headers, by egress policy.",
        );
        for (policy, histogram) in self.egress_seconds.lock().expect("metrics lock").iter() {
            histogram.render(
                o,
                "fabric_egress_response_duration_seconds",
                &format!("policy=\"{policy}\""),
            );
        }
        header(
            o,
            "fabric_rpc_calls_total",
            "counter",
            "JSON-RPC calls answered, by method and result.",
        );
        for ((method, result), count) in self.rpc_calls.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                o,
                "fabric_rpc_calls_total{{method=\"{method}\",result=\"{result}\"}} {count}"
            );
        }
        header(
            o,
            "fabric_rpc_batches_total",
            "counter",
            "JSON-RPC batch requests answered.",
        );
        let _ = writeln!(
            o,
            "fabric_rpc_batches_total {}",
            self.rpc_batches.load(Ordering::Relaxed)
        );
        header(
            o,
            "fabric_metrics_events_dropped_total",
            "counter",
            "Task events the metrics missed because they fell behind.",
        );
        let _ = writeln!(
            o,
            "fabric_metrics_events_dropped_total {}",
            self.events_dropped.load(Ordering::Relaxed)
        );

        if let Some(stats) = gauges.stats {
            header(
                o,
                "fabric_queue_depth_tasks",
                "gauge",
                "Queued tasks (all nodes of the store), by priority.",
            );
            for (priority, count) in Priority::ALL.iter().zip(stats.queued_by_priority) {
                let _ = writeln!(
                    o,
                    "fabric_queue_depth_tasks{{priority=\"{priority}\"}} {count}"
                );
            }
            header(
                o,
                "fabric_scheduled_tasks",
                "gauge",
                "Tasks waiting for their run_at or a retry backoff.",
            );
            let _ = writeln!(o, "fabric_scheduled_tasks {}", stats.scheduled);
            header(
                o,
                "fabric_waiting_tasks",
                "gauge",
                "Tasks waiting for the tasks they run after.",
            );
            let _ = writeln!(o, "fabric_waiting_tasks {}", stats.waiting);
        }
        header(
            o,
            "fabric_running_attempts",
            "gauge",
            "Attempts running on this node now.",
        );
        let _ = writeln!(o, "fabric_running_attempts {}", gauges.running);
        header(
            o,
            "fabric_workers",
            "gauge",
            "The most attempts that may run at once on this node.",
        );
        let _ = writeln!(o, "fabric_workers {}", gauges.workers);
        header(
            o,
            "fabric_ready",
            "gauge",
            "1 when the server accepts work (see /readyz).",
        );
        let _ = writeln!(o, "fabric_ready {}", u8::from(gauges.ready));
        header(
            o,
            "fabric_maintenance_leader",
            "gauge",
            "1 on the node that runs rescue, expiry and pruning for the store.",
        );
        let _ = writeln!(o, "fabric_maintenance_leader {}", u8::from(gauges.leader));
        header(
            o,
            "fabric_module_cache_hits_total",
            "counter",
            "Module loads answered from the in-memory cache.",
        );
        let _ = writeln!(o, "fabric_module_cache_hits_total {}", gauges.cache.hits);
        header(
            o,
            "fabric_module_cache_misses_total",
            "counter",
            "Module loads that deserialized or compiled.",
        );
        let _ = writeln!(
            o,
            "fabric_module_cache_misses_total {}",
            gauges.cache.misses
        );
        header(
            o,
            "fabric_module_cache_compiles_total",
            "counter",
            "Module loads that compiled (no usable precompiled artifact).",
        );
        let _ = writeln!(
            o,
            "fabric_module_cache_compiles_total {}",
            gauges.cache.compiles
        );
        header(
            o,
            "fabric_module_cache_bytes",
            "gauge",
            "Approximate bytes of compiled code held in memory.",
        );
        let _ = writeln!(o, "fabric_module_cache_bytes {}", gauges.cache.bytes);
        self.kpis.render(o);
        self.schedules.render(o);
        process(o);
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Linux's USER_HZ, the unit of CPU times in `/proc/self/stat` (100 on every mainstream
/// architecture).
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;
const PAGE_BYTES: u64 = 4096;

/// Process gauges from `/proc/self` (absent where `/proc` is not readable).
fn process(out: &mut String) {
    if let Some(rss) = read_rss_bytes() {
        header(
            out,
            "fabric_process_resident_memory_bytes",
            "gauge",
            "Resident set size of this process.",
        );
        let _ = writeln!(out, "fabric_process_resident_memory_bytes {rss}");
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name (which is in parentheses and may hold spaces).
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |index: usize| fields.get(index).and_then(|f| f.parse::<u64>().ok());
        if let (Some(user), Some(system)) = (ticks(11), ticks(12)) {
            header(
                out,
                "fabric_process_cpu_seconds_total",
                "counter",
                "User and system CPU time of this process.",
            );
            let seconds = (user + system) as f64 / CLOCK_TICKS_PER_SECOND;
            let _ = writeln!(out, "fabric_process_cpu_seconds_total {seconds}");
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        header(
            out,
            "fabric_process_open_fds",
            "gauge",
            "Open file descriptors of this process.",
        );
        let _ = writeln!(out, "fabric_process_open_fds {}", fds.count());
    }
}

/// Resident set size of this process, from `/proc/self/statm`.
pub fn read_rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * PAGE_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_sum_their_observations() {
        let histogram = Histogram::new(&[1.0, 10.0]);
        for value in [0.5, 2.0, 3.0, 100.0] {
            histogram.observe(value);
        }
        let mut out = String::new();
        histogram.render(&mut out, "x_seconds", "op=\"a\"");
        assert!(
            out.contains("x_seconds_bucket{op=\"a\",le=\"1\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{op=\"a\",le=\"10\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{op=\"a\",le=\"+Inf\"} 4\n"),
            "{out}"
        );
        assert!(out.contains("x_seconds_sum{op=\"a\"} 105.5\n"), "{out}");
        assert!(out.contains("x_seconds_count{op=\"a\"} 4\n"), "{out}");
    }

    #[test]
    fn the_exposition_names_every_required_family_with_units() {
        let metrics = Metrics::default();
        metrics.task_submitted(Priority::High);
        let mut attempt = Attempt::new(Outcome::Timeout);
        attempt.usage.wall_ms = 1500;
        metrics.attempt_ended(&attempt);
        metrics.task_finished(TaskState::Failed);
        metrics.store_op(StoreOp::Insert, Duration::from_micros(300));
        metrics.spawned(Duration::from_micros(20));
        let text = metrics.render(Gauges {
            stats: Some(Stats::default()),
            running: 3,
            workers: 8,
            cache: CacheStats::default(),
            ready: true,
            leader: true,
        });
        for line in [
            "fabric_tasks_submitted_total{priority=\"high\"} 1",
            "fabric_tasks_finished_total{state=\"failed\"} 1",
            "fabric_attempts_total{outcome=\"timeout\"} 1",
            "fabric_attempt_duration_seconds_bucket{le=\"2.5\"} 1",
            "fabric_store_commit_duration_seconds_count{op=\"task_insert\"} 1",
            "fabric_spawn_duration_seconds_bucket{le=\"0.00005\"} 1",
            "fabric_queue_depth_tasks{priority=\"critical\"} 0",
            "fabric_running_attempts 3",
            "fabric_maintenance_leader 1",
            "fabric_module_cache_hits_total 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(text.contains("fabric_process_resident_memory_bytes "));
        assert!(text.contains("fabric_process_open_fds "));
        assert!(text.contains("fabric_process_cpu_seconds_total "));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("fabric_"), "{line}");
        }
    }
}
