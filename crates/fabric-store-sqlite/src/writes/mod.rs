//! Every write of the store, as a function over the writer's connection; each runs inside
//! the group transaction and, unless it is the transaction's first, a savepoint of its own
//! (see `writer`). Rows found by a statement are changed by their rowid, one statement per
//! row: such single-row statements need no statement journal and no temporary tables, which
//! makes them cheaper than one statement over the whole batch. Every change of a task's state
//! also changes its count (see `counts`).

mod claim;
mod complete;
mod insert;
mod maintenance;
mod module_delete;
mod report;
mod workflow;

pub(crate) use claim::{task_claim, task_heartbeat};
pub(crate) use complete::{task_cancel, task_complete};
pub(crate) use insert::{module_put, task_insert};
pub(crate) use maintenance::{task_expire, task_promote, task_prune, task_rescue};
pub(crate) use module_delete::module_delete;
pub(crate) use report::{task_progress, write_rollup};

use std::rc::Rc;
use std::sync::LazyLock;

use fabric_store::{StoreError, claim_sort_key, rules};
use fabric_types::{Attempt, TaskState};
use rusqlite::params;
use rusqlite::types::Value;
use rusqlite::vtab::array::Array;
use time::OffsetDateTime;

use crate::db_err;
use crate::rows::{CANDIDATE_COLUMNS, ms, parse_priority, to_i64};
use crate::writer::WriteCtx;

/// Stores one new task.
pub(crate) const INSERT_TASK: &str = "INSERT INTO tasks (id, tenant, module, input, priority, state, fuel, memory_bytes,
        timeout_ms, output_bytes, log_bytes, max_attempts, backoff_ms, max_backoff_ms, retry_on, idempotency_key,
        run_at, deadline, env, labels, created_at, sort_key, dirs, egress, args, after_ids, pass_outputs, parent, depth,
        error, finished_at, concurrency_key, concurrency_limit)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24,
        ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, ?33)";

/// One tenant's fair-share clock at one priority (see [`fabric_store::FairClock`]).
pub(crate) const READ_CLOCK: &str =
    "SELECT clock FROM fair_clocks WHERE tenant = ?1 AND priority = ?2";

/// Stores one tenant's fair-share clock at one priority.
pub(crate) const WRITE_CLOCK: &str =
    "INSERT INTO fair_clocks (tenant, priority, clock) VALUES (?1, ?2, ?3)
     ON CONFLICT (tenant, priority) DO UPDATE SET clock = excluded.clock";

/// The first queued tasks in claim order, whole.
pub(crate) static CANDIDATES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {CANDIDATE_COLUMNS} FROM tasks INDEXED BY tasks_claim
         WHERE state = 'queued' ORDER BY sort_key, id LIMIT ?1"
    )
});

/// Moves one queued task to `running` under a new attempt, clearing the progress an earlier
/// attempt reported.
pub(crate) const CLAIM: &str =
    "UPDATE tasks SET state = 'running', attempt_count = ?2, current_attempt = ?3,
        lease_until = ?4, started_at = COALESCE(started_at, ?5), progress = NULL
     WHERE rowid = ?1";

/// Records a new attempt.
pub(crate) const NEW_ATTEMPT: &str =
    "INSERT INTO attempts (id, task_id, number, node, claimed_at, lease_until)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// Where the tasks of an array of attempt ids stand, by position in the array (from 1).
pub(crate) const HOLDERS: &str =
    "SELECT j.rowid, t.rowid, a.rowid, t.id, t.tenant, t.priority, t.state,
        t.current_attempt, t.cancel_requested, t.module
     FROM rarray(?1) AS j CROSS JOIN attempts AS a ON a.id = j.value
        CROSS JOIN tasks AS t ON t.id = a.task_id";

/// Records how one attempt ended.
pub(crate) const END_ATTEMPT: &str =
    "UPDATE attempts SET lease_until = NULL, outcome = ?2, exit_code = ?3, trap = ?4, error = ?5,
        output = ?6, stderr = ?7, output_truncated = ?8, stderr_truncated = ?9, fuel_consumed = ?10,
        peak_memory_bytes = ?11, wall_ms = ?12, started_at = ?13, finished_at = ?14, egress = ?15,
        kpis = ?16
     WHERE rowid = ?1";

/// Moves one task to a terminal state.
pub(crate) const FINISH: &str =
    "UPDATE tasks SET state = ?2, finished_at = ?3, current_attempt = NULL, lease_until = NULL
     WHERE rowid = ?1";

/// Renews the leases on the tasks of an array of attempt ids, where still held. (The
/// unary `+` keeps the planner from scanning every running task through `tasks_lease`.)
pub(crate) const RENEW_TASKS: &str = "UPDATE tasks SET lease_until = ?2
     WHERE id IN (SELECT a.task_id FROM rarray(?1) AS j CROSS JOIN attempts AS a ON a.id = j.value)
        AND current_attempt IN rarray(?1) AND +state = 'running'
     RETURNING current_attempt, cancel_requested";

/// Renews the leases of an array of attempt ids.
pub(crate) const RENEW_ATTEMPTS: &str =
    "UPDATE attempts SET lease_until = ?2 WHERE id IN rarray(?1)";

/// A batch of ids handed to one statement as `rarray(?)`.
fn array<T: Into<String>>(items: impl IntoIterator<Item = T>) -> Array {
    Rc::new(
        items
            .into_iter()
            .map(|item| Value::Text(item.into()))
            .collect(),
    )
}

/// A task as a change of its state needs it: the row, and what its count is kept by.
struct TaskKey {
    rowid: i64,
    id: String,
    tenant: String,
    priority: i64,
    state: TaskState,
}

/// Moves one task to a terminal state at `now`, and the tasks waiting on it on (see
/// [`workflow::dependents_move_on`]), in the same transaction.
fn finish(
    ctx: &mut WriteCtx<'_>,
    task: &TaskKey,
    state: TaskState,
    now: i64,
) -> Result<(), StoreError> {
    ctx.conn
        .prepare_cached(FINISH)
        .and_then(|mut s| s.execute(params![task.rowid, state.as_str(), now]))
        .map_err(db_err("finish a task"))?;
    ctx.counts
        .moved(&task.tenant, task.priority, task.state, state);
    workflow::dependents_move_on(ctx, &task.id, now)
}

/// Makes a task claimable, joining the line at `enqueued_at` — unless `keep_key` and it
/// already has a key (a task inserted as scheduled carries its fair key while it waits).
fn enqueue(
    ctx: &mut WriteCtx<'_>,
    task: &TaskKey,
    enqueued_at: i64,
    keep_key: bool,
) -> Result<(), StoreError> {
    let key = claim_sort_key(
        enqueued_at,
        parse_priority(task.priority)?,
        ctx.aging_step_ms,
    );
    let sql = if keep_key {
        "UPDATE tasks SET state = 'queued', sort_key = COALESCE(sort_key, ?2), current_attempt = NULL,
            lease_until = NULL
         WHERE rowid = ?1"
    } else {
        "UPDATE tasks SET state = 'queued', sort_key = ?2, current_attempt = NULL, lease_until = NULL
         WHERE rowid = ?1"
    };
    ctx.conn
        .prepare_cached(sql)
        .and_then(|mut s| s.execute(params![task.rowid, key]))
        .map_err(db_err("queue a task"))?;
    ctx.counts
        .moved(&task.tenant, task.priority, task.state, TaskState::Queued);
    ctx.made_ready = true;
    Ok(())
}

/// Makes a task wait for a retry until `run_at`, without a sort key: its promotion keys it
/// at `run_at`.
fn schedule(ctx: &mut WriteCtx<'_>, task: &TaskKey, run_at: i64) -> Result<(), StoreError> {
    ctx.conn
        .prepare_cached(
            "UPDATE tasks SET state = 'scheduled', run_at = ?2, sort_key = NULL, current_attempt = NULL,
                lease_until = NULL
             WHERE rowid = ?1",
        )
        .and_then(|mut s| s.execute(params![task.rowid, run_at]))
        .map_err(db_err("schedule a task"))?;
    ctx.counts.moved(
        &task.tenant,
        task.priority,
        task.state,
        TaskState::Scheduled,
    );
    Ok(())
}

/// Puts a task whose attempt ended back in line for another attempt at `run_at`: queued
/// now, or scheduled until then (see [`rules::waiting_state`]).
fn wait_for_retry(
    ctx: &mut WriteCtx<'_>,
    task: &TaskKey,
    run_at: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<TaskState, StoreError> {
    let state = rules::waiting_state(run_at, now);
    match state {
        TaskState::Queued => enqueue(ctx, task, ms(now), false)?,
        _ => schedule(ctx, task, ms(run_at))?,
    }
    Ok(state)
}

/// Writes how an attempt ended and ends its lease.
fn record_attempt(ctx: &WriteCtx<'_>, attempt_rowid: i64, a: &Attempt) -> Result<(), StoreError> {
    ctx.conn
        .prepare_cached(END_ATTEMPT)
        .and_then(|mut s| {
            s.execute(params![
                attempt_rowid,
                a.outcome.as_str(),
                a.exit_code,
                a.trap,
                a.error,
                a.output,
                a.stderr,
                a.output_truncated,
                a.stderr_truncated,
                to_i64(a.usage.fuel_consumed, "usage.fuel_consumed").unwrap_or(i64::MAX),
                to_i64(a.usage.peak_memory_bytes, "usage.peak_memory_bytes").unwrap_or(i64::MAX),
                to_i64(a.usage.wall_ms, "usage.wall_ms").unwrap_or(i64::MAX),
                a.started_at.map(ms),
                a.finished_at.map(ms),
                fabric_store::egress_json::attempt_encode(&a.usage, &a.denials),
                fabric_store::telemetry_json::kpis_encode(&a.kpis),
            ])
        })
        .map_err(db_err("record an attempt's end"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn migrated_connection(dir: &tempfile::TempDir) -> rusqlite::Connection {
        let path = dir.path().join("fabric.db");
        drop(crate::SqliteStore::open(&path, crate::SqliteOptions::default()).unwrap());
        let conn = rusqlite::Connection::open(&path).unwrap();
        rusqlite::vtab::array::load_module(&conn).unwrap();
        conn
    }

    /// The `detail` column of `EXPLAIN QUERY PLAN`, or the opcodes of `EXPLAIN`, of `sql`.
    fn explain(conn: &rusqlite::Connection, how: &str, column: usize, sql: &str) -> Vec<String> {
        let mut stmt = conn.prepare(&format!("{how} {sql}")).unwrap();
        let nulls = vec![rusqlite::types::Null; stmt.parameter_count()];
        stmt.query_map(rusqlite::params_from_iter(nulls), |r| r.get(column))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// The hot statements find their rows through indexes: no full scan of a table, no
    /// sort. (Without `ANALYZE` statistics the planner could otherwise pick a poor index.)
    #[test]
    fn hot_statements_use_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let conn = migrated_connection(&dir);
        for sql in [
            &CANDIDATES,
            READ_CLOCK,
            CLAIM,
            NEW_ATTEMPT,
            HOLDERS,
            END_ATTEMPT,
            FINISH,
            RENEW_TASKS,
            RENEW_ATTEMPTS,
            report::KPI_UPSERT,
            report::USAGE_UPSERT,
            report::SET_PROGRESS,
            workflow::DEPENDENTS,
            claim::RUNNING_WITH_KEY,
        ] {
            let plan = explain(&conn, "EXPLAIN QUERY PLAN", 3, sql);
            for step in &plan {
                let full_scan = step.starts_with("SCAN ")
                    && !step.contains("VIRTUAL TABLE")
                    && !step.contains("USING INDEX tasks_claim");
                assert!(
                    !full_scan && !step.contains("TEMP B-TREE"),
                    "{sql}\nhas the plan {plan:#?}"
                );
            }
        }
    }

    /// The statements run once per task build no temporary b-tree (SQLite compiles a
    /// `CHECK (x IN (...))` with more than two values into one, filled on every execution;
    /// migration 0003 rewrote it).
    #[test]
    fn per_task_statements_build_no_temporary_btree() {
        let dir = tempfile::tempdir().unwrap();
        let conn = migrated_connection(&dir);
        for sql in [INSERT_TASK, CLAIM, NEW_ATTEMPT, END_ATTEMPT, FINISH] {
            let opcodes = explain(&conn, "EXPLAIN", 1, sql);
            assert!(
                !opcodes.iter().any(|op| op == "OpenEphemeral"),
                "{sql}\nopens a temporary b-tree: {opcodes:?}"
            );
        }
    }
}
