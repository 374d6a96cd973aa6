//! `fabric serve` seen from outside: every method, batches and notifications, each error
//! code, tenants and their isolation, idempotency, binary data, request limits, health,
//! metrics and WebSocket subscriptions.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::SinkExt;
use serde_json::{Value, json};

use crate::server::{Fabric, next};
use crate::util::{auth_file, code};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn health_readiness_and_metrics_answer() {
    let fabric = Fabric::start(&["--workers", "2"]);
    let client = fabric.client();
    assert_eq!(client.get("/healthz").await.0, 200);
    assert_eq!(client.get("/readyz").await.0, 200);
    let echo = client.put_module(fabric_agents::p1::ECHO, "echo").await;
    let id = client
        .submit(json!({"module": echo, "input": "m", "priority": "high"}))
        .await;
    client.wait(&id, WAIT).await;
    let (status, text) = client.get("/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "fabric_tasks_submitted_total{priority=\"high\"} 1",
        "fabric_tasks_finished_total{state=\"succeeded\"} 1",
        "fabric_attempts_total{outcome=\"ok\"} 1",
        "fabric_attempt_duration_seconds_count 1",
        "fabric_spawn_duration_seconds_count 1",
        "fabric_queue_depth_tasks{priority=\"normal\"} 0",
        "fabric_running_attempts 0",
        "fabric_workers 2",
        "fabric_rpc_calls_total{method=\"task.submit\",result=\"ok\"} 1",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    for family in [
        "fabric_store_commit_duration_seconds_bucket",
        "fabric_module_cache_hits_total",
        "fabric_module_cache_misses_total",
        "fabric_process_resident_memory_bytes",
        "fabric_process_cpu_seconds_total",
        "fabric_process_open_fds",
        "fabric_attempt_fuel_consumed_bucket",
        "fabric_attempt_peak_memory_bytes_bucket",
    ] {
        assert!(text.contains(family), "missing {family} in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_runs_and_every_read_method_shows_it() {
    let fabric = Fabric::start(&[]);
    let client = fabric.client();
    let echo = client.put_module(fabric_agents::p1::ECHO, "echo").await;
    assert!(echo.starts_with("sha256:") && echo.len() == 71, "{echo}");

    let modules = client.call("module.list", json!({})).await;
    assert_eq!(modules["modules"][0]["module"], echo);
    assert_eq!(modules["modules"][0]["name"], "echo");
    assert_eq!(modules["modules"][0]["kind"], "module");
    assert_eq!(modules["modules"][0]["size"], fabric_agents::p1::ECHO.len());

    let submitted = client
        .call(
            "task.submit",
            json!({"module": "echo", "input": "hello", "labels": {"team": "a"}}),
        )
        .await;
    assert_eq!(submitted["deduplicated"], false);
    let id = submitted["id"].as_str().unwrap();
    let task = client.wait(id, WAIT).await;
    assert_eq!(task["state"], "succeeded", "{task}");
    assert_eq!(task["output"], "hello");
    assert_eq!(task["module"], echo);
    assert_eq!(task["labels"]["team"], "a");
    assert_eq!(task["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(task["attempts"][0]["outcome"], "ok");
    assert!(
        task["attempts"][0]["usage"]["fuel_consumed"]
            .as_u64()
            .unwrap()
            > 0
    );
    for field in ["created_at", "started_at", "finished_at"] {
        let text = task[field].as_str().unwrap();
        assert!(text.ends_with('Z') && text.contains('.'), "{field}: {text}");
    }
    assert_eq!(client.call("task.get", json!({"id": id})).await, task);

    let list = client
        .call("task.list", json!({"state": "succeeded"}))
        .await;
    assert_eq!(list["tasks"][0]["id"], id);
    let stats = client.call("fabric.stats", json!({})).await;
    assert_eq!(stats["succeeded"], 1);
    assert_eq!(stats["queued"]["normal"], 0);
    assert!(stats["workers"].as_u64().unwrap() >= 1);

    let doc = client.call("rpc.discover", json!({})).await;
    assert_eq!(doc["openrpc"], "1.2.6");
    let names: Vec<&str> = doc["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    for method in [
        "module.put",
        "task.submit_batch",
        "task.wait",
        "task.subscribe",
        "fabric.stats",
    ] {
        assert!(names.contains(&method), "{method} missing from {names:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_answer_every_call_with_an_id_and_notifications_get_nothing() {
    let fabric = Fabric::start(&[]);
    let client = fabric.client();
    client.put_module(fabric_agents::p1::ECHO, "echo").await;
    let batch = json!([
        {"jsonrpc": "2.0", "id": "a", "method": "fabric.stats"},
        {"jsonrpc": "2.0", "method": "task.submit", "params": {"module": "echo", "input": "note"}},
        {"jsonrpc": "2.0", "id": 2, "method": "no.such.method"},
        {"jsonrpc": "2.0", "id": 3, "method": "task.submit", "params": {"module": "echo"}},
    ]);
    let (status, answer) = client.post(batch.to_string()).await;
    assert_eq!(status, 200);
    let answers = answer.as_array().expect("a batch answer is an array");
    assert_eq!(answers.len(), 3, "{answer}");
    let by_id = |id: Value| answers.iter().find(|a| a["id"] == id).unwrap().clone();
    assert!(by_id(json!("a"))["result"]["queued"].is_object());
    assert_eq!(code(&by_id(json!(2))["error"]), -32601);
    assert!(by_id(json!(3))["result"]["id"].is_string());
    // The notification ran: two tasks exist.
    let list = client.call("task.list", json!({})).await;
    assert_eq!(list["tasks"].as_array().unwrap().len(), 2);

    let only_notes = json!([{"jsonrpc": "2.0", "method": "fabric.stats"}]);
    let (status, answer) = client.post(only_notes.to_string()).await;
    assert_eq!((status, answer), (204, Value::Null));
    let (status, answer) = client
        .post(json!({"jsonrpc": "2.0", "method": "fabric.stats"}).to_string())
        .await;
    assert_eq!((status, answer), (204, Value::Null));

    let submit_batch = client
        .call(
            "task.submit_batch",
            json!({"tasks": [{"module": "echo", "input": "1"}, {"module": "echo", "input": "2"}]}),
        )
        .await;
    let tasks = submit_batch["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2);
    let second = client.wait(tasks[1]["id"].as_str().unwrap(), WAIT).await;
    assert_eq!(second["output"], "2");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_error_code_comes_with_a_clear_message() {
    let fabric = Fabric::start(&["--max-batch", "3"]);
    let client = fabric.client();
    client.put_module(fabric_agents::p1::ECHO, "echo").await;

    let (status, parse) = client.post("{not json").await;
    assert_eq!(status, 200);
    assert_eq!(code(&parse["error"]), -32700);
    assert_eq!(parse["id"], Value::Null);
    let (_, invalid) = client.post(r#"{"jsonrpc": "2.0", "id": 1}"#).await;
    assert_eq!(code(&invalid["error"]), -32600);
    let (_, empty) = client.post("[]").await;
    assert_eq!(code(&empty["error"]), -32600);
    let too_many = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "fabric.stats"},
        {"jsonrpc": "2.0", "id": 2, "method": "fabric.stats"},
        {"jsonrpc": "2.0", "id": 3, "method": "fabric.stats"},
        {"jsonrpc": "2.0", "id": 4, "method": "fabric.stats"},
    ]);
    let (_, answer) = client.post(too_many.to_string()).await;
    assert_eq!(code(&answer["error"]), -32600);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_batch"),
        "{answer}"
    );

    let missing = client.error("task.nope", json!({})).await;
    assert_eq!(code(&missing), -32601);

    let cases = [
        (
            json!({"module": "echo", "limits": {"fule": 1}}),
            "limits.fule",
        ),
        (
            json!({"module": "echo", "limits": {"memory_bytes": 1u64 << 40}}),
            "limits.memory_bytes",
        ),
        (json!({"module": "echo", "priority": "urgent"}), "priority"),
        (
            json!({"module": "echo", "input": "a", "input_base64": "YQ=="}),
            "input_base64",
        ),
        (json!({"module": "echo", "run_at": "tomorrow"}), "run_at"),
        (json!({"input": "no module"}), "params"),
    ];
    for (params, field) in cases {
        let error = client.error("task.submit", params.clone()).await;
        assert_eq!(code(&error), -32602, "{params}: {error}");
        assert_eq!(error["data"]["field"], field, "{params}: {error}");
    }
    let batch_field = client
        .error(
            "task.submit_batch",
            json!({"tasks": [{"module": "echo"}, {"module": "echo", "retry": {"max_attempts": 0}}]}),
        )
        .await;
    assert_eq!(batch_field["data"]["field"], "tasks[1].retry.max_attempts");
    let list = client.call("task.list", json!({})).await;
    assert!(
        list["tasks"].as_array().unwrap().is_empty(),
        "a refused batch stores nothing"
    );

    let not_found = client
        .error("task.get", json!({"id": "01NOSUCHTASK0000000000000"}))
        .await;
    assert_eq!(code(&not_found), -32002);
    let no_module = client.error("task.submit", json!({"module": "nope"})).await;
    assert_eq!(code(&no_module), -32002);
    assert_eq!(no_module["data"]["field"], "module");

    let garbage = BASE64.encode(b"\0asm\x01\0\0\0\xff\xff");
    let bad_module = client
        .error("module.put", json!({"wasm_base64": garbage}))
        .await;
    assert_eq!(code(&bad_module), -32005, "{bad_module}");
    let not_wasm = client
        .error(
            "module.put",
            json!({"wasm_base64": BASE64.encode(b"#!/bin/sh\necho hi\n")}),
        )
        .await;
    assert_eq!(code(&not_wasm), -32005, "{not_wasm}");

    let over_http = client.error("task.subscribe", json!({})).await;
    assert_eq!(code(&over_http), -32601);
    assert!(over_http["message"].as_str().unwrap().contains("WebSocket"));
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_never_see_each_other_and_the_admin_sees_all() {
    let dir = tempfile::tempdir().unwrap();
    let auth = auth_file(dir.path());
    let fabric = Fabric::start(&["--auth", auth.to_str().unwrap()]);
    let anonymous = fabric.client();
    let acme = fabric.with_token("acme-token");
    let globex = fabric.with_token("globex-token");
    let admin = fabric.with_token("admin-token");

    let (status, denied) = anonymous
        .post(json!({"jsonrpc": "2.0", "id": 1, "method": "fabric.stats"}).to_string())
        .await;
    assert_eq!((status, code(&denied["error"])), (401, -32001));
    let wrong = fabric.with_token("guess");
    let (_, denied) = wrong
        .post(json!({"jsonrpc": "2.0", "id": 1, "method": "fabric.stats"}).to_string())
        .await;
    assert_eq!(code(&denied["error"]), -32001);

    let echo = acme.put_module(fabric_agents::p1::ECHO, "echo").await;
    let id = acme
        .submit(json!({"module": "echo", "input": "acme secret", "run_at": "2099-01-01T00:00:00Z"}))
        .await;

    for (method, params) in [
        ("task.get", json!({"id": id})),
        ("task.wait", json!({"id": id, "timeout_ms": 10})),
        ("task.cancel", json!({"id": id})),
    ] {
        let error = globex.error(method, params).await;
        assert_eq!(code(&error), -32002, "{method}: {error}");
    }
    let by_name = globex.error("task.submit", json!({"module": "echo"})).await;
    assert_eq!(code(&by_name), -32002);
    let by_id = globex.error("task.submit", json!({"module": echo})).await;
    assert_eq!(code(&by_id), -32002);
    assert!(
        globex.call("module.list", json!({})).await["modules"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(
        globex.call("task.list", json!({})).await["tasks"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(globex.call("fabric.stats", json!({})).await["scheduled"], 0);

    assert_eq!(admin.call("task.get", json!({"id": id})).await["id"], id);
    assert_eq!(admin.call("fabric.stats", json!({})).await["scheduled"], 1);
    let cancelled = acme.call("task.cancel", json!({"id": id})).await;
    assert_eq!(cancelled["state"], "cancelled");
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotency_keys_and_binary_data() {
    let fabric = Fabric::start(&[]);
    let client = fabric.client();
    client.put_module(fabric_agents::p1::ECHO, "echo").await;
    let spec = json!({"module": "echo", "input": "once", "idempotency_key": "order-17"});
    let first = client.call("task.submit", spec.clone()).await;
    let second = client.call("task.submit", spec).await;
    assert_eq!(first["deduplicated"], false);
    assert_eq!(second["deduplicated"], true);
    assert_eq!(first["id"], second["id"]);

    let bytes: Vec<u8> = (0..=255u8).rev().collect();
    let id = client
        .submit(json!({"module": "echo", "input_base64": BASE64.encode(&bytes)}))
        .await;
    let task = client.wait(&id, WAIT).await;
    assert_eq!(task["state"], "succeeded");
    assert!(task.get("output").is_none(), "{task}");
    assert_eq!(
        BASE64
            .decode(task["output_base64"].as_str().unwrap())
            .unwrap(),
        bytes
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn request_limits_are_answered_and_the_server_stays_up() {
    let fabric = Fabric::start(&[
        "--max-request-bytes",
        "64KiB",
        "--max-input-bytes",
        "1KiB",
        "--max-module-bytes",
        "40KiB",
    ]);
    let client = fabric.client();
    client
        .put_module(&fabric_agents::fixture("hello"), "hello")
        .await;

    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"task.submit","params":{{"module":"hello","input":"{}"}}}}"#,
        "x".repeat(200 << 10)
    );
    let (status, answer) = client.post(huge).await;
    assert_eq!(status, 413);
    assert_eq!(code(&answer["error"]), -32600);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_request_bytes")
    );

    let input = client
        .error(
            "task.submit",
            json!({"module": "hello", "input": "y".repeat(2000)}),
        )
        .await;
    assert_eq!(
        (code(&input), input["data"]["field"].clone()),
        (-32602, json!("input"))
    );

    let big_module = client
        .error(
            "module.put",
            json!({"wasm_base64": BASE64.encode(vec![0u8; 44 << 10])}),
        )
        .await;
    assert_eq!(code(&big_module), -32602);
    assert_eq!(big_module["data"]["field"], "wasm_base64");

    let id = client.submit(json!({"module": "hello"})).await;
    assert_eq!(client.wait(&id, WAIT).await["state"], "succeeded");
    assert_eq!(client.get("/healthz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_over_its_task_quota_gets_32003() {
    let fabric = Fabric::start(&["--tenant-max-tasks", "3"]);
    let client = fabric.client();
    client.put_module(fabric_agents::p1::ECHO, "echo").await;
    let later = json!({"module": "echo", "run_at": "2099-01-01T00:00:00Z"});
    for _ in 0..3 {
        client.submit(later.clone()).await;
    }
    let error = client.error("task.submit", later.clone()).await;
    assert_eq!(code(&error), -32003, "{error}");
    assert_eq!(error["data"]["limit"], "tenant_max_tasks");
    let batch = client
        .error(
            "task.submit_batch",
            json!({"tasks": [later.clone(), later]}),
        )
        .await;
    assert_eq!(code(&batch), -32003);
}

/// 40 submissions at once against a quota of 10: the check and the admission are one step,
/// so together they cannot pass the limit (before, every one of them read the same count).
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_submissions_cannot_pass_the_task_quota_together() {
    let fabric = Fabric::start(&["--tenant-max-tasks", "10"]);
    let client = fabric.client();
    client.put_module(fabric_agents::p1::ECHO, "echo").await;
    // 40 open connections first, so that the submissions arrive together.
    let warm = (0..40).map(|_| client.call_raw("fabric.stats", json!({})));
    futures_util::future::join_all(warm).await;
    let later = json!({"module": "echo", "run_at": "2099-01-01T00:00:00Z"});
    let calls = (0..40).map(|_| client.call_raw("task.submit", later.clone()));
    let answers = futures_util::future::join_all(calls).await;
    let accepted = answers.iter().filter(|a| a.get("result").is_some()).count();
    for refused in answers.iter().filter(|a| a.get("error").is_some()) {
        assert_eq!(refused["error"]["code"], -32003, "{refused}");
    }
    assert!(
        (1..=10).contains(&accepted),
        "{accepted} of 40 concurrent submissions accepted under a quota of 10"
    );
    let stats = client.call("fabric.stats", json!({})).await;
    assert_eq!(
        stats["scheduled"],
        json!(accepted),
        "every accepted task is stored: {stats}"
    );
}

/// `wasm` with a custom section of `len` bytes of `tag` appended: a different module (and
/// id) of known size that loads like `wasm`.
fn with_custom_section(wasm: &[u8], tag: u8, len: usize) -> Vec<u8> {
    let name = b"pad";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend(std::iter::repeat_n(tag, len));
    let mut out = wasm.to_vec();
    out.push(0); // a custom section
    let mut size = payload.len();
    loop {
        let byte = (size & 0x7f) as u8;
        size >>= 7;
        if size == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(&payload);
    out
}

/// Three different modules uploaded at once, where any two fit the module quota and three
/// do not: at most two are stored, whatever the interleaving.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_uploads_cannot_pass_the_module_quota_together() {
    let modules: Vec<Vec<u8>> = (1..=3)
        .map(|tag| with_custom_section(fabric_agents::p1::ECHO, tag, 4096))
        .collect();
    let quota = (2 * modules[0].len() + 100).to_string();
    let fabric = Fabric::start(&["--tenant-max-module-bytes", &quota]);
    let client = fabric.client();
    let calls = modules
        .iter()
        .map(|wasm| client.call_raw("module.put", json!({"wasm_base64": BASE64.encode(wasm)})));
    let answers = futures_util::future::join_all(calls).await;
    let stored = answers.iter().filter(|a| a.get("result").is_some()).count();
    for refused in answers.iter().filter(|a| a.get("error").is_some()) {
        assert_eq!(refused["error"]["code"], -32003, "{refused}");
    }
    assert_eq!(stored, 2, "{answers:?}");
    let listed = client.call("module.list", json!({})).await;
    assert_eq!(
        listed["modules"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_calls_and_subscriptions() {
    let fabric = Fabric::start(&[]);
    let client = fabric.client();
    client.put_module(fabric_agents::p1::ECHO, "echo").await;
    let ws_url = fabric.url.replacen("http://", "ws://", 1) + "/rpc";
    let (mut socket, _) = tokio_tungstenite::connect_async(&ws_url)
        .await
        .expect("websocket");
    let send =
        |value: Value| tokio_tungstenite::tungstenite::Message::Text(value.to_string().into());
    socket
        .send(send(
            json!({"jsonrpc": "2.0", "id": 1, "method": "task.subscribe", "params": {}}),
        ))
        .await
        .unwrap();
    let subscribed = next(&mut socket).await;
    assert_eq!(subscribed["result"]["subscribed"], true, "{subscribed}");

    socket
        .send(send(json!({"jsonrpc": "2.0", "id": 2, "method": "task.submit", "params": {"module": "echo", "input": "via ws"}})))
        .await
        .unwrap();
    let mut id = None;
    let mut states = Vec::new();
    // The task's events and the answer to its submit travel apart: either may come first.
    while id.is_none() || !states.contains(&"succeeded".to_string()) {
        let message = next(&mut socket).await;
        if message["id"] == 2 {
            id = Some(message["result"]["id"].as_str().unwrap().to_string());
        } else {
            assert_eq!(message["method"], "task.event", "{message}");
            let params = &message["params"];
            states.push(params["state"].as_str().unwrap().to_string());
            if params["state"] == "succeeded" {
                assert_eq!(params["attempt"]["output"], "via ws");
            }
        }
    }
    let id = id.expect("the submit was answered");
    let task = client.call("task.get", json!({"id": id})).await;
    assert_eq!(task["state"], "succeeded");
}

#[test]
fn more_workers_than_the_machine_can_map_refuse_to_start() {
    let max_map_count: u64 = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let serve = |workers: u64| {
        let dir = tempfile::tempdir().unwrap();
        let output = crate::util::fabric(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--workers",
            &workers.to_string(),
        ]);
        assert_eq!(output.status.code(), Some(1));
        let stderr = crate::util::stderr(&output);
        assert!(
            stderr.contains(&format!(
                "--workers {workers} is more than this machine can run"
            )) && stderr.contains(&format!("vm.max_map_count {max_map_count}")),
            "{stderr}"
        );
        stderr
    };

    // More workers than vm.max_map_count allows attempts allocated on demand (about 8
    // mappings each, 4096 kept for the rest of the process), and at least 70,000, more than
    // the pooling allocator's address space holds at the default --max-task-memory of
    // 256 MiB (65,520 slots of 4 memories of 256 MiB + 64 KiB within 64 TiB), so the pool
    // cannot take them either.
    let workers = ((max_map_count - 4096) / 8 + 1).max(70_000);
    assert!(
        workers <= 100_000,
        "vm.max_map_count {max_map_count} is too large for this test"
    );
    let stderr = serve(workers);
    assert!(
        stderr.contains("holds at most 65520 workers with --max-task-memory 268435456 bytes"),
        "{stderr}"
    );

    // Workers the pool holds, but more than the mappings allow pooled workers (about 6
    // each: 65530 allows 10,239).
    let workers = (max_map_count - 4096) / 6 + 1;
    if workers <= 65_520 {
        let stderr = serve(workers);
        assert!(
            stderr.contains("pooled, each worker takes about 6 memory mappings"),
            "{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tenant_cap_is_an_option_with_a_fair_share_default_and_a_bad_value_refuses_to_start() {
    let help = crate::util::fabric(&["serve", "--help"]);
    assert_eq!(help.status.code(), Some(0));
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--tenant-max-running <TENANT_MAX_RUNNING>")
            && help.contains("FABRIC_TENANT_MAX_RUNNING")
            && help.contains(
                "[default: with --auth half the workers, at least 1; without, all the workers]"
            ),
        "{help}"
    );

    let fabric = Fabric::start(&["--workers", "6"]);
    let stats = fabric.client().call("fabric.stats", json!({})).await;
    assert_eq!(
        stats["tenant_max_running"], 6,
        "without --auth there is one tenant, and the cap is off: {stats}"
    );
    drop(fabric);
    let fabric = Fabric::start(&["--workers", "6", "--tenant-max-running", "5"]);
    let stats = fabric.client().call("fabric.stats", json!({})).await;
    assert_eq!(stats["tenant_max_running"], 5, "{stats}");
    drop(fabric);

    for (value, expected) in [
        (
            "0",
            "invalid value '0' for '--tenant-max-running <TENANT_MAX_RUNNING>'",
        ),
        (
            "many",
            "invalid value 'many' for '--tenant-max-running <TENANT_MAX_RUNNING>'",
        ),
    ] {
        let output = crate::util::fabric(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tenant-max-running",
            value,
        ]);
        assert_eq!(output.status.code(), Some(2), "{value}");
        let stderr = crate::util::stderr(&output);
        assert!(stderr.contains(expected), "{value}: {stderr}");
    }
    let output = crate::util::fabric_with(
        &["serve", "--listen", "127.0.0.1:0"],
        &[("FABRIC_TENANT_MAX_RUNNING", "0")],
        b"",
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        crate::util::stderr(&output).contains("'--tenant-max-running <TENANT_MAX_RUNNING>'"),
        "{}",
        crate::util::stderr(&output)
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cap.toml");
    std::fs::write(&file, "tenant_max_running = 0\n").unwrap();
    let output = crate::util::fabric(&[
        "serve",
        "--config",
        file.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = crate::util::stderr(&output);
    assert!(
        stderr.contains("invalid option tenant_max_running: must be at least 1"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_file_is_read_and_unknown_keys_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "workers = 3\nmax_input_bytes = \"2KiB\"\n").unwrap();
    let fabric = Fabric::start(&["--config", good.to_str().unwrap()]);
    let stats = fabric.client().call("fabric.stats", json!({})).await;
    assert_eq!(stats["workers"], 3);
    drop(fabric);

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "wokers = 3\n").unwrap();
    let output = crate::util::fabric(&[
        "serve",
        "--config",
        bad.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = crate::util::stderr(&output);
    assert!(stderr.contains("wokers"), "{stderr}");

    let public = crate::util::fabric(&["serve", "--listen", "0.0.0.0:0"]);
    assert_eq!(public.status.code(), Some(2));
    assert!(crate::util::stderr(&public).contains("loopback"));
}

#[tokio::test(flavor = "multi_thread")]
async fn attack_cross_site_calls_from_a_foreign_web_page_are_refused() {
    let fabric = Fabric::start(&["--workers", "2"]);
    let client = fabric.client();
    let http = reqwest::Client::new();
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "fabric.stats"}).to_string();
    let post = |origin: &'static str| {
        http.post(format!("{}/rpc", fabric.url))
            .header("content-type", "text/plain")
            .header("origin", origin)
            .body(call.clone())
            .send()
    };
    // A page of another origin posts a "simple" request (no preflight): refused.
    let refused = post("http://evil.example").await.unwrap();
    assert_eq!(refused.status().as_u16(), 403);
    let answer: Value = refused.json().await.unwrap();
    assert_eq!(code(&answer["error"]), -32001, "{answer}");
    // The server's own page (the dashboard) is the same origin: served.
    let own = fabric.url.clone();
    let own: &'static str = Box::leak(own.into_boxed_str());
    assert_eq!(post(own).await.unwrap().status().as_u16(), 200);

    // A WebSocket upgrade from a foreign page is refused before it is upgraded.
    let ws_url = fabric.url.replacen("http://", "ws://", 1) + "/rpc";
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            ws_url.as_str(),
        )
        .unwrap();
    request
        .headers_mut()
        .insert("origin", "http://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 403)
        }
        other => panic!("a foreign origin's upgrade was not refused: {other:?}"),
    }
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            ws_url.as_str(),
        )
        .unwrap();
    request
        .headers_mut()
        .insert("origin", fabric.url.parse().unwrap());
    tokio_tungstenite::connect_async(request)
        .await
        .expect("the same origin's upgrade is served");
    client.assert_serves().await;
}
