//! Writes that add: a module, and a batch of tasks keyed for fair share.

use fabric_store::workflow::{self, Readiness};
use fabric_store::{
    FairClock, Inserted, ModuleInfo, ModulePutParams, NewTask, StoreError, TaskId,
    TaskInsertParams, claim_sort_key,
};
use fabric_types::{Priority, TaskState};
use rusqlite::{OptionalExtension, params};
use time::OffsetDateTime;

use super::workflow::{dependency_states, insert_edges, passed_input};
use super::{INSERT_TASK, READ_CLOCK, WRITE_CLOCK};
use crate::db_err;
use crate::rows::{
    MODULE_COLUMNS, map_json, module_info, ms, parse_state, read_module_info, retry_on_text, to_i64,
};
use crate::writer::WriteCtx;

/// `module_put`: insert or keep the module, move its name.
pub(crate) fn module_put(
    ctx: &mut WriteCtx<'_>,
    p: ModulePutParams,
) -> Result<ModuleInfo, StoreError> {
    let (id, now) = (p.id.to_string(), ms(p.now));
    let size = to_i64(p.bytes.len() as u64, "module size")?;
    ctx.conn
        .prepare_cached(
            "INSERT INTO modules (tenant, id, name, kind, size, created_at, bytes) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (tenant, id) DO UPDATE SET name = COALESCE(excluded.name, modules.name)",
        )
        .and_then(|mut s| s.execute(params![p.tenant, id, p.name, p.kind.as_str(), size, now, p.bytes]))
        .map_err(db_err("store a module"))?;
    if let Some(name) = &p.name {
        ctx.conn
            .prepare_cached(
                "INSERT INTO module_names (tenant, name, module_id, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (tenant, name) DO UPDATE SET module_id = excluded.module_id, updated_at = excluded.updated_at",
            )
            .and_then(|mut s| s.execute(params![p.tenant, name, id, now]))
            .map_err(db_err("name a module"))?;
    }
    let raw = ctx
        .conn
        .prepare_cached(&format!(
            "SELECT {MODULE_COLUMNS} FROM modules WHERE tenant = ?1 AND id = ?2"
        ))
        .and_then(|mut s| s.query_row(params![p.tenant, id], read_module_info))
        .map_err(db_err("read back a module"))?;
    module_info(raw)
}

/// The fair-share clocks one insert batch uses, each read once: a batch holds few tenants
/// (usually one), so a list searched in order beats hashing every task's tenant.
#[derive(Default)]
struct Clocks(Vec<(String, Priority, FairClock)>);

impl Clocks {
    /// The clock of `(tenant, priority)`, read from the database the first time.
    fn get(
        &mut self,
        read: &mut rusqlite::CachedStatement<'_>,
        tenant: &str,
        priority: Priority,
        now: i64,
    ) -> Result<&mut FairClock, StoreError> {
        let found = self
            .0
            .iter()
            .position(|(t, p, _)| *p == priority && t == tenant);
        let i = match found {
            Some(i) => i,
            None => {
                let stored: Option<i64> = read
                    .query_row(params![tenant, priority.rank()], |r| r.get(0))
                    .optional()
                    .map_err(db_err("read a fair-share clock"))?;
                self.0
                    .push((tenant.to_owned(), priority, FairClock::new(stored, now)));
                self.0.len() - 1
            }
        };
        Ok(&mut self.0[i].2)
    }

    /// Stores every clock the batch moved.
    fn write(self, ctx: &WriteCtx<'_>) -> Result<(), StoreError> {
        if self.0.is_empty() {
            return Ok(());
        }
        let mut write = ctx
            .conn
            .prepare_cached(WRITE_CLOCK)
            .map_err(db_err("store a fair-share clock"))?;
        for (tenant, priority, clock) in self.0 {
            write
                .execute(params![tenant, priority.rank(), clock.next()])
                .map_err(db_err("store a fair-share clock"))?;
        }
        Ok(())
    }
}

/// `task_insert`: see [`insert_batch`].
pub(crate) fn task_insert(
    ctx: &mut WriteCtx<'_>,
    p: TaskInsertParams,
) -> Result<Vec<Inserted>, StoreError> {
    insert_batch(ctx, p.tasks, p.now)
}

/// Where a new task starts, by its dependencies' states (see `fabric_store::workflow`),
/// and the input it runs with.
struct Start {
    state: TaskState,
    input: Vec<u8>,
    error: Option<String>,
}

/// The state a new task starts in and its input: its dependencies (stored tasks of its
/// tenant, which include the batch's earlier tasks) decide, then its `run_at`.
fn start(ctx: &WriteCtx<'_>, i: usize, task: &mut NewTask, now: i64) -> Result<Start, StoreError> {
    let input = std::mem::take(&mut task.input);
    let mut start = Start {
        state: TaskState::Queued,
        input,
        error: None,
    };
    if !task.after.is_empty() {
        let states = dependency_states(ctx.conn, &task.tenant, &task.after)?;
        if let Some(missing) = task.after.iter().find(|id| !states.contains_key(*id)) {
            return Err(StoreError::UnknownDependency {
                index: i,
                tenant: task.tenant.clone(),
                id: missing.to_string(),
            });
        }
        match workflow::readiness(&task.after, |id| states.get(id).copied()) {
            Readiness::Waiting => start.state = TaskState::Waiting,
            Readiness::Blocked { dependency, state } => {
                start.state = TaskState::Cancelled;
                start.error = Some(workflow::dependency_error(&dependency, state));
            }
            Readiness::Ready if task.pass_outputs => {
                start.input = passed_input(ctx.conn, &start.input, &task.after, &states)?;
            }
            Readiness::Ready => {}
        }
    }
    if start.state == TaskState::Queued && task.run_at.is_some_and(|at| ms(at) > now) {
        start.state = TaskState::Scheduled;
    }
    Ok(start)
}

/// Inserts tasks in order, each seeing the ones before it: one row per task, deduplicated
/// by idempotency key per tenant, keyed for fair share between tenants (see
/// [`FairClock`]), starting where its dependencies put it. Any error leaves the caller to
/// roll the whole batch back.
pub(super) fn insert_batch(
    ctx: &mut WriteCtx<'_>,
    tasks: Vec<NewTask>,
    at: OffsetDateTime,
) -> Result<Vec<Inserted>, StoreError> {
    let now = ms(at);
    let mut out = Vec::with_capacity(tasks.len());
    let mut find = ctx
        .conn
        .prepare_cached("SELECT id, state FROM tasks WHERE tenant = ?1 AND idempotency_key = ?2")
        .map_err(db_err("look up an idempotency key"))?;
    let mut insert = ctx
        .conn
        .prepare_cached(INSERT_TASK)
        .map_err(db_err("insert a task"))?;
    let mut read_clock = ctx
        .conn
        .prepare_cached(READ_CLOCK)
        .map_err(db_err("read a fair-share clock"))?;
    let mut has_module = ctx
        .conn
        .prepare_cached("SELECT 1 FROM modules WHERE tenant = ?1 AND id = ?2")
        .map_err(db_err("look up a task's module"))?;
    let mut has_task = ctx
        .conn
        .prepare_cached("SELECT 1 FROM tasks WHERE id = ?1")
        .map_err(db_err("look up a task id"))?;
    let mut parent_depth = ctx
        .conn
        .prepare_cached("SELECT depth FROM tasks WHERE id = ?1 AND tenant = ?2")
        .map_err(db_err("look up a task's parent"))?;
    // The last (tenant, module) found stored: a batch usually names one.
    let mut known: Option<(String, fabric_types::ModuleId)> = None;
    let mut clocks = Clocks::default();
    for (i, mut task) in tasks.into_iter().enumerate() {
        if task.tenant.is_empty() {
            return Err(StoreError::InvalidArgument(format!(
                "tasks[{i}].tenant is empty"
            )));
        }
        workflow::check_new_task(i, &task)?;
        fabric_store::concurrency::check_concurrency(i, task.concurrency.as_ref())?;
        if let Some(key) = &task.idempotency_key {
            let found: Option<(String, String)> = find
                .query_row(params![task.tenant, key], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(db_err("look up an idempotency key"))?;
            if let Some((id, state)) = found {
                out.push(Inserted {
                    id: TaskId::from(id),
                    state: parse_state(&state)?,
                    deduplicated: true,
                });
                continue;
            }
        }
        if known.as_ref() != Some(&(task.tenant.clone(), task.module)) {
            let stored = has_module
                .exists(params![task.tenant, task.module.to_string()])
                .map_err(db_err("look up a task's module"))?;
            if !stored {
                return Err(StoreError::ModuleNotFound {
                    index: i,
                    tenant: task.tenant,
                    module: task.module.to_string(),
                });
            }
            known = Some((task.tenant.clone(), task.module));
        }
        let id = match task.id.take() {
            Some(id) => {
                let taken = has_task
                    .exists([id.as_str()])
                    .map_err(db_err("look up a task id"))?;
                if taken {
                    return Err(StoreError::DuplicateTaskId {
                        index: i,
                        id: id.into_string(),
                    });
                }
                id
            }
            None => TaskId::generate(at),
        };
        let depth = match &task.parent {
            None => 0,
            Some(parent) => {
                let depth: Option<i64> = parent_depth
                    .query_row(params![parent.as_str(), task.tenant], |r| r.get(0))
                    .optional()
                    .map_err(db_err("look up a task's parent"))?;
                let depth =
                    depth.ok_or_else(|| workflow::unknown_parent(i, &task.tenant, parent))?;
                workflow::child_depth(i, u32::try_from(depth).unwrap_or(u32::MAX))?
            }
        };
        let run_at = task.run_at.map(ms);
        let Start {
            state,
            input,
            error,
        } = start(ctx, i, &mut task, now)?;
        // Queued now, it joins the line now, whatever past run_at it named; scheduled, it
        // keeps its fair key while it waits and its promotion keeps it. A task that waits
        // for dependencies (or ended at once) takes no fair-share time: it is keyed when it
        // becomes ready.
        let sort_key = match state {
            TaskState::Queued | TaskState::Scheduled => {
                let ready = run_at.filter(|&at| at > now);
                let enqueued_at = clocks
                    .get(&mut read_clock, &task.tenant, task.priority, now)?
                    .take(ready.unwrap_or(now));
                Some(claim_sort_key(
                    enqueued_at,
                    task.priority,
                    ctx.aging_step_ms,
                ))
            }
            _ => None,
        };
        let limits = &task.limits;
        let priority = i64::from(task.priority.rank());
        insert
            .execute(params![
                id.as_str(),
                task.tenant,
                task.module.to_string(),
                input,
                priority,
                state.as_str(),
                to_i64(limits.fuel, "limits.fuel")?,
                to_i64(limits.memory_bytes, "limits.memory_bytes")?,
                to_i64(limits.timeout_ms, "limits.timeout_ms")?,
                to_i64(limits.output_bytes, "limits.output_bytes")?,
                to_i64(limits.log_bytes, "limits.log_bytes")?,
                task.retry.max_attempts,
                to_i64(task.retry.backoff_ms, "retry.backoff_ms")?,
                to_i64(task.retry.max_backoff_ms, "retry.max_backoff_ms")?,
                retry_on_text(&task.retry.retry_on),
                task.idempotency_key,
                run_at,
                task.deadline.map(ms),
                map_json(&task.env),
                map_json(&task.labels),
                now,
                sort_key,
                map_json(&task.dirs),
                fabric_store::egress_json::names_encode(&task.egress),
                fabric_store::telemetry_json::args_encode(&task.args),
                workflow::ids_encode(&task.after),
                task.pass_outputs,
                task.parent.as_ref().map(TaskId::as_str),
                depth,
                error,
                state.is_terminal().then_some(now),
                task.concurrency.as_ref().map(|c| c.key.as_str()),
                task.concurrency.as_ref().map(|c| c.limit),
            ])
            .map_err(db_err("insert a task"))?;
        if state == TaskState::Waiting {
            insert_edges(ctx.conn, id.as_str(), &task.after)?;
        }
        ctx.counts.add(&task.tenant, state, priority, 1);
        ctx.made_ready |= state == TaskState::Queued;
        out.push(Inserted {
            id,
            state,
            deduplicated: false,
        });
    }
    drop(read_clock);
    drop(has_module);
    drop(has_task);
    drop(parent_depth);
    clocks.write(ctx)?;
    Ok(out)
}
