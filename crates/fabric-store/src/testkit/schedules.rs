//! Cron schedules as the store keeps them: put (create, replace, the per-tenant limit),
//! get, list, delete, the due list and the compare-and-set that moves a schedule on.

use std::sync::Arc;

use super::at;
use crate::{
    ScheduleAdvanceParams, ScheduleDeleteParams, ScheduleDueParams, ScheduleGetParams,
    ScheduleListParams, SchedulePut, SchedulePutParams, ScheduleRecord, Store, TaskId,
};

fn put_params(tenant: &str, name: &str, next_ms: i64, now_ms: i64) -> SchedulePutParams {
    SchedulePutParams {
        tenant: tenant.into(),
        name: name.into(),
        cron: "*/5 * * * *".into(),
        timezone: "UTC".into(),
        task: format!(r#"{{"module":"m","input":"{name}"}}"#),
        next_run_at: at(next_ms),
        max_per_tenant: 3,
        now: at(now_ms),
    }
}

async fn put(store: &dyn Store, params: SchedulePutParams) -> SchedulePut {
    store.schedule_put(params).await.expect("schedule_put")
}

async fn stored(store: &dyn Store, params: SchedulePutParams) -> ScheduleRecord {
    match put(store, params).await {
        SchedulePut::Stored(record) => record,
        other => panic!("not stored: {other:?}"),
    }
}

async fn get(store: &dyn Store, tenant: &str, name: &str) -> Option<ScheduleRecord> {
    store
        .schedule_get(ScheduleGetParams {
            tenant: tenant.into(),
            name: name.into(),
        })
        .await
        .expect("schedule_get")
}

async fn names(store: &dyn Store, tenant: &str) -> Vec<String> {
    store
        .schedule_list(ScheduleListParams {
            tenant: tenant.into(),
        })
        .await
        .expect("schedule_list")
        .into_iter()
        .map(|s| s.name)
        .collect()
}

/// Every field survives put and get; a put of an existing name replaces it but keeps its
/// `created_at` and `last_task`; lists are by name and per tenant; delete says whether
/// there was one.
pub async fn schedule_round_trip(store: Arc<dyn Store>) {
    let store = &*store;
    let first = stored(store, put_params("acme", "nightly", 60_000, 0)).await;
    assert_eq!(first.tenant, "acme");
    assert_eq!(first.name, "nightly");
    assert_eq!(first.cron, "*/5 * * * *");
    assert_eq!(first.timezone, "UTC");
    assert_eq!(first.task, r#"{"module":"m","input":"nightly"}"#);
    assert_eq!(first.next_run_at, at(60_000));
    assert_eq!(first.last_task, None);
    assert_eq!((first.created_at, first.updated_at), (at(0), at(0)));
    assert_eq!(get(store, "acme", "nightly").await, Some(first.clone()));
    assert_eq!(get(store, "globex", "nightly").await, None, "per tenant");

    stored(store, put_params("acme", "a-first", 1_000, 1)).await;
    stored(store, put_params("globex", "theirs", 1_000, 1)).await;
    assert_eq!(names(store, "acme").await, ["a-first", "nightly"]);
    assert_eq!(names(store, "globex").await, ["theirs"]);

    // Fired once, then replaced: the new fields, the old created_at and last_task.
    let advanced = store
        .schedule_advance(ScheduleAdvanceParams {
            tenant: "acme".into(),
            name: "nightly".into(),
            from: at(60_000),
            to: at(120_000),
            last_task: Some(TaskId::from("T1")),
            now: at(60_001),
        })
        .await
        .unwrap();
    assert!(advanced);
    let mut replacement = put_params("acme", "nightly", 300_000, 2_000);
    replacement.cron = "0 3 * * *".into();
    replacement.timezone = "Europe/Paris".into();
    let replaced = stored(store, replacement).await;
    assert_eq!(replaced.cron, "0 3 * * *");
    assert_eq!(replaced.timezone, "Europe/Paris");
    assert_eq!(replaced.next_run_at, at(300_000));
    assert_eq!(replaced.created_at, at(0));
    assert_eq!(replaced.updated_at, at(2_000));
    assert_eq!(replaced.last_task, Some(TaskId::from("T1")));

    let delete = |tenant: &str| ScheduleDeleteParams {
        tenant: tenant.into(),
        name: "nightly".into(),
    };
    assert!(
        !store.schedule_delete(delete("globex")).await.unwrap(),
        "per tenant"
    );
    assert!(store.schedule_delete(delete("acme")).await.unwrap());
    assert!(
        !store.schedule_delete(delete("acme")).await.unwrap(),
        "already gone"
    );
    assert_eq!(get(store, "acme", "nightly").await, None);
}

/// A new schedule past the tenant's limit is refused with the count; replacing one is not;
/// other tenants have their own limit.
pub async fn schedule_limit_per_tenant(store: Arc<dyn Store>) {
    let store = &*store;
    for name in ["a", "b", "c"] {
        stored(store, put_params("acme", name, 1_000, 0)).await;
    }
    assert_eq!(
        put(store, put_params("acme", "d", 1_000, 0)).await,
        SchedulePut::TooMany { count: 3 }
    );
    assert_eq!(get(store, "acme", "d").await, None);
    stored(store, put_params("acme", "b", 2_000, 1)).await;
    stored(store, put_params("globex", "d", 1_000, 0)).await;
    assert_eq!(names(store, "acme").await, ["a", "b", "c"]);
}

/// The due list holds every tenant's schedules due at `now`, earliest first; an advance
/// applies only from the tick it names, so of two nodes firing one tick one moves it; the
/// next due instant is the earliest `next_run_at`.
pub async fn schedule_due_and_advance(store: Arc<dyn Store>) {
    let store = &*store;
    assert_eq!(store.schedule_next_due().await.unwrap(), None);
    stored(store, put_params("acme", "later", 5_000, 0)).await;
    stored(store, put_params("acme", "soon", 2_000, 0)).await;
    stored(store, put_params("globex", "sooner", 1_000, 0)).await;
    assert_eq!(store.schedule_next_due().await.unwrap(), Some(at(1_000)));
    let due = |now_ms: i64, max: usize| async move {
        store
            .schedule_due(ScheduleDueParams {
                now: at(now_ms),
                max,
            })
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.tenant, s.name))
            .collect::<Vec<_>>()
    };
    assert!(due(999, 10).await.is_empty());
    assert_eq!(
        due(2_000, 10).await,
        [
            ("globex".into(), "sooner".into()),
            ("acme".into(), "soon".into())
        ]
    );
    assert_eq!(due(2_000, 1).await.len(), 1, "at most max");

    let advance = |from_ms: i64, to_ms: i64, task: Option<&str>| ScheduleAdvanceParams {
        tenant: "acme".into(),
        name: "soon".into(),
        from: at(from_ms),
        to: at(to_ms),
        last_task: task.map(TaskId::from),
        now: at(2_001),
    };
    assert!(
        store
            .schedule_advance(advance(2_000, 7_000, Some("T1")))
            .await
            .unwrap()
    );
    assert!(
        !store
            .schedule_advance(advance(2_000, 7_000, Some("T2")))
            .await
            .unwrap(),
        "the second node to fire the tick finds it moved"
    );
    let soon = get(store, "acme", "soon").await.unwrap();
    assert_eq!(soon.next_run_at, at(7_000));
    assert_eq!(soon.last_task, Some(TaskId::from("T1")));
    // A firing without a task (skipped) keeps the last one.
    assert!(
        store
            .schedule_advance(advance(7_000, 9_000, None))
            .await
            .unwrap()
    );
    assert_eq!(
        get(store, "acme", "soon").await.unwrap().last_task,
        Some(TaskId::from("T1"))
    );
    assert_eq!(due(2_000, 10).await, [("globex".into(), "sooner".into())]);
    assert_eq!(store.schedule_next_due().await.unwrap(), Some(at(1_000)));
}
