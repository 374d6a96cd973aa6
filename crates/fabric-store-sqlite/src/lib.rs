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
mod reports;
mod rows;
mod schedules;
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
use fabric_store::{
    KpiAggregate, KpiQueryParams, TaskProgressParams, UsageAggregate, UsageReportParams,
};
use fabric_store::{
    ScheduleAdvanceParams, ScheduleDeleteParams, ScheduleDueParams, ScheduleGetParams,
    ScheduleListParams, SchedulePut, SchedulePutParams, ScheduleRecord,
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
/// names the index that serves it, so that none scans every task: a parent's children come
/// from `tasks_parent`, a tenant's tasks of one module from `tasks_module`; otherwise the
/// state is written into the SQL (a partial index serves only a condition that implies its
/// own `WHERE`), and running tasks, which are few, come from `tasks_lease`. Labels are
/// checked on the rows the index yields.
fn list_source(p: &TaskListParams) -> (&'static str, String) {
    use TaskState as S;
    let by_tenant = p.tenant.is_some();
    let condition = p.state.map_or_else(
        || "1 = 1".to_string(),
        |s| format!("state = '{}'", s.as_str()),
    );
    if p.parent.is_some() {
        return ("tasks INDEXED BY tasks_parent", condition);
    }
    if p.module.is_some() && by_tenant {
        return ("tasks INDEXED BY tasks_module", condition);
    }
    let Some(state) = p.state else {
        let source = if by_tenant {
            "tasks INDEXED BY tasks_tenant"
        } else {
            "tasks"
        };
        return (source, condition);
    };
    let source = match (by_tenant, state) {
        (_, S::Running) => "tasks INDEXED BY tasks_lease",
        (_, S::Waiting) => "tasks INDEXED BY tasks_waiting",
        (true, _) => "tasks INDEXED BY tasks_tenant_state",
        (false, S::Failed | S::Cancelled | S::Expired) => "tasks INDEXED BY tasks_state_rare",
        (false, S::Scheduled) => "tasks INDEXED BY tasks_scheduled",
        // Most tasks, or the newest ones: reading tasks newest first finds a page soon.
        (false, S::Queued | S::Succeeded) => "tasks",
    };
    (source, condition)
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
                let (source, state) = list_source(&params);
                let mut sql = format!("SELECT {TASK_COLUMNS} FROM {source} WHERE {state}");
                let mut args: Vec<&dyn rusqlite::ToSql> = Vec::new();
                let limit = limit as i64;
                if let Some(tenant) = &params.tenant {
                    args.push(tenant);
                    sql.push_str(&format!(" AND tenant = ?{}", args.len()));
                }
                let module = params.module.map(|m| m.to_string());
                if let Some(module) = &module {
                    args.push(module);
                    sql.push_str(&format!(" AND module = ?{}", args.len()));
                }
                let parent = params.parent.as_ref().map(|p| p.as_str().to_owned());
                if let Some(parent) = &parent {
                    args.push(parent);
                    sql.push_str(&format!(" AND parent = ?{}", args.len()));
                }
                for (key, value) in &params.labels {
                    args.push(key);
                    args.push(value);
                    sql.push_str(&format!(
                        " AND EXISTS (SELECT 1 FROM json_each(labels) WHERE key = ?{} AND value = ?{})",
                        args.len() - 1,
                        args.len()
                    ));
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

    async fn task_progress(&self, params: TaskProgressParams) -> Result<u64, StoreError> {
        if params.updates.is_empty() {
            return Ok(0);
        }
        self.writer
            .write("task_progress", move |ctx| {
                writes::task_progress(ctx, params)
            })
            .await
    }

    async fn kpi_query(&self, params: KpiQueryParams) -> Result<Vec<KpiAggregate>, StoreError> {
        self.readers
            .read("kpi_query", move |tx| reports::kpi_query(tx, params))
            .await
    }

    async fn usage_report(
        &self,
        params: UsageReportParams,
    ) -> Result<Vec<UsageAggregate>, StoreError> {
        self.readers
            .read("usage_report", move |tx| reports::usage_report(tx, params))
            .await
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

    async fn schedule_put(&self, params: SchedulePutParams) -> Result<SchedulePut, StoreError> {
        self.writer
            .write("schedule_put", move |ctx| schedules::put(ctx, params))
            .await
    }

    async fn schedule_get(
        &self,
        params: ScheduleGetParams,
    ) -> Result<Option<ScheduleRecord>, StoreError> {
        self.readers
            .read("schedule_get", move |tx| {
                schedules::get(tx, &params.tenant, &params.name)
            })
            .await
    }

    async fn schedule_list(
        &self,
        params: ScheduleListParams,
    ) -> Result<Vec<ScheduleRecord>, StoreError> {
        self.readers
            .read("schedule_list", move |tx| {
                schedules::list(tx, &params.tenant)
            })
            .await
    }

    async fn schedule_delete(&self, params: ScheduleDeleteParams) -> Result<bool, StoreError> {
        self.writer
            .write("schedule_delete", move |ctx| schedules::delete(ctx, params))
            .await
    }

    async fn schedule_due(
        &self,
        params: ScheduleDueParams,
    ) -> Result<Vec<ScheduleRecord>, StoreError> {
        if params.max == 0 {
            return Ok(Vec::new());
        }
        self.readers
            .read("schedule_due", move |tx| schedules::due(tx, params))
            .await
    }

    async fn schedule_advance(&self, params: ScheduleAdvanceParams) -> Result<bool, StoreError> {
        self.writer
            .write("schedule_advance", move |ctx| {
                schedules::advance(ctx, params)
            })
            .await
    }

    async fn schedule_next_due(&self) -> Result<Option<OffsetDateTime>, StoreError> {
        self.readers
            .read("schedule_next_due", |tx| {
                Ok(schedules::next_due(tx)?.map(from_millis))
            })
            .await
    }
}

#[cfg(test)]
mod tests;
