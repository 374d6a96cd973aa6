//! Every write of the store. Each is one statement or one short transaction whose cost does
//! not grow in round trips with the batch (rows travel as arrays through `unnest`); writes
//! that end an attempt are fenced by its id under a row lock; a write that makes tasks
//! claimable asks, after its commit, for one coalesced `NOTIFY` (see `notify`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::LazyLock;

use deadpool_postgres::{GenericClient, Transaction};
use fabric_store::{
    AttemptId, ClaimedTask, Completed, FairClock, Heartbeat, Inserted, ModuleInfo, ModulePutParams,
    NewTask, Next, Rescued, StoreError, TaskCancelParams, TaskClaimParams, TaskCompleteParams,
    TaskExpireParams, TaskHeartbeatParams, TaskId, TaskInsertParams, TaskPromoteParams,
    TaskPruneParams, TaskRecord, TaskRescueParams, claim_sort_key, from_millis, rules,
};
use fabric_types::{Attempt, TaskState};
use time::OffsetDateTime;

use crate::db::{Db, execute, query};
use crate::error::{corrupt, db_err};
use crate::reads;
use crate::rows::{
    MODULE_COLUMNS, TASK_WIDTH, claimed_task, map_json, ms, parse_priority, parse_state,
    read_module_info, read_task, retry_on_text, retry_policy, task_columns, to_i64,
};

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

async fn commit(tx: Transaction<'_>, what: &'static str) -> Result<(), StoreError> {
    tx.commit().await.map_err(db_err(what))
}

/// `module_put`: insert or keep the module, move its name.
pub(crate) async fn module_put(db: &Db, p: ModulePutParams) -> Result<ModuleInfo, StoreError> {
    let (id, now) = (p.id.to_string(), ms(p.now));
    let size = to_i64(p.bytes.len() as u64, "module size")?;
    if p.tenant.is_empty() {
        return Err(StoreError::InvalidArgument("tenant is empty".into()));
    }
    let mut client = db.client("module_put").await?;
    let tx = begin(&mut client, "begin module_put").await?;
    let row = query(
        &tx,
        "store a module",
        &format!(
            "INSERT INTO modules (tenant, id, name, kind, size, created_at, bytes)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (tenant, id) DO UPDATE SET name = COALESCE(EXCLUDED.name, modules.name)
             RETURNING {MODULE_COLUMNS}"
        ),
        &[
            &p.tenant,
            &id,
            &p.name,
            &p.kind.as_str(),
            &size,
            &now,
            &p.bytes,
        ],
    )
    .await?;
    let info = read_module_info(
        row.first()
            .ok_or_else(|| corrupt("module_put returned no row"))?,
    )?;
    if let Some(name) = &p.name {
        execute(
            &tx,
            "name a module",
            "INSERT INTO module_names (tenant, name, module_id, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant, name) DO UPDATE
                 SET module_id = EXCLUDED.module_id, updated_at = EXCLUDED.updated_at",
            &[&p.tenant, name, &id, &now],
        )
        .await?;
    }
    commit(tx, "commit module_put").await?;
    Ok(info)
}

/// An idempotency key and the tenant it belongs to.
type Key = (String, String);

/// How one task of an insert batch is handled.
enum Plan {
    /// Stored as a new row with this id and state.
    New(TaskId, TaskState),
    /// Its idempotency key was used earlier in the batch, by this slot.
    SameAs(usize),
    /// Its key was used before: the first task's id and (current) state.
    Existing(TaskId, TaskState),
}

/// The columns of new task rows, one array per column.
#[derive(Default)]
struct TaskRows {
    id: Vec<String>,
    tenant: Vec<String>,
    module: Vec<String>,
    input: Vec<Vec<u8>>,
    priority: Vec<i16>,
    state: Vec<&'static str>,
    limits: [Vec<i64>; 5],
    max_attempts: Vec<i64>,
    backoff_ms: Vec<i64>,
    max_backoff_ms: Vec<i64>,
    retry_on: Vec<String>,
    idempotency_key: Vec<Option<String>>,
    run_at: Vec<Option<i64>>,
    deadline: Vec<Option<i64>>,
    env: Vec<String>,
    labels: Vec<String>,
    sort_key: Vec<Option<i64>>,
    dirs: Vec<String>,
}

/// A validated task ready to become a row.
struct NewRow {
    id: TaskId,
    state: TaskState,
    sort_key: Option<i64>,
    limits: [i64; 5],
    backoff: [i64; 2],
    task: NewTask,
}

impl TaskRows {
    fn push(&mut self, r: NewRow) {
        let t = r.task;
        self.id.push(r.id.into_string());
        self.tenant.push(t.tenant);
        self.module.push(t.module.to_string());
        self.input.push(t.input);
        self.priority.push(i16::from(t.priority.rank()));
        self.state.push(r.state.as_str());
        for (column, value) in self.limits.iter_mut().zip(r.limits) {
            column.push(value);
        }
        self.max_attempts.push(i64::from(t.retry.max_attempts));
        self.backoff_ms.push(r.backoff[0]);
        self.max_backoff_ms.push(r.backoff[1]);
        self.retry_on.push(retry_on_text(&t.retry.retry_on));
        self.idempotency_key.push(t.idempotency_key);
        self.run_at.push(t.run_at.map(ms));
        self.deadline.push(t.deadline.map(ms));
        self.env.push(map_json(&t.env));
        self.labels.push(map_json(&t.labels));
        self.sort_key.push(r.sort_key);
        self.dirs.push(map_json(&t.dirs));
    }
}

const INSERT_TASKS: &str = "INSERT INTO tasks (id, tenant, module, input, priority, state, fuel, memory_bytes,
        timeout_ms, output_bytes, log_bytes, max_attempts, backoff_ms, max_backoff_ms, retry_on,
        idempotency_key, run_at, deadline, env, labels, created_at, sort_key, dirs)
    SELECT u.id, u.tenant, u.module, u.input, u.priority, u.state, u.fuel, u.memory_bytes, u.timeout_ms,
        u.output_bytes, u.log_bytes, u.max_attempts, u.backoff_ms, u.max_backoff_ms,
        string_to_array(u.retry_on, ','), u.idempotency_key, u.run_at, u.deadline, u.env::jsonb,
        u.labels::jsonb, $21, u.sort_key, u.dirs::jsonb
    FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::int2[], $6::text[], $7::int8[],
        $8::int8[], $9::int8[], $10::int8[], $11::int8[], $12::int8[], $13::int8[], $14::int8[],
        $15::text[], $16::text[], $17::int8[], $18::int8[], $19::text[], $20::text[], $22::int8[],
        $23::text[])
        AS u(id, tenant, module, input, priority, state, fuel, memory_bytes, timeout_ms, output_bytes,
             log_bytes, max_attempts, backoff_ms, max_backoff_ms, retry_on, idempotency_key, run_at,
             deadline, env, labels, sort_key, dirs)
    ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id";

/// Moves the fair-share clocks of an insert batch, `$4[i]` new tasks for tenant `$1[i]` at
/// priority `$2[i]`, at `$3` = now: each clock becomes `max(clock, now) + n` (a missing one
/// starts at now). The upsert locks each clock row until the transaction ends, in one
/// order (sorted), so concurrent batches of one tenant take turns and cannot deadlock.
const MOVE_CLOCKS: &str = "INSERT INTO fair_clocks AS c (tenant, priority, clock)
    SELECT u.tenant, u.priority, $3 + u.n
    FROM unnest($1::text[], $2::int2[], $4::int8[]) AS u(tenant, priority, n)
    ORDER BY u.tenant, u.priority
    ON CONFLICT (tenant, priority) DO UPDATE SET clock = GREATEST(c.clock, $3) + (excluded.clock - $3)
    RETURNING c.tenant, c.priority, c.clock";

/// Gives each new row its fair sort key (see [`FairClock`]): one upsert of the batch's
/// clocks ([`MOVE_CLOCKS`]), then the keys in batch order. A row that later loses an
/// idempotency race to another node has used a millisecond of its tenant's clock.
async fn fair_keys<C: GenericClient>(
    c: &C,
    rows: &mut [(usize, NewRow)],
    now: i64,
    aging_step_ms: u64,
) -> Result<(), StoreError> {
    let mut counts: BTreeMap<(&str, i16), i64> = BTreeMap::new();
    for (_, r) in rows.iter() {
        let key = (r.task.tenant.as_str(), i16::from(r.task.priority.rank()));
        *counts.entry(key).or_default() += 1;
    }
    if counts.is_empty() {
        return Ok(());
    }
    let tenants: Vec<&str> = counts.keys().map(|(t, _)| *t).collect();
    let priorities: Vec<i16> = counts.keys().map(|(_, p)| *p).collect();
    let ns: Vec<i64> = counts.values().copied().collect();
    let moved = query(
        c,
        "move fair-share clocks",
        MOVE_CLOCKS,
        &[&tenants, &priorities, &now, &ns],
    )
    .await?;
    let mut clocks: HashMap<(String, i16), FairClock> = HashMap::with_capacity(moved.len());
    for r in &moved {
        let (tenant, priority, clock): (String, i16, i64) = (r.get(0), r.get(1), r.get(2));
        let n = counts
            .get(&(tenant.as_str(), priority))
            .copied()
            .ok_or_else(|| corrupt("a fair-share clock the batch did not ask for moved"))?;
        clocks.insert((tenant, priority), FairClock::new(Some(clock - n), now));
    }
    drop(counts);
    for (_, r) in rows.iter_mut() {
        let priority = r.task.priority;
        let clock = clocks
            .get_mut(&(r.task.tenant.clone(), i16::from(priority.rank())))
            .ok_or_else(|| corrupt("a fair-share clock did not move"))?;
        let ready = r.task.run_at.map(ms).filter(|&at| at > now).unwrap_or(now);
        r.sort_key = Some(claim_sort_key(clock.take(ready), priority, aging_step_ms));
    }
    Ok(())
}

const FIND_KEYS: &str = "SELECT t.tenant, t.idempotency_key, t.id, t.state
    FROM tasks t JOIN unnest($1::text[], $2::text[]) AS k(tenant, key)
        ON t.tenant = k.tenant AND t.idempotency_key = k.key";

/// Finds the tasks already stored under `(tenant, key)` pairs.
async fn find_keys<C: GenericClient>(
    c: &C,
    keys: &[Key],
) -> Result<HashMap<Key, (TaskId, TaskState)>, StoreError> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let tenants: Vec<&str> = keys.iter().map(|(t, _)| t.as_str()).collect();
    let names: Vec<&str> = keys.iter().map(|(_, k)| k.as_str()).collect();
    let rows = query(
        c,
        "look up idempotency keys",
        FIND_KEYS,
        &[&tenants, &names],
    )
    .await?;
    rows.iter()
        .map(|r| {
            let state: &str = r.get(3);
            Ok((
                (r.get(0), r.get(1)),
                (TaskId::from(r.get::<_, String>(2)), parse_state(state)?),
            ))
        })
        .collect()
}

/// Checks a task before anything is written; errors name the field.
fn validate(i: usize, t: &NewTask) -> Result<([i64; 5], [i64; 2]), StoreError> {
    if t.tenant.is_empty() {
        return Err(StoreError::InvalidArgument(format!(
            "tasks[{i}].tenant is empty"
        )));
    }
    let l = &t.limits;
    let field = |name: &str| format!("tasks[{i}].{name}");
    Ok((
        [
            to_i64(l.fuel, &field("limits.fuel"))?,
            to_i64(l.memory_bytes, &field("limits.memory_bytes"))?,
            to_i64(l.timeout_ms, &field("limits.timeout_ms"))?,
            to_i64(l.output_bytes, &field("limits.output_bytes"))?,
            to_i64(l.log_bytes, &field("limits.log_bytes"))?,
        ],
        [
            to_i64(t.retry.backoff_ms, &field("retry.backoff_ms"))?,
            to_i64(t.retry.max_backoff_ms, &field("retry.max_backoff_ms"))?,
        ],
    ))
}

/// `task_insert`: one transaction; rows go in through `unnest`, deduplicated by
/// idempotency key per tenant within the batch, against stored tasks, and (by the unique
/// index) against concurrent inserts of other nodes.
pub(crate) async fn task_insert(db: &Db, p: TaskInsertParams) -> Result<Vec<Inserted>, StoreError> {
    let now = ms(p.now);
    let mut checked = Vec::with_capacity(p.tasks.len());
    for (i, task) in p.tasks.iter().enumerate() {
        checked.push(validate(i, task)?);
    }
    // Within the batch, the first task of a key stands for the later ones.
    let mut plans: Vec<Option<Plan>> = Vec::with_capacity(p.tasks.len());
    let mut first_of_key: HashMap<Key, usize> = HashMap::new();
    for (slot, task) in p.tasks.iter().enumerate() {
        let plan = task.idempotency_key.as_ref().and_then(|key| {
            match first_of_key.entry((task.tenant.clone(), key.clone())) {
                std::collections::hash_map::Entry::Occupied(first) => {
                    Some(Plan::SameAs(*first.get()))
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(slot);
                    None
                }
            }
        });
        plans.push(plan);
    }

    let mut client = db.client("task_insert").await?;
    let tx = begin(&mut client, "begin task_insert").await?;
    let keys: Vec<Key> = first_of_key.keys().cloned().collect();
    let mut stored = find_keys(&tx, &keys).await?;

    let mut rows = Vec::new();
    let mut made_ready = false;
    for (slot, (task, (limits, backoff))) in p.tasks.into_iter().zip(checked).enumerate() {
        if plans[slot].is_some() {
            continue;
        }
        if let Some(key) = &task.idempotency_key
            && let Some((id, state)) = stored.remove(&(task.tenant.clone(), key.clone()))
        {
            plans[slot] = Some(Plan::Existing(id, state));
            continue;
        }
        // Queued now, it joins the line now, whatever past run_at it named; scheduled, it
        // keeps its fair key (set below) while it waits, and its promotion keeps it.
        let scheduled = task.run_at.is_some_and(|at| ms(at) > now);
        let state = if scheduled {
            TaskState::Scheduled
        } else {
            TaskState::Queued
        };
        let id = TaskId::generate(p.now);
        plans[slot] = Some(Plan::New(id.clone(), state));
        rows.push((
            slot,
            NewRow {
                id,
                state,
                sort_key: None,
                limits,
                backoff,
                task,
            },
        ));
    }
    fair_keys(&tx, &mut rows, now, db.aging_step_ms).await?;

    // Keyed rows go in key order, so two batches sharing keys wait on each other's unique
    // index entries in one order and cannot deadlock.
    rows.sort_by(|(_, a), (_, b)| {
        fn key(r: &NewRow) -> Option<(&str, &str)> {
            let t = &r.task;
            t.idempotency_key.as_deref().map(|k| (t.tenant.as_str(), k))
        }
        key(a).cmp(&key(b))
    });
    let mut lost_races: Vec<usize> = Vec::new();
    let mut slot_keys: HashMap<usize, Key> = HashMap::new();
    for chunk in chunks(rows, |(_, r)| r.task.input.len()) {
        let mut cols = TaskRows::default();
        let mut sent: Vec<(usize, String, Option<Key>)> = Vec::new();
        for (slot, row) in chunk {
            let key = row
                .task
                .idempotency_key
                .clone()
                .map(|k| (row.task.tenant.clone(), k));
            sent.push((slot, row.id.as_str().to_string(), key));
            cols.push(row);
        }
        let [fuel, memory, timeout, output, log] = &cols.limits;
        let inserted = query(
            &tx,
            "insert tasks",
            INSERT_TASKS,
            &[
                &cols.id,
                &cols.tenant,
                &cols.module,
                &cols.input,
                &cols.priority,
                &cols.state,
                fuel,
                memory,
                timeout,
                output,
                log,
                &cols.max_attempts,
                &cols.backoff_ms,
                &cols.max_backoff_ms,
                &cols.retry_on,
                &cols.idempotency_key,
                &cols.run_at,
                &cols.deadline,
                &cols.env,
                &cols.labels,
                &now,
                &cols.sort_key,
                &cols.dirs,
            ],
        )
        .await?;
        let inserted: HashSet<String> = inserted.iter().map(|r| r.get(0)).collect();
        for (slot, id, key) in sent {
            if inserted.contains(&id) {
                if let Some(Plan::New(_, TaskState::Queued)) = plans[slot] {
                    made_ready = true;
                }
            } else if let Some(key) = key {
                // Another node committed the same key since we looked.
                lost_races.push(slot);
                slot_keys.insert(slot, key);
            } else {
                return Err(corrupt(format!("task {id} was not inserted")));
            }
        }
    }
    if !lost_races.is_empty() {
        let keys: Vec<Key> = slot_keys.values().cloned().collect();
        let found = find_keys(&tx, &keys).await?;
        for slot in lost_races {
            let key = &slot_keys[&slot];
            let (id, state) = found.get(key).cloned().ok_or_else(|| {
                StoreError::Conflict(format!(
                    "idempotency key {:?} of tenant {:?} was taken and released concurrently",
                    key.1, key.0
                ))
            })?;
            plans[slot] = Some(Plan::Existing(id, state));
        }
    }
    commit(tx, "commit task_insert").await?;
    if made_ready {
        db.made_ready();
    }

    let mut out: Vec<Inserted> = Vec::with_capacity(plans.len());
    for plan in plans {
        let inserted = match plan {
            Some(Plan::New(id, state)) => Inserted {
                id,
                state,
                deduplicated: false,
            },
            Some(Plan::Existing(id, state)) => Inserted {
                id,
                state,
                deduplicated: true,
            },
            Some(Plan::SameAs(first)) => Inserted {
                deduplicated: true,
                ..out[first].clone()
            },
            None => return Err(corrupt("an inserted task was left without a plan")),
        };
        out.push(inserted);
    }
    Ok(out)
}

/// The claim: lock up to `$1` queued tasks in claim order, skipping rows other claimers
/// hold; expire those whose deadline passed; move the rest to `running`, the `n`th of them
/// under the attempt id `$3[n]`; record the attempts. Returns one row per locked task:
/// the claimed ones in claim order (task columns, attempt id, attempt number, `n`), then
/// the expired ones (NULLs, and the id in the last column).
///
/// Every join is a key lookup or an array subscript, so the statement stays linear in the
/// batch whatever row counts the (generic, cached) plan estimates.
static CLAIM_SQL: LazyLock<String> = LazyLock::new(|| {
    let nulls = vec!["NULL"; TASK_WIDTH + 3].join(", ");
    format!(
        "WITH picked AS MATERIALIZED (
            SELECT id, sort_key, deadline FROM tasks
            WHERE state = 'queued'
            ORDER BY sort_key, id
            LIMIT $1
            FOR UPDATE SKIP LOCKED
        ), expired AS (
            UPDATE tasks t SET state = 'expired', finished_at = $2, sort_key = NULL
            FROM picked p WHERE t.id = p.id AND p.deadline < $2
            RETURNING t.id
        ), ready AS (
            SELECT id, row_number() OVER (ORDER BY sort_key, id) AS n
            FROM picked WHERE deadline IS NULL OR deadline >= $2
        ), claimed AS (
            UPDATE tasks t SET state = 'running', attempt_count = t.attempt_count + 1,
                current_attempt = ($3::text[])[r.n], lease_until = $4,
                started_at = COALESCE(t.started_at, $2)
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
});

/// The most tasks one claim statement locks; a larger `max` takes several statements.
const MAX_CLAIM_PER_STATEMENT: usize = 1_000;

/// `task_claim`: [`CLAIM_SQL`] until `max` tasks are claimed or the queue (what other
/// claimers do not hold) is empty. Each statement commits on its own.
pub(crate) async fn task_claim(
    db: &Db,
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
    let client = db.client("task_claim").await?;
    let mut claimed = Vec::with_capacity(p.max.min(MAX_CLAIM_PER_STATEMENT));
    while claimed.len() < p.max {
        let want = (p.max - claimed.len()).min(MAX_CLAIM_PER_STATEMENT);
        let attempt_ids: Vec<String> = (0..want)
            .map(|_| AttemptId::generate(p.now).into_string())
            .collect();
        let rows = query(
            &client,
            "claim tasks",
            &CLAIM_SQL,
            &[&(want as i64), &now, &attempt_ids, &lease_until, &p.node],
        )
        .await?;
        let picked = rows.len();
        for row in &rows {
            let held: Option<&str> = row.get(0);
            if held.is_none() {
                continue; // expired instead of claimed
            }
            let task = read_task(row, 0)?;
            let attempt_id: String = row.get(TASK_WIDTH);
            let number: i32 = row.get(TASK_WIDTH + 1);
            claimed.push(claimed_task(
                task,
                AttemptId::from(attempt_id),
                number,
                p.now,
                from_millis(lease_until),
            )?);
        }
        if picked < want {
            break;
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
        started_at = u.started_at, finished_at = u.finished_at
    FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[], $5::text[], $6::bytea[],
        $7::bytea[], $8::bool[], $9::bool[], $10::int8[], $11::int8[], $12::int8[], $13::int8[],
        $14::int8[])
        AS u(id, outcome, exit_code, trap, error, output, stderr, output_truncated,
             stderr_truncated, fuel_consumed, peak_memory_bytes, wall_ms, started_at, finished_at)
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
        execute(
            c,
            "record how attempts ended",
            RECORD_ATTEMPTS,
            &[
                &ids, &outcome, &exit_code, &trap, &error, &output, &stderr, &out_trunc,
                &err_trunc, &fuel, &peak, &wall, &started, &finished,
            ],
        )
        .await?;
    }
    Ok(())
}

/// Locks the tasks these attempts still hold: `attempt id -> (task id, priority,
/// cancel_requested)`. Locks are taken in task id order, so concurrent batches cannot
/// deadlock on each other.
const LOCK_HELD: &str = "SELECT current_attempt, id, priority, cancel_requested FROM tasks
    WHERE current_attempt = ANY($1::text[]) AND state = 'running'
    ORDER BY id FOR UPDATE";

const ATTEMPT_TASKS: &str =
    "SELECT a.id, t.id, t.state FROM attempts a JOIN tasks t ON t.id = a.task_id
    WHERE a.id = ANY($1::text[])";

/// `task_complete`: one transaction for the whole batch. The tasks still held by the
/// completions' attempts are locked first (the fence: a rescue or another completion that
/// got there first leaves nothing to lock); then the ends are written with a few
/// set-based statements.
pub(crate) async fn task_complete(
    db: &Db,
    p: TaskCompleteParams,
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
    let mut held: HashMap<String, (String, i16, bool)> = rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect();

    let mut ended: Vec<(String, Attempt)> = Vec::new();
    let mut requeued: Vec<String> = Vec::new();
    let mut transitions: Vec<Transition> = Vec::new();
    // Per completion: accepted with (task, state), or rejected.
    let mut fates: Vec<Option<(String, TaskState)>> = Vec::with_capacity(p.completions.len());
    let mut made_ready = false;
    for c in p.completions.iter() {
        // `remove`: a second completion of one attempt in the batch is rejected.
        let Some((task_id, priority, cancel_requested)) = held.remove(c.attempt_id.as_str()) else {
            fates.push(None);
            continue;
        };
        let transition = match rules::honour_cancel(c.next, cancel_requested) {
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

const CANCEL_SQL: &str = "UPDATE tasks SET
        state = CASE WHEN state IN ('queued', 'scheduled') THEN 'cancelled' ELSE state END,
        finished_at = CASE WHEN state IN ('queued', 'scheduled') THEN $3 ELSE finished_at END,
        sort_key = CASE WHEN state IN ('queued', 'scheduled') THEN NULL ELSE sort_key END,
        cancel_requested = cancel_requested OR state = 'running'
    WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)
        AND state IN ('queued', 'scheduled', 'running')";

/// `task_cancel`: end a waiting task or flag a running one in one statement, then read it.
pub(crate) async fn task_cancel(
    db: &Db,
    p: TaskCancelParams,
) -> Result<Option<TaskRecord>, StoreError> {
    let client = db.client("task_cancel").await?;
    execute(
        &client,
        "cancel a task",
        CANCEL_SQL,
        &[&p.id.as_str(), &p.tenant, &ms(p.now)],
    )
    .await?;
    reads::load_task(&client, p.tenant.as_deref(), p.id.as_str()).await
}

const LOCK_EXPIRED_LEASES: &str = "SELECT t.id, t.tenant, t.current_attempt, t.priority,
        t.attempt_count, t.cancel_requested, t.max_attempts, t.backoff_ms, t.max_backoff_ms,
        t.retry_on, a.node, a.lease_until
    FROM tasks t JOIN attempts a ON a.id = t.current_attempt
    WHERE t.state = 'running' AND t.lease_until < $1
    ORDER BY t.lease_until, t.id LIMIT $2
    FOR UPDATE OF t SKIP LOCKED";

/// `task_rescue`: in one transaction, lock running tasks whose lease ended (skipping any a
/// concurrent completion or rescuer holds), record their attempts `lost`, and retry, fail
/// or cancel each as its policy says.
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
            tenant: r.get(1),
            attempt_id: AttemptId::from(attempt_id),
            state: transition.state,
            // As stored: to the millisecond.
            run_at: run_at.map(|t| from_millis(ms(t))),
        });
        transitions.push(transition);
    }
    record_attempts(&tx, ended).await?;
    apply_transitions(&tx, &transitions).await?;
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
        WHERE deadline IS NOT NULL AND state IN ('queued', 'scheduled') AND deadline < $1
        ORDER BY deadline, id LIMIT $2 FOR UPDATE SKIP LOCKED
    )
    UPDATE tasks t SET state = 'expired', finished_at = $1, sort_key = NULL
    FROM due WHERE t.id = due.id
    RETURNING t.id, t.deadline";

/// `task_expire`: one statement ends waiting tasks whose deadline passed.
pub(crate) async fn task_expire(db: &Db, p: TaskExpireParams) -> Result<Vec<TaskId>, StoreError> {
    if p.max == 0 {
        return Ok(Vec::new());
    }
    let max = i64::try_from(p.max).unwrap_or(i64::MAX);
    let client = db.client("task_expire").await?;
    let rows = query(&client, "expire tasks", EXPIRE_SQL, &[&ms(p.now), &max]).await?;
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
/// `ON DELETE CASCADE`.
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
        assert!(CLAIM_SQL.contains("AS MATERIALIZED"));
        assert!(CLAIM_SQL.contains("FOR UPDATE SKIP LOCKED"));
        assert!(CLAIM_SQL.contains("ORDER BY sort_key, id"));
    }
}
