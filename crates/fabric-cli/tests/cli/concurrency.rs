//! Concurrency keys against the real binary: a key with limit 2 caps the running attempts
//! of slow tasks while tasks without the key keep finishing; `Task.concurrency`; refusals
//! naming the field; `fabric submit --concurrency`.

use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::server::Fabric;
use crate::util::{code, json_of, stderr};

const WAIT: Duration = Duration::from_secs(60);

fn instant(attempt: &Value, field: &str) -> OffsetDateTime {
    OffsetDateTime::parse(attempt[field].as_str().unwrap(), &Rfc3339).unwrap()
}

/// The most attempts among `tasks` whose run (`started_at` to `finished_at`) overlapped.
fn most_at_once(tasks: &[Value]) -> usize {
    let mut edges: Vec<(OffsetDateTime, i32)> = Vec::new();
    for task in tasks {
        for attempt in task["attempts"].as_array().unwrap() {
            edges.push((instant(attempt, "started_at"), 1));
            edges.push((instant(attempt, "finished_at"), -1));
        }
    }
    // An end before a start at the same instant: touching runs do not overlap.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    most as usize
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_with_limit_two_caps_slow_tasks_while_others_finish() {
    let fabric = Fabric::start(&["--workers", "8"]);
    let client = fabric.client();
    client.put_module(fabric_agents::p1::SLEEP, "sleep").await;
    let mut slow = Vec::new();
    for _ in 0..6 {
        let spec = json!({"module": "sleep", "input": "1500",
                          "concurrency": {"key": "model-api", "limit": 2}});
        slow.push(client.submit(spec).await);
    }
    let mut quick = Vec::new();
    for _ in 0..6 {
        quick.push(
            client
                .submit(json!({"module": "sleep", "input": "20"}))
                .await,
        );
    }
    // The keyless tasks finish while most keyed ones still wait their turn.
    for id in &quick {
        let task = client.wait(id, WAIT).await;
        assert_eq!(task["state"], "succeeded", "{task}");
    }
    let mut waiting = 0;
    for id in &slow {
        let task = client.call("task.get", json!({"id": id})).await;
        assert_eq!(task["concurrency"], json!({"key": "model-api", "limit": 2}));
        if task["state"] == "queued" {
            waiting += 1;
        }
    }
    assert!(
        waiting >= 2,
        "only {waiting} keyed tasks waited: the key held nothing back"
    );

    let mut done = Vec::new();
    for id in &slow {
        let task = client.wait(id, WAIT).await;
        assert_eq!(task["state"], "succeeded", "{task}");
        assert_eq!(task["attempts"].as_array().unwrap().len(), 1, "{task}");
        done.push(task);
    }
    assert_eq!(
        most_at_once(&done),
        2,
        "two at once, never more, with 8 workers free"
    );
    let stats = client.call("fabric.stats", json!({})).await;
    assert_eq!(stats["succeeded"], 12, "{stats}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_concurrency_is_refused_naming_the_field() {
    let fabric = Fabric::start(&[]);
    let client = fabric.client();
    client.put_module(fabric_agents::p1::ECHO, "echo").await;
    for (concurrency, field) in [
        (json!({"key": "", "limit": 1}), "concurrency.key"),
        (
            json!({"key": "k".repeat(129), "limit": 1}),
            "concurrency.key",
        ),
        (json!({"key": "a\u{7}b", "limit": 1}), "concurrency.key"),
        (json!({"key": "k", "limit": 0}), "concurrency.limit"),
        (json!({"key": "k", "limit": 10_001}), "concurrency.limit"),
    ] {
        let err = client
            .error(
                "task.submit",
                json!({"module": "echo", "concurrency": concurrency}),
            )
            .await;
        assert_eq!(code(&err), -32602, "{concurrency}: {err}");
        assert_eq!(err["data"]["field"], field, "{err}");
    }
    let err = client
        .error(
            "task.submit_batch",
            json!({"tasks": [{"module": "echo"},
            {"module": "echo", "concurrency": {"key": "k", "limit": 0}}]}),
        )
        .await;
    assert_eq!(err["data"]["field"], "tasks[1].concurrency.limit", "{err}");
    let err = client
        .error(
            "task.submit",
            json!({"module": "echo", "concurrency": {"key": "k"}}),
        )
        .await;
    assert_eq!(code(&err), -32602, "{err}");
    // The bounds themselves are accepted.
    let id = client
        .submit(json!({"module": "echo", "concurrency": {"key": "k".repeat(128), "limit": 10_000}}))
        .await;
    assert_eq!(client.wait(&id, WAIT).await["state"], "succeeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn fabric_submit_takes_a_concurrency_key() {
    let fabric = Fabric::start(&[]);
    fabric
        .client()
        .put_module(fabric_agents::p1::ECHO, "echo")
        .await;
    let output = fabric.fabric(&[
        "submit",
        "echo",
        "--input",
        "x",
        "--concurrency",
        "model-api=3",
        "--wait",
        "--json",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let task = json_of(&output);
    assert_eq!(task["state"], "succeeded");
    assert_eq!(task["concurrency"], json!({"key": "model-api", "limit": 3}));

    let output = fabric.fabric(&["submit", "echo", "--concurrency", "model-api=0"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("concurrency.limit"),
        "{}",
        stderr(&output)
    );
    let output = fabric.fabric(&["submit", "echo", "--concurrency", "model-api"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("KEY=LIMIT"), "{}", stderr(&output));
}
