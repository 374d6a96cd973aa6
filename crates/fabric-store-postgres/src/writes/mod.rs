//! Every write of the store. Each is one statement or one short transaction whose cost does
//! not grow in round trips with the batch (rows travel as arrays through `unnest`); writes
//! that end an attempt are fenced by its id under a row lock; a write that makes tasks
//! claimable asks, after its commit, for one coalesced `NOTIFY` (see `notify`).

mod claim;
mod complete;
mod insert;
mod maintenance;
mod module_delete;
mod report;
mod workflow;

pub(crate) use claim::{task_claim, task_heartbeat};
pub(crate) use complete::{task_cancel, task_complete};
pub(crate) use insert::{module_put, task_insert};
pub(crate) use maintenance::{task_expire, task_promote, task_prune, task_rescue};
pub(crate) use module_delete::module_delete;
pub(crate) use report::{task_progress, write_rollup};

use deadpool_postgres::{GenericClient, Transaction};
use fabric_store::{StoreError, claim_sort_key, rules};
use fabric_types::{Attempt, TaskState};
use time::OffsetDateTime;

use crate::db::execute;
use crate::error::db_err;
use crate::rows::{ms, parse_priority};

/// The most rows one statement carries; larger batches take several (in one transaction).
const MAX_ROWS_PER_STATEMENT: usize = 1_000;
/// The most payload bytes (inputs, outputs, logs) one statement carries.
const MAX_BYTES_PER_STATEMENT: usize = 16 << 20;

/// Splits `items` into runs of at most [`MAX_ROWS_PER_STATEMENT`] items and (unless one
/// item alone is larger) [`MAX_BYTES_PER_STATEMENT`] bytes.
fn chunks<T>(items: Vec<T>, bytes: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut size = 0;
    for item in items {
        let n = bytes(&item);
        match out.last_mut() {
            Some(last)
                if last.len() < MAX_ROWS_PER_STATEMENT && size + n <= MAX_BYTES_PER_STATEMENT =>
            {
                size += n;
                last.push(item);
            }
            _ => {
                size = n;
                out.push(vec![item]);
            }
        }
    }
    out
}

async fn begin<'a>(
    client: &'a mut deadpool_postgres::Client,
    what: &'static str,
) -> Result<Transaction<'a>, StoreError> {
    client.transaction().await.map_err(db_err(what))
}

/// Begins a transaction whose commit does not wait for its WAL to reach the disk
/// (`synchronous_commit = off` for it alone), for the claims: a claim a crash of
/// PostgreSQL loses leaves its tasks queued with no attempt, and the node running them
/// finds their completions rejected, as after a lost lease; they run again. A claim is
/// never lost once anything committed after it is on disk (the WAL is flushed in order),
/// so a completion accepted implies its claim is kept. What a claim's commit saves is the
/// WAL flush it would wait for (1 to 4 ms on this machine), which the dispatcher, claiming
/// one batch at a time, would otherwise wait for on every claim.
async fn begin_unflushed<'a>(
    client: &'a mut deadpool_postgres::Client,
    what: &'static str,
) -> Result<Transaction<'a>, StoreError> {
    let tx = begin(client, what).await?;
    tx.batch_execute("SET LOCAL synchronous_commit TO OFF")
        .await
        .map_err(db_err(what))?;
    Ok(tx)
}

async fn commit(tx: Transaction<'_>, what: &'static str) -> Result<(), StoreError> {
    tx.commit().await.map_err(db_err(what))
}

/// A task's next state after an attempt ended or was lost, applied by
/// [`apply_transitions`].
struct Transition {
    task_id: String,
    state: TaskState,
    finished_at: Option<i64>,
    /// Set when the task waits for a retry; otherwise `run_at` is kept.
    run_at: Option<i64>,
    /// The new claim key when queued again (a requeue keeps the old one).
    sort_key: Option<i64>,
    /// The attempt was requeued: deleted and not counted.
    requeue: bool,
}

impl Transition {
    fn finish(task_id: String, state: TaskState, now: i64) -> Self {
        Self {
            task_id,
            state,
            finished_at: Some(now),
            run_at: None,
            sort_key: None,
            requeue: false,
        }
    }

    /// Another attempt at `run_at`: queued now (joining the line at `now`) or scheduled
    /// (see [`rules::waiting_state`]).
    fn retry(
        task_id: String,
        priority: i16,
        run_at: OffsetDateTime,
        now: OffsetDateTime,
        step: u64,
    ) -> Result<Self, StoreError> {
        let state = rules::waiting_state(run_at, now);
        let queued = state == TaskState::Queued;
        Ok(Self {
            task_id,
            state,
            finished_at: None,
            run_at: (!queued).then(|| ms(run_at)),
            sort_key: if queued {
                Some(claim_sort_key(ms(now), parse_priority(priority)?, step))
            } else {
                None
            },
            requeue: false,
        })
    }
}

const APPLY_TRANSITIONS: &str = "UPDATE tasks t SET
        state = u.state,
        finished_at = u.finished_at,
        run_at = COALESCE(u.run_at, t.run_at),
        sort_key = CASE WHEN u.requeue THEN t.sort_key ELSE u.sort_key END,
        attempt_count = t.attempt_count - CASE WHEN u.requeue THEN 1 ELSE 0 END,
        started_at = CASE WHEN u.requeue AND t.attempt_count = 1 THEN NULL ELSE t.started_at END,
        current_attempt = NULL,
        lease_until = NULL
    FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[], $6::bool[])
        AS u(id, state, finished_at, run_at, sort_key, requeue)
    WHERE t.id = u.id";

/// Moves tasks (locked by the caller's transaction) to their next states.
async fn apply_transitions<C: GenericClient>(
    c: &C,
    transitions: &[Transition],
) -> Result<(), StoreError> {
    for chunk in transitions.chunks(MAX_ROWS_PER_STATEMENT) {
        let ids: Vec<&str> = chunk.iter().map(|t| t.task_id.as_str()).collect();
        let states: Vec<&str> = chunk.iter().map(|t| t.state.as_str()).collect();
        let finished: Vec<Option<i64>> = chunk.iter().map(|t| t.finished_at).collect();
        let run_at: Vec<Option<i64>> = chunk.iter().map(|t| t.run_at).collect();
        let sort_key: Vec<Option<i64>> = chunk.iter().map(|t| t.sort_key).collect();
        let requeue: Vec<bool> = chunk.iter().map(|t| t.requeue).collect();
        execute(
            c,
            "move tasks to their next state",
            APPLY_TRANSITIONS,
            &[&ids, &states, &finished, &run_at, &sort_key, &requeue],
        )
        .await?;
    }
    Ok(())
}

const RECORD_ATTEMPTS: &str = "UPDATE attempts a SET lease_until = NULL, outcome = u.outcome,
        exit_code = u.exit_code, trap = u.trap, error = u.error, output = u.output,
        stderr = u.stderr, output_truncated = u.output_truncated,
        stderr_truncated = u.stderr_truncated, fuel_consumed = u.fuel_consumed,
        peak_memory_bytes = u.peak_memory_bytes, wall_ms = u.wall_ms,
        started_at = u.started_at, finished_at = u.finished_at, egress = u.egress::jsonb,
        kpis = u.kpis::jsonb
    FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[], $5::text[], $6::bytea[],
        $7::bytea[], $8::bool[], $9::bool[], $10::int8[], $11::int8[], $12::int8[], $13::int8[],
        $14::int8[], $15::text[], $16::text[])
        AS u(id, outcome, exit_code, trap, error, output, stderr, output_truncated,
             stderr_truncated, fuel_consumed, peak_memory_bytes, wall_ms, started_at, finished_at,
             egress, kpis)
    WHERE a.id = u.id";

/// Writes how attempts ended and ends their leases.
async fn record_attempts<C: GenericClient>(
    c: &C,
    ended: Vec<(String, Attempt)>,
) -> Result<(), StoreError> {
    let saturate = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    for chunk in chunks(ended, |(_, a)| a.output.len() + a.stderr.len()) {
        let ids: Vec<&str> = chunk.iter().map(|(id, _)| id.as_str()).collect();
        let outcome: Vec<&str> = chunk.iter().map(|(_, a)| a.outcome.as_str()).collect();
        let exit_code: Vec<Option<i32>> = chunk.iter().map(|(_, a)| a.exit_code).collect();
        let trap: Vec<Option<&str>> = chunk.iter().map(|(_, a)| a.trap.as_deref()).collect();
        let error: Vec<Option<&str>> = chunk.iter().map(|(_, a)| a.error.as_deref()).collect();
        let output: Vec<&[u8]> = chunk.iter().map(|(_, a)| a.output.as_slice()).collect();
        let stderr: Vec<&[u8]> = chunk.iter().map(|(_, a)| a.stderr.as_slice()).collect();
        let out_trunc: Vec<bool> = chunk.iter().map(|(_, a)| a.output_truncated).collect();
        let err_trunc: Vec<bool> = chunk.iter().map(|(_, a)| a.stderr_truncated).collect();
        let fuel: Vec<i64> = chunk
            .iter()
            .map(|(_, a)| saturate(a.usage.fuel_consumed))
            .collect();
        let peak: Vec<i64> = chunk
            .iter()
            .map(|(_, a)| saturate(a.usage.peak_memory_bytes))
            .collect();
        let wall: Vec<i64> = chunk
            .iter()
            .map(|(_, a)| saturate(a.usage.wall_ms))
            .collect();
        let started: Vec<Option<i64>> = chunk.iter().map(|(_, a)| a.started_at.map(ms)).collect();
        let finished: Vec<Option<i64>> = chunk.iter().map(|(_, a)| a.finished_at.map(ms)).collect();
        let egress: Vec<Option<String>> = chunk
            .iter()
            .map(|(_, a)| fabric_store::egress_json::attempt_encode(&a.usage, &a.denials))
            .collect();
        let kpis: Vec<Option<String>> = chunk
            .iter()
            .map(|(_, a)| fabric_store::telemetry_json::kpis_encode(&a.kpis))
            .collect();
        execute(
            c,
            "record how attempts ended",
            RECORD_ATTEMPTS,
            &[
                &ids, &outcome, &exit_code, &trap, &error, &output, &stderr, &out_trunc,
                &err_trunc, &fuel, &peak, &wall, &started, &finished, &egress, &kpis,
            ],
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_rows_and_bytes() {
        let small: Vec<usize> = vec![1; 2_500];
        let sizes: Vec<usize> = chunks(small, |n| *n).iter().map(Vec::len).collect();
        assert_eq!(sizes, [1_000, 1_000, 500]);
        let big = vec![MAX_BYTES_PER_STATEMENT / 2 + 1; 3];
        let sizes: Vec<usize> = chunks(big, |n| *n).iter().map(Vec::len).collect();
        assert_eq!(sizes, [1, 1, 1]);
        let huge = vec![MAX_BYTES_PER_STATEMENT * 2];
        assert_eq!(
            chunks(huge, |n| *n).len(),
            1,
            "one oversized row still goes"
        );
        assert!(chunks(Vec::<usize>::new(), |n| *n).is_empty());
    }

    #[test]
    fn the_claim_locks_with_skip_locked_in_a_materialized_cte() {
        use super::claim::CLAIM_SQL;
        assert!(CLAIM_SQL.contains("AS MATERIALIZED"));
        assert!(CLAIM_SQL.contains("FOR UPDATE SKIP LOCKED"));
        assert!(CLAIM_SQL.contains("ORDER BY sort_key, id"));
    }
}
