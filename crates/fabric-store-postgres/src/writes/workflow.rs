//! The SQL of task workflows (the rules are `fabric_store::workflow`): the states of a
//! task's dependencies, the input a `pass_outputs` task gets, moving waiting tasks on when
//! a task they wait on ends, and cancelling a task's descendants. Everything runs in the
//! caller's transaction.
//!
//! Concurrency: an insert locks the dependencies it names `FOR SHARE` until it commits, so
//! a transaction ending one of them waits for the insert and then finds the new waiting
//! task. Moving waiting tasks on locks them `FOR UPDATE` before reading their dependencies'
//! states, so of two transactions ending two dependencies of one task, the second waits
//! for the first and then sees both ended.

use std::collections::{BTreeSet, HashMap};

use deadpool_postgres::GenericClient;
use fabric_store::workflow::{self, DependencyOutput, Readiness};
use fabric_store::{StoreError, TaskId, claim_sort_key};
use fabric_types::TaskState;

use crate::db::{Db, execute, query};
use crate::rows::{parse_priority, parse_state};

/// `tenant, state` of each of `ids` that is stored, locked `FOR SHARE` (in id order) until
/// the transaction ends, so none of them can end unseen while the caller inserts a task
/// waiting on it.
pub(super) async fn lock_dependencies<C: GenericClient>(
    c: &C,
    ids: &[String],
) -> Result<HashMap<String, (String, TaskState)>, StoreError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = query(
        c,
        "lock a task's dependencies",
        "SELECT id, tenant, state FROM tasks WHERE id = ANY($1::text[]) ORDER BY id FOR SHARE",
        &[&ids],
    )
    .await?;
    rows.iter()
        .map(|r| {
            let state: &str = r.get(2);
            Ok((r.get(0), (r.get(1), parse_state(state)?)))
        })
        .collect()
}

/// The input of a `pass_outputs` task whose dependencies (`after`, all in `states`) all
/// succeeded: the document of [`workflow::pass_outputs_input`], with the output of each
/// dependency's last attempt.
pub(super) async fn passed_input<C: GenericClient>(
    c: &C,
    input: &[u8],
    after: &[TaskId],
    states: &HashMap<String, TaskState>,
) -> Result<Vec<u8>, StoreError> {
    let ids: Vec<&str> = after.iter().map(TaskId::as_str).collect();
    let rows = query(
        c,
        "read dependencies' outputs",
        "SELECT DISTINCT ON (task_id) task_id, output FROM attempts
         WHERE task_id = ANY($1::text[]) ORDER BY task_id, number DESC",
        &[&ids],
    )
    .await?;
    let outputs: HashMap<String, Vec<u8>> = rows
        .iter()
        .map(|r| {
            let output: Option<Vec<u8>> = r.get(1);
            (r.get(0), output.unwrap_or_default())
        })
        .collect();
    let deps: Vec<DependencyOutput<'_>> = after
        .iter()
        .map(|id| DependencyOutput {
            id,
            state: states
                .get(id.as_str())
                .copied()
                .unwrap_or(TaskState::Succeeded),
            output: outputs.get(id.as_str()).map_or(&[][..], Vec::as_slice),
        })
        .collect();
    Ok(workflow::pass_outputs_input(input, &deps))
}

/// Records that task `id` waits on each of `after`, for a batch of waiting tasks.
pub(super) async fn insert_edges<C: GenericClient>(
    c: &C,
    edges: &[(String, Vec<TaskId>)],
) -> Result<(), StoreError> {
    let (mut deps, mut tasks): (Vec<&str>, Vec<&str>) = (Vec::new(), Vec::new());
    for (task, after) in edges {
        for dep in after {
            deps.push(dep.as_str());
            tasks.push(task.as_str());
        }
    }
    if deps.is_empty() {
        return Ok(());
    }
    execute(
        c,
        "record tasks' dependencies",
        "INSERT INTO task_deps (dep_id, task_id) SELECT * FROM unnest($1::text[], $2::text[])
         ON CONFLICT DO NOTHING",
        &[&deps, &tasks],
    )
    .await?;
    Ok(())
}

const LOCK_WAITING: &str = "SELECT t.id, t.priority, t.after_ids, t.pass_outputs, t.run_at, t.input
    FROM tasks t
    WHERE t.id IN (SELECT task_id FROM task_deps WHERE dep_id = ANY($1::text[]))
        AND t.state = 'waiting'
    ORDER BY t.id FOR UPDATE OF t";

const MOVE_ON: &str = "UPDATE tasks SET state = $2, finished_at = $3, sort_key = $4,
        run_at = COALESCE($5, run_at), error = $6, input = COALESCE($7, input)
    WHERE id = $1";

/// After the tasks `ended` ended (at `now`): each task waiting on one of them moves on by
/// [`workflow::readiness`] — queued (or scheduled for a later `run_at`), with its
/// `pass_outputs` input built, when all its dependencies succeeded; cancelled, its error
/// naming the dependency, when one did not, and then its own dependents likewise. Returns
/// whether a task became queued (the caller asks for the ready signal after its commit).
pub(super) async fn dependents_move_on<C: GenericClient>(
    c: &C,
    ended: Vec<String>,
    now: i64,
    aging_step_ms: u64,
) -> Result<bool, StoreError> {
    let mut ended = ended;
    let mut made_ready = false;
    while !ended.is_empty() {
        let waiting = query(
            c,
            "lock the tasks waiting on ended tasks",
            LOCK_WAITING,
            &[&ended],
        )
        .await?;
        ended = Vec::new();
        if waiting.is_empty() {
            break;
        }
        let mut afters = Vec::with_capacity(waiting.len());
        let mut all: BTreeSet<String> = BTreeSet::new();
        for r in &waiting {
            let after: Vec<String> = r.get::<_, Option<Vec<String>>>(2).unwrap_or_default();
            all.extend(after.iter().cloned());
            afters.push(after.into_iter().map(TaskId::from).collect::<Vec<_>>());
        }
        let all: Vec<String> = all.into_iter().collect();
        let states: HashMap<String, TaskState> = query(
            c,
            "read dependencies' states",
            "SELECT id, state FROM tasks WHERE id = ANY($1::text[])",
            &[&all],
        )
        .await?
        .iter()
        .map(|r| {
            let state: &str = r.get(1);
            Ok((r.get(0), parse_state(state)?))
        })
        .collect::<Result<_, StoreError>>()?;
        for (r, after) in waiting.iter().zip(afters) {
            let id: String = r.get(0);
            let priority: i16 = r.get(1);
            let pass_outputs: bool = r.get(3);
            let run_at: Option<i64> = r.get(4);
            let readiness = workflow::readiness(&after, |d| states.get(d.as_str()).copied());
            let (state, finished_at, sort_key, error, input) = match readiness {
                Readiness::Waiting => continue,
                Readiness::Blocked { dependency, state } => {
                    ended.push(id.clone());
                    (
                        TaskState::Cancelled,
                        Some(now),
                        None,
                        Some(workflow::dependency_error(&dependency, state)),
                        None,
                    )
                }
                Readiness::Ready => {
                    let input = if pass_outputs {
                        let own: Vec<u8> = r.get(5);
                        Some(passed_input(c, &own, &after, &states).await?)
                    } else {
                        None
                    };
                    match run_at.filter(|&at| at > now) {
                        // Keyed at its run_at by its promotion.
                        Some(_) => (TaskState::Scheduled, None, None, None, input),
                        None => {
                            made_ready = true;
                            let key = claim_sort_key(now, parse_priority(priority)?, aging_step_ms);
                            (TaskState::Queued, None, Some(key), None, input)
                        }
                    }
                }
            };
            execute(
                c,
                "move a waiting task on",
                MOVE_ON,
                &[
                    &id,
                    &state.as_str(),
                    &finished_at,
                    &sort_key,
                    &None::<i64>,
                    &error,
                    &input,
                ],
            )
            .await?;
        }
    }
    Ok(made_ready)
}

const CANCEL_CHILDREN: &str = "WITH children AS MATERIALIZED (
        SELECT id FROM tasks WHERE parent = ANY($1::text[]) ORDER BY id FOR UPDATE
    ), changed AS (
        UPDATE tasks t SET
            state = CASE WHEN t.state IN ('waiting', 'queued', 'scheduled') THEN 'cancelled' ELSE t.state END,
            finished_at = CASE WHEN t.state IN ('waiting', 'queued', 'scheduled') THEN $2 ELSE t.finished_at END,
            sort_key = CASE WHEN t.state IN ('waiting', 'queued', 'scheduled') THEN NULL ELSE t.sort_key END,
            error = CASE WHEN t.state IN ('waiting', 'queued', 'scheduled') THEN $3 ELSE t.error END,
            cancel_requested = t.cancel_requested OR t.state = 'running'
        FROM children c WHERE t.id = c.id AND t.state IN ('waiting', 'queued', 'scheduled', 'running')
        RETURNING t.id, t.state
    )
    SELECT c.id, ch.state FROM children c LEFT JOIN changed ch ON ch.id = c.id";

/// Cancels every unfinished descendant of task `root` (by `parent`, transitively): waiting,
/// queued and scheduled ones end `cancelled` (their error naming `root`, their dependents
/// moving on), running ones get `cancel_requested`.
pub(super) async fn cancel_descendants<C: GenericClient>(
    c: &C,
    root: &str,
    now: i64,
    aging_step_ms: u64,
) -> Result<(), StoreError> {
    let error = workflow::ancestor_cancelled_error(&TaskId::from(root));
    let mut parents = vec![root.to_owned()];
    while !parents.is_empty() {
        let rows = query(
            c,
            "cancel a task's children",
            CANCEL_CHILDREN,
            &[&parents, &now, &error],
        )
        .await?;
        let mut cancelled = Vec::new();
        parents = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: String = r.get(0);
            if r.get::<_, Option<&str>>(1) == Some("cancelled") {
                cancelled.push(id.clone());
            }
            parents.push(id);
        }
        dependents_move_on(c, cancelled, now, aging_step_ms).await?;
    }
    Ok(())
}

/// Moves on the tasks waiting on tasks a claim expired, in a transaction of its own (the
/// claim's statement commits alone). Should this node die between the two, those waiting
/// tasks keep waiting (see docs/architecture.md).
pub(super) async fn after_claim_expired(
    db: &Db,
    expired: Vec<String>,
    now: i64,
) -> Result<(), StoreError> {
    let mut client = db.client("move on after expiry").await?;
    let tx = super::begin(&mut client, "begin moving on after expiry").await?;
    let ready = dependents_move_on(&tx, expired, now, db.aging_step_ms).await?;
    super::commit(tx, "commit moving on after expiry").await?;
    if ready {
        db.made_ready();
    }
    Ok(())
}
