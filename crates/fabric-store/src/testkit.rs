//! The conformance suite every store backend runs, so backends cannot drift apart.
//!
//! Each case is a `pub async fn(Arc<dyn Store>)` that takes a fresh, empty store and panics
//! on a violation. A backend's test file runs them all, each as its own `#[tokio::test]`
//! named after the case, with [`conformance_tests!`](crate::conformance_tests):
//!
//! ```ignore
//! async fn make() -> (Arc<dyn Store>, tempfile::TempDir) { /* a fresh store */ }
//! fabric_store::conformance_tests!(make);
//! ```
//!
//! The test crate needs `tokio` (with `macros` and `rt-multi-thread`) as a dev-dependency.
//! Every case drives time through its params from a fixed instant ([`T0_MS`]), never from
//! the system clock, and waits on nothing.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use fabric_types::{Attempt, Limits, ModuleId, Outcome, Priority, RetryPolicy, TaskState, Usage};
use time::OffsetDateTime;

use crate::{
    AttemptId, ClaimedTask, Completed, Completion, Inserted, ModuleGetParams, ModuleKind,
    ModuleListParams, ModulePutParams, ModuleRef, NewTask, Next, StatsParams, Store,
    TaskCancelParams, TaskClaimParams, TaskCompleteParams, TaskExpireParams, TaskGetParams,
    TaskHeartbeatParams, TaskId, TaskInsertParams, TaskListParams, TaskPromoteParams,
    TaskPruneParams, TaskRecord, TaskRescueParams, from_millis,
};

/// The instant every case starts at: 2023-11-14T22:13:20Z.
pub const T0_MS: i64 = 1_700_000_000_000;

/// The lease every case claims with.
pub const LEASE: Duration = Duration::from_secs(10);

/// `T0` plus `ms` milliseconds.
pub fn at(ms: i64) -> OffsetDateTime {
    from_millis(T0_MS + ms)
}

/// The module id the cases use for their tasks.
pub fn module_id() -> ModuleId {
    ModuleId::of(b"(module)")
}

/// A task for `tenant` with defaults and the given input.
pub fn new_task(tenant: &str, input: &str) -> NewTask {
    NewTask::new(tenant, module_id(), input.as_bytes().to_vec())
}

/// Inserts one task at `now` and returns its id.
pub async fn insert(store: &dyn Store, task: NewTask, now: OffsetDateTime) -> TaskId {
    let mut out = store
        .task_insert(TaskInsertParams {
            tasks: vec![task],
            now,
        })
        .await
        .expect("task_insert");
    assert_eq!(out.len(), 1, "task_insert returns one result per task");
    out.remove(0).id
}

/// Reads a task as admin, which must exist.
pub async fn get(store: &dyn Store, id: &TaskId) -> TaskRecord {
    store
        .task_get(TaskGetParams {
            tenant: None,
            id: id.clone(),
        })
        .await
        .expect("task_get")
        .unwrap_or_else(|| panic!("task {id} not found"))
}

/// Claims up to `max` tasks as `node` at `now`.
pub async fn claim(
    store: &dyn Store,
    node: &str,
    max: usize,
    now: OffsetDateTime,
) -> Vec<ClaimedTask> {
    store
        .task_claim(TaskClaimParams {
            node: node.to_string(),
            max,
            lease: LEASE,
            now,
        })
        .await
        .expect("task_claim")
}

/// Completes one attempt with `outcome` and `next` at `now`.
pub async fn complete(
    store: &dyn Store,
    attempt_id: &AttemptId,
    outcome: Outcome,
    next: Next,
    now: OffsetDateTime,
) -> Completed {
    let mut out = store
        .task_complete(TaskCompleteParams {
            completions: vec![Completion {
                attempt_id: attempt_id.clone(),
                attempt: Attempt::new(outcome),
                next,
            }],
            now,
        })
        .await
        .expect("task_complete");
    assert_eq!(
        out.len(),
        1,
        "task_complete returns one result per completion"
    );
    out.remove(0)
}

fn no_jitter(bound: u64) -> u64 {
    bound
}

fn ids(claimed: &[ClaimedTask]) -> Vec<TaskId> {
    claimed.iter().map(|c| c.task_id.clone()).collect()
}

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
    assert_eq!(got.dirs, task.dirs);
    assert_eq!(got.created_at, at(0));
    assert_eq!(got.started_at, None);
    assert_eq!(got.finished_at, None);
    assert!(!got.cancel_requested);
    assert!(got.attempts.is_empty());

    // A scheduled task keeps its run_at.
    let mut later = new_task("acme", "later");
    later.run_at = Some(at(5_000));
    let later_id = insert(store, later, at(0)).await;
    let later = get(store, &later_id).await;
    assert_eq!(later.state, TaskState::Scheduled);
    assert_eq!(later.run_at, Some(at(5_000)));

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
        },
        started_at: Some(at(11)),
        finished_at: Some(at(28)),
    };
    let done = store
        .task_complete(TaskCompleteParams {
            completions: vec![Completion {
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

/// Another tenant's tasks and modules are not found, listed, counted or cancelled.
pub async fn tenant_isolation(store: Arc<dyn Store>) {
    let store = &*store;
    let mine = insert(store, new_task("acme", "mine"), at(0)).await;
    let theirs = insert(store, new_task("globex", "theirs"), at(1)).await;

    let got = store
        .task_get(TaskGetParams {
            tenant: Some("acme".into()),
            id: theirs.clone(),
        })
        .await
        .unwrap();
    assert!(got.is_none(), "acme read globex's task");
    assert!(
        store
            .task_get(TaskGetParams {
                tenant: Some("acme".into()),
                id: mine.clone()
            })
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .task_get(TaskGetParams {
                tenant: None,
                id: theirs.clone()
            })
            .await
            .unwrap()
            .is_some()
    );

    let page = store
        .task_list(TaskListParams {
            tenant: Some("acme".into()),
            state: None,
            limit: 100,
            cursor: None,
        })
        .await
        .unwrap();
    assert_eq!(
        page.tasks.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
        vec![mine.clone()]
    );
    let all = store
        .task_list(TaskListParams {
            tenant: None,
            state: None,
            limit: 100,
            cursor: None,
        })
        .await
        .unwrap();
    assert_eq!(all.tasks.len(), 2);

    let cancelled = store
        .task_cancel(TaskCancelParams {
            tenant: Some("acme".into()),
            id: theirs.clone(),
            now: at(2),
        })
        .await
        .unwrap();
    assert!(cancelled.is_none(), "acme cancelled globex's task");
    assert_eq!(get(store, &theirs).await.state, TaskState::Queued);

    let stats = store
        .stats(StatsParams {
            tenant: Some("acme".into()),
        })
        .await
        .unwrap();
    assert_eq!(stats.queued(), 1);
    let stats = store.stats(StatsParams { tenant: None }).await.unwrap();
    assert_eq!(stats.queued(), 2);

    let bytes = b"\0asm\x01\0\0\0".to_vec();
    let id = ModuleId::of(&bytes);
    store
        .module_put(ModulePutParams {
            tenant: "acme".into(),
            id,
            name: Some("echo".into()),
            bytes,
            kind: ModuleKind::Module,
            now: at(3),
        })
        .await
        .unwrap();
    let by_id = ModuleGetParams {
        tenant: "globex".into(),
        module: ModuleRef::Id(id),
    };
    assert!(
        store.module_get(by_id).await.unwrap().is_none(),
        "globex read acme's module"
    );
    let by_name = ModuleGetParams {
        tenant: "globex".into(),
        module: ModuleRef::Name("echo".into()),
    };
    assert!(
        store.module_get(by_name).await.unwrap().is_none(),
        "globex read acme's module name"
    );
    assert!(
        store
            .module_list(ModuleListParams {
                tenant: "globex".into()
            })
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .module_list(ModuleListParams {
                tenant: "acme".into()
            })
            .await
            .unwrap()
            .len(),
        1
    );
}

/// Modules: put is idempotent, get by id and by name, a name follows the newest put.
pub async fn modules_put_get_list(store: Arc<dyn Store>) {
    let store = &*store;
    let v1 = b"\0asm\x01\0\0\0version-1".to_vec();
    let v2 = b"\0asm\x0d\0\x01\0version-2".to_vec();
    let (id1, id2) = (ModuleId::of(&v1), ModuleId::of(&v2));
    let put = |id, name: Option<&str>, bytes: &Vec<u8>, kind, now| ModulePutParams {
        tenant: "acme".into(),
        id,
        name: name.map(str::to_string),
        bytes: bytes.clone(),
        kind,
        now,
    };

    let info = store
        .module_put(put(id1, Some("echo"), &v1, ModuleKind::Module, at(0)))
        .await
        .unwrap();
    assert_eq!(info.id, id1);
    assert_eq!(info.size, v1.len() as u64);
    assert_eq!(info.created_at, at(0));
    // Idempotent: the same bytes again keep the first created_at.
    let again = store
        .module_put(put(id1, None, &v1, ModuleKind::Module, at(50)))
        .await
        .unwrap();
    assert_eq!(again.created_at, at(0));

    let got = store
        .module_get(ModuleGetParams {
            tenant: "acme".into(),
            module: ModuleRef::Id(id1),
        })
        .await
        .unwrap()
        .expect("module by id");
    assert_eq!(got.bytes, v1);
    assert_eq!(got.kind, ModuleKind::Module);
    assert_eq!(got.name.as_deref(), Some("echo"));

    store
        .module_put(put(id2, Some("echo"), &v2, ModuleKind::Component, at(100)))
        .await
        .unwrap();
    let by_name = store
        .module_get(ModuleGetParams {
            tenant: "acme".into(),
            module: ModuleRef::Name("echo".into()),
        })
        .await
        .unwrap()
        .expect("module by name");
    assert_eq!(
        by_name.id, id2,
        "a name points at the newest module put under it"
    );
    assert_eq!(by_name.kind, ModuleKind::Component);
    assert_eq!(by_name.bytes, v2);

    let missing = ModuleGetParams {
        tenant: "acme".into(),
        module: ModuleRef::Name("nope".into()),
    };
    assert!(store.module_get(missing).await.unwrap().is_none());

    let list = store
        .module_list(ModuleListParams {
            tenant: "acme".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        list.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![id1, id2]
    );
}

/// Claims come out by priority, and FIFO within one priority.
pub async fn claim_order_priority_then_fifo(store: Arc<dyn Store>) {
    let store = &*store;
    let mut expected: Vec<(Priority, TaskId)> = Vec::new();
    // Lower priorities first, so insertion order alone would give the wrong answer.
    for (i, p) in Priority::ALL.iter().rev().enumerate() {
        for j in 0..3 {
            let mut t = new_task("acme", &format!("{p}-{j}"));
            t.priority = *p;
            // Within 1 s, far less than an aging step.
            let id = insert(store, t, at((i * 3 + j) as i64 * 10)).await;
            expected.push((*p, id));
        }
    }
    expected.sort_by_key(|(p, _)| *p);
    let expected: Vec<TaskId> = expected.into_iter().map(|(_, id)| id).collect();
    let mut got = Vec::new();
    for _ in 0..5 {
        got.extend(ids(&claim(store, "n", 3, at(1_000)).await));
    }
    assert_eq!(got, expected);
    assert!(claim(store, "n", 3, at(1_000)).await.is_empty());
}

/// Aging: a background task enqueued four aging steps before a critical one is claimed
/// first; one enqueued a millisecond later than that is not.
pub async fn claim_aging(store: Arc<dyn Store>) {
    let store = &*store;
    let step = store.aging_step_ms() as i64;
    assert!(step > 0, "the aging step must be positive");
    let mut bg = new_task("acme", "background");
    bg.priority = Priority::Background;
    let bg = insert(store, bg, at(0)).await;
    let mut crit = new_task("acme", "critical");
    crit.priority = Priority::Critical;
    let crit = insert(store, crit, at(4 * step)).await;
    let got = ids(&claim(store, "n", 2, at(4 * step)).await);
    assert_eq!(
        got,
        vec![bg, crit],
        "background enqueued 4 steps earlier goes first"
    );

    let mut bg = new_task("acme", "background-2");
    bg.priority = Priority::Background;
    let bg = insert(store, bg, at(10 * step)).await;
    let mut crit = new_task("acme", "critical-2");
    crit.priority = Priority::Critical;
    let crit = insert(store, crit, at(14 * step - 1)).await;
    let got = ids(&claim(store, "n", 2, at(14 * step)).await);
    assert_eq!(got, vec![crit, bg], "within the bound, critical goes first");

    // Aging counts from when a scheduled task became due, not from when it was inserted.
    let mut low = new_task("acme", "low, scheduled");
    low.priority = Priority::Low;
    low.run_at = Some(at(20 * step));
    let low = insert(store, low, at(0)).await;
    let mut high = new_task("acme", "high");
    high.priority = Priority::High;
    let high = insert(store, high, at(20 * step + 1)).await;
    store
        .task_promote(TaskPromoteParams {
            now: at(21 * step),
            max: 10,
        })
        .await
        .unwrap();
    let got = ids(&claim(store, "n", 2, at(21 * step)).await);
    assert_eq!(got, vec![high, low]);
}

/// Inserts `tasks` in one batch at `now` and returns their ids, in order.
async fn insert_batch(store: &dyn Store, tasks: Vec<NewTask>, now: OffsetDateTime) -> Vec<TaskId> {
    store
        .task_insert(TaskInsertParams { tasks, now })
        .await
        .expect("task_insert")
        .into_iter()
        .map(|i| i.id)
        .collect()
}

/// `n` tasks of `tenant` at `priority`, inputs `{prefix}{i}`.
fn flood(tenant: &str, prefix: &str, priority: Priority, n: usize) -> Vec<NewTask> {
    (0..n)
        .map(|i| {
            let mut t = new_task(tenant, &format!("{prefix}{i}"));
            t.priority = priority;
            t
        })
        .collect()
}

/// Fair share: a tenant's flood of 2,000 tasks in one batch does not stand in front of
/// another tenant's task enqueued a millisecond later at the same priority, and the flood
/// itself stays FIFO.
pub async fn fair_share_between_tenants(store: Arc<dyn Store>) {
    let store = &*store;
    let flood_ids = insert_batch(store, flood("x", "x", Priority::Normal, 2_000), at(0)).await;
    let y = insert(store, new_task("y", "y"), at(1)).await;
    let first = ids(&claim(store, "n", 10, at(2)).await);
    let position = first.iter().position(|id| *id == y);
    assert!(
        position.is_some_and(|p| p <= 2),
        "y's task must be among the first three claimed, not behind x's 2,000: {position:?}"
    );
    let mut x_order: Vec<TaskId> = first.into_iter().filter(|id| *id != y).collect();
    x_order.extend(ids(&claim(store, "n", 2_000, at(2)).await));
    assert_eq!(x_order, flood_ids, "x's own tasks stay in FIFO order");
    assert!(claim(store, "n", 10, at(2)).await.is_empty());
}

/// Fair share is per priority: a tenant's own critical task inserted after its normal flood
/// is claimed before the flood; its own later normal task waits behind the flood; another
/// tenant's normal task does not.
pub async fn fair_share_per_priority(store: Arc<dyn Store>) {
    let store = &*store;
    let flood_ids = insert_batch(store, flood("x", "x", Priority::Normal, 1_000), at(0)).await;
    let later = insert(store, new_task("x", "x later"), at(1)).await;
    let mut crit = new_task("x", "x critical");
    crit.priority = Priority::Critical;
    let crit = insert(store, crit, at(1)).await;
    let y = insert(store, new_task("y", "y"), at(2)).await;
    let got = ids(&claim(store, "n", 2_000, at(3)).await);
    assert_eq!(got.len(), 1_003);
    assert_eq!(
        got[0], crit,
        "x's critical task overtakes x's own normal flood"
    );
    let y_at = got.iter().position(|id| *id == y).unwrap();
    assert!(y_at <= 4, "y's task is claimed early, not at {y_at}");
    let x_normal: Vec<TaskId> = got
        .into_iter()
        .filter(|id| *id != crit && *id != y)
        .collect();
    let mut expected = flood_ids;
    expected.push(later);
    assert_eq!(
        x_normal, expected,
        "x's later normal task waits behind x's flood"
    );
}

/// The clocks persist across batches and catch up with real time: a flood spread over
/// virtual time keeps a later batch of the same tenant behind it, but once real time has
/// passed the flood's end the tenant is not penalized any more. A task inserted as
/// scheduled keeps the fair key it got at insert through its promotion.
pub async fn fair_share_clock_persists_and_catches_up(store: Arc<dyn Store>) {
    let store = &*store;
    // x: 100 tasks in two batches at 0 take virtual 0..99; y at 50 goes before x's 51..99
    // (it ties with x's task at 50, and ties go by id, which is creation order).
    let mut x = insert_batch(store, flood("x", "a", Priority::Normal, 50), at(0)).await;
    x.extend(insert_batch(store, flood("x", "b", Priority::Normal, 50), at(0)).await);
    let y = insert(store, new_task("y", "y"), at(50)).await;
    // x schedules a task for 20 ms, inside its own backlog: it goes behind the backlog.
    let mut sched = new_task("x", "scheduled");
    sched.run_at = Some(at(20));
    let sched = insert(store, sched, at(1)).await;
    assert_eq!(
        store
            .task_promote(TaskPromoteParams {
                now: at(60),
                max: 10
            })
            .await
            .unwrap(),
        vec![sched.clone()]
    );
    let got = ids(&claim(store, "n", 200, at(60)).await);
    let mut expected: Vec<TaskId> = x[..51].to_vec();
    expected.push(y);
    expected.extend_from_slice(&x[51..]);
    expected.push(sched);
    assert_eq!(got, expected);

    // Much later, x is not behind: first come, first served again.
    let x_late = insert(store, new_task("x", "x late"), at(10_000)).await;
    let y_late = insert(store, new_task("y", "y late"), at(10_001)).await;
    assert_eq!(
        ids(&claim(store, "n", 10, at(10_002)).await),
        vec![x_late, y_late]
    );
}

/// Two concurrent claim loops over many tasks never get the same task.
pub async fn claim_concurrent_no_duplicates(store: Arc<dyn Store>) {
    const TASKS: usize = 400;
    let tasks: Vec<NewTask> = (0..TASKS)
        .map(|i| new_task("acme", &i.to_string()))
        .collect();
    store
        .task_insert(TaskInsertParams { tasks, now: at(0) })
        .await
        .unwrap();
    let spawn_loop = |node: &'static str| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let claimed = claim(&*store, node, 7, at(1)).await;
                if claimed.is_empty() {
                    break mine;
                }
                mine.extend(claimed.into_iter().map(|c| c.task_id));
                tokio::task::yield_now().await;
            }
        })
    };
    let (a, b) = (spawn_loop("node-a"), spawn_loop("node-b"));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    let mut all: Vec<TaskId> = a.iter().chain(&b).cloned().collect();
    assert_eq!(
        all.len(),
        TASKS,
        "every task claimed once ({} + {})",
        a.len(),
        b.len()
    );
    all.sort();
    all.dedup();
    assert_eq!(all.len(), TASKS, "some task was handed to two claimers");
    assert_eq!(
        store.stats(StatsParams::default()).await.unwrap().running,
        TASKS as u64
    );
}

/// A heartbeat renews the lease of held attempts only, and reports cancel requests.
pub async fn heartbeat_renews(store: Arc<dyn Store>) {
    let store = &*store;
    let id = insert(store, new_task("acme", "x"), at(0)).await;
    let c = claim(store, "n", 1, at(0)).await.remove(0);
    let lease_ms = LEASE.as_millis() as i64;
    let stranger = AttemptId::from("no-such-attempt");
    let hb = store
        .task_heartbeat(TaskHeartbeatParams {
            attempt_ids: vec![c.attempt_id.clone(), stranger],
            lease_until: at(lease_ms + 20_000),
            now: at(lease_ms - 1),
        })
        .await
        .unwrap();
    assert_eq!(hb.held, vec![c.attempt_id.clone()]);
    assert!(hb.cancel_requested.is_empty());
    assert_eq!(
        get(store, &id).await.attempts[0].lease_until,
        Some(at(lease_ms + 20_000))
    );

    // Past the old lease, nothing is rescued; past the new one, it is.
    let rescue = |now| TaskRescueParams {
        now,
        max: 10,
        jitter: no_jitter,
    };
    assert!(
        store
            .task_rescue(rescue(at(lease_ms + 1)))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(get(store, &id).await.state, TaskState::Running);
    let rescued = store
        .task_rescue(rescue(at(lease_ms + 20_001)))
        .await
        .unwrap();
    assert_eq!(rescued.len(), 1);

    // A rescued attempt is no longer held.
    let hb = store
        .task_heartbeat(TaskHeartbeatParams {
            attempt_ids: vec![c.attempt_id.clone()],
            lease_until: at(lease_ms + 60_000),
            now: at(lease_ms + 20_002),
        })
        .await
        .unwrap();
    assert!(hb.held.is_empty(), "{hb:?}");
}

/// A completion from an attempt whose lease was rescued is rejected; the rescuer's `lost`
/// stands and the task follows the rescue, not the stale completion.
pub async fn fenced_completion_after_rescue(store: Arc<dyn Store>) {
    let store = &*store;
    let mut t = new_task("acme", "x");
    t.retry = RetryPolicy {
        max_attempts: 3,
        backoff_ms: 1_000,
        max_backoff_ms: 10_000,
        ..RetryPolicy::default()
    };
    let id = insert(store, t, at(0)).await;
    let old = claim(store, "dead-node", 1, at(0)).await.remove(0);
    let lease_ms = LEASE.as_millis() as i64;

    let rescued = store
        .task_rescue(TaskRescueParams {
            now: at(lease_ms + 1),
            max: 10,
            jitter: no_jitter,
        })
        .await
        .unwrap();
    assert_eq!(rescued.len(), 1);
    assert_eq!(rescued[0].task_id, id);
    assert_eq!(rescued[0].attempt_id, old.attempt_id);
    assert_eq!(rescued[0].state, TaskState::Scheduled);
    assert_eq!(rescued[0].run_at, Some(at(lease_ms + 1 + 1_000)));

    let late = complete(
        store,
        &old.attempt_id,
        Outcome::Ok,
        Next::Finish(TaskState::Succeeded),
        at(lease_ms + 2),
    )
    .await;
    assert!(!late.accepted, "a completion after rescue was accepted");
    assert_eq!(late.state, Some(TaskState::Scheduled));

    let task = get(store, &id).await;
    assert_eq!(task.state, TaskState::Scheduled);
    assert_eq!(task.attempts.len(), 1);
    let lost = task.attempts[0]
        .result
        .as_ref()
        .expect("the lost attempt has a result");
    assert_eq!(lost.outcome, Outcome::Lost);

    // The next claim is attempt 2; completing it twice is accepted once.
    store
        .task_promote(TaskPromoteParams {
            now: at(lease_ms + 1_001),
            max: 10,
        })
        .await
        .unwrap();
    let new = claim(store, "live-node", 1, at(lease_ms + 1_001))
        .await
        .remove(0);
    assert_eq!(new.attempt_number, 2);
    let ok = complete(
        store,
        &new.attempt_id,
        Outcome::Ok,
        Next::Finish(TaskState::Succeeded),
        at(lease_ms + 1_100),
    )
    .await;
    assert!(ok.accepted);
    let twice = complete(
        store,
        &new.attempt_id,
        Outcome::Exit,
        Next::Finish(TaskState::Failed),
        at(lease_ms + 1_200),
    )
    .await;
    assert!(
        !twice.accepted,
        "a second completion of one attempt was accepted"
    );
    let task = get(store, &id).await;
    assert_eq!(task.state, TaskState::Succeeded);
    assert_eq!(task.attempts.len(), 2);
    assert_eq!(
        task.attempts[1].result.as_ref().map(|a| a.outcome),
        Some(Outcome::Ok)
    );
}

/// A retry in the future schedules the task; promotion at its time queues it again.
pub async fn retry_schedules_then_promote_queues(store: Arc<dyn Store>) {
    let store = &*store;
    let id = insert(store, new_task("acme", "x"), at(0)).await;
    let c = claim(store, "n", 1, at(0)).await.remove(0);
    let done = complete(
        store,
        &c.attempt_id,
        Outcome::Trap,
        Next::Retry { run_at: at(5_000) },
        at(100),
    )
    .await;
    assert!(done.accepted);
    assert_eq!(done.state, Some(TaskState::Scheduled));
    let task = get(store, &id).await;
    assert_eq!(task.state, TaskState::Scheduled);
    assert_eq!(task.run_at, Some(at(5_000)));
    assert!(
        claim(store, "n", 1, at(200)).await.is_empty(),
        "a scheduled task was claimed"
    );

    assert!(
        store
            .task_promote(TaskPromoteParams {
                now: at(4_999),
                max: 10
            })
            .await
            .unwrap()
            .is_empty()
    );
    let promoted = store
        .task_promote(TaskPromoteParams {
            now: at(5_000),
            max: 10,
        })
        .await
        .unwrap();
    assert_eq!(promoted, vec![id.clone()]);
    assert_eq!(get(store, &id).await.state, TaskState::Queued);
    let c2 = claim(store, "n", 1, at(5_001)).await.remove(0);
    assert_eq!(c2.attempt_number, 2);

    // A retry that is already due queues at once.
    let done = complete(
        store,
        &c2.attempt_id,
        Outcome::Trap,
        Next::Retry { run_at: at(5_001) },
        at(5_002),
    )
    .await;
    assert_eq!(done.state, Some(TaskState::Queued));
}

/// A task whose attempts run out ends `failed` with exactly `max_attempts` attempts.
pub async fn max_attempts_then_failed(store: Arc<dyn Store>) {
    let store = &*store;
    let mut t = new_task("acme", "x");
    t.retry.max_attempts = 3;
    let id = insert(store, t, at(0)).await;
    let mut now = 0;
    for n in 1..=3u32 {
        let c = claim(store, "n", 1, at(now)).await.remove(0);
        assert_eq!(c.attempt_number, n);
        let next = if n < c.retry.max_attempts {
            Next::Retry { run_at: at(now) }
        } else {
            Next::Finish(TaskState::Failed)
        };
        assert!(
            complete(store, &c.attempt_id, Outcome::Exit, next, at(now + 1))
                .await
                .accepted
        );
        now += 10;
    }
    let task = get(store, &id).await;
    assert_eq!(task.state, TaskState::Failed);
    assert_eq!(task.attempts.len(), 3);
    assert_eq!(
        task.attempts.iter().map(|a| a.number).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(
        task.attempts
            .iter()
            .all(|a| a.result.as_ref().map(|r| r.outcome) == Some(Outcome::Exit))
    );
    assert!(claim(store, "n", 1, at(now)).await.is_empty());

    // Rescue counts lost attempts too: a task lost on its last attempt fails.
    let mut t = new_task("acme", "y");
    t.retry.max_attempts = 1;
    let id = insert(store, t, at(now)).await;
    claim(store, "n", 1, at(now)).await.remove(0);
    let rescued = store
        .task_rescue(TaskRescueParams {
            now: at(now + LEASE.as_millis() as i64 + 1),
            max: 10,
            jitter: no_jitter,
        })
        .await
        .unwrap();
    assert_eq!(rescued.len(), 1);
    assert_eq!(rescued[0].state, TaskState::Failed);
    let task = get(store, &id).await;
    assert_eq!(task.state, TaskState::Failed);
    assert_eq!(task.attempts.len(), 1);
    assert!(task.finished_at.is_some());
}

/// A requeued attempt (shutdown) is not counted: the next claim is attempt 1 again.
pub async fn requeue_does_not_count(store: Arc<dyn Store>) {
    let store = &*store;
    let mut t = new_task("acme", "x");
    t.retry.max_attempts = 1;
    let id = insert(store, t, at(0)).await;
    let c = claim(store, "n", 1, at(0)).await.remove(0);
    let done = complete(
        store,
        &c.attempt_id,
        Outcome::Cancelled,
        Next::Requeue,
        at(10),
    )
    .await;
    assert!(done.accepted);
    assert_eq!(done.state, Some(TaskState::Queued));
    let task = get(store, &id).await;
    assert_eq!(task.state, TaskState::Queued);
    assert!(
        task.attempts.is_empty(),
        "a requeued attempt still counts: {:?}",
        task.attempts
    );
    let c = claim(store, "n", 1, at(20)).await.remove(0);
    assert_eq!(c.attempt_number, 1);
    assert!(
        complete(
            store,
            &c.attempt_id,
            Outcome::Ok,
            Next::Finish(TaskState::Succeeded),
            at(30)
        )
        .await
        .accepted
    );
    assert_eq!(get(store, &id).await.attempts.len(), 1);
}

/// Cancelling a queued or scheduled task ends it at once; it is never claimed.
pub async fn cancel_queued(store: Arc<dyn Store>) {
    let store = &*store;
    let queued = insert(store, new_task("acme", "q"), at(0)).await;
    let mut s = new_task("acme", "s");
    s.run_at = Some(at(1_000));
    let scheduled = insert(store, s, at(0)).await;
    for id in [&queued, &scheduled] {
        let task = store
            .task_cancel(TaskCancelParams {
                tenant: Some("acme".into()),
                id: id.clone(),
                now: at(5),
            })
            .await
            .unwrap()
            .expect("cancel finds the task");
        assert_eq!(task.state, TaskState::Cancelled);
        assert_eq!(task.finished_at, Some(at(5)));
    }
    store
        .task_promote(TaskPromoteParams {
            now: at(2_000),
            max: 10,
        })
        .await
        .unwrap();
    assert!(
        claim(store, "n", 10, at(2_000)).await.is_empty(),
        "a cancelled task was claimed"
    );

    // Terminal tasks are unchanged by a cancel.
    let again = store
        .task_cancel(TaskCancelParams {
            tenant: None,
            id: queued.clone(),
            now: at(3_000),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.finished_at, Some(at(5)));
    let missing = TaskCancelParams {
        tenant: None,
        id: TaskId::from("nope"),
        now: at(3_000),
    };
    assert!(store.task_cancel(missing).await.unwrap().is_none());
}

/// Cancelling a running task requests it; the heartbeat reports it; the task never runs
/// again even if its worker asks for a retry.
pub async fn cancel_running(store: Arc<dyn Store>) {
    let store = &*store;
    let id = insert(store, new_task("acme", "x"), at(0)).await;
    let c = claim(store, "n", 1, at(0)).await.remove(0);
    let task = store
        .task_cancel(TaskCancelParams {
            tenant: Some("acme".into()),
            id: id.clone(),
            now: at(5),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(task.state, TaskState::Running);
    assert!(task.cancel_requested);
    let hb = store
        .task_heartbeat(TaskHeartbeatParams {
            attempt_ids: vec![c.attempt_id.clone()],
            lease_until: at(20_000),
            now: at(6),
        })
        .await
        .unwrap();
    assert_eq!(hb.held, vec![c.attempt_id.clone()]);
    assert_eq!(hb.cancel_requested, vec![c.attempt_id.clone()]);
    let done = complete(
        store,
        &c.attempt_id,
        Outcome::Trap,
        Next::Retry { run_at: at(7) },
        at(8),
    )
    .await;
    assert!(done.accepted);
    assert_eq!(done.state, Some(TaskState::Cancelled));
    let task = get(store, &id).await;
    assert_eq!(task.state, TaskState::Cancelled);
    assert_eq!(task.finished_at, Some(at(8)));
    assert_eq!(task.attempts.len(), 1);

    // A cancel requested on a task whose worker then dies ends it cancelled on rescue.
    let id = insert(store, new_task("acme", "y"), at(10)).await;
    claim(store, "n", 1, at(10)).await.remove(0);
    store
        .task_cancel(TaskCancelParams {
            tenant: None,
            id: id.clone(),
            now: at(11),
        })
        .await
        .unwrap();
    let rescued = store
        .task_rescue(TaskRescueParams {
            now: at(60_000),
            max: 10,
            jitter: no_jitter,
        })
        .await
        .unwrap();
    assert_eq!(rescued.len(), 1);
    assert_eq!(rescued[0].state, TaskState::Cancelled);
}

/// A task with `run_at` in the future is scheduled and not claimable until promoted.
pub async fn run_at_honoured(store: Arc<dyn Store>) {
    let store = &*store;
    let mut t = new_task("acme", "x");
    t.run_at = Some(at(10_000));
    let out = store
        .task_insert(TaskInsertParams {
            tasks: vec![t],
            now: at(0),
        })
        .await
        .unwrap();
    assert_eq!(out[0].state, TaskState::Scheduled);
    let id = out[0].id.clone();
    let mut past = new_task("acme", "past");
    past.run_at = Some(at(-5));
    let out = store
        .task_insert(TaskInsertParams {
            tasks: vec![past],
            now: at(0),
        })
        .await
        .unwrap();
    assert_eq!(
        out[0].state,
        TaskState::Queued,
        "a run_at already passed queues at once"
    );
    assert_eq!(claim(store, "n", 10, at(9_999)).await.len(), 1);

    assert!(
        store
            .task_promote(TaskPromoteParams {
                now: at(9_999),
                max: 10
            })
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .task_promote(TaskPromoteParams {
                now: at(10_000),
                max: 10
            })
            .await
            .unwrap(),
        vec![id.clone()]
    );
    assert_eq!(ids(&claim(store, "n", 10, at(10_000)).await), vec![id]);
}

/// Waiting tasks whose deadline passed expire, and a claim never starts one.
pub async fn deadline_expiry(store: Arc<dyn Store>) {
    let store = &*store;
    let mut q = new_task("acme", "queued");
    q.deadline = Some(at(1_000));
    let q = insert(store, q, at(0)).await;
    let mut s = new_task("acme", "scheduled");
    s.run_at = Some(at(5_000));
    s.deadline = Some(at(2_000));
    let s = insert(store, s, at(0)).await;
    let mut ok = new_task("acme", "no deadline yet");
    ok.deadline = Some(at(100_000));
    let ok = insert(store, ok, at(0)).await;

    assert!(
        store
            .task_expire(TaskExpireParams {
                now: at(1_000),
                max: 10
            })
            .await
            .unwrap()
            .is_empty()
    );
    let mut expired = store
        .task_expire(TaskExpireParams {
            now: at(2_001),
            max: 10,
        })
        .await
        .unwrap();
    expired.sort();
    let mut want = vec![q.clone(), s.clone()];
    want.sort();
    assert_eq!(expired, want);
    for id in [&q, &s] {
        let task = get(store, id).await;
        assert_eq!(task.state, TaskState::Expired);
        assert_eq!(task.finished_at, Some(at(2_001)));
        assert!(task.attempts.is_empty());
    }
    assert_eq!(get(store, &ok).await.state, TaskState::Queued);

    // A claim after the deadline expires the task instead of starting it.
    let mut late = new_task("acme", "late");
    late.priority = Priority::Critical;
    late.deadline = Some(at(3_000));
    let late = insert(store, late, at(2_500)).await;
    let claimed = claim(store, "n", 10, at(3_001)).await;
    assert_eq!(ids(&claimed), vec![ok]);
    assert_eq!(get(store, &late).await.state, TaskState::Expired);
}

/// Prune deletes old terminal tasks and their attempts, never unfinished ones.
pub async fn prune_keeps_unfinished(store: Arc<dyn Store>) {
    let store = &*store;
    let done = insert(store, new_task("acme", "done"), at(0)).await;
    let c = claim(store, "n", 1, at(0)).await.remove(0);
    complete(
        store,
        &c.attempt_id,
        Outcome::Ok,
        Next::Finish(TaskState::Succeeded),
        at(10),
    )
    .await;
    let cancelled = insert(store, new_task("acme", "cancelled"), at(20)).await;
    store
        .task_cancel(TaskCancelParams {
            tenant: None,
            id: cancelled.clone(),
            now: at(30),
        })
        .await
        .unwrap();
    let recent = insert(store, new_task("acme", "recent"), at(40)).await;
    let c = claim(store, "n", 1, at(40)).await.remove(0);
    complete(
        store,
        &c.attempt_id,
        Outcome::Ok,
        Next::Finish(TaskState::Succeeded),
        at(5_000),
    )
    .await;
    let running = insert(store, new_task("acme", "running"), at(0)).await;
    let queued = insert(store, new_task("acme", "queued"), at(1)).await;
    assert_eq!(
        ids(&claim(store, "n", 1, at(2)).await),
        vec![running.clone()]
    );
    let mut s = new_task("acme", "scheduled");
    s.run_at = Some(at(1_000_000));
    let scheduled = insert(store, s, at(3)).await;

    let pruned = store
        .task_prune(TaskPruneParams {
            finished_before: at(1_000),
            max: 100,
        })
        .await
        .unwrap();
    assert_eq!(pruned, 2);
    for id in [&done, &cancelled] {
        assert!(
            store
                .task_get(TaskGetParams {
                    tenant: None,
                    id: id.clone()
                })
                .await
                .unwrap()
                .is_none()
        );
    }
    for id in [&recent, &queued, &running, &scheduled] {
        assert!(
            store
                .task_get(TaskGetParams {
                    tenant: None,
                    id: id.clone()
                })
                .await
                .unwrap()
                .is_some()
        );
    }
    // Even with a cutoff in the far future, unfinished tasks stay.
    let pruned = store
        .task_prune(TaskPruneParams {
            finished_before: at(1 << 40),
            max: 100,
        })
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    let stats = store.stats(StatsParams::default()).await.unwrap();
    assert_eq!(
        (
            stats.queued(),
            stats.running,
            stats.scheduled,
            stats.succeeded
        ),
        (1, 1, 1, 0)
    );

    // The bound holds.
    for i in 0..5 {
        let id = insert(store, new_task("acme", &format!("b{i}")), at(10)).await;
        store
            .task_cancel(TaskCancelParams {
                tenant: None,
                id,
                now: at(11),
            })
            .await
            .unwrap();
    }
    assert_eq!(
        store
            .task_prune(TaskPruneParams {
                finished_before: at(100),
                max: 3
            })
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        store
            .task_prune(TaskPruneParams {
                finished_before: at(100),
                max: 3
            })
            .await
            .unwrap(),
        2
    );
}

/// Stats count every state, and queued tasks by priority.
pub async fn stats_counts(store: Arc<dyn Store>) {
    let store = &*store;
    assert_eq!(
        store.stats(StatsParams::default()).await.unwrap(),
        crate::Stats::default()
    );
    for (p, n) in [
        (Priority::Critical, 1),
        (Priority::Normal, 2),
        (Priority::Background, 3),
    ] {
        for i in 0..n {
            let mut t = new_task("acme", &format!("{p}{i}"));
            t.priority = p;
            insert(store, t, at(0)).await;
        }
    }
    let mut s = new_task("acme", "s");
    s.run_at = Some(at(100_000));
    insert(store, s, at(0)).await;
    // Claim critical + one normal; finish them in two ways.
    let c = claim(store, "n", 2, at(1)).await;
    complete(
        store,
        &c[0].attempt_id,
        Outcome::Ok,
        Next::Finish(TaskState::Succeeded),
        at(2),
    )
    .await;
    complete(
        store,
        &c[1].attempt_id,
        Outcome::Exit,
        Next::Finish(TaskState::Failed),
        at(2),
    )
    .await;
    let running = claim(store, "n", 1, at(3)).await;
    assert_eq!(running.len(), 1);
    let mut e = new_task("acme", "e");
    e.deadline = Some(at(4));
    insert(store, e, at(0)).await;
    store
        .task_expire(TaskExpireParams {
            now: at(5),
            max: 10,
        })
        .await
        .unwrap();
    let cancel = insert(store, new_task("globex", "c"), at(5)).await;
    store
        .task_cancel(TaskCancelParams {
            tenant: None,
            id: cancel,
            now: at(6),
        })
        .await
        .unwrap();

    let stats = store.stats(StatsParams { tenant: None }).await.unwrap();
    assert_eq!(
        stats,
        crate::Stats {
            queued_by_priority: [0, 0, 0, 0, 3],
            scheduled: 1,
            running: 1,
            succeeded: 1,
            failed: 1,
            cancelled: 1,
            expired: 1,
        }
    );
    let acme = store
        .stats(StatsParams {
            tenant: Some("acme".into()),
        })
        .await
        .unwrap();
    assert_eq!(acme.cancelled, 0);
    assert_eq!(acme.queued(), 3);
}

/// Listing pages through tasks newest first, by state, without repeats or gaps.
pub async fn list_pagination(store: Arc<dyn Store>) {
    let store = &*store;
    let mut all = Vec::new();
    for i in 0..25 {
        all.push(insert(store, new_task("acme", &i.to_string()), at(i)).await);
    }
    insert(store, new_task("globex", "other"), at(100)).await;
    let mut cancelled = Vec::new();
    for id in all.iter().step_by(5) {
        store
            .task_cancel(TaskCancelParams {
                tenant: None,
                id: id.clone(),
                now: at(200),
            })
            .await
            .unwrap();
        cancelled.push(id.clone());
    }
    all.reverse();
    cancelled.reverse();

    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = store
            .task_list(TaskListParams {
                tenant: Some("acme".into()),
                state: None,
                limit: 10,
                cursor: cursor.clone(),
            })
            .await
            .unwrap();
        assert!(page.tasks.len() <= 10);
        seen.extend(page.tasks.iter().map(|t| t.id.clone()));
        pages += 1;
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(seen, all);

    let page = store
        .task_list(TaskListParams {
            tenant: Some("acme".into()),
            state: Some(TaskState::Cancelled),
            limit: 3,
            cursor: None,
        })
        .await
        .unwrap();
    assert_eq!(
        page.tasks.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
        cancelled[..3]
    );
    let rest = store
        .task_list(TaskListParams {
            tenant: Some("acme".into()),
            state: Some(TaskState::Cancelled),
            limit: 3,
            cursor: page.next_cursor,
        })
        .await
        .unwrap();
    assert_eq!(
        rest.tasks.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
        cancelled[3..]
    );
    assert!(rest.tasks.iter().all(|t| t.state == TaskState::Cancelled));
}

/// The next wakeup is the earliest `run_at` among scheduled tasks.
pub async fn next_wakeup(store: Arc<dyn Store>) {
    let store = &*store;
    assert_eq!(store.next_wakeup().await.unwrap(), None);
    insert(store, new_task("acme", "queued"), at(0)).await;
    assert_eq!(store.next_wakeup().await.unwrap(), None);
    for ms in [9_000, 3_000, 7_000] {
        let mut t = new_task("acme", &ms.to_string());
        t.run_at = Some(at(ms));
        insert(store, t, at(0)).await;
    }
    assert_eq!(store.next_wakeup().await.unwrap(), Some(at(3_000)));
    store
        .task_promote(TaskPromoteParams {
            now: at(3_000),
            max: 10,
        })
        .await
        .unwrap();
    assert_eq!(store.next_wakeup().await.unwrap(), Some(at(7_000)));
}

/// The ready signal moves when work becomes claimable.
pub async fn ready_signal_fires(store: Arc<dyn Store>) {
    let store = &*store;
    let mut ready = store.ready_signal();
    ready.borrow_and_update();
    insert(store, new_task("acme", "x"), at(0)).await;
    assert!(
        ready
            .has_changed()
            .expect("the store dropped its ready signal"),
        "insert did not signal"
    );
    ready.borrow_and_update();
    let mut t = new_task("acme", "later");
    t.run_at = Some(at(100));
    insert(store, t, at(0)).await;
    store
        .task_promote(TaskPromoteParams {
            now: at(100),
            max: 10,
        })
        .await
        .unwrap();
    assert!(ready.has_changed().unwrap(), "promote did not signal");
}

/// A policy that does not retry `lost` fails the task on rescue; one that does backs off
/// by the policy's bound through the jitter function.
pub async fn rescue_follows_policy(store: Arc<dyn Store>) {
    let store = &*store;
    let mut keep = new_task("acme", "retries lost");
    keep.retry = RetryPolicy {
        max_attempts: 5,
        backoff_ms: 100,
        max_backoff_ms: 150,
        retry_on: vec![Outcome::Lost],
    };
    let keep = insert(store, keep, at(0)).await;
    let mut drop = new_task("acme", "does not retry lost");
    drop.retry = RetryPolicy {
        retry_on: vec![Outcome::Exit],
        ..RetryPolicy::default()
    };
    let drop = insert(store, drop, at(0)).await;
    assert_eq!(claim(store, "n", 2, at(0)).await.len(), 2);
    let now = LEASE.as_millis() as i64 + 1;
    fn half(bound: u64) -> u64 {
        bound / 2
    }
    let mut rescued = store
        .task_rescue(TaskRescueParams {
            now: at(now),
            max: 1,
            jitter: half,
        })
        .await
        .unwrap();
    assert_eq!(rescued.len(), 1, "max bounds a rescue");
    rescued.extend(
        store
            .task_rescue(TaskRescueParams {
                now: at(now),
                max: 10,
                jitter: half,
            })
            .await
            .unwrap(),
    );
    assert_eq!(rescued.len(), 2);
    let by_id: BTreeMap<_, _> = rescued
        .into_iter()
        .map(|r| (r.task_id.clone(), r))
        .collect();
    assert_eq!(by_id[&keep].state, TaskState::Scheduled);
    assert_eq!(
        by_id[&keep].run_at,
        Some(at(now + 50)),
        "backoff bound 100 ms for attempt 2, halved"
    );
    assert_eq!(by_id[&drop].state, TaskState::Failed);
    assert_eq!(
        get(store, &drop).await.attempts[0]
            .result
            .as_ref()
            .map(|a| a.outcome),
        Some(Outcome::Lost)
    );
}

/// Defines one `#[tokio::test]` per conformance case, named after it, each on a fresh
/// store from `$make`: an `async fn() -> (Arc<dyn Store>, G)` where `G` is kept alive for
/// the test (a temporary directory, a database handle).
#[macro_export]
macro_rules! conformance_tests {
    ($make:path) => {
        $crate::conformance_tests!(@cases $make;
            insert_get_round_trip,
            idempotency_across_calls,
            idempotency_within_batch,
            idempotency_is_per_tenant,
            tenant_isolation,
            modules_put_get_list,
            claim_order_priority_then_fifo,
            claim_aging,
            fair_share_between_tenants,
            fair_share_per_priority,
            fair_share_clock_persists_and_catches_up,
            claim_concurrent_no_duplicates,
            heartbeat_renews,
            fenced_completion_after_rescue,
            retry_schedules_then_promote_queues,
            max_attempts_then_failed,
            requeue_does_not_count,
            cancel_queued,
            cancel_running,
            run_at_honoured,
            deadline_expiry,
            prune_keeps_unfinished,
            stats_counts,
            list_pagination,
            next_wakeup,
            ready_signal_fires,
            rescue_follows_policy
        );
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (store, _guard) = $make().await;
                $crate::testkit::$case(store).await;
            }
        )*
    };
}
