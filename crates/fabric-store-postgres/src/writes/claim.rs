//! Writes of a running attempt: its claim and its heartbeats.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use fabric_store::{
    AttemptId, Claimed, Heartbeat, StoreError, TaskClaimParams, TaskHeartbeatParams, from_millis,
};

use crate::db::{Db, query};
use crate::rows::{TASK_WIDTH, claimed_task, ms, read_task, task_columns};

/// The claim: lock up to `$1` queued tasks in claim order, skipping rows other claimers
/// hold; expire those whose deadline passed; move the rest to `running` (clearing the
/// progress an earlier attempt reported), the `n`th of them under the attempt id `$3[n]`; record the attempts. Returns one row per locked task:
/// the claimed ones in claim order (task columns, attempt id, attempt number, `n`), then
/// the expired ones (NULLs, and the id in the last column).
///
/// Every join is a key lookup or an array subscript, so the statement stays linear in the
/// batch whatever row counts the (generic, cached) plan estimates.
pub(super) static CLAIM_SQL: LazyLock<String> = LazyLock::new(|| claim_sql(false));

/// [`CLAIM_SQL`] under a tenant cap: passes over the tenants in `$6` (those at their cap),
/// and of the rest claims at most the tenant's room of its locked tasks (`$8[i]` for the
/// tenant `$7[i]`, `$9` for a tenant not listed); the rows beyond it are left queued, and
/// their locks go with the statement. The rows passed over cost an index step each.
pub(super) static CLAIM_CAPPED_SQL: LazyLock<String> = LazyLock::new(|| claim_sql(true));

fn claim_sql(capped: bool) -> String {
    let nulls = vec!["NULL"; TASK_WIDTH + 3].join(", ");
    let (skip, ready) = if capped {
        (
            "AND tenant <> ALL($6::text[])",
            "SELECT id, row_number() OVER (ORDER BY sort_key, id) AS n FROM (
                SELECT id, sort_key, tenant,
                    row_number() OVER (PARTITION BY tenant ORDER BY sort_key, id) AS k
                FROM picked WHERE deadline IS NULL OR deadline >= $2
            ) r
            WHERE k <= COALESCE((SELECT u.room FROM unnest($7::text[], $8::int8[]) AS u(tenant, room)
                WHERE u.tenant = r.tenant), $9)",
        )
    } else {
        (
            "",
            "SELECT id, row_number() OVER (ORDER BY sort_key, id) AS n
            FROM picked WHERE deadline IS NULL OR deadline >= $2",
        )
    };
    format!(
        "WITH picked AS MATERIALIZED (
            SELECT id, sort_key, deadline, tenant FROM tasks
            WHERE state = 'queued' {skip}
            ORDER BY sort_key, id
            LIMIT $1
            FOR UPDATE SKIP LOCKED
        ), expired AS (
            UPDATE tasks t SET state = 'expired', finished_at = $2, sort_key = NULL
            FROM picked p WHERE t.id = p.id AND p.deadline < $2
            RETURNING t.id
        ), ready AS ({ready}
        ), claimed AS (
            UPDATE tasks t SET state = 'running', attempt_count = t.attempt_count + 1,
                current_attempt = ($3::text[])[r.n], lease_until = $4,
                started_at = COALESCE(t.started_at, $2), progress = NULL
            FROM ready r WHERE t.id = r.id
            RETURNING {}, t.current_attempt AS attempt_id, t.attempt_count, r.n
        ), recorded AS (
            INSERT INTO attempts (id, task_id, number, node, claimed_at, lease_until)
            SELECT attempt_id, id, attempt_count, $5, $2, $4 FROM claimed
        )
        SELECT c.*, NULL AS expired_id FROM claimed c
        UNION ALL
        SELECT {nulls}, e.id FROM expired e
        ORDER BY n",
        task_columns("t")
    )
}

/// The most tasks one claim statement locks; a larger `max` takes several statements.
const MAX_CLAIM_PER_STATEMENT: usize = 1_000;

/// `task_claim`: [`CLAIM_SQL`] until `max` tasks are claimed or the queue (what other
/// claimers do not hold) is empty. Each statement commits on its own.
pub(crate) async fn task_claim(db: &Db, p: TaskClaimParams) -> Result<Claimed, StoreError> {
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
    let mut cap = p.tenant_cap;
    if cap.as_ref().is_some_and(|cap| cap.max == 0) {
        return Ok(Claimed::default());
    }
    let client = db.client("task_claim").await?;
    let mut claimed = Claimed {
        tasks: Vec::with_capacity(p.max.min(MAX_CLAIM_PER_STATEMENT)),
        expired: Vec::new(),
    };
    while claimed.tasks.len() < p.max {
        let want = (p.max - claimed.tasks.len()).min(MAX_CLAIM_PER_STATEMENT);
        let attempt_ids: Vec<String> = (0..want)
            .map(|_| AttemptId::generate(p.now).into_string())
            .collect();
        let rows = match &cap {
            None => {
                query(
                    &client,
                    "claim tasks",
                    &CLAIM_SQL,
                    &[&(want as i64), &now, &attempt_ids, &lease_until, &p.node],
                )
                .await?
            }
            Some(cap) => {
                let full: Vec<&str> = cap.full().collect();
                let (tenants, rooms): (Vec<&str>, Vec<i64>) = cap
                    .running
                    .keys()
                    .map(|t| (t.as_str(), i64::try_from(cap.room(t)).unwrap_or(i64::MAX)))
                    .filter(|(_, room)| *room > 0)
                    .unzip();
                let max = i64::try_from(cap.max).unwrap_or(i64::MAX);
                query(
                    &client,
                    "claim tasks",
                    &CLAIM_CAPPED_SQL,
                    &[
                        &(want as i64),
                        &now,
                        &attempt_ids,
                        &lease_until,
                        &p.node,
                        &full,
                        &tenants,
                        &rooms,
                        &max,
                    ],
                )
                .await?
            }
        };
        let picked = rows.len();
        // Under a cap, rows locked beyond a tenant's room are not returned; that happens only
        // to a tenant this statement filled, so when none was filled every locked row came back.
        let mut filled = false;
        for row in &rows {
            let held: Option<&str> = row.get(0);
            if held.is_none() {
                // Expired instead of claimed: its id is the last column.
                let expired: String = row.get(row.len() - 1);
                claimed.expired.push(expired.into());
                continue;
            }
            let task = read_task(row, 0)?;
            if let Some(cap) = cap.as_mut() {
                filled |= cap.take(&task.tenant);
            }
            let attempt_id: String = row.get(TASK_WIDTH);
            let number: i32 = row.get(TASK_WIDTH + 1);
            claimed.tasks.push(claimed_task(
                task,
                AttemptId::from(attempt_id),
                number,
                p.now,
                from_millis(lease_until),
            )?);
        }
        if picked == 0 || (picked < want && !filled) {
            break;
        }
    }
    if !claimed.expired.is_empty() {
        let expired = claimed.expired.iter().map(|id| id.to_string()).collect();
        // The claimed tasks are committed and must reach their worker: a failure here
        // leaves the waiting tasks for a later change (see `after_claim_expired`).
        if let Err(e) = super::workflow::after_claim_expired(db, expired, now).await {
            tracing::warn!(error = %e, "could not move on the tasks waiting on expired tasks");
        }
    }
    Ok(claimed)
}

const HEARTBEAT_SQL: &str = "WITH held AS MATERIALIZED (
        SELECT id FROM tasks WHERE current_attempt = ANY($1::text[]) AND state = 'running'
        ORDER BY id FOR UPDATE
    ), renewed AS (
        UPDATE tasks t SET lease_until = $2 FROM held h WHERE t.id = h.id
        RETURNING t.current_attempt, t.cancel_requested
    ), attempts_renewed AS (
        UPDATE attempts a SET lease_until = $2 FROM renewed r WHERE a.id = r.current_attempt
    )
    SELECT current_attempt, cancel_requested FROM renewed";

/// `task_heartbeat`: one statement renews the leases the attempts still hold.
pub(crate) async fn task_heartbeat(
    db: &Db,
    p: TaskHeartbeatParams,
) -> Result<Heartbeat, StoreError> {
    let (now, lease_until) = (ms(p.now), ms(p.lease_until));
    if lease_until <= now {
        return Err(StoreError::InvalidArgument(format!(
            "lease_until ({}) must be after now ({})",
            p.lease_until, p.now
        )));
    }
    if p.attempt_ids.is_empty() {
        return Ok(Heartbeat::default());
    }
    let ids: Vec<&str> = p.attempt_ids.iter().map(AttemptId::as_str).collect();
    let client = db.client("task_heartbeat").await?;
    let rows = query(
        &client,
        "renew leases",
        HEARTBEAT_SQL,
        &[&ids, &lease_until],
    )
    .await?;
    let held: HashMap<String, bool> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let mut out = Heartbeat::default();
    let mut seen = HashSet::new();
    for attempt in p.attempt_ids {
        let Some(&cancel) = held.get(attempt.as_str()) else {
            continue;
        };
        if !seen.insert(attempt.clone()) {
            continue;
        }
        if cancel {
            out.cancel_requested.push(attempt.clone());
        }
        out.held.push(attempt);
    }
    Ok(out)
}
