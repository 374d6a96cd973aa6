//! Writes that add: a module, and a batch of tasks keyed for fair share.

use fabric_store::{
    FairClock, Inserted, ModuleInfo, ModulePutParams, StoreError, TaskId, TaskInsertParams,
    claim_sort_key,
};
use fabric_types::{Priority, TaskState};
use rusqlite::{OptionalExtension, params};

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

/// `task_insert`: one row per task, deduplicated by idempotency key per tenant, keyed for
/// fair share between tenants (see [`FairClock`]).
pub(crate) fn task_insert(
    ctx: &mut WriteCtx<'_>,
    p: TaskInsertParams,
) -> Result<Vec<Inserted>, StoreError> {
    let now = ms(p.now);
    let mut out = Vec::with_capacity(p.tasks.len());
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
    // The last (tenant, module) found stored: a batch usually names one.
    let mut known: Option<(String, fabric_types::ModuleId)> = None;
    let mut clocks = Clocks::default();
    for (i, task) in p.tasks.into_iter().enumerate() {
        if task.tenant.is_empty() {
            return Err(StoreError::InvalidArgument(format!(
                "tasks[{i}].tenant is empty"
            )));
        }
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
        let run_at = task.run_at.map(ms);
        // Queued now, it joins the line now, whatever past run_at it named; scheduled, it
        // keeps its fair key while it waits and its promotion keeps it.
        let ready = run_at.filter(|&at| at > now);
        let scheduled = ready.is_some();
        let state = if scheduled {
            TaskState::Scheduled
        } else {
            TaskState::Queued
        };
        let enqueued_at = clocks
            .get(&mut read_clock, &task.tenant, task.priority, now)?
            .take(ready.unwrap_or(now));
        let sort_key = claim_sort_key(enqueued_at, task.priority, ctx.aging_step_ms);
        let id = TaskId::generate(p.now);
        let limits = &task.limits;
        let priority = i64::from(task.priority.rank());
        insert
            .execute(params![
                id.as_str(),
                task.tenant,
                task.module.to_string(),
                task.input,
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
                task.trace,
            ])
            .map_err(db_err("insert a task"))?;
        ctx.counts.add(&task.tenant, state, priority, 1);
        ctx.made_ready |= !scheduled;
        out.push(Inserted {
            id,
            state,
            deduplicated: false,
        });
    }
    drop(read_clock);
    drop(has_module);
    clocks.write(ctx)?;
    Ok(out)
}
