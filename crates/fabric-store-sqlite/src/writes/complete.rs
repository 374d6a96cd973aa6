//! Writes that end an attempt or ask it to stop: completions and cancels.

use std::collections::HashMap;

use fabric_store::rollup::Rollup;
use fabric_store::{
    Completed, NewTask, Next, StoreError, TaskCancelParams, TaskCompleteParams, TaskId, TaskRecord,
    rules, workflow,
};
use fabric_types::TaskState;
use time::OffsetDateTime;

use super::insert::insert_batch;
use super::workflow::cancel_descendants;
use super::{HOLDERS, TaskKey, array, finish, record_attempt, wait_for_retry, write_rollup};
use crate::db_err;
use crate::rows::{load_task, ms, parse_state};
use crate::writer::WriteCtx;

/// The task of a completed attempt as this call has left it so far.
struct Holder {
    key: TaskKey,
    /// The attempt holding the task while it runs.
    current_attempt: Option<String>,
    cancel_requested: bool,
    module: String,
}

/// `task_complete`: apply each completion whose attempt still holds its task, in order (a
/// completion sees the effect of the earlier ones in the same call), and add the accepted
/// ones to the KPI and usage rollups.
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
                    r.get::<_, String>(9)?,
                ))
            };
            let (tenant, priority, state, current_attempt, cancel_requested, module) =
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
                module,
            };
            tasks.insert(id, holder);
        }
    }

    let mut out = Vec::with_capacity(p.completions.len());
    let mut rollup = Rollup::default();
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
        let mut next = rules::honour_cancel(c.next, task.cancel_requested);
        let mut attempt = c.attempt;
        if next == Next::Finish(TaskState::Succeeded)
            && !task.cancel_requested
            && !c.children.is_empty()
            && let Some(refusal) = insert_children(ctx, &task.key, c.children, p.now)?
        {
            attempt = workflow::refused_attempt(attempt, refusal);
            next = Next::Finish(TaskState::Failed);
        }
        let recorded = !matches!(next, Next::Requeue);
        rollup.ended(&task.key.tenant, &task.module, p.now, &attempt, recorded);
        let state = match next {
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
                record_attempt(ctx, attempt_rowid, &attempt)?;
                finish(ctx, &task.key, state, now)?;
                state
            }
            Next::Retry { run_at } => {
                record_attempt(ctx, attempt_rowid, &attempt)?;
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
    write_rollup(ctx, &rollup)?;
    Ok(out)
}

/// Inserts the children a succeeding attempt of `task` submitted, in a savepoint of their
/// own; when they are refused, rolls them back and returns the refusal (see
/// [`workflow::children_refusal`]).
fn insert_children(
    ctx: &mut WriteCtx<'_>,
    task: &TaskKey,
    children: Vec<NewTask>,
    now: OffsetDateTime,
) -> Result<Option<String>, StoreError> {
    let parent = TaskId::from(task.id.clone());
    let children = match workflow::prepare_children(&task.tenant, &parent, children) {
        Ok(children) => children,
        Err(refusal) => return Ok(Some(refusal)),
    };
    let exec = |sql: &str| {
        ctx.conn
            .execute_batch(sql)
            .map_err(db_err("insert child tasks"))
    };
    exec("SAVEPOINT children")?;
    let (counts, made_ready) = (ctx.counts.clone(), ctx.made_ready);
    match insert_batch(ctx, children, now) {
        Ok(_) => {
            ctx.conn
                .execute_batch("RELEASE children")
                .map_err(db_err("insert child tasks"))?;
            Ok(None)
        }
        Err(e) => {
            ctx.conn
                .execute_batch("ROLLBACK TO children; RELEASE children")
                .map_err(db_err("refuse child tasks"))?;
            ctx.counts = counts;
            ctx.made_ready = made_ready;
            workflow::children_refusal(&e).map(Some).ok_or(e)
        }
    }
}

/// `task_cancel`: end a waiting task, or flag a running one; then cancel its unfinished
/// descendants.
pub(crate) fn task_cancel(
    ctx: &mut WriteCtx<'_>,
    p: TaskCancelParams,
) -> Result<Option<TaskRecord>, StoreError> {
    let tenant = p.tenant.as_deref();
    let Some(task) = load_task(ctx.conn, tenant, p.id.as_str())? else {
        return Ok(None);
    };
    match task.state {
        TaskState::Waiting | TaskState::Queued | TaskState::Scheduled => {
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
        _ => {}
    }
    cancel_descendants(ctx, task.id.as_str(), ms(p.now))?;
    load_task(ctx.conn, tenant, p.id.as_str())
}
