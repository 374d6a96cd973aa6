//! Cron schedules against the real binary: `schedule.put|get|list|delete` per tenant,
//! refusals naming the field, the per-tenant limit, a per-second schedule firing once each
//! second with its label and idempotency key, a missing module skipped without stopping the
//! schedule, and `fabric schedule`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::server::{Client, Fabric};
use crate::util::{auth_file, code, json_of, stderr};

/// Every task `client` sees labelled `schedule=<name>`, oldest first.
pub(crate) async fn fired(client: &Client, name: &str) -> Vec<Value> {
    let mut tasks = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut params = json!({"limit": 1000});
        if let Some(cursor) = &cursor {
            params["cursor"] = json!(cursor);
        }
        let page = client.call("task.list", params).await;
        tasks.extend(
            page["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["labels"]["schedule"] == name)
                .cloned(),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    tasks.reverse();
    tasks
}

/// The tick a fired task belongs to: its creation instant, down to the whole second.
pub(crate) fn tick_of(task: &Value) -> OffsetDateTime {
    let created = OffsetDateTime::parse(task["created_at"].as_str().unwrap(), &Rfc3339).unwrap();
    created.replace_nanosecond(0).unwrap()
}

/// `schedule:<name>:<tick>`, the tick in RFC 3339 UTC whole seconds.
pub(crate) fn tick_key(name: &str, tick: OffsetDateTime) -> String {
    format!("schedule:{name}:{}", tick.format(&Rfc3339).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn schedules_are_put_got_listed_and_deleted_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let auth = auth_file(dir.path());
    let fabric = Fabric::start(&["--auth", auth.to_str().unwrap()]);
    let (acme, globex) = (
        fabric.with_token("acme-token"),
        fabric.with_token("globex-token"),
    );

    let before = OffsetDateTime::now_utc();
    let put = acme
        .call(
            "schedule.put",
            json!({"name": "nightly", "cron": "0 3 * * *", "task": {"module": "echo", "input": "hi"}}),
        )
        .await;
    assert_eq!(put["name"], "nightly");
    assert_eq!(put["cron"], "0 3 * * *");
    assert_eq!(put["timezone"], "UTC", "UTC unless named");
    assert_eq!(put["task"], json!({"module": "echo", "input": "hi"}));
    assert!(put.get("last_task").is_none(), "{put}");
    let next = OffsetDateTime::parse(put["next_run_at"].as_str().unwrap(), &Rfc3339).unwrap();
    assert!(
        next > before && next - before <= time::Duration::days(1),
        "{put}"
    );
    assert_eq!((next.hour(), next.minute(), next.second()), (3, 0, 0));

    // Replaced in another time zone: 03:00 in Tokyo is 18:00 UTC.
    let put = acme
        .call(
            "schedule.put",
            json!({"name": "nightly", "cron": "0 3 * * *", "timezone": "Asia/Tokyo",
                   "task": {"module": "echo", "input": "again"}}),
        )
        .await;
    assert_eq!(put["timezone"], "Asia/Tokyo");
    let next = OffsetDateTime::parse(put["next_run_at"].as_str().unwrap(), &Rfc3339).unwrap();
    assert_eq!(next.hour(), 18);
    acme.call(
        "schedule.put",
        json!({"name": "a-first", "cron": "*/5 * * * *", "task": {"module": "echo"}}),
    )
    .await;

    let got = acme.call("schedule.get", json!({"name": "nightly"})).await;
    assert_eq!(got, put);
    let listed = acme.call("schedule.list", json!({})).await;
    let names: Vec<&str> = listed["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a-first", "nightly"]);

    // Another tenant sees none of them, and cannot delete them.
    assert_eq!(
        globex.call("schedule.list", json!({})).await["schedules"],
        json!([])
    );
    let err = globex
        .error("schedule.get", json!({"name": "nightly"}))
        .await;
    assert_eq!(code(&err), -32002, "{err}");
    let err = globex
        .error("schedule.delete", json!({"name": "nightly"}))
        .await;
    assert_eq!(code(&err), -32002, "{err}");

    let deleted = acme
        .call("schedule.delete", json!({"name": "nightly"}))
        .await;
    assert_eq!(deleted, json!({"name": "nightly", "deleted": true}));
    let err = acme.error("schedule.get", json!({"name": "nightly"})).await;
    assert_eq!(code(&err), -32002, "{err}");
    assert_eq!(err["data"]["name"], "nightly");
    let err = acme
        .error("schedule.delete", json!({"name": "nightly"}))
        .await;
    assert_eq!(code(&err), -32002, "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_schedules_are_refused_naming_the_field() {
    let fabric = Fabric::start(&[]);
    let client = fabric.client();
    let task = json!({"module": "echo"});
    for (params, field, says) in [
        (
            json!({"name": "", "cron": "* * * * *", "task": task}),
            "name",
            "1 to 64",
        ),
        (
            json!({"name": "a b", "cron": "* * * * *", "task": task}),
            "name",
            "letters",
        ),
        (
            json!({"name": "n".repeat(65), "cron": "* * * * *", "task": task}),
            "name",
            "64",
        ),
        (
            json!({"name": "n", "cron": "* * * *", "task": task}),
            "cron",
            "4 fields",
        ),
        (
            json!({"name": "n", "cron": "60 * * * *", "task": task}),
            "cron",
            "minute field",
        ),
        (
            json!({"name": "n", "cron": "0 0 30 2 *", "task": task}),
            "cron",
            "no time",
        ),
        (
            json!({"name": "n", "cron": "* * * * *", "timezone": "Mars/Olympus", "task": task}),
            "timezone",
            "IANA",
        ),
        (
            json!({"name": "n", "cron": "* * * * *", "task": {"module": "echo", "run_at": "2030-01-01T00:00:00Z"}}),
            "task.run_at",
            "cannot",
        ),
        (
            json!({"name": "n", "cron": "* * * * *", "task": {"module": "echo", "idempotency_key": "k"}}),
            "task.idempotency_key",
            "cannot",
        ),
        (
            json!({"name": "n", "cron": "* * * * *", "task": {"module": "echo", "concurrency": {"key": "k", "limit": 0}}}),
            "task.concurrency.limit",
            "out of range",
        ),
        (
            json!({"name": "n", "cron": "* * * * *", "task": {"module": "echo", "limits": {"timeout_ms": 0}}}),
            "task.limits.timeout_ms",
            "out of range",
        ),
        (
            json!({"name": "n", "cron": "* * * * *", "task": {"module": ""}}),
            "task.module",
            "must name",
        ),
        (
            json!({"name": "n", "cron": "* * * * *",
                   "task": {"module": "echo", "labels": {"schedule": "x"}}}),
            "task.labels.schedule",
            "set by the schedule",
        ),
        (
            json!({"name": "n", "cron": "* * * * *", "task": {"module": "sha256:zz"}}),
            "task.module",
            "64 lowercase hex",
        ),
    ] {
        let err = client.error("schedule.put", params.clone()).await;
        assert_eq!(code(&err), -32602, "{params}: {err}");
        assert_eq!(err["data"]["field"], field, "{params}: {err}");
        assert!(
            err["message"].as_str().unwrap().contains(says),
            "{params}: {err}"
        );
    }
    let err = client
        .error(
            "schedule.put",
            json!({"name": "n", "cron": "* * * * *", "task": task, "extra": 1}),
        )
        .await;
    assert_eq!(code(&err), -32602, "{err}");
    assert_eq!(
        client.call("schedule.list", json!({})).await["schedules"],
        json!([])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_may_have_a_thousand_schedules() {
    let fabric = Fabric::start(&[]);
    let client = fabric.client();
    let calls: Vec<Value> = (0..1000)
        .map(|i| {
            json!({"jsonrpc": "2.0", "id": i, "method": "schedule.put", "params": {
                "name": format!("s{i:04}"), "cron": "0 0 1 1 *", "task": {"module": "echo"}}})
        })
        .collect();
    let (status, answers) = client.post(Value::Array(calls).to_string()).await;
    assert_eq!(status, 200);
    for answer in answers.as_array().unwrap() {
        assert!(answer.get("result").is_some(), "{answer}");
    }
    let err = client
        .error(
            "schedule.put",
            json!({"name": "one-more", "cron": "0 0 1 1 *", "task": {"module": "echo"}}),
        )
        .await;
    assert_eq!(code(&err), -32003, "{err}");
    assert_eq!(err["data"]["limit"], "schedules_per_tenant");
    assert_eq!(err["data"]["max"], 1000);
    // Replacing one is not a new one.
    client
        .call(
            "schedule.put",
            json!({"name": "s0000", "cron": "0 0 2 1 *", "task": {"module": "echo"}}),
        )
        .await;
    client
        .call("schedule.delete", json!({"name": "s0001"}))
        .await;
    client
        .call(
            "schedule.put",
            json!({"name": "one-more", "cron": "0 0 1 1 *", "task": {"module": "echo"}}),
        )
        .await;
    let listed = client.call("schedule.list", json!({})).await;
    assert_eq!(listed["schedules"].as_array().unwrap().len(), 1000);
}

/// Every fired task has the schedule's label and is the task its tick's idempotency key
/// names (a submission with that key is answered with it), one task per tick; returns the
/// ticks, oldest first. A task is created just after its tick: its key names the second of
/// its `created_at`, or (for a loop that ran late) one of the two before.
pub(crate) async fn check_one_task_per_tick(
    client: &Client,
    name: &str,
    tasks: &[Value],
) -> Vec<OffsetDateTime> {
    let mut ticks = Vec::new();
    for task in tasks {
        assert_eq!(task["labels"]["schedule"], name, "{task}");
        let mut found = None;
        for back in 0..3 {
            let tick = tick_of(task) - time::Duration::seconds(back);
            let key = tick_key(name, tick);
            let again = client
                .call(
                    "task.submit",
                    json!({"module": "echo", "idempotency_key": key}),
                )
                .await;
            if again["deduplicated"] == true {
                assert_eq!(again["id"], task["id"], "{key} names another task");
                found = Some(tick);
                break;
            }
        }
        ticks.push(found.unwrap_or_else(|| panic!("no tick key names {task}")));
    }
    let mut unique = ticks.clone();
    unique.dedup();
    assert_eq!(
        unique.len(),
        ticks.len(),
        "two tasks for one tick: {ticks:?}"
    );
    ticks
}

#[tokio::test(flavor = "multi_thread")]
async fn a_per_second_schedule_fires_once_each_second() {
    let fabric = Fabric::start(&[]);
    let client = fabric.client();
    client.put_module(fabric_agents::p1::ECHO, "echo").await;
    client
        .call(
            "schedule.put",
            json!({"name": "every-second", "cron": "* * * * * *",
                   "task": {"module": "echo", "input": "tick", "labels": {"team": "ops"}}}),
        )
        .await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    while tasks.len() < 4 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "only {} tasks",
            tasks.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        tasks = fired(&client, "every-second").await;
    }
    let schedule = client
        .call("schedule.get", json!({"name": "every-second"}))
        .await;
    client
        .call("schedule.delete", json!({"name": "every-second"}))
        .await;
    let tasks = fired(&client, "every-second").await;
    let ticks = check_one_task_per_tick(&client, "every-second", &tasks).await;
    // A task a second: the loop wakes at each tick (one that ran late may leave a tick
    // out, and then fires only the latest).
    let gaps: Vec<time::Duration> = ticks.windows(2).map(|p| p[1] - p[0]).collect();
    assert!(
        gaps.iter()
            .all(|g| *g >= time::Duration::seconds(1) && *g <= time::Duration::seconds(2)),
        "{ticks:?}"
    );
    assert!(
        gaps.iter()
            .filter(|g| **g == time::Duration::seconds(1))
            .count()
            >= gaps.len() - 1,
        "{ticks:?}"
    );
    for task in &tasks {
        assert_eq!(task["labels"]["team"], "ops", "the task's own labels stay");
        let done = client
            .wait(task["id"].as_str().unwrap(), Duration::from_secs(30))
            .await;
        assert_eq!(done["state"], "succeeded");
        assert_eq!(done["output"], "tick");
    }
    let last = schedule["last_task"].as_str().expect("a last task");
    assert!(tasks.iter().any(|t| t["id"] == last), "{schedule}");
    // Deleted: no more firings.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(fired(&client, "every-second").await.len(), tasks.len());
    let (_, metrics) = client.get("/metrics").await;
    assert!(
        metrics.contains(&format!(
            "fabric_schedule_firings_total{{result=\"created\"}} {}",
            tasks.len()
        )),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_module_skips_the_firing_and_the_schedule_goes_on() {
    let fabric = Fabric::start(&[]);
    let client = fabric.client();
    client
        .call(
            "schedule.put",
            json!({"name": "early", "cron": "* * * * * *", "task": {"module": "later", "input": "x"}}),
        )
        .await;
    let first = client.call("schedule.get", json!({"name": "early"})).await;
    let started = Instant::now();
    loop {
        let (_, metrics) = client.get("/metrics").await;
        let skipped = metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix("fabric_schedule_firings_total{result=\"module_missing\"} ")
            })
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        if skipped >= 2 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{metrics}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(fired(&client, "early").await.is_empty());
    let moved = client.call("schedule.get", json!({"name": "early"})).await;
    assert!(
        moved["next_run_at"].as_str() > first["next_run_at"].as_str(),
        "{moved}"
    );
    assert!(moved.get("last_task").is_none(), "{moved}");

    // The module arrives: the next ticks fire.
    client.put_module(fabric_agents::p1::ECHO, "later").await;
    let started = Instant::now();
    while fired(&client, "early").await.len() < 2 {
        assert!(started.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    client
        .call("schedule.delete", json!({"name": "early"}))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fabric_schedule_puts_gets_lists_and_deletes() {
    let fabric = Fabric::start(&[]);
    let output = fabric.fabric(&[
        "schedule",
        "put",
        "report",
        "--cron",
        "30 2 * * *",
        "--timezone",
        "America/New_York",
        "--priority",
        "high",
        "--concurrency",
        "reports=1",
        "--input",
        "q4",
        "echo",
        "--json",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let put = json_of(&output);
    assert_eq!(put["name"], "report");
    assert_eq!(put["timezone"], "America/New_York");
    assert_eq!(
        put["task"],
        json!({"module": "echo", "input": "q4", "priority": "high",
               "concurrency": {"key": "reports", "limit": 1}})
    );

    let output = fabric.fabric(&["schedule", "get", "report", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(json_of(&output), put);
    let output = fabric.fabric(&["schedule", "list"]);
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(
        table.contains("NAME") && table.contains("report") && table.contains("30 2 * * *"),
        "{table}"
    );
    let output = fabric.fabric(&["schedule", "list", "--json"]);
    assert_eq!(json_of(&output)["schedules"][0]["name"], "report");

    let output = fabric.fabric(&["schedule", "put", "bad", "--cron", "* * *", "echo"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("cron"), "{}", stderr(&output));
    let output = fabric.fabric(&[
        "schedule",
        "put",
        "many",
        "--cron",
        "* * * * *",
        "--count",
        "2",
        "echo",
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));

    let output = fabric.fabric(&["schedule", "delete", "report"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let output = fabric.fabric(&["schedule", "get", "report"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("not found"), "{}", stderr(&output));
}

#[tokio::test(flavor = "multi_thread")]
async fn rpc_discover_describes_schedules_and_concurrency_keys() {
    let fabric = Fabric::start(&[]);
    let doc = fabric.client().call("rpc.discover", json!({})).await;
    let methods = doc["methods"].as_array().unwrap();
    for name in [
        "schedule.put",
        "schedule.get",
        "schedule.list",
        "schedule.delete",
    ] {
        assert!(methods.iter().any(|m| m["name"] == name), "{name} missing");
    }
    let put = methods
        .iter()
        .find(|m| m["name"] == "schedule.put")
        .unwrap();
    let params: Vec<&str> = put["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(params, ["name", "cron", "task", "timezone"]);
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["Schedule"]["required"],
        json!(["name", "cron", "task", "timezone", "next_run_at"])
    );
    let field = schemas["TaskSpec"]["properties"]["concurrency"].to_string();
    assert!(
        field.contains("#/components/schemas/Concurrency"),
        "{field}"
    );
    let concurrency = &schemas["Concurrency"];
    assert_eq!(concurrency["properties"]["limit"]["maximum"], 10_000);
    assert_eq!(concurrency["properties"]["key"]["maxLength"], 128);
}
