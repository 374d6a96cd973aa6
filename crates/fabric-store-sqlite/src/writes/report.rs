//! Writes of what agents report: progress of running attempts, and the hourly KPI and usage
//! rollups added to in the transactions that end attempts.

use fabric_store::rollup::{Rollup, saturate};
use fabric_store::{AttemptId, StoreError, TaskProgressParams, telemetry_json};
use rusqlite::params;

use crate::db_err;
use crate::writer::WriteCtx;

/// Adds one KPI's stats to its hourly row. Counts saturate at the largest INTEGER (an
/// overflowing `+` turns REAL, larger than it); sums at the largest finite REAL.
pub(crate) const KPI_UPSERT: &str =
    "INSERT INTO kpi_hourly (tenant, module, hour, name, count, sum, min, max)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
     ON CONFLICT (tenant, module, hour, name) DO UPDATE SET
        count = min(kpi_hourly.count + excluded.count, 9223372036854775807),
        sum = max(min(kpi_hourly.sum + excluded.sum, 1.7976931348623157e308), -1.7976931348623157e308),
        min = min(kpi_hourly.min, excluded.min),
        max = max(kpi_hourly.max, excluded.max)";

/// Adds attempts' usage to their hourly row, each count saturating at the largest INTEGER.
pub(crate) const USAGE_UPSERT: &str = "INSERT INTO usage_hourly (tenant, module, hour, attempts,
        fuel_consumed, wall_ms, memory_byte_seconds, http_requests, http_bytes_sent, http_bytes_received)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
     ON CONFLICT (tenant, module, hour) DO UPDATE SET
        attempts = min(usage_hourly.attempts + excluded.attempts, 9223372036854775807),
        fuel_consumed = min(usage_hourly.fuel_consumed + excluded.fuel_consumed, 9223372036854775807),
        wall_ms = min(usage_hourly.wall_ms + excluded.wall_ms, 9223372036854775807),
        memory_byte_seconds = min(usage_hourly.memory_byte_seconds + excluded.memory_byte_seconds,
            9223372036854775807),
        http_requests = min(usage_hourly.http_requests + excluded.http_requests, 9223372036854775807),
        http_bytes_sent = min(usage_hourly.http_bytes_sent + excluded.http_bytes_sent, 9223372036854775807),
        http_bytes_received = min(usage_hourly.http_bytes_received + excluded.http_bytes_received,
            9223372036854775807)";

/// Sets a task's progress where `?1` still holds it, finding the task through the
/// attempt's primary key (the unary `+` keeps the state out of the index choice).
pub(crate) const SET_PROGRESS: &str = "UPDATE tasks SET progress = ?2
     WHERE id = (SELECT task_id FROM attempts WHERE id = ?1) AND current_attempt = ?1
        AND +state = 'running'";

/// Upserts a write's rollup: one statement per key.
pub(crate) fn write_rollup(ctx: &WriteCtx<'_>, rollup: &Rollup) -> Result<(), StoreError> {
    if !rollup.kpis.is_empty() {
        let mut upsert = ctx
            .conn
            .prepare_cached(KPI_UPSERT)
            .map_err(db_err("add to the KPI rollup"))?;
        for ((key, name), t) in &rollup.kpis {
            upsert
                .execute(params![
                    key.tenant,
                    key.module,
                    key.hour_ms,
                    name,
                    saturate(t.count),
                    t.sum,
                    t.min,
                    t.max
                ])
                .map_err(db_err("add to the KPI rollup"))?;
        }
    }
    if !rollup.usage.is_empty() {
        let mut upsert = ctx
            .conn
            .prepare_cached(USAGE_UPSERT)
            .map_err(db_err("add to the usage rollup"))?;
        for (key, t) in &rollup.usage {
            let [a, b, c, d, e, f, g] = t.columns();
            upsert
                .execute(params![
                    key.tenant,
                    key.module,
                    key.hour_ms,
                    a,
                    b,
                    c,
                    d,
                    e,
                    f,
                    g
                ])
                .map_err(db_err("add to the usage rollup"))?;
        }
    }
    Ok(())
}

/// `task_progress`: each update where its attempt still holds its task.
pub(crate) fn task_progress(
    ctx: &mut WriteCtx<'_>,
    p: TaskProgressParams,
) -> Result<u64, StoreError> {
    let updates = p.last_per_attempt()?;
    let mut set = ctx
        .conn
        .prepare_cached(SET_PROGRESS)
        .map_err(db_err("record progress"))?;
    let mut applied = 0;
    for u in updates {
        let changed = set
            .execute(params![
                AttemptId::as_str(&u.attempt_id),
                telemetry_json::progress_encode(&u.progress)
            ])
            .map_err(db_err("record progress"))?;
        applied += changed as u64;
    }
    Ok(applied)
}
