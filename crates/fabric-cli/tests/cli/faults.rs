//! The server under faults: `kill -9` in the middle of a drain, SIGTERM with hundreds
//! of attempts running and a second SIGTERM while draining; after a restart on the same
//! data directory nothing acknowledged is lost.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::server::{Client, Fabric};

/// Every task of the tenant, by id (pages through `task.list`).
pub(crate) async fn all_tasks(client: &Client) -> HashMap<String, Value> {
    let mut tasks = HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut params = json!({"limit": 1000});
        if let Some(cursor) = &cursor {
            params["cursor"] = json!(cursor);
        }
        let page = client.call("task.list", params).await;
        for task in page["tasks"].as_array().unwrap() {
            tasks.insert(task["id"].as_str().unwrap().to_string(), task.clone());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return tasks,
        }
    }
}

/// Waits until no task is queued, scheduled or running.
pub(crate) async fn drained(client: &Client, timeout: Duration) -> Value {
    let until = Instant::now() + timeout;
    loop {
        let stats = client.call("fabric.stats", json!({})).await;
        let queued: u64 = stats["queued"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        let waiting =
            queued + stats["scheduled"].as_u64().unwrap() + stats["running"].as_u64().unwrap();
        if waiting == 0 {
            return stats;
        }
        assert!(
            Instant::now() < until,
            "not drained after {timeout:?}: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_drain_then_restart_loses_nothing() {
    const ECHO_TASKS: usize = 4000;
    const FAILING_TASKS: usize = 40;
    let mut fabric = Fabric::start(&["--workers", "16", "--lease", "1s"]);
    let client = fabric.client();
    client.put_module(fabric_agents::p1::ECHO, "echo").await;
    client
        .put_module(&fabric_agents::fixture("exit_42"), "exit42")
        .await;

    let mut expected: HashMap<String, Option<String>> = HashMap::new();
    for chunk in 0..ECHO_TASKS / 1000 {
        let tasks: Vec<Value> = (0..1000)
            .map(|i| json!({"module": "echo", "input": format!("task {chunk}-{i}")}))
            .collect();
        let submitted = client
            .call("task.submit_batch", json!({"tasks": tasks}))
            .await;
        for (i, task) in submitted["tasks"].as_array().unwrap().iter().enumerate() {
            expected.insert(
                task["id"].as_str().unwrap().into(),
                Some(format!("task {chunk}-{i}")),
            );
        }
    }
    let failing: Vec<Value> = (0..FAILING_TASKS)
        .map(|_| json!({"module": "exit42", "retry": {"max_attempts": 3, "backoff_ms": 5, "max_backoff_ms": 20}}))
        .collect();
    let submitted = client
        .call("task.submit_batch", json!({"tasks": failing}))
        .await;
    for task in submitted["tasks"].as_array().unwrap() {
        expected.insert(task["id"].as_str().unwrap().into(), None);
    }

    // Kill once a part, but not all, of the work is done.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = client.call("fabric.stats", json!({})).await;
        if stats["succeeded"].as_u64().unwrap() >= 300 {
            assert!(
                stats["succeeded"].as_u64().unwrap() < ECHO_TASKS as u64,
                "drained before the kill"
            );
            break;
        }
        assert!(Instant::now() < until, "no progress: {stats}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    fabric.kill_and_restart();
    let client = fabric.client();
    drained(&client, Duration::from_secs(120)).await;

    let tasks = all_tasks(&client).await;
    assert_eq!(tasks.len(), expected.len(), "tasks were lost or invented");
    for (id, output) in &expected {
        let task = &tasks[id];
        match output {
            Some(output) => {
                assert_eq!(task["state"], "succeeded", "{task}");
                assert_eq!(task["output"].as_str(), Some(output.as_str()), "{task}");
                let last = task["attempts"].as_array().unwrap().last().unwrap().clone();
                assert_eq!(last["outcome"], "ok");
            }
            None => {
                assert_eq!(task["state"], "failed", "{task}");
                let attempts = task["attempts"].as_array().unwrap();
                assert_eq!(attempts.len(), 3, "exactly max_attempts attempts: {task}");
                for attempt in attempts {
                    let outcome = attempt["outcome"].as_str().unwrap();
                    assert!(outcome == "exit" || outcome == "lost", "{task}");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_hundreds_running_exits_0_in_the_grace_and_nothing_is_charged() {
    const TASKS: usize = 200;
    // One tenant's 200 tasks all running at once: its cap (default 128) raised to the workers.
    let mut fabric = Fabric::start(&[
        "--workers",
        "256",
        "--tenant-max-running",
        "256",
        "--grace",
        "1s",
    ]);
    let client = fabric.client();
    client.put_module(fabric_agents::p1::SLEEP, "sleep").await;
    let tasks: Vec<Value> = (0..TASKS)
        .map(|_| json!({"module": "sleep", "input": "3000"}))
        .collect();
    let submitted = client
        .call("task.submit_batch", json!({"tasks": tasks}))
        .await;
    let ids: Vec<String> = submitted["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    let until = Instant::now() + Duration::from_secs(30);
    while client.call("fabric.stats", json!({})).await["running"]
        .as_u64()
        .unwrap()
        < TASKS as u64
    {
        assert!(Instant::now() < until, "the tasks never all ran at once");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    fabric.signal("TERM");
    let signalled = Instant::now();
    // Readiness flips at once and new work is refused while draining.
    while client.get("/readyz").await.0 != 503 {
        assert!(
            signalled.elapsed() < Duration::from_millis(500),
            "still ready after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let refused = client
        .error("task.submit", json!({"module": "sleep"}))
        .await;
    assert_eq!(refused["code"], -32004);
    let status = fabric.wait_exit(Duration::from_secs(10)).expect("exited");
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    assert!(
        took < Duration::from_millis(2500),
        "took {took:?} with a 1 s grace"
    );

    fabric.restart();
    let client = fabric.client();
    drained(&client, Duration::from_secs(60)).await;
    for id in &ids {
        let task = client.call("task.get", json!({"id": id})).await;
        assert_eq!(task["state"], "succeeded", "{task}");
        assert_eq!(task["output"], "slept 3000 ms\n");
        let outcomes: Vec<&str> = task["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["outcome"].as_str().unwrap())
            .collect();
        assert_eq!(
            outcomes,
            ["ok"],
            "the interrupted attempt is not charged: {task}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_sigterm_while_draining_exits_1_at_once() {
    let mut fabric = Fabric::start(&["--grace", "60s"]);
    let client = fabric.client();
    client.put_module(fabric_agents::p1::SLEEP, "sleep").await;
    client
        .submit(json!({"module": "sleep", "input": "60000"}))
        .await;
    let until = Instant::now() + Duration::from_secs(30);
    while client.call("fabric.stats", json!({})).await["running"] != 1 {
        assert!(Instant::now() < until, "the task never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    fabric.signal("TERM");
    // Draining: the running attempt has a minute of grace.
    while client.get("/readyz").await.0 != 503 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    fabric.signal("TERM");
    let signalled = Instant::now();
    let status = fabric
        .wait_exit(Duration::from_secs(10))
        .expect("exited after the second signal");
    assert_eq!(status.code(), Some(1), "exit status after a second SIGTERM");
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "took {:?} to exit",
        signalled.elapsed()
    );
}
