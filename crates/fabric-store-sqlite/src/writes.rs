//! Every write of the store, as a function over the writer's connection; each runs inside
//! the group transaction and, unless it is the transaction's first, a savepoint of its own
//! (see `writer`). Rows found by a statement are changed by their rowid, one statement per
//! row: such single-row statements need no statement journal and no temporary tables, which
//! makes them cheaper than one statement over the whole batch. Every change of a task's state
//! also changes its count (see `counts`).

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::LazyLock;

use fabric_store::{
    AttemptId, ClaimedTask, Completed, FairClock, Heartbeat, Inserted, ModuleInfo, ModulePutParams,
    Next, Rescued, StoreError, TaskCancelParams, TaskClaimParams, TaskCompleteParams,
    TaskExpireParams, TaskHeartbeatParams, TaskId, TaskInsertParams, TaskPromoteParams,
    TaskPruneParams, TaskRecord, TaskRescueParams, claim_sort_key, from_millis, rules,
};
use fabric_types::{Attempt, Priority, RetryPolicy, TaskState};
use rusqlite::types::Value;
use rusqlite::vtab::array::Array;
use rusqlite::{OptionalExtension, params};
use time::OffsetDateTime;

use crate::db_err;
use crate::rows::{
    CANDIDATE_COLUMNS, MODULE_COLUMNS, RawCandidate, load_task, map_json, module_info, ms,
    parse_priority, parse_state, raw_candidate, read_module_info, retry_on_text, to_i64,
};
use crate::writer::WriteCtx;

/// Stores one new task.
pub(crate) const INSERT_TASK: &str = "INSERT INTO tasks (id, tenant, module, input, priority, state, fuel, memory_bytes,
        timeout_ms, output_bytes, log_bytes, max_attempts, backoff_ms, max_backoff_ms, retry_on, idempotency_key,
        run_at, deadline, env, labels, created_at, sort_key, dirs)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23)";

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

/// Moves one queued task to `running` under a new attempt.
pub(crate) const CLAIM: &str =
    "UPDATE tasks SET state = 'running', attempt_count = ?2, current_attempt = ?3,
        lease_until = ?4, started_at = COALESCE(started_at, ?5)
     WHERE rowid = ?1";

/// Records a new attempt.
pub(crate) const NEW_ATTEMPT: &str =
    "INSERT INTO attempts (id, task_id, number, node, claimed_at, lease_until)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// Where the tasks of an array of attempt ids stand, by position in the array (from 1).
pub(crate) const HOLDERS: &str =
    "SELECT j.rowid, t.rowid, a.rowid, t.id, t.tenant, t.priority, t.state,
        t.current_attempt, t.cancel_requested
     FROM rarray(?1) AS j CROSS JOIN attempts AS a ON a.id = j.value
        CROSS JOIN tasks AS t ON t.id = a.task_id";

/// Records how one attempt ended.
pub(crate) const END_ATTEMPT: &str =
    "UPDATE attempts SET lease_until = NULL, outcome = ?2, exit_code = ?3, trap = ?4, error = ?5,
        output = ?6, stderr = ?7, output_truncated = ?8, stderr_truncated = ?9, fuel_consumed = ?10,
        peak_memory_bytes = ?11, wall_ms = ?12, started_at = ?13, finished_at = ?14
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

/// The fair-share clocks one insert batch uses, each read once: a batch holds few tenants
/// (usually one), so a list searched in order beats hashing every task's tenant.
#[derive(Default)]
struct Clocks(Vec<(String, Priority, FairClock)>);

impl Clocks {
    /// The clock of `(tenant, priority)`, read from the database the first time.
    fn get(
        &mut self,
        read: &mut rusqlite::CachedStatement<'_>,
        tenant: &str,
        priority: Priority,
        now: i64,
    ) -> Result<&mut FairClock, StoreError> {
        let found = self
            .0
            .iter()
            .position(|(t, p, _)| *p == priority && t == tenant);
        let i = match found {
            Some(i) => i,
            None => {
                let stored: Option<i64> = read
                    .query_row(params![tenant, priority.rank()], |r| r.get(0))
                    .optional()
                    .map_err(db_err("read a fair-share clock"))?;
                self.0
                    .push((tenant.to_owned(), priority, FairClock::new(stored, now)));
                self.0.len() - 1
            }
        };
        Ok(&mut self.0[i].2)
    }

    /// Stores every clock the batch moved.
    fn write(self, ctx: &WriteCtx<'_>) -> Result<(), StoreError> {
        if self.0.is_empty() {
            return Ok(());
        }
        let mut write = ctx
            .conn
            .prepare_cached(WRITE_CLOCK)
            .map_err(db_err("store a fair-share clock"))?;
        for (tenant, priority, clock) in self.0 {
            write
                .execute(params![tenant, priority.rank(), clock.next()])
                .map_err(db_err("store a fair-share clock"))?;
        }
        Ok(())
    }
}

/// `task_insert`: one row per task, deduplicated by idempotency key per tenant, keyed for
/// fair share between tenants (see [`FairClock`]).
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
        .prepare_cached(INSERT_TASK)
        .map_err(db_err("insert a task"))?;
    let mut read_clock = ctx
        .conn
        .prepare_cached(READ_CLOCK)
        .map_err(db_err("read a fair-share clock"))?;
    let mut clocks = Clocks::default();
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
        // Queued now, it joins the line now, whatever past run_at it named; scheduled, it
        // keeps its fair key while it waits and its promotion keeps it.
        let ready = run_at.filter(|&at| at > now);
        let scheduled = ready.is_some();
        let state = if scheduled {
            TaskState::Scheduled
        } else {
            TaskState::Queued
        };
        let enqueued_at = clocks
            .get(&mut read_clock, &task.tenant, task.priority, now)?
            .take(ready.unwrap_or(now));
        let sort_key = claim_sort_key(enqueued_at, task.priority, ctx.aging_step_ms);
        let id = TaskId::generate(p.now);
        let limits = &task.limits;
        let priority = i64::from(task.priority.rank());
        insert
            .execute(params![
                id.as_str(),
                task.tenant,
                task.module.to_string(),
                task.input,
                priority,
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
                map_json(&task.dirs),
            ])
            .map_err(db_err("insert a task"))?;
        ctx.counts.add(&task.tenant, state, priority, 1);
        ctx.made_ready |= !scheduled;
        out.push(Inserted {
            id,
            state,
            deduplicated: false,
        });
    }
    drop(read_clock);
    clocks.write(ctx)?;
    Ok(out)
}

/// A task as a change of its state needs it: the row, and what its count is kept by.
struct TaskKey {
    rowid: i64,
    id: String,
    tenant: String,
    priority: i64,
    state: TaskState,
}

/// Moves one task to a terminal state at `now`.
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
    Ok(())
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
    let lease = from_millis(lease_until);
    let mut claimed = Vec::with_capacity(p.max.min(1024));
    while claimed.len() < p.max {
        let want = i64::try_from(p.max - claimed.len()).unwrap_or(i64::MAX);
        let candidates: Vec<RawCandidate> = ctx
            .conn
            .prepare_cached(&CANDIDATES)
            .and_then(|mut s| s.query_map([want], raw_candidate)?.collect())
            .map_err(db_err("find queued tasks"))?;
        if candidates.is_empty() {
            break;
        }
        let conn = ctx.conn;
        let mut claim = conn.prepare_cached(CLAIM).map_err(db_err("claim a task"))?;
        let mut record = conn
            .prepare_cached(NEW_ATTEMPT)
            .map_err(db_err("record an attempt"))?;
        for task in candidates {
            if task.deadline().is_some_and(|d| d < now) {
                let key = TaskKey {
                    rowid: task.rowid,
                    id: task.id().to_owned(),
                    tenant: task.tenant().to_owned(),
                    priority: task.priority(),
                    state: TaskState::Queued,
                };
                finish(ctx, &key, TaskState::Expired, now)?;
                continue;
            }
            let attempt = AttemptId::generate(p.now);
            let number = task.next_attempt();
            claim
                .execute(params![
                    task.rowid,
                    number,
                    attempt.as_str(),
                    lease_until,
                    now
                ])
                .map_err(db_err("claim a task"))?;
            record
                .execute(params![
                    attempt.as_str(),
                    task.id(),
                    number,
                    p.node,
                    now,
                    lease_until
                ])
                .map_err(db_err("record an attempt"))?;
            ctx.counts.moved(
                task.tenant(),
                task.priority(),
                TaskState::Queued,
                TaskState::Running,
            );
            claimed.push(task.into_claimed(attempt, p.now, lease)?);
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
    if p.attempt_ids.is_empty() {
        return Ok(out);
    }
    let held: HashMap<String, bool> = ctx
        .conn
        .prepare_cached(RENEW_TASKS)
        .and_then(|mut s| {
            s.query_map(
                params![
                    array(p.attempt_ids.iter().map(AttemptId::as_str)),
                    lease_until
                ],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?
            .collect()
        })
        .map_err(db_err("renew leases"))?;
    if held.is_empty() {
        return Ok(out);
    }
    ctx.conn
        .prepare_cached(RENEW_ATTEMPTS)
        .and_then(|mut s| s.execute(params![array(held.keys().map(String::as_str)), lease_until]))
        .map_err(db_err("renew leases"))?;
    for attempt in p.attempt_ids {
        let Some(&cancel) = held.get(attempt.as_str()) else {
            continue;
        };
        if cancel {
            out.cancel_requested.push(attempt.clone());
        }
        out.held.push(attempt);
    }
    Ok(out)
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
            ])
        })
        .map_err(db_err("record an attempt's end"))?;
    Ok(())
}

/// The task of a completed attempt as this call has left it so far.
struct Holder {
    key: TaskKey,
    /// The attempt holding the task while it runs.
    current_attempt: Option<String>,
    cancel_requested: bool,
}

/// `task_complete`: apply each completion whose attempt still holds its task, in order (a
/// completion sees the effect of the earlier ones in the same call).
pub(crate) fn task_complete(
    ctx: &mut WriteCtx<'_>,
    p: TaskCompleteParams,
) -> Result<Vec<Completed>, StoreError> {
    rules::check_completions(&p.completions)?;
    let now = ms(p.now);
    // Where each completion's task stands, found through the attempt's primary key: for each
    // completion, its attempt's rowid and its task's id.
    let mut found: Vec<Option<(i64, String)>> = vec![None; p.completions.len()];
    let mut tasks: HashMap<String, Holder> = HashMap::with_capacity(p.completions.len());
    {
        let mut stmt = ctx
            .conn
            .prepare_cached(HOLDERS)
            .map_err(db_err("find completed attempts' tasks"))?;
        let mut rows = stmt
            .query([array(p.completions.iter().map(|c| c.attempt_id.as_str()))])
            .map_err(db_err("find completed attempts' tasks"))?;
        while let Some(r) = rows
            .next()
            .map_err(db_err("find completed attempts' tasks"))?
        {
            let read = || -> rusqlite::Result<_> {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                ))
            };
            let (position, task_rowid, attempt_rowid, id) =
                read().map_err(db_err("find completed attempts' tasks"))?;
            // rarray numbers its rows from 1.
            let Some(slot) = usize::try_from(position - 1)
                .ok()
                .and_then(|i| found.get_mut(i))
            else {
                continue;
            };
            *slot = Some((attempt_rowid, id.clone()));
            if tasks.contains_key(&id) {
                continue;
            }
            let read = || -> rusqlite::Result<_> {
                Ok((
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, Option<String>>(7)?,
                    r.get::<_, bool>(8)?,
                ))
            };
            let (tenant, priority, state, current_attempt, cancel_requested) =
                read().map_err(db_err("find completed attempts' tasks"))?;
            let key = TaskKey {
                rowid: task_rowid,
                id: id.clone(),
                tenant,
                priority,
                state: parse_state(&state)?,
            };
            let holder = Holder {
                key,
                current_attempt,
                cancel_requested,
            };
            tasks.insert(id, holder);
        }
    }

    let mut out = Vec::with_capacity(p.completions.len());
    for (c, found) in p.completions.into_iter().zip(found) {
        let Some((attempt_rowid, task)) = found.and_then(|(a, id)| Some((a, tasks.get_mut(&id)?)))
        else {
            out.push(Completed {
                attempt_id: c.attempt_id,
                accepted: false,
                task_id: None,
                state: None,
            });
            continue;
        };
        let held = task.key.state == TaskState::Running
            && task.current_attempt.as_deref() == Some(c.attempt_id.as_str());
        if !held {
            out.push(Completed {
                attempt_id: c.attempt_id,
                accepted: false,
                task_id: Some(TaskId::from(task.key.id.clone())),
                state: Some(task.key.state),
            });
            continue;
        }
        let state = match rules::honour_cancel(c.next, task.cancel_requested) {
            Next::Requeue => {
                ctx.conn
                    .prepare_cached("DELETE FROM attempts WHERE rowid = ?1")
                    .and_then(|mut s| s.execute([attempt_rowid]))
                    .map_err(db_err("delete a requeued attempt"))?;
                // Back to its old place in line: the sort key it had when claimed is kept.
                ctx.conn
                    .prepare_cached(
                        "UPDATE tasks SET state = 'queued', attempt_count = attempt_count - 1,
                            started_at = CASE WHEN attempt_count = 1 THEN NULL ELSE started_at END,
                            current_attempt = NULL, lease_until = NULL
                         WHERE rowid = ?1",
                    )
                    .and_then(|mut s| s.execute([task.key.rowid]))
                    .map_err(db_err("requeue a task"))?;
                ctx.counts.moved(
                    &task.key.tenant,
                    task.key.priority,
                    TaskState::Running,
                    TaskState::Queued,
                );
                ctx.made_ready = true;
                TaskState::Queued
            }
            Next::Finish(state) => {
                record_attempt(ctx, attempt_rowid, &c.attempt)?;
                finish(ctx, &task.key, state, now)?;
                state
            }
            Next::Retry { run_at } => {
                record_attempt(ctx, attempt_rowid, &c.attempt)?;
                wait_for_retry(ctx, &task.key, run_at, p.now)?
            }
        };
        task.key.state = state;
        task.current_attempt = None;
        out.push(Completed {
            attempt_id: c.attempt_id,
            accepted: true,
            task_id: Some(TaskId::from(task.key.id.clone())),
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
            let rowid: i64 = ctx
                .conn
                .prepare_cached("SELECT rowid FROM tasks WHERE id = ?1")
                .and_then(|mut s| s.query_row([task.id.as_str()], |r| r.get(0)))
                .map_err(db_err("find a task"))?;
            let key = TaskKey {
                rowid,
                id: task.id.to_string(),
                tenant: task.tenant.clone(),
                priority: i64::from(task.priority.rank()),
                state: task.state,
            };
            finish(ctx, &key, TaskState::Cancelled, ms(p.now))?
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
    key: TaskKey,
    attempt: String,
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
                max_attempts, backoff_ms, max_backoff_ms, retry_on, rowid
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
                })
            })?
            .collect()
        })
        .map_err(db_err("find expired leases"))?;
    let mut out = Vec::with_capacity(expired.len());
    for e in expired {
        let (node, lease, attempt_rowid): (String, Option<i64>, i64) = ctx
            .conn
            .prepare_cached("SELECT node, lease_until, rowid FROM attempts WHERE id = ?1")
            .and_then(|mut s| s.query_row([&e.attempt], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))))
            .map_err(db_err("read a lost attempt"))?;
        let lost = rules::lost_attempt(&node, lease.map(from_millis), p.now);
        record_attempt(ctx, attempt_rowid, &lost)?;
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
             WHERE deadline IS NOT NULL AND state IN ('queued', 'scheduled') AND deadline < ?1
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

/// `task_prune`: delete old terminal tasks; their attempts go by `ON DELETE CASCADE`.
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
