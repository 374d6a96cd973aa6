//! `fabric load`: a run on an embedded server, a short soak, and a server that is not there.

use serde_json::Value;

use crate::util::{fabric, json_of, stderr, unused_url};

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
}
