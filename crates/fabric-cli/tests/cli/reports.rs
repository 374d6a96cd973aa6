//! Agents that report, through the real server: the `reporter` agent (built on the
//! `fabric-agent` SDK, as a core module and as a component) records KPIs and progress,
//! and `task.get`, `task.subscribe`, `kpi.query`, `kpi.subscribe`, `usage.report` and
//! `/metrics` show them; arguments reach the guest; a telemetry flood is refused cheaply
//! and the server keeps serving; tenants see only their own reports.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};

use crate::server::{Client, Fabric, Socket, next};
use crate::util::{auth_file, code};

const WAIT: Duration = Duration::from_secs(60);
/// Three lines of 2, 2 and 1 words, 4 of them letters only.
const TEXT: &str = "alpha beta\ngamma 42\ndelta\n";

async fn socket(fabric: &Fabric) -> Socket {
    let url = fabric.url.replacen("http://", "ws://", 1) + "/rpc";
    tokio_tungstenite::connect_async(&url)
        .await
        .expect("websocket")
        .0
}

async fn send(socket: &mut Socket, id: u64, method: &str, params: Value) {
    let call = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    socket
        .send(tokio_tungstenite::tungstenite::Message::Text(
            call.to_string().into(),
        ))
        .await
        .unwrap();
}

/// The rows of `kpi.query` with `params`.
async fn kpis(client: &Client, params: Value) -> Vec<Value> {
    client.call("kpi.query", params).await["rows"]
        .as_array()
        .unwrap()
        .clone()
}

fn row<'a>(rows: &'a [Value], key: &str, value: &str, name: &str) -> &'a Value {
    rows.iter()
        .find(|r| r[key] == value && r["name"] == name)
        .unwrap_or_else(|| panic!("no row {key}={value} name={name} in {rows:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reporting_agent_shows_its_kpis_progress_and_usage_everywhere() {
    let fabric = Fabric::start(&["--workers", "4"]);
    let client = fabric.client();
    let core = client
        .put_module(fabric_agents::p1::REPORTER, "reporter")
        .await;
    client
        .put_module(fabric_agents::p2::REPORTER, "reporter-c")
        .await;

    let mut ws = socket(&fabric).await;
    send(&mut ws, 1, "kpi.subscribe", json!({})).await;
    assert_eq!(next(&mut ws).await["result"]["subscribed"], true);
    send(&mut ws, 2, "task.subscribe", json!({})).await;
    assert_eq!(next(&mut ws).await["result"]["subscribed"], true);

    let mut ids = Vec::new();
    for module in ["reporter", "reporter-c"] {
        ids.push(
            client
                .submit(json!({"module": module, "input": TEXT}))
                .await,
        );
    }
    for id in &ids {
        let task = client.wait(id, WAIT).await;
        assert_eq!(task["state"], "succeeded", "{task}");
        let words = &task["attempts"][0]["kpis"]["words"];
        assert_eq!(
            words,
            &json!({"count": 3, "sum": 5.0, "min": 1.0, "max": 2.0, "last": 1.0}),
            "{task}"
        );
        assert_eq!(task["attempts"][0]["kpis"]["confidence"]["last"], 0.8);
        assert_eq!(task["progress"]["done"], 1.0, "{task}");
        assert_eq!(task["progress"]["message"], "line 3 of 3");
    }

    // One kpi.report per attempt, and each task's progress as a task.event.
    let (mut reports, mut progress) = (Vec::new(), Vec::new());
    while reports.len() < 2 || progress.len() < 2 {
        let message = next(&mut ws).await;
        let params = message["params"].clone();
        match message["method"].as_str() {
            Some("kpi.report") => reports.push(params),
            Some("task.event") if params["progress"].is_object() => {
                assert_eq!(params["state"], "running", "{params}");
                progress.push(params)
            }
            _ => {}
        }
    }
    for report in &reports {
        assert!(ids.contains(&report["task"].as_str().unwrap().to_string()));
        assert_eq!(report["attempt"], 1);
        assert_eq!(report["outcome"], "ok");
        assert_eq!(report["tenant"], "default");
        assert_eq!(report["kpis"]["words"]["sum"], 5.0);
        assert!(report["usage"]["fuel_consumed"].as_u64().unwrap() > 0);
    }
    let names: Vec<&str> = reports
        .iter()
        .map(|r| r["module_name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"reporter") && names.contains(&"reporter-c"));
    assert!(
        progress
            .iter()
            .any(|p| p["progress"]["message"] == "line 3 of 3")
    );

    // kpi.query: by name (the default), by module, one module by hour.
    let by_name = kpis(&client, json!({"name": "words"})).await;
    assert_eq!(by_name.len(), 1, "{by_name:?}");
    assert_eq!(by_name[0]["count"], 6);
    assert_eq!(by_name[0]["sum"], 10.0);
    assert_eq!(by_name[0]["min"], 1.0);
    assert_eq!(by_name[0]["max"], 2.0);
    assert!((by_name[0]["mean"].as_f64().unwrap() - 10.0 / 6.0).abs() < 1e-9);
    let by_module = kpis(&client, json!({"group_by": "module"})).await;
    for name in ["reporter", "reporter-c"] {
        assert_eq!(row(&by_module, "module_name", name, "words")["count"], 3);
        assert_eq!(row(&by_module, "module_name", name, "lines")["sum"], 3.0);
    }
    let hourly = kpis(&client, json!({"module": core, "group_by": "hour"})).await;
    assert_eq!(hourly.len(), 3, "lines, words, confidence: {hourly:?}");
    assert!(hourly.iter().all(|r| r["hour"].is_string()), "{hourly:?}");
    let none = kpis(&client, json!({"until": "2000-01-01T00:00:00Z"})).await;
    assert!(none.is_empty(), "{none:?}");

    // Bad queries name what is wrong.
    let bad_name = client.error("kpi.query", json!({"name": "Words"})).await;
    assert_eq!(
        (code(&bad_name), bad_name["data"]["field"].clone()),
        (-32602, json!("name"))
    );
    let backwards = client
        .error(
            "kpi.query",
            json!({"since": "2030-01-01T00:00:00Z", "until": "2029-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(backwards["data"]["field"], "until", "{backwards}");
    let unknown = client.error("kpi.query", json!({"module": "nope"})).await;
    assert_eq!(code(&unknown), -32002, "{unknown}");
    let group = client.error("kpi.query", json!({"group_by": "day"})).await;
    assert_eq!(code(&group), -32602, "{group}");

    // usage.report: every attempt once, by tenant, module and day.
    let usage = client.call("usage.report", json!({})).await["rows"].clone();
    assert_eq!(usage.as_array().unwrap().len(), 1, "{usage}");
    assert_eq!(usage[0]["tenant"], "default");
    assert_eq!(usage[0]["attempts"], 2);
    assert!(usage[0]["fuel_consumed"].as_u64().unwrap() > 0);
    assert!(usage[0]["memory_byte_seconds"].as_u64().is_some());
    let by_module = client
        .call("usage.report", json!({"group_by": "module"}))
        .await["rows"]
        .clone();
    let modules: Vec<&str> = by_module
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["module_name"].as_str().unwrap())
        .collect();
    assert_eq!(modules.len(), 2, "{by_module}");
    let by_day = client
        .call("usage.report", json!({"group_by": "day"}))
        .await["rows"]
        .clone();
    let today = time::OffsetDateTime::now_utc().date().to_string();
    assert_eq!(by_day[0]["day"], today, "{by_day}");
    assert_eq!(by_day[0]["attempts"], 2);

    // /metrics: sums and counts by module name and KPI.
    let (_, metrics) = client.get("/metrics").await;
    assert!(
        metrics.contains("fabric_agent_kpi_count{module=\"reporter\",kpi=\"words\"} 3\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("fabric_agent_kpi_sum{module=\"reporter-c\",kpi=\"words\"} 5\n"),
        "{metrics}"
    );

    // The CLI prints the same usage, as a table and as JSON.
    let table = fabric.fabric(&["usage", "--by", "module"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.status.success() && text.contains("reporter-c"),
        "{text}"
    );
    let json_out = fabric.fabric(&["usage", "--json"]);
    let parsed: Value = serde_json::from_slice(&json_out.stdout).unwrap();
    assert_eq!(parsed["rows"][0]["attempts"], 2, "{parsed}");
    let kpi_table = fabric.fabric(&["kpi", "--by", "module", "--name", "words"]);
    let text = String::from_utf8_lossy(&kpi_table.stdout);
    assert!(
        kpi_table.status.success() && text.contains("reporter"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn arguments_reach_the_guest_and_bad_ones_are_refused_naming_args() {
    let fabric = Fabric::start(&["--workers", "2"]);
    let client = fabric.client();
    for (bytes, name) in [
        (fabric_agents::p1::REPORTER, "reporter"),
        (fabric_agents::p2::REPORTER, "reporter-c"),
    ] {
        client.put_module(bytes, name).await;
        let id = client
            .submit(json!({"module": name, "input": "x\n", "args": ["--print-args", "two words"]}))
            .await;
        let task = client.wait(&id, WAIT).await;
        assert_eq!(task["args"], json!(["--print-args", "two words"]));
        let output = task["output"].as_str().unwrap();
        assert!(
            output.starts_with("args=[\"--print-args\", \"two words\"]\n"),
            "{name}: {output}"
        );
    }
    for args in [
        json!(vec!["a"; fabric_types::MAX_ARGS + 1]),
        json!(["nul\u{0}byte"]),
        json!(["x".repeat(fabric_types::MAX_ARGS_BYTES + 1)]),
    ] {
        let error = client
            .error("task.submit", json!({"module": "reporter", "args": args}))
            .await;
        assert_eq!(code(&error), -32602, "{error}");
        assert_eq!(error["data"]["field"], "args", "{error}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn attack_telemetry_flood_is_refused_past_the_limit_and_the_server_keeps_serving() {
    let fabric = Fabric::start(&["--workers", "4", "--max-telemetry-calls", "500"]);
    let client = fabric.client();
    for (bytes, name) in [
        (fabric_agents::p1::REPORTER, "reporter"),
        (fabric_agents::p2::REPORTER, "reporter-c"),
    ] {
        client.put_module(bytes, name).await;
        let ids: Vec<String> = futures_util::future::join_all(
            (0..4).map(|_| client.submit(json!({"module": name, "args": ["--flood", "1000000"]}))),
        )
        .await;
        for id in ids {
            let task = client.wait(&id, WAIT).await;
            assert_eq!(task["state"], "succeeded", "{task}");
            let output = task["output"].as_str().unwrap();
            assert!(
                output.starts_with("flood calls=1000000 taken=500 refused=999500\n"),
                "{name}: {output}"
            );
            assert_eq!(task["attempts"][0]["kpis"]["flood"]["count"], 500);
        }
    }
    let (_, metrics) = client.get("/metrics").await;
    assert!(
        metrics.contains("fabric_agent_kpi_count{module=\"reporter\",kpi=\"flood\"} 2000\n"),
        "{metrics}"
    );
    client.assert_serves().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_see_only_their_own_reports_and_the_admin_sees_all() {
    let dir = tempfile::tempdir().unwrap();
    let auth = auth_file(dir.path());
    let fabric = Fabric::start(&["--auth", auth.to_str().unwrap()]);
    let (acme, globex, admin) = (
        fabric.with_token("acme-token"),
        fabric.with_token("globex-token"),
        fabric.with_token("admin-token"),
    );
    let module = acme
        .put_module(fabric_agents::p1::REPORTER, "reporter")
        .await;
    let id = acme
        .submit(json!({"module": "reporter", "input": TEXT}))
        .await;
    assert_eq!(acme.wait(&id, WAIT).await["state"], "succeeded");

    assert_eq!(kpis(&acme, json!({})).await.len(), 3);
    assert!(kpis(&globex, json!({})).await.is_empty());
    let usage = globex.call("usage.report", json!({})).await;
    assert_eq!(usage["rows"], json!([]), "{usage}");
    // Another tenant's module, by name or by id, is not found.
    for reference in ["reporter", module.as_str()] {
        let error = globex
            .error("kpi.query", json!({"module": reference}))
            .await;
        assert_eq!(code(&error), -32002, "{error}");
    }
    let by_tenant = kpis(&admin, json!({"group_by": "tenant"})).await;
    assert_eq!(row(&by_tenant, "tenant", "acme", "words")["count"], 3);
    let usage = admin
        .call("usage.report", json!({"group_by": "tenant"}))
        .await;
    assert_eq!(usage["rows"][0]["tenant"], "acme", "{usage}");
    assert_eq!(usage["rows"][0]["attempts"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_cluster_every_node_reports_the_kpis_and_usage_of_all_of_them() {
    let schema = crate::cluster::Schema::fresh();
    let a = crate::cluster::node(&schema, "a");
    let b = crate::cluster::node(&schema, "b");
    let (on_a, on_b) = (a.client(), b.client());
    on_a.put_module(fabric_agents::p1::REPORTER, "reporter")
        .await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(
            on_a.submit(json!({"module": "reporter", "input": TEXT}))
                .await,
        );
    }
    for id in &ids {
        let task = on_b.wait(id, WAIT).await;
        assert_eq!(task["state"], "succeeded", "{task}");
        assert_eq!(task["progress"]["message"], "line 3 of 3", "{task}");
    }
    for client in [&on_a, &on_b] {
        let words = kpis(client, json!({"name": "words", "group_by": "module"})).await;
        assert_eq!(words.len(), 1, "{words:?}");
        assert_eq!(words[0]["module_name"], "reporter");
        assert_eq!(words[0]["count"], 30);
        assert_eq!(words[0]["sum"], 50.0);
        let usage = client.call("usage.report", json!({})).await;
        assert_eq!(usage["rows"][0]["attempts"], 10, "{usage}");
    }
}
