//! The OpenRPC document against real traffic: `rpc.discover` of a running `fabric serve`,
//! then a real call of every method it names (answers, errors of every kind a test can
//! provoke, and the notifications of both subscriptions), each validated with a JSON Schema
//! validator against the document, so that the code and the document cannot drift. Results
//! are checked closed (no member the document does not name), params as sent.

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::server::{Client, Fabric, Socket, next};
use crate::util::auth_file;

/// The document of one server, and which methods a test has called.
struct Contract {
    doc: Value,
    /// `components`, with every object schema closed (`additionalProperties: false` where
    /// the document leaves it open): a member the server sends and the document does not
    /// name fails the check.
    closed: Value,
    called: BTreeSet<String>,
}

/// The errors of the framing of a request, which any method's call may answer.
const FRAMING: [&str; 3] = ["ParseError", "InvalidRequest", "MethodNotFound"];

impl Contract {
    fn new(doc: Value) -> Self {
        let mut schemas = doc["components"]["schemas"].clone();
        for schema in schemas
            .as_object_mut()
            .expect("components.schemas")
            .values_mut()
        {
            close(schema);
        }
        Self {
            closed: json!({ "schemas": schemas }),
            doc,
            called: BTreeSet::new(),
        }
    }

    fn method(&self, name: &str) -> &Value {
        self.doc["methods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not in the document"))
    }

    /// Fails the test unless `value` satisfies `schema` (which may refer to
    /// `#/components/schemas/...`).
    fn check(&self, what: &str, schema: &Value, value: &Value) {
        let root = json!({ "allOf": [schema], "components": self.closed });
        let validator = jsonschema::draft7::new(&root)
            .unwrap_or_else(|e| panic!("{what}: the document's schema {schema} is invalid: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(value)
            .map(|e| format!("{e} (at {})", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{what}: {value} does not match the document: {errors:#?}"
        );
    }

    /// Checks a successful answer to `method(params)` (and the params, as the document's
    /// `x-params` describes them).
    fn answered(&mut self, method: &str, params: &Value, answer: &Value) -> Value {
        let described = self.method(method).clone();
        self.check(&format!("{method} params"), &described["x-params"], params);
        let result = answer
            .get("result")
            .unwrap_or_else(|| panic!("{method}({params}) failed: {answer}"));
        self.check(
            &format!("{method} result"),
            &described["result"]["schema"],
            result,
        );
        assert_eq!(answer["jsonrpc"], "2.0");
        self.called.insert(method.to_owned());
        result.clone()
    }

    /// Checks an error answer to a call of `method` (`None`: a request that named no
    /// method): its code is one the document lists for the method (or for the framing of
    /// any request), and the error object matches that error's schema.
    fn refused(&mut self, method: Option<&str>, answer: &Value, code: i64) -> Value {
        let error = answer
            .get("error")
            .unwrap_or_else(|| panic!("{method:?} should have failed: {answer}"));
        assert_eq!(error["code"], code, "{answer}");
        let errors = &self.doc["components"]["errors"];
        let name = errors
            .as_object()
            .unwrap()
            .iter()
            .find(|(_, e)| e["code"] == code)
            .map(|(name, _)| name.clone())
            .unwrap_or_else(|| panic!("code {code} is not in components.errors"));
        if let Some(method) = method {
            let listed = self.method(method)["errors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["$ref"] == format!("#/components/errors/{name}"));
            assert!(
                listed || FRAMING.contains(&name.as_str()),
                "{method} answered {name} ({code}), which the document does not list for it"
            );
            self.called.insert(method.to_owned());
        }
        let schema = self.doc["x-error-schemas"][&name].clone();
        self.check(&format!("{name} error"), &schema, error);
        error.clone()
    }

    /// Checks a notification: a method of `x-notifications` sent after a call of one of
    /// the methods that start it, its params as described.
    fn notified(&self, message: &Value, subscribed: &[&str]) -> String {
        assert!(
            message.get("id").is_none(),
            "a notification has no id: {message}"
        );
        let name = message["method"].as_str().expect("a notification's method");
        let described = self.doc["x-notifications"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not in x-notifications"));
        assert!(
            described["x-sent-after"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| subscribed.contains(&m.as_str().unwrap())),
            "{name} after {subscribed:?}"
        );
        self.check(
            &format!("{name} params"),
            &described["x-params"],
            &message["params"],
        );
        name.to_owned()
    }

    /// A call that must succeed, checked; its result.
    async fn call(&mut self, client: &Client, method: &str, params: Value) -> Value {
        let answer = client.call_raw(method, params.clone()).await;
        self.answered(method, &params, &answer)
    }

    /// `task.wait` (checked) until the task is terminal.
    async fn finish(&mut self, client: &Client, id: &str) -> Value {
        loop {
            let task = self
                .call(client, "task.wait", json!({"id": id, "timeout_ms": 30_000}))
                .await;
            if ["succeeded", "failed", "cancelled", "expired"]
                .contains(&task["state"].as_str().unwrap())
            {
                return task;
            }
        }
    }

    /// A call that must fail with `code`, checked; its error object.
    async fn fail(&mut self, client: &Client, method: &str, params: Value, code: i64) -> Value {
        let answer = client.call_raw(method, params).await;
        self.refused(Some(method), &answer, code)
    }
}

/// Sets `additionalProperties: false` on every object schema with `properties` that does
/// not say otherwise, inside `schema` too.
fn close(schema: &mut Value) {
    match schema {
        Value::Object(object) => {
            if object.contains_key("properties") && !object.contains_key("additionalProperties") {
                object.insert("additionalProperties".into(), false.into());
            }
            object.values_mut().for_each(close);
        }
        Value::Array(items) => items.iter_mut().for_each(close),
        _ => {}
    }
}

async fn socket(fabric: &Fabric, token: &str) -> Socket {
    let url = fabric.url.replacen("http://", "ws://", 1) + "/rpc";
    let mut request = url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket")
        .0
}

/// Sends a call on the socket and answers the response (checked), keeping the
/// notifications that arrive before it.
async fn ws_call(
    contract: &mut Contract,
    ws: &mut Socket,
    method: &str,
    params: Value,
    early: &mut Vec<Value>,
) -> Value {
    let call = json!({"jsonrpc": "2.0", "id": method, "method": method, "params": params});
    ws.send(Message::Text(call.to_string().into()))
        .await
        .unwrap();
    loop {
        let message = next(ws).await;
        if message["id"] == method {
            return contract.answered(method, &params, &message);
        }
        early.push(message);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_method_answers_as_the_openrpc_document_says() {
    let dir = tempfile::tempdir().unwrap();
    let auth = auth_file(dir.path());
    let fabric = Fabric::start(&[
        "--workers",
        "2",
        "--auth",
        auth.to_str().unwrap(),
        "--tenant-max-tasks",
        "40",
    ]);
    let acme = fabric.with_token("acme-token");
    let globex = fabric.with_token("globex-token");
    let admin = fabric.with_token("admin-token");
    let doc = acme.call("rpc.discover", json!({})).await;
    let mut contract = Contract::new(doc.clone());
    contract.call(&acme, "rpc.discover", json!({})).await;

    // Every schema of the document is itself a valid draft 7 schema.
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        assert!(
            jsonschema::draft7::meta::is_valid(schema),
            "components.schemas.{name} is no draft 7 schema"
        );
    }

    // Subscriptions first, so that every later task sends its events.
    let mut ws = socket(&fabric, "acme-token").await;
    let mut notes = Vec::new();
    let subscribed = ws_call(
        &mut contract,
        &mut ws,
        "task.subscribe",
        json!({}),
        &mut notes,
    )
    .await;
    assert_eq!(subscribed, json!({"subscribed": true, "id": null}));
    ws_call(
        &mut contract,
        &mut ws,
        "kpi.subscribe",
        json!({}),
        &mut notes,
    )
    .await;

    // Modules: a core module, a component, WAT fixtures that fail in several ways.
    let wasm = |bytes: &[u8]| BASE64.encode(bytes);
    let put = contract
        .call(
            &acme,
            "module.put",
            json!({"wasm_base64": wasm(fabric_agents::p1::ECHO), "name": "echo"}),
        )
        .await;
    assert_eq!(put["kind"], "module");
    let reporter = contract
        .call(
            &acme,
            "module.put",
            json!({"wasm_base64": wasm(fabric_agents::p2::REPORTER), "name": "reporter"}),
        )
        .await;
    assert_eq!(reporter["kind"], "component");
    for fixture in ["exit_42", "trap_unreachable", "stdout_flood"] {
        let bytes = fabric_agents::fixture(fixture);
        contract
            .call(
                &acme,
                "module.put",
                json!({"wasm_base64": wasm(&bytes), "name": fixture}),
            )
            .await;
    }
    let doomed = fabric_agents::fixture("hello");
    let doomed = contract
        .call(&acme, "module.put", json!({"wasm_base64": wasm(&doomed)}))
        .await;
    contract.call(&acme, "module.list", json!({})).await;

    // Tasks that succeed (text and bytes), report, fail every way, wait, get cancelled.
    let mut ids = Vec::new();
    let text = contract
        .call(
            &acme,
            "task.submit",
            json!({"module": "echo", "input": "hello", "priority": "high",
                   "labels": {"suite": "openrpc"}, "idempotency_key": "openrpc-1",
                   "limits": {"fuel": 100_000_000, "timeout_ms": 10_000},
                   "retry": {"max_attempts": 2, "backoff_ms": 10}, "args": ["--flag"]}),
        )
        .await;
    ids.push(text["id"].as_str().unwrap().to_owned());
    let again = contract
        .call(
            &acme,
            "task.submit",
            json!({"module": "echo", "input": "hello", "idempotency_key": "openrpc-1"}),
        )
        .await;
    assert_eq!(again["deduplicated"], true);
    let batch = contract
        .call(
            &acme,
            "task.submit_batch",
            json!({"tasks": [
                {"module": "echo", "input_base64": BASE64.encode([0xff, 0x00, 0xfe])},
                {"module": "reporter", "input": "alpha beta\ngamma 42\ndelta\n"},
                {"module": "exit_42", "retry": {"max_attempts": 1}},
                {"module": "trap_unreachable", "retry": {"max_attempts": 1}},
                {"module": "stdout_flood", "retry": {"max_attempts": 1},
                 "limits": {"output_bytes": 1024, "timeout_ms": 2_000}},
            ]}),
        )
        .await;
    for task in batch["tasks"].as_array().unwrap() {
        ids.push(task["id"].as_str().unwrap().to_owned());
    }
    let mut states = BTreeSet::new();
    for id in &ids {
        let task = contract.finish(&acme, id).await;
        states.insert(task["state"].as_str().unwrap().to_owned());
        contract.call(&acme, "task.get", json!({"id": id})).await;
    }
    assert_eq!(
        states,
        BTreeSet::from(["succeeded".into(), "failed".into()])
    );
    let bytes = contract
        .call(&acme, "task.get", json!({"id": ids[1]}))
        .await;
    assert_eq!(bytes["output_base64"], "/wD+", "{bytes}");
    let reported = contract
        .call(&acme, "task.get", json!({"id": ids[2]}))
        .await;
    assert!(reported["progress"].is_object(), "{reported}");
    assert!(reported["attempts"][0]["kpis"].is_object(), "{reported}");

    let later = "2099-01-01T00:00:00Z";
    let waiting = contract
        .call(
            &acme,
            "task.submit",
            json!({"module": doomed["module"], "run_at": later, "deadline": "2099-01-02T00:00:00Z"}),
        )
        .await;
    let waiting = waiting["id"].as_str().unwrap().to_owned();
    let still = contract
        .call(&acme, "task.wait", json!({"id": waiting, "timeout_ms": 10}))
        .await;
    assert_eq!(still["state"], "scheduled");
    // In use by an unfinished task: the module cannot be deleted yet.
    let error = contract
        .fail(
            &acme,
            "module.delete",
            json!({"module": doomed["module"]}),
            -32008,
        )
        .await;
    assert_eq!(error["data"]["unfinished_tasks"], 1);
    let cancelled = contract
        .call(&acme, "task.cancel", json!({"id": waiting}))
        .await;
    assert_eq!(cancelled["state"], "cancelled");
    let retried = contract
        .call(&acme, "task.retry", json!({"id": waiting}))
        .await;
    assert_eq!(retried["retry_of"], waiting.as_str());
    let copy = contract
        .finish(&acme, retried["id"].as_str().unwrap())
        .await;
    assert_eq!(copy["state"], "succeeded", "{copy}");
    contract
        .call(&acme, "module.delete", json!({"module": doomed["module"]}))
        .await;
    contract
        .fail(&acme, "task.retry", json!({"id": ids[0]}), -32008)
        .await;

    // Pages, filters, reports, counts.
    let page = contract.call(&acme, "task.list", json!({"limit": 2})).await;
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    contract
        .call(&acme, "task.list", json!({"limit": 2, "cursor": cursor}))
        .await;
    contract
        .call(&acme, "task.list", json!({"state": "failed"}))
        .await;
    for group_by in [None, Some("module"), Some("tenant"), Some("hour")] {
        let params = match group_by {
            Some(group) => json!({"group_by": group, "since": "2020-01-01T00:00:00Z"}),
            None => json!({}),
        };
        let rows = contract.call(&acme, "kpi.query", params).await;
        assert!(!rows["rows"].as_array().unwrap().is_empty(), "{rows}");
    }
    contract
        .call(
            &acme,
            "kpi.query",
            json!({"module": "reporter", "name": "words"}),
        )
        .await;
    for group_by in ["tenant", "module", "day"] {
        let rows = contract
            .call(&admin, "usage.report", json!({"group_by": group_by}))
            .await;
        assert!(!rows["rows"].as_array().unwrap().is_empty(), "{rows}");
    }
    contract.call(&acme, "fabric.stats", json!({})).await;
    contract.call(&admin, "fabric.stats", json!({})).await;
    contract
        .call(
            &acme,
            "schedule.put",
            json!({"name": "nightly", "cron": "0 3 * * *", "timezone": "Europe/Paris",
                   "task": {"module": "echo", "input": "x", "concurrency": {"key": "k", "limit": 1}}}),
        )
        .await;
    contract
        .call(&acme, "schedule.get", json!({"name": "nightly"}))
        .await;
    contract.call(&acme, "schedule.list", json!({})).await;
    contract
        .call(&acme, "schedule.delete", json!({"name": "nightly"}))
        .await;
    contract
        .fail(&acme, "schedule.get", json!({"name": "nightly"}), -32002)
        .await;

    // The errors a client can provoke, each with the data its schema says.
    contract
        .fail(&acme, "task.get", json!({"id": "no-such-task"}), -32002)
        .await;
    let error = contract
        .fail(
            &acme,
            "task.submit",
            json!({"module": "no-such-module"}),
            -32002,
        )
        .await;
    assert_eq!(error["data"]["field"], "module");
    let error = contract
        .fail(
            &acme,
            "task.submit",
            json!({"module": "echo", "inptu": "x"}),
            -32602,
        )
        .await;
    assert_eq!(error["data"]["field"], "inptu");
    contract
        .fail(
            &acme,
            "task.submit_batch",
            json!({"tasks": [{"module": "echo", "limits": {"memory_bytes": 1}}]}),
            -32602,
        )
        .await;
    contract
        .fail(&acme, "kpi.query", json!({"name": "Not A KPI"}), -32602)
        .await;
    contract
        .fail(
            &acme,
            "kpi.query",
            json!({"module": "no-such-module"}),
            -32002,
        )
        .await;
    contract
        .fail(
            &acme,
            "module.put",
            json!({"wasm_base64": BASE64.encode(b"not wasm")}),
            -32005,
        )
        .await;
    contract
        .fail(&acme, "module.delete", json!({"module": "no-such"}), -32002)
        .await;
    contract
        .fail(&acme, "task.subscribe", json!({}), -32601)
        .await;
    contract
        .fail(&acme, "kpi.subscribe", json!({}), -32601)
        .await;
    contract
        .fail(&acme, "fabric.stats", json!({"verbose": true}), -32602)
        .await;
    let too_many: Vec<Value> = (0..41)
        .map(|i| json!({"module": "echo", "run_at": later, "input": i.to_string()}))
        .collect();
    contract
        .call(
            &globex,
            "module.put",
            json!({"wasm_base64": wasm(fabric_agents::p1::ECHO), "name": "echo"}),
        )
        .await;
    let error = contract
        .fail(
            &globex,
            "task.submit_batch",
            json!({"tasks": too_many}),
            -32003,
        )
        .await;
    assert_eq!(error["data"]["limit"], "tenant_max_tasks");
    let answer = fabric.client().call_raw("fabric.stats", json!({})).await;
    contract.refused(Some("fabric.stats"), &answer, -32001);
    let answer = acme.call_raw("no.such.method", json!({})).await;
    let error = contract.refused(None, &answer, -32601);
    assert_eq!(error["data"]["method"], "no.such.method");
    let (_, answer) = acme.post("{not json").await;
    contract.refused(None, &answer, -32700);
    let (_, answer) = acme
        .post(json!({"jsonrpc": "1.0", "id": 1, "method": "fabric.stats"}).to_string())
        .await;
    contract.refused(None, &answer, -32600);

    // The notifications of both subscriptions: every one checked, each kind seen.
    let mut kinds = BTreeSet::new();
    let mut attempts = 0;
    for message in notes {
        kinds.insert(contract.notified(&message, &["task.subscribe", "kpi.subscribe"]));
    }
    while !(kinds.contains("kpi.report") && attempts >= 1 && kinds.contains("task.event")) {
        let message = next(&mut ws).await;
        let kind = contract.notified(&message, &["task.subscribe", "kpi.subscribe"]);
        if kind == "task.event" && message["params"]["attempt"].is_object() {
            attempts += 1;
        }
        kinds.insert(kind);
    }
    // A subscription to one task.
    let mut one = socket(&fabric, "acme-token").await;
    let mut early = Vec::new();
    let followed = contract
        .call(
            &acme,
            "task.submit",
            json!({"module": "echo", "run_at": later}),
        )
        .await;
    let id = followed["id"].as_str().unwrap().to_owned();
    let answer = ws_call(
        &mut contract,
        &mut one,
        "task.subscribe",
        json!({"id": id}),
        &mut early,
    )
    .await;
    assert_eq!(answer["id"], id.as_str());
    contract.call(&acme, "task.cancel", json!({"id": id})).await;
    loop {
        let message = next(&mut one).await;
        contract.notified(&message, &["task.subscribe"]);
        if message["params"]["state"] == "cancelled" {
            break;
        }
    }

    // Every method the document names was called, and nothing else answers.
    let documented: BTreeSet<String> = doc["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(contract.called, documented);
}
