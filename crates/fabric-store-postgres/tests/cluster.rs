//! What only a shared database has to get right: several stores (nodes, each with its own
//! pool) on one schema claiming, completing, rescuing, inserting and electing a leader at
//! once; wake-ups between nodes; migrations racing at start; recovery from killed
//! connections; and test schemas that do not outlive their tests.

mod util;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use fabric_store::testkit::{LEASE, at, claim, complete, get, insert, new_task};
use fabric_store::{
    AttemptId, Completion, LeaderAcquireParams, LeaderReleaseParams, ModuleDeleteParams,
    ModuleDeleted, ModuleGetParams, ModuleKind, ModulePutParams, ModuleRef, NewTask, Next,
    StatsParams, Store, StoreError, TaskCompleteParams, TaskHeartbeatParams, TaskId,
    TaskInsertParams, TaskPromoteParams, TaskRescueParams,
};
use fabric_store_postgres::{PostgresOptions, PostgresStore, SCHEMA_VERSION};
use fabric_types::{Attempt, ModuleId, Outcome, TaskState};
use tokio::time::timeout;

/// How long a test waits for a signal that should come within milliseconds.
const PATIENCE: Duration = Duration::from_secs(15);

/// Two stores (two pools: two nodes) on one fresh schema, and its guard.
async fn two_nodes() -> (Arc<PostgresStore>, Arc<PostgresStore>, util::SchemaGuard) {
    let (a, guard) = util::store().await;
    let b = util::connect(util::options(&guard.schema)).await;
    (Arc::new(a), Arc::new(b), guard)
}

async fn insert_many(store: &dyn Store, n: usize, now_ms: i64) -> Vec<TaskId> {
    let tasks = (0..n).map(|i| new_task("acme", &i.to_string())).collect();
    store
        .task_insert(TaskInsertParams {
            tasks,
            now: at(now_ms),
        })
        .await
        .expect("task_insert")
        .into_iter()
        .map(|i| i.id)
        .collect()
}

/// A module delete on one node racing an insert naming the module on another: each round
/// ends with the module kept and the task stored (the delete refused, one unfinished task),
/// or the module gone and the insert refused; never a stored task whose module is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_delete_racing_an_insert_on_another_node_never_orphans_the_task() {
    let (a, b, _guard) = two_nodes().await;
    let (mut kept, mut deleted) = (0, 0);
    for round in 0..40i64 {
        let bytes = format!("module {round}").into_bytes();
        let id = ModuleId::of(&bytes);
        let put = ModulePutParams {
            tenant: "acme".into(),
            id,
            name: None,
            bytes,
            kind: ModuleKind::Module,
            now: at(round),
        };
        a.module_put(put).await.unwrap();
        let inserting = b.clone();
        let insert = tokio::spawn(async move {
            let task = NewTask::new("acme", id, b"x".to_vec());
            let params = TaskInsertParams {
                tasks: vec![task],
                now: at(round),
            };
            inserting.task_insert(params).await
        });
        let deleting = a.clone();
        let delete = tokio::spawn(async move {
            let params = ModuleDeleteParams {
                tenant: "acme".into(),
                module: ModuleRef::Id(id),
            };
            deleting.module_delete(params).await
        });
        let (inserted, outcome) = (insert.await.unwrap(), delete.await.unwrap().unwrap());
        let left = a
            .module_get(ModuleGetParams {
                tenant: "acme".into(),
                module: ModuleRef::Id(id),
            })
            .await
            .unwrap()
            .is_some();
        match (inserted, outcome) {
            (Ok(_), ModuleDeleted::InUse { unfinished: 1, .. }) if left => kept += 1,
            (Err(StoreError::ModuleNotFound { .. }), ModuleDeleted::Deleted(_)) if !left => {
                deleted += 1
            }
            other => panic!("round {round}: module left {left}, {other:?}"),
        }
    }
    eprintln!("of 40 rounds: the insert first {kept}, the delete first {deleted}");
}

fn lease_ms() -> i64 {
    LEASE.as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_claiming_at_once_never_share_a_task() {
    const TASKS: usize = 2_000;
    let (a, b, guard) = two_nodes().await;
    for _ in 0..4 {
        insert_many(&*a, TASKS / 4, 0).await;
    }
    let claim_loop = |store: Arc<PostgresStore>, node: &'static str| {
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let claimed = claim(&*store, node, 16, at(1)).await;
                if claimed.is_empty() {
                    break mine;
                }
                mine.extend(claimed.into_iter().map(|c| c.task_id));
            }
        })
    };
    let (from_a, from_b) = (
        claim_loop(a.clone(), "node-a"),
        claim_loop(b.clone(), "node-b"),
    );
    let (from_a, from_b) = (from_a.await.unwrap(), from_b.await.unwrap());
    assert!(
        !from_a.is_empty() && !from_b.is_empty(),
        "one node claimed everything ({} + {}): the claims did not overlap in time",
        from_a.len(),
        from_b.len()
    );
    let a_set: HashSet<_> = from_a.iter().cloned().collect();
    let b_set: HashSet<_> = from_b.iter().cloned().collect();
    assert_eq!(a_set.len(), from_a.len(), "node a got a task twice");
    assert_eq!(b_set.len(), from_b.len(), "node b got a task twice");
    assert!(a_set.is_disjoint(&b_set), "a task was handed to both nodes");
    assert_eq!(
        a_set.len() + b_set.len(),
        TASKS,
        "some task was never claimed"
    );

    assert_eq!(
        a.stats(StatsParams::default()).await.unwrap().running,
        TASKS as u64
    );
    let raw = util::raw(&util::url()).await.unwrap();
    let row = raw
        .query_one(
            &format!(
                "SELECT count(*), count(DISTINCT task_id), max(number) FROM {}.attempts",
                guard.schema
            ),
            &[],
        )
        .await
        .unwrap();
    let (attempts, tasks, max_number): (i64, i64, i32) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        (attempts, tasks, max_number),
        (TASKS as i64, TASKS as i64, 1),
        "one attempt per task"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_larger_than_one_statement_keeps_claim_order() {
    let (store, _guard) = util::store().await;
    let ids = insert_many(&store, 2_500, 0).await;
    let claimed = claim(&store, "n", 2_200, at(1)).await;
    let got: Vec<TaskId> = claimed.iter().map(|c| c.task_id.clone()).collect();
    assert_eq!(
        got,
        ids[..2_200],
        "FIFO within a priority, across statements"
    );
    assert_eq!(claim(&store, "n", 1_000, at(1)).await.len(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_attempt_cannot_complete_after_another_node_rescued_its_task() {
    let (a, b, _guard) = two_nodes().await;
    let id = fabric_store::testkit::insert(&*a, new_task("acme", "x"), at(0)).await;
    let old = claim(&*a, "node-a", 1, at(0)).await.remove(0);

    // Node a stops heartbeating; node b's rescuer takes the task back and retries it now.
    let rescued = b
        .task_rescue(TaskRescueParams {
            now: at(lease_ms() + 1),
            max: 10,
            jitter: |_| 0,
        })
        .await
        .unwrap();
    assert_eq!(rescued.len(), 1);
    assert_eq!(rescued[0].state, TaskState::Queued);
    let hb = a
        .task_heartbeat(TaskHeartbeatParams {
            attempt_ids: vec![old.attempt_id.clone()],
            lease_until: at(lease_ms() + 60_000),
            now: at(lease_ms() + 2),
        })
        .await
        .unwrap();
    assert!(hb.held.is_empty(), "a rescued attempt still holds its task");

    let new = claim(&*b, "node-b", 1, at(lease_ms() + 3)).await.remove(0);
    assert_eq!(new.attempt_number, 2);
    // Node a wakes up and reports success: refused, the task stays with node b's attempt.
    let late = complete(
        &*a,
        &old.attempt_id,
        Outcome::Ok,
        Next::Finish(TaskState::Succeeded),
        at(lease_ms() + 4),
    )
    .await;
    assert!(!late.accepted, "a stale attempt's completion was accepted");
    assert_eq!(late.task_id, Some(id.clone()));
    assert_eq!(late.state, Some(TaskState::Running));
    let task = get(&*a, &id).await;
    assert_eq!(task.state, TaskState::Running);
    assert_eq!(
        task.attempts[0].result.as_ref().map(|r| r.outcome),
        Some(Outcome::Lost)
    );
    assert_eq!(task.attempts[1].result, None);

    let done = complete(
        &*b,
        &new.attempt_id,
        Outcome::Ok,
        Next::Finish(TaskState::Succeeded),
        at(lease_ms() + 5),
    )
    .await;
    assert!(done.accepted);
    assert_eq!(get(&*a, &id).await.state, TaskState::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_racing_a_rescue_are_applied_exactly_once() {
    const TASKS: usize = 200;
    let (a, b, _guard) = two_nodes().await;
    insert_many(&*a, TASKS, 0).await;
    let claimed = claim(&*a, "node-a", TASKS, at(0)).await;
    assert_eq!(claimed.len(), TASKS);
    let completions: Vec<Completion> = claimed
        .iter()
        .map(|c| Completion {
            children: Vec::new(),
            attempt_id: c.attempt_id.clone(),
            attempt: Attempt::new(Outcome::Ok),
            next: Next::Finish(TaskState::Succeeded),
        })
        .collect();
    // Node a completes everything just as node b's rescuer finds the leases ended.
    let completing = {
        let a = a.clone();
        tokio::spawn(async move {
            let mut done = Vec::new();
            for chunk in completions.chunks(20) {
                let params = TaskCompleteParams {
                    completions: chunk.to_vec(),
                    now: at(lease_ms() + 1),
                };
                done.extend(a.task_complete(params).await.unwrap());
            }
            done
        })
    };
    let rescuing = {
        let b = b.clone();
        tokio::spawn(async move {
            let mut rescued = Vec::new();
            loop {
                let params = TaskRescueParams {
                    now: at(lease_ms() + 1),
                    max: 15,
                    jitter: |_| 0,
                };
                let batch = b.task_rescue(params).await.unwrap();
                if batch.is_empty() {
                    break rescued;
                }
                rescued.extend(batch);
            }
        })
    };
    let (done, rescued) = (completing.await.unwrap(), rescuing.await.unwrap());
    let accepted: HashSet<AttemptId> = done
        .iter()
        .filter(|d| d.accepted)
        .map(|d| d.attempt_id.clone())
        .collect();
    let lost: HashSet<AttemptId> = rescued.iter().map(|r| r.attempt_id.clone()).collect();
    assert!(
        accepted.is_disjoint(&lost),
        "an attempt was both completed and rescued"
    );
    assert_eq!(
        accepted.len() + lost.len(),
        TASKS,
        "every attempt ends exactly once ({} completed, {} rescued)",
        accepted.len(),
        lost.len()
    );
    for c in &claimed {
        let task = get(&*a, &c.task_id).await;
        let first = task.attempts[0].result.as_ref().map(|r| r.outcome);
        if accepted.contains(&c.attempt_id) {
            assert_eq!(task.state, TaskState::Succeeded);
            assert_eq!(first, Some(Outcome::Ok));
        } else {
            assert_eq!(task.state, TaskState::Queued);
            assert_eq!(first, Some(Outcome::Lost));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_batch_of_completions_applies_each_fate() {
    let (store, _guard) = util::store().await;
    let ids = insert_many(&store, 300, 0).await;
    let claimed = claim(&store, "n", 300, at(0)).await;
    let mut completions: Vec<Completion> = claimed
        .iter()
        .enumerate()
        .map(|(i, c)| Completion {
            children: Vec::new(),
            attempt_id: c.attempt_id.clone(),
            attempt: Attempt::new(Outcome::Trap),
            next: match i % 3 {
                0 => Next::Finish(TaskState::Failed),
                1 => Next::Retry { run_at: at(1_000) },
                _ => Next::Requeue,
            },
        })
        .collect();
    completions.push(completions[0].clone());
    completions.push(Completion {
        children: Vec::new(),
        attempt_id: AttemptId::from("never-claimed"),
        attempt: Attempt::new(Outcome::Ok),
        next: Next::Finish(TaskState::Succeeded),
    });
    let done = store
        .task_complete(TaskCompleteParams {
            completions,
            now: at(1_000),
        })
        .await
        .unwrap();
    assert_eq!(done.len(), 302);
    for (i, d) in done[..300].iter().enumerate() {
        let want = [TaskState::Failed, TaskState::Queued, TaskState::Queued][i % 3];
        assert!(d.accepted, "completion {i} refused");
        assert_eq!(d.state, Some(want), "completion {i}");
        assert_eq!(d.task_id.as_ref(), Some(&ids[i]));
    }
    assert!(
        !done[300].accepted,
        "a second completion in one batch was accepted"
    );
    assert_eq!(done[300].state, Some(TaskState::Failed));
    assert!(!done[301].accepted);
    assert_eq!((done[301].task_id.clone(), done[301].state), (None, None));

    let stats = store.stats(StatsParams::default()).await.unwrap();
    assert_eq!((stats.failed, stats.queued()), (100, 200));
    // Requeued tasks kept their place in line (enqueued at 0 to 299: fair share spreads a
    // batch one millisecond a task) and did not count the attempt; retried ones joined at
    // 1,000 as attempt 2.
    let again = claim(&store, "n", 200, at(1_010)).await;
    let numbers: Vec<u32> = again.iter().map(|c| c.attempt_number).collect();
    assert_eq!(numbers[..100], [1; 100]);
    assert_eq!(numbers[100..], [2; 100]);
    assert!(
        again[..100]
            .iter()
            .all(|c| get_index(&ids, &c.task_id) % 3 == 2)
    );
    let requeued = get(&store, &again[0].task_id).await;
    assert_eq!(
        requeued.attempts.len(),
        1,
        "the requeued attempt was deleted"
    );
}

/// Nodes inserting for one tenant at once take turns on its fair-share clock: the tasks of
/// all their batches take distinct milliseconds of virtual time, `0..N` exactly, so the
/// tenant's next task is keyed at `N` (behind another tenant's task at `N - 1`). A lost
/// update of the clock would key it earlier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_inserting_for_one_tenant_at_once_share_its_fair_clock() {
    const INSERTERS_PER_NODE: usize = 4;
    const BATCHES: usize = 10;
    const BATCH: usize = 25;
    const TASKS: usize = 2 * INSERTERS_PER_NODE * BATCHES * BATCH;
    let (a, b, _guard) = two_nodes().await;
    let mut inserters = tokio::task::JoinSet::new();
    for node in [&a, &b] {
        for _ in 0..INSERTERS_PER_NODE {
            let store = Arc::clone(node);
            inserters.spawn(async move {
                for _ in 0..BATCHES {
                    insert_many(&*store, BATCH, 0).await;
                }
            });
        }
    }
    inserters.join_all().await;
    let y = insert(&*b, new_task("y", "y"), at(TASKS as i64 - 1)).await;
    let next = insert(&*a, new_task("acme", "next"), at(0)).await;
    let got: Vec<TaskId> = claim(&*a, "n", TASKS + 10, at(TASKS as i64))
        .await
        .into_iter()
        .map(|c| c.task_id)
        .collect();
    assert_eq!(got.len(), TASKS + 2);
    assert_eq!(got[TASKS..], [y, next]);
}

fn get_index(ids: &[TaskId], id: &TaskId) -> usize {
    ids.iter().position(|i| i == id).expect("a known task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_shared_by_racing_nodes_store_one_task_each() {
    let (a, b, _guard) = two_nodes().await;
    for round in 0..3 {
        let batch = |reverse: bool| {
            let mut tasks: Vec<_> = (0..50)
                .map(|i| {
                    let mut t = new_task("acme", &format!("{round}-{i}"));
                    t.idempotency_key = Some(format!("{round}-{i}"));
                    t
                })
                .collect();
            if reverse {
                tasks.reverse();
            }
            TaskInsertParams {
                tasks,
                now: at(round),
            }
        };
        let (from_a, from_b) =
            tokio::join!(a.task_insert(batch(false)), b.task_insert(batch(true)));
        let (from_a, mut from_b) = (from_a.unwrap(), from_b.unwrap());
        from_b.reverse();
        for (x, y) in from_a.iter().zip(&from_b) {
            assert_eq!(x.id, y.id, "two tasks for one key");
            assert!(
                x.deduplicated != y.deduplicated,
                "exactly one node stores each key: {x:?} {y:?}"
            );
        }
    }
    assert_eq!(a.stats(StatsParams::default()).await.unwrap().queued(), 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_made_ready_on_one_node_wakes_the_others() {
    let (a, b, _guard) = two_nodes().await;
    assert!(b.capabilities().listen_notify && b.capabilities().multi_node);
    let mut ready = b.ready_signal();
    ready.borrow_and_update();
    fabric_store::testkit::insert(&*a, new_task("acme", "now"), at(0)).await;
    timeout(PATIENCE, ready.changed())
        .await
        .expect("node b was not woken by node a's insert")
        .unwrap();

    let mut later = new_task("acme", "later");
    later.run_at = Some(at(1_000));
    fabric_store::testkit::insert(&*a, later, at(0)).await;
    ready.borrow_and_update();
    let promoted = a
        .task_promote(TaskPromoteParams {
            now: at(1_000),
            max: 10,
        })
        .await
        .unwrap();
    assert_eq!(promoted.len(), 1);
    timeout(PATIENCE, ready.changed())
        .await
        .expect("node b was not woken by node a's promotion")
        .unwrap();
}

/// Collects notifications for `schema` until `sentinel` arrives; returns how many.
async fn count_until(
    notes: &mut tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>,
    schema: &str,
    sentinel: &str,
) -> usize {
    let mut count = 0;
    loop {
        let n = timeout(PATIENCE, notes.recv())
            .await
            .expect("the sentinel notification did not arrive")
            .expect("the notification connection ended");
        if n.payload() == sentinel {
            return count;
        }
        if n.channel() == "fabric_ready" && n.payload() == schema {
            count += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_sends_one_notify_however_many_tasks_it_makes_ready() {
    // Each write asks for one notification after it commits; `notify_flush` waits until it
    // went out, and the sentinel marks the end of what was sent.
    let (store, guard) = util::store().await;
    let (listener, mut notes) = util::raw_with_notifications(&util::url()).await;
    listener.batch_execute("LISTEN fabric_ready").await.unwrap();
    let sentinel = |name: &str| format!("sentinel-{}-{name}", guard.schema);
    let mark = |name: &'static str| {
        let (listener, payload) = (&listener, sentinel(name));
        async move {
            listener
                .execute("SELECT pg_notify('fabric_ready', $1)", &[&payload])
                .await
                .unwrap();
        }
    };

    insert_many(&store, 100, 0).await;
    store.notify_flush().await;
    mark("insert").await;
    assert_eq!(
        count_until(&mut notes, &guard.schema, &sentinel("insert")).await,
        1
    );

    let claimed = claim(&store, "n", 100, at(1)).await;
    let completions = claimed
        .iter()
        .map(|c| Completion {
            children: Vec::new(),
            attempt_id: c.attempt_id.clone(),
            attempt: Attempt::new(Outcome::Exit),
            next: Next::Retry { run_at: at(2) },
        })
        .collect();
    store
        .task_complete(TaskCompleteParams {
            completions,
            now: at(2),
        })
        .await
        .unwrap();
    store.notify_flush().await;
    mark("complete").await;
    assert_eq!(
        count_until(&mut notes, &guard.schema, &sentinel("complete")).await,
        1
    );

    let scheduled = (0..50)
        .map(|i| {
            let mut t = new_task("acme", &i.to_string());
            t.run_at = Some(at(1_000));
            t
        })
        .collect();
    store
        .task_insert(TaskInsertParams {
            tasks: scheduled,
            now: at(3),
        })
        .await
        .unwrap();
    let promoted = store
        .task_promote(TaskPromoteParams {
            now: at(1_000),
            max: 100,
        })
        .await
        .unwrap();
    assert_eq!(promoted.len(), 50);
    store.notify_flush().await;
    mark("promote").await;
    assert_eq!(
        count_until(&mut notes, &guard.schema, &sentinel("promote")).await,
        1,
        "inserting scheduled tasks notifies nobody; promoting 50 notifies once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_and_listener_recover_after_the_server_kills_their_connections() {
    let (other, guard) = util::store().await;
    let app = format!("fabric-kill-{:x}", rand::random::<u32>());
    let store = util::connect(PostgresOptions {
        pool_size: 2,
        application_name: app.clone(),
        ..util::options(&guard.schema)
    })
    .await;
    store.stats(StatsParams::default()).await.unwrap();
    let mut ready = store.ready_signal();
    ready.borrow_and_update();

    // What a server restart does to this node: every connection is terminated.
    let raw = util::raw(&util::url()).await.unwrap();
    let killed: i64 = raw
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        killed >= 2,
        "expected a pooled and a listening connection, killed {killed}"
    );

    // The pool: an operation may fail, but only as retryable, and the pool heals.
    let mut failures = 0;
    loop {
        match store.stats(StatsParams::default()).await {
            Ok(_) => break,
            Err(e) => {
                assert!(e.is_transient(), "not retryable: {}", util::describe(&e));
                failures += 1;
                assert!(
                    failures <= 4,
                    "the pool did not recover: {}",
                    util::describe(&e)
                );
                tokio::task::yield_now().await;
            }
        }
    }
    // The listener: it reconnects (and wakes the node, since it may have missed work)...
    timeout(PATIENCE, ready.changed())
        .await
        .expect("the listener did not reconnect")
        .unwrap();
    ready.borrow_and_update();
    // ...and hears other nodes again.
    fabric_store::testkit::insert(&other, new_task("acme", "after"), at(0)).await;
    timeout(PATIENCE, ready.changed())
        .await
        .expect("the reconnected listener missed another node's insert")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_migrate_once() {
    let guard = util::SchemaGuard::new(util::fresh_schema());
    let mut starting = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let schema = guard.schema.clone();
        starting.spawn(async move { util::connect(util::options(&schema)).await });
    }
    let stores = starting.join_all().await;
    assert_eq!(stores.len(), 4);
    let raw = util::raw(&util::url()).await.unwrap();
    let row = raw
        .query_one(
            &format!(
                "SELECT count(*), max(version) FROM {}.schema_migrations",
                guard.schema
            ),
            &[],
        )
        .await
        .unwrap();
    // Every migration once (one file each).
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".sql")
        })
        .count() as i64;
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, i64>(1)),
        (files, SCHEMA_VERSION)
    );
    // And they work on the same tables.
    let id = fabric_store::testkit::insert(&stores[0], new_task("acme", "x"), at(0)).await;
    assert_eq!(claim(&stores[3], "n", 1, at(0)).await[0].task_id, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_from_a_newer_build_is_refused() {
    let (store, guard) = util::store().await;
    drop(store);
    let raw = util::raw(&util::url()).await.unwrap();
    raw.execute(
        &format!(
            "INSERT INTO {}.schema_migrations (version, name) VALUES ($1, 'from the future')",
            guard.schema
        ),
        &[&(SCHEMA_VERSION + 1)],
    )
    .await
    .unwrap();
    match PostgresStore::connect(&util::url(), util::options(&guard.schema)).await {
        Err(StoreError::SchemaTooNew { found, supported }) => {
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_options_and_unreachable_servers_are_typed_errors() {
    let unreachable = PostgresStore::connect(
        "postgres://postgres@127.0.0.1:1/test",
        PostgresOptions {
            connect_timeout: Duration::from_secs(2),
            acquire_timeout: Duration::from_secs(3),
            ..PostgresOptions::default().with_schema(util::fresh_schema())
        },
    )
    .await;
    match unreachable {
        Err(e) => assert!(e.is_transient(), "{}", util::describe(&e)),
        Ok(_) => panic!("connected to a closed port"),
    }
    let bad_url = PostgresStore::connect("postgres://[::1", PostgresOptions::default()).await;
    assert!(
        matches!(bad_url, Err(StoreError::InvalidArgument(_))),
        "{bad_url:?}"
    );
    let bad_schema = PostgresStore::connect(
        &util::url(),
        PostgresOptions::default().with_schema("Robert'); DROP TABLE students;--"),
    )
    .await;
    assert!(
        matches!(bad_schema, Err(StoreError::InvalidArgument(_))),
        "{bad_schema:?}"
    );
}

/// Asks for the maintenance leadership for `node` at `now`.
async fn acquire(
    store: &PostgresStore,
    node: &str,
    ttl: Duration,
    now: time::OffsetDateTime,
) -> Result<bool, StoreError> {
    store
        .leader_acquire(LeaderAcquireParams {
            node: node.into(),
            ttl,
            now,
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_lease_elects_one_node_at_a_time() {
    let (a, b, _guard) = two_nodes().await;
    let ttl = Duration::from_secs(10);
    assert!(acquire(&a, "a", ttl, at(0)).await.unwrap());
    assert!(!acquire(&b, "b", ttl, at(1)).await.unwrap());
    assert!(acquire(&a, "a", ttl, at(5_000)).await.unwrap(), "a renews");
    let leader = b.leader(at(6_000)).await.unwrap().expect("a leads");
    assert_eq!(
        (leader.node.as_str(), leader.acquired_at, leader.lease_until),
        ("a", at(0), at(15_000))
    );
    assert!(
        !acquire(&b, "b", ttl, at(15_000)).await.unwrap(),
        "a's lease still holds"
    );
    assert!(
        acquire(&b, "b", ttl, at(15_001)).await.unwrap(),
        "a's lease ended"
    );
    assert!(!acquire(&a, "a", ttl, at(15_002)).await.unwrap());
    assert_eq!(a.leader(at(15_002)).await.unwrap().unwrap().node, "b");
    assert!(
        !a.leader_release(LeaderReleaseParams { node: "a".into() })
            .await
            .unwrap(),
        "a does not hold it"
    );
    assert!(
        b.leader_release(LeaderReleaseParams { node: "b".into() })
            .await
            .unwrap()
    );
    assert_eq!(a.leader(at(15_003)).await.unwrap(), None);

    // Many nodes asking at once: exactly one wins.
    let mut asking = tokio::task::JoinSet::new();
    for i in 0..8 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        asking.spawn(async move {
            acquire(&store, &format!("n{i}"), ttl, at(20_000))
                .await
                .unwrap()
        });
    }
    let won = asking.join_all().await.into_iter().filter(|w| *w).count();
    assert_eq!(won, 1);
    assert_eq!(a.leader(at(30_001)).await.unwrap(), None, "leases end");
    assert!(matches!(
        acquire(&a, "a", Duration::ZERO, at(0)).await,
        Err(StoreError::InvalidArgument(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_schemas_are_dropped_after_the_test_even_when_it_panics() {
    let (store, guard) = util::store().await;
    let schema = guard.schema.clone();
    assert!(util::schema_exists(&schema).await);
    drop(store);
    drop(guard);
    assert!(
        !util::schema_exists(&schema).await,
        "a passing test left {schema}"
    );

    let schema = util::fresh_schema();
    let inner = schema.clone();
    let panicked = tokio::spawn(async move {
        let _guard = util::SchemaGuard::new(inner.clone());
        let store = util::connect(util::options(&inner)).await;
        fabric_store::testkit::insert(&store, new_task("acme", "x"), at(0)).await;
        assert!(util::schema_exists(&inner).await);
        panic!("a failing test (on purpose)");
    })
    .await;
    assert!(panicked.is_err_and(|e| e.is_panic()));
    assert!(
        !util::schema_exists(&schema).await,
        "a panicking test left {schema}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_listen_a_store_opens_no_listener_and_a_closed_store_refuses_work() {
    let guard = util::SchemaGuard::new(util::fresh_schema());
    let app = format!("fabric-quiet-{:x}", rand::random::<u32>());
    let store = util::connect(PostgresOptions {
        listen: false,
        pool_size: 1,
        application_name: app.clone(),
        ..util::options(&guard.schema)
    })
    .await;
    assert!(!store.capabilities().listen_notify);
    assert!(store.capabilities().multi_node);
    let mut ready = store.ready_signal();
    ready.borrow_and_update();
    fabric_store::testkit::insert(&store, new_task("acme", "x"), at(0)).await;
    assert!(ready.has_changed().unwrap(), "its own writes still signal");
    let raw = util::raw(&util::url()).await.unwrap();
    let connections: i64 = raw
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(connections, 1, "one pooled connection and no listener");

    store.close();
    match store.stats(StatsParams::default()).await {
        Err(StoreError::Closed(_)) => {}
        other => panic!("a closed store answered {other:?}"),
    }
}
