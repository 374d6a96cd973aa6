//! Time-driven maintenance: scheduled tasks, deadline expiry, pruning, the next wakeup
//! and the ready signal.

use std::sync::Arc;

use fabric_types::{Outcome, Priority, TaskState};

use super::{LEASE, at, claim, complete, get, ids, insert, new_task};
use crate::{
    Next, StatsParams, Store, TaskCancelParams, TaskClaimParams, TaskExpireParams, TaskGetParams,
    TaskInsertParams, TaskPromoteParams, TaskPruneParams,
};

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
    let claimed = store
        .task_claim(TaskClaimParams {
            node: "n".into(),
            max: 10,
            lease: LEASE,
            now: at(3_001),
            tenant_cap: None,
        })
        .await
        .unwrap();
    assert_eq!(ids(&claimed.tasks), vec![ok]);
    assert_eq!(
        claimed.expired,
        vec![late.clone()],
        "the claim names what it expired"
    );
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
