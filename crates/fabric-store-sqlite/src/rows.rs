//! Conversions between rows and the store's records, and the reads both paths share.

use std::collections::BTreeMap;

use fabric_store::{
    AttemptId, AttemptRecord, ClaimedTask, ModuleInfo, ModuleKind, StoreError, TaskId, TaskRecord,
    egress_json, from_millis, telemetry_json, workflow,
};
use fabric_types::{
    Attempt, Concurrency, Limits, ModuleId, Outcome, Priority, RetryPolicy, TaskState, Usage,
};
use rusqlite::{Connection, OptionalExtension, Row, params};
use time::OffsetDateTime;

use crate::db_err;

/// The columns [`read_task`] expects, in order.
pub(crate) const TASK_COLUMNS: &str = "id, tenant, module, input, priority, state, fuel, memory_bytes, timeout_ms, \
     output_bytes, log_bytes, max_attempts, backoff_ms, max_backoff_ms, retry_on, idempotency_key, run_at, \
     deadline, env, labels, created_at, started_at, finished_at, cancel_requested, dirs, egress, args, progress, \
     after_ids, pass_outputs, parent, depth, error, concurrency_key, concurrency_limit";

/// The columns [`read_attempt`] expects, in order.
const ATTEMPT_COLUMNS: &str = "id, number, node, claimed_at, lease_until, outcome, exit_code, trap, error, output, \
     stderr, output_truncated, stderr_truncated, fuel_consumed, peak_memory_bytes, wall_ms, started_at, finished_at, egress, kpis";

/// The columns [`read_module_info`] expects, in order.
pub(crate) const MODULE_COLUMNS: &str = "id, name, size, kind, created_at";

/// A stored `u64` (SQLite integers are signed; values above `i64::MAX` are refused).
pub(crate) fn to_i64(value: u64, field: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| {
        StoreError::InvalidArgument(format!("{field} = {value} is larger than {}", i64::MAX))
    })
}

fn to_u64(value: i64, field: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{field} is negative: {value}")))
}

pub(crate) fn ms(at: OffsetDateTime) -> i64 {
    fabric_store::to_millis(at)
}

fn time_opt(ms: Option<i64>) -> Option<OffsetDateTime> {
    ms.map(from_millis)
}

pub(crate) fn retry_on_text(outcomes: &[Outcome]) -> String {
    outcomes
        .iter()
        .map(|o| o.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_retry_on(text: &str) -> Result<Vec<Outcome>, StoreError> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|e| StoreError::Corrupt(format!("tasks.retry_on: {e}")))
        })
        .collect()
}

pub(crate) fn map_json(map: &BTreeMap<String, String>) -> String {
    serde_json::to_string(map).unwrap_or_else(|_| "{}".to_string())
}

fn parse_map(text: &str, column: &str) -> Result<BTreeMap<String, String>, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("{column} is not a JSON object of strings: {e}")))
}

pub(crate) fn parse_state(text: &str) -> Result<TaskState, StoreError> {
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("tasks.state: {e}")))
}

pub(crate) fn parse_priority(rank: i64) -> Result<Priority, StoreError> {
    u8::try_from(rank)
        .ok()
        .and_then(Priority::from_rank)
        .ok_or_else(|| {
            StoreError::Corrupt(format!("tasks.priority {rank} is not a rank from 0 to 4"))
        })
}

pub(crate) fn parse_module_id(text: &str, column: &str) -> Result<ModuleId, StoreError> {
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

/// A `tasks` row as stored, before its texts are parsed.
struct RawTask {
    id: String,
    tenant: String,
    module: String,
    input: Vec<u8>,
    priority: i64,
    state: String,
    limits: [i64; 5],
    max_attempts: i64,
    backoff_ms: i64,
    max_backoff_ms: i64,
    retry_on: String,
    idempotency_key: Option<String>,
    run_at: Option<i64>,
    deadline: Option<i64>,
    env: String,
    labels: String,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    cancel_requested: bool,
    dirs: String,
    egress: Option<String>,
    args: Option<String>,
    progress: Option<String>,
    after_ids: Option<String>,
    pass_outputs: bool,
    parent: Option<String>,
    depth: i64,
    error: Option<String>,
    concurrency_key: Option<String>,
    concurrency_limit: Option<i64>,
}

fn raw_task(row: &Row<'_>) -> rusqlite::Result<RawTask> {
    Ok(RawTask {
        id: row.get(0)?,
        tenant: row.get(1)?,
        module: row.get(2)?,
        input: row.get(3)?,
        priority: row.get(4)?,
        state: row.get(5)?,
        limits: [
            row.get(6)?,
            row.get(7)?,
            row.get(8)?,
            row.get(9)?,
            row.get(10)?,
        ],
        max_attempts: row.get(11)?,
        backoff_ms: row.get(12)?,
        max_backoff_ms: row.get(13)?,
        retry_on: row.get(14)?,
        idempotency_key: row.get(15)?,
        run_at: row.get(16)?,
        deadline: row.get(17)?,
        env: row.get(18)?,
        labels: row.get(19)?,
        created_at: row.get(20)?,
        started_at: row.get(21)?,
        finished_at: row.get(22)?,
        cancel_requested: row.get(23)?,
        dirs: row.get(24)?,
        egress: row.get(25)?,
        args: row.get(26)?,
        progress: row.get(27)?,
        after_ids: row.get(28)?,
        pass_outputs: row.get(29)?,
        parent: row.get(30)?,
        depth: row.get(31)?,
        error: row.get(32)?,
        concurrency_key: row.get(33)?,
        concurrency_limit: row.get(34)?,
    })
}

impl RawTask {
    fn limits(&self) -> Result<Limits, StoreError> {
        let [fuel, memory_bytes, timeout_ms, output_bytes, log_bytes] = self.limits;
        Ok(Limits {
            fuel: to_u64(fuel, "tasks.fuel")?,
            memory_bytes: to_u64(memory_bytes, "tasks.memory_bytes")?,
            timeout_ms: to_u64(timeout_ms, "tasks.timeout_ms")?,
            output_bytes: to_u64(output_bytes, "tasks.output_bytes")?,
            log_bytes: to_u64(log_bytes, "tasks.log_bytes")?,
        })
    }

    fn retry(&self) -> Result<RetryPolicy, StoreError> {
        Ok(RetryPolicy {
            max_attempts: u32::try_from(self.max_attempts).map_err(|_| {
                StoreError::Corrupt(format!(
                    "tasks.max_attempts {} is out of range",
                    self.max_attempts
                ))
            })?,
            backoff_ms: to_u64(self.backoff_ms, "tasks.backoff_ms")?,
            max_backoff_ms: to_u64(self.max_backoff_ms, "tasks.max_backoff_ms")?,
            retry_on: parse_retry_on(&self.retry_on)?,
        })
    }

    fn concurrency(&self) -> Result<Option<Concurrency>, StoreError> {
        match (&self.concurrency_key, self.concurrency_limit) {
            (Some(key), Some(limit)) => Ok(Some(Concurrency {
                key: key.clone(),
                limit: u32::try_from(limit).map_err(|_| {
                    StoreError::Corrupt(format!("tasks.concurrency_limit {limit} is out of range"))
                })?,
            })),
            (None, None) => Ok(None),
            _ => Err(StoreError::Corrupt(
                "tasks.concurrency_key and concurrency_limit must be set together".into(),
            )),
        }
    }

    fn into_record(self) -> Result<TaskRecord, StoreError> {
        Ok(TaskRecord {
            concurrency: self.concurrency()?,
            limits: self.limits()?,
            retry: self.retry()?,
            module: parse_module_id(&self.module, "tasks.module")?,
            priority: parse_priority(self.priority)?,
            state: parse_state(&self.state)?,
            env: parse_map(&self.env, "tasks.env")?,
            labels: parse_map(&self.labels, "tasks.labels")?,
            dirs: parse_map(&self.dirs, "tasks.dirs")?,
            egress: egress_json::names_decode(self.egress.as_deref(), "tasks.egress")?,
            args: telemetry_json::args_decode(self.args.as_deref(), "tasks.args")?,
            progress: telemetry_json::progress_decode(self.progress.as_deref(), "tasks.progress")?,
            id: TaskId::from(self.id),
            tenant: self.tenant,
            input: self.input,
            idempotency_key: self.idempotency_key,
            run_at: time_opt(self.run_at),
            deadline: time_opt(self.deadline),
            created_at: from_millis(self.created_at),
            started_at: time_opt(self.started_at),
            finished_at: time_opt(self.finished_at),
            cancel_requested: self.cancel_requested,
            attempts: Vec::new(),
            after: workflow::ids_decode(self.after_ids.as_deref(), "tasks.after_ids")?,
            pass_outputs: self.pass_outputs,
            parent: self.parent.map(TaskId::from),
            depth: u32::try_from(self.depth).map_err(|_| {
                StoreError::Corrupt(format!("tasks.depth {} is out of range", self.depth))
            })?,
            error: self.error,
        })
    }
}

/// The attempts of one task, oldest first.
fn load_attempts(conn: &Connection, task_id: &str) -> Result<Vec<AttemptRecord>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE task_id = ?1 ORDER BY number"
        ))
        .map_err(db_err("read attempts"))?;
    let rows = stmt
        .query_map([task_id], read_attempt)
        .map_err(db_err("read attempts"))?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err("read attempts"))?;
    rows.into_iter().collect()
}

type AttemptRow = Result<AttemptRecord, StoreError>;

fn read_attempt(row: &Row<'_>) -> rusqlite::Result<AttemptRow> {
    let id: String = row.get(0)?;
    let number: i64 = row.get(1)?;
    let outcome: Option<String> = row.get(5)?;
    let result = match outcome {
        None => None,
        Some(text) => Some((
            text,
            Attempt {
                outcome: Outcome::Ok,
                exit_code: row.get(6)?,
                trap: row.get(7)?,
                error: row.get(8)?,
                output: row.get::<_, Option<Vec<u8>>>(9)?.unwrap_or_default(),
                stderr: row.get::<_, Option<Vec<u8>>>(10)?.unwrap_or_default(),
                output_truncated: row.get(11)?,
                stderr_truncated: row.get(12)?,
                usage: Usage {
                    fuel_consumed: row.get::<_, i64>(13)?.max(0) as u64,
                    peak_memory_bytes: row.get::<_, i64>(14)?.max(0) as u64,
                    wall_ms: row.get::<_, i64>(15)?.max(0) as u64,
                    ..Usage::default()
                },
                denials: Vec::new(),
                kpis: fabric_types::Kpis::new(),
                started_at: time_opt(row.get(16)?),
                finished_at: time_opt(row.get(17)?),
            },
        )),
    };
    let egress: Option<String> = row.get(18)?;
    let kpis: Option<String> = row.get(19)?;
    let node: String = row.get(2)?;
    let claimed_at: i64 = row.get(3)?;
    let lease_until: Option<i64> = row.get(4)?;
    Ok((|| {
        let result = match result {
            None => None,
            Some((text, mut attempt)) => {
                attempt.outcome = text
                    .parse()
                    .map_err(|e| StoreError::Corrupt(format!("attempts.outcome of {id}: {e}")))?;
                egress_json::attempt_decode(
                    egress.as_deref(),
                    "attempts.egress",
                    &mut attempt.usage,
                    &mut attempt.denials,
                )?;
                attempt.kpis = telemetry_json::kpis_decode(kpis.as_deref(), "attempts.kpis")?;
                Some(attempt)
            }
        };
        Ok(AttemptRecord {
            number: u32::try_from(number).map_err(|_| {
                StoreError::Corrupt(format!("attempts.number {number} of {id} is out of range"))
            })?,
            id: AttemptId::from(id),
            node,
            claimed_at: from_millis(claimed_at),
            lease_until: time_opt(lease_until),
            result,
        })
    })())
}

/// One task with its attempts; `tenant: None` reads any tenant's.
pub(crate) fn load_task(
    conn: &Connection,
    tenant: Option<&str>,
    id: &str,
) -> Result<Option<TaskRecord>, StoreError> {
    let raw = match tenant {
        None => conn
            .prepare_cached(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"))
            .and_then(|mut s| s.query_row([id], raw_task).optional()),
        Some(tenant) => conn
            .prepare_cached(&format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1 AND tenant = ?2"
            ))
            .and_then(|mut s| s.query_row(params![id, tenant], raw_task).optional()),
    }
    .map_err(db_err("read a task"))?;
    let Some(raw) = raw else { return Ok(None) };
    let mut task = raw.into_record()?;
    task.attempts = load_attempts(conn, task.id.as_str())?;
    Ok(Some(task))
}

/// Tasks from a query selecting [`TASK_COLUMNS`], each with its attempts.
pub(crate) fn load_tasks(
    conn: &Connection,
    sql: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<TaskRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(db_err("list tasks"))?;
    let raws = stmt
        .query_map(args, raw_task)
        .map_err(db_err("list tasks"))?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err("list tasks"))?;
    raws.into_iter()
        .map(|raw| {
            let mut task = raw.into_record()?;
            task.attempts = load_attempts(conn, task.id.as_str())?;
            Ok(task)
        })
        .collect()
}

/// The columns [`raw_candidate`] expects: [`TASK_COLUMNS`], then the attempts counted so far
/// and the row's rowid.
pub(crate) const CANDIDATE_COLUMNS: &str = "id, tenant, module, input, priority, state, fuel, \
     memory_bytes, timeout_ms, output_bytes, log_bytes, max_attempts, backoff_ms, max_backoff_ms, retry_on, \
     idempotency_key, run_at, deadline, env, labels, created_at, started_at, finished_at, cancel_requested, \
     dirs, egress, args, progress, after_ids, pass_outputs, parent, depth, error, concurrency_key, \
     concurrency_limit, attempt_count, rowid";

/// A queued task about to be claimed, as stored.
pub(crate) struct RawCandidate {
    task: RawTask,
    attempt_count: i64,
    pub rowid: i64,
}

pub(crate) fn raw_candidate(row: &Row<'_>) -> rusqlite::Result<RawCandidate> {
    Ok(RawCandidate {
        task: raw_task(row)?,
        attempt_count: row.get(35)?,
        rowid: row.get(36)?,
    })
}

impl RawCandidate {
    pub(crate) fn id(&self) -> &str {
        &self.task.id
    }

    pub(crate) fn tenant(&self) -> &str {
        &self.task.tenant
    }

    pub(crate) fn priority(&self) -> i64 {
        self.task.priority
    }

    pub(crate) fn deadline(&self) -> Option<i64> {
        self.task.deadline
    }

    /// The concurrency key and limit, when it has one.
    pub(crate) fn concurrency(&self) -> Option<(&str, i64)> {
        Some((
            self.task.concurrency_key.as_deref()?,
            self.task.concurrency_limit?,
        ))
    }

    /// The number of the attempt a claim now starts.
    pub(crate) fn next_attempt(&self) -> i64 {
        self.attempt_count.saturating_add(1)
    }

    /// What the worker of the claimed task needs, under attempt `attempt_id`.
    pub(crate) fn into_claimed(
        self,
        attempt_id: AttemptId,
        claimed_at: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> Result<ClaimedTask, StoreError> {
        let number = self.next_attempt();
        let attempt_number = u32::try_from(number).map_err(|_| {
            StoreError::Corrupt(format!("task {} has {number} attempts", self.task.id))
        })?;
        let task = self.task.into_record()?;
        Ok(ClaimedTask::from_record(
            task,
            attempt_id,
            attempt_number,
            claimed_at,
            lease_until,
        ))
    }
}

/// A `modules` row selected with [`MODULE_COLUMNS`].
pub(crate) fn read_module_info(
    row: &Row<'_>,
) -> rusqlite::Result<(String, Option<String>, i64, String, i64)> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
    ))
}

pub(crate) fn module_info(
    raw: (String, Option<String>, i64, String, i64),
) -> Result<ModuleInfo, StoreError> {
    let (id, name, size, kind, created_at) = raw;
    Ok(ModuleInfo {
        id: parse_module_id(&id, "modules.id")?,
        name,
        size: to_u64(size, "modules.size")?,
        kind: kind
            .parse::<ModuleKind>()
            .map_err(|e| StoreError::Corrupt(format!("modules.kind: {e}")))?,
        created_at: from_millis(created_at),
    })
}
