//! Writes of a running attempt: its claim and its heartbeats.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::LazyLock;

use fabric_store::concurrency::KeyCounts;
use fabric_store::{
    AttemptId, Claimed, ClaimedTask, Heartbeat, StoreError, TaskClaimParams, TaskHeartbeatParams,
    TenantCap, from_millis,
};
use tokio_postgres::types::ToSql;

use crate::db::{Db, query};
use crate::error::db_err;
use crate::rows::{TASK_WIDTH, claimed_from_row, ms, task_columns};

/// The claim: lock up to `$1` queued tasks in claim order, skipping rows other claimers
/// hold; expire those whose deadline passed; move the rest without a concurrency key to
/// `running` (clearing the progress an earlier attempt reported), the `n`th of them under
/// the attempt id `$3[n]`; record the attempts. Returns one row per locked task: the
/// claimed ones in claim order (task columns, attempt id, attempt number, `n`), then the
/// expired ones (NULLs, and the id in the next-to-last column), then those with a
/// concurrency key (NULLs, and the id in the last column), left queued for
/// [`claim_keyed`], which claims them under their keys' locks.
///
/// Every join is a key lookup or an array subscript, so the statement stays linear in the
/// batch whatever row counts the (generic, cached) plan estimates.
pub(super) static CLAIM_SQL: LazyLock<String> = LazyLock::new(|| claim_sql(false, false));

/// [`CLAIM_SQL`] under a tenant cap: passes over the tenants in `$6` (those at their cap),
/// and of the rest claims at most the tenant's room of its locked tasks (`$8[i]` for the
/// tenant `$7[i]`, `$9` for a tenant not listed); the rows beyond it are left queued, and
/// their locks go with the statement. The rows passed over cost an index step each.
pub(super) static CLAIM_CAPPED_SQL: LazyLock<String> = LazyLock::new(|| claim_sql(true, false));

/// [`CLAIM_SQL`] and [`CLAIM_CAPPED_SQL`] passing over the tasks of the concurrency keys
/// found full earlier in the claim: tenant `$a[i]`, key `$b[i]` (`$6`/`$7`, or `$10`/`$11`
/// under a cap).
static CLAIM_SKIPPING_KEYS_SQL: LazyLock<String> = LazyLock::new(|| claim_sql(false, true));
static CLAIM_CAPPED_SKIPPING_KEYS_SQL: LazyLock<String> = LazyLock::new(|| claim_sql(true, true));

fn claim_sql(capped: bool, skip_keys: bool) -> String {
    let nulls = vec!["NULL"; TASK_WIDTH + 3].join(", ");
    let (skip, ready) = if capped {
        (
            "AND tenant <> ALL($6::text[])",
            "SELECT id, row_number() OVER (ORDER BY sort_key, id) AS n FROM (
                SELECT id, sort_key, tenant,
                    row_number() OVER (PARTITION BY tenant ORDER BY sort_key, id) AS k
                FROM picked WHERE (deadline IS NULL OR deadline >= $2) AND concurrency_key IS NULL
            ) r
            WHERE k <= COALESCE((SELECT u.room FROM unnest($7::text[], $8::int8[]) AS u(tenant, room)
                WHERE u.tenant = r.tenant), $9)",
        )
    } else {
        (
            "",
            "SELECT id, row_number() OVER (ORDER BY sort_key, id) AS n
            FROM picked WHERE (deadline IS NULL OR deadline >= $2) AND concurrency_key IS NULL",
        )
    };
    let skip_keys = match (skip_keys, capped) {
        (false, _) => String::new(),
        (true, capped) => {
            let (a, b) = if capped { (10, 11) } else { (6, 7) };
            format!(
                "AND (concurrency_key IS NULL OR (tenant, concurrency_key) NOT IN
                    (SELECT * FROM unnest(${a}::text[], ${b}::text[])))"
            )
        }
    };
    format!(
        "WITH picked AS MATERIALIZED (
            SELECT id, sort_key, deadline, tenant, concurrency_key FROM tasks
            WHERE state = 'queued' {skip} {skip_keys}
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
        SELECT c.*, NULL AS expired_id, NULL AS keyed_id FROM claimed c
        UNION ALL
        SELECT {nulls}, e.id, NULL FROM expired e
        UNION ALL
        SELECT {nulls}, NULL, k.id FROM picked k
            WHERE k.concurrency_key IS NOT NULL AND (k.deadline IS NULL OR k.deadline >= $2)
        ORDER BY n",
        task_columns("t")
    )
}

/// The most tasks one claim statement locks; a larger `max` takes several statements.
const MAX_CLAIM_PER_STATEMENT: usize = 1_000;

/// `task_claim`: [`CLAIM_SQL`] until `max` tasks are claimed or the queue (what other
/// claimers do not hold) is empty. Each statement commits on its own; the tasks with a
/// concurrency key it locked go through [`claim_keyed`].
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
    let mut cap = p.tenant_cap.clone();
    if cap.as_ref().is_some_and(|cap| cap.max == 0) {
        return Ok(Claimed::default());
    }
    let mut client = db.client("task_claim").await?;
    let mut claimed = Claimed {
        tasks: Vec::with_capacity(p.max.min(MAX_CLAIM_PER_STATEMENT)),
        expired: Vec::new(),
    };
    let mut keys = KeyCounts::default();
    while claimed.tasks.len() < p.max {
        let want = (p.max - claimed.tasks.len()).min(MAX_CLAIM_PER_STATEMENT);
        let attempt_ids: Vec<String> = (0..want)
            .map(|_| AttemptId::generate(p.now).into_string())
            .collect();
        let (full_tenants, full_keys): (Vec<&str>, Vec<&str>) = keys
            .full()
            .iter()
            .map(|(t, k)| (t.as_str(), k.as_str()))
            .unzip();
        let skip_keys = !full_tenants.is_empty();
        let want64 = i64::try_from(want).unwrap_or(i64::MAX);
        let tx = super::begin_unflushed(&mut client, "begin a claim of tasks").await?;
        let rows = match &cap {
            None => {
                let mut params: Vec<&(dyn ToSql + Sync)> =
                    vec![&want64, &now, &attempt_ids, &lease_until, &p.node];
                let sql: &str = if skip_keys {
                    params.push(&full_tenants);
                    params.push(&full_keys);
                    CLAIM_SKIPPING_KEYS_SQL.as_str()
                } else {
                    CLAIM_SQL.as_str()
                };
                query(&tx, "claim tasks", sql, &params).await?
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
                let mut params: Vec<&(dyn ToSql + Sync)> = vec![
                    &want64,
                    &now,
                    &attempt_ids,
                    &lease_until,
                    &p.node,
                    &full,
                    &tenants,
                    &rooms,
                    &max,
                ];
                let sql: &str = if skip_keys {
                    params.push(&full_tenants);
                    params.push(&full_keys);
                    CLAIM_CAPPED_SKIPPING_KEYS_SQL.as_str()
                } else {
                    CLAIM_CAPPED_SQL.as_str()
                };
                query(&tx, "claim tasks", sql, &params).await?
            }
        };
        super::commit(tx, "commit a claim of tasks").await?;
        let picked = rows.len();
        // Under a cap, rows locked beyond a tenant's room are not returned; that happens only
        // to a tenant this statement filled, so when none was filled every locked row came back.
        let mut filled = false;
        let mut keyed: Vec<String> = Vec::new();
        for row in &rows {
            let held: Option<&str> = row.get(0);
            if held.is_none() {
                // Expired instead of claimed, or left for its key: its id is in one of the
                // last two columns.
                match row.get::<_, Option<String>>(row.len() - 2) {
                    Some(expired) => claimed.expired.push(expired.into()),
                    None => keyed.push(row.get(row.len() - 1)),
                }
                continue;
            }
            let task = claimed_from_row(row, p.now, from_millis(lease_until))?;
            if let Some(cap) = cap.as_mut() {
                filled |= cap.take(&task.tenant);
            }
            claimed.tasks.push(task);
        }
        let full_before = keys.full().len();
        if !keyed.is_empty() {
            let room = p.max - claimed.tasks.len();
            let got = claim_keyed(
                db,
                &mut client,
                &keyed,
                room,
                &p,
                cap.as_mut(),
                &mut keys,
                lease_until,
            )
            .await?;
            filled |= got.filled;
            claimed.tasks.extend(got.tasks);
        }
        let keys_filled = keys.full().len() > full_before;
        if picked == 0 || (picked < want && !filled && !keys_filled) {
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

/// Moves the queued tasks `$1` to `running`, the `n`th under the attempt id `$2[n]`, with the
/// lease until `$3`, at `$4`, for node `$5`; records the attempts; returns them as
/// [`CLAIM_SQL`] returns claimed tasks.
static CLAIM_BY_ID_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH ready AS (
            SELECT u.id, u.attempt, u.n FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(id, attempt, n)
        ), claimed AS (
            UPDATE tasks t SET state = 'running', attempt_count = t.attempt_count + 1,
                current_attempt = r.attempt, lease_until = $3,
                started_at = COALESCE(t.started_at, $4), progress = NULL
            FROM ready r WHERE t.id = r.id AND t.state = 'queued'
            RETURNING {}, t.current_attempt AS attempt_id, t.attempt_count, r.n
        ), recorded AS (
            INSERT INTO attempts (id, task_id, number, node, claimed_at, lease_until)
            SELECT attempt_id, id, attempt_count, $5, $4, $3 FROM claimed
        )
        SELECT * FROM claimed ORDER BY n",
        task_columns("t")
    )
});

/// Locks tasks with a concurrency key again, in claim order, skipping those another claimer
/// holds and those no longer queued.
const LOCK_KEYED_SQL: &str = "SELECT id, tenant, concurrency_key, concurrency_limit FROM tasks
    WHERE id = ANY($1::text[]) AND state = 'queued'
    ORDER BY sort_key, id
    FOR UPDATE SKIP LOCKED";

/// Takes the transaction-scoped advisory locks `$1`, in the array's order.
const LOCK_KEYS_SQL: &str = "SELECT pg_advisory_xact_lock(k) FROM unnest($1::int8[]) AS k";

/// How many tasks run under each (tenant `$1[i]`, key `$2[i]`).
const RUNNING_WITH_KEYS_SQL: &str = "SELECT k.tenant, k.key,
        (SELECT count(*) FROM tasks t WHERE t.tenant = k.tenant AND t.concurrency_key = k.key
            AND t.concurrency_key IS NOT NULL AND t.state = 'running')
    FROM unnest($1::text[], $2::text[]) AS k(tenant, key)";

/// The advisory lock of one tenant's concurrency key in one schema (FNV-1a, 64 bits):
/// every claim that may start a task with the key holds it until its commit.
fn key_lock(schema: &str, tenant: &str, key: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let parts = [
        "fabric-store-postgres concurrency ".as_bytes(),
        schema.as_bytes(),
        b"\x1f",
        tenant.as_bytes(),
        b"\x1f",
        key.as_bytes(),
    ];
    for byte in parts.into_iter().flatten() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

/// What [`claim_keyed`] started.
struct KeyedClaim {
    tasks: Vec<ClaimedTask>,
    /// A tenant reached its cap.
    filled: bool,
}

/// Claims, of the queued tasks `ids` (all with a concurrency key), those whose key has room,
/// in claim order, at most `room` of them, in one transaction that holds an advisory lock on
/// each of their keys (taken in one order, so claimers cannot deadlock) before it counts
/// what runs under them. A claim that starts a task with a key holds the key's lock until
/// it commits, and the count is read after the lock is taken (each statement sees what
/// committed before it began), so the counts are exact: no two nodes can both see room for
/// the last slot. Completions need no lock: they only lower a count.
#[allow(clippy::too_many_arguments)]
async fn claim_keyed(
    db: &Db,
    client: &mut deadpool_postgres::Client,
    ids: &[String],
    room: usize,
    p: &TaskClaimParams,
    mut cap: Option<&mut TenantCap>,
    keys: &mut KeyCounts,
    lease_until: i64,
) -> Result<KeyedClaim, StoreError> {
    let mut out = KeyedClaim {
        tasks: Vec::new(),
        filled: false,
    };
    if room == 0 {
        return Ok(out);
    }
    let tx = super::begin_unflushed(client, "begin a claim of tasks with concurrency keys").await?;
    let locked = query(
        &tx,
        "lock tasks with concurrency keys",
        LOCK_KEYED_SQL,
        &[&ids],
    )
    .await?;
    if locked.is_empty() {
        tx.commit()
            .await
            .map_err(db_err("commit a claim of tasks with concurrency keys"))?;
        return Ok(out);
    }
    let rows: Vec<(String, String, String, i32)> = locked
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let distinct: BTreeSet<(&str, &str)> = rows
        .iter()
        .map(|(_, tenant, key, _)| (tenant.as_str(), key.as_str()))
        .collect();
    let mut locks: Vec<i64> = distinct
        .iter()
        .map(|(tenant, key)| key_lock(&db.schema, tenant, key))
        .collect();
    locks.sort_unstable();
    locks.dedup();
    query(&tx, "lock concurrency keys", LOCK_KEYS_SQL, &[&locks]).await?;
    let (tenants, names): (Vec<&str>, Vec<&str>) = distinct.iter().copied().unzip();
    let counted = query(
        &tx,
        "count tasks running with concurrency keys",
        RUNNING_WITH_KEYS_SQL,
        &[&tenants, &names],
    )
    .await?;
    for row in &counted {
        let (tenant, key, running): (&str, &str, i64) = (row.get(0), row.get(1), row.get(2));
        keys.set(tenant, key, u64::try_from(running).unwrap_or(0));
    }
    let mut chosen: Vec<String> = Vec::new();
    for (id, tenant, key, limit) in &rows {
        if chosen.len() >= room {
            break;
        }
        if cap.as_ref().is_some_and(|cap| cap.room(tenant) == 0) {
            continue;
        }
        if !keys.take(tenant, key, u32::try_from(*limit).unwrap_or(0)) {
            continue;
        }
        if let Some(cap) = cap.as_mut() {
            out.filled |= cap.take(tenant);
        }
        chosen.push(id.clone());
    }
    if !chosen.is_empty() {
        let attempt_ids: Vec<String> = chosen
            .iter()
            .map(|_| AttemptId::generate(p.now).into_string())
            .collect();
        let now = ms(p.now);
        let claimed = query(
            &tx,
            "claim tasks with concurrency keys",
            &CLAIM_BY_ID_SQL,
            &[&chosen, &attempt_ids, &lease_until, &now, &p.node],
        )
        .await?;
        for row in &claimed {
            out.tasks
                .push(claimed_from_row(row, p.now, from_millis(lease_until))?);
        }
    }
    tx.commit()
        .await
        .map_err(db_err("commit a claim of tasks with concurrency keys"))?;
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::key_lock as lock;

    /// The advisory lock a claim holds for a key: the same for the same schema, tenant and
    /// key, different when any of them differs (a collision would only serialize claims).
    #[test]
    fn key_locks_are_per_schema_tenant_and_key() {
        assert_eq!(lock("s", "acme", "api"), lock("s", "acme", "api"));
        assert_ne!(lock("s", "acme", "api"), lock("s2", "acme", "api"));
        assert_ne!(lock("s", "acme", "api"), lock("s", "globex", "api"));
        assert_ne!(lock("s", "acme", "api"), lock("s", "acme", "api2"));
        assert_ne!(lock("s", "ac", "meapi"), lock("s", "acme", "api"));
    }
}
