//! The `schedules` table: cron schedules by tenant and name (see
//! [`fabric_store::ScheduleRecord`]). A put counts the tenant's schedules under an advisory
//! lock of the tenant's, so nodes storing schedules at once cannot pass the limit together;
//! an advance is one conditional `UPDATE`, so of nodes firing one tick, one moves it.

use fabric_store::{
    ScheduleAdvanceParams, ScheduleDeleteParams, ScheduleDueParams, ScheduleGetParams,
    ScheduleListParams, SchedulePut, SchedulePutParams, ScheduleRecord, StoreError, TaskId,
    from_millis,
};
use time::OffsetDateTime;
use tokio_postgres::Row;

use crate::db::{Db, execute, query, query_opt};
use crate::error::{corrupt, db_err};
use crate::rows::ms;

/// The columns [`read_schedule`] expects, in order.
const COLUMNS: &str =
    "tenant, name, cron, timezone, task, next_run_at, last_task, created_at, updated_at";

fn read_schedule(row: &Row) -> ScheduleRecord {
    ScheduleRecord {
        tenant: row.get(0),
        name: row.get(1),
        cron: row.get(2),
        timezone: row.get(3),
        task: row.get(4),
        next_run_at: from_millis(row.get(5)),
        last_task: row.get::<_, Option<String>>(6).map(TaskId::from),
        created_at: from_millis(row.get(7)),
        updated_at: from_millis(row.get(8)),
    }
}

/// The advisory lock a put of `tenant`'s schedules holds in `schema` (FNV-1a, 64 bits).
fn tenant_lock(schema: &str, tenant: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let parts = [
        "fabric-store-postgres schedules ".as_bytes(),
        schema.as_bytes(),
        b"\x1f",
        tenant.as_bytes(),
    ];
    for byte in parts.into_iter().flatten() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

pub(crate) async fn get(
    db: &Db,
    p: ScheduleGetParams,
) -> Result<Option<ScheduleRecord>, StoreError> {
    let client = db.client("schedule_get").await?;
    let row = query_opt(
        &client,
        "read a schedule",
        &format!("SELECT {COLUMNS} FROM schedules WHERE tenant = $1 AND name = $2"),
        &[&p.tenant, &p.name],
    )
    .await?;
    Ok(row.as_ref().map(read_schedule))
}

pub(crate) async fn list(
    db: &Db,
    p: ScheduleListParams,
) -> Result<Vec<ScheduleRecord>, StoreError> {
    let client = db.client("schedule_list").await?;
    let rows = query(
        &client,
        "list schedules",
        &format!("SELECT {COLUMNS} FROM schedules WHERE tenant = $1 ORDER BY name"),
        &[&p.tenant],
    )
    .await?;
    Ok(rows.iter().map(read_schedule).collect())
}

pub(crate) async fn due(db: &Db, p: ScheduleDueParams) -> Result<Vec<ScheduleRecord>, StoreError> {
    let client = db.client("schedule_due").await?;
    let max = i64::try_from(p.max).unwrap_or(i64::MAX);
    let rows = query(
        &client,
        "find due schedules",
        &format!(
            "SELECT {COLUMNS} FROM schedules WHERE next_run_at <= $1 ORDER BY next_run_at LIMIT $2"
        ),
        &[&ms(p.now), &max],
    )
    .await?;
    Ok(rows.iter().map(read_schedule).collect())
}

pub(crate) async fn next_due(db: &Db) -> Result<Option<OffsetDateTime>, StoreError> {
    let client = db.client("schedule_next_due").await?;
    let row = query_opt(
        &client,
        "find the next due schedule",
        "SELECT min(next_run_at) FROM schedules",
        &[],
    )
    .await?;
    Ok(row
        .and_then(|r| r.get::<_, Option<i64>>(0))
        .map(from_millis))
}

pub(crate) async fn put(db: &Db, p: SchedulePutParams) -> Result<SchedulePut, StoreError> {
    if p.tenant.is_empty() || p.name.is_empty() {
        return Err(StoreError::InvalidArgument(
            "a schedule needs a tenant and a name".into(),
        ));
    }
    let mut client = db.client("schedule_put").await?;
    let tx = client
        .transaction()
        .await
        .map_err(db_err("begin schedule_put"))?;
    execute(
        &tx,
        "lock a tenant's schedules",
        "SELECT pg_advisory_xact_lock($1)",
        &[&tenant_lock(&db.schema, &p.tenant)],
    )
    .await?;
    let exists = query_opt(
        &tx,
        "read a schedule",
        "SELECT 1 FROM schedules WHERE tenant = $1 AND name = $2",
        &[&p.tenant, &p.name],
    )
    .await?
    .is_some();
    if !exists {
        let row = query_opt(
            &tx,
            "count a tenant's schedules",
            "SELECT count(*) FROM schedules WHERE tenant = $1",
            &[&p.tenant],
        )
        .await?
        .ok_or_else(|| corrupt("count(*) returned no row"))?;
        let count = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
        if count >= p.max_per_tenant as u64 {
            tx.commit().await.map_err(db_err("commit schedule_put"))?;
            return Ok(SchedulePut::TooMany { count });
        }
    }
    let now = ms(p.now);
    let row = query_opt(
        &tx,
        "store a schedule",
        &format!(
            "INSERT INTO schedules AS s (tenant, name, cron, timezone, task, next_run_at, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
             ON CONFLICT (tenant, name) DO UPDATE SET cron = excluded.cron, timezone = excluded.timezone,
                task = excluded.task, next_run_at = excluded.next_run_at, updated_at = excluded.updated_at
             RETURNING {COLUMNS}"
        ),
        &[
            &p.tenant,
            &p.name,
            &p.cron,
            &p.timezone,
            &p.task,
            &ms(p.next_run_at),
            &now,
        ],
    )
    .await?
    .ok_or_else(|| corrupt("a stored schedule was not returned"))?;
    let stored = read_schedule(&row);
    tx.commit().await.map_err(db_err("commit schedule_put"))?;
    Ok(SchedulePut::Stored(stored))
}

pub(crate) async fn delete(db: &Db, p: ScheduleDeleteParams) -> Result<bool, StoreError> {
    let client = db.client("schedule_delete").await?;
    let deleted = execute(
        &client,
        "delete a schedule",
        "DELETE FROM schedules WHERE tenant = $1 AND name = $2",
        &[&p.tenant, &p.name],
    )
    .await?;
    Ok(deleted > 0)
}

pub(crate) async fn advance(db: &Db, p: ScheduleAdvanceParams) -> Result<bool, StoreError> {
    let client = db.client("schedule_advance").await?;
    let last_task = p.last_task.as_ref().map(TaskId::as_str);
    let moved = execute(
        &client,
        "advance a schedule",
        "UPDATE schedules SET next_run_at = $4, last_task = COALESCE($5, last_task), updated_at = $6
         WHERE tenant = $1 AND name = $2 AND next_run_at = $3",
        &[
            &p.tenant,
            &p.name,
            &ms(p.from),
            &ms(p.to),
            &last_task,
            &ms(p.now),
        ],
    )
    .await?;
    Ok(moved > 0)
}
