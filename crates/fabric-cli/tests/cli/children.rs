//! Child tasks through the server: the planner agent fans its lines out to wordcount
//! children and joins them, on SQLite and on a two-node PostgreSQL cluster; the children
//! of an attempt that fails, is refused or dies with its node never exist, and a retried
//! attempt does not duplicate them; what a child may not hold (a key, authority its parent
//! lacks, room past the tenant's quota) is refused with the reason the guest sees.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster::{Schema, node};
use crate::server::{Client, Fabric};

const WAIT: Duration = Duration::from_secs(60);

/// Three lines (and a blank one, which the planner skips): 2 + 3 + 1 words, 5 + 9 + 2
/// bytes.
const TEXT: &str = "to be\nor not to\n\nbe\n";

/// The totals the join of [`TEXT`]'s children prints, from what wordcount reports for
/// each line.
fn text_totals() -> Value {
    json!({"texts": 3, "words": 6, "lines": 3, "bytes": 16})
}

async fn put_planner(client: &Client, planner: &[u8]) {
    client
        .put_module(fabric_agents::p1::WORDCOUNT, "wordcount")
        .await;
    client.put_module(planner, "planner").await;
}

/// The ids the planner printed: its children in order, and the fan-in.
fn plan_of(planner: &Value) -> (Vec<String>, String) {
    let plan: Value = serde_json::from_str(planner["output"].as_str().unwrap()).unwrap();
    let children = plan["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    (children, plan["join"].as_str().unwrap().to_owned())
}

/// `task.list {parent}`: the ids of the task's children, in order of creation.
async fn children_of(client: &Client, parent: &str) -> Vec<String> {
    let page = client
        .call("task.list", json!({"parent": parent, "limit": 1000}))
        .await;
    let mut ids: Vec<String> = page["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|task| task["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// Runs the planner over [`TEXT`] and checks the fan-out and the join: every child is the
/// planner's, inherits its priority, and the join totals the children.
async fn fan_out_and_join(submit_on: &Client, watch_on: &Client) {
    let planner = submit_on
        .submit(json!({"module": "planner", "input": TEXT, "priority": "high"}))
        .await;
    let done = watch_on.wait(&planner, WAIT).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let (children, join) = plan_of(&done);
    assert_eq!(children.len(), 3, "{done}");
    let mut all = children.clone();
    all.push(join.clone());
    all.sort();
    assert_eq!(children_of(watch_on, &planner).await, all);

    let joined = watch_on.wait(&join, WAIT).await;
    assert_eq!(joined["state"], "succeeded", "{joined}");
    let totals: Value = serde_json::from_str(joined["output"].as_str().unwrap()).unwrap();
    assert_eq!(totals, text_totals(), "{joined}");
    assert_eq!(joined["after"], json!(children));
    for id in &all {
        let task = watch_on.wait(id, WAIT).await;
        assert_eq!(task["state"], "succeeded", "{task}");
        assert_eq!(task["parent"], planner.as_str(), "{task}");
        assert_eq!(task["priority"], "high", "inherited: {task}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_planner_fans_out_and_joins_through_the_server() {
    let fabric = Fabric::start(&["--workers", "4"]);
    let client = fabric.client();
    put_planner(&client, fabric_agents::p1::PLANNER).await;
    fan_out_and_join(&client, &client).await;

    // The component planner does the same through `fabric:agent/tasks`.
    put_planner(&client, fabric_agents::p2::PLANNER).await;
    fan_out_and_join(&client, &client).await;

    let stats = client.call("fabric.stats", json!({})).await;
    assert_eq!(stats["succeeded"], 2 * 5, "{stats}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_planner_fans_out_and_joins_on_a_two_node_cluster() {
    let schema = Schema::fresh();
    let a = node(&schema, "children-a");
    let b = node(&schema, "children-b");
    let (on_a, on_b) = (a.client(), b.client());
    put_planner(&on_a, fabric_agents::p1::PLANNER).await;
    fan_out_and_join(&on_a, &on_b).await;

    // A wider plan, so that both nodes run children: 40 lines, each its own child.
    let text: String = (0..40).map(|i| format!("line {i}\n")).collect();
    let planner = on_b
        .submit(json!({"module": "planner", "input": text}))
        .await;
    let done = on_a.wait(&planner, WAIT).await;
    let (children, join) = plan_of(&done);
    assert_eq!(children.len(), 40);
    let joined = on_a.wait(&join, WAIT).await;
    let totals: Value = serde_json::from_str(joined["output"].as_str().unwrap()).unwrap();
    assert_eq!(totals["texts"], 40, "{joined}");
    assert_eq!(totals["words"], 80, "{joined}");
    assert_eq!(children_of(&on_b, &planner).await.len(), 41);
    drop(schema);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_children_of_a_failed_or_refused_attempt_never_exist() {
    let fabric = Fabric::start(&["--workers", "2"]);
    let client = fabric.client();
    put_planner(&client, fabric_agents::p1::PLANNER).await;

    // It submits, then fails: twice, as its retry policy allows. No attempt's children.
    let failing = client
        .submit(json!({
            "module": "planner",
            "input": TEXT,
            "args": ["--fail-after-submit"],
            "retry": {"max_attempts": 2, "backoff_ms": 10},
        }))
        .await;
    let failed = client.wait(&failing, WAIT).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(failed["attempts"].as_array().unwrap().len(), 2, "{failed}");
    let (children, join) = plan_of(&failed);
    assert_eq!(children.len(), 3);
    assert!(children_of(&client, &failing).await.is_empty());
    for id in children.iter().chain([&join]) {
        let error = client.error("task.get", json!({"id": id})).await;
        assert_eq!(error["code"], -32002, "{error}");
    }

    // Its children name a module the tenant does not store: the attempt ends `invalid`
    // with the reason, the task fails without a retry, and no child exists.
    let refused = client
        .submit(json!({
            "module": "planner",
            "input": TEXT,
            "args": ["--child", "nosuch"],
            "retry": {"max_attempts": 3},
        }))
        .await;
    let refused_task = client.wait(&refused, WAIT).await;
    assert_eq!(refused_task["state"], "failed", "{refused_task}");
    let attempts = refused_task["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{refused_task}");
    assert_eq!(attempts[0]["outcome"], "invalid");
    assert_eq!(
        attempts[0]["error"],
        "child tasks refused: children[0].module: the tenant stores no module \"nosuch\""
    );
    assert!(children_of(&client, &refused).await.is_empty());
    let stats = client.call("fabric.stats", json!({})).await;
    assert_eq!(stats["succeeded"], 0, "{stats}");
    client.assert_serves().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_planner_killed_with_its_node_runs_again_without_duplicating_its_children() {
    let mut fabric = Fabric::start(&["--workers", "2", "--lease", "1s"]);
    let client = fabric.client();
    put_planner(&client, fabric_agents::p1::PLANNER).await;
    let planner = client
        .submit(json!({
            "module": "planner",
            "input": TEXT,
            "args": ["--sleep-after-submit", "2000"],
        }))
        .await;
    // Killed while its first attempt sleeps after submitting.
    let until = Instant::now() + WAIT;
    while client.call("task.get", json!({"id": planner})).await["state"] != "running" {
        assert!(Instant::now() < until, "never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    fabric.kill_and_restart();
    let client = fabric.client();

    let done = client.wait(&planner, WAIT).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let outcomes: Vec<&str> = done["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["lost", "ok"], "{done}");
    let (children, join) = plan_of(&done);
    let mut all = children.clone();
    all.push(join.clone());
    all.sort();
    assert_eq!(children_of(&client, &planner).await, all);
    let joined = client.wait(&join, WAIT).await;
    let totals: Value = serde_json::from_str(joined["output"].as_str().unwrap()).unwrap();
    assert_eq!(totals, text_totals());
    let tasks = client.call("task.list", json!({"limit": 1000})).await;
    assert_eq!(
        tasks["tasks"].as_array().unwrap().len(),
        1 + 4,
        "the planner and its four children, nothing more: {tasks}"
    );
}

/// What `planner --raw` answers for each spec line.
async fn raw_answers(client: &Client, parent: Value, specs: &[Value]) -> Vec<String> {
    let input: String = specs.iter().map(|spec| format!("{spec}\n")).collect();
    let mut task = parent;
    task["module"] = json!("planner");
    task["input"] = json!(input);
    task["args"] = json!(["--raw"]);
    let id = client.submit(task).await;
    let done = client.wait(&id, WAIT).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    done["output"]
        .as_str()
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_child_inherits_its_parents_deadline_unless_it_sets_one() {
    let fabric = Fabric::start(&["--workers", "2"]);
    let client = fabric.client();
    put_planner(&client, fabric_agents::p2::PLANNER).await;
    client.put_module(fabric_agents::p1::ECHO, "echo").await;
    let at = crate::workflows::in_seconds;
    // Both children start in 4 s; the parent's deadline passes in 2 s.
    let answers = raw_answers(
        &client,
        json!({"deadline": at(2)}),
        &[
            json!({"module": "echo", "run_at": at(4)}),
            json!({"module": "echo", "run_at": at(4), "deadline": at(600)}),
        ],
    )
    .await;
    let ids: Vec<&str> = answers
        .iter()
        .map(|answer| answer.strip_prefix("ok ").expect("taken"))
        .collect();
    let inherited = client.wait(ids[0], WAIT).await;
    assert_eq!(inherited["state"], "expired", "{inherited}");
    let own = client.wait(ids[1], WAIT).await;
    assert_eq!(own["state"], "succeeded", "{own}");
}

#[tokio::test(flavor = "multi_thread")]
async fn attack_children_cannot_escalate_past_their_parent() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let volume = format!("data={}", data.display());
    let fabric = Fabric::start(&["--workers", "2", "--volume", &volume]);
    let client = fabric.client();
    // The component: it sees the reason of a refusal, not only its code.
    put_planner(&client, fabric_agents::p2::PLANNER).await;
    client.put_module(fabric_agents::p1::ECHO, "echo").await;

    let answers = raw_answers(
        &client,
        json!({}),
        &[
            // The parent holds no volume: a child may be granted none.
            json!({"module": "echo", "dirs": {"/data": "data"}}),
            // Nor an egress policy.
            json!({"module": "echo", "egress": ["anything"]}),
            // A key would let a child be found again instead of created.
            json!({"module": "echo", "idempotency_key": "mine"}),
            // Bounds a client's task has, a child has too.
            json!({"module": "echo", "limits": {"memory_bytes": 1u64 << 40}}),
            json!({"module": "echo", "input": "fine"}),
        ],
    )
    .await;
    assert_eq!(answers.len(), 5, "{answers:?}");
    assert_eq!(
        answers[0],
        "refused: refused by the host: refused: dirs./data: \"data\" is not a volume the submitting task holds; a \
         child may be granted only its parent's volumes"
    );
    assert_eq!(
        answers[1],
        "refused: refused by the host: refused: egress: \"anything\" is not a policy the submitting task holds; a \
         child may name only its parent's egress policies"
    );
    assert!(
        answers[2].starts_with(
            "refused: refused by the host: refused: idempotency_key: a child task may not set one"
        ),
        "{answers:?}"
    );
    assert!(
        answers[3].starts_with("refused: refused by the host: refused: limits.memory_bytes"),
        "{answers:?}"
    );
    assert!(answers[4].starts_with("ok "), "{answers:?}");

    // A parent holding the volume may pass it on.
    let answers = raw_answers(
        &client,
        json!({"dirs": {"/in": "data"}}),
        &[json!({"module": "echo", "dirs": {"/data": "data"}})],
    )
    .await;
    assert!(answers[0].starts_with("ok "), "{answers:?}");
    client.assert_serves().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attack_a_flood_of_children_stops_at_the_tenant_quota() {
    let fabric = Fabric::start(&["--workers", "2", "--tenant-max-tasks", "50"]);
    let client = fabric.client();
    put_planner(&client, fabric_agents::p2::PLANNER).await;
    // 1,000 children asked for (the most one attempt may submit), past the quota of 50.
    let flood = client
        .submit(json!({"module": "planner", "args": ["--flood", "1000"]}))
        .await;
    let done = client.wait(&flood, WAIT).await;
    assert_eq!(done["state"], "failed", "{done}");
    let attempt = &done["attempts"][0];
    assert_eq!(attempt["outcome"], "invalid", "{done}");
    let error = attempt["error"].as_str().unwrap();
    assert!(
        error.starts_with("child tasks refused: task quota: this tenant has 1 unfinished tasks; 1000 more would pass its limit of 50"),
        "{error}"
    );
    assert!(children_of(&client, &flood).await.is_empty());

    // The 1,001st call is refused to the guest itself.
    let over = client
        .submit(
            json!({"module": "planner", "args": ["--flood", "1001"], "retry": {"max_attempts": 1}}),
        )
        .await;
    let done = client.wait(&over, WAIT).await;
    let output = done["output"].as_str().unwrap();
    assert!(
        output.starts_with("flood calls=1001 taken=1000 refused=1\nlast refusal: refused by the host: limit reached"),
        "{output}"
    );
    client.assert_serves().await;
}
