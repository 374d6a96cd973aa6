//! The writes of periodic maintenance: rescuing lost leases, promoting due tasks,
//! expiring waiting tasks past their deadline, pruning old finished ones.

use fabric_store::rollup::Rollup;
use fabric_store::{
    AttemptId, Next, Rescued, StoreError, TaskExpireParams, TaskId, TaskPromoteParams,
    TaskPruneParams, TaskRescueParams, from_millis, rules,
};
use fabric_types::TaskState;

use super::workflow::dependents_move_on;
use super::{Transition, apply_transitions, begin, commit, record_attempts, write_rollup};
use crate::db::{Db, execute, query};
use crate::rows::{ms, retry_policy};

const LOCK_EXPIRED_LEASES: &str = "SELECT t.id, t.tenant, t.current_attempt, t.priority,
        t.attempt_count, t.cancel_requested, t.max_attempts, t.backoff_ms, t.max_backoff_ms,
        t.retry_on, a.node, a.lease_until, t.module
    FROM tasks t JOIN attempts a ON a.id = t.current_attempt
    WHERE t.state = 'running' AND t.lease_until < $1
    ORDER BY t.lease_until, t.id LIMIT $2
    FOR UPDATE OF t SKIP LOCKED";

/// `task_rescue`: in one transaction, lock running tasks whose lease ended (skipping any a
/// concurrent completion or rescuer holds), record their attempts `lost`, and retry, fail
/// or cancel each as its policy says. Each lost attempt counts in the usage rollup, with no
/// usage (what the guest used is unknown).
pub(crate) async fn task_rescue(db: &Db, p: TaskRescueParams) -> Result<Vec<Rescued>, StoreError> {
    if p.max == 0 {
        return Ok(Vec::new());
    }
    let now = ms(p.now);
    let max = i64::try_from(p.max).unwrap_or(i64::MAX);
    let mut client = db.client("task_rescue").await?;
    let tx = begin(&mut client, "begin task_rescue").await?;
    let rows = query(
        &tx,
        "find expired leases",
        LOCK_EXPIRED_LEASES,
        &[&now, &max],
    )
    .await?;
    if rows.is_empty() {
        return Ok(Vec::new()); // dropping the transaction rolls it back
    }
    let mut ended = Vec::with_capacity(rows.len());
    let mut transitions = Vec::with_capacity(rows.len());
    let mut out = Vec::with_capacity(rows.len());
    let mut made_ready = false;
    let mut rollup = Rollup::default();
    for r in &rows {
        let task_id: String = r.get(0);
        let attempt_id: String = r.get(2);
        let priority: i16 = r.get(3);
        let attempt_count: i32 = r.get(4);
        let cancel_requested: bool = r.get(5);
        let retry_on: Vec<String> = r.get(9);
        let retry = retry_policy(r.get(6), r.get(7), r.get(8), &retry_on)?;
        let node: String = r.get(10);
        let lease: Option<i64> = r.get(11);
        let tenant: String = r.get(1);
        rollup.lost(&tenant, r.get(12), p.now);

        ended.push((
            attempt_id.clone(),
            rules::lost_attempt(&node, lease.map(from_millis), p.now),
        ));
        let attempt_number = u32::try_from(attempt_count).unwrap_or(u32::MAX);
        let (transition, run_at) =
            match rules::next_after_lost(attempt_number, cancel_requested, &retry, p.now, p.jitter)
            {
                Next::Retry { run_at } => (
                    Transition::retry(task_id.clone(), priority, run_at, p.now, db.aging_step_ms)?,
                    Some(run_at),
                ),
                Next::Finish(state) => (Transition::finish(task_id.clone(), state, now), None),
                Next::Requeue => unreachable!("a lost lease is never requeued"),
            };
        made_ready |= transition.state == TaskState::Queued;
        out.push(Rescued {
            task_id: TaskId::from(task_id),
            tenant,
            attempt_id: AttemptId::from(attempt_id),
            state: transition.state,
            // As stored: to the millisecond.
            run_at: run_at.map(|t| from_millis(ms(t))),
        });
        transitions.push(transition);
    }
    record_attempts(&tx, ended).await?;
    apply_transitions(&tx, &transitions).await?;
    let finished: Vec<String> = transitions
        .iter()
        .filter(|t| t.state.is_terminal())
        .map(|t| t.task_id.clone())
        .collect();
    made_ready |= dependents_move_on(&tx, finished, now, db.aging_step_ms).await?;
    write_rollup(&tx, &rollup).await?;
    commit(tx, "commit task_rescue").await?;
    if made_ready {
        db.made_ready();
    }
    Ok(out)
}

const PROMOTE_SQL: &str = "WITH due AS MATERIALIZED (
        SELECT id FROM tasks WHERE state = 'scheduled' AND run_at <= $1
        ORDER BY run_at, id LIMIT $2 FOR UPDATE SKIP LOCKED
    ), promoted AS (
        UPDATE tasks t SET state = 'queued',
            sort_key = COALESCE(t.sort_key, t.run_at + t.priority * $3::int8)
        FROM due WHERE t.id = due.id
        RETURNING t.id, t.run_at
    )
    SELECT id FROM promoted ORDER BY run_at, id";

/// `task_promote`: one statement queues due scheduled tasks: a task inserted as scheduled
/// keeps the fair key it got then; a retry joins at its `run_at` place in line (the sort key
/// is [`claim_sort_key`] of `run_at`, computed in SQL).
pub(crate) async fn task_promote(db: &Db, p: TaskPromoteParams) -> Result<Vec<TaskId>, StoreError> {
    if p.max == 0 {
        return Ok(Vec::new());
    }
    let step = i64::try_from(db.aging_step_ms).unwrap_or(i64::MAX);
    let max = i64::try_from(p.max).unwrap_or(i64::MAX);
    let client = db.client("task_promote").await?;
    let rows = query(
        &client,
        "promote due tasks",
        PROMOTE_SQL,
        &[&ms(p.now), &max, &step],
    )
    .await?;
    if !rows.is_empty() {
        db.made_ready();
    }
    Ok(rows
        .iter()
        .map(|r| TaskId::from(r.get::<_, String>(0)))
        .collect())
}

const EXPIRE_SQL: &str = "WITH due AS MATERIALIZED (
        SELECT id FROM tasks
        WHERE deadline IS NOT NULL AND state IN ('queued', 'scheduled', 'waiting') AND deadline < $1
        ORDER BY deadline, id LIMIT $2 FOR UPDATE SKIP LOCKED
    )
    UPDATE tasks t SET state = 'expired', finished_at = $1, sort_key = NULL
    FROM due WHERE t.id = due.id
    RETURNING t.id, t.deadline";

/// `task_expire`: one transaction ends waiting tasks whose deadline passed (one
/// statement) and moves the tasks waiting on them on.
pub(crate) async fn task_expire(db: &Db, p: TaskExpireParams) -> Result<Vec<TaskId>, StoreError> {
    if p.max == 0 {
        return Ok(Vec::new());
    }
    let max = i64::try_from(p.max).unwrap_or(i64::MAX);
    let now = ms(p.now);
    let mut client = db.client("task_expire").await?;
    let tx = begin(&mut client, "begin task_expire").await?;
    let rows = query(&tx, "expire tasks", EXPIRE_SQL, &[&now, &max]).await?;
    let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let made_ready = dependents_move_on(&tx, ids, now, db.aging_step_ms).await?;
    commit(tx, "commit task_expire").await?;
    if made_ready {
        db.made_ready();
    }
    let mut expired: Vec<(i64, String)> = rows.iter().map(|r| (r.get(1), r.get(0))).collect();
    expired.sort();
    Ok(expired
        .into_iter()
        .map(|(_, id)| TaskId::from(id))
        .collect())
}

const PRUNE_SQL: &str = "WITH old AS MATERIALIZED (
        SELECT id FROM tasks
        WHERE finished_at IS NOT NULL AND finished_at < $1
            AND state IN ('succeeded', 'failed', 'cancelled', 'expired')
        ORDER BY finished_at, id LIMIT $2 FOR UPDATE SKIP LOCKED
    )
    DELETE FROM tasks t USING old WHERE t.id = old.id";

/// `task_prune`: one statement deletes old terminal tasks; their attempts go by
/// `ON DELETE CASCADE`. The rollups are kept: billing outlives task retention.
pub(crate) async fn task_prune(db: &Db, p: TaskPruneParams) -> Result<u64, StoreError> {
    if p.max == 0 {
        return Ok(0);
    }
    let max = i64::try_from(p.max).unwrap_or(i64::MAX);
    let client = db.client("task_prune").await?;
    execute(
        &client,
        "prune finished tasks",
        PRUNE_SQL,
        &[&ms(p.finished_before), &max],
    )
    .await
}
