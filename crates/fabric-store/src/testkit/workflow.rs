//! Dependencies: chains, fan-in, the cascade of a failure, a cancel or an expiry, the
//! `pass_outputs` document, and the ids an insert refuses.

use std::sync::Arc;

use fabric_types::{Attempt, Outcome, TaskState};

use super::{at, claim, complete, get, insert, new_task};
use crate::{
    AttemptId, Completed, Completion, NewTask, Next, StatsParams, Store, StoreError,
    TaskCancelParams, TaskCompleteParams, TaskExpireParams, TaskId, TaskInsertParams,
};

/// Completes one attempt with `attempt`, `next` and `children` at `now`.
pub(super) async fn complete_with(
    store: &dyn Store,
    attempt_id: &AttemptId,
    attempt: Attempt,
    next: Next,
    children: Vec<NewTask>,
    now: time::OffsetDateTime,
) -> Completed {
    store
        .task_complete(TaskCompleteParams {
            completions: vec![Completion {
                attempt_id: attempt_id.clone(),
                attempt,
                next,
                children,
            }],
            now,
        })
        .await
        .expect("task_complete")
        .remove(0)
}

/// An attempt that ended `ok` with `output`.
pub(super) fn ok_with(output: &[u8]) -> Attempt {
    let mut attempt = Attempt::new(Outcome::Ok);
    attempt.output = output.to_vec();
    attempt
}

/// A task of `tenant` running after `after`.
pub(super) fn after(tenant: &str, input: &str, after: &[&TaskId]) -> NewTask {
    let mut task = new_task(tenant, input);
    task.after = after.iter().map(|id| (*id).clone()).collect();
    task
}

/// Claims the one queued task, which must be `id`, and completes it with `outcome`.
async fn run(store: &dyn Store, id: &TaskId, outcome: Outcome, now: i64) -> Completed {
    let claimed = claim(store, "n", 10, at(now)).await;
    assert_eq!(
        claimed.iter().map(|c| &c.task_id).collect::<Vec<_>>(),
        [id],
        "exactly this task is claimable"
    );
    let next = match outcome {
        Outcome::Ok => Next::Finish(TaskState::Succeeded),
        _ => Next::Finish(TaskState::Failed),
    };
    let done = complete(store, &claimed[0].attempt_id, outcome, next, at(now + 1)).await;
    assert!(done.accepted);
    done
}

/// A chain A → B → C: each waits until the one before succeeded, then queues (and
/// signals); the stored `after` keeps what was given.
pub async fn dependency_chain(store: Arc<dyn Store>) {
    let store = &*store;
    let a = insert(store, new_task("acme", "a"), at(0)).await;
    let b = insert(store, after("acme", "b", &[&a]), at(1)).await;
    let c = insert(store, after("acme", "c", &[&b]), at(2)).await;
    assert_eq!(get(store, &b).await.state, TaskState::Waiting);
    assert_eq!(get(store, &c).await.after, vec![b.clone()]);
    let stats = store.stats(StatsParams::default()).await.unwrap();
    assert_eq!((stats.waiting, stats.queued()), (2, 1));

    let mut ready = store.ready_signal();
    ready.borrow_and_update();
    run(store, &a, Outcome::Ok, 10).await;
    assert!(
        ready.has_changed().unwrap(),
        "a dependent that became queued did not fire the ready signal"
    );
    assert_eq!(get(store, &b).await.state, TaskState::Queued);
    assert_eq!(get(store, &c).await.state, TaskState::Waiting);
    run(store, &b, Outcome::Ok, 20).await;
    run(store, &c, Outcome::Ok, 30).await;
    let c = get(store, &c).await;
    assert_eq!(c.state, TaskState::Succeeded);
    assert_eq!(c.input, b"c", "without pass_outputs the input is its own");
    let stats = store.stats(StatsParams::default()).await.unwrap();
    assert_eq!((stats.waiting, stats.succeeded), (0, 3));
}

/// Fan-in: a task after several waits for the last of them; one inserted after all
/// succeeded queues at once, or is scheduled for its future `run_at`.
pub async fn dependency_fan_in(store: Arc<dyn Store>) {
    let store = &*store;
    let a = insert(store, new_task("acme", "a"), at(0)).await;
    let b = insert(store, new_task("acme", "b"), at(1)).await;
    let join = insert(store, after("acme", "join", &[&a, &b]), at(2)).await;
    let claimed = claim(store, "n", 10, at(10)).await;
    assert_eq!(claimed.len(), 2, "only the two dependencies are claimable");
    let (ca, cb) = if claimed[0].task_id == a {
        (&claimed[0], &claimed[1])
    } else {
        (&claimed[1], &claimed[0])
    };
    let next = Next::Finish(TaskState::Succeeded);
    complete(store, &ca.attempt_id, Outcome::Ok, next, at(11)).await;
    assert_eq!(get(store, &join).await.state, TaskState::Waiting);
    complete(store, &cb.attempt_id, Outcome::Ok, next, at(12)).await;
    assert_eq!(get(store, &join).await.state, TaskState::Queued);

    let late = insert(store, after("acme", "late", &[&a, &b]), at(13)).await;
    assert_eq!(get(store, &late).await.state, TaskState::Queued);
    let mut later = after("acme", "later", &[&a]);
    later.run_at = Some(at(60_000));
    let later = insert(store, later, at(14)).await;
    assert_eq!(get(store, &later).await.state, TaskState::Scheduled);
    let claimed = claim(store, "n", 10, at(20)).await;
    let mut ids: Vec<TaskId> = claimed.into_iter().map(|c| c.task_id).collect();
    ids.sort();
    let mut want = vec![join, late];
    want.sort();
    assert_eq!(ids, want);
}

/// A failure cancels every task waiting on it, transitively, without attempts and with
/// errors naming the dependency; a task inserted after a failed one is cancelled at once.
pub async fn dependency_failure_cascades(store: Arc<dyn Store>) {
    let store = &*store;
    let a = insert(store, new_task("acme", "a"), at(0)).await;
    let b = insert(store, after("acme", "b", &[&a]), at(1)).await;
    let c = insert(store, after("acme", "c", &[&b]), at(2)).await;
    let other = insert(store, new_task("acme", "other"), at(3)).await;
    let d = insert(store, after("acme", "d", &[&other, &c]), at(4)).await;
    let claimed = claim(store, "n", 10, at(10)).await;
    let ca = claimed.iter().find(|t| t.task_id == a).unwrap();
    let done = complete(
        store,
        &ca.attempt_id,
        Outcome::Trap,
        Next::Finish(TaskState::Failed),
        at(11),
    )
    .await;
    assert_eq!(done.state, Some(TaskState::Failed));
    for (id, dependency, state) in [
        (&b, &a, "failed"),
        (&c, &b, "cancelled"),
        (&d, &c, "cancelled"),
    ] {
        let task = get(store, id).await;
        assert_eq!(task.state, TaskState::Cancelled, "{id}");
        assert!(task.attempts.is_empty(), "{id} got an attempt");
        assert_eq!(
            task.error.as_deref(),
            Some(format!("dependency {dependency} ended {state}").as_str())
        );
        assert_eq!(task.finished_at, Some(at(11)));
    }
    let e = insert(store, after("acme", "e", &[&a]), at(20)).await;
    let e = get(store, &e).await;
    assert_eq!(e.state, TaskState::Cancelled);
    assert_eq!(
        e.error.as_deref(),
        Some(format!("dependency {a} ended failed").as_str())
    );
    let stats = store.stats(StatsParams::default()).await.unwrap();
    assert_eq!((stats.waiting, stats.cancelled), (0, 4));
}

/// Cancelling a task cancels the tasks waiting on it, transitively; a waiting task can be
/// cancelled itself; a waiting task past its deadline expires, and its dependents are
/// cancelled.
pub async fn dependency_cancel_and_expiry_cascade(store: Arc<dyn Store>) {
    let store = &*store;
    let a = insert(store, new_task("acme", "a"), at(0)).await;
    let b = insert(store, after("acme", "b", &[&a]), at(1)).await;
    let c = insert(store, after("acme", "c", &[&b]), at(2)).await;
    let cancelled = store
        .task_cancel(TaskCancelParams {
            tenant: Some("acme".into()),
            id: a.clone(),
            now: at(5),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cancelled.state, TaskState::Cancelled);
    for id in [&b, &c] {
        assert_eq!(get(store, id).await.state, TaskState::Cancelled, "{id}");
    }

    let x = insert(store, new_task("acme", "x"), at(10)).await;
    let y = insert(store, after("acme", "y", &[&x]), at(11)).await;
    let y = store
        .task_cancel(TaskCancelParams {
            tenant: None,
            id: y,
            now: at(12),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        y.state,
        TaskState::Cancelled,
        "a waiting task is cancelled at once"
    );
    assert_eq!(
        get(store, &x).await.state,
        TaskState::Queued,
        "its dependency is not"
    );

    let mut w = after("acme", "w", &[&x]);
    w.deadline = Some(at(1_000));
    let w = insert(store, w, at(20)).await;
    let v = insert(store, after("acme", "v", &[&w]), at(21)).await;
    let expired = store
        .task_expire(TaskExpireParams {
            now: at(1_001),
            max: 10,
        })
        .await
        .unwrap();
    assert_eq!(expired, vec![w.clone()]);
    assert_eq!(get(store, &w).await.state, TaskState::Expired);
    let v = get(store, &v).await;
    assert_eq!(v.state, TaskState::Cancelled);
    assert_eq!(
        v.error.as_deref(),
        Some(format!("dependency {w} ended expired").as_str())
    );
}

/// `pass_outputs`: the input becomes `{"input", "after": [{"id", "state", "output"}]}` in
/// the order of `after`, with `output_base64` for bytes that are not UTF-8 — built when
/// the task becomes ready, or at insert when its dependencies already succeeded.
pub async fn pass_outputs_document(store: Arc<dyn Store>) {
    let store = &*store;
    let a = insert(store, new_task("acme", "a"), at(0)).await;
    let b = insert(store, new_task("acme", "b"), at(1)).await;
    let mut join = after("acme", "own \"input\"", &[&b, &a]);
    join.pass_outputs = true;
    let join = insert(store, join, at(2)).await;
    assert_eq!(get(store, &join).await.input, b"own \"input\"");
    let claimed = claim(store, "n", 10, at(10)).await;
    for c in &claimed {
        let output: &[u8] = if c.task_id == a {
            b"hello"
        } else {
            &[0xff, 0x00]
        };
        let next = Next::Finish(TaskState::Succeeded);
        complete_with(
            store,
            &c.attempt_id,
            ok_with(output),
            next,
            Vec::new(),
            at(11),
        )
        .await;
    }
    let want = serde_json::json!({
        "input": "own \"input\"",
        "after": [
            {"id": b.to_string(), "state": "succeeded", "output_base64": "/wA="},
            {"id": a.to_string(), "state": "succeeded", "output": "hello"},
        ]
    });
    let task = get(store, &join).await;
    assert_eq!(task.state, TaskState::Queued);
    assert!(task.pass_outputs);
    let input: serde_json::Value = serde_json::from_slice(&task.input).unwrap();
    assert_eq!(input, want);
    let claimed = claim(store, "n", 1, at(20)).await.remove(0);
    assert_eq!(claimed.input, task.input, "the worker gets the document");

    let mut late = after("acme", "own \"input\"", &[&b, &a]);
    late.pass_outputs = true;
    let late = insert(store, late, at(30)).await;
    let input: serde_json::Value = serde_json::from_slice(&get(store, &late).await.input).unwrap();
    assert_eq!(
        input, want,
        "built at insert when the dependencies already succeeded"
    );
}

/// `after` may name stored tasks of the tenant or earlier tasks of the batch (by their
/// given ids); anything else fails the whole batch naming the index and id, as does a
/// given id that is already stored.
pub async fn unknown_after_refused(store: Arc<dyn Store>) {
    let store = &*store;
    let theirs = insert(store, new_task("globex", "theirs"), at(0)).await;
    let insert_all = |tasks: Vec<NewTask>| async move {
        store
            .task_insert(TaskInsertParams { tasks, now: at(1) })
            .await
    };
    let missing = TaskId::from("01NOSUCHTASK0000000000000");
    for (bad, named) in [(&missing, &missing), (&theirs, &theirs)] {
        let err = insert_all(vec![new_task("acme", "ok"), after("acme", "bad", &[bad])])
            .await
            .unwrap_err();
        match err {
            StoreError::UnknownDependency { index, id, .. } => {
                assert_eq!((index, id.as_str()), (1, named.as_str()));
            }
            other => panic!("expected UnknownDependency, got {other:?}"),
        }
    }
    let stats = store
        .stats(StatsParams {
            tenant: Some("acme".into()),
        })
        .await
        .unwrap();
    assert_eq!(stats.queued(), 0, "a refused batch stores nothing");

    // Earlier in the batch by its given id: fine; a later one: unknown.
    let first_id = TaskId::from("01GIVENFIRST00000000000000");
    let mut first = new_task("acme", "first");
    first.id = Some(first_id.clone());
    let second = after("acme", "second", &[&first_id]);
    let out = insert_all(vec![first.clone(), second]).await.unwrap();
    assert_eq!(out[0].id, first_id, "the given id is used");
    assert_eq!(out[1].state, TaskState::Waiting);

    let mut early = after(
        "acme",
        "early",
        &[&TaskId::from("01GIVENLATER00000000000000")],
    );
    early.id = None;
    let mut later = new_task("acme", "later");
    later.id = Some(TaskId::from("01GIVENLATER00000000000000"));
    let err = insert_all(vec![early, later]).await.unwrap_err();
    assert!(
        matches!(err, StoreError::UnknownDependency { index: 0, .. }),
        "{err:?}"
    );
    let err = insert_all(vec![first]).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::DuplicateTaskId { index: 0, id } if id == first_id.as_str()),
        "{err:?}"
    );
    let mut too_many = new_task("acme", "many");
    too_many.after = (0..=fabric_types::workflow::MAX_AFTER)
        .map(|i| TaskId::from(format!("T{i}")))
        .collect();
    let err = insert_all(vec![too_many]).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidArgument(_)), "{err:?}");
}
