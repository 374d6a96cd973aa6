//! Tests of the SQLite store itself: reopening, migrations, group commit, the counts it
//! keeps and the indexes its listings use.

use super::*;
use fabric_store::NewTask;
use fabric_types::ModuleId;

/// The store in `dir`, holding the module `m` for the tenants these tests use (written
/// beside the store's own connection, as a task's module must be stored).
fn open(dir: &tempfile::TempDir) -> Result<SqliteStore, StoreError> {
    let path = dir.path().join("fabric.db");
    let store = SqliteStore::open(&path, SqliteOptions::default())?;
    let conn = rusqlite::Connection::open(&path).unwrap();
    for tenant in ["t", "acme", "globex"] {
        conn.execute(
            "INSERT OR IGNORE INTO modules (tenant, id, kind, size, created_at, bytes)
             VALUES (?1, ?2, 'module', 1, 0, x'6d')",
            params![tenant, ModuleId::of(b"m").to_string()],
        )
        .unwrap();
    }
    Ok(store)
}

fn task(input: &str) -> NewTask {
    NewTask::new("t", ModuleId::of(b"m"), input.as_bytes().to_vec())
}

#[tokio::test]
async fn data_survives_a_reopen_and_migrations_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).unwrap();
    let now = from_millis(1_700_000_000_000);
    let ids = store
        .task_insert(TaskInsertParams {
            tasks: vec![task("in")],
            now,
        })
        .await
        .unwrap();
    drop(store);
    let store = open(&dir).unwrap();
    let got = store
        .task_get(TaskGetParams {
            tenant: None,
            id: ids[0].id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(got.map(|t| t.input), Some(b"in".to_vec()));
    let conn = Connection::open(dir.path().join("fabric.db")).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn a_database_from_a_newer_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(&dir).unwrap());
    let conn = Connection::open(dir.path().join("fabric.db")).unwrap();
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(conn);
    match open(&dir) {
        Err(StoreError::SchemaTooNew { found, supported }) => {
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir).unwrap());
    let now = from_millis(1_700_000_000_000);
    let handles: Vec<_> = (0..500)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let params = TaskInsertParams {
                    tasks: vec![task(&i.to_string())],
                    now,
                };
                store.task_insert(params).await.unwrap()
            })
        })
        .collect();
    for handle in handles {
        handle.await.unwrap();
    }
    let counts = store.write_counts();
    assert_eq!(counts.operations, 500);
    assert!(
        counts.transactions < 500,
        "no two writes shared a transaction: {counts:?}"
    );
    assert_eq!(
        store.stats(StatsParams::default()).await.unwrap().queued(),
        500
    );
}

#[tokio::test]
async fn a_failing_operation_does_not_undo_its_neighbours() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).unwrap();
    let now = from_millis(1_700_000_000_000);
    let mut bad = task("bad");
    bad.limits.fuel = u64::MAX;
    let (a, b) = tokio::join!(
        store.task_insert(TaskInsertParams {
            tasks: vec![task("good")],
            now
        }),
        store.task_insert(TaskInsertParams {
            tasks: vec![task("x"), bad],
            now
        }),
    );
    assert!(a.is_ok());
    let err = b.unwrap_err();
    assert!(err.to_string().contains("limits.fuel"), "{err}");
    // The failed batch stored nothing, not even its valid first task.
    assert_eq!(
        store.stats(StatsParams::default()).await.unwrap().queued(),
        1
    );
}

/// Every count kept in `task_counts` equals the count over the tasks themselves.
fn assert_counts_match(path: &Path) {
    let conn = Connection::open(path).unwrap();
    let query = |sql: &str| -> Vec<(String, String, i64, i64)> {
        let mut stmt = conn.prepare(sql).unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let counted = query(
        "SELECT tenant, state, priority, count(*) FROM tasks
         GROUP BY tenant, state, priority ORDER BY 1, 2, 3",
    );
    let kept =
        query("SELECT tenant, state, priority, n FROM task_counts WHERE n <> 0 ORDER BY 1, 2, 3");
    assert_eq!(kept, counted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_counts_follow_every_change_of_state() {
    use fabric_store::{
        Completion, Next, TaskCancelParams, TaskClaimParams, TaskCompleteParams, TaskExpireParams,
        TaskHeartbeatParams, TaskPromoteParams, TaskPruneParams, TaskRescueParams,
    };
    use fabric_types::{Attempt, Outcome, Priority, TaskState};
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fabric.db");
    let store = open(&dir).unwrap();
    let at = |ms: i64| from_millis(1_700_000_000_000 + ms);
    let mut tasks = Vec::new();
    for i in 0..40i64 {
        let mut t = NewTask::new(
            if i % 3 == 0 { "globex" } else { "acme" },
            ModuleId::of(b"m"),
            i.to_string().into_bytes(),
        );
        t.priority = Priority::ALL[(i % 5) as usize];
        if i % 7 == 0 {
            t.run_at = Some(at(5_000));
        }
        if i % 11 == 0 {
            t.deadline = Some(at(50));
        }
        if i % 13 == 0 {
            t.idempotency_key = Some("same".into());
        }
        tasks.push(t);
    }
    let inserted = store
        .task_insert(TaskInsertParams { tasks, now: at(0) })
        .await
        .unwrap();
    assert_counts_match(&path);

    let claim = |max, now| TaskClaimParams {
        node: "n".into(),
        max,
        lease: Duration::from_secs(10),
        now,
        tenant_cap: None,
    };
    // Claims at 100 expire the queued tasks whose deadline passed.
    let claimed = store.task_claim(claim(12, at(100))).await.unwrap().tasks;
    assert_counts_match(&path);
    let cancel = |id: TaskId| TaskCancelParams {
        tenant: None,
        id,
        now: at(110),
    };
    store
        .task_cancel(cancel(claimed[5].task_id.clone()))
        .await
        .unwrap();
    store
        .task_cancel(cancel(inserted[7].id.clone()))
        .await
        .unwrap();
    let mut completions: Vec<Completion> = claimed
        .iter()
        .enumerate()
        .map(|(i, c)| Completion {
            children: Vec::new(),
            attempt_id: c.attempt_id.clone(),
            attempt: Attempt::new(Outcome::Exit),
            next: match i % 5 {
                0 => Next::Finish(TaskState::Succeeded),
                1 => Next::Finish(TaskState::Failed),
                2 => Next::Retry { run_at: at(100) },
                3 => Next::Retry { run_at: at(9_000) },
                _ => Next::Requeue,
            },
        })
        .collect();
    // The same attempt twice (the second is refused) and an attempt never made.
    completions.push(completions[0].clone());
    completions.push(Completion {
        children: Vec::new(),
        attempt_id: fabric_store::AttemptId::from("no-such-attempt"),
        attempt: Attempt::new(Outcome::Ok),
        next: Next::Finish(TaskState::Succeeded),
    });
    let done = store
        .task_complete(TaskCompleteParams {
            completions,
            now: at(120),
        })
        .await
        .unwrap();
    let n = done.len();
    assert!(done[0].accepted && !done[n - 2].accepted);
    assert_eq!(done[n - 2].state, Some(TaskState::Succeeded));
    assert_eq!(
        (done[n - 1].accepted, done[n - 1].task_id.clone()),
        (false, None)
    );
    assert_counts_match(&path);

    let running = store.task_claim(claim(6, at(130))).await.unwrap().tasks;
    store
        .task_heartbeat(TaskHeartbeatParams {
            attempt_ids: running.iter().map(|c| c.attempt_id.clone()).collect(),
            lease_until: at(20_000),
            now: at(140),
        })
        .await
        .unwrap();
    store
        .task_rescue(TaskRescueParams {
            now: at(60_000),
            max: 100,
            jitter: |_| 0,
        })
        .await
        .unwrap();
    assert_counts_match(&path);
    store
        .task_promote(TaskPromoteParams {
            now: at(60_000),
            max: 100,
        })
        .await
        .unwrap();
    store
        .task_expire(TaskExpireParams {
            now: at(60_000),
            max: 100,
        })
        .await
        .unwrap();
    assert_counts_match(&path);
    let pruned = store
        .task_prune(TaskPruneParams {
            finished_before: at(1 << 40),
            max: 1_000,
        })
        .await
        .unwrap();
    assert!(pruned > 0);
    assert_counts_match(&path);
}

#[tokio::test]
async fn a_version_1_database_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fabric.db");
    let module = ModuleId::of(b"m");
    {
        let mut conn = open_write_connection(&path, &SqliteOptions::default()).unwrap();
        schema::migrate_to(&mut conn, 1).unwrap();
        for (id, tenant, priority, state) in [
            ("T1", "acme", 2, "queued"),
            ("T2", "acme", 2, "succeeded"),
            ("T3", "globex", 4, "queued"),
            ("T4", "acme", 0, "queued"),
        ] {
            conn.execute(
                "INSERT INTO tasks (id, tenant, module, input, priority, state, fuel, memory_bytes,
                    timeout_ms, output_bytes, log_bytes, max_attempts, backoff_ms, max_backoff_ms,
                    retry_on, env, labels, created_at, sort_key)
                 VALUES (?1, ?2, ?3, x'00', ?4, ?5, 1, 1, 1, 1, 1, 3, 1, 1, 'exit', '{}', '{}', 0, ?4)",
                params![id, tenant, module.to_string(), priority, state],
            )
            .unwrap();
        }
    }
    let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
    let all = store.stats(StatsParams::default()).await.unwrap();
    assert_eq!(
        (all.queued_by_priority, all.succeeded),
        ([1, 0, 1, 0, 1], 1)
    );
    let acme = store
        .stats(StatsParams {
            tenant: Some("acme".into()),
        })
        .await
        .unwrap();
    assert_eq!(acme.queued(), 2);
    let claimed = store
        .task_claim(fabric_store::TaskClaimParams {
            node: "n".into(),
            max: 1,
            lease: std::time::Duration::from_secs(10),
            now: from_millis(1),
            tenant_cap: None,
        })
        .await
        .unwrap()
        .tasks;
    assert_eq!(claimed[0].task_id.as_str(), "T4");
    assert!(
        claimed[0].dirs.is_empty(),
        "tasks from before 0006 grant no dirs"
    );
    assert!(
        claimed[0].egress.is_empty(),
        "tasks from before 0007 name no egress policy"
    );
    assert!(
        claimed[0].args.is_empty(),
        "tasks from before 0008 have no args"
    );
    assert_eq!(store.integrity_check().await.unwrap(), ["ok"]);
    assert_counts_match(&path);

    // The rewritten CHECK refuses what the old one refused.
    let conn = Connection::open(&path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let sql: String = conn
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'tasks'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        sql.contains("OR state = 'expired'")
            && sql.contains("OR state = 'waiting')")
            && !sql.contains("state IN"),
        "{sql}"
    );
    let refused = conn
        .execute("UPDATE tasks SET state = 'lost' WHERE id = 'T1'", [])
        .unwrap_err();
    assert_eq!(
        refused.sqlite_error_code(),
        Some(rusqlite::ErrorCode::ConstraintViolation)
    );
    // ... and accepts the state 0009 added.
    conn.execute("UPDATE tasks SET state = 'waiting' WHERE id = 'T2'", [])
        .unwrap();
}

/// Every listing (any tenant or one, any state or one) pages through exactly the tasks
/// it should, newest first, through the index `list_source` names for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listing_finds_its_tasks() {
    use fabric_store::{
        Completion, Next, TaskCancelParams, TaskClaimParams, TaskCompleteParams, TaskExpireParams,
        TaskListParams,
    };
    use fabric_types::{Attempt, Outcome};

    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).unwrap();
    let at = |ms: i64| from_millis(1_700_000_000_000 + ms);
    let mut tasks = Vec::new();
    for i in 0..42i64 {
        let mut t = NewTask::new(
            if i % 2 == 0 { "acme" } else { "globex" },
            ModuleId::of(b"m"),
            vec![],
        );
        match i % 7 {
            1 => t.run_at = Some(at(1_000_000)),
            2 => t.deadline = Some(at(1)),
            _ => {}
        }
        tasks.push(t);
    }
    let ids: Vec<TaskId> = store
        .task_insert(TaskInsertParams { tasks, now: at(0) })
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    store
        .task_expire(TaskExpireParams {
            now: at(2),
            max: 100,
        })
        .await
        .unwrap();
    for id in ids.iter().skip(3).step_by(7) {
        store
            .task_cancel(TaskCancelParams {
                tenant: None,
                id: id.clone(),
                now: at(3),
            })
            .await
            .unwrap();
    }
    let claimed = store
        .task_claim(TaskClaimParams {
            node: "n".into(),
            max: 18,
            lease: std::time::Duration::from_secs(60),
            now: at(4),
            tenant_cap: None,
        })
        .await
        .unwrap()
        .tasks;
    let completions = claimed
        .iter()
        .take(12)
        .enumerate()
        .map(|(i, c)| Completion {
            children: Vec::new(),
            attempt_id: c.attempt_id.clone(),
            attempt: Attempt::new(Outcome::Exit),
            next: Next::Finish(if i % 3 == 0 {
                TaskState::Failed
            } else {
                TaskState::Succeeded
            }),
        })
        .collect();
    store
        .task_complete(TaskCompleteParams {
            completions,
            now: at(5),
        })
        .await
        .unwrap();

    let mut all = Vec::new();
    for id in &ids {
        all.push(
            store
                .task_get(TaskGetParams {
                    tenant: None,
                    id: id.clone(),
                })
                .await
                .unwrap()
                .unwrap(),
        );
    }
    all.sort_by(|a, b| b.id.cmp(&a.id));
    let states = [
        None,
        Some(TaskState::Queued),
        Some(TaskState::Scheduled),
        Some(TaskState::Running),
        Some(TaskState::Succeeded),
        Some(TaskState::Failed),
        Some(TaskState::Cancelled),
        Some(TaskState::Expired),
    ];
    for tenant in [None, Some("acme"), Some("globex")] {
        for state in states {
            let want: Vec<TaskId> = all
                .iter()
                .filter(|t| tenant.is_none_or(|x| t.tenant == x))
                .filter(|t| state.is_none_or(|s| t.state == s))
                .map(|t| t.id.clone())
                .collect();
            assert!(
                tenant.is_some() || !want.is_empty(),
                "no {state:?} task to list"
            );
            let mut got = Vec::new();
            let mut cursor = None;
            loop {
                let page = store
                    .task_list(TaskListParams {
                        tenant: tenant.map(String::from),
                        state,
                        limit: 4,
                        cursor,
                        ..TaskListParams::default()
                    })
                    .await
                    .unwrap_or_else(|e| panic!("listing {tenant:?} {state:?}: {e}"));
                got.extend(page.tasks.into_iter().map(|t| t.id));
                cursor = page.next_cursor;
                if cursor.is_none() {
                    break;
                }
            }
            assert_eq!(got, want, "listing {tenant:?} {state:?}");
        }
    }
}
