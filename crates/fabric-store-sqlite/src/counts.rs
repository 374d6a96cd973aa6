//! Task counts per tenant, state and priority in `task_counts`, changed by every write in the
//! same transaction as the rows it counts, so `stats` reads a handful of rows, not every task.

use std::collections::HashMap;

use fabric_store::{Stats, StoreError};
use fabric_types::TaskState;
use rusqlite::{Connection, params};

use crate::db_err;
use crate::rows::{parse_priority, parse_state};

/// The count changes one write operation made, applied when it succeeds (inside its
/// savepoint, so a failed operation changes no count).
#[derive(Debug, Default)]
pub(crate) struct CountChanges {
    by_key: HashMap<(String, TaskState, i64), i64>,
}

impl CountChanges {
    /// A task of `tenant` and `priority` appeared in `state` (`delta` 1) or left it (-1).
    pub(crate) fn add(&mut self, tenant: &str, state: TaskState, priority: i64, delta: i64) {
        *self
            .by_key
            .entry((tenant.to_owned(), state, priority))
            .or_default() += delta;
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
        self.by_key.clear();
    }

    /// Writes the changes to `task_counts` and forgets them.
    pub(crate) fn apply(&mut self, conn: &Connection) -> Result<(), StoreError> {
        if self.by_key.is_empty() {
            return Ok(());
        }
        let mut upsert = conn
            .prepare_cached(
                "INSERT INTO task_counts (tenant, state, priority, n) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (tenant, state, priority) DO UPDATE SET n = n + excluded.n",
            )
            .map_err(db_err("count tasks"))?;
        for ((tenant, state, priority), delta) in self.by_key.drain() {
            if delta != 0 {
                upsert
                    .execute(params![tenant, state.as_str(), priority, delta])
                    .map_err(db_err("count tasks"))?;
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
        match parse_state(&state)? {
            TaskState::Queued => {
                stats.queued_by_priority[usize::from(parse_priority(priority)?.rank())] += count
            }
            TaskState::Scheduled => stats.scheduled += count,
            TaskState::Running => stats.running += count,
            TaskState::Succeeded => stats.succeeded += count,
            TaskState::Failed => stats.failed += count,
            TaskState::Cancelled => stats.cancelled += count,
            TaskState::Expired => stats.expired += count,
        }
    }
    Ok(stats)
}
