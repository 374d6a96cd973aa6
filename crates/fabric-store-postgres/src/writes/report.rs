//! Writes of what agents report: progress of running attempts, and the hourly KPI and usage
//! rollups added to in the transactions that end attempts.

use deadpool_postgres::GenericClient;
use fabric_store::rollup::{Rollup, saturate};
use fabric_store::{StoreError, TaskProgressParams, telemetry_json};

use crate::db::{Db, execute};

/// Adds KPI stats to their hourly rows, one row per key (the batch was merged by key, so no
/// row is touched twice), in key order, so concurrent nodes lock rows in one order. Counts
/// saturate at the largest BIGINT and sums at the largest finite double (added as numeric,
/// which cannot overflow).
const KPI_UPSERT: &str =
    "INSERT INTO kpi_hourly AS k (tenant, module, hour, name, count, sum, min, max)
    SELECT u.t, u.m, u.h, u.n, u.c, u.s, u.lo, u.hi
    FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::int8[], $6::float8[],
        $7::float8[], $8::float8[]) WITH ORDINALITY AS u(t, m, h, n, c, s, lo, hi, ord)
    ORDER BY u.ord
    ON CONFLICT (tenant, module, hour, name) DO UPDATE SET
        count = LEAST(k.count::numeric + EXCLUDED.count, 9223372036854775807)::int8,
        sum = GREATEST(LEAST(k.sum::numeric + EXCLUDED.sum::numeric,
            1.7976931348623157e308), -1.7976931348623157e308)::float8,
        min = LEAST(k.min, EXCLUDED.min),
        max = GREATEST(k.max, EXCLUDED.max)";

/// Adds attempts' usage to their hourly rows, as [`KPI_UPSERT`] does, each count saturating
/// at the largest BIGINT.
const USAGE_UPSERT: &str = "INSERT INTO usage_hourly AS s (tenant, module, hour, attempts,
        fuel_consumed, wall_ms, memory_byte_seconds, http_requests, http_bytes_sent,
        http_bytes_received)
    SELECT u.t, u.m, u.h, u.a, u.f, u.w, u.mbs, u.rq, u.bs, u.br
    FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[], $6::int8[],
        $7::int8[], $8::int8[], $9::int8[], $10::int8[])
        WITH ORDINALITY AS u(t, m, h, a, f, w, mbs, rq, bs, br, ord)
    ORDER BY u.ord
    ON CONFLICT (tenant, module, hour) DO UPDATE SET
        attempts = LEAST(s.attempts::numeric + EXCLUDED.attempts, 9223372036854775807)::int8,
        fuel_consumed = LEAST(s.fuel_consumed::numeric + EXCLUDED.fuel_consumed,
            9223372036854775807)::int8,
        wall_ms = LEAST(s.wall_ms::numeric + EXCLUDED.wall_ms, 9223372036854775807)::int8,
        memory_byte_seconds = LEAST(s.memory_byte_seconds::numeric + EXCLUDED.memory_byte_seconds,
            9223372036854775807)::int8,
        http_requests = LEAST(s.http_requests::numeric + EXCLUDED.http_requests,
            9223372036854775807)::int8,
        http_bytes_sent = LEAST(s.http_bytes_sent::numeric + EXCLUDED.http_bytes_sent,
            9223372036854775807)::int8,
        http_bytes_received = LEAST(s.http_bytes_received::numeric + EXCLUDED.http_bytes_received,
            9223372036854775807)::int8";

/// Upserts a write's rollup in the caller's transaction: one statement per table.
pub(crate) async fn write_rollup<C: GenericClient>(
    c: &C,
    rollup: &Rollup,
) -> Result<(), StoreError> {
    if !rollup.kpis.is_empty() {
        let mut cols: (Vec<&str>, Vec<&str>, Vec<i64>, Vec<&str>) = Default::default();
        let mut stats: (Vec<i64>, Vec<f64>, Vec<f64>, Vec<f64>) = Default::default();
        for ((key, name), t) in &rollup.kpis {
            cols.0.push(&key.tenant);
            cols.1.push(&key.module);
            cols.2.push(key.hour_ms);
            cols.3.push(name);
            stats.0.push(saturate(t.count));
            stats.1.push(t.sum);
            stats.2.push(t.min);
            stats.3.push(t.max);
        }
        execute(
            c,
            "add to the KPI rollup",
            KPI_UPSERT,
            &[
                &cols.0, &cols.1, &cols.2, &cols.3, &stats.0, &stats.1, &stats.2, &stats.3,
            ],
        )
        .await?;
    }
    if !rollup.usage.is_empty() {
        let mut keys: (Vec<&str>, Vec<&str>, Vec<i64>) = Default::default();
        let mut columns: [Vec<i64>; 7] = Default::default();
        for (key, t) in &rollup.usage {
            keys.0.push(&key.tenant);
            keys.1.push(&key.module);
            keys.2.push(key.hour_ms);
            for (column, value) in columns.iter_mut().zip(t.columns()) {
                column.push(value);
            }
        }
        let [a, b, c2, d, e, f, g] = &columns;
        execute(
            c,
            "add to the usage rollup",
            USAGE_UPSERT,
            &[&keys.0, &keys.1, &keys.2, a, b, c2, d, e, f, g],
        )
        .await?;
    }
    Ok(())
}

/// Sets progress on the tasks the attempts `$1` still hold (`$2[i]` for `$1[i]`), locking
/// them in task id order, as completions do, so the two cannot deadlock.
const SET_PROGRESS: &str = "WITH held AS MATERIALIZED (
        SELECT t.id, u.progress FROM tasks t
        JOIN unnest($1::text[], $2::text[]) AS u(attempt, progress) ON t.current_attempt = u.attempt
        WHERE t.state = 'running'
        ORDER BY t.id FOR UPDATE OF t
    )
    UPDATE tasks t SET progress = h.progress::jsonb FROM held h WHERE t.id = h.id";

/// `task_progress`: one statement for the batch, fenced by attempt id.
pub(crate) async fn task_progress(db: &Db, p: TaskProgressParams) -> Result<u64, StoreError> {
    let updates = p.last_per_attempt()?;
    if updates.is_empty() {
        return Ok(0);
    }
    let attempts: Vec<&str> = updates.iter().map(|u| u.attempt_id.as_str()).collect();
    let progress: Vec<String> = updates
        .iter()
        .map(|u| telemetry_json::progress_encode(&u.progress))
        .collect();
    let client = db.client("task_progress").await?;
    execute(
        &client,
        "record progress",
        SET_PROGRESS,
        &[&attempts, &progress],
    )
    .await
}
