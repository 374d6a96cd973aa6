//! What `fabric load` prints: one JSON object or a table.

use std::time::Duration;

use fabric_types::{Outcome, TaskState};
use serde_json::{Value, json};

use super::driver::{Amount, Plan};
use super::sampler::{GROWTH_FROM_LINE, Sample, Samples};
use super::tally::Tally;
use crate::client_cmd::format;

/// Everything `fabric load` prints.
#[derive(Debug)]
pub(super) struct Report {
    pub(super) server: String,
    pub(super) embedded: bool,
    pub(super) module: String,
    pub(super) plan: Plan,
    pub(super) elapsed: Duration,
    pub(super) tally: Tally,
    pub(super) samples: Samples,
}

impl Report {
    fn states(&self) -> serde_json::Map<String, Value> {
        TaskState::ALL
            .iter()
            .zip(self.tally.states)
            .filter(|(_, n)| *n > 0)
            .map(|(state, n)| (state.to_string(), json!(n)))
            .collect()
    }

    /// Where each task's `created_at` came from: the task read back, its id, or the
    /// client's clock when the submit call was sent.
    fn created_at_from(&self) -> &'static str {
        if self.plan.read_back {
            "task"
        } else if self.tally.created_from_id {
            "task_id"
        } else {
            "client_clock"
        }
    }

    /// What makes the exit status 1 although the run reached its report: tasks given up
    /// on, with `--mix` tasks lost or ended otherwise than their kind must, a samples file
    /// that could not be written.
    pub(super) fn problems(&self) -> Vec<String> {
        let t = &self.tally;
        let mut problems = Vec::new();
        if t.unfinished > 0 {
            problems.push(format!("{} tasks never finished", t.unfinished));
        }
        if let Some(mix) = &t.mix {
            if t.lost > 0 {
                problems.push(format!(
                    "{} tasks were lost (gone before their end was seen)",
                    t.lost
                ));
            }
            if mix.mismatched() > 0 {
                problems.push(format!(
                    "{} tasks ended otherwise than their kind must",
                    mix.mismatched()
                ));
            }
        }
        if let Some(error) = self.samples.log.as_ref().and_then(|l| l.error.as_ref()) {
            problems.push(error.clone());
        }
        problems
    }

    /// The samples file's summary: its lines and each measure's growth from the tenth.
    fn samples_json(&self) -> Option<Value> {
        let log = self.samples.log.as_ref()?;
        let growth = |value: fn(&Sample) -> Option<u64>| log.growth(value).map(round4);
        Some(json!({
            "file": log.path.display().to_string(),
            "every_seconds": log.every.as_secs_f64(),
            "lines": log.lines,
            "growth_from_line": GROWTH_FROM_LINE,
            "growth": {
                "rss_bytes": growth(|s| s.rss_bytes),
                "open_fds": growth(|s| s.open_fds),
                "store_bytes": growth(|s| s.db_bytes),
            },
        }))
    }

    fn outcomes(&self) -> serde_json::Map<String, Value> {
        Outcome::ALL
            .iter()
            .zip(self.tally.outcomes)
            .filter(|(_, n)| *n > 0)
            .map(|(outcome, n)| (outcome.to_string(), json!(n)))
            .collect()
    }

    pub(super) fn to_json(&self) -> Value {
        let t = &self.tally;
        let s = &self.samples;
        let (tasks, duration) = match self.plan.amount {
            Amount::Tasks(n) => (Some(n), None),
            Amount::Duration(d) => (None, Some(d.as_secs_f64())),
        };
        let mut report = json!({
            "server": self.server,
            "embedded": self.embedded,
            "module": self.module,
            "tasks": tasks,
            "duration_seconds": duration,
            "batch": self.plan.batch,
            "concurrency": self.plan.concurrency,
            "max_pending": self.plan.window,
            "submitted": t.submitted,
            "finished": t.finished,
            "read_back": t.read_back,
            "lost": t.lost,
            "unfinished": t.unfinished,
            "states": self.states(),
            "outcomes": self.outcomes(),
            "elapsed_seconds": (self.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            "throughput_per_second": t.throughput().map(|x| x.round()),
            "collected_by": if self.plan.read_back { "task.list" } else { "task.subscribe" },
            "created_at_from": self.created_at_from(),
            "latency_ms": {
                "submit_to_start": t.to_start.to_json(),
                "submit_to_finish": t.to_finish.to_json(),
                "client_submit_to_event": t.client_to_event.to_json(),
                "submit_call": t.submit_call.to_json(),
            },
            "rss_bytes": {
                "samples": s.rss.count,
                "min": s.rss.min,
                "max": s.rss.max,
                "last": s.rss.last,
                "series": s.series_json(|x| x.rss_bytes),
            },
            "open_fds": {
                "samples": s.fds.count,
                "min": s.fds.min,
                "max": s.fds.max,
                "last": s.fds.last,
            },
        });
        if let Some(mix) = &t.mix {
            report["mix"] = mix.to_json();
        }
        if let Some(samples) = self.samples_json() {
            report["samples"] = samples;
        }
        if s.db.count > 0 {
            report["db_bytes"] = json!({
                "samples": s.db.count,
                "min": s.db.min,
                "max": s.db.max,
                "last": s.db.last,
                "series": s.series_json(|x| x.db_bytes),
            });
        }
        report
    }

    pub(super) fn table(&self) -> String {
        let t = &self.tally;
        let s = &self.samples;
        let plan = &self.plan;
        let amount = match plan.amount {
            Amount::Tasks(n) => format!("{n} tasks"),
            Amount::Duration(d) => format!("{} s of tasks", d.as_secs_f64()),
        };
        let mut text = format!(
            "fabric load: {amount} of {} in batches of {}, {} submitters, at most {} pending, {}{}\n\n",
            self.module,
            plan.batch,
            plan.concurrency,
            plan.window,
            if self.embedded {
                "embedded server at "
            } else {
                "server "
            },
            self.server,
        );
        let join = |map: serde_json::Map<String, Value>| {
            let parts: Vec<String> = map.iter().map(|(k, v)| format!("{k} {v}")).collect();
            if parts.is_empty() {
                "-".to_owned()
            } else {
                parts.join(", ")
            }
        };
        let mut rows = vec![
            vec!["submitted".to_owned(), t.submitted.to_string()],
            vec![
                "finished".to_owned(),
                format!("{} ({})", t.finished, join(self.states())),
            ],
            vec!["attempts".to_owned(), join(self.outcomes())],
            vec![
                "elapsed".to_owned(),
                format!("{:.2} s", self.elapsed.as_secs_f64()),
            ],
            vec![
                "throughput".to_owned(),
                t.throughput()
                    .map_or_else(|| "-".to_owned(), |x| format!("{x:.0} tasks/s")),
            ],
        ];
        if self.plan.read_back {
            rows.push(vec![
                "read back".to_owned(),
                format!("{} with task.list, {} not found", t.read_back, t.lost),
            ]);
        } else if t.read_back + t.lost > 0 {
            rows.push(vec![
                "read back".to_owned(),
                format!(
                    "{} with task.get (their events were skipped or did not match), {} pruned before",
                    t.read_back, t.lost
                ),
            ]);
        }
        if t.unfinished > 0 {
            rows.push(vec!["unfinished".to_owned(), t.unfinished.to_string()]);
        }
        if let (Some(min), Some(max)) = (s.rss.min, s.rss.max) {
            rows.push(vec![
                "server RSS".to_owned(),
                format!(
                    "min {}, max {}, last {} ({} samples)",
                    format::bytes(min),
                    format::bytes(max),
                    format::bytes(s.rss.last.unwrap_or(max)),
                    s.rss.count
                ),
            ]);
        }
        if let (Some(min), Some(max)) = (s.fds.min, s.fds.max) {
            rows.push(vec![
                "server FDs".to_owned(),
                format!("min {min}, max {max}, last {}", s.fds.last.unwrap_or(max)),
            ]);
        }
        if let (Some(min), Some(max)) = (s.db.min, s.db.max) {
            rows.push(vec![
                "database".to_owned(),
                format!(
                    "min {}, max {}, last {}",
                    format::bytes(min),
                    format::bytes(max),
                    format::bytes(s.db.last.unwrap_or(max))
                ),
            ]);
        }
        if let Some(log) = &s.log {
            let percent = |value: fn(&Sample) -> Option<u64>| {
                log.growth(value)
                    .map_or_else(|| "-".to_owned(), |g| format!("{:+.1} %", g * 100.0))
            };
            rows.push(vec![
                "samples".to_owned(),
                format!(
                    "{} lines in {}; from line {GROWTH_FROM_LINE} to the last: RSS {}, FDs {}, store {}",
                    log.lines,
                    log.path.display(),
                    percent(|x| x.rss_bytes),
                    percent(|x| x.open_fds),
                    percent(|x| x.db_bytes),
                ),
            ]);
        }
        for row in rows {
            text.push_str(&format!("{:<12}{}\n", row[0], row[1]));
        }
        text.push('\n');
        if let Some(mix) = &t.mix {
            text.push_str(&format::table(
                &["KIND", "SUBMITTED", "EXPECTED", "MISMATCHED", "LOST"],
                &mix.rows(),
            ));
            for line in mix.example_lines() {
                text.push_str(&format!("mismatch: {line}\n"));
            }
            text.push('\n');
        }
        let created = if self.created_at_from() != "client_clock" {
            "created_at"
        } else {
            "sent (client clock)"
        };
        let latency_rows: Vec<Vec<String>> = [
            (format!("{created} -> started_at"), &t.to_start),
            (format!("{created} -> finished_at"), &t.to_finish),
            (
                "client: submit sent -> event".to_owned(),
                &t.client_to_event,
            ),
            ("client: submit call".to_owned(), &t.submit_call),
        ]
        .into_iter()
        .filter(|(_, histogram)| histogram.count > 0)
        .map(|(name, histogram)| {
            let mut row = vec![name];
            row.extend(histogram.cells());
            row
        })
        .collect();
        text.push_str(&format::table(
            &["LATENCY (ms)", "P50", "P90", "P99", "MAX"],
            &latency_rows,
        ));
        text
    }
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}
