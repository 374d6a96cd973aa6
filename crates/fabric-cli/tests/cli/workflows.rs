//! Dependencies through the API and the command line: `after` and `pass_outputs` on
//! `task.submit` and `fabric submit`, the cascade of a failure and of a cancel, the
//! -32602 errors naming the field, and `task.list` / `fabric task ls` filters.

use std::time::Duration;

use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;

use crate::server::Fabric;
use crate::util::{json_of, stderr};

const WAIT: Duration = Duration::from_secs(60);

/// An instant `seconds` from now, as RFC 3339: a dependency that starts then leaves time
/// to submit what waits on it.
pub(crate) fn in_seconds(seconds: i64) -> String {
    (time::OffsetDateTime::now_utc() + time::Duration::seconds(seconds))
        .format(&Rfc3339)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_after_another_waits_then_runs_with_its_outputs() {
    let fabric = Fabric::start(&["--workers", "2"]);
    let client = fabric.client();
    client.put_module(fabric_agents::p1::ECHO, "echo").await;
    let first = client
        .submit(json!({"module": "echo", "input": "alpha", "run_at": in_seconds(4)}))
        .await;
    let output = fabric.fabric(&[
        "submit",
        "echo",
        "--input",
        "own",
        "--after",
        &first,
        "--pass-outputs",
        "--json",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let submitted = json_of(&output);
    assert_eq!(submitted["state"], "waiting", "{submitted}");
    let second = submitted["id"].as_str().unwrap().to_string();
    let task = client.call("task.get", json!({"id": second})).await;
    assert_eq!(task["after"], json!([first]));
    assert_eq!(task["pass_outputs"], true);
    assert!(task.get("parent").is_none(), "{task}");
    let stats = client.call("fabric.stats", json!({})).await;
    assert_eq!(stats["waiting"], 1, "{stats}");
    let waiting = client.call("task.list", json!({"state": "waiting"})).await;
    assert_eq!(waiting["tasks"][0]["id"], second.as_str(), "{waiting}");

    let done = client.wait(&second, WAIT).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let echoed: Value = serde_json::from_str(done["output"].as_str().unwrap()).unwrap();
    assert_eq!(
        echoed,
        json!({"input": "own", "after": [{"id": first, "state": "succeeded", "output": "alpha"}]})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_or_a_cancel_cancels_what_waits_on_it() {
    let fabric = Fabric::start(&["--workers", "2"]);
    let client = fabric.client();
    client.put_module(fabric_agents::p1::ECHO, "echo").await;
    client
        .put_module(&fabric_agents::fixture("exit_42"), "exit42")
        .await;
    let failing = client
        .submit(json!({"module": "exit42", "retry": {"max_attempts": 1}, "run_at": in_seconds(3)}))
        .await;
    let b = client
        .submit(json!({"module": "echo", "after": [failing]}))
        .await;
    let c = client.submit(json!({"module": "echo", "after": [b]})).await;
    let c = client.wait(&c, WAIT).await;
    assert_eq!(c["state"], "cancelled", "{c}");
    assert_eq!(c["error"], format!("dependency {b} ended cancelled"));
    assert_eq!(c["attempts"], json!([]));
    let b = client.call("task.get", json!({"id": b})).await;
    assert_eq!(b["error"], format!("dependency {failing} ended failed"));

    // A cancel reaches what waits on the cancelled task, transitively.
    let later = client
        .submit(json!({"module": "echo", "run_at": "2999-01-01T00:00:00Z"}))
        .await;
    let x = client
        .submit(json!({"module": "echo", "after": [later]}))
        .await;
    let y = client.submit(json!({"module": "echo", "after": [x]})).await;
    let output = fabric.fabric(&["task", "cancel", &later, "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    for id in [&x, &y] {
        let task = client.call("task.get", json!({"id": id})).await;
        assert_eq!(task["state"], "cancelled", "{task}");
    }
    client.assert_serves().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_dependencies_are_invalid_params_naming_the_field() {
    let fabric = Fabric::start(&[]);
    let client = fabric.client();
    client.put_module(fabric_agents::p1::ECHO, "echo").await;
    let error = client
        .error(
            "task.submit",
            json!({"module": "echo", "after": ["01NOSUCHTASK0000000000000"]}),
        )
        .await;
    assert_eq!(error["code"], -32602, "{error}");
    assert_eq!(error["data"]["field"], "after", "{error}");
    let ok = client.submit(json!({"module": "echo"})).await;
    let error = client
        .error(
            "task.submit_batch",
            json!({"tasks": [
                {"module": "echo", "after": [ok]},
                {"module": "echo", "after": ["nope"]},
            ]}),
        )
        .await;
    assert_eq!(error["data"]["field"], "tasks[1].after", "{error}");
    let many: Vec<String> = (0..101).map(|i| format!("T{i}")).collect();
    let error = client
        .error("task.submit", json!({"module": "echo", "after": many}))
        .await;
    assert_eq!(error["data"]["field"], "after", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("100"),
        "{error}"
    );
    let error = client
        .error("task.submit", json!({"module": "echo", "after": [ok, ok]}))
        .await;
    assert_eq!(error["data"]["field"], "after[1]", "{error}");
    let error = client
        .error(
            "task.submit",
            json!({"module": "echo", "pass_outputs": true}),
        )
        .await;
    assert_eq!(error["data"]["field"], "pass_outputs", "{error}");
    let output = fabric.fabric(&["submit", "echo", "--pass-outputs"]);
    assert!(!output.status.success(), "--pass-outputs needs --after");
}

#[tokio::test(flavor = "multi_thread")]
async fn task_list_filters_by_state_module_labels_and_parent() {
    let fabric = Fabric::start(&["--workers", "2"]);
    let client = fabric.client();
    let echo = client.put_module(fabric_agents::p1::ECHO, "echo").await;
    client
        .put_module(&fabric_agents::fixture("exit_42"), "exit42")
        .await;
    let a = client
        .submit(json!({"module": "echo", "labels": {"team": "x", "env": "prod"}}))
        .await;
    let b = client
        .submit(json!({"module": "exit42", "labels": {"team": "x"}, "retry": {"max_attempts": 1}}))
        .await;
    let c = client
        .submit(json!({"module": "echo", "labels": {"team": "y"}}))
        .await;
    for id in [&a, &b, &c] {
        client.wait(id, WAIT).await;
    }
    let ids = |page: &Value| -> Vec<String> {
        page["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect()
    };
    let page = client.call("task.list", json!({"module": "echo"})).await;
    assert_eq!(ids(&page), [c.clone(), a.clone()]);
    let page = client.call("task.list", json!({"module": echo})).await;
    assert_eq!(ids(&page), [c.clone(), a.clone()], "by sha256 id too");
    let page = client
        .call("task.list", json!({"labels": {"team": "x"}}))
        .await;
    assert_eq!(ids(&page), [b.clone(), a.clone()]);
    let page = client
        .call(
            "task.list",
            json!({"labels": {"team": "x"}, "state": "failed"}),
        )
        .await;
    assert_eq!(ids(&page), [b]);
    let page = client.call("task.list", json!({"parent": a})).await;
    assert_eq!(ids(&page), Vec::<String>::new());

    let error = client
        .error("task.list", json!({"module": "no-such-module"}))
        .await;
    assert_eq!(error["code"], -32602, "{error}");
    assert_eq!(error["data"]["field"], "module");
    let error = client
        .error("task.list", json!({"state": "sleeping"}))
        .await;
    assert_eq!(error["code"], -32602, "{error}");
    let error = client.error("task.list", json!({"parent": ""})).await;
    assert_eq!(error["data"]["field"], "parent", "{error}");

    let output = fabric.fabric(&[
        "task", "ls", "--module", "echo", "--label", "team=x", "--json",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(ids(&json_of(&output)), std::slice::from_ref(&a));
    let output = fabric.fabric(&["task", "ls", "--parent", &a, "--state", "waiting", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(ids(&json_of(&output)), Vec::<String>::new());
}
