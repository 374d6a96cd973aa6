//! Every write of the store, as a function over the writer's connection; each runs inside
//! the group transaction and its own savepoint (see `writer`).

use fabric_store::{
    AttemptId, ClaimedTask, Completed, Heartbeat, Inserted, ModuleInfo, ModulePutParams, Next,
    Rescued, StoreError, TaskCancelParams, TaskClaimParams, TaskCompleteParams, TaskExpireParams,
    TaskHeartbeatParams, TaskId, TaskInsertParams, TaskPromoteParams, TaskPruneParams, TaskRecord,
    TaskRescueParams, claim_sort_key, from_millis,
};
use fabric_types::{Attempt, Outcome, RetryPolicy, TaskState};
use rusqlite::{OptionalExtension, params};

use crate::db_err;
use crate::rows::{
    MODULE_COLUMNS, claim_row, load_task, map_json, module_info, ms, parse_priority, parse_state,
    read_module_info, retry_on_text, to_i64,
};
use crate::writer::WriteCtx;

/// `module_put`: insert or keep the module, move its name.
pub(crate) fn module_put(
    ctx: &mut WriteCtx<'_>,
    p: ModulePutParams,
) -> Result<ModuleInfo, StoreError> {
    let (id, now) = (p.id.to_string(), ms(p.now));
    let size = to_i64(p.bytes.len() as u64, "module size")?;
    ctx.conn
        .prepare_cached(
            "INSERT INTO modules (tenant, id, name, kind, size, created_at, bytes) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (tenant, id) DO UPDATE SET name = COALESCE(excluded.name, modules.name)",
        )
        .and_then(|mut s| s.execute(params![p.tenant, id, p.name, p.kind.as_str(), size, now, p.bytes]))
        .map_err(db_err("store a module"))?;
    if let Some(name) = &p.name {
        ctx.conn
            .prepare_cached(
                "INSERT INTO module_names (tenant, name, module_id, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (tenant, name) DO UPDATE SET module_id = excluded.module_id, updated_at = excluded.updated_at",
            )
            .and_then(|mut s| s.execute(params![p.tenant, name, id, now]))
            .map_err(db_err("name a module"))?;
    }
    let raw = ctx
        .conn
        .prepare_cached(&format!(
            "SELECT {MODULE_COLUMNS} FROM modules WHERE tenant = ?1 AND id = ?2"
        ))
        .and_then(|mut s| s.query_row(params![p.tenant, id], read_module_info))
        .map_err(db_err("read back a module"))?;
    module_info(raw)
}

/// `task_insert`: one row per task, deduplicated by idempotency key per tenant.
pub(crate) fn task_insert(
    ctx: &mut WriteCtx<'_>,
    p: TaskInsertParams,
) -> Result<Vec<Inserted>, StoreError> {
    let now = ms(p.now);
    let mut out = Vec::with_capacity(p.tasks.len());
    let mut find = ctx
        .conn
        .prepare_cached("SELECT id, state FROM tasks WHERE tenant = ?1 AND idempotency_key = ?2")
        .map_err(db_err("look up an idempotency key"))?;
    let mut insert = ctx
        .conn
        .prepare_cached(
            "INSERT INTO tasks (id, tenant, module, input, priority, state, fuel, memory_bytes, timeout_ms,
                output_bytes, log_bytes, max_attempts, backoff_ms, max_backoff_ms, retry_on, idempotency_key,
                run_at, deadline, env, labels, created_at, sort_key)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)",
        )
        .map_err(db_err("insert a task"))?;
    for (i, task) in p.tasks.into_iter().enumerate() {
        if task.tenant.is_empty() {
            return Err(StoreError::InvalidArgument(format!(
                "tasks[{i}].tenant is empty"
            )));
        }
        if let Some(key) = &task.idempotency_key {
            let found: Option<(String, String)> = find
                .query_row(params![task.tenant, key], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(db_err("look up an idempotency key"))?;
            if let Some((id, state)) = found {
                out.push(Inserted {
                    id: TaskId::from(id),
                    state: parse_state(&state)?,
                    deduplicated: true,
                });
                continue;
            }
        }
        let run_at = task.run_at.map(ms);
        let scheduled = run_at.is_some_and(|at| at > now);
        let (state, sort_key) = if scheduled {
            (TaskState::Scheduled, None)
        } else {
            // Queued now: it joins the line now, whatever past run_at it named.
            (
                TaskState::Queued,
                Some(claim_sort_key(now, task.priority, ctx.aging_step_ms)),
            )
        };
        let id = TaskId::generate(p.now);
        let limits = &task.limits;
        insert
            .execute(params![
                id.as_str(),
                task.tenant,
                task.module.to_string(),
                task.input,
                task.priority.rank(),
                state.as_str(),
                to_i64(limits.fuel, "limits.fuel")?,
                to_i64(limits.memory_bytes, "limits.memory_bytes")?,
                to_i64(limits.timeout_ms, "limits.timeout_ms")?,
                to_i64(limits.output_bytes, "limits.output_bytes")?,
                to_i64(limits.log_bytes, "limits.log_bytes")?,
                task.retry.max_attempts,
                to_i64(task.retry.backoff_ms, "retry.backoff_ms")?,
                to_i64(task.retry.max_backoff_ms, "retry.max_backoff_ms")?,
                retry_on_text(&task.retry.retry_on),
                task.idempotency_key,
                run_at,
                task.deadline.map(ms),
                map_json(&task.env),
                map_json(&task.labels),
                now,
                sort_key,
            ])
            .map_err(db_err("insert a task"))?;
        ctx.made_ready |= !scheduled;
        out.push(Inserted {
            id,
            state,
            deduplicated: false,
        });
    }
    Ok(out)
}

/// Moves a waiting task to a terminal state at `now`.
fn finish(ctx: &WriteCtx<'_>, id: &str, state: TaskState, now: i64) -> Result<(), StoreError> {
    ctx.conn
        .prepare_cached(
            "UPDATE tasks SET state = ?2, finished_at = ?3, current_attempt = NULL, lease_until = NULL WHERE id = ?1",
        )
        .and_then(|mut s| s.execute(params![id, state.as_str(), now]))
        .map_err(db_err("finish a task"))?;
    Ok(())
}

/// Makes a task claimable, joining the line at `enqueued_at`.
fn enqueue(
    ctx: &mut WriteCtx<'_>,
    id: &str,
    priority: i64,
    enqueued_at: i64,
) -> Result<(), StoreError> {
    let key = claim_sort_key(enqueued_at, parse_priority(priority)?, ctx.aging_step_ms);
    ctx.conn
        .prepare_cached(
            "UPDATE tasks SET state = 'queued', sort_key = ?2, current_attempt = NULL, lease_until = NULL WHERE id = ?1",
        )
        .and_then(|mut s| s.execute(params![id, key]))
        .map_err(db_err("queue a task"))?;
    ctx.made_ready = true;
    Ok(())
}

/// Makes a task wait until `run_at`.
fn schedule(ctx: &WriteCtx<'_>, id: &str, run_at: i64) -> Result<(), StoreError> {
    ctx.conn
        .prepare_cached(
            "UPDATE tasks SET state = 'scheduled', run_at = ?2, current_attempt = NULL, lease_until = NULL WHERE id = ?1",
        )
        .and_then(|mut s| s.execute(params![id, run_at]))
        .map_err(db_err("schedule a task"))?;
    Ok(())
}

/// `task_claim`: the first `max` queued tasks by sort key, each under a new attempt.
pub(crate) fn task_claim(
    ctx: &mut WriteCtx<'_>,
    p: TaskClaimParams,
) -> Result<Vec<ClaimedTask>, StoreError> {
    let now = ms(p.now);
    let lease_ms = i64::try_from(p.lease.as_millis())
        .map_err(|_| StoreError::InvalidArgument(format!("lease {:?} is too long", p.lease)))?;
    if lease_ms <= 0 {
        return Err(StoreError::InvalidArgument(format!(
            "lease {:?} must be at least a millisecond",
            p.lease
        )));
    }
    let lease_until = now.saturating_add(lease_ms);
    let mut claimed = Vec::with_capacity(p.max.min(1024));
    while claimed.len() < p.max {
        let want = (p.max - claimed.len()) as i64;
        let candidates: Vec<(String, Option<i64>)> = ctx
            .conn
            .prepare_cached(
                "SELECT id, deadline FROM tasks INDEXED BY tasks_claim
                 WHERE state = 'queued' ORDER BY sort_key, id LIMIT ?1",
            )
            .and_then(|mut s| {
                s.query_map([want], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .map_err(db_err("find queued tasks"))?;
        if candidates.is_empty() {
            break;
        }
        for (id, deadline) in candidates {
            if deadline.is_some_and(|d| d < now) {
                finish(ctx, &id, TaskState::Expired, now)?;
                continue;
            }
            let attempt_id = AttemptId::generate(p.now);
            let task = claim_row(ctx.conn, &id, attempt_id, p.now, from_millis(lease_until))?;
            ctx.conn
                .prepare_cached(
                    "INSERT INTO attempts (id, task_id, number, node, claimed_at, lease_until)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        task.attempt_id.as_str(),
                        id,
                        task.attempt_number,
                        p.node,
                        now,
                        lease_until
                    ])
                })
                .map_err(db_err("record an attempt"))?;
            claimed.push(task);
        }
    }
    Ok(claimed)
}

/// `task_heartbeat`: renew the leases still held.
pub(crate) fn task_heartbeat(
    ctx: &mut WriteCtx<'_>,
    p: TaskHeartbeatParams,
) -> Result<Heartbeat, StoreError> {
    let (now, lease_until) = (ms(p.now), ms(p.lease_until));
    if lease_until <= now {
        return Err(StoreError::InvalidArgument(format!(
            "lease_until ({}) must be after now ({})",
            p.lease_until, p.now
        )));
    }
    let mut out = Heartbeat::default();
    for attempt in p.attempt_ids {
        let cancel: Option<bool> = ctx
            .conn
            .prepare_cached(
                "UPDATE tasks INDEXED BY tasks_current_attempt SET lease_until = ?2
                 WHERE current_attempt = ?1 AND state = 'running'
                 RETURNING cancel_requested",
            )
            .and_then(|mut s| {
                s.query_row(params![attempt.as_str(), lease_until], |r| r.get(0))
                    .optional()
            })
            .map_err(db_err("renew a lease"))?;
        let Some(cancel) = cancel else { continue };
        ctx.conn
            .prepare_cached("UPDATE attempts SET lease_until = ?2 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![attempt.as_str(), lease_until]))
            .map_err(db_err("renew a lease"))?;
        if cancel {
            out.cancel_requested.push(attempt.clone());
        }
        out.held.push(attempt);
    }
    Ok(out)
}

/// Writes how an attempt ended and ends its lease.
fn record_attempt(ctx: &WriteCtx<'_>, attempt_id: &str, a: &Attempt) -> Result<(), StoreError> {
    ctx.conn
        .prepare_cached(
            "UPDATE attempts SET lease_until = NULL, outcome = ?2, exit_code = ?3, trap = ?4, error = ?5, output = ?6,
                stderr = ?7, output_truncated = ?8, stderr_truncated = ?9, fuel_consumed = ?10,
                peak_memory_bytes = ?11, wall_ms = ?12, started_at = ?13, finished_at = ?14
             WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.execute(params![
                attempt_id,
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
            ])
        })
        .map_err(db_err("record an attempt's end"))?;
    Ok(())
}

/// `task_complete`: apply each completion whose attempt still holds its task.
pub(crate) fn task_complete(
    ctx: &mut WriteCtx<'_>,
    p: TaskCompleteParams,
) -> Result<Vec<Completed>, StoreError> {
    for (i, c) in p.completions.iter().enumerate() {
        if let Next::Finish(state) = c.next
            && !matches!(
                state,
                TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled
            )
        {
            return Err(StoreError::InvalidArgument(format!(
                "completions[{i}].next: Finish({state}) must be succeeded, failed or cancelled"
            )));
        }
    }
    let now = ms(p.now);
    let mut out = Vec::with_capacity(p.completions.len());
    for c in p.completions {
        let held: Option<(String, i64, bool)> = ctx
            .conn
            .prepare_cached(
                "SELECT id, priority, cancel_requested FROM tasks INDEXED BY tasks_current_attempt
                 WHERE current_attempt = ?1 AND state = 'running'",
            )
            .and_then(|mut s| {
                s.query_row([c.attempt_id.as_str()], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()
            })
            .map_err(db_err("find a completed attempt's task"))?;
        let Some((task_id, priority, cancel_requested)) = held else {
            let known: Option<(String, String)> = ctx
                .conn
                .prepare_cached("SELECT t.id, t.state FROM attempts a JOIN tasks t ON t.id = a.task_id WHERE a.id = ?1")
                .and_then(|mut s| s.query_row([c.attempt_id.as_str()], |r| Ok((r.get(0)?, r.get(1)?))).optional())
                .map_err(db_err("find a completed attempt's task"))?;
            let (task_id, state) = match known {
                Some((id, state)) => (Some(TaskId::from(id)), Some(parse_state(&state)?)),
                None => (None, None),
            };
            out.push(Completed {
                attempt_id: c.attempt_id,
                accepted: false,
                task_id,
                state,
            });
            continue;
        };
        let next = match c.next {
            Next::Retry { .. } | Next::Requeue if cancel_requested => {
                Next::Finish(TaskState::Cancelled)
            }
            next => next,
        };
        let state = match next {
            Next::Requeue => {
                ctx.conn
                    .prepare_cached("DELETE FROM attempts WHERE id = ?1")
                    .and_then(|mut s| s.execute([c.attempt_id.as_str()]))
                    .map_err(db_err("delete a requeued attempt"))?;
                // Back to its old place in line: the sort key it had when claimed is kept.
                ctx.conn
                    .prepare_cached(
                        "UPDATE tasks SET state = 'queued', attempt_count = attempt_count - 1,
                            started_at = CASE WHEN attempt_count = 1 THEN NULL ELSE started_at END,
                            current_attempt = NULL, lease_until = NULL
                         WHERE id = ?1",
                    )
                    .and_then(|mut s| s.execute([&task_id]))
                    .map_err(db_err("requeue a task"))?;
                ctx.made_ready = true;
                TaskState::Queued
            }
            Next::Finish(state) => {
                record_attempt(ctx, c.attempt_id.as_str(), &c.attempt)?;
                finish(ctx, &task_id, state, now)?;
                state
            }
            Next::Retry { run_at } => {
                record_attempt(ctx, c.attempt_id.as_str(), &c.attempt)?;
                let run_at = ms(run_at);
                if run_at <= now {
                    enqueue(ctx, &task_id, priority, now)?;
                    TaskState::Queued
                } else {
                    schedule(ctx, &task_id, run_at)?;
                    TaskState::Scheduled
                }
            }
        };
        out.push(Completed {
            attempt_id: c.attempt_id,
            accepted: true,
            task_id: Some(TaskId::from(task_id)),
            state: Some(state),
        });
    }
    Ok(out)
}

/// `task_cancel`: end a waiting task, or flag a running one.
pub(crate) fn task_cancel(
    ctx: &mut WriteCtx<'_>,
    p: TaskCancelParams,
) -> Result<Option<TaskRecord>, StoreError> {
    let tenant = p.tenant.as_deref();
    let Some(task) = load_task(ctx.conn, tenant, p.id.as_str())? else {
        return Ok(None);
    };
    match task.state {
        TaskState::Queued | TaskState::Scheduled => {
            finish(ctx, task.id.as_str(), TaskState::Cancelled, ms(p.now))?
        }
        TaskState::Running => {
            ctx.conn
                .prepare_cached("UPDATE tasks SET cancel_requested = 1 WHERE id = ?1")
                .and_then(|mut s| s.execute([task.id.as_str()]))
                .map_err(db_err("request a cancel"))?;
        }
        _ => return Ok(Some(task)),
    }
    load_task(ctx.conn, tenant, p.id.as_str())
}

/// The policy columns a rescue needs.
struct Expired {
    id: String,
    tenant: String,
    attempt: String,
    priority: i64,
    attempt_count: i64,
    cancel_requested: bool,
    retry: RetryPolicy,
}

/// `task_rescue`: record `lost` for expired leases and retry or fail their tasks.
pub(crate) fn task_rescue(
    ctx: &mut WriteCtx<'_>,
    p: TaskRescueParams,
) -> Result<Vec<Rescued>, StoreError> {
    let now = ms(p.now);
    let expired: Vec<Expired> = ctx
        .conn
        .prepare_cached(
            "SELECT id, tenant, current_attempt, priority, attempt_count, cancel_requested,
                max_attempts, backoff_ms, max_backoff_ms, retry_on
             FROM tasks INDEXED BY tasks_lease WHERE state = 'running' AND lease_until < ?1 ORDER BY lease_until, id LIMIT ?2",
        )
        .and_then(|mut s| {
            s.query_map(params![now, p.max as i64], |r| {
                let retry_on: String = r.get(9)?;
                Ok(Expired {
                    id: r.get(0)?,
                    tenant: r.get(1)?,
                    attempt: r.get(2)?,
                    priority: r.get(3)?,
                    attempt_count: r.get(4)?,
                    cancel_requested: r.get(5)?,
                    retry: RetryPolicy {
                        max_attempts: r.get(6)?,
                        backoff_ms: r.get::<_, i64>(7)?.max(0) as u64,
                        max_backoff_ms: r.get::<_, i64>(8)?.max(0) as u64,
                        retry_on: retry_on.split(',').filter_map(|s| s.parse().ok()).collect(),
                    },
                })
            })?
            .collect()
        })
        .map_err(db_err("find expired leases"))?;
    let mut out = Vec::with_capacity(expired.len());
    for e in expired {
        let (node, lease): (String, Option<i64>) = ctx
            .conn
            .prepare_cached("SELECT node, lease_until FROM attempts WHERE id = ?1")
            .and_then(|mut s| s.query_row([&e.attempt], |r| Ok((r.get(0)?, r.get(1)?))))
            .map_err(db_err("read a lost attempt"))?;
        let mut lost = Attempt::new(Outcome::Lost);
        lost.error = Some(format!(
            "node {node:?} stopped renewing its lease, which ended at {}",
            fabric_types::format_timestamp(from_millis(lease.unwrap_or(now)))
        ));
        lost.finished_at = Some(p.now);
        record_attempt(ctx, &e.attempt, &lost)?;
        let attempts = u32::try_from(e.attempt_count).unwrap_or(u32::MAX);
        let (state, run_at) = if e.cancel_requested {
            finish(ctx, &e.id, TaskState::Cancelled, now)?;
            (TaskState::Cancelled, None)
        } else if e.retry.retries(Outcome::Lost) && attempts < e.retry.max_attempts {
            let bound = e.retry.backoff_bound_ms(attempts.saturating_add(1));
            let delay = (p.jitter)(bound).min(bound);
            let run_at = now.saturating_add(to_i64(delay, "backoff")?);
            if run_at <= now {
                enqueue(ctx, &e.id, e.priority, now)?;
                (TaskState::Queued, Some(run_at))
            } else {
                schedule(ctx, &e.id, run_at)?;
                (TaskState::Scheduled, Some(run_at))
            }
        } else {
            finish(ctx, &e.id, TaskState::Failed, now)?;
            (TaskState::Failed, None)
        };
        out.push(Rescued {
            task_id: TaskId::from(e.id),
            tenant: e.tenant,
            attempt_id: AttemptId::from(e.attempt),
            state,
            run_at: run_at.map(from_millis),
        });
    }
    Ok(out)
}

/// `task_promote`: due scheduled tasks join the line at their `run_at`.
pub(crate) fn task_promote(
    ctx: &mut WriteCtx<'_>,
    p: TaskPromoteParams,
) -> Result<Vec<TaskId>, StoreError> {
    let due: Vec<(String, i64, i64)> = ctx
        .conn
        .prepare_cached(
            "SELECT id, priority, run_at FROM tasks INDEXED BY tasks_scheduled WHERE state = 'scheduled' AND run_at <= ?1
             ORDER BY run_at, id LIMIT ?2",
        )
        .and_then(|mut s| {
            s.query_map(params![ms(p.now), p.max as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect()
        })
        .map_err(db_err("find due scheduled tasks"))?;
    let mut out = Vec::with_capacity(due.len());
    for (id, priority, run_at) in due {
        enqueue(ctx, &id, priority, run_at)?;
        out.push(TaskId::from(id));
    }
    Ok(out)
}

/// `task_expire`: waiting tasks past their deadline end `expired`.
pub(crate) fn task_expire(
    ctx: &mut WriteCtx<'_>,
    p: TaskExpireParams,
) -> Result<Vec<TaskId>, StoreError> {
    let now = ms(p.now);
    let ids: Vec<String> = ctx
        .conn
        .prepare_cached(
            "SELECT id FROM tasks INDEXED BY tasks_deadline
             WHERE deadline IS NOT NULL AND state IN ('queued', 'scheduled') AND deadline < ?1
             ORDER BY deadline, id LIMIT ?2",
        )
        .and_then(|mut s| {
            s.query_map(params![now, p.max as i64], |r| r.get(0))?
                .collect()
        })
        .map_err(db_err("find expired tasks"))?;
    for id in &ids {
        finish(ctx, id, TaskState::Expired, now)?;
    }
    Ok(ids.into_iter().map(TaskId::from).collect())
}

/// `task_prune`: delete old terminal tasks; their attempts go by `ON DELETE CASCADE`.
pub(crate) fn task_prune(ctx: &mut WriteCtx<'_>, p: TaskPruneParams) -> Result<u64, StoreError> {
    let deleted = ctx
        .conn
        .prepare_cached(
            "DELETE FROM tasks WHERE id IN (
                SELECT id FROM tasks INDEXED BY tasks_finished WHERE finished_at IS NOT NULL AND finished_at < ?1
                    AND state IN ('succeeded', 'failed', 'cancelled', 'expired')
                ORDER BY finished_at, id LIMIT ?2)",
        )
        .and_then(|mut s| s.execute(params![ms(p.finished_before), p.max as i64]))
        .map_err(db_err("prune finished tasks"))?;
    Ok(deleted as u64)
}
