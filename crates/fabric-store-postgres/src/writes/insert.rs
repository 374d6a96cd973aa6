//! Writes that add: a module, and a batch of tasks keyed for fair share and deduplicated
//! by idempotency key.

use std::collections::{BTreeMap, HashMap, HashSet};

use deadpool_postgres::GenericClient;
use fabric_store::{
    FairClock, Inserted, ModuleInfo, ModulePutParams, NewTask, StoreError, TaskId,
    TaskInsertParams, claim_sort_key,
};
use fabric_types::TaskState;

use super::{begin, chunks, commit};
use crate::db::{Db, execute, query};
use crate::error::corrupt;
use crate::rows::{
    MODULE_COLUMNS, map_json, ms, parse_state, read_module_info, retry_on_text, to_i64,
};

/// Locks the module row of every new task `FOR KEY SHARE` until the commit, so a
/// concurrent `module_delete` waits for the insert (and then sees its tasks); fails with
/// [`StoreError::ModuleNotFound`] when a task's tenant does not store its module.
async fn lock_modules(
    tx: &deadpool_postgres::Transaction<'_>,
    rows: &[(usize, NewRow)],
) -> Result<(), StoreError> {
    let mut pairs: BTreeMap<(&str, String), usize> = BTreeMap::new();
    for (slot, row) in rows {
        pairs
            .entry((row.task.tenant.as_str(), row.task.module.to_string()))
            .or_insert(*slot);
    }
    for ((tenant, module), slot) in pairs {
        let found = query(
            tx,
            "lock a task's module",
            "SELECT 1 FROM modules WHERE tenant = $1 AND id = $2 FOR KEY SHARE",
            &[&tenant, &module],
        )
        .await?;
        if found.is_empty() {
            return Err(StoreError::ModuleNotFound {
                index: slot,
                tenant: tenant.to_owned(),
                module,
            });
        }
    }
    Ok(())
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
    egress: Vec<Option<String>>,
    args: Vec<Option<String>>,
    trace: Vec<Option<String>>,
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
        self.egress
            .push(fabric_store::egress_json::names_encode(&t.egress));
        self.args
            .push(fabric_store::telemetry_json::args_encode(&t.args));
        self.trace.push(t.trace);
    }
}

const INSERT_TASKS: &str = "INSERT INTO tasks (id, tenant, module, input, priority, state, fuel, memory_bytes,
        timeout_ms, output_bytes, log_bytes, max_attempts, backoff_ms, max_backoff_ms, retry_on,
        idempotency_key, run_at, deadline, env, labels, created_at, sort_key, dirs, egress, args, trace)
    SELECT u.id, u.tenant, u.module, u.input, u.priority, u.state, u.fuel, u.memory_bytes, u.timeout_ms,
        u.output_bytes, u.log_bytes, u.max_attempts, u.backoff_ms, u.max_backoff_ms,
        string_to_array(u.retry_on, ','), u.idempotency_key, u.run_at, u.deadline, u.env::jsonb,
        u.labels::jsonb, $21, u.sort_key, u.dirs::jsonb, u.egress::jsonb, u.args::jsonb, u.trace
    FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::int2[], $6::text[], $7::int8[],
        $8::int8[], $9::int8[], $10::int8[], $11::int8[], $12::int8[], $13::int8[], $14::int8[],
        $15::text[], $16::text[], $17::int8[], $18::int8[], $19::text[], $20::text[], $22::int8[],
        $23::text[], $24::text[], $25::text[], $26::text[])
        AS u(id, tenant, module, input, priority, state, fuel, memory_bytes, timeout_ms, output_bytes,
             log_bytes, max_attempts, backoff_ms, max_backoff_ms, retry_on, idempotency_key, run_at,
             deadline, env, labels, sort_key, dirs, egress, args, trace)
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
    lock_modules(&tx, &rows).await?;
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
                &cols.egress,
                &cols.args,
                &cols.trace,
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
