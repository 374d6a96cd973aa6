//! The order of claims: priority, FIFO, aging, fair share between tenants and tenant caps.

use std::sync::Arc;

use fabric_types::Priority;
use time::OffsetDateTime;

use super::{LEASE, at, claim, ids, insert, new_task};
use crate::{
    ClaimedTask, NewTask, Store, TaskClaimParams, TaskId, TaskInsertParams, TaskPromoteParams,
    TenantCap,
};

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

/// Claims up to `max` tasks at `now` under a cap of `cap` per tenant, with `running` held.
async fn claim_capped(
    store: &dyn Store,
    max: usize,
    cap: usize,
    running: &[(&str, usize)],
    now: OffsetDateTime,
) -> Vec<ClaimedTask> {
    store
        .task_claim(TaskClaimParams {
            node: "n".into(),
            max,
            lease: LEASE,
            now,
            tenant_cap: Some(TenantCap {
                max: cap,
                running: running.iter().map(|(t, n)| (t.to_string(), *n)).collect(),
            }),
        })
        .await
        .expect("task_claim")
        .tasks
}

/// A tenant cap: a claim gives each tenant at most its room (the cap less what it holds),
/// passes over a full tenant's tasks to claim the others' behind them, and leaves the tasks
/// passed over queued in their place, with no attempt counted.
pub async fn claim_tenant_cap(store: Arc<dyn Store>) {
    let store = &*store;
    let x = insert_batch(store, flood("x", "x", Priority::Normal, 10), at(0)).await;
    let y = insert_batch(store, flood("y", "y", Priority::Normal, 3), at(100)).await;
    assert!(claim_capped(store, 10, 0, &[], at(200)).await.is_empty());

    let got = ids(&claim_capped(store, 10, 2, &[("x", 1)], at(200)).await);
    assert_eq!(
        got,
        vec![x[0].clone(), y[0].clone(), y[1].clone()],
        "x has room for one, y for two, in claim order"
    );
    assert!(
        claim_capped(store, 10, 2, &[("x", 2), ("y", 2)], at(200))
            .await
            .is_empty(),
        "both tenants full: nothing is claimed though x's and y's tasks are queued"
    );
    let got = ids(&claim_capped(store, 10, 2, &[("x", 3), ("y", 1)], at(200)).await);
    assert_eq!(got, vec![y[2].clone()], "x's queued tasks are passed over");

    let rest = claim(store, "n", 100, at(200)).await;
    assert_eq!(ids(&rest), x[1..], "x's tasks kept their places in line");
    assert!(
        rest.iter().all(|c| c.attempt_number == 1),
        "passing a task over counts no attempt"
    );
}
