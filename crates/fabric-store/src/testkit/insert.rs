//! Insert and get: every field round-trips, and idempotency keys deduplicate within a
//! batch, across calls and per tenant.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use fabric_types::{Attempt, Denial, Limits, Outcome, Priority, RetryPolicy, TaskState, Usage};

use super::{LEASE, at, claim, get, ids, insert, module_id, new_task};
use crate::{
    Completed, Completion, Inserted, NewTask, Next, Store, TaskCompleteParams, TaskGetParams,
    TaskInsertParams, TaskListParams,
};

/// Every field of a task survives insert and get; so does every field of an attempt.
pub async fn insert_get_round_trip(store: Arc<dyn Store>) {
    let store = &*store;
    let task = NewTask {
        tenant: "acme".into(),
        module: module_id(),
        input: vec![0, 1, 2, 255],
        priority: Priority::High,
        limits: Limits {
            fuel: 11,
            memory_bytes: 22,
            timeout_ms: 33,
            output_bytes: 44,
            log_bytes: 55,
        },
        retry: RetryPolicy {
            max_attempts: 7,
            backoff_ms: 8,
            max_backoff_ms: 9,
            retry_on: vec![Outcome::Trap, Outcome::OutOfFuel],
        },
        idempotency_key: Some("key-1".into()),
        run_at: None,
        deadline: Some(at(3_600_000)),
        env: BTreeMap::from([("A".into(), "1".into()), ("B".into(), "two words".into())]),
        labels: BTreeMap::from([("team".into(), "infra".into())]),
        dirs: BTreeMap::from([
            ("/data".into(), "shared".into()),
            ("/models/v2".into(), "models_v2-x".into()),
        ]),
        egress: vec!["weather".into(), "search".into()],
        args: vec!["--verbose".into(), "two words".into(), String::new()],
        id: None,
        after: Vec::new(),
        pass_outputs: false,
        parent: None,
        concurrency: Some(fabric_types::Concurrency {
            key: "model-api".into(),
            limit: 3,
        }),
    };
    let inserted = store
        .task_insert(TaskInsertParams {
            tasks: vec![task.clone()],
            now: at(0),
        })
        .await
        .expect("task_insert");
    assert_eq!(inserted.len(), 1);
    assert_eq!(inserted[0].state, TaskState::Queued);
    assert!(!inserted[0].deduplicated);
    let id = inserted[0].id.clone();

    let got = store
        .task_get(TaskGetParams {
            tenant: Some("acme".into()),
            id: id.clone(),
        })
        .await
        .expect("task_get")
        .expect("the task just inserted");
    assert_eq!(got.id, id);
    assert_eq!(got.tenant, task.tenant);
    assert_eq!(got.module, task.module);
    assert_eq!(got.input, task.input);
    assert_eq!(got.priority, task.priority);
    assert_eq!(got.state, TaskState::Queued);
    assert_eq!(got.limits, task.limits);
    assert_eq!(got.retry, task.retry);
    assert_eq!(got.idempotency_key, task.idempotency_key);
    assert_eq!(got.run_at, None);
    assert_eq!(got.deadline, task.deadline);
    assert_eq!(got.env, task.env);
    assert_eq!(got.labels, task.labels);
    assert_eq!(got.concurrency, task.concurrency);
    assert_eq!(got.dirs, task.dirs);
    assert_eq!(got.egress, task.egress);
    assert_eq!(got.args, task.args);
    assert_eq!(got.progress, None);
    assert_eq!(got.created_at, at(0));
    assert_eq!(got.started_at, None);
    assert_eq!(got.finished_at, None);
    assert!(!got.cancel_requested);
    assert!(got.attempts.is_empty());
    assert!(got.after.is_empty() && !got.pass_outputs);
    assert_eq!((got.parent, got.depth, got.error), (None, 0, None));

    // A scheduled task keeps its run_at.
    let mut later = new_task("acme", "later");
    later.run_at = Some(at(5_000));
    let later_id = insert(store, later, at(0)).await;
    let later = get(store, &later_id).await;
    assert_eq!(later.state, TaskState::Scheduled);
    assert_eq!(later.run_at, Some(at(5_000)));
    assert!(
        later.egress.is_empty(),
        "a task naming no policy reads none"
    );

    // An attempt's every field survives complete and get.
    let claimed = claim(store, "node-a", 1, at(10)).await;
    assert_eq!(claimed.len(), 1);
    let c = &claimed[0];
    assert_eq!(c.task_id, id);
    assert_eq!(c.attempt_number, 1);
    assert_eq!(c.tenant, "acme");
    assert_eq!(c.module, task.module);
    assert_eq!(c.input, task.input);
    assert_eq!(c.priority, task.priority);
    assert_eq!(c.limits, task.limits);
    assert_eq!(c.retry, task.retry);
    assert_eq!(c.deadline, task.deadline);
    assert_eq!(c.env, task.env);
    assert_eq!(c.labels, task.labels);
    assert_eq!(c.dirs, task.dirs);
    assert_eq!(c.egress, task.egress);
    assert_eq!(c.claimed_at, at(10));
    assert_eq!(c.lease_until, at(10) + LEASE);

    let running = get(store, &id).await;
    assert_eq!(running.state, TaskState::Running);
    assert_eq!(running.started_at, Some(at(10)));
    assert_eq!(running.attempts.len(), 1);
    assert_eq!(running.attempts[0].id, c.attempt_id);
    assert_eq!(running.attempts[0].node, "node-a");
    assert_eq!(running.attempts[0].lease_until, Some(at(10) + LEASE));
    assert_eq!(running.attempts[0].result, None);

    let attempt = Attempt {
        outcome: Outcome::Exit,
        exit_code: Some(3),
        trap: Some("unreachable".into()),
        error: Some("it said no".into()),
        output: vec![9, 8, 7],
        stderr: b"log line\n".to_vec(),
        output_truncated: true,
        stderr_truncated: true,
        usage: Usage {
            fuel_consumed: 123,
            peak_memory_bytes: 65_536,
            wall_ms: 17,
            http_requests: 4,
            http_bytes_sent: 512,
            http_bytes_received: 70_000,
            http_denied: 2,
        },
        denials: vec![
            Denial {
                url: "https://evil.example/upload".into(),
                reason: "no granted policy allows evil.example".into(),
            },
            Denial {
                url: "http://10.0.0.1:8080/".into(),
                reason: "address 10.0.0.1 is not public".into(),
            },
        ],
        kpis: fabric_types::Kpis::from([
            ("tokens.in".into(), fabric_types::KpiStats::new(12.0)),
            ("score".into(), fabric_types::KpiStats::new(0.75)),
        ]),
        started_at: Some(at(11)),
        finished_at: Some(at(28)),
    };
    let done = store
        .task_complete(TaskCompleteParams {
            completions: vec![Completion {
                children: Vec::new(),
                attempt_id: c.attempt_id.clone(),
                attempt: attempt.clone(),
                next: Next::Finish(TaskState::Failed),
            }],
            now: at(30),
        })
        .await
        .expect("task_complete");
    assert_eq!(
        done,
        vec![Completed {
            attempt_id: c.attempt_id.clone(),
            accepted: true,
            task_id: Some(id.clone()),
            state: Some(TaskState::Failed)
        }]
    );
    let failed = get(store, &id).await;
    assert_eq!(failed.state, TaskState::Failed);
    assert_eq!(failed.finished_at, Some(at(30)));
    assert_eq!(failed.attempts.len(), 1);
    assert_eq!(failed.attempts[0].number, 1);
    assert_eq!(failed.attempts[0].claimed_at, at(10));
    assert_eq!(failed.attempts[0].lease_until, None);
    assert_eq!(failed.attempts[0].result.as_ref(), Some(&attempt));
}

/// A repeated idempotency key returns the first task, across calls.
pub async fn idempotency_across_calls(store: Arc<dyn Store>) {
    let store = &*store;
    let mut first = new_task("acme", "first");
    first.idempotency_key = Some("k".into());
    let mut second = new_task("acme", "second");
    second.idempotency_key = Some("k".into());
    second.run_at = Some(at(60_000));

    let a = store
        .task_insert(TaskInsertParams {
            tasks: vec![first],
            now: at(0),
        })
        .await
        .unwrap();
    let b = store
        .task_insert(TaskInsertParams {
            tasks: vec![second],
            now: at(5),
        })
        .await
        .unwrap();
    assert_eq!(
        b[0],
        Inserted {
            id: a[0].id.clone(),
            state: TaskState::Queued,
            deduplicated: true
        }
    );

    // The state reported is the first task's current state.
    let claimed = claim(store, "n", 1, at(10)).await;
    assert_eq!(ids(&claimed), vec![a[0].id.clone()]);
    let mut third = new_task("acme", "third");
    third.idempotency_key = Some("k".into());
    let c = store
        .task_insert(TaskInsertParams {
            tasks: vec![third],
            now: at(20),
        })
        .await
        .unwrap();
    assert_eq!(
        c[0],
        Inserted {
            id: a[0].id.clone(),
            state: TaskState::Running,
            deduplicated: true
        }
    );
    assert_eq!(get(store, &a[0].id).await.input, b"first");
    let page = store
        .task_list(TaskListParams {
            tenant: Some("acme".into()),
            state: None,
            limit: 10,
            cursor: None,
            ..TaskListParams::default()
        })
        .await
        .unwrap();
    assert_eq!(page.tasks.len(), 1, "a deduplicated insert stores nothing");
}

/// A key repeated within one batch returns the batch's first task for the later ones.
pub async fn idempotency_within_batch(store: Arc<dyn Store>) {
    let store = &*store;
    let mut tasks = Vec::new();
    for (i, key) in ["x", "y", "x", "", "x"].iter().enumerate() {
        let mut t = new_task("acme", &format!("t{i}"));
        t.idempotency_key = (!key.is_empty()).then(|| key.to_string());
        tasks.push(t);
    }
    let out = store
        .task_insert(TaskInsertParams { tasks, now: at(0) })
        .await
        .unwrap();
    assert_eq!(out.len(), 5);
    assert_eq!(
        out.iter().map(|i| i.deduplicated).collect::<Vec<_>>(),
        [false, false, true, false, true]
    );
    assert_eq!(out[2].id, out[0].id);
    assert_eq!(out[4].id, out[0].id);
    let distinct: HashSet<_> = out.iter().map(|i| i.id.clone()).collect();
    assert_eq!(distinct.len(), 3);
}

/// Two tenants may use the same idempotency key; each gets its own task.
pub async fn idempotency_is_per_tenant(store: Arc<dyn Store>) {
    let store = &*store;
    let mut a = new_task("acme", "a");
    a.idempotency_key = Some("same".into());
    let mut b = new_task("globex", "b");
    b.idempotency_key = Some("same".into());
    let out = store
        .task_insert(TaskInsertParams {
            tasks: vec![a, b],
            now: at(0),
        })
        .await
        .unwrap();
    assert!(out.iter().all(|i| !i.deduplicated), "{out:?}");
    assert_ne!(out[0].id, out[1].id);
    assert_eq!(get(store, &out[1].id).await.tenant, "globex");
}
