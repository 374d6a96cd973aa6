//! The writes of periodic maintenance: rescuing lost leases, promoting due tasks,
//! expiring waiting tasks past their deadline, pruning old finished ones.

use fabric_store::rollup::Rollup;
use fabric_store::{
    AttemptId, Next, Rescued, StoreError, TaskExpireParams, TaskId, TaskPromoteParams,
    TaskPruneParams, TaskRescueParams, from_millis, rules,
};
use fabric_types::{RetryPolicy, TaskState};
use rusqlite::params;

use super::{TaskKey, enqueue, finish, record_attempt, wait_for_retry, write_rollup};
use crate::db_err;
use crate::rows::{ms, parse_state};
use crate::writer::WriteCtx;

/// The policy columns a rescue needs.
struct Expired {
    key: TaskKey,
    attempt: String,
    attempt_count: i64,
    cancel_requested: bool,
    retry: RetryPolicy,
    module: String,
}

/// `task_rescue`: record `lost` for expired leases and retry or fail their tasks; each lost
/// attempt counts in the usage rollup (with no usage: what the guest used is unknown).
pub(crate) fn task_rescue(
    ctx: &mut WriteCtx<'_>,
    p: TaskRescueParams,
) -> Result<Vec<Rescued>, StoreError> {
    let now = ms(p.now);
    let expired: Vec<Expired> = ctx
        .conn
        .prepare_cached(
            "SELECT id, tenant, current_attempt, priority, attempt_count, cancel_requested,
                max_attempts, backoff_ms, max_backoff_ms, retry_on, rowid, module
             FROM tasks INDEXED BY tasks_lease WHERE state = 'running' AND lease_until < ?1 ORDER BY lease_until, id LIMIT ?2",
        )
        .and_then(|mut s| {
            s.query_map(params![now, i64::try_from(p.max).unwrap_or(i64::MAX)], |r| {
                let retry_on: String = r.get(9)?;
                Ok(Expired {
                    key: TaskKey {
                        rowid: r.get(10)?,
                        id: r.get(0)?,
                        tenant: r.get(1)?,
                        priority: r.get(3)?,
                        state: TaskState::Running,
                    },
                    attempt: r.get(2)?,
                    attempt_count: r.get(4)?,
                    cancel_requested: r.get(5)?,
                    retry: RetryPolicy {
                        max_attempts: r.get(6)?,
                        backoff_ms: r.get::<_, i64>(7)?.max(0) as u64,
                        max_backoff_ms: r.get::<_, i64>(8)?.max(0) as u64,
                        retry_on: retry_on.split(',').filter_map(|s| s.parse().ok()).collect(),
                    },
                    module: r.get(11)?,
                })
            })?
            .collect()
        })
        .map_err(db_err("find expired leases"))?;
    let mut out = Vec::with_capacity(expired.len());
    let mut rollup = Rollup::default();
    for e in expired {
        let (node, lease, attempt_rowid): (String, Option<i64>, i64) = ctx
            .conn
            .prepare_cached("SELECT node, lease_until, rowid FROM attempts WHERE id = ?1")
            .and_then(|mut s| s.query_row([&e.attempt], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))))
            .map_err(db_err("read a lost attempt"))?;
        let lost = rules::lost_attempt(&node, lease.map(from_millis), p.now);
        record_attempt(ctx, attempt_rowid, &lost)?;
        rollup.lost(&e.key.tenant, &e.module, p.now);
        let attempt_number = u32::try_from(e.attempt_count).unwrap_or(u32::MAX);
        let next = rules::next_after_lost(
            attempt_number,
            e.cancel_requested,
            &e.retry,
            p.now,
            p.jitter,
        );
        let (state, run_at) = match next {
            Next::Retry { run_at } => (wait_for_retry(ctx, &e.key, run_at, p.now)?, Some(run_at)),
            Next::Finish(state) => {
                finish(ctx, &e.key, state, now)?;
                (state, None)
            }
            Next::Requeue => unreachable!("a lost lease is never requeued"),
        };
        out.push(Rescued {
            task_id: TaskId::from(e.key.id),
            tenant: e.key.tenant,
            attempt_id: AttemptId::from(e.attempt),
            state,
            // As stored: to the millisecond.
            run_at: run_at.map(|t| from_millis(ms(t))),
        });
    }
    write_rollup(ctx, &rollup)?;
    Ok(out)
}

/// `task_promote`: due scheduled tasks join the line at their `run_at`.
pub(crate) fn task_promote(
    ctx: &mut WriteCtx<'_>,
    p: TaskPromoteParams,
) -> Result<Vec<TaskId>, StoreError> {
    let due: Vec<(TaskKey, i64)> = ctx
        .conn
        .prepare_cached(
            "SELECT id, tenant, priority, run_at, rowid FROM tasks INDEXED BY tasks_scheduled
             WHERE state = 'scheduled' AND run_at <= ?1 ORDER BY run_at, id LIMIT ?2",
        )
        .and_then(|mut s| {
            s.query_map(
                params![ms(p.now), i64::try_from(p.max).unwrap_or(i64::MAX)],
                |r| {
                    let key = TaskKey {
                        rowid: r.get(4)?,
                        id: r.get(0)?,
                        tenant: r.get(1)?,
                        priority: r.get(2)?,
                        state: TaskState::Scheduled,
                    };
                    Ok((key, r.get(3)?))
                },
            )?
            .collect()
        })
        .map_err(db_err("find due scheduled tasks"))?;
    let mut out = Vec::with_capacity(due.len());
    for (key, run_at) in due {
        enqueue(ctx, &key, run_at, true)?;
        out.push(TaskId::from(key.id));
    }
    Ok(out)
}

/// `task_expire`: waiting tasks past their deadline end `expired`.
pub(crate) fn task_expire(
    ctx: &mut WriteCtx<'_>,
    p: TaskExpireParams,
) -> Result<Vec<TaskId>, StoreError> {
    let now = ms(p.now);
    let due: Vec<(String, String, i64, String, i64)> = ctx
        .conn
        .prepare_cached(
            "SELECT id, tenant, priority, state, rowid FROM tasks INDEXED BY tasks_deadline
             WHERE deadline IS NOT NULL AND (state = 'queued' OR state = 'scheduled' OR state = 'waiting')
                AND deadline < ?1
             ORDER BY deadline, id LIMIT ?2",
        )
        .and_then(|mut s| {
            s.query_map(
                params![now, i64::try_from(p.max).unwrap_or(i64::MAX)],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )?
            .collect()
        })
        .map_err(db_err("find expired tasks"))?;
    let mut out = Vec::with_capacity(due.len());
    for (id, tenant, priority, state, rowid) in due {
        let key = TaskKey {
            rowid,
            id,
            tenant,
            priority,
            state: parse_state(&state)?,
        };
        finish(ctx, &key, TaskState::Expired, now)?;
        out.push(TaskId::from(key.id));
    }
    Ok(out)
}

/// `task_prune`: delete old terminal tasks; their attempts go by `ON DELETE CASCADE`. The
/// rollups are kept: billing outlives task retention.
pub(crate) fn task_prune(ctx: &mut WriteCtx<'_>, p: TaskPruneParams) -> Result<u64, StoreError> {
    let deleted: Vec<(String, String, i64)> = ctx
        .conn
        .prepare_cached(
            "DELETE FROM tasks WHERE id IN (
                SELECT id FROM tasks INDEXED BY tasks_finished WHERE finished_at IS NOT NULL AND finished_at < ?1
                    AND state IN ('succeeded', 'failed', 'cancelled', 'expired')
                ORDER BY finished_at, id LIMIT ?2)
             RETURNING tenant, state, priority",
        )
        .and_then(|mut s| {
            s.query_map(
                params![ms(p.finished_before), i64::try_from(p.max).unwrap_or(i64::MAX)],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?
            .collect()
        })
        .map_err(db_err("prune finished tasks"))?;
    for (tenant, state, priority) in &deleted {
        ctx.counts.add(tenant, parse_state(state)?, *priority, -1);
    }
    Ok(deleted.len() as u64)
}
