//! Cluster mode: three real `fabric serve` processes on one PostgreSQL schema. Work
//! submitted to one node runs on all of them, a node killed with `kill -9` has its tasks
//! rescued by the others, connections cut by the database are re-opened, and every node's
//! API sees the whole cluster.
//!
//! The database is `FABRIC_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/test`);
//! each test works in a schema of its own and drops it at the end, also when it fails.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};

use crate::faults::{all_tasks, drained};
use crate::server::{Client, Fabric};

const URL_ENV: &str = "FABRIC_TEST_POSTGRES";
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn database_url() -> String {
    std::env::var(URL_ENV).unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// Fails the test unless the database answers (probed once per run): the first test to
/// find it missing says what to set or install, every other one fails with a short line.
fn require_database() {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    static TOLD: AtomicBool = AtomicBool::new(false);
    let probe = PROBE.get_or_init(|| Schema::execute("SELECT 1::bigint".into()).map(drop));
    let Err(why) = probe else { return };
    if TOLD.swap(true, Ordering::SeqCst) {
        panic!("no PostgreSQL for the cluster tests (the first failing test says what to do)");
    }
    panic!(
        "no PostgreSQL answers ({why}).\n\
         The cluster tests need a PostgreSQL server where they may create schemas: set \
         {URL_ENV} to its URL (default {DEFAULT_URL}), or install PostgreSQL (initdb and \
         pg_ctl) and run .ci/run, which starts a throwaway server when none answers."
    );
}

/// A schema of this test's own, dropped (with everything in it) when the guard drops.
/// Named like the store crate's test schemas, so its sweep of leftovers also finds it.
pub(crate) struct Schema {
    name: String,
}

impl Schema {
    /// A fresh name; fails the test first unless the database answers.
    pub(crate) fn fresh() -> Self {
        require_database();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            name: format!(
                "fabric_test_{}_{:08x}{:08x}",
                now.as_secs(),
                std::process::id(),
                now.subsec_nanos()
            ),
        }
    }

    /// The `fabric serve` arguments of node `node` on this schema.
    pub(crate) fn node_args(&self, node: &str) -> Vec<String> {
        [
            "--store",
            &database_url(),
            "--postgres-schema",
            &self.name,
            "--postgres-pool",
            "4",
            "--node",
            node,
            "--workers",
            "32",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Runs `sql` on a connection of its own (from a thread with its own runtime, so it
    /// works from `Drop` too).
    fn execute(sql: String) -> Result<u64, String> {
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let (client, connection) =
                    tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
                        .await
                        .map_err(|e| {
                            let cause = std::error::Error::source(&e)
                                .map(|cause| format!(": {cause}"))
                                .unwrap_or_default();
                            format!("connecting to {}: {e}{cause}", database_url())
                        })?;
                tokio::spawn(connection);
                let rows = client.query(&sql, &[]).await.map_err(|e| e.to_string())?;
                Ok(rows.first().map_or(0, |row| row.get::<_, i64>(0) as u64))
            })
        })
        .join()
        .map_err(|_| "the SQL thread panicked".to_string())?
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let drop_schema = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        if let Err(e) = Self::execute(drop_schema) {
            eprintln!("warning: test schema {} was not dropped: {e}", self.name);
        }
    }
}

/// Starts node `name` on `schema`.
pub(crate) fn node(schema: &Schema, name: &str) -> Fabric {
    let args = schema.node_args(name);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Fabric::start(&args)
}

/// A gauge of the node's `/metrics` (0 when absent).
async fn gauge(client: &Client, name: &str) -> f64 {
    let (status, text) = client.get("/metrics").await;
    assert_eq!(status, 200);
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Submits `count` sleep tasks in batches of 1,000; each sleeps 10 to 59 ms and its
/// expected output names that time. Returns the expected output by task id.
async fn submit_sleepers(client: &Client, count: usize) -> HashMap<String, String> {
    let mut expected = HashMap::new();
    let mut submitted = 0;
    while submitted < count {
        let batch = (count - submitted).min(1000);
        let inputs: Vec<u64> = (submitted..submitted + batch)
            .map(|i| 10 + (i % 50) as u64)
            .collect();
        let tasks: Vec<Value> = inputs
            .iter()
            .map(|ms| json!({"module": "sleep", "input": ms.to_string()}))
            .collect();
        let answer = client
            .call("task.submit_batch", json!({"tasks": tasks}))
            .await;
        for (task, ms) in answer["tasks"].as_array().unwrap().iter().zip(inputs) {
            expected.insert(
                task["id"].as_str().unwrap().to_string(),
                format!("slept {ms} ms\n"),
            );
        }
        submitted += batch;
    }
    expected
}

/// Every task succeeded with its own output and exactly one `ok` attempt (any other
/// attempt is `lost`: it ran on a node that died). Returns how many tasks lost an attempt.
fn check_each_ran_once(
    tasks: &HashMap<String, Value>,
    expected: &HashMap<String, String>,
) -> usize {
    assert_eq!(tasks.len(), expected.len(), "tasks were lost or invented");
    let mut rescued = 0;
    for (id, output) in expected {
        let task = &tasks[id];
        assert_eq!(task["state"], "succeeded", "{task}");
        assert_eq!(task["output"].as_str(), Some(output.as_str()), "{task}");
        let attempts = task["attempts"].as_array().unwrap();
        let ok = attempts.iter().filter(|a| a["outcome"] == "ok").count();
        assert_eq!(ok, 1, "exactly one ok attempt: {task}");
        for attempt in attempts.iter().filter(|a| a["outcome"] != "ok") {
            assert_eq!(attempt["outcome"], "lost", "{task}");
        }
        if attempts.len() > 1 {
            rescued += 1;
        }
    }
    rescued
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_one_killed_mid_run_every_task_runs_once() {
    const TASKS: usize = 3000;
    let schema = Schema::fresh();
    let a = node(&schema, "cluster-a");
    let mut b = node(&schema, "cluster-b");
    let c = node(&schema, "cluster-c");
    let (on_a, on_b, on_c) = (a.client(), b.client(), c.client());

    // The module goes to node A; it lives in the database, so B and C run it too.
    on_a.put_module(fabric_agents::p1::SLEEP, "sleep").await;
    let started = Instant::now();
    let expected = submit_sleepers(&on_a, TASKS).await;

    // Kill B with `kill -9` once it is running attempts and part of the work is done.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = on_a.call("fabric.stats", json!({})).await;
        let succeeded = stats["succeeded"].as_u64().unwrap();
        if succeeded >= 300 && gauge(&on_b, "fabric_running_attempts").await > 0.0 {
            assert!(succeeded < TASKS as u64, "drained before the kill");
            break;
        }
        assert!(Instant::now() < until, "node B never ran work: {stats}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    b.signal("KILL");
    b.wait_exit(Duration::from_secs(10)).expect("B died");

    drained(&on_c, Duration::from_secs(60)).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(60), "finished after {took:?}");

    // Any node's API sees the whole cluster: A submitted, C lists and counts.
    let tasks = all_tasks(&on_c).await;
    let rescued = check_each_ran_once(&tasks, &expected);
    assert!(
        rescued > 0,
        "the kill should have caught attempts running on B"
    );
    for (name, client) in [("A", &on_a), ("C", &on_c)] {
        let ran = gauge(client, "fabric_attempts_total{outcome=\"ok\"}").await;
        assert!(ran > 0.0, "node {name} ran no task");
    }
    let stats = on_a.call("fabric.stats", json!({})).await;
    assert_eq!(stats["succeeded"], TASKS as u64, "{stats}");

    // Exactly one surviving node runs the maintenance services.
    let leaders = gauge(&on_a, "fabric_maintenance_leader").await
        + gauge(&on_c, "fabric_maintenance_leader").await;
    assert_eq!(leaders, 1.0, "one leader among the survivors");
    drop(schema);
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_reconnect_after_the_database_cuts_every_connection() {
    const TASKS: usize = 1000;
    let schema = Schema::fresh();
    let a = node(&schema, "reconnect-a");
    let b = node(&schema, "reconnect-b");
    let (on_a, on_b) = (a.client(), b.client());
    on_a.put_module(fabric_agents::p1::SLEEP, "sleep").await;
    let expected = submit_sleepers(&on_a, TASKS).await;

    // What a PostgreSQL restart does to the nodes: every connection of theirs is cut
    // (pools and listeners) while attempts run.
    let until = Instant::now() + Duration::from_secs(60);
    while on_b.call("fabric.stats", json!({})).await["succeeded"]
        .as_u64()
        .unwrap()
        < 100
    {
        assert!(Instant::now() < until, "no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cut = Schema::execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE application_name IN ('fabric-reconnect-a', 'fabric-reconnect-b')"
            .into(),
    )
    .expect("terminating the nodes' connections");
    assert!(cut >= 2, "only {cut} connections were cut");

    // A call that lands on a pooled connection the database just cut fails once with
    // "store: ... unavailable" (the pool then replaces the connection); the nodes must be
    // answering again within seconds.
    for client in [&on_a, &on_b] {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let answer = client.call_raw("fabric.stats", json!({})).await;
            if answer.get("result").is_some() {
                break;
            }
            let message = answer["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("unavailable"), "{answer}");
            assert!(Instant::now() < until, "still failing: {answer}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    drained(&on_a, Duration::from_secs(60)).await;
    let tasks = all_tasks(&on_b).await;
    check_each_ran_once(&tasks, &expected);

    // After the cut, new work still flows, and wake-ups reach the other node.
    let id = on_b.submit(json!({"module": "sleep", "input": "1"})).await;
    let task = on_a.wait(&id, Duration::from_secs(30)).await;
    assert_eq!(task["state"], "succeeded", "{task}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscription_on_one_node_sees_a_task_another_node_runs() {
    let schema = Schema::fresh();
    let a = node(&schema, "subscribe-a");
    let on_a = a.client();
    on_a.put_module(fabric_agents::p1::SLEEP, "sleep").await;
    // The task is running on A before B starts, so only A can run it.
    let id = on_a
        .submit(json!({"module": "sleep", "input": "1500"}))
        .await;
    let until = Instant::now() + Duration::from_secs(30);
    while on_a.call("task.get", json!({"id": id})).await["state"] != "running" {
        assert!(Instant::now() < until, "the task never started on A");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let b = node(&schema, "subscribe-b");

    let ws_url = b.url.replacen("http://", "ws://", 1) + "/rpc";
    let (mut socket, _) = tokio_tungstenite::connect_async(&ws_url)
        .await
        .expect("websocket to node B");
    let request =
        json!({"jsonrpc": "2.0", "id": 1, "method": "task.subscribe", "params": {"id": id}});
    socket
        .send(tokio_tungstenite::tungstenite::Message::Text(
            request.to_string().into(),
        ))
        .await
        .unwrap();
    let mut final_event = None;
    let until = Instant::now() + Duration::from_secs(30);
    while final_event.is_none() {
        let message = tokio::time::timeout_at(until.into(), socket.next())
            .await
            .expect("the task's events in time")
            .expect("open")
            .expect("frame");
        let message: Value = serde_json::from_str(&message.into_text().unwrap()).unwrap();
        if message["method"] == "task.event" && message["params"]["state"] == "succeeded" {
            final_event = Some(message["params"].clone());
        }
    }
    let event = final_event.unwrap();
    assert_eq!(event["id"], id.as_str());
    assert_eq!(event["attempt"]["outcome"], "ok", "{event}");
    assert_eq!(event["attempt"]["output"], "slept 1500 ms\n", "{event}");
}
