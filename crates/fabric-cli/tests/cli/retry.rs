//! `task.retry` and `fabric task retry`: a finished-unsuccessfully task queued again as a
//! new task with the same spec, refused for other states, invisible across tenants.

use std::time::Duration;

use serde_json::{Value, json};

use crate::server::Fabric;
use crate::util::{auth_file, json_of, stderr};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_task_is_queued_again_as_a_new_task_with_the_same_spec() {
    let fabric = Fabric::start(&["--workers", "2"]);
    let client = fabric.client();
    client
        .put_module(&fabric_agents::fixture("exit_42"), "exit42")
        .await;
    let spec = json!({
        "module": "exit42", "input": "same input", "priority": "high",
        "limits": {"fuel": 5_000_000, "timeout_ms": 4_000},
        "retry": {"max_attempts": 1},
        "env": {"MODE": "strict"}, "labels": {"team": "ui"},
        "idempotency_key": "first-run",
    });
    let old = client.submit(spec).await;
    let failed = client.wait(&old, WAIT).await;
    assert_eq!(failed["state"], "failed", "{failed}");

    let output = fabric.fabric(&["task", "retry", &old, "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let retried = json_of(&output);
    let new = retried["id"].as_str().expect("new id").to_string();
    assert_ne!(new, old, "a retry is a new task");
    assert_eq!(retried["retry_of"], old.as_str());
    assert_eq!(retried["deduplicated"], false);

    let task = client.wait(&new, WAIT).await;
    assert_eq!(task["state"], "failed", "same module, same outcome: {task}");
    assert_eq!(task["module"], failed["module"]);
    assert_eq!(task["priority"], "high");
    assert_eq!(task["labels"], json!({"team": "ui", "retry_of": old}));
    assert_eq!(
        task["attempts"].as_array().unwrap().len(),
        1,
        "max_attempts kept"
    );
    assert_eq!(task["attempts"][0]["exit_code"], 42);
    // The old task is untouched.
    let again = client.call("task.get", json!({"id": old})).await;
    assert_eq!(again["state"], "failed");
    assert!(again["labels"].get("retry_of").is_none(), "{again}");

    // Retrying the retry replaces retry_of with the task it copies.
    let third = client.call("task.retry", json!({"id": new})).await;
    let third = client.wait(third["id"].as_str().unwrap(), WAIT).await;
    assert_eq!(third["labels"], json!({"team": "ui", "retry_of": new}));
}

#[tokio::test(flavor = "multi_thread")]
async fn only_failed_cancelled_or_expired_tasks_can_be_retried() {
    let fabric = Fabric::start(&["--workers", "2"]);
    let client = fabric.client();
    client.put_module(fabric_agents::p1::ECHO, "echo").await;
    let ok = client
        .submit(json!({"module": "echo", "input": "fine"}))
        .await;
    assert_eq!(client.wait(&ok, WAIT).await["state"], "succeeded");
    let error = client.error("task.retry", json!({"id": ok})).await;
    assert_eq!(error["code"], -32008, "{error}");
    assert_eq!(error["data"], json!({"id": ok, "state": "succeeded"}));
    assert!(
        error["message"].as_str().unwrap().contains("succeeded"),
        "{error}"
    );
    let output = fabric.fabric(&["task", "retry", &ok]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("RPC error -32008"),
        "{}",
        stderr(&output)
    );

    // A task waiting for its run_at is not finished either; once cancelled it can be retried.
    let later = client
        .submit(json!({"module": "echo", "input": "later", "run_at": "2999-01-01T00:00:00Z"}))
        .await;
    let error = client.error("task.retry", json!({"id": later})).await;
    assert_eq!(error["data"]["state"], "scheduled", "{error}");
    client.call("task.cancel", json!({"id": later})).await;
    let retried = client.call("task.retry", json!({"id": later})).await;
    let task = client.wait(retried["id"].as_str().unwrap(), WAIT).await;
    assert_eq!(task["state"], "succeeded", "run_at is not copied: {task}");
    assert_eq!(task["output"], "later");

    let missing = client.error("task.retry", json!({"id": "nope"})).await;
    assert_eq!(missing["code"], -32002, "{missing}");
    let bad = client.error("task.retry", json!({})).await;
    assert_eq!(bad["code"], -32602, "{bad}");
}

#[tokio::test(flavor = "multi_thread")]
async fn another_tenants_task_is_not_found_and_the_admin_retries_for_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let auth = auth_file(dir.path());
    let fabric = Fabric::start(&["--auth", auth.to_str().unwrap(), "--workers", "2"]);
    let acme = fabric.with_token("acme-token");
    let globex = fabric.with_token("globex-token");
    let admin = fabric.with_token("admin-token");
    acme.put_module(&fabric_agents::fixture("exit_42"), "exit42")
        .await;
    let old = acme
        .submit(json!({"module": "exit42", "retry": {"max_attempts": 1}}))
        .await;
    assert_eq!(acme.wait(&old, WAIT).await["state"], "failed");

    let error = globex.error("task.retry", json!({"id": old})).await;
    assert_eq!(error["code"], -32002, "{error}");

    let retried: Value = admin.call("task.retry", json!({"id": old})).await;
    let new = retried["id"].as_str().unwrap();
    let task = acme.wait(new, WAIT).await;
    assert_eq!(
        task["labels"]["retry_of"],
        old.as_str(),
        "acme owns the copy: {task}"
    );
    let error = globex.error("task.get", json!({"id": new})).await;
    assert_eq!(error["code"], -32002);
}

#[tokio::test(flavor = "multi_thread")]
async fn rpc_discover_describes_task_retry() {
    let fabric = Fabric::start(&[]);
    let document = fabric.client().call("rpc.discover", json!({})).await;
    let method = document["methods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "task.retry")
        .unwrap_or_else(|| panic!("no task.retry in {document}"));
    assert_eq!(method["params"][0]["name"], "id");
}
