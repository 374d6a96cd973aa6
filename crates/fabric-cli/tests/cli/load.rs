//! `fabric load`: a run on an embedded server, a short soak, a mix of every kind of end
//! with its samples file, and a server that is not there.

use serde_json::{Value, json};

use crate::server::Fabric;
use crate::util::{fabric, json_of, stderr, unused_url};

/// The kinds of `fabric load --mix`, in their rotation.
const MIX_KINDS: [&str; 9] = [
    "success",
    "exit",
    "trap",
    "timeout",
    "retry",
    "cancel",
    "scheduled",
    "expired",
    "big_output",
];

/// The latency percentiles of one measure, checked to be in order; returns p50.
fn ordered_percentiles(report: &Value, measure: &str) -> f64 {
    let latency = &report["latency_ms"][measure];
    let value = |name: &str| {
        latency[name]
            .as_f64()
            .unwrap_or_else(|| panic!("{measure}.{name} in {report}"))
    };
    let (p50, p90, p99, max) = (value("p50"), value("p90"), value("p99"), value("max"));
    assert!(
        0.0 <= p50 && p50 <= p90 && p90 <= p99 && p99 <= max,
        "{measure}: {latency}"
    );
    p50
}

/// The RSS series as `(seconds, bytes)` points.
fn rss_series(report: &Value) -> Vec<(f64, u64)> {
    report["rss_bytes"]["series"]
        .as_array()
        .unwrap_or_else(|| panic!("no RSS series in {report}"))
        .iter()
        .map(|point| (point[0].as_f64().unwrap(), point[1].as_u64().unwrap()))
        .collect()
}

#[test]
fn an_embedded_run_finishes_every_task_and_reports_ordered_percentiles() {
    let output = fabric(&[
        "load",
        "--embedded",
        "--tasks",
        "2000",
        "--batch",
        "500",
        "--json",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report = json_of(&output);
    assert_eq!(report["submitted"], 2000, "{report}");
    assert_eq!(report["finished"], 2000, "{report}");
    assert_eq!(
        report["outcomes"],
        serde_json::json!({"ok": 2000}),
        "{report}"
    );
    assert_eq!(
        report["states"],
        serde_json::json!({"succeeded": 2000}),
        "{report}"
    );
    for measure in [
        "submit_to_start",
        "submit_to_finish",
        "client_submit_to_event",
    ] {
        assert_eq!(report["latency_ms"][measure]["count"], 2000, "{measure}");
        ordered_percentiles(&report, measure);
    }
    assert!(
        report["throughput_per_second"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(
        report["rss_bytes"]["samples"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert!(report["rss_bytes"]["min"].as_u64().unwrap() > 0, "{report}");
    assert!(report["db_bytes"]["max"].as_u64().unwrap() > 0, "{report}");
}

#[test]
fn a_short_soak_keeps_the_servers_memory_flat() {
    let output = fabric(&[
        "load",
        "--embedded",
        "--duration",
        "3s",
        "--batch",
        "200",
        "--concurrency",
        "2",
        "--max-pending",
        "5000",
        "--json",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report = json_of(&output);
    let finished = report["finished"].as_u64().unwrap();
    assert!(finished > 0, "{report}");
    assert_eq!(report["submitted"].as_u64().unwrap(), finished, "{report}");
    assert_eq!(
        report["outcomes"]["ok"].as_u64(),
        Some(finished),
        "{report}"
    );
    assert_eq!(report["duration_seconds"], 3.0, "{report}");
    ordered_percentiles(&report, "submit_to_finish");

    // One sample a second over at least three seconds, plus the last.
    let series = rss_series(&report);
    assert!(series.len() >= 4, "{series:?}");
    let (second, last) = (series[1].1 as f64, series[series.len() - 1].1 as f64);
    assert!(
        last <= second * 1.25,
        "RSS grew from {second} to {last} bytes: {series:?}"
    );
    eprintln!("the 3 s soak finished {finished} tasks; RSS {series:?}");
}

#[test]
fn a_mix_ends_every_kind_as_it_must_and_samples_every_interval() {
    let dir = tempfile::tempdir().unwrap();
    let samples = dir.path().join("samples.jsonl");
    let output = fabric(&[
        "load",
        "--embedded",
        "--mix",
        "--tasks",
        "270",
        "--batch",
        "30",
        "--samples",
        samples.to_str().unwrap(),
        "--sample-every",
        "250ms",
        "--json",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report = json_of(&output);
    assert_eq!(report["module"], "a mix", "{report}");
    assert_eq!(report["submitted"], 270, "{report}");
    assert_eq!(report["finished"], 270, "{report}");
    assert_eq!(
        (&report["lost"], &report["unfinished"]),
        (&json!(0), &json!(0))
    );
    let mix = &report["mix"];
    for kind in MIX_KINDS {
        assert_eq!(
            mix["kinds"][kind],
            json!({"submitted": 30, "expected": 30, "mismatched": 0, "lost": 0}),
            "{kind}: {mix}"
        );
    }
    assert_eq!(mix["mismatch_examples"], json!([]), "{mix}");
    assert_eq!(
        report["states"],
        json!({"succeeded": 90, "failed": 120, "cancelled": 30, "expired": 30}),
        "{report}"
    );
    // Exits: 30 of the exit kind and three each of the 30 retried; a cancel that comes
    // before its attempt starts leaves no attempt.
    let outcomes = &report["outcomes"];
    for (outcome, count) in [("ok", 90), ("exit", 120), ("trap", 30), ("timeout", 30)] {
        assert_eq!(outcomes[outcome], count, "{outcome}: {outcomes}");
    }
    assert!(
        outcomes["cancelled"].as_u64().unwrap_or(0) <= 30,
        "{outcomes}"
    );

    // One line every 250 ms while the scheduled tasks wait their 2 s, then the last.
    let text = std::fs::read_to_string(&samples).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(lines.len() >= 6, "{text}");
    assert_eq!(report["samples"]["lines"], lines.len(), "{report}");
    for line in &lines {
        for key in ["rss_bytes", "open_fds", "store_bytes", "finished_total"] {
            assert!(line[key].as_u64().unwrap() > 0, "{key} in {line}");
        }
        for key in ["elapsed_seconds", "interval_seconds", "tasks_per_second"] {
            assert!(line[key].as_f64().is_some(), "{key} in {line}");
        }
    }
    let finished: u64 = lines.iter().map(|l| l["finished"].as_u64().unwrap()).sum();
    assert_eq!(finished, 270, "{text}");
    let last = lines.last().unwrap();
    assert_eq!(
        (&last["final"], &last["finished_total"]),
        (&json!(true), &json!(270))
    );
    assert!(
        lines[..lines.len() - 1]
            .iter()
            .all(|l| l.get("final").is_none())
    );
}

/// The example agents but with `strict` stored as `probe`: the trap kind's `panic` is then
/// bad input to strict, which exits 3.
#[tokio::test(flavor = "multi_thread")]
async fn a_mix_whose_tasks_end_otherwise_fails_and_names_them() {
    let server = Fabric::start(&[]);
    let client = server.client();
    for (name, bytes) in [
        ("echo", fabric_agents::p1::ECHO),
        ("strict", fabric_agents::p1::STRICT),
        ("sleep", fabric_agents::p1::SLEEP),
        ("probe", fabric_agents::p1::STRICT),
    ] {
        client.put_module(bytes, name).await;
    }
    let url = server.url.clone();
    let output = tokio::task::spawn_blocking(move || {
        let args = [
            "load", "--server", &url, "--mix", "--tasks", "90", "--batch", "30",
        ];
        fabric(&[&args[..], &["--json"]].concat())
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let report = json_of(&output);
    let mix = &report["mix"];
    assert_eq!(
        mix["kinds"]["trap"],
        json!({"submitted": 10, "expected": 0, "mismatched": 10, "lost": 0}),
        "{mix}"
    );
    assert_eq!(mix["mismatched"], 10, "{mix}");
    for kind in MIX_KINDS.iter().filter(|k| **k != "trap") {
        assert_eq!(mix["kinds"][kind]["expected"], 10, "{kind}: {mix}");
    }
    let example = &mix["mismatch_examples"][0];
    assert_eq!(example["kind"], "trap", "{mix}");
    assert_eq!(example["expected"], "failed, one attempt trap", "{mix}");
    assert!(
        example["got"]
            .as_str()
            .unwrap()
            .starts_with("failed, 1 attempt(s), the last exit"),
        "{mix}"
    );
    let stderr = stderr(&output);
    assert!(
        stderr.contains("error: 10 tasks ended otherwise than their kind must"),
        "{stderr}"
    );
}

#[test]
fn read_back_collects_every_task_after_the_run() {
    let output = fabric(&[
        "load",
        "--embedded",
        "--tasks",
        "1000",
        "--batch",
        "250",
        "--read-back",
        "--json",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report = json_of(&output);
    assert_eq!(report["collected_by"], "task.list", "{report}");
    assert_eq!(report["created_at_from"], "task", "{report}");
    assert_eq!(report["finished"], 1000, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(
        report["outcomes"],
        serde_json::json!({"ok": 1000}),
        "{report}"
    );
    assert_eq!(report["latency_ms"]["submit_to_finish"]["count"], 1000);
    ordered_percentiles(&report, "submit_to_start");
    ordered_percentiles(&report, "submit_to_finish");
    let refused = fabric(&["load", "--read-back", "--duration", "1s"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
}

#[test]
fn the_human_report_is_a_short_table() {
    let output = fabric(&["load", "--embedded", "--tasks", "50", "--batch", "1"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "submitted   50\n",
        "finished    50 (succeeded 50)\n",
        "attempts    ok 50\n",
        "LATENCY (ms)",
        "created_at -> finished_at",
        "server RSS",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}

#[test]
fn a_server_that_is_not_running_is_a_clear_error() {
    let url = unused_url();
    let output = fabric(&["load", "--server", &url, "--tasks", "10", "--json"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(output.stdout.is_empty());
    let stderr = stderr(&output);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("error: cannot reach the server at {url}/rpc: ")),
        "{stderr}"
    );
}

#[test]
fn bad_usage_exits_2() {
    let output = fabric(&["load", "--tasks", "10", "--duration", "1s"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let output = fabric(&["load", "--batch", "0"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let output = fabric(&["load", "--mix", "--module", "sleep"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let output = fabric(&["load", "--mix", "--read-back"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
}
