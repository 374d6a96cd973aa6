//! Cron schedules as a store keeps them: one row per tenant and name, with the tick that
//! fires next. The store knows nothing of cron: the server computes every tick and fires
//! each by inserting a task (idempotent per tick) and advancing the schedule with
//! [`Store::schedule_advance`](crate::Store::schedule_advance), a compare-and-set on the
//! tick, so nodes that fire the same tick at once agree on one outcome.

use time::OffsetDateTime;

use crate::TaskId;

/// A stored schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRecord {
    pub tenant: String,
    pub name: String,
    /// The cron expression, as given.
    pub cron: String,
    /// The IANA time zone its local times are in.
    pub timezone: String,
    /// The task to submit at each tick: a `TaskSpec` as JSON text (the server's to read).
    pub task: String,
    /// The tick that fires next.
    pub next_run_at: OffsetDateTime,
    /// The task the last firing created.
    pub last_task: Option<TaskId>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// Creates or replaces the schedule `name` of `tenant` (an update keeps `created_at` and
/// `last_task`), unless it is new and the tenant already has `max_per_tenant` schedules:
/// the count and the write are one transaction, exact across nodes.
#[derive(Debug, Clone)]
pub struct SchedulePutParams {
    pub tenant: String,
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub task: String,
    pub next_run_at: OffsetDateTime,
    pub max_per_tenant: usize,
    pub now: OffsetDateTime,
}

/// What became of a [`SchedulePutParams`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchedulePut {
    /// Stored (created or replaced); this is it now.
    Stored(ScheduleRecord),
    /// Not stored: the tenant already has `count` schedules, its limit.
    TooMany { count: u64 },
}

/// One schedule of one tenant, by name.
#[derive(Debug, Clone)]
pub struct ScheduleGetParams {
    pub tenant: String,
    pub name: String,
}

/// A tenant's schedules, by name.
#[derive(Debug, Clone)]
pub struct ScheduleListParams {
    pub tenant: String,
}

/// Deletes one schedule of one tenant; the tasks it created stay.
#[derive(Debug, Clone)]
pub struct ScheduleDeleteParams {
    pub tenant: String,
    pub name: String,
}

/// The schedules of every tenant whose `next_run_at` is not after `now`, earliest first, at
/// most `max`.
#[derive(Debug, Clone, Copy)]
pub struct ScheduleDueParams {
    pub now: OffsetDateTime,
    pub max: usize,
}

/// Moves a schedule on from the tick `from` (its `next_run_at` when it was read) to `to`,
/// recording `last_task` when given (a firing without a task keeps the old one). Applied
/// only while the schedule's `next_run_at` still equals `from`: of several nodes firing
/// the same tick, one advances it and the others find it moved (or replaced, or deleted).
#[derive(Debug, Clone)]
pub struct ScheduleAdvanceParams {
    pub tenant: String,
    pub name: String,
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
    pub last_task: Option<TaskId>,
    pub now: OffsetDateTime,
}
