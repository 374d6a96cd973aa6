//! The embedded SQLite backend of the fabric store: one file in WAL mode, every write
//! group-committed by one writer thread, reads on a small pool of connections.
//!
//! ```no_run
//! # async fn demo() -> Result<(), fabric_store::StoreError> {
//! use fabric_store_sqlite::{SqliteOptions, SqliteStore};
//! let store = SqliteStore::open("fabric-data/fabric.db", SqliteOptions::default())?;
//! # Ok(()) }
//! ```

mod checkpoint;
mod counts;
mod options;
mod readers;
mod rows;
mod schema;
mod writer;
mod writes;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use fabric_store::{
    Capabilities, Claimed, Completed, Heartbeat, Inserted, LeaderAcquireParams,
    LeaderReleaseParams, ModuleDeleteParams, ModuleDeleted, ModuleGetParams, ModuleInfo,
    ModuleListParams, ModulePutParams, ModuleRecord, ModuleRef, Rescued, Stats, StatsParams, Store,
    StoreError, TaskCancelParams, TaskClaimParams, TaskCompleteParams, TaskExpireParams,
    TaskGetParams, TaskHeartbeatParams, TaskId, TaskInsertParams, TaskListParams, TaskPage,
    TaskPromoteParams, TaskPruneParams, TaskRecord, TaskRescueParams, from_millis,
};
use fabric_types::TaskState;
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use time::OffsetDateTime;
use tokio::sync::watch;

pub use options::{SqliteOptions, Synchronous};
pub use schema::SCHEMA_VERSION;

use checkpoint::Checkpointer;
use readers::Readers;
use rows::{MODULE_COLUMNS, TASK_COLUMNS, load_task, load_tasks, module_info};
use writer::Writer;

/// The most tasks one `task_list` page returns, whatever limit is asked for.
pub const MAX_LIST_LIMIT: usize = 1_000;

/// What a `task_list` page reads (`FROM ...`) and its condition on the state. Each listing
/// names the index that serves it, so that none scans every task: the state is written into
/// the SQL (a partial index serves only a condition that implies its own `WHERE`), and
/// running tasks, which are few, come from `tasks_lease`.
fn list_source(by_tenant: bool, state: Option<TaskState>) -> (&'static str, String) {
    use TaskState as S;
    let Some(state) = state else {
        let source = if by_tenant {
            "tasks INDEXED BY tasks_tenant"
        } else {
            "tasks"
        };
        return (source, "1 = 1".into());
    };
    let source = match (by_tenant, state) {
        (_, S::Running) => "tasks INDEXED BY tasks_lease",
        (true, _) => "tasks INDEXED BY tasks_tenant_state",
        (false, S::Failed | S::Cancelled | S::Expired) => "tasks INDEXED BY tasks_state_rare",
        (false, S::Scheduled) => "tasks INDEXED BY tasks_scheduled",
        // Most tasks, or the newest ones: reading tasks newest first finds a page soon.
        (false, S::Queued | S::Succeeded) => "tasks",
    };
    (source, format!("state = '{}'", state.as_str()))
}

/// Maps a driver error to a [`StoreError`] that says what the store was doing.
pub(crate) fn db_err(context: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| {
        let context = context.into();
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::ConstraintViolation) => {
                StoreError::Conflict(format!("{context}: {e}"))
            }
            Some(rusqlite::ErrorCode::DiskFull) => StoreError::Full {
                context,
                source: e.into(),
            },
            Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => {
                StoreError::Corrupt(format!("{context}: {e}"))
            }
            _ => StoreError::unavailable(context, e),
        }
    }
}

/// Opens (creating if needed) a read-write connection in WAL mode with the store's settings.
pub(crate) fn open_write_connection(
    path: &Path,
    options: &SqliteOptions,
) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(db_err(format!("open the database {}", path.display())))?;
    conn.busy_timeout(options.busy_timeout)
        .map_err(db_err("set busy_timeout"))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(db_err("switch to WAL mode"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::InvalidArgument(format!(
            "{} cannot use WAL mode (journal_mode is {mode}); the store needs a file on a local disk",
            path.display()
        )));
    }
    conn.pragma_update(None, "synchronous", options.synchronous.pragma())
        .map_err(db_err("set synchronous"))?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(db_err("enable foreign keys"))?;
    // Savepoints (one per operation in a group) journal the pages they touch; in memory
    // that costs a copy instead of a write to a temporary file.
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(db_err("set temp_store"))?;
    conn.pragma_update(None, "soft_heap_limit", SOFT_HEAP_LIMIT_BYTES)
        .map_err(db_err("set soft_heap_limit"))?;
    prepare_connection(&conn)?;
    Ok(conn)
}

/// SQLite's heap in this process (the page caches of every connection, statements,
/// schemas) is held near this: past it, page caches recycle their own pages instead of
/// growing. Without it every connection's cache grows towards its 2 MiB `cache_size` with
/// each page it ever touched, which under a steady load took more than ten minutes: a
/// soak's resident size grew 9 % between its second and tenth minute, and a heap profile
/// put 96 % of the growth in SQLite's page caches. The limit is process-wide; every store
/// in the process sets the same one.
const SOFT_HEAP_LIMIT_BYTES: i64 = 8 << 20;

/// Settings every connection gets: plans chosen once per statement. Without the query
/// planner stability guarantee SQLite prepares a statement again whenever a newly bound value
/// might change its plan (a claim's `LIMIT ?` did, on every claim).
pub(crate) fn prepare_connection(conn: &Connection) -> Result<(), StoreError> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(db_err("enable the query planner stability guarantee"))?;
    Ok(())
}

/// Totals of the group-commit writer; see [`SqliteStore::write_counts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteCounts {
    /// Write operations in committed transactions (each trait call that writes is one,
    /// whether it succeeded or was rolled back to its savepoint).
    pub operations: u64,
    /// Transactions committed.
    pub transactions: u64,
}

/// A store in one SQLite file. Cheap to share behind an `Arc`; dropping the last handle
/// finishes pending writes and closes the database.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    aging_step_ms: u64,
    writer: Writer,
    readers: Arc<Readers>,
    ready: watch::Receiver<u64>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, applies pending migrations, and
    /// starts the writer thread. Fails on a database written by a newer fabric.
    pub fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::unavailable(format!("create the directory {}", dir.display()), e)
            })?;
        }
        // Migrations run on a connection of their own: one may rewrite the schema's text,
        // and the writer should start from the schema as it is afterwards.
        schema::migrate(&mut open_write_connection(&path, &options)?)?;
        let conn = open_write_connection(&path, &options)?;
        conn.set_prepared_statement_cache_capacity(64);
        rusqlite::vtab::array::load_module(&conn).map_err(db_err("load the rarray module"))?;

        let aging_step_ms = u64::try_from(options.aging_step.as_millis()).unwrap_or(u64::MAX);
        let (ready_tx, ready) = watch::channel(0);
        let checkpointer = Checkpointer::start(&path, options.busy_timeout)?;
        let writer = Writer::start(
            conn,
            checkpointer,
            options.max_batch,
            aging_step_ms,
            ready_tx,
        )?;
        let readers = Arc::new(Readers::new(
            path.clone(),
            options.busy_timeout,
            options.readers,
        ));
        Ok(Self {
            path,
            aging_step_ms,
            writer,
            readers,
            ready,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How well group commit is grouping: write operations applied and transactions
    /// committed since the store opened (operations per transaction is the batch size).
    pub fn write_counts(&self) -> WriteCounts {
        let (operations, transactions) = self.writer.counts();
        WriteCounts {
            operations,
            transactions,
        }
    }

    /// Runs `PRAGMA integrity_check` and returns its report: `["ok"]` when the database is
    /// sound.
    pub async fn integrity_check(&self) -> Result<Vec<String>, StoreError> {
        self.readers
            .read("check integrity", |tx| {
                let mut stmt = tx
                    .prepare("PRAGMA integrity_check")
                    .map_err(db_err("check integrity"))?;
                stmt.query_map([], |r| r.get(0))
                    .and_then(|rows| rows.collect())
                    .map_err(db_err("check integrity"))
            })
            .await
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            listen_notify: false,
            multi_node: false,
        }
    }

    fn aging_step_ms(&self) -> u64 {
        self.aging_step_ms
    }

    fn ready_signal(&self) -> watch::Receiver<u64> {
        self.ready.clone()
    }

    async fn module_put(&self, params: ModulePutParams) -> Result<ModuleInfo, StoreError> {
        self.writer
            .write("module_put", move |ctx| writes::module_put(ctx, params))
            .await
    }

    async fn module_get(
        &self,
        params: ModuleGetParams,
    ) -> Result<Option<ModuleRecord>, StoreError> {
        self.readers
            .read("module_get", move |tx| {
                let id = match params.module {
                    ModuleRef::Id(id) => id.to_string(),
                    ModuleRef::Name(name) => {
                        let id: Option<String> = tx
                            .prepare_cached("SELECT module_id FROM module_names WHERE tenant = ?1 AND name = ?2")
                            .and_then(|mut s| s.query_row(params![params.tenant, name], |r| r.get(0)).optional())
                            .map_err(db_err("resolve a module name"))?;
                        match id {
                            Some(id) => id,
                            None => return Ok(None),
                        }
                    }
                };
                let row = tx
                    .prepare_cached(&format!("SELECT {MODULE_COLUMNS}, bytes FROM modules WHERE tenant = ?1 AND id = ?2"))
                    .and_then(|mut s| {
                        s.query_row(params![params.tenant, id], |r| Ok((rows::read_module_info(r)?, r.get(5)?)))
                            .optional()
                    })
                    .map_err(db_err("read a module"))?;
                let Some((raw, bytes)) = row else { return Ok(None) };
                let info = module_info(raw)?;
                Ok(Some(ModuleRecord {
                    id: info.id,
                    name: info.name,
                    size: info.size,
                    kind: info.kind,
                    created_at: info.created_at,
                    bytes,
                }))
            })
            .await
    }

    async fn module_list(&self, params: ModuleListParams) -> Result<Vec<ModuleInfo>, StoreError> {
        self.readers
            .read("module_list", move |tx| {
                let raws: Vec<_> = tx
                    .prepare_cached(&format!(
                        "SELECT {MODULE_COLUMNS} FROM modules WHERE tenant = ?1 ORDER BY created_at, id"
                    ))
                    .and_then(|mut s| s.query_map([&params.tenant], rows::read_module_info)?.collect())
                    .map_err(db_err("list modules"))?;
                raws.into_iter().map(module_info).collect()
            })
            .await
    }

    async fn module_delete(&self, params: ModuleDeleteParams) -> Result<ModuleDeleted, StoreError> {
        self.writer
            .write("module_delete", move |ctx| {
                writes::module_delete(ctx, params)
            })
            .await
    }

    async fn task_insert(&self, params: TaskInsertParams) -> Result<Vec<Inserted>, StoreError> {
        if params.tasks.is_empty() {
            return Ok(Vec::new());
        }
        self.writer
            .write("task_insert", move |ctx| writes::task_insert(ctx, params))
            .await
    }

    async fn task_get(&self, params: TaskGetParams) -> Result<Option<TaskRecord>, StoreError> {
        self.readers
            .read("task_get", move |tx| {
                load_task(tx, params.tenant.as_deref(), params.id.as_str())
            })
            .await
    }

    async fn task_list(&self, params: TaskListParams) -> Result<TaskPage, StoreError> {
        let limit = params.limit.min(MAX_LIST_LIMIT);
        if limit == 0 {
            return Ok(TaskPage {
                tasks: Vec::new(),
                next_cursor: None,
            });
        }
        self.readers
            .read("task_list", move |tx| {
                let (source, state) = list_source(params.tenant.is_some(), params.state);
                let mut sql = format!("SELECT {TASK_COLUMNS} FROM {source} WHERE {state}");
                let mut args: Vec<&dyn rusqlite::ToSql> = Vec::new();
                let limit = limit as i64;
                if let Some(tenant) = &params.tenant {
                    args.push(tenant);
                    sql.push_str(&format!(" AND tenant = ?{}", args.len()));
                }
                if let Some(cursor) = &params.cursor {
                    args.push(cursor);
                    sql.push_str(&format!(" AND id < ?{}", args.len()));
                }
                args.push(&limit);
                sql.push_str(&format!(" ORDER BY id DESC LIMIT ?{}", args.len()));
                let tasks = load_tasks(tx, &sql, &args)?;
                let next_cursor = (tasks.len() as i64 == limit)
                    .then(|| tasks.last().map(|t| t.id.to_string()))
                    .flatten();
                Ok(TaskPage { tasks, next_cursor })
            })
            .await
    }

    async fn task_claim(&self, params: TaskClaimParams) -> Result<Claimed, StoreError> {
        if params.max == 0 {
            return Ok(Claimed::default());
        }
        self.writer
            .write("task_claim", move |ctx| writes::task_claim(ctx, params))
            .await
    }

    async fn task_heartbeat(&self, params: TaskHeartbeatParams) -> Result<Heartbeat, StoreError> {
        self.writer
            .write("task_heartbeat", move |ctx| {
                writes::task_heartbeat(ctx, params)
            })
            .await
    }

    async fn task_complete(
        &self,
        params: TaskCompleteParams,
    ) -> Result<Vec<Completed>, StoreError> {
        self.writer
            .write("task_complete", move |ctx| {
                writes::task_complete(ctx, params)
            })
            .await
    }

    async fn task_cancel(
        &self,
        params: TaskCancelParams,
    ) -> Result<Option<TaskRecord>, StoreError> {
        self.writer
            .write("task_cancel", move |ctx| writes::task_cancel(ctx, params))
            .await
    }

    async fn task_rescue(&self, params: TaskRescueParams) -> Result<Vec<Rescued>, StoreError> {
        self.writer
            .write("task_rescue", move |ctx| writes::task_rescue(ctx, params))
            .await
    }

    async fn task_promote(&self, params: TaskPromoteParams) -> Result<Vec<TaskId>, StoreError> {
        self.writer
            .write("task_promote", move |ctx| writes::task_promote(ctx, params))
            .await
    }

    async fn task_expire(&self, params: TaskExpireParams) -> Result<Vec<TaskId>, StoreError> {
        self.writer
            .write("task_expire", move |ctx| writes::task_expire(ctx, params))
            .await
    }

    async fn task_prune(&self, params: TaskPruneParams) -> Result<u64, StoreError> {
        self.writer
            .write("task_prune", move |ctx| writes::task_prune(ctx, params))
            .await
    }

    /// One process opens a SQLite store, so its node always leads.
    async fn leader_acquire(&self, _params: LeaderAcquireParams) -> Result<bool, StoreError> {
        Ok(true)
    }

    async fn leader_release(&self, _params: LeaderReleaseParams) -> Result<bool, StoreError> {
        Ok(true)
    }

    async fn stats(&self, params: StatsParams) -> Result<Stats, StoreError> {
        self.readers
            .read("stats", move |tx| {
                counts::stats(tx, params.tenant.as_deref())
            })
            .await
    }

    async fn next_wakeup(&self) -> Result<Option<OffsetDateTime>, StoreError> {
        self.readers
            .read("next_wakeup", |tx| {
                let at: Option<i64> = tx
                    .prepare_cached("SELECT min(run_at) FROM tasks INDEXED BY tasks_scheduled WHERE state = 'scheduled'")
                    .and_then(|mut s| s.query_row([], |r| r.get(0)))
                    .map_err(db_err("find the next scheduled task"))?;
                Ok(at.map(from_millis))
            })
            .await
    }
}

#[cfg(test)]
mod tests {
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
        let kept = query(
            "SELECT tenant, state, priority, n FROM task_counts WHERE n <> 0 ORDER BY 1, 2, 3",
        );
        assert_eq!(kept, counted);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn task_counts_follow_every_change_of_state() {
        use fabric_store::{
            Completion, Next, TaskCancelParams, TaskClaimParams, TaskCompleteParams,
            TaskExpireParams, TaskHeartbeatParams, TaskPromoteParams, TaskPruneParams,
            TaskRescueParams,
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
            sql.contains("OR state = 'expired')") && !sql.contains("state IN"),
            "{sql}"
        );
        let refused = conn
            .execute("UPDATE tasks SET state = 'lost' WHERE id = 'T1'", [])
            .unwrap_err();
        assert_eq!(
            refused.sqlite_error_code(),
            Some(rusqlite::ErrorCode::ConstraintViolation)
        );
    }

    /// Every listing (any tenant or one, any state or one) pages through exactly the tasks
    /// it should, newest first, through the index `list_source` names for it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_listing_finds_its_tasks() {
        use fabric_store::{
            Completion, Next, TaskCancelParams, TaskClaimParams, TaskCompleteParams,
            TaskExpireParams, TaskListParams,
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
}
