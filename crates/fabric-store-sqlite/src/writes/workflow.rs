//! The SQL of task workflows (the rules are `fabric_store::workflow`): the states of a
//! task's dependencies, the input a `pass_outputs` task gets, moving waiting tasks on when
//! a task they wait on ends, and cancelling a task's descendants.

use std::collections::HashMap;

use fabric_store::workflow::{self, DependencyOutput, Readiness};
use fabric_store::{StoreError, TaskId};
use fabric_types::TaskState;
use rusqlite::{Connection, OptionalExtension, params};

use super::{TaskKey, enqueue, schedule};
use crate::db_err;
use crate::rows::parse_state;
use crate::writer::WriteCtx;

/// The current states of `ids` among the tasks of `tenant`; an id not stored (or another
/// tenant's) is missing from the map.
pub(super) fn dependency_states(
    conn: &Connection,
    tenant: &str,
    ids: &[TaskId],
) -> Result<HashMap<TaskId, TaskState>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT state FROM tasks WHERE id = ?1 AND tenant = ?2")
        .map_err(db_err("read a dependency's state"))?;
    let mut states = HashMap::with_capacity(ids.len());
    for id in ids {
        let state: Option<String> = stmt
            .query_row(params![id.as_str(), tenant], |r| r.get(0))
            .optional()
            .map_err(db_err("read a dependency's state"))?;
        if let Some(state) = state {
            states.insert(id.clone(), parse_state(&state)?);
        }
    }
    Ok(states)
}

/// The input of a `pass_outputs` task whose dependencies (`after`, all in `states`) all
/// succeeded: the document of [`workflow::pass_outputs_input`], with the output of each
/// dependency's last attempt.
pub(super) fn passed_input(
    conn: &Connection,
    input: &[u8],
    after: &[TaskId],
    states: &HashMap<TaskId, TaskState>,
) -> Result<Vec<u8>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT output FROM attempts WHERE task_id = ?1 ORDER BY number DESC LIMIT 1",
        )
        .map_err(db_err("read a dependency's output"))?;
    let mut outputs = Vec::with_capacity(after.len());
    for id in after {
        let output: Option<Option<Vec<u8>>> = stmt
            .query_row([id.as_str()], |r| r.get(0))
            .optional()
            .map_err(db_err("read a dependency's output"))?;
        outputs.push(output.flatten().unwrap_or_default());
    }
    let deps: Vec<DependencyOutput<'_>> = after
        .iter()
        .zip(&outputs)
        .map(|(id, output)| DependencyOutput {
            id,
            state: states.get(id).copied().unwrap_or(TaskState::Succeeded),
            output,
        })
        .collect();
    Ok(workflow::pass_outputs_input(input, &deps))
}

/// Ends one task in `state` at `now` with a task-level `error`, without moving its
/// dependents (the caller does).
fn end_with_error(
    ctx: &mut WriteCtx<'_>,
    task: &TaskKey,
    state: TaskState,
    now: i64,
    error: &str,
) -> Result<(), StoreError> {
    ctx.conn
        .prepare_cached(
            "UPDATE tasks SET state = ?2, finished_at = ?3, error = ?4, sort_key = NULL,
                current_attempt = NULL, lease_until = NULL
             WHERE rowid = ?1",
        )
        .and_then(|mut s| s.execute(params![task.rowid, state.as_str(), now, error]))
        .map_err(db_err("end a task"))?;
    ctx.counts
        .moved(&task.tenant, task.priority, task.state, state);
    Ok(())
}

/// The tasks waiting on one task, which every write that ends a task looks up: a probe of
/// `task_deps`' primary key, then each task by its own.
pub(super) const DEPENDENTS: &str =
    "SELECT t.rowid, t.id, t.tenant, t.priority, t.after_ids, t.pass_outputs, t.run_at
     FROM task_deps AS d CROSS JOIN tasks AS t ON t.id = d.task_id
     WHERE d.dep_id = ?1 AND t.state = 'waiting'";

/// A waiting task as moving it on needs it.
struct Waiting {
    key: TaskKey,
    after: Option<String>,
    pass_outputs: bool,
    run_at: Option<i64>,
}

/// After task `ended` ended (at `now`): each task waiting on it moves on by
/// [`workflow::readiness`] — queued (or scheduled for a later `run_at`), with its
/// `pass_outputs` input built, when all its dependencies succeeded; cancelled, its error
/// naming the dependency, when one did not, and then its own dependents likewise.
pub(super) fn dependents_move_on(
    ctx: &mut WriteCtx<'_>,
    ended: &str,
    now: i64,
) -> Result<(), StoreError> {
    let mut ended = vec![ended.to_owned()];
    while let Some(id) = ended.pop() {
        let waiting: Vec<Waiting> = ctx
            .conn
            .prepare_cached(DEPENDENTS)
            .and_then(|mut s| {
                s.query_map([&id], |r| {
                    Ok(Waiting {
                        key: TaskKey {
                            rowid: r.get(0)?,
                            id: r.get(1)?,
                            tenant: r.get(2)?,
                            priority: r.get(3)?,
                            state: TaskState::Waiting,
                        },
                        after: r.get(4)?,
                        pass_outputs: r.get(5)?,
                        run_at: r.get(6)?,
                    })
                })?
                .collect()
            })
            .map_err(db_err("find the tasks waiting on a task"))?;
        for w in waiting {
            let after = workflow::ids_decode(w.after.as_deref(), "tasks.after_ids")?;
            let states = dependency_states(ctx.conn, &w.key.tenant, &after)?;
            match workflow::readiness(&after, |id| states.get(id).copied()) {
                Readiness::Waiting => {}
                Readiness::Blocked { dependency, state } => {
                    let error = workflow::dependency_error(&dependency, state);
                    end_with_error(ctx, &w.key, TaskState::Cancelled, now, &error)?;
                    ended.push(w.key.id);
                }
                Readiness::Ready => {
                    if w.pass_outputs {
                        let input: Vec<u8> = ctx
                            .conn
                            .prepare_cached("SELECT input FROM tasks WHERE rowid = ?1")
                            .and_then(|mut s| s.query_row([w.key.rowid], |r| r.get(0)))
                            .map_err(db_err("read a task's input"))?;
                        let input = passed_input(ctx.conn, &input, &after, &states)?;
                        ctx.conn
                            .prepare_cached("UPDATE tasks SET input = ?2 WHERE rowid = ?1")
                            .and_then(|mut s| s.execute(params![w.key.rowid, input]))
                            .map_err(db_err("pass outputs to a task"))?;
                    }
                    match w.run_at.filter(|&at| at > now) {
                        Some(run_at) => schedule(ctx, &w.key, run_at)?,
                        None => enqueue(ctx, &w.key, now, false)?,
                    }
                }
            }
        }
    }
    Ok(())
}

/// Cancels every unfinished descendant of task `root` (by `parent`, transitively): waiting,
/// queued and scheduled ones end `cancelled` (their error naming `root`, their dependents
/// moving on), running ones get `cancel_requested`.
pub(super) fn cancel_descendants(
    ctx: &mut WriteCtx<'_>,
    root: &str,
    now: i64,
) -> Result<(), StoreError> {
    let error = workflow::ancestor_cancelled_error(&TaskId::from(root));
    let mut parents = vec![root.to_owned()];
    while let Some(parent) = parents.pop() {
        let rows: Vec<(i64, String, String, i64, String)> = ctx
            .conn
            .prepare_cached(
                "SELECT rowid, id, tenant, priority, state FROM tasks INDEXED BY tasks_parent
                 WHERE parent = ?1",
            )
            .and_then(|mut s| {
                s.query_map([&parent], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?
                .collect()
            })
            .map_err(db_err("find a task's children"))?;
        for (rowid, id, tenant, priority, state) in rows {
            let child = TaskKey {
                rowid,
                id,
                tenant,
                priority,
                state: parse_state(&state)?,
            };
            match child.state {
                TaskState::Waiting | TaskState::Queued | TaskState::Scheduled => {
                    end_with_error(ctx, &child, TaskState::Cancelled, now, &error)?;
                    dependents_move_on(ctx, &child.id, now)?;
                }
                TaskState::Running => {
                    ctx.conn
                        .prepare_cached("UPDATE tasks SET cancel_requested = 1 WHERE rowid = ?1")
                        .and_then(|mut s| s.execute([child.rowid]))
                        .map_err(db_err("request a cancel"))?;
                }
                _ => {}
            }
            parents.push(child.id);
        }
    }
    Ok(())
}

/// Records that task `id` waits on each of `after`.
pub(super) fn insert_edges(
    conn: &Connection,
    id: &str,
    after: &[TaskId],
) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare_cached("INSERT OR IGNORE INTO task_deps (dep_id, task_id) VALUES (?1, ?2)")
        .map_err(db_err("record a task's dependencies"))?;
    for dep in after {
        stmt.execute(params![dep.as_str(), id])
            .map_err(db_err("record a task's dependencies"))?;
    }
    Ok(())
}
