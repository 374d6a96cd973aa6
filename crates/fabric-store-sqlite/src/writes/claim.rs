//! Writes of a running attempt: its claim and its heartbeats.

use std::collections::HashMap;
use std::sync::LazyLock;

use fabric_store::concurrency::KeyCounts;
use fabric_store::{
    AttemptId, Claimed, Heartbeat, StoreError, TaskClaimParams, TaskHeartbeatParams, from_millis,
};
use fabric_types::TaskState;
use rusqlite::params;

use super::{CANDIDATES, CLAIM, NEW_ATTEMPT, RENEW_ATTEMPTS, RENEW_TASKS, TaskKey, array, finish};
use crate::db_err;
use crate::rows::{CANDIDATE_COLUMNS, RawCandidate, ms, raw_candidate};
use crate::writer::WriteCtx;

/// [`CANDIDATES`] passing over the queued tasks of an array of tenants (those at their cap,
/// `?2`) and of an array of concurrency keys (those full, `?3`, each `tenant || char(31) ||
/// key`: a key has no control character, so the last separator splits it). It walks the
/// same index, so the rows passed over cost a step each.
static CANDIDATES_SKIPPING: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {CANDIDATE_COLUMNS} FROM tasks INDEXED BY tasks_claim
         WHERE state = 'queued' AND tenant NOT IN rarray(?2)
            AND (concurrency_key IS NULL OR tenant || char(31) || concurrency_key NOT IN rarray(?3))
         ORDER BY sort_key, id LIMIT ?1"
    )
});

/// How many tasks of tenant `?1` with concurrency key `?2` run.
pub(crate) const RUNNING_WITH_KEY: &str = "SELECT count(*) FROM tasks INDEXED BY tasks_concurrency
     WHERE tenant = ?1 AND concurrency_key = ?2 AND state = 'running' AND concurrency_key IS NOT NULL";

/// A full key as [`CANDIDATES_SKIPPING`] compares it.
fn key_text((tenant, key): &fabric_store::concurrency::KeyOf) -> String {
    format!("{tenant}\u{1f}{key}")
}

/// `task_claim`: the first `max` queued tasks by sort key, each under a new attempt; with a
/// tenant cap, a tenant's tasks beyond its room are passed over (left queued, untouched).
pub(crate) fn task_claim(
    ctx: &mut WriteCtx<'_>,
    p: TaskClaimParams,
) -> Result<Claimed, StoreError> {
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
    let mut cap = p.tenant_cap;
    if cap.as_ref().is_some_and(|cap| cap.max == 0) {
        return Ok(Claimed::default());
    }
    let mut full: Vec<String> = cap
        .as_ref()
        .map(|cap| cap.full().map(str::to_owned).collect())
        .unwrap_or_default();
    let mut claimed = Claimed {
        tasks: Vec::with_capacity(p.max.min(1024)),
        expired: Vec::new(),
    };
    // The writer is the only one: what runs under each key is exact for the whole claim.
    let mut keys = KeyCounts::default();
    while claimed.tasks.len() < p.max {
        let want = i64::try_from(p.max - claimed.tasks.len()).unwrap_or(i64::MAX);
        let candidates: Vec<RawCandidate> = if cap.is_some() || !keys.full().is_empty() {
            ctx.conn
                .prepare_cached(&CANDIDATES_SKIPPING)
                .and_then(|mut s| {
                    s.query_map(
                        params![
                            want,
                            array(full.iter().cloned()),
                            array(keys.full().iter().map(key_text))
                        ],
                        raw_candidate,
                    )?
                    .collect()
                })
        } else {
            ctx.conn
                .prepare_cached(&CANDIDATES)
                .and_then(|mut s| s.query_map([want], raw_candidate)?.collect())
        }
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
            // A tenant that became full earlier in this batch: the next query skips it.
            if full.iter().any(|t| t == task.tenant()) {
                continue;
            }
            if task.deadline().is_some_and(|d| d < now) {
                let key = TaskKey {
                    rowid: task.rowid,
                    id: task.id().to_owned(),
                    tenant: task.tenant().to_owned(),
                    priority: task.priority(),
                    state: TaskState::Queued,
                };
                finish(ctx, &key, TaskState::Expired, now)?;
                claimed.expired.push(key.id.clone().into());
                continue;
            }
            if let Some((key, limit)) = task.concurrency() {
                if !keys.knows(task.tenant(), key) {
                    let running: i64 = ctx
                        .conn
                        .prepare_cached(RUNNING_WITH_KEY)
                        .and_then(|mut s| s.query_row(params![task.tenant(), key], |r| r.get(0)))
                        .map_err(db_err("count the tasks running with a concurrency key"))?;
                    keys.set(task.tenant(), key, u64::try_from(running).unwrap_or(0));
                }
                let limit = u32::try_from(limit).unwrap_or(0);
                if !keys.take(task.tenant(), key, limit) {
                    // Held back: stays queued in its place; the next query passes its key over.
                    continue;
                }
            }
            if let Some(cap) = cap.as_mut()
                && cap.take(task.tenant())
            {
                full.push(task.tenant().to_owned());
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
            claimed
                .tasks
                .push(task.into_claimed(attempt, p.now, lease)?);
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
