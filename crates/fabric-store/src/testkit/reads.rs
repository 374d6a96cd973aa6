//! Reads: stats counts and list pagination.

use std::sync::Arc;

use fabric_types::{Outcome, Priority, TaskState};

use super::{at, claim, complete, insert, new_task};
use crate::{Next, StatsParams, Store, TaskCancelParams, TaskExpireParams, TaskListParams};

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
            waiting: 0,
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
                ..TaskListParams::default()
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
            ..TaskListParams::default()
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
            ..TaskListParams::default()
        })
        .await
        .unwrap();
    assert_eq!(
        rest.tasks.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
        cancelled[3..]
    );
    assert!(rest.tasks.iter().all(|t| t.state == TaskState::Cancelled));
}
