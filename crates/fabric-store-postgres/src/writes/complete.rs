//! Writes that end an attempt or ask it to stop: completions and cancels.

use std::collections::HashMap;

use deadpool_postgres::GenericClient;
use fabric_store::rollup::Rollup;
use fabric_store::{
    Completed, NewTask, Next, StoreError, TaskCancelParams, TaskCompleteParams, TaskId, TaskRecord,
    rules, workflow,
};
use fabric_types::{Attempt, TaskState};
use time::OffsetDateTime;

use super::insert::insert_batch;
use super::workflow::{cancel_descendants, dependents_move_on};
use super::{Transition, apply_transitions, begin, commit, record_attempts, write_rollup};
use crate::db::{Db, execute, query};
use crate::reads;
use crate::rows::{ms, parse_state};

/// Locks the tasks these attempts still hold: `attempt id -> (task id, priority,
/// cancel_requested, tenant, module)`. Locks are taken in task id order, so concurrent
/// batches cannot deadlock on each other.
const LOCK_HELD: &str =
    "SELECT current_attempt, id, priority, cancel_requested, tenant, module FROM tasks
    WHERE current_attempt = ANY($1::text[]) AND state = 'running'
    ORDER BY id FOR UPDATE";

const ATTEMPT_TASKS: &str =
    "SELECT a.id, t.id, t.state FROM attempts a JOIN tasks t ON t.id = a.task_id
    WHERE a.id = ANY($1::text[])";

/// A locked task of a completed attempt: id, priority, cancel_requested, tenant, module.
type Held = (String, i16, bool, String, String);

/// `task_complete`: one transaction for the whole batch. The tasks still held by the
/// completions' attempts are locked first (the fence: a rescue or another completion that
/// got there first leaves nothing to lock); then the ends are written with a few
/// set-based statements, and the accepted completions added to the KPI and usage rollups.
pub(crate) async fn task_complete(
    db: &Db,
    mut p: TaskCompleteParams,
) -> Result<Vec<Completed>, StoreError> {
    rules::check_completions(&p.completions)?;
    if p.completions.is_empty() {
        return Ok(Vec::new());
    }
    let now = ms(p.now);
    let ids: Vec<&str> = p
        .completions
        .iter()
        .map(|c| c.attempt_id.as_str())
        .collect();
    let mut client = db.client("task_complete").await?;
    let tx = begin(&mut client, "begin task_complete").await?;
    let rows = query(
        &tx,
        "lock the completed attempts' tasks",
        LOCK_HELD,
        &[&ids],
    )
    .await?;
    let mut held: HashMap<String, Held> = rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))))
        .collect();

    let mut ended: Vec<(String, Attempt)> = Vec::new();
    let mut requeued: Vec<String> = Vec::new();
    let mut transitions: Vec<Transition> = Vec::new();
    // Per completion: accepted with (task, state), or rejected.
    let mut fates: Vec<Option<(String, TaskState)>> = Vec::with_capacity(p.completions.len());
    let mut made_ready = false;
    let mut rollup = Rollup::default();
    for c in p.completions.iter_mut() {
        // `remove`: a second completion of one attempt in the batch is rejected.
        let Some((task_id, priority, cancel_requested, tenant, module)) =
            held.remove(c.attempt_id.as_str())
        else {
            fates.push(None);
            continue;
        };
        let mut next = rules::honour_cancel(c.next, cancel_requested);
        if next == Next::Finish(TaskState::Succeeded) && !cancel_requested && !c.children.is_empty()
        {
            let children = std::mem::take(&mut c.children);
            match insert_children(&tx, &tenant, &task_id, children, p.now, db.aging_step_ms).await?
            {
                Ok(ready) => made_ready |= ready,
                Err(refusal) => {
                    c.attempt = workflow::refused_attempt(c.attempt.clone(), refusal);
                    next = Next::Finish(TaskState::Failed);
                }
            }
        }
        let recorded = !matches!(next, Next::Requeue);
        rollup.ended(&tenant, &module, p.now, &c.attempt, recorded);
        let transition = match next {
            Next::Requeue => {
                requeued.push(c.attempt_id.as_str().to_string());
                Transition {
                    task_id: task_id.clone(),
                    state: TaskState::Queued,
                    finished_at: None,
                    run_at: None,
                    sort_key: None,
                    requeue: true,
                }
            }
            Next::Finish(state) => {
                ended.push((c.attempt_id.as_str().to_string(), c.attempt.clone()));
                Transition::finish(task_id.clone(), state, now)
            }
            Next::Retry { run_at } => {
                ended.push((c.attempt_id.as_str().to_string(), c.attempt.clone()));
                Transition::retry(task_id.clone(), priority, run_at, p.now, db.aging_step_ms)?
            }
        };
        made_ready |= transition.state == TaskState::Queued;
        fates.push(Some((task_id, transition.state)));
        transitions.push(transition);
    }

    // Rejected completions report the task's state after this batch.
    let rejected: Vec<&str> = p
        .completions
        .iter()
        .zip(&fates)
        .filter(|(_, fate)| fate.is_none())
        .map(|(c, _)| c.attempt_id.as_str())
        .collect();
    let mut known: HashMap<String, (String, TaskState)> = HashMap::new();
    if !rejected.is_empty() {
        for r in query(
            &tx,
            "find the completed attempts' tasks",
            ATTEMPT_TASKS,
            &[&rejected],
        )
        .await?
        {
            let state: &str = r.get(2);
            known.insert(r.get(0), (r.get(1), parse_state(state)?));
        }
    }
    let after: HashMap<&str, TaskState> = transitions
        .iter()
        .map(|t| (t.task_id.as_str(), t.state))
        .collect();

    record_attempts(&tx, ended).await?;
    if !requeued.is_empty() {
        execute(
            &tx,
            "delete requeued attempts",
            "DELETE FROM attempts WHERE id = ANY($1::text[])",
            &[&requeued],
        )
        .await?;
    }
    apply_transitions(&tx, &transitions).await?;
    let ended: Vec<String> = transitions
        .iter()
        .filter(|t| t.state.is_terminal())
        .map(|t| t.task_id.clone())
        .collect();
    made_ready |= dependents_move_on(&tx, ended, now, db.aging_step_ms).await?;
    write_rollup(&tx, &rollup).await?;
    commit(tx, "commit task_complete").await?;
    if made_ready {
        db.made_ready();
    }

    Ok(p.completions
        .into_iter()
        .zip(fates)
        .map(|(c, fate)| match fate {
            Some((task_id, state)) => Completed {
                attempt_id: c.attempt_id,
                accepted: true,
                task_id: Some(TaskId::from(task_id)),
                state: Some(state),
            },
            None => {
                let found = known.get(c.attempt_id.as_str());
                let task_id = found.map(|(id, _)| id.clone());
                let state = found.map(|(id, stored)| *after.get(id.as_str()).unwrap_or(stored));
                Completed {
                    attempt_id: c.attempt_id,
                    accepted: false,
                    task_id: task_id.map(TaskId::from),
                    state,
                }
            }
        })
        .collect())
}

/// Inserts the children a succeeding attempt of `task_id` submitted, in a savepoint of
/// their own: `Ok(made_ready)`, or the refusal (see [`workflow::children_refusal`]) after
/// rolling them back.
async fn insert_children<C: GenericClient>(
    tx: &C,
    tenant: &str,
    task_id: &str,
    children: Vec<NewTask>,
    now: OffsetDateTime,
    aging_step_ms: u64,
) -> Result<Result<bool, String>, StoreError> {
    let parent = TaskId::from(task_id);
    let children = match workflow::prepare_children(tenant, &parent, children) {
        Ok(children) => children,
        Err(refusal) => return Ok(Err(refusal)),
    };
    tx.batch_execute("SAVEPOINT children")
        .await
        .map_err(crate::error::db_err("insert child tasks"))?;
    match insert_batch(tx, children, now, aging_step_ms, None).await {
        Ok((_, made_ready)) => {
            tx.batch_execute("RELEASE SAVEPOINT children")
                .await
                .map_err(crate::error::db_err("insert child tasks"))?;
            Ok(Ok(made_ready))
        }
        Err(e) => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT children; RELEASE SAVEPOINT children")
                .await
                .map_err(crate::error::db_err("refuse child tasks"))?;
            workflow::children_refusal(&e).map(Err).ok_or(e)
        }
    }
}

const CANCEL_SQL: &str = "UPDATE tasks SET
        state = CASE WHEN state IN ('waiting', 'queued', 'scheduled') THEN 'cancelled' ELSE state END,
        finished_at = CASE WHEN state IN ('waiting', 'queued', 'scheduled') THEN $3 ELSE finished_at END,
        sort_key = CASE WHEN state IN ('waiting', 'queued', 'scheduled') THEN NULL ELSE sort_key END,
        cancel_requested = cancel_requested OR state = 'running'
    WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)
        AND state IN ('waiting', 'queued', 'scheduled', 'running')
    RETURNING state";

const TASK_EXISTS: &str = "SELECT 1 FROM tasks WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)";

/// `task_cancel`: in one transaction, end a waiting task or flag a running one, move the
/// tasks waiting on it on, and cancel its unfinished descendants; then read it.
pub(crate) async fn task_cancel(
    db: &Db,
    p: TaskCancelParams,
) -> Result<Option<TaskRecord>, StoreError> {
    let now = ms(p.now);
    let mut client = db.client("task_cancel").await?;
    let tx = begin(&mut client, "begin task_cancel").await?;
    let changed = query(
        &tx,
        "cancel a task",
        CANCEL_SQL,
        &[&p.id.as_str(), &p.tenant, &now],
    )
    .await?;
    let exists = !changed.is_empty()
        || !query(
            &tx,
            "find a task",
            TASK_EXISTS,
            &[&p.id.as_str(), &p.tenant],
        )
        .await?
        .is_empty();
    if !exists {
        return Ok(None);
    }
    let mut made_ready = false;
    if changed
        .first()
        .is_some_and(|r| r.get::<_, &str>(0) == TaskState::Cancelled.as_str())
    {
        made_ready |=
            dependents_move_on(&tx, vec![p.id.to_string()], now, db.aging_step_ms).await?;
    }
    cancel_descendants(&tx, p.id.as_str(), now, db.aging_step_ms).await?;
    commit(tx, "commit task_cancel").await?;
    if made_ready {
        db.made_ready();
    }
    reads::load_task(&client, p.tenant.as_deref(), p.id.as_str()).await
}
