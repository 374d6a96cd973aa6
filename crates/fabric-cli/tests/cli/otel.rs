//! OpenTelemetry traces from the real server: a loopback OTLP/HTTP receiver decodes what
//! `fabric serve` exports (protobuf with the official `opentelemetry-proto` message types,
//! JSON by OTLP's JSON mapping) and the tests check the spans of a call, its task, the
//! task's attempts and their outbound requests, joined to the caller's `traceparent`; that
//! a collector that is down or slow never delays nor fails a task; and that nothing is
//! exported unless the `OTEL_*` variables ask for it.

use std::time::{Duration, Instant};

use fabric_agents::peer::Peer;
use serde_json::{Value, json};

use crate::otlp::{Mode, Receiver, Span, decode, spans_until};
use crate::server::{Client, Fabric};
use crate::util::{Workdir, fabric_with, stderr};

const WAIT: Duration = Duration::from_secs(60);
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{TRACE}-{CALLER_SPAN}-01")
}

fn env(receiver: &Receiver) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url.clone()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50".into()),
    ]
}

fn start(args: &[&str], vars: &[(&'static str, String)]) -> Fabric {
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Fabric::start_env(args, &vars)
}

/// `method(params)` posted with these extra headers; the whole answer.
async fn call_with(
    client: &Client,
    headers: &[(&str, &str)],
    method: &str,
    params: Value,
) -> Value {
    let mut request = reqwest::Client::new()
        .post(format!("{}/rpc", client.url))
        .header("content-type", "application/json")
        .body(json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string());
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    request.send().await.unwrap().json().await.unwrap()
}

fn one<'a>(spans: &'a [Span], what: impl Fn(&Span) -> bool, name: &str) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| what(s)).collect();
    assert_eq!(found.len(), 1, "one {name} span expected: {spans:#?}");
    found[0]
}

#[tokio::test]
async fn otel_a_submit_with_a_traceparent_puts_its_call_task_and_attempts_in_the_callers_trace() {
    let receiver = Receiver::start(Mode::Ok).await;
    let mut vars = env(&receiver);
    vars.push(("OTEL_SERVICE_NAME", "fabric-under-test".into()));
    vars.push(("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=s%3Dcret".into()));
    vars.push((
        "OTEL_RESOURCE_ATTRIBUTES",
        "deployment.environment=test".into(),
    ));
    let server = start(&["--workers", "2", "--node", "node-a"], &vars);
    let client = server.client();
    // `strict` exits 3 on input that is not a JSON object: two attempts, then failed.
    let module = client.put_module(fabric_agents::p1::STRICT, "strict").await;
    let headers = [
        ("traceparent", traceparent()),
        ("tracestate", "vendor=opaque".to_string()),
    ];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let answer = call_with(
        &client,
        &headers,
        "task.submit",
        json!({"module": module, "input": "not json", "priority": "high",
               "retry": {"max_attempts": 2, "backoff_ms": 1}}),
    )
    .await;
    let id = answer["result"]["id"]
        .as_str()
        .expect("task id")
        .to_string();
    let task = client.wait(&id, WAIT).await;
    assert_eq!(task["state"], "failed", "{task}");

    let spans = spans_until(&receiver, |spans| {
        spans.iter().any(|s| s.name == "task")
            && spans.iter().filter(|s| s.name == "attempt").count() == 2
    })
    .await;
    let rpc = one(&spans, |s| s.name == "task.submit", "task.submit");
    assert_eq!(
        (rpc.trace_id.as_str(), rpc.parent.as_str()),
        (TRACE, CALLER_SPAN)
    );
    assert_eq!(rpc.kind, 2, "a server span");
    assert_eq!(rpc.str("rpc.system"), "jsonrpc");
    assert_eq!(rpc.str("rpc.method"), "task.submit");
    assert_eq!(rpc.str("fabric.tenant"), "default");
    assert_eq!(rpc.trace_state, "vendor=opaque");
    assert!(rpc.start <= rpc.end && rpc.start > 0);

    let task_span = one(&spans, |s| s.name == "task", "task");
    assert_eq!(task_span.trace_id, TRACE);
    assert_eq!(
        task_span.parent, rpc.span_id,
        "the task is a child of the call"
    );
    assert_eq!(task_span.str("fabric.task.id"), id);
    assert_eq!(task_span.str("fabric.tenant"), "default");
    assert_eq!(task_span.str("fabric.module"), module);
    assert_eq!(task_span.str("fabric.task.priority"), "high");
    assert_eq!(task_span.str("fabric.task.state"), "failed");
    assert_eq!(task_span.int("fabric.task.attempts"), 2);
    assert_eq!(task_span.status_code, 2, "a failed task is an error");
    assert!(
        task_span.start <= rpc.end,
        "the task's span starts at its submit"
    );

    let mut attempts: Vec<&Span> = spans.iter().filter(|s| s.name == "attempt").collect();
    attempts.sort_by_key(|s| s.int("fabric.attempt.number"));
    for (n, attempt) in attempts.iter().enumerate() {
        assert_eq!(attempt.trace_id, TRACE);
        assert_eq!(
            attempt.parent, task_span.span_id,
            "an attempt is a child of its task"
        );
        assert_eq!(attempt.int("fabric.attempt.number"), n as i64 + 1);
        assert_eq!(attempt.str("fabric.attempt.outcome"), "exit");
        assert_eq!(attempt.int("fabric.attempt.exit_code"), 3);
        assert_eq!(attempt.str("fabric.task.id"), id);
        assert_eq!(attempt.str("fabric.tenant"), "default");
        assert_eq!(attempt.str("fabric.module"), module);
        assert_eq!(attempt.str("fabric.node"), "node-a");
        assert!(attempt.int("fabric.attempt.fuel_consumed") > 0);
        assert!(attempt.int("fabric.attempt.peak_memory_bytes") > 0);
        assert!(attempt.int("fabric.attempt.wall_ms") >= 0);
        assert_eq!(attempt.status_code, 2);
        assert!(attempt.start >= task_span.start && attempt.end <= task_span.end);
    }
    assert_ne!(attempts[0].span_id, attempts[1].span_id);

    let export = &receiver.exports()[0];
    assert_eq!(export.path, "/v1/traces");
    assert_eq!(export.headers["content-type"], "application/x-protobuf");
    assert_eq!(export.headers["x-api-key"], "s=cret");
    let (resource, _) = decode(export);
    assert_eq!(resource["service.name"], "fabric-under-test");
    assert_eq!(resource["service.instance.id"], "node-a");
    assert_eq!(resource["deployment.environment"], "test");

    // A refused call is a span with its error code; a call without a traceparent starts a
    // trace of its own; an invalid traceparent is ignored, never an error.
    let refused = call_with(&client, &headers, "task.get", json!({"id": "nope"})).await;
    assert_eq!(refused["error"]["code"], -32002, "{refused}");
    for bad in ["", "00-not-a-trace-01", &traceparent().to_uppercase()] {
        let answer = call_with(&client, &[("traceparent", bad)], "fabric.stats", json!({})).await;
        assert!(answer.get("result").is_some(), "{bad:?}: {answer}");
    }
    let spans = spans_until(&receiver, |spans| {
        spans.iter().filter(|s| s.name == "fabric.stats").count() == 3
            && spans.iter().any(|s| s.name == "task.get")
    })
    .await;
    let get = one(&spans, |s| s.name == "task.get", "task.get");
    assert_eq!(get.int("rpc.jsonrpc.error_code"), -32002);
    assert_eq!(get.status_code, 2);
    for stats in spans.iter().filter(|s| s.name == "fabric.stats") {
        assert_ne!(stats.trace_id, TRACE);
        assert_eq!(stats.parent, "", "a new trace: no parent");
    }
    server.client().assert_serves().await;
}

#[tokio::test]
async fn otel_the_json_protocol_posts_otlp_json_to_the_traces_endpoint() {
    let receiver = Receiver::start(Mode::Ok).await;
    let vars = vec![
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            format!("{}/custom/traces", receiver.url),
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json".into()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50".into()),
    ];
    let server = start(&["--workers", "2"], &vars);
    let client = server.client();
    let module = client.put_module(fabric_agents::p1::ECHO, "echo").await;
    let tp = traceparent();
    let answer = call_with(
        &client,
        &[("traceparent", &tp)],
        "task.submit_batch",
        json!({"tasks": [{"module": module, "input": "a"}, {"module": module, "input": "b"}]}),
    )
    .await;
    let ids: Vec<String> = answer["result"]["tasks"]
        .as_array()
        .unwrap_or_else(|| panic!("{answer}"))
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    for id in &ids {
        assert_eq!(client.wait(id, WAIT).await["state"], "succeeded");
    }
    let spans = spans_until(&receiver, |spans| {
        spans.iter().filter(|s| s.name == "task").count() == 2
            && spans.iter().filter(|s| s.name == "attempt").count() == 2
    })
    .await;
    let export = &receiver.exports()[0];
    assert_eq!(export.path, "/custom/traces");
    assert_eq!(export.headers["content-type"], "application/json");
    let rpc = one(
        &spans,
        |s| s.name == "task.submit_batch",
        "task.submit_batch",
    );
    assert_eq!(
        (rpc.trace_id.as_str(), rpc.parent.as_str()),
        (TRACE, CALLER_SPAN)
    );
    for id in &ids {
        let task = one(
            &spans,
            |s| s.name == "task" && s.str("fabric.task.id") == id,
            "task",
        );
        assert_eq!(task.parent, rpc.span_id);
        assert_eq!(task.str("fabric.task.state"), "succeeded");
        assert_eq!(task.status_code, 1, "a succeeded task is ok");
        let attempt = one(
            &spans,
            |s| s.name == "attempt" && s.str("fabric.task.id") == id,
            "attempt",
        );
        assert_eq!(attempt.parent, task.span_id);
        assert_eq!(attempt.trace_id, TRACE);
        assert_eq!(attempt.str("fabric.attempt.outcome"), "ok");
    }
}

#[tokio::test]
async fn otel_an_outbound_request_is_a_child_span_of_its_attempt_without_query_or_headers() {
    let receiver = Receiver::start(Mode::Ok).await;
    let peer = Peer::start();
    let dir = Workdir::new();
    let config = dir.file(
        "fabric.toml",
        format!(
            "[[egress]]\nname = \"peer\"\nallow = [\"{}\"]\nheaders = {{ authorization = \"Bearer SECRET\" }}\n",
            peer.url()
        )
        .as_bytes(),
    );
    let server = start(
        &["--workers", "2", "--config", config.to_str().unwrap()],
        &env(&receiver),
    );
    let client = server.client();
    let module = client.put_module(fabric_agents::p2::FETCH, "fetch").await;
    let lines = format!(
        "GET {}/hello?token=QUERY-SECRET\nGET {}/missing\nGET http://169.254.169.254/",
        peer.url(),
        peer.url()
    );
    let tp = traceparent();
    let answer = call_with(
        &client,
        &[("traceparent", &tp)],
        "task.submit",
        json!({"module": module, "input": lines, "egress": ["peer"]}),
    )
    .await;
    let id = answer["result"]["id"].as_str().unwrap().to_string();
    assert_eq!(client.wait(&id, WAIT).await["state"], "succeeded");
    let spans = spans_until(&receiver, |spans| spans.iter().any(|s| s.name == "task")).await;
    let attempt = one(&spans, |s| s.name == "attempt", "attempt");
    let mut calls: Vec<&Span> = spans.iter().filter(|s| s.kind == 3).collect();
    calls.sort_by_key(|s| s.start);
    assert_eq!(calls.len(), 3, "{spans:#?}");
    for call in &calls {
        assert_eq!(call.trace_id, TRACE);
        assert_eq!(
            call.parent, attempt.span_id,
            "a request is a child of its attempt"
        );
        assert_eq!(call.name, "GET");
        assert_eq!(call.str("http.request.method"), "GET");
    }
    let port = i64::from(peer.addr.port());
    assert_eq!(calls[0].str("server.address"), "127.0.0.1");
    assert_eq!(calls[0].int("server.port"), port);
    assert_eq!(calls[0].int("http.response.status_code"), 200);
    assert_eq!(calls[0].int("fabric.egress.bytes_received"), 5);
    assert_eq!(calls[0].str("fabric.egress.decision"), "answered");
    assert_eq!(calls[0].str("fabric.egress.policy"), "peer");
    assert_eq!(calls[1].int("http.response.status_code"), 404);
    assert_eq!(calls[1].status_code, 2, "a 4xx answer is an error");
    assert_eq!(calls[2].str("server.address"), "169.254.169.254");
    assert_eq!(calls[2].str("fabric.egress.decision"), "denied");
    assert_eq!(calls[2].status_code, 2);
    // Neither the query nor a header value is anywhere in what was exported.
    for export in receiver.exports() {
        let text = String::from_utf8_lossy(&export.body);
        assert!(
            !text.contains("QUERY-SECRET") && !text.contains("token="),
            "the query leaked"
        );
        assert!(!text.contains("SECRET"), "a header value leaked");
    }
}

#[tokio::test]
async fn otel_a_collector_down_or_slow_never_delays_nor_fails_tasks() {
    let slow = Receiver::start(Mode::Silent).await;
    for (what, url, queue) in [
        ("down", crate::util::unused_url(), "2048"),
        ("slow", slow.url.clone(), "8"),
    ] {
        let vars = vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", url),
            ("OTEL_BSP_SCHEDULE_DELAY", "50".into()),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000".into()),
            ("OTEL_BSP_MAX_QUEUE_SIZE", queue.into()),
        ];
        let mut server = start(&["--workers", "4"], &vars);
        let client = server.client();
        let module = client.put_module(fabric_agents::p1::ECHO, "echo").await;
        let tp = traceparent();
        let tasks: Vec<Value> = (0..40)
            .map(|i| json!({"module": module, "input": format!("{i}")}))
            .collect();
        let answer = call_with(
            &client,
            &[("traceparent", &tp)],
            "task.submit_batch",
            json!({"tasks": tasks}),
        )
        .await;
        let ids: Vec<String> = answer["result"]["tasks"]
            .as_array()
            .unwrap_or_else(|| panic!("{what}: {answer}"))
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect();
        for id in &ids {
            let task = client.wait(id, WAIT).await;
            assert_eq!(task["state"], "succeeded", "{what}: {task}");
        }
        client.assert_serves().await;
        // What could not be sent is dropped and counted.
        let until = Instant::now() + WAIT;
        loop {
            let (_, metrics) = client.get("/metrics").await;
            let dropped = metric(&metrics, "fabric_otel_spans_dropped_total");
            let failures = metric(&metrics, "fabric_otel_export_failures_total");
            let enough = match what {
                "down" => failures >= 1 && dropped >= 1,
                _ => dropped >= 1,
            };
            if enough {
                assert_eq!(metric(&metrics, "fabric_otel_spans_exported_total"), 0);
                break;
            }
            assert!(
                Instant::now() < until,
                "{what}: nothing counted as dropped:\n{metrics}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The final flush is bounded too: the server stops although the collector does not
        // answer.
        server.signal("TERM");
        let status = server.wait_exit(WAIT).expect("the server stops");
        assert!(status.success(), "{what}: {status:?}");
    }
    assert!(
        !slow.exports().is_empty(),
        "the slow collector was sent spans"
    );
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[tokio::test]
async fn otel_nothing_is_exported_unless_the_variables_ask_for_it() {
    let receiver = Receiver::start(Mode::Ok).await;
    for vars in [
        // No endpoint: off, whatever else is set.
        vec![
            ("OTEL_SERVICE_NAME", "fabric".to_string()),
            ("OTEL_TRACES_SAMPLER", "always_on".into()),
        ],
        // Disabled, with an endpoint.
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url.clone()),
            ("OTEL_SDK_DISABLED", "true".into()),
        ],
        // Sampled off.
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url.clone()),
            ("OTEL_TRACES_SAMPLER", "always_off".into()),
            ("OTEL_BSP_SCHEDULE_DELAY", "50".into()),
        ],
    ] {
        let server = start(&["--workers", "2"], &vars);
        let client = server.client();
        let module = client.put_module(fabric_agents::p1::ECHO, "echo").await;
        let tp = traceparent();
        let answer = call_with(
            &client,
            &[("traceparent", &tp)],
            "task.submit",
            json!({"module": module, "input": "x"}),
        )
        .await;
        let id = answer["result"]["id"].as_str().unwrap().to_string();
        assert_eq!(client.wait(&id, WAIT).await["state"], "succeeded");
        let (_, metrics) = client.get("/metrics").await;
        let sampled_off = vars.iter().any(|(k, _)| {
            *k == "OTEL_TRACES_SAMPLER"
                && vars
                    .iter()
                    .any(|(k, _)| *k == "OTEL_EXPORTER_OTLP_ENDPOINT")
        });
        assert_eq!(metrics.contains("fabric_otel_"), sampled_off, "{vars:?}");
        drop(server);
    }
    // Whatever was sent would have arrived by now (the last server exported every 50 ms).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(receiver.exports().is_empty(), "{:?}", receiver.exports());
}

#[test]
fn otel_a_bad_variable_stops_the_server_at_start_naming_it() {
    let dir = Workdir::new();
    let data = dir.file("unused", b"");
    for (var, value) in [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
        ("OTEL_TRACES_SAMPLER", "sometimes"),
    ] {
        let mut vars = vec![(var, value)];
        if var != "OTEL_EXPORTER_OTLP_ENDPOINT" {
            vars.push(("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1"));
        }
        let out = fabric_with(
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                data.parent().unwrap().to_str().unwrap(),
            ],
            &vars,
            b"",
        );
        assert_eq!(out.status.code(), Some(2), "{var}: {}", stderr(&out));
        assert!(stderr(&out).contains(var), "{}", stderr(&out));
    }
}

#[tokio::test]
async fn otel_a_task_submitted_on_one_node_and_run_on_another_stays_in_the_callers_trace() {
    let schema = crate::cluster::Schema::fresh();
    let receiver = Receiver::start(Mode::Ok).await;
    let vars = env(&receiver);
    let node = |name: &str| schema.node_args(name);
    let args_a = node("node-a");
    let args_a: Vec<&str> = args_a.iter().map(String::as_str).collect();
    let mut a = start(&args_a, &vars);
    let client = a.client();
    let module = client.put_module(fabric_agents::p1::ECHO, "echo").await;
    // Due in a few seconds: node A stops before it is, and node B runs it.
    let run_at = time::OffsetDateTime::now_utc() + time::Duration::seconds(3);
    let run_at = run_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let tp = traceparent();
    let answer = call_with(
        &client,
        &[("traceparent", &tp)],
        "task.submit",
        json!({"module": module, "input": "x", "run_at": run_at}),
    )
    .await;
    let id = answer["result"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}"))
        .to_string();
    a.signal("TERM");
    assert!(a.wait_exit(WAIT).expect("node A stops").success());

    let args_b = node("node-b");
    let args_b: Vec<&str> = args_b.iter().map(String::as_str).collect();
    let b = start(&args_b, &vars);
    let task = b.client().wait(&id, WAIT).await;
    assert_eq!(task["state"], "succeeded", "{task}");
    let spans = spans_until(&receiver, |spans| spans.iter().any(|s| s.name == "task")).await;
    let rpc = one(&spans, |s| s.name == "task.submit", "task.submit");
    assert_eq!(
        (rpc.trace_id.as_str(), rpc.parent.as_str()),
        (TRACE, CALLER_SPAN)
    );
    let task_span = one(&spans, |s| s.name == "task", "task");
    assert_eq!(task_span.trace_id, TRACE);
    assert_eq!(
        task_span.parent, rpc.span_id,
        "node B continues node A's trace"
    );
    let attempt = one(&spans, |s| s.name == "attempt", "attempt");
    assert_eq!(attempt.parent, task_span.span_id);
    assert_eq!(attempt.str("fabric.node"), "node-b");
    // The resource says which node reported each span.
    let nodes: Vec<(String, Vec<String>)> = receiver
        .exports()
        .iter()
        .map(|e| {
            let (resource, spans) = decode(e);
            let node = resource["service.instance.id"]
                .as_str()
                .unwrap()
                .to_string();
            (node, spans.into_iter().map(|s| s.name).collect())
        })
        .collect();
    for (node, names) in &nodes {
        for name in names {
            let expected = if name == "task.submit" || name == "module.put" {
                "node-a"
            } else {
                "node-b"
            };
            assert_eq!(node, expected, "{name} reported by {node}: {nodes:?}");
        }
    }
}
