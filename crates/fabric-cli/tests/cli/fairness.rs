//! Fair share between tenants, seen from outside: one tenant floods the server up to its
//! task quota, and another tenant's tasks at the same priority still finish about as fast
//! as they do when the same flood is at a priority they overtake.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::server::{Client, Fabric};

const WAIT: Duration = Duration::from_secs(60);
/// The flooding tenant's quota of unfinished tasks.
const QUOTA: u64 = 20_000;
/// Tasks per `task.submit_batch` of the flood.
const FLOOD_BATCH: usize = 1_000;
/// Latencies measured for each median.
const SAMPLES: usize = 31;
/// What the light tenant's median under a same-priority flood may exceed twice its median
/// under the control flood by. The control is the same flood at `background` priority,
/// which the light tenant's `normal` tasks overtake on priority alone, fair share or not:
/// it is the cost of a saturated server to a task that nothing is queued in front of (each
/// of the task's insert, claim and completion waits for a busy group commit, and the guests
/// share both cores). Measured on this 2-core machine, 5 runs: idle medians 1.1 to 1.5 ms;
/// same-priority flood 10.7 to 13.1 ms; control 10.1 to 14.2 ms; their ratio 0.77 to 1.15.
/// Without fair share the light tenant's first task waits for the ~18,000 flood tasks queued
/// ahead of it (most of a second at the ~20,000 tasks/s this server drains) and the rest
/// then find the queue empty, so the median alone would not show it: the check that the
/// backlog outlasts the measurement does (tried with the light tasks at `low` priority:
/// "the normal flood drained before the measurement ended").
const ALLOWANCE: Duration = Duration::from_millis(5);

/// A token file with the tenants `flooder` and `light`.
fn auth_file(dir: &std::path::Path) -> std::path::PathBuf {
    let text = format!(
        "[[token]]\ntenant = \"flooder\"\nsha256 = \"{}\"\n\n[[token]]\ntenant = \"light\"\nsha256 = \"{}\"\n",
        fabric_server::token_digest("flooder-token"),
        fabric_server::token_digest("light-token"),
    );
    let path = dir.join("tokens.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The median submit→finish latency of `SAMPLES` single echo tasks, one after another.
async fn median_latency(client: &Client) -> Duration {
    let mut latencies = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let start = Instant::now();
        let id = client
            .submit(json!({"module": "echo", "input": format!("light {i}")}))
            .await;
        let task = client.wait(&id, WAIT).await;
        latencies.push(start.elapsed());
        assert_eq!(task["state"], "succeeded", "{task}");
    }
    latencies.sort();
    latencies[SAMPLES / 2]
}

/// The tenant's unfinished tasks, from `fabric.stats`.
async fn unfinished(client: &Client) -> u64 {
    let stats = client.call("fabric.stats", json!({})).await;
    let queued: u64 = stats["queued"]
        .as_object()
        .unwrap_or_else(|| panic!("no queued counts in {stats}"))
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    queued + stats["scheduled"].as_u64().unwrap() + stats["running"].as_u64().unwrap()
}

/// Submits batches of echo tasks at `priority` until the quota refuses one; the refusal.
async fn flood_until_refused(client: &Client, priority: &str) -> Value {
    let tasks: Vec<Value> = (0..FLOOD_BATCH)
        .map(|i| json!({"module": "echo", "input": format!("flood {i}"), "priority": priority}))
        .collect();
    let batch = json!({ "tasks": tasks });
    // The quota counts unfinished tasks, so the flood must outrun the server; it does by
    // far, but do not loop forever if it did not.
    for _ in 0..10 * QUOTA as usize / FLOOD_BATCH {
        let answer = client.call_raw("task.submit_batch", batch.clone()).await;
        if let Some(error) = answer.get("error") {
            return error.clone();
        }
    }
    panic!("the flood never reached its quota of {QUOTA}");
}

/// The light tenant's median latency while `flooder` floods the server at `priority` up to
/// its quota; checks that the quota refused the flood and that the flood's backlog lasted
/// the whole measurement, then waits for the backlog to drain.
async fn median_under_flood(flooder: &Client, light: &Client, priority: &str) -> Duration {
    let refusal = flood_until_refused(flooder, priority).await;
    assert_eq!(refusal["code"], -32003, "{refusal}");
    assert_eq!(refusal["data"]["limit"], "tenant_max_tasks", "{refusal}");
    let message = refusal["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("quota") && message.contains("tenant_max_tasks"),
        "the refusal names the quota: {refusal}"
    );
    let backlog_before = unfinished(flooder).await;
    let flooded = median_latency(light).await;
    let backlog_after = unfinished(flooder).await;
    eprintln!(
        "{priority} flood: light tenant's median submit→finish {flooded:?}; \
         flooder's unfinished tasks: {backlog_before} before, {backlog_after} after"
    );
    assert!(
        backlog_after > 0,
        "the {priority} flood drained before the measurement ended ({backlog_before} at its \
         start), so it was never in the way"
    );
    let until = Instant::now() + WAIT;
    while unfinished(flooder).await > 0 {
        assert!(
            Instant::now() < until,
            "the flood did not drain in {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    flooded
}

#[tokio::test(flavor = "multi_thread")]
async fn attack_tenant_flood_hits_its_quota_while_another_tenant_keeps_its_latency() {
    let dir = tempfile::tempdir().unwrap();
    let auth = auth_file(dir.path());
    let quota = QUOTA.to_string();
    let fabric = Fabric::start(&[
        "--auth",
        auth.to_str().unwrap(),
        "--tenant-max-tasks",
        &quota,
    ]);
    let flooder = fabric.with_token("flooder-token");
    let light = fabric.with_token("light-token");
    flooder.put_module(fabric_agents::p1::ECHO, "echo").await;
    light.put_module(fabric_agents::p1::ECHO, "echo").await;

    // Warm up (module cache, connections), then the idle latency.
    for _ in 0..5 {
        let id = light
            .submit(json!({"module": "echo", "input": "warm"}))
            .await;
        light.wait(&id, WAIT).await;
    }
    let idle = median_latency(&light).await;
    let same_priority = median_under_flood(&flooder, &light, "normal").await;
    let control = median_under_flood(&flooder, &light, "background").await;
    eprintln!(
        "light tenant's median submit→finish: idle {idle:?}, same-priority flood \
         {same_priority:?}, background flood {control:?}"
    );
    assert!(
        same_priority <= 2 * control + ALLOWANCE,
        "under a same-priority flood the light tenant's median {same_priority:?} is more than \
         2 x its median {control:?} under a flood it overtakes by priority, + {ALLOWANCE:?}"
    );

    // The server is healthy afterwards: a normal task succeeds.
    let id = light
        .submit(json!({"module": "echo", "input": "after"}))
        .await;
    let task = light.wait(&id, WAIT).await;
    assert_eq!(
        (task["state"].as_str(), task["output"].as_str()),
        (Some("succeeded"), Some("after")),
        "{task}"
    );
    assert_eq!(light.get("/healthz").await.0, 200);
    assert_eq!(light.get("/readyz").await.0, 200);
}
