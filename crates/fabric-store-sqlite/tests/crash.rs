//! A real `kill -9` of a process that is inserting and draining tasks loses no task it
//! acknowledged, and leaves a database that passes `PRAGMA integrity_check`.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use fabric_store::{
    Completion, ModulePutParams, NewTask, Next, Store, TaskClaimParams, TaskCompleteParams,
    TaskGetParams, TaskId, TaskInsertParams, TaskPromoteParams, TaskRescueParams,
};
use fabric_store_sqlite::{SqliteOptions, SqliteStore};
use fabric_types::{Attempt, ModuleId, ModuleKind, Outcome, TaskState};
use time::OffsetDateTime;

/// Set in the child's environment to the database path; the child test does nothing
/// without it.
const CHILD_ENV: &str = "FABRIC_STORE_CRASH_CHILD_DB";
/// The parent kills the child once it has acknowledged this many tasks.
const KILL_AFTER_ACKS: usize = 3_000;

/// The child: four submitters insert small batches and print `ACK <id>` for each task only
/// after its insert returned; a drainer claims and completes tasks meanwhile. Runs until
/// killed.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
        let module = ModuleId::of(b"crash");
        store
            .module_put(ModulePutParams {
                tenant: "crash".into(),
                id: module,
                name: None,
                bytes: b"crash".to_vec(),
                kind: ModuleKind::Module,
                now: OffsetDateTime::now_utc(),
            })
            .await
            .unwrap();
        for submitter in 0..4u64 {
            let store = store.clone();
            tokio::spawn(async move {
                for round in 0u64.. {
                    let tasks = (0..1 + (round + submitter) % 5)
                        .map(|i| NewTask::new("crash", module, format!("{submitter}-{round}-{i}")))
                        .collect();
                    let now = OffsetDateTime::now_utc();
                    let inserted = store
                        .task_insert(TaskInsertParams { tasks, now })
                        .await
                        .unwrap();
                    let mut out = std::io::stdout().lock();
                    for task in inserted {
                        writeln!(out, "ACK {}", task.id).unwrap();
                    }
                    out.flush().unwrap();
                }
            });
        }
        loop {
            let now = OffsetDateTime::now_utc();
            let claimed = store
                .task_claim(TaskClaimParams {
                    node: "child".into(),
                    max: 50,
                    lease: Duration::from_secs(30),
                    now,
                    tenant_cap: None,
                })
                .await
                .unwrap()
                .tasks;
            let completions = claimed
                .into_iter()
                .map(|c| Completion {
                    children: Vec::new(),
                    attempt_id: c.attempt_id,
                    attempt: Attempt::new(Outcome::Ok),
                    next: Next::Finish(TaskState::Succeeded),
                })
                .collect();
            store
                .task_complete(TaskCompleteParams { completions, now })
                .await
                .unwrap();
            tokio::task::yield_now().await;
        }
    });
}

#[test]
fn kill_9_loses_no_acknowledged_task() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fabric.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child test process");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    for line in lines.by_ref() {
        if let Some(id) = line.expect("read the child's output").strip_prefix("ACK ") {
            acked.push(TaskId::from(id));
            if acked.len() >= KILL_AFTER_ACKS {
                break;
            }
        }
    }
    assert!(
        acked.len() >= KILL_AFTER_ACKS,
        "the child exited after {} acknowledgements",
        acked.len()
    );
    // `Child::kill` sends SIGKILL on Unix: no destructor, no flush, no checkpoint runs.
    child.kill().expect("kill -9 the child");
    // Everything the child printed before it died was acknowledged too.
    for line in lines {
        match line {
            Ok(line) => acked.extend(line.strip_prefix("ACK ").map(TaskId::from)),
            Err(_) => break,
        }
    }
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child was not killed: {status}");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store =
            SqliteStore::open(&path, SqliteOptions::default()).expect("reopen after kill -9");
        assert_eq!(store.integrity_check().await.unwrap(), ["ok"]);
        let unique: HashSet<_> = acked.iter().cloned().collect();
        assert_eq!(unique.len(), acked.len(), "an id was acknowledged twice");
        let mut done = 0;
        for id in &acked {
            let task = store
                .task_get(TaskGetParams {
                    tenant: Some("crash".into()),
                    id: id.clone(),
                })
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("acknowledged task {id} was lost"));
            done += usize::from(task.state == TaskState::Succeeded);
        }
        eprintln!(
            "{} acknowledged tasks survived kill -9 ({done} had already succeeded)",
            acked.len()
        );

        // Recovery: leases of the dead node are rescued, and every task reaches the end.
        let later = OffsetDateTime::now_utc() + Duration::from_secs(3_600);
        store
            .task_rescue(TaskRescueParams {
                now: later,
                max: usize::MAX >> 1,
                jitter: |_| 0,
            })
            .await
            .unwrap();
        store
            .task_promote(TaskPromoteParams {
                now: later,
                max: usize::MAX >> 1,
            })
            .await
            .unwrap();
        loop {
            let claimed = store
                .task_claim(TaskClaimParams {
                    node: "after".into(),
                    max: 500,
                    lease: Duration::from_secs(30),
                    now: later,
                    tenant_cap: None,
                })
                .await
                .unwrap()
                .tasks;
            if claimed.is_empty() {
                break;
            }
            let completions = claimed
                .into_iter()
                .map(|c| Completion {
                    children: Vec::new(),
                    attempt_id: c.attempt_id,
                    attempt: Attempt::new(Outcome::Ok),
                    next: Next::Finish(TaskState::Succeeded),
                })
                .collect();
            store
                .task_complete(TaskCompleteParams {
                    completions,
                    now: later,
                })
                .await
                .unwrap();
        }
        for id in &acked {
            let task = store
                .task_get(TaskGetParams {
                    tenant: None,
                    id: id.clone(),
                })
                .await
                .unwrap()
                .unwrap();
            assert!(
                task.state.is_terminal(),
                "task {id} is {} after recovery",
                task.state
            );
        }
    });
}
