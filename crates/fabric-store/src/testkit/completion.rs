//! Completion and retry: backoff and promotion, running out of attempts, requeue, cancel.

use std::sync::Arc;

use fabric_types::{Outcome, TaskState};

use super::{LEASE, at, claim, complete, get, insert, new_task, no_jitter};
use crate::{
    Next, Store, TaskCancelParams, TaskHeartbeatParams, TaskId, TaskPromoteParams, TaskRescueParams,
};

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
