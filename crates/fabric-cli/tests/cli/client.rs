//! The client side against a real `fabric serve`: `module`, `submit`, `task` and `token`
//! as a user runs them, and `fabric_client::Client` as a program uses it.

use std::time::{Duration, Instant};

use fabric_client::{Client, ClientError};
use fabric_types::TaskState;
use fabric_types::wire::{TaskList, TaskSpec, code};
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::server::Fabric;
use crate::util::*;

/// A server with the echo and strict agents stored under those names.
fn server_with_agents(dir: &Workdir) -> Fabric {
    let server = Fabric::start(&[]);
    for (name, bytes) in [
        ("echo", fabric_agents::p1::ECHO),
        ("strict", fabric_agents::p1::STRICT),
    ] {
        let path = dir.file(&format!("{name}.wasm"), bytes);
        let out = server.fabric(&["module", "put", path.to_str().unwrap(), "--name", name]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    server
}

fn id_of(output: &std::process::Output) -> String {
    json_of(output)["id"].as_str().unwrap().to_owned()
}

#[test]
fn modules_are_stored_from_wasm_and_wat_and_listed() {
    let dir = Workdir::new();
    let server = Fabric::start(&[]);
    let echo = dir.file("echo.wasm", fabric_agents::p1::ECHO);
    let out = server.fabric(&["module", "put", echo.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stored = json_of(&out);
    let expected_id = format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(fabric_agents::p1::ECHO))
    );
    assert_eq!(stored["module"], expected_id.as_str());
    assert_eq!(stored["size"], fabric_agents::p1::ECHO.len());
    assert_eq!(stored["kind"], "module");

    let hello = dir.file(
        "hello.wat",
        include_str!("../../../../agents/wat/hello.wat").as_bytes(),
    );
    let out = server.fabric(&["module", "put", hello.to_str().unwrap(), "--name", "hello"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("MODULE"), "{table}");
    assert!(table.lines().nth(1).unwrap().ends_with("hello"), "{table}");

    let listed = json_of(&server.fabric(&["module", "ls", "--json"]));
    let modules = listed["modules"].as_array().unwrap();
    assert_eq!(modules.len(), 2, "{listed}");
    assert!(modules.iter().any(|m| m["module"] == expected_id.as_str()));
    assert!(modules.iter().any(|m| m["name"] == "hello"));

    let human = server.fabric(&["module", "ls"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.contains(&expected_id), "{text}");

    let out = server.fabric(&["submit", "hello", "--wait", "--json"]);
    assert_eq!(json_of(&out)["output"], "hello from wat\n");
}

#[test]
fn submit_wait_json_prints_the_finished_task() {
    let dir = Workdir::new();
    let server = server_with_agents(&dir);
    let out = server.fabric(&[
        "submit",
        "echo",
        "--input",
        "hello",
        "--priority",
        "high",
        "--label",
        "team=blue",
        "--wait",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let task = json_of(&out);
    assert_eq!(task["state"], "succeeded", "{task}");
    assert_eq!(task["output"], "hello");
    assert_eq!(task["priority"], "high");
    assert_eq!(task["labels"]["team"], "blue");
    assert_eq!(task["attempts"][0]["outcome"], "ok");
    assert!(task["finished_at"].as_str().unwrap().ends_with('Z'));

    let human = server.fabric(&["submit", "echo", "--input", "hi there", "--wait"]);
    assert_eq!(human.status.code(), Some(0));
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("state     succeeded\n"), "{text}");
    assert!(text.contains("ATTEMPT  OUTCOME"), "{text}");
    assert!(text.ends_with("output:\nhi there\n"), "{text}");
}

#[test]
fn a_submitted_task_can_be_read_waited_for_and_listed() {
    let dir = Workdir::new();
    let server = server_with_agents(&dir);
    let out = server.fabric(&["submit", "echo", "--input", "later", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let submitted = json_of(&out);
    let keys: Vec<&String> = submitted.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["deduplicated", "id", "state"], "{submitted}");
    assert_eq!(submitted["deduplicated"], false);
    let id = submitted["id"].as_str().unwrap();

    let waited = server.fabric(&["task", "wait", id, "--timeout", "30s", "--json"]);
    assert_eq!(waited.status.code(), Some(0), "{}", stderr(&waited));
    assert_eq!(json_of(&waited)["output"], "later");

    let got = json_of(&server.fabric(&["task", "get", id, "--json"]));
    assert_eq!(got["id"], id);
    assert_eq!(got["state"], "succeeded");
    let human = server.fabric(&["task", "get", id]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.starts_with(&format!("id        {id}\n")), "{text}");
    assert!(text.ends_with("output:\nlater\n"), "{text}");

    let listed = json_of(&server.fabric(&["task", "ls", "--state", "succeeded", "--json"]));
    let ids: Vec<&str> = listed["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id]);
    let none = json_of(&server.fabric(&["task", "ls", "--state", "failed", "--json"]));
    assert_eq!(none["tasks"], json!([]));

    let table = server.fabric(&["task", "ls", "--limit", "1"]);
    let text = String::from_utf8_lossy(&table.stdout);
    let header: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "ID", "STATE", "PRIORITY", "ATTEMPTS", "OUTCOME", "DURATION", "MODULE"
        ]
    );
    let row: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..5], [id, "succeeded", "normal", "1", "ok"], "{text}");
}

#[test]
fn an_idempotency_key_makes_a_resubmission_harmless() {
    let dir = Workdir::new();
    let server = server_with_agents(&dir);
    let args = [
        "submit",
        "echo",
        "--input",
        "x",
        "--idempotency-key",
        "order-42",
        "--json",
    ];
    let first = json_of(&server.fabric(&args));
    let second = json_of(&server.fabric(&args));
    assert_eq!(first["id"], second["id"]);
    assert_eq!(first["deduplicated"], false);
    assert_eq!(second["deduplicated"], true);
}

#[test]
fn count_submits_copies_in_batches_and_waits_for_every_one() {
    let dir = Workdir::new();
    let server = server_with_agents(&dir);
    // More than two batches of 500.
    let out = server.fabric(&[
        "submit", "echo", "--input", "n", "--count", "1201", "--wait", "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let tasks = json_of(&out)["tasks"].as_array().unwrap().clone();
    assert_eq!(tasks.len(), 1201);
    let mut ids: Vec<&str> = tasks.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert!(
        tasks
            .iter()
            .all(|t| t["state"] == "succeeded" && t["output"] == "n")
    );
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 1201, "every copy is its own task");
    // stderr is not a terminal here: no progress bar is drawn.
    assert_eq!(stderr(&out), "", "no progress bar without a terminal");

    let out = server.fabric(&["submit", "echo", "--count", "3", "--idempotency-key", "k"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 4, "a header and three rows: {text}");
    assert_eq!(stderr(&out).trim(), "submitted 3 tasks (0 deduplicated)");
    let again = json_of(&server.fabric(&[
        "submit",
        "echo",
        "--count",
        "3",
        "--idempotency-key",
        "k",
        "--json",
    ]));
    let again = again["tasks"].as_array().unwrap();
    assert!(again.iter().all(|s| s["deduplicated"] == true), "{again:?}");
    let first_ids: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    let again_ids: Vec<&str> = again.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(first_ids, again_ids);
}

#[test]
fn a_failing_agent_makes_submit_wait_exit_one() {
    let dir = Workdir::new();
    let server = server_with_agents(&dir);
    let out = server.fabric(&[
        "submit",
        "strict",
        "--input",
        "nonsense",
        "--max-attempts",
        "1",
        "--wait",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let task = json_of(&out);
    assert_eq!(task["state"], "failed", "{task}");
    assert_eq!(task["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(task["attempts"][0]["outcome"], "exit");
    assert_eq!(task["attempts"][0]["exit_code"], 3);

    let human = server.fabric(&[
        "submit",
        "strict",
        "--input",
        "{}",
        "--max-attempts",
        "2",
        "--wait",
    ]);
    assert_eq!(human.status.code(), Some(1));
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("state     failed\n"), "{text}");
    assert_eq!(text.matches("exit 3").count(), 2, "two attempts: {text}");
    assert!(text.contains("stderr of attempt 2:"), "{text}");

    let ok = server.fabric(&[
        "submit",
        "strict",
        "--input",
        r#"{"name": "ada"}"#,
        "--wait",
        "--json",
    ]);
    assert_eq!(ok.status.code(), Some(0));
    assert_eq!(json_of(&ok)["output"], "hello, ada\n");
}

#[test]
fn binary_input_from_a_file_comes_back_as_base64() {
    let dir = Workdir::new();
    let server = server_with_agents(&dir);
    let input = dir.file("input.bin", &[0xff, 0xfe, 0x00]);
    let out = server.fabric(&[
        "submit",
        "echo",
        "--input-file",
        input.to_str().unwrap(),
        "--wait",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let task = json_of(&out);
    assert_eq!(task["output_base64"], "//4A");
    assert!(task.get("output").is_none(), "{task}");
}

#[test]
fn a_waiting_task_is_cancelled_and_a_wait_can_time_out() {
    let dir = Workdir::new();
    let server = server_with_agents(&dir);
    let id = id_of(&server.fabric(&[
        "submit",
        "echo",
        "--run-at",
        "2099-01-01T00:00:00Z",
        "--json",
    ]));

    let started = Instant::now();
    let out = server.fabric(&["task", "wait", &id, "--timeout", "300ms", "--json"]);
    assert_eq!(out.status.code(), Some(1), "not finished: {}", stderr(&out));
    assert_eq!(json_of(&out)["state"], "scheduled");
    assert_eq!(
        stderr(&out).trim(),
        format!("task {id} is still scheduled after --timeout 300ms")
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    let out = server.fabric(&["task", "cancel", &id, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json_of(&out)["state"], "cancelled");

    // Waiting for several: one JSON object per task, and 1 since one did not succeed.
    let done = id_of(&server.fabric(&["submit", "echo", "--wait", "--json"]));
    let out = server.fabric(&["task", "wait", &done, &id, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let states: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["state"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(states, ["succeeded", "cancelled"]);
    let out = server.fabric(&["task", "wait", &done]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn server_errors_are_one_line_naming_the_url_and_the_code() {
    let dir = Workdir::new();
    let server = server_with_agents(&dir);
    for args in [
        &["task", "get", "no-such-task"][..],
        &["task", "cancel", "no-such-task"],
        &["submit", "no-such-module", "--wait"],
    ] {
        let out = server.fabric(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err:?}");
        assert!(err.starts_with("error: "), "{err}");
        assert!(err.contains(&server.url), "{err}");
        assert!(err.contains(&code::NOT_FOUND.to_string()), "{err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn a_server_that_is_not_running_is_exit_one_naming_the_url() {
    let url = unused_url();
    for args in [
        &["task", "ls"][..],
        &["module", "ls"],
        &["submit", "echo", "--wait"],
    ] {
        let out = fabric_with(args, &[("FABRIC_URL", &url)], b"");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err:?}");
        assert!(
            err.starts_with("error: cannot reach the server at "),
            "{err}"
        );
        assert!(err.contains(&url), "{err}");
    }
    // --server wins over FABRIC_URL.
    let out = fabric_with(
        &["task", "ls", "--server", &url],
        &[("FABRIC_URL", "http://127.0.0.1:1")],
        b"",
    );
    assert!(stderr(&out).contains(&url), "{}", stderr(&out));
}

#[test]
fn bad_usage_and_unreadable_files_exit_two() {
    let dir = Workdir::new();
    let not_wat = dir.file("broken.wat", b"(module (func $f (unknown)))");
    for args in [
        &["submit"][..],
        &["submit", "echo", "--priority", "urgent"],
        &["submit", "echo", "--count", "0"],
        &["submit", "echo", "--run-at", "next tuesday"],
        &["submit", "echo", "--input-file", "/nonexistent/input"],
        &["module", "put", "/nonexistent/agent.wasm"],
        &["module", "put", not_wat.to_str().unwrap()],
        &["task", "wait"],
        &["task", "ls", "--state", "done"],
        &["task", "ls", "--server", "ftp://example.invalid"],
        &["token", "new"],
        &["token", "new", "--tenant", "a b"],
        &["token", "new", "--tenant", "acme", "--admin"],
    ] {
        let out = fabric_with(args, &[("FABRIC_URL", &unused_url())], b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn a_new_token_is_accepted_by_a_server_whose_auth_file_has_its_table() {
    let out = fabric(&["token", "new", "--tenant", "acme"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let token = text.lines().next().unwrap().to_owned();
    assert_eq!(token.len(), 43, "32 bytes in base64url: {token}");
    let table = &text[text.find("[[token]]").expect("a [[token]] table")..];
    assert!(!table.contains(&token), "the table never holds the token");
    let digest = hex::encode(sha2::Sha256::digest(token.as_bytes()));
    assert_eq!(
        table,
        format!("[[token]]\ntenant = \"acme\"\nsha256 = \"{digest}\"\n")
    );

    let admin = json_of(&fabric(&["token", "new", "--admin", "--json"]));
    assert_eq!(admin["role"], "admin");
    let admin_token = admin["token"].as_str().unwrap();
    assert_eq!(
        admin["sha256"],
        hex::encode(sha2::Sha256::digest(admin_token.as_bytes()))
    );
    assert_ne!(admin_token, token, "every token is fresh");

    let dir = Workdir::new();
    let auth = dir.file("auth.toml", table.as_bytes());
    let server = Fabric::start(&["--auth", auth.to_str().unwrap()]);
    let refused = server.fabric(&["module", "ls"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains(&code::UNAUTHORIZED.to_string()),
        "{}",
        stderr(&refused)
    );
    let accepted = fabric_with(
        &["module", "ls", "--json"],
        &[("FABRIC_URL", &server.url), ("FABRIC_TOKEN", &token)],
        b"",
    );
    assert_eq!(accepted.status.code(), Some(0), "{}", stderr(&accepted));
    assert_eq!(json_of(&accepted)["modules"], json!([]));
}

/// The library client, end to end: every typed method, a batch, errors by code, and the
/// WebSocket event stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_client_speaks_every_method() {
    let server = Fabric::start(&[]);
    let client = Client::new(&server.url, None).unwrap();

    let stored = client
        .module_put(fabric_agents::p1::ECHO, Some("echo"))
        .await
        .unwrap();
    assert!(stored.module.starts_with("sha256:"));
    let modules = client.module_list().await.unwrap();
    assert_eq!(modules.len(), 1);
    assert_eq!(modules[0].name.as_deref(), Some("echo"));

    let mut events = client.subscribe(None).await.unwrap();
    let spec = TaskSpec {
        module: "echo".into(),
        input: Some("streamed".into()),
        ..TaskSpec::default()
    };
    let submitted = client.task_submit(&spec).await.unwrap();
    assert!(!submitted.deduplicated);
    let mut seen = Vec::new();
    let terminal = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(notice) = events.next().await {
            let notice = notice.unwrap();
            if notice.id == submitted.id {
                seen.push(notice.state);
                if notice.state.is_terminal() {
                    return notice;
                }
            }
        }
        panic!("the event stream ended; saw {seen:?}");
    })
    .await
    .expect("a terminal event within 30 s");
    assert_eq!(terminal.state, TaskState::Succeeded);
    drop(events);

    let task = client
        .task_wait(&submitted.id, Some(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(task.state, TaskState::Succeeded);
    assert_eq!(task.output.as_deref(), Some("streamed"));
    assert_eq!(client.task_get(&submitted.id).await.unwrap(), task);

    let batch = client
        .task_submit_batch(vec![spec.clone(), spec.clone(), spec])
        .await
        .unwrap();
    assert_eq!(batch.len(), 3);
    for s in &batch {
        let task = client
            .task_wait(&s.id, Some(Duration::from_secs(30)))
            .await
            .unwrap();
        assert_eq!(task.state, TaskState::Succeeded);
    }
    let page = client
        .task_list(TaskList {
            state: Some(TaskState::Succeeded),
            limit: Some(2),
            cursor: None,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.tasks.len(), 2);
    assert!(page.next_cursor.is_some());

    let stats = client.stats().await.unwrap();
    assert_eq!(stats.succeeded, 4);
    assert!(stats.workers >= 1);
    let document = client.discover().await.unwrap();
    let methods: Vec<&str> = document["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(methods.contains(&"task.submit_batch"), "{methods:?}");

    let answers = client
        .batch(vec![
            ("task.get", json!({"id": submitted.id})),
            ("task.get", json!({"id": "no-such-task"})),
            ("no.such.method", json!({})),
        ])
        .await
        .unwrap();
    assert_eq!(answers[0].as_ref().unwrap()["id"], submitted.id.as_str());
    assert_eq!(
        answers[1].as_ref().unwrap_err().code(),
        Some(code::NOT_FOUND)
    );
    assert_eq!(
        answers[2].as_ref().unwrap_err().code(),
        Some(code::METHOD_NOT_FOUND)
    );

    let error = client.task_cancel("no-such-task").await.unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::Rpc {
                code: code::NOT_FOUND,
                ..
            }
        ),
        "{error:?}"
    );
    let error = client.call("task.get", json!({"id": 7})).await.unwrap_err();
    assert_eq!(error.code(), Some(code::INVALID_PARAMS), "{error:?}");
}

#[tokio::test]
async fn the_library_client_is_refused_without_the_token_and_accepted_with_it() {
    let token = "a-token-for-this-test-only";
    let dir = Workdir::new();
    let digest = hex::encode(sha2::Sha256::digest(token.as_bytes()));
    let auth = dir.file(
        "auth.toml",
        format!("[[token]]\ntenant = \"t1\"\nsha256 = \"{digest}\"\n").as_bytes(),
    );
    let server = Fabric::start(&["--auth", auth.to_str().unwrap()]);

    let anonymous = Client::new(&server.url, None).unwrap();
    let error = anonymous.stats().await.unwrap_err();
    assert_eq!(error.code(), Some(code::UNAUTHORIZED), "{error:?}");
    let error = anonymous.subscribe(None).await.err().expect("refused");
    assert_eq!(error.code(), Some(code::UNAUTHORIZED), "{error:?}");

    let client = Client::new(&server.url, Some(token.into())).unwrap();
    assert_eq!(client.stats().await.unwrap().succeeded, 0);
    assert!(client.subscribe(None).await.is_ok());
}
