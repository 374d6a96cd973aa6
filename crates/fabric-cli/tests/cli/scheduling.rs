//! Scheduling through the server on one worker: priorities, cancellation, `run_at`,
//! deadlines and which failures are retried.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::server::{Client, Fabric};

const WAIT: Duration = Duration::from_secs(60);

fn at(task: &Value, field: &str) -> OffsetDateTime {
    let text = task[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {task}"));
    OffsetDateTime::parse(text, &Rfc3339).unwrap()
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap()
}

/// One worker, with the echo and sleep agents loaded; a sleeping task keeps it busy.
async fn one_worker() -> (Fabric, Client) {
    let fabric = Fabric::start(&["--workers", "1"]);
    let client = fabric.client();
    client.put_module(fabric_agents::p1::ECHO, "echo").await;
    client.put_module(fabric_agents::p1::SLEEP, "sleep").await;
    client
        .put_module(&fabric_agents::fixture("loop_forever"), "loop")
        .await;
    (fabric, client)
}

/// Submits a task that sleeps `ms` and returns once it is running.
async fn occupy(client: &Client, ms: u64) -> String {
    let id = client
        .submit(json!({"module": "sleep", "input": ms.to_string(), "priority": "critical"}))
        .await;
    wait_state(client, &id, "running").await;
    id
}

async fn wait_state(client: &Client, id: &str, state: &str) {
    let until = Instant::now() + WAIT;
    while client.call("task.get", json!({"id": id})).await["state"] != state {
        assert!(Instant::now() < until, "task {id} never became {state}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn critical_work_runs_before_low_work_queued_earlier() {
    let (_fabric, client) = one_worker().await;
    let busy = occupy(&client, 500).await;
    let mut low = Vec::new();
    for i in 0..5 {
        low.push(
            client
                .submit(json!({"module": "echo", "input": format!("low {i}"), "priority": "low"}))
                .await,
        );
    }
    let critical = client
        .submit(json!({"module": "echo", "input": "critical", "priority": "critical"}))
        .await;
    client.wait(&busy, WAIT).await;
    let critical = client.wait(&critical, WAIT).await;
    for id in &low {
        let task = client.wait(id, WAIT).await;
        assert!(
            at(&critical, "started_at") <= at(&task, "started_at"),
            "critical started {} after low {}",
            critical["started_at"],
            task["started_at"]
        );
    }
    // FIFO within one priority.
    let starts: Vec<OffsetDateTime> = futures_util::future::join_all(
        low.iter()
            .map(|id| client.call("task.get", json!({"id": id}))),
    )
    .await
    .iter()
    .map(|task| at(task, "started_at"))
    .collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "{starts:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queued_cancel_never_runs_and_a_running_cancel_ends_within_a_tick() {
    let (_fabric, client) = one_worker().await;
    let busy = occupy(&client, 300).await;
    let queued = client
        .submit(json!({"module": "echo", "input": "never"}))
        .await;
    let cancelled = client.call("task.cancel", json!({"id": queued})).await;
    assert_eq!(cancelled["state"], "cancelled");
    client.wait(&busy, WAIT).await;

    let spinning = client
        .submit(json!({"module": "loop", "limits": {"timeout_ms": 60_000}}))
        .await;
    wait_state(&client, &spinning, "running").await;
    let asked = Instant::now();
    client.call("task.cancel", json!({"id": spinning})).await;
    let task = client.wait(&spinning, WAIT).await;
    let took = asked.elapsed();
    assert_eq!(task["state"], "cancelled", "{task}");
    assert_eq!(task["attempts"][0]["outcome"], "cancelled");
    assert!(
        took < Duration::from_millis(500),
        "the cancel took {took:?}"
    );

    // The queued one stayed cancelled with no attempt, though the worker was free.
    let queued = client.call("task.get", json!({"id": queued})).await;
    assert_eq!(queued["state"], "cancelled");
    assert!(
        queued["attempts"].as_array().unwrap().is_empty(),
        "{queued}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn run_at_is_honoured_to_the_millisecond() {
    let (_fabric, client) = one_worker().await;
    let run_at = OffsetDateTime::now_utc() + time::Duration::milliseconds(1200);
    let id = client
        .submit(json!({"module": "echo", "input": "later", "run_at": rfc3339(run_at)}))
        .await;
    let submitted = client.call("task.get", json!({"id": id})).await;
    assert_eq!(submitted["state"], "scheduled");
    let task = client.wait(&id, WAIT).await;
    let started = at(&task, "started_at");
    let late = started - run_at;
    assert!(late >= time::Duration::ZERO, "started {late} early");
    assert!(
        late < time::Duration::milliseconds(100),
        "started {late} late"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_passed_deadline_expires_the_task_without_running_it() {
    let (_fabric, client) = one_worker().await;
    let past = OffsetDateTime::now_utc() - time::Duration::seconds(1);
    let id = client
        .submit(json!({"module": "echo", "deadline": rfc3339(past)}))
        .await;
    let task = client.wait(&id, WAIT).await;
    assert_eq!(task["state"], "expired");
    assert!(task["attempts"].as_array().unwrap().is_empty());

    let busy = occupy(&client, 800).await;
    let soon = OffsetDateTime::now_utc() + time::Duration::milliseconds(200);
    let id = client
        .submit(json!({"module": "echo", "deadline": rfc3339(soon)}))
        .await;
    client.wait(&busy, WAIT).await;
    let task = client.wait(&id, WAIT).await;
    assert_eq!(task["state"], "expired", "{task}");
    assert!(task["attempts"].as_array().unwrap().is_empty(), "{task}");
}

#[tokio::test(flavor = "multi_thread")]
async fn maintenance_expiry_ends_task_wait_and_is_counted() {
    let (_fabric, client) = one_worker().await;
    let now = OffsetDateTime::now_utc();
    let id = client
        .submit(json!({"module": "echo",
                        "run_at": rfc3339(now + time::Duration::hours(1)),
                        "deadline": rfc3339(now + time::Duration::milliseconds(200))}))
        .await;
    // One task.wait call: the expiry's event ends it, it does not wait out its timeout.
    let task = client
        .call("task.wait", json!({"id": id, "timeout_ms": 20_000}))
        .await;
    assert_eq!(task["state"], "expired", "{task}");
    let (status, metrics) = client.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("fabric_tasks_finished_total{state=\"expired\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn more_declared_memory_than_the_servers_cap_is_a_memory_limit_not_an_invalid_module() {
    // The fixture declares 128 MiB of initial memory; the server allows tasks 64 MiB.
    let fabric = Fabric::start(&["--workers", "1", "--max-task-memory", "64MiB"]);
    let client = fabric.client();
    client
        .put_module(&fabric_agents::fixture("initial_memory_huge"), "huge")
        .await;
    let id = client.submit(json!({"module": "huge"})).await;
    let task = client.wait(&id, WAIT).await;
    assert_eq!(task["state"], "failed", "{task}");
    let attempts = task["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "memory_limit is not retried: {task}");
    assert_eq!(attempts[0]["outcome"], "memory_limit", "{task}");
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_fuel_is_not_retried_but_a_trap_is() {
    let (_fabric, client) = one_worker().await;
    let id = client
        .submit(json!({"module": "loop", "limits": {"fuel": 1_000_000},
                        "retry": {"max_attempts": 3, "backoff_ms": 1}}))
        .await;
    let task = client.wait(&id, WAIT).await;
    assert_eq!(task["state"], "failed");
    let attempts = task["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{task}");
    assert_eq!(attempts[0]["outcome"], "out_of_fuel");

    client
        .put_module(&fabric_agents::fixture("trap_unreachable"), "trap")
        .await;
    let id = client
        .submit(json!({"module": "trap", "retry": {"max_attempts": 3, "backoff_ms": 1}}))
        .await;
    let task = client.wait(&id, WAIT).await;
    assert_eq!(task["state"], "failed");
    let outcomes: Vec<&str> = task["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["trap", "trap", "trap"]);
    assert!(task["error"].as_str().unwrap().contains("trap"), "{task}");
}
