//! Writes that add: a module, and a batch of tasks keyed for fair share and deduplicated
//! by idempotency key.

use std::collections::{BTreeMap, HashMap, HashSet};

use deadpool_postgres::GenericClient;
use fabric_store::workflow::{self, Readiness};
use fabric_store::{
    FairClock, Inserted, ModuleInfo, ModulePutParams, NewTask, StoreError, TaskId,
    TaskInsertParams, claim_sort_key,
};
use fabric_types::TaskState;
use time::OffsetDateTime;

use super::workflow::{insert_edges, lock_dependencies, passed_input};
use super::{begin, chunks, commit};
use crate::db::{Db, execute, query};
use crate::error::corrupt;
use crate::rows::{
    MODULE_COLUMNS, map_json, ms, parse_state, read_module_info, retry_on_text, to_i64,
};

/// Locks the module row of every new task `FOR KEY SHARE` until the commit, so a
/// concurrent `module_delete` waits for the insert (and then sees its tasks); fails with
/// [`StoreError::ModuleNotFound`] when a task's tenant does not store its module.
async fn lock_modules<C: GenericClient>(
    tx: &C,
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
    after_ids: Vec<Option<String>>,
    pass_outputs: Vec<bool>,
    parent: Vec<Option<String>>,
    depth: Vec<i32>,
    error: Vec<Option<String>>,
    finished_at: Vec<Option<i64>>,
    concurrency_key: Vec<Option<String>>,
    concurrency_limit: Vec<Option<i32>>,
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
    depth: i32,
    /// Why it ended at once (a dependency that did not succeed).
    error: Option<String>,
}

impl TaskRows {
    fn push(&mut self, r: NewRow, now: i64) {
        let t = r.task;
        self.after_ids.push(workflow::ids_encode(&t.after));
        self.pass_outputs.push(t.pass_outputs);
        self.parent.push(t.parent.map(TaskId::into_string));
        self.depth.push(r.depth);
        self.error.push(r.error);
        self.finished_at.push(r.state.is_terminal().then_some(now));
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
        let concurrency = t
            .concurrency
            .map(|c| (c.key, i32::try_from(c.limit).unwrap_or(i32::MAX)));
        let (key, limit) = concurrency.unzip();
        self.concurrency_key.push(key);
        self.concurrency_limit.push(limit);
        self.trace.push(t.trace);
    }
}

const INSERT_TASKS: &str = "INSERT INTO tasks (id, tenant, module, input, priority, state, fuel, memory_bytes,
        timeout_ms, output_bytes, log_bytes, max_attempts, backoff_ms, max_backoff_ms, retry_on,
        idempotency_key, run_at, deadline, env, labels, created_at, sort_key, dirs, egress, args,
        after_ids, pass_outputs, parent, depth, error, finished_at, concurrency_key, concurrency_limit, trace)
    SELECT u.id, u.tenant, u.module, u.input, u.priority, u.state, u.fuel, u.memory_bytes, u.timeout_ms,
        u.output_bytes, u.log_bytes, u.max_attempts, u.backoff_ms, u.max_backoff_ms,
        string_to_array(u.retry_on, ','), u.idempotency_key, u.run_at, u.deadline, u.env::jsonb,
        u.labels::jsonb, $21, u.sort_key, u.dirs::jsonb, u.egress::jsonb, u.args::jsonb,
        CASE WHEN u.after_ids IS NULL THEN NULL
            ELSE ARRAY(SELECT jsonb_array_elements_text(u.after_ids::jsonb)) END,
        u.pass_outputs, u.parent, u.depth, u.error, u.finished_at, u.concurrency_key, u.concurrency_limit,
        u.trace
    FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::int2[], $6::text[], $7::int8[],
        $8::int8[], $9::int8[], $10::int8[], $11::int8[], $12::int8[], $13::int8[], $14::int8[],
        $15::text[], $16::text[], $17::int8[], $18::int8[], $19::text[], $20::text[], $22::int8[],
        $23::text[], $24::text[], $25::text[], $26::text[], $27::bool[], $28::text[], $29::int4[],
        $30::text[], $31::int8[], $32::text[], $33::int4[], $34::text[])
        AS u(id, tenant, module, input, priority, state, fuel, memory_bytes, timeout_ms, output_bytes,
             log_bytes, max_attempts, backoff_ms, max_backoff_ms, retry_on, idempotency_key, run_at,
             deadline, env, labels, sort_key, dirs, egress, args, after_ids, pass_outputs, parent,
             depth, error, finished_at, concurrency_key, concurrency_limit, trace)
    ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id";

/// Moves the fair-share clocks of an insert batch, `$4[i]` new tasks for tenant `$1[i]` at
/// priority `$2[i]`, at `$3` = now: each clock becomes `max(clock, now) + n` (a missing one
/// starts at now). The upsert locks each clock row until its transaction ends, in one
/// order (sorted), so concurrent batches of one tenant take turns and cannot deadlock.
const MOVE_CLOCKS: &str = "INSERT INTO fair_clocks AS c (tenant, priority, clock)
    SELECT u.tenant, u.priority, $3 + u.n
    FROM unnest($1::text[], $2::int2[], $4::int8[]) AS u(tenant, priority, n)
    ORDER BY u.tenant, u.priority
    ON CONFLICT (tenant, priority) DO UPDATE SET clock = GREATEST(c.clock, $3) + (excluded.clock - $3)
    RETURNING c.tenant, c.priority, c.clock";

/// The fair-share clocks a batch takes its rows' times from, by (tenant, priority rank).
pub(super) type Clocks = HashMap<(String, i16), FairClock>;

/// Moves the clocks of `tasks` (one millisecond per task, see [`MOVE_CLOCKS`]) and
/// returns where each batch's share starts.
pub(super) async fn move_clocks<'a, C: GenericClient>(
    c: &C,
    tasks: impl Iterator<Item = &'a NewTask>,
    now: i64,
) -> Result<Clocks, StoreError> {
    let mut counts: BTreeMap<(&str, i16), i64> = BTreeMap::new();
    for task in tasks {
        let key = (task.tenant.as_str(), i16::from(task.priority.rank()));
        *counts.entry(key).or_default() += 1;
    }
    if counts.is_empty() {
        return Ok(Clocks::new());
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
    let mut clocks = Clocks::with_capacity(moved.len());
    for r in &moved {
        let (tenant, priority, clock): (String, i16, i64) = (r.get(0), r.get(1), r.get(2));
        let n = counts
            .get(&(tenant.as_str(), priority))
            .copied()
            .ok_or_else(|| corrupt("a fair-share clock the batch did not ask for moved"))?;
        clocks.insert((tenant, priority), FairClock::new(Some(clock - n), now));
    }
    Ok(clocks)
}

/// Gives each new row its fair sort key (see [`FairClock`]) from `clocks`, in batch order.
fn fair_keys(
    rows: &mut [(usize, NewRow)],
    clocks: &mut Clocks,
    now: i64,
    aging_step_ms: u64,
) -> Result<(), StoreError> {
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
    fabric_store::concurrency::check_concurrency(i, t.concurrency.as_ref())?;
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

/// `task_insert`: one transaction of [`insert_batch`].
pub(crate) async fn task_insert(db: &Db, p: TaskInsertParams) -> Result<Vec<Inserted>, StoreError> {
    let mut client = db.client("task_insert").await?;
    // The clocks move in a statement of their own, before the insert's transaction, so
    // that concurrent batches of one tenant wait on each other for that statement only,
    // not for each other's whole insert and commit. Every task of the batch takes its
    // millisecond, also one that turns out deduplicated or waiting: its tenant's later
    // tasks start that much later, no other tenant's.
    let clocks = move_clocks(&client, p.tasks.iter(), ms(p.now)).await?;
    let tx = begin(&mut client, "begin task_insert").await?;
    let (out, made_ready) =
        insert_batch(&tx, p.tasks, p.now, db.aging_step_ms, Some(clocks)).await?;
    commit(tx, "commit task_insert").await?;
    if made_ready {
        db.made_ready();
    }
    Ok(out)
}

/// Checks the caller-chosen ids of a batch: none given twice, none already stored.
async fn check_ids<C: GenericClient>(c: &C, tasks: &[NewTask]) -> Result<(), StoreError> {
    let mut given: HashMap<&str, usize> = HashMap::new();
    for (i, task) in tasks.iter().enumerate() {
        if let Some(id) = &task.id
            && given.insert(id.as_str(), i).is_some()
        {
            return Err(StoreError::DuplicateTaskId {
                index: i,
                id: id.to_string(),
            });
        }
    }
    if given.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = given.keys().copied().collect();
    let taken = query(
        c,
        "look up task ids",
        "SELECT id FROM tasks WHERE id = ANY($1::text[])",
        &[&ids],
    )
    .await?;
    if let Some(index) = taken
        .iter()
        .filter_map(|r| given.get(r.get::<_, &str>(0)).copied())
        .min()
    {
        let id = tasks[index].id.clone().unwrap_or_else(|| TaskId::from(""));
        return Err(StoreError::DuplicateTaskId {
            index,
            id: id.into_string(),
        });
    }
    Ok(())
}

/// The depth of each task's parent, which must be a stored task of the task's tenant.
async fn parent_depths<C: GenericClient>(c: &C, tasks: &[NewTask]) -> Result<Vec<i32>, StoreError> {
    let parents: Vec<&str> = tasks
        .iter()
        .filter_map(|t| t.parent.as_ref().map(TaskId::as_str))
        .collect();
    let found: HashMap<String, (String, i32)> = if parents.is_empty() {
        HashMap::new()
    } else {
        query(
            c,
            "look up tasks' parents",
            "SELECT id, tenant, depth FROM tasks WHERE id = ANY($1::text[])",
            &[&parents],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect()
    };
    tasks
        .iter()
        .enumerate()
        .map(|(i, t)| match &t.parent {
            None => Ok(0),
            Some(parent) => match found.get(parent.as_str()) {
                Some((tenant, depth)) if *tenant == t.tenant => {
                    let depth =
                        workflow::child_depth(i, u32::try_from(*depth).unwrap_or(u32::MAX))?;
                    Ok(i32::try_from(depth).unwrap_or(i32::MAX))
                }
                _ => Err(workflow::unknown_parent(i, &t.tenant, parent)),
            },
        })
        .collect()
}

/// Inserts a batch of tasks in the caller's transaction: rows go in through `unnest`,
/// deduplicated by idempotency key per tenant within the batch, against stored tasks, and
/// (by the unique index) against concurrent inserts of other nodes; each starts where its
/// dependencies (stored tasks, or earlier ones of the batch) put it. Returns whether a task
/// went in queued (the caller asks for the ready signal after its commit).
/// Inserts `tasks` in the transaction `tx`. `clocks` are the fair-share clocks already
/// moved for every task of the batch ([`move_clocks`]); `None` moves them here, for the
/// rows that join the line, in `tx`.
pub(super) async fn insert_batch<C: GenericClient>(
    tx: &C,
    tasks: Vec<NewTask>,
    at: OffsetDateTime,
    aging_step_ms: u64,
    clocks: Option<Clocks>,
) -> Result<(Vec<Inserted>, bool), StoreError> {
    let p = TaskInsertParams { tasks, now: at };
    let now = ms(p.now);
    let mut checked = Vec::with_capacity(p.tasks.len());
    for (i, task) in p.tasks.iter().enumerate() {
        checked.push(validate(i, task)?);
        workflow::check_new_task(i, task)?;
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

    let keys: Vec<Key> = first_of_key.keys().cloned().collect();
    let mut stored = find_keys(tx, &keys).await?;
    check_ids(tx, &p.tasks).await?;
    let depths = parent_depths(tx, &p.tasks).await?;
    let dep_ids: Vec<String> = p
        .tasks
        .iter()
        .flat_map(|t| t.after.iter().map(|id| id.to_string()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let stored_deps = lock_dependencies(tx, &dep_ids).await?;
    // The states of the batch's new tasks so far, which later ones may name.
    let mut batch: HashMap<String, (String, TaskState)> = HashMap::new();

    let mut rows = Vec::new();
    let mut made_ready = false;
    for (slot, ((mut task, (limits, backoff)), depth)) in
        p.tasks.into_iter().zip(checked).zip(depths).enumerate()
    {
        if plans[slot].is_some() {
            continue;
        }
        if let Some(key) = &task.idempotency_key
            && let Some((id, state)) = stored.remove(&(task.tenant.clone(), key.clone()))
        {
            plans[slot] = Some(Plan::Existing(id, state));
            continue;
        }
        // Where its dependencies put it: stored tasks of its tenant, or the batch's.
        let mut states: HashMap<String, TaskState> = HashMap::new();
        for dep in &task.after {
            let found = batch
                .get(dep.as_str())
                .or_else(|| stored_deps.get(dep.as_str()));
            match found {
                Some((tenant, state)) if *tenant == task.tenant => {
                    states.insert(dep.to_string(), *state);
                }
                _ => {
                    return Err(StoreError::UnknownDependency {
                        index: slot,
                        tenant: task.tenant.clone(),
                        id: dep.to_string(),
                    });
                }
            }
        }
        let mut state = TaskState::Queued;
        let mut error = None;
        match workflow::readiness(&task.after, |id| states.get(id.as_str()).copied()) {
            Readiness::Waiting => state = TaskState::Waiting,
            Readiness::Blocked {
                dependency,
                state: ended,
            } => {
                state = TaskState::Cancelled;
                error = Some(workflow::dependency_error(&dependency, ended));
            }
            Readiness::Ready if task.pass_outputs => {
                task.input = passed_input(tx, &task.input, &task.after, &states).await?;
            }
            Readiness::Ready => {}
        }
        // Queued now, it joins the line now, whatever past run_at it named; scheduled, it
        // keeps its fair key (set below) while it waits, and its promotion keeps it.
        if state == TaskState::Queued && task.run_at.is_some_and(|at| ms(at) > now) {
            state = TaskState::Scheduled;
        }
        let id = task.id.take().unwrap_or_else(|| TaskId::generate(p.now));
        batch.insert(id.to_string(), (task.tenant.clone(), state));
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
                depth,
                error,
            },
        ));
    }
    lock_modules(tx, &rows).await?;
    // Only tasks that join the line take fair-share time; a waiting one is keyed when it
    // becomes ready.
    let (mut rows, others): (Vec<_>, Vec<_>) = rows
        .into_iter()
        .partition(|(_, r)| matches!(r.state, TaskState::Queued | TaskState::Scheduled));
    let mut clocks = match clocks {
        Some(clocks) => clocks,
        None => move_clocks(tx, rows.iter().map(|(_, r)| &r.task), now).await?,
    };
    fair_keys(&mut rows, &mut clocks, now, aging_step_ms)?;
    rows.extend(others);

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
    let mut edges: Vec<(String, Vec<TaskId>)> = Vec::new();
    for chunk in chunks(rows, |(_, r)| r.task.input.len()) {
        let mut cols = TaskRows::default();
        let mut sent: Vec<(usize, String, Option<Key>, Vec<TaskId>)> = Vec::new();
        for (slot, row) in chunk {
            let key = row
                .task
                .idempotency_key
                .clone()
                .map(|k| (row.task.tenant.clone(), k));
            let waits_on = if row.state == TaskState::Waiting {
                row.task.after.clone()
            } else {
                Vec::new()
            };
            sent.push((slot, row.id.as_str().to_string(), key, waits_on));
            cols.push(row, now);
        }
        let [fuel, memory, timeout, output, log] = &cols.limits;
        let inserted = query(
            tx,
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
                &cols.after_ids,
                &cols.pass_outputs,
                &cols.parent,
                &cols.depth,
                &cols.error,
                &cols.finished_at,
                &cols.concurrency_key,
                &cols.concurrency_limit,
                &cols.trace,
            ],
        )
        .await?;
        let inserted: HashSet<String> = inserted.iter().map(|r| r.get(0)).collect();
        for (slot, id, key, waits_on) in sent {
            if inserted.contains(&id) {
                if let Some(Plan::New(_, TaskState::Queued)) = plans[slot] {
                    made_ready = true;
                }
                if !waits_on.is_empty() {
                    edges.push((id, waits_on));
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
    insert_edges(tx, &edges).await?;
    if !lost_races.is_empty() {
        let keys: Vec<Key> = slot_keys.values().cloned().collect();
        let found = find_keys(tx, &keys).await?;
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
    Ok((out, made_ready))
}
