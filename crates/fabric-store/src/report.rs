//! The params and records of the reporting methods: progress a running attempt reports, and
//! the KPI and usage rollups a server queries.

use fabric_types::wire::{KpiGroup, UsageGroup};
use fabric_types::{ModuleId, Progress, check_progress};
use time::OffsetDateTime;

use crate::{AttemptId, StoreError};

/// One attempt's latest progress.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressUpdate {
    pub attempt_id: AttemptId,
    pub progress: Progress,
}

/// Records progress on the tasks of running attempts, all in one transaction, each fenced
/// by its attempt id: an update is applied only while its attempt still holds its task (the
/// task is `running` under it); the others are dropped. A later update of the same attempt
/// in one call replaces an earlier one. A claim clears a task's progress; completion keeps
/// it, so a finished task shows the last progress its last attempt reported.
#[derive(Debug, Clone, Default)]
pub struct TaskProgressParams {
    pub updates: Vec<ProgressUpdate>,
}

impl TaskProgressParams {
    /// The updates a backend applies: checked (`done` within 0.0..=1.0, a short message),
    /// the last one of each attempt, in the order each attempt first appears.
    pub fn last_per_attempt(self) -> Result<Vec<ProgressUpdate>, StoreError> {
        let mut out: Vec<ProgressUpdate> = Vec::with_capacity(self.updates.len());
        for (i, update) in self.updates.into_iter().enumerate() {
            check_progress(update.progress.done, &update.progress.message).map_err(|why| {
                StoreError::InvalidArgument(format!("updates[{i}].progress: {why}"))
            })?;
            match out.iter_mut().find(|u| u.attempt_id == update.attempt_id) {
                Some(earlier) => *earlier = update,
                None => out.push(update),
            }
        }
        Ok(out)
    }
}

/// Queries the hourly KPI rollup. Rows group by KPI name plus the `group_by` dimension
/// (module, with the name that points at it; tenant; or hour).
///
/// The rollup holds the KPIs of every attempt recorded by `task_complete`, whatever its
/// outcome, under the UTC hour of the completion's `now`. A requeued attempt is deleted and
/// its KPIs are discarded; a lost attempt reported none. The rollup is not pruned with
/// tasks.
#[derive(Debug, Clone, Default)]
pub struct KpiQueryParams {
    /// `None` is the admin view (every tenant); otherwise only this tenant's KPIs.
    pub tenant: Option<String>,
    pub module: Option<ModuleId>,
    /// Only this KPI.
    pub name: Option<String>,
    /// Completions at or after this instant, rounded down to its hour.
    pub since: Option<OffsetDateTime>,
    /// Completions before this instant, rounded up to an hour.
    pub until: Option<OffsetDateTime>,
    pub group_by: KpiGroup,
}

/// One row of a KPI query: the stats of one KPI name in one group. Only the `group_by`
/// dimension is set (module and module name together).
#[derive(Debug, Clone, PartialEq)]
pub struct KpiAggregate {
    pub module: Option<ModuleId>,
    /// The name that currently points at `module` for its tenant, if any (the smallest, when
    /// several do).
    pub module_name: Option<String>,
    pub tenant: Option<String>,
    /// The start of the hour (UTC).
    pub hour: Option<OffsetDateTime>,
    pub name: String,
    /// How many values were recorded.
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl KpiAggregate {
    /// The mean of the recorded values (0 when none were).
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }
}

/// Reports what attempts used, for billing, from the hourly usage rollup.
///
/// The rollup counts every attempt that ended: each completion `task_complete` accepted,
/// including requeued attempts (the guest did run, though the task does not count the
/// attempt), with its usage; and each attempt `task_rescue` recorded `lost`, with zero usage
/// (what the guest used is unknown). Counts saturate at `i64::MAX`. The rollup is not pruned
/// with tasks: billing outlives task retention.
#[derive(Debug, Clone, Default)]
pub struct UsageReportParams {
    /// `None` is the admin view (every tenant); otherwise only this tenant's usage.
    pub tenant: Option<String>,
    /// Attempts ended at or after this instant, rounded down to its hour.
    pub since: Option<OffsetDateTime>,
    /// Attempts ended before this instant, rounded up to an hour.
    pub until: Option<OffsetDateTime>,
    pub group_by: UsageGroup,
}

/// One row of a usage report. Only the `group_by` dimension is set (module and module name
/// together).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageAggregate {
    pub tenant: Option<String>,
    pub module: Option<ModuleId>,
    pub module_name: Option<String>,
    /// The day (UTC), `YYYY-MM-DD`.
    pub day: Option<String>,
    pub attempts: u64,
    pub fuel_consumed: u64,
    pub wall_ms: u64,
    /// Each attempt's peak memory times its wall time ([`fabric_types::Usage::memory_byte_seconds`]), summed.
    pub memory_byte_seconds: u64,
    pub http_requests: u64,
    pub http_bytes_sent: u64,
    pub http_bytes_received: u64,
}
