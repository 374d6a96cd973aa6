//! The `schedules` table: cron schedules by tenant and name (see
//! [`fabric_store::ScheduleRecord`]). The writer is the only one, so a put's count of the
//! tenant's schedules and its write cannot race.

use fabric_store::{
    ScheduleAdvanceParams, ScheduleDeleteParams, ScheduleDueParams, SchedulePut, SchedulePutParams,
    ScheduleRecord, StoreError, TaskId, from_millis,
};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::db_err;
use crate::rows::ms;
use crate::writer::WriteCtx;

/// The columns [`read_schedule`] expects, in order.
const COLUMNS: &str =
    "tenant, name, cron, timezone, task, next_run_at, last_task, created_at, updated_at";

fn read_schedule(row: &Row<'_>) -> rusqlite::Result<ScheduleRecord> {
    Ok(ScheduleRecord {
        tenant: row.get(0)?,
        name: row.get(1)?,
        cron: row.get(2)?,
        timezone: row.get(3)?,
        task: row.get(4)?,
        next_run_at: from_millis(row.get(5)?),
        last_task: row.get::<_, Option<String>>(6)?.map(TaskId::from),
        created_at: from_millis(row.get(7)?),
        updated_at: from_millis(row.get(8)?),
    })
}

/// One schedule of one tenant.
pub(crate) fn get(
    conn: &Connection,
    tenant: &str,
    name: &str,
) -> Result<Option<ScheduleRecord>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM schedules WHERE tenant = ?1 AND name = ?2"
    ))
    .and_then(|mut s| s.query_row(params![tenant, name], read_schedule).optional())
    .map_err(db_err("read a schedule"))
}

/// A tenant's schedules, by name.
pub(crate) fn list(conn: &Connection, tenant: &str) -> Result<Vec<ScheduleRecord>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM schedules WHERE tenant = ?1 ORDER BY name"
    ))
    .and_then(|mut s| s.query_map([tenant], read_schedule)?.collect())
    .map_err(db_err("list schedules"))
}

/// The due schedules of every tenant, earliest first.
pub(crate) fn due(
    conn: &Connection,
    p: ScheduleDueParams,
) -> Result<Vec<ScheduleRecord>, StoreError> {
    let max = i64::try_from(p.max).unwrap_or(i64::MAX);
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM schedules INDEXED BY schedules_due
         WHERE next_run_at <= ?1 ORDER BY next_run_at LIMIT ?2"
    ))
    .and_then(|mut s| {
        s.query_map(params![ms(p.now), max], read_schedule)?
            .collect()
    })
    .map_err(db_err("find due schedules"))
}

/// The earliest `next_run_at`.
pub(crate) fn next_due(conn: &Connection) -> Result<Option<i64>, StoreError> {
    conn.prepare_cached("SELECT min(next_run_at) FROM schedules")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(db_err("find the next due schedule"))
}

/// `schedule_put`: count, then upsert.
pub(crate) fn put(ctx: &mut WriteCtx<'_>, p: SchedulePutParams) -> Result<SchedulePut, StoreError> {
    if p.tenant.is_empty() || p.name.is_empty() {
        return Err(StoreError::InvalidArgument(
            "a schedule needs a tenant and a name".into(),
        ));
    }
    let conn = ctx.conn;
    let exists = get(conn, &p.tenant, &p.name)?.is_some();
    if !exists {
        let count: i64 = conn
            .prepare_cached("SELECT count(*) FROM schedules WHERE tenant = ?1")
            .and_then(|mut s| s.query_row([&p.tenant], |r| r.get(0)))
            .map_err(db_err("count a tenant's schedules"))?;
        let count = u64::try_from(count).unwrap_or(0);
        if count >= p.max_per_tenant as u64 {
            return Ok(SchedulePut::TooMany { count });
        }
    }
    let now = ms(p.now);
    conn.prepare_cached(
        "INSERT INTO schedules (tenant, name, cron, timezone, task, next_run_at, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
         ON CONFLICT (tenant, name) DO UPDATE SET cron = excluded.cron, timezone = excluded.timezone,
            task = excluded.task, next_run_at = excluded.next_run_at, updated_at = excluded.updated_at",
    )
    .and_then(|mut s| {
        s.execute(params![
            p.tenant,
            p.name,
            p.cron,
            p.timezone,
            p.task,
            ms(p.next_run_at),
            now
        ])
    })
    .map_err(db_err("store a schedule"))?;
    let stored = get(conn, &p.tenant, &p.name)?
        .ok_or_else(|| StoreError::Corrupt("a stored schedule cannot be read back".into()))?;
    Ok(SchedulePut::Stored(stored))
}

/// `schedule_delete`.
pub(crate) fn delete(ctx: &mut WriteCtx<'_>, p: ScheduleDeleteParams) -> Result<bool, StoreError> {
    let deleted = ctx
        .conn
        .prepare_cached("DELETE FROM schedules WHERE tenant = ?1 AND name = ?2")
        .and_then(|mut s| s.execute(params![p.tenant, p.name]))
        .map_err(db_err("delete a schedule"))?;
    Ok(deleted > 0)
}

/// `schedule_advance`: the compare-and-set on `next_run_at`.
pub(crate) fn advance(
    ctx: &mut WriteCtx<'_>,
    p: ScheduleAdvanceParams,
) -> Result<bool, StoreError> {
    let moved = ctx
        .conn
        .prepare_cached(
            "UPDATE schedules SET next_run_at = ?4, last_task = COALESCE(?5, last_task), updated_at = ?6
             WHERE tenant = ?1 AND name = ?2 AND next_run_at = ?3",
        )
        .and_then(|mut s| {
            s.execute(params![
                p.tenant,
                p.name,
                ms(p.from),
                ms(p.to),
                p.last_task.as_ref().map(TaskId::as_str),
                ms(p.now)
            ])
        })
        .map_err(db_err("advance a schedule"))?;
    Ok(moved > 0)
}
