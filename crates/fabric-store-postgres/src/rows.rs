//! Conversions between rows and the store's records: the column lists every query selects,
//! and the checks that turn stored values back into typed ones.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use fabric_store::{
    AttemptId, AttemptRecord, ClaimedTask, ModuleInfo, ModuleKind, StoreError, TaskId, TaskRecord,
    egress_json, from_millis, telemetry_json,
};
use fabric_types::{
    Attempt, Concurrency, Limits, ModuleId, Outcome, Priority, RetryPolicy, TaskState, Usage,
};
use time::OffsetDateTime;
use tokio_postgres::Row;
use tokio_postgres::types::FromSql;

use crate::error::corrupt;

/// The task columns [`read_task`] expects, in order. JSONB columns are read as text.
const TASK_COLUMNS: [&str; 36] = [
    "id",
    "tenant",
    "module",
    "input",
    "priority",
    "state",
    "fuel",
    "memory_bytes",
    "timeout_ms",
    "output_bytes",
    "log_bytes",
    "max_attempts",
    "backoff_ms",
    "max_backoff_ms",
    "retry_on",
    "idempotency_key",
    "run_at",
    "deadline",
    "env",
    "labels",
    "created_at",
    "started_at",
    "finished_at",
    "cancel_requested",
    "dirs",
    "egress",
    "args",
    "progress",
    "after_ids",
    "pass_outputs",
    "parent",
    "depth",
    "error",
    "concurrency_key",
    "concurrency_limit",
    "trace",
];

/// How many columns [`read_task`] reads.
pub(crate) const TASK_WIDTH: usize = TASK_COLUMNS.len();

/// The attempt columns [`read_attempt`] expects, in order.
const ATTEMPT_COLUMNS: [&str; 20] = [
    "id",
    "number",
    "node",
    "claimed_at",
    "lease_until",
    "outcome",
    "exit_code",
    "trap",
    "error",
    "output",
    "stderr",
    "output_truncated",
    "stderr_truncated",
    "fuel_consumed",
    "peak_memory_bytes",
    "wall_ms",
    "started_at",
    "finished_at",
    "egress",
    "kpis",
];

/// The module columns [`read_module_info`] expects, in order (`bytes` may follow).
pub(crate) const MODULE_COLUMNS: &str = "id, name, size, kind, created_at";

/// The task columns qualified by `alias`, as a select list.
pub(crate) fn task_columns(alias: &str) -> String {
    TASK_COLUMNS
        .iter()
        .map(|c| match *c {
            "env" | "labels" | "dirs" | "egress" | "args" | "progress" => {
                format!("{alias}.{c}::text AS {c}")
            }
            _ => format!("{alias}.{c}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The attempt columns qualified by `alias`, each renamed `a_<column>`.
pub(crate) fn attempt_columns(alias: &str) -> String {
    ATTEMPT_COLUMNS
        .iter()
        .map(|c| match *c {
            "egress" | "kpis" => format!("{alias}.{c}::text AS a_{c}"),
            _ => format!("{alias}.{c} AS a_{c}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `SELECT` of one task and its attempts (one row per attempt, or one with NULL attempt
/// columns), oldest attempt first; `$1` is the id, `$2` (when `by_tenant`) the tenant.
pub(crate) fn task_with_attempts_sql(by_tenant: bool) -> &'static str {
    static ANY: LazyLock<String> = LazyLock::new(|| task_sql(""));
    static TENANT: LazyLock<String> = LazyLock::new(|| task_sql(" AND t.tenant = $2"));
    fn task_sql(filter: &str) -> String {
        format!(
            "SELECT {}, {} FROM tasks t LEFT JOIN attempts a ON a.task_id = t.id
             WHERE t.id = $1{filter} ORDER BY a.number",
            task_columns("t"),
            attempt_columns("a")
        )
    }
    if by_tenant { &TENANT } else { &ANY }
}

/// One column, or `Corrupt` naming it.
fn col<'a, T: FromSql<'a>>(row: &'a Row, index: usize) -> Result<T, StoreError> {
    row.try_get(index).map_err(|e| {
        let name = row
            .columns()
            .get(index)
            .map_or("?", |c| c.name())
            .to_string();
        corrupt(format!("column {name} cannot be read: {e}"))
    })
}

/// A stored `u64` (PostgreSQL integers are signed; values above `i64::MAX` are refused).
pub(crate) fn to_i64(value: u64, field: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| {
        StoreError::InvalidArgument(format!("{field} = {value} is larger than {}", i64::MAX))
    })
}

fn to_u64(value: i64, field: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt(format!("{field} is negative: {value}")))
}

/// Milliseconds since the Unix epoch.
pub(crate) fn ms(at: OffsetDateTime) -> i64 {
    fabric_store::to_millis(at)
}

fn time_opt(ms: Option<i64>) -> Option<OffsetDateTime> {
    ms.map(from_millis)
}

/// The JSON text stored for an env or labels map.
pub(crate) fn map_json(map: &BTreeMap<String, String>) -> String {
    serde_json::to_string(map).unwrap_or_else(|_| "{}".to_string())
}

fn parse_map(text: &str, column: &str) -> Result<BTreeMap<String, String>, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| corrupt(format!("{column} is not a JSON object of strings: {e}")))
}

/// `retry_on` as stored: outcome names joined by commas (turned into `TEXT[]` in SQL).
pub(crate) fn retry_on_text(outcomes: &[Outcome]) -> String {
    outcomes
        .iter()
        .map(|o| o.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn parse_retry_on(names: &[String]) -> Result<Vec<Outcome>, StoreError> {
    names
        .iter()
        .map(|s| {
            s.parse()
                .map_err(|e| corrupt(format!("tasks.retry_on: {e}")))
        })
        .collect()
}

pub(crate) fn parse_state(text: &str) -> Result<TaskState, StoreError> {
    text.parse()
        .map_err(|e| corrupt(format!("tasks.state: {e}")))
}

pub(crate) fn parse_priority(rank: i16) -> Result<Priority, StoreError> {
    u8::try_from(rank)
        .ok()
        .and_then(Priority::from_rank)
        .ok_or_else(|| corrupt(format!("tasks.priority {rank} is not a rank from 0 to 4")))
}

fn parse_module_id(text: &str, column: &str) -> Result<ModuleId, StoreError> {
    text.parse().map_err(|e| corrupt(format!("{column}: {e}")))
}

/// A retry policy from its stored columns.
pub(crate) fn retry_policy(
    max_attempts: i64,
    backoff_ms: i64,
    max_backoff_ms: i64,
    retry_on: &[String],
) -> Result<RetryPolicy, StoreError> {
    Ok(RetryPolicy {
        max_attempts: u32::try_from(max_attempts)
            .map_err(|_| corrupt(format!("tasks.max_attempts {max_attempts} is out of range")))?,
        backoff_ms: to_u64(backoff_ms, "tasks.backoff_ms")?,
        max_backoff_ms: to_u64(max_backoff_ms, "tasks.max_backoff_ms")?,
        retry_on: parse_retry_on(retry_on)?,
    })
}

/// A task (without attempts) from the [`TASK_WIDTH`] columns starting at `at`.
pub(crate) fn read_task(row: &Row, at: usize) -> Result<TaskRecord, StoreError> {
    let c = |i: usize| at + i;
    let retry_on: Vec<String> = col(row, c(14))?;
    Ok(TaskRecord {
        id: TaskId::from(col::<String>(row, c(0))?),
        tenant: col(row, c(1))?,
        module: parse_module_id(col(row, c(2))?, "tasks.module")?,
        input: col(row, c(3))?,
        priority: parse_priority(col(row, c(4))?)?,
        state: parse_state(col(row, c(5))?)?,
        limits: Limits {
            fuel: to_u64(col(row, c(6))?, "tasks.fuel")?,
            memory_bytes: to_u64(col(row, c(7))?, "tasks.memory_bytes")?,
            timeout_ms: to_u64(col(row, c(8))?, "tasks.timeout_ms")?,
            output_bytes: to_u64(col(row, c(9))?, "tasks.output_bytes")?,
            log_bytes: to_u64(col(row, c(10))?, "tasks.log_bytes")?,
        },
        retry: retry_policy(
            col(row, c(11))?,
            col(row, c(12))?,
            col(row, c(13))?,
            &retry_on,
        )?,
        idempotency_key: col(row, c(15))?,
        run_at: time_opt(col(row, c(16))?),
        deadline: time_opt(col(row, c(17))?),
        env: parse_map(col(row, c(18))?, "tasks.env")?,
        labels: parse_map(col(row, c(19))?, "tasks.labels")?,
        created_at: from_millis(col(row, c(20))?),
        started_at: time_opt(col(row, c(21))?),
        finished_at: time_opt(col(row, c(22))?),
        cancel_requested: col(row, c(23))?,
        dirs: parse_map(col(row, c(24))?, "tasks.dirs")?,
        egress: egress_json::names_decode(
            col::<Option<String>>(row, c(25))?.as_deref(),
            "tasks.egress",
        )?,
        args: telemetry_json::args_decode(
            col::<Option<String>>(row, c(26))?.as_deref(),
            "tasks.args",
        )?,
        progress: telemetry_json::progress_decode(
            col::<Option<String>>(row, c(27))?.as_deref(),
            "tasks.progress",
        )?,
        attempts: Vec::new(),
        after: col::<Option<Vec<String>>>(row, c(28))?
            .unwrap_or_default()
            .into_iter()
            .map(TaskId::from)
            .collect(),
        pass_outputs: col(row, c(29))?,
        parent: col::<Option<String>>(row, c(30))?.map(TaskId::from),
        depth: {
            let depth: i32 = col(row, c(31))?;
            u32::try_from(depth)
                .map_err(|_| corrupt(format!("tasks.depth {depth} is out of range")))?
        },
        error: col(row, c(32))?,
        concurrency: match (
            col::<Option<String>>(row, c(33))?,
            col::<Option<i32>>(row, c(34))?,
        ) {
            (Some(key), Some(limit)) => Some(Concurrency {
                key,
                limit: u32::try_from(limit).map_err(|_| {
                    corrupt(format!("tasks.concurrency_limit {limit} is out of range"))
                })?,
            }),
            (None, None) => None,
            _ => {
                return Err(corrupt(
                    "tasks.concurrency_key and concurrency_limit must be set together",
                ));
            }
        },
        trace: col(row, c(35))?,
    })
}

/// An attempt from the columns of [`attempt_columns`] starting at `at`; `None` when they
/// are NULL (a task without attempts in a `LEFT JOIN`).
pub(crate) fn read_attempt(row: &Row, at: usize) -> Result<Option<AttemptRecord>, StoreError> {
    let c = |i: usize| at + i;
    let Some(id) = col::<Option<String>>(row, c(0))? else {
        return Ok(None);
    };
    let number: i32 = col(row, c(1))?;
    let outcome: Option<String> = col(row, c(5))?;
    let result = match outcome {
        None => None,
        Some(text) => Some({
            let mut attempt = Attempt {
                outcome: text
                    .parse()
                    .map_err(|e| corrupt(format!("attempts.outcome of {id}: {e}")))?,
                exit_code: col(row, c(6))?,
                trap: col(row, c(7))?,
                error: col(row, c(8))?,
                output: col::<Option<Vec<u8>>>(row, c(9))?.unwrap_or_default(),
                stderr: col::<Option<Vec<u8>>>(row, c(10))?.unwrap_or_default(),
                output_truncated: col(row, c(11))?,
                stderr_truncated: col(row, c(12))?,
                usage: Usage {
                    fuel_consumed: to_u64(col(row, c(13))?, "attempts.fuel_consumed")?,
                    peak_memory_bytes: to_u64(col(row, c(14))?, "attempts.peak_memory_bytes")?,
                    wall_ms: to_u64(col(row, c(15))?, "attempts.wall_ms")?,
                    ..Usage::default()
                },
                denials: Vec::new(),
                kpis: telemetry_json::kpis_decode(
                    col::<Option<String>>(row, c(19))?.as_deref(),
                    "attempts.kpis",
                )?,
                started_at: time_opt(col(row, c(16))?),
                finished_at: time_opt(col(row, c(17))?),
            };
            egress_json::attempt_decode(
                col::<Option<String>>(row, c(18))?.as_deref(),
                "attempts.egress",
                &mut attempt.usage,
                &mut attempt.denials,
            )?;
            attempt
        }),
    };
    Ok(Some(AttemptRecord {
        number: u32::try_from(number)
            .map_err(|_| corrupt(format!("attempts.number {number} of {id} is out of range")))?,
        node: col(row, c(2))?,
        claimed_at: from_millis(col(row, c(3))?),
        lease_until: time_opt(col(row, c(4))?),
        result,
        id: AttemptId::from(id),
    }))
}

/// Tasks with their attempts from rows of a task-and-attempts join, ordered so that each
/// task's rows are adjacent (oldest attempt first).
pub(crate) fn group_tasks(rows: &[Row]) -> Result<Vec<TaskRecord>, StoreError> {
    let mut tasks: Vec<TaskRecord> = Vec::new();
    for row in rows {
        let id: &str = col(row, 0)?;
        let same = tasks.last().is_some_and(|t| t.id.as_str() == id);
        if !same {
            tasks.push(read_task(row, 0)?);
        }
        if let Some(attempt) = read_attempt(row, TASK_WIDTH)?
            && let Some(task) = tasks.last_mut()
        {
            task.attempts.push(attempt);
        }
    }
    Ok(tasks)
}

/// A task a claim statement returned: the task's columns, then the attempt id and the
/// attempt number, held from `claimed_at` until `lease_until`.
pub(crate) fn claimed_from_row(
    row: &Row,
    claimed_at: OffsetDateTime,
    lease_until: OffsetDateTime,
) -> Result<ClaimedTask, StoreError> {
    let task = read_task(row, 0)?;
    let attempt_id: String = row.get(TASK_WIDTH);
    let attempt_number: i32 = row.get(TASK_WIDTH + 1);
    let attempt_number = u32::try_from(attempt_number).map_err(|_| {
        corrupt(format!(
            "task {} has {attempt_number} attempts",
            task.id.as_str()
        ))
    })?;
    Ok(ClaimedTask::from_record(
        task,
        AttemptId::from(attempt_id),
        attempt_number,
        claimed_at,
        lease_until,
    ))
}

/// A module without its bytes from [`MODULE_COLUMNS`].
pub(crate) fn read_module_info(row: &Row) -> Result<ModuleInfo, StoreError> {
    Ok(ModuleInfo {
        id: parse_module_id(col(row, 0)?, "modules.id")?,
        name: col(row, 1)?,
        size: to_u64(col(row, 2)?, "modules.size")?,
        kind: col::<&str>(row, 3)?
            .parse::<ModuleKind>()
            .map_err(|e| corrupt(format!("modules.kind: {e}")))?,
        created_at: from_millis(col(row, 4)?),
    })
}
