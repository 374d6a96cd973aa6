//! Leases: concurrent claims never share a task, heartbeats renew, a rescued attempt's
//! completion is fenced off, and a rescue follows the retry policy.

use std::collections::BTreeMap;
use std::sync::Arc;

use fabric_types::{Outcome, RetryPolicy, TaskState};

use super::{LEASE, at, claim, complete, get, insert, new_task, no_jitter};
use crate::{
    AttemptId, NewTask, Next, StatsParams, Store, TaskHeartbeatParams, TaskId, TaskInsertParams,
    TaskPromoteParams, TaskRescueParams,
};

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
