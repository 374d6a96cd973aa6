//! Task counts per tenant, state and priority in `task_counts`, changed by every write in the
//! same transaction as the rows it counts, so `stats` reads a handful of rows, not every task.

use std::collections::HashMap;

use fabric_store::{Stats, StoreError};
use fabric_types::TaskState;
use rusqlite::{Connection, params};

use crate::db_err;
use crate::rows::{parse_priority, parse_state};

/// The states a count is kept for, in the order of [`CountChanges`]' arrays.
const STATES: [TaskState; TaskState::ALL.len()] = TaskState::ALL;

/// Priorities are ranks 0 to 4.
const PRIORITIES: usize = 5;

fn slot(state: TaskState, priority: i64) -> Option<usize> {
    let state = STATES.iter().position(|s| *s == state)?;
    let priority = usize::try_from(priority).ok().filter(|p| *p < PRIORITIES)?;
    Some(state * PRIORITIES + priority)
}

/// The count changes one write operation made, applied when it succeeds (inside its
/// savepoint, so a failed operation changes no count). Kept per tenant in an array by state
/// and priority, so that counting a task allocates nothing once its tenant is known.
#[derive(Debug, Default, Clone)]
pub(crate) struct CountChanges {
    by_tenant: HashMap<String, [i64; STATES.len() * PRIORITIES]>,
}

impl CountChanges {
    /// A task of `tenant` and `priority` appeared in `state` (`delta` 1) or left it (-1).
    /// A priority outside 0..=4 cannot be stored (the table's CHECK refuses it).
    pub(crate) fn add(&mut self, tenant: &str, state: TaskState, priority: i64, delta: i64) {
        let Some(slot) = slot(state, priority) else {
            return;
        };
        match self.by_tenant.get_mut(tenant) {
            Some(counts) => counts[slot] += delta,
            None => {
                let mut counts = [0; STATES.len() * PRIORITIES];
                counts[slot] = delta;
                self.by_tenant.insert(tenant.to_owned(), counts);
            }
        }
    }

    /// A task moved from one state to another.
    pub(crate) fn moved(&mut self, tenant: &str, priority: i64, from: TaskState, to: TaskState) {
        if from != to {
            self.add(tenant, from, priority, -1);
            self.add(tenant, to, priority, 1);
        }
    }

    /// Forgets every change (the operation that made them was rolled back).
    pub(crate) fn clear(&mut self) {
        self.by_tenant.clear();
    }

    /// Writes the changes to `task_counts` and forgets them.
    pub(crate) fn apply(&mut self, conn: &Connection) -> Result<(), StoreError> {
        if self.by_tenant.is_empty() {
            return Ok(());
        }
        let mut upsert = conn
            .prepare_cached(
                "INSERT INTO task_counts (tenant, state, priority, n) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (tenant, state, priority) DO UPDATE SET n = n + excluded.n",
            )
            .map_err(db_err("count tasks"))?;
        for (tenant, counts) in self.by_tenant.drain() {
            for (slot, delta) in counts.into_iter().enumerate() {
                if delta != 0 {
                    let state = STATES[slot / PRIORITIES].as_str();
                    let priority = (slot % PRIORITIES) as i64;
                    upsert
                        .execute(params![tenant, state, priority, delta])
                        .map_err(db_err("count tasks"))?;
                }
            }
        }
        Ok(())
    }
}

/// Task counts by state, for one tenant or (with `None`) all of them.
pub(crate) fn stats(conn: &Connection, tenant: Option<&str>) -> Result<Stats, StoreError> {
    let counts: Vec<(String, i64, i64)> = match tenant {
        None => conn
            .prepare_cached(
                "SELECT state, priority, sum(n) FROM task_counts GROUP BY state, priority",
            )
            .and_then(|mut s| {
                s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            }),
        Some(tenant) => conn
            .prepare_cached("SELECT state, priority, n FROM task_counts WHERE tenant = ?1")
            .and_then(|mut s| {
                s.query_map([tenant], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            }),
    }
    .map_err(db_err("count tasks"))?;
    let mut stats = Stats::default();
    for (state, priority, count) in counts {
        let count = count.max(0) as u64;
        stats.add(parse_state(&state)?, parse_priority(priority)?, count);
    }
    Ok(stats)
}
