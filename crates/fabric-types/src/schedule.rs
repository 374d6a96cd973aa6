//! The JSON shapes of the `schedule.*` methods (docs/api.md, "Schedules").

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::wire::TaskSpec;

/// `schedule.put` params: a cron schedule (upserted by name) that submits `task` at each
/// tick, in `timezone` (an IANA name; UTC when absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulePut {
    pub name: String,
    pub cron: String,
    pub task: TaskSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// `schedule.get` and `schedule.delete` params.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleName {
    pub name: String,
}

/// A schedule as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub name: String,
    pub cron: String,
    pub task: TaskSpec,
    pub timezone: String,
    /// The next tick that fires.
    #[serde(with = "crate::millis")]
    pub next_run_at: OffsetDateTime,
    /// The id of the task the last firing created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_task: Option<String>,
}

/// `schedule.list` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleList {
    pub schedules: Vec<Schedule>,
}
