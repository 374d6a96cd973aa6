//! The storage trait of the Execution Fabric: tasks, their attempts and leases, and
//! modules, behind one object-safe async interface that every backend implements.
//!
//! Design rules every backend follows (and the [`testkit`] conformance suite checks, with
//! the `testkit` feature):
//!
//! - **Tenant on everything** a client reaches: another tenant's task or module is simply
//!   not found. `tenant: None` is the admin view.
//! - **Injected clock**: every method whose effect depends on time takes `now` in its
//!   params; a store never reads the system clock.
//! - **Claims with leases, fenced by attempt id**: a claim creates an attempt that holds its
//!   task until the lease ends; heartbeats renew it; a completion is applied only while its
//!   attempt still holds the task, so a task rescued from a dead worker is never finalized
//!   twice. Several nodes may claim from one database at once.
//! - Timestamps are kept with millisecond precision.
//! - **Rollups for reports**: the transactions that end attempts also add them to hourly
//!   KPI and usage rollups ([`rollup`]), which queries read instead of attempts, and which
//!   outlive task pruning.

#[cfg(feature = "bench")]
pub mod bench;
pub mod concurrency;
pub mod egress_json;
mod error;
mod id;
mod model;
mod report;
pub mod rollup;
pub mod rules;
mod schedule;
pub mod telemetry_json;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod workflow;

use std::fmt::Debug;

use async_trait::async_trait;
use time::OffsetDateTime;

pub use error::{BoxError, Result, StoreError};
pub use id::{AttemptId, TaskId};
pub use model::{
    AGING_STEP_MS, AttemptRecord, Capabilities, Claimed, ClaimedTask, Completed, Completion,
    FairClock, Heartbeat, Inserted, LeaderAcquireParams, LeaderReleaseParams, ModuleDeleteParams,
    ModuleDeleted, ModuleGetParams, ModuleInfo, ModuleKind, ModuleListParams, ModulePutParams,
    ModuleRecord, ModuleRef, NewTask, Next, Rescued, Stats, StatsParams, TaskCancelParams,
    TaskClaimParams, TaskCompleteParams, TaskExpireParams, TaskGetParams, TaskHeartbeatParams,
    TaskInsertParams, TaskListParams, TaskPage, TaskPromoteParams, TaskPruneParams, TaskRecord,
    TaskRescueParams, TenantCap, claim_sort_key, from_millis, to_millis,
};
pub use report::{
    KpiAggregate, KpiQueryParams, ProgressUpdate, TaskProgressParams, UsageAggregate,
    UsageReportParams,
};
pub use schedule::{
    ScheduleAdvanceParams, ScheduleDeleteParams, ScheduleDueParams, ScheduleGetParams,
    ScheduleListParams, SchedulePut, SchedulePutParams, ScheduleRecord,
};

/// The durable home of modules, tasks and attempts. Object-safe: hold it as
/// `Arc<dyn Store>`. Every write is committed before its future resolves.
#[async_trait]
pub trait Store: Send + Sync + Debug {
    /// What this backend can do; see [`Capabilities`].
    fn capabilities(&self) -> Capabilities;

    /// The aging step this store orders claims with; see [`claim_sort_key`].
    fn aging_step_ms(&self) -> u64;

    /// A counter that goes up whenever tasks become claimable (inserted queued, promoted,
    /// retried or requeued for now, rescued): a dispatcher waits on `changed()` instead of
    /// sleeping. See [`Capabilities::listen_notify`] for whether other nodes' writes count.
    fn ready_signal(&self) -> tokio::sync::watch::Receiver<u64>;

    /// Stores a module (idempotent per tenant and id) and points its name at it.
    async fn module_put(&self, params: ModulePutParams) -> Result<ModuleInfo>;

    /// One module of one tenant, by id or by name, with its bytes.
    async fn module_get(&self, params: ModuleGetParams) -> Result<Option<ModuleRecord>>;

    /// A tenant's modules, oldest first, without their bytes.
    async fn module_list(&self, params: ModuleListParams) -> Result<Vec<ModuleInfo>>;

    /// Deletes a module unless an unfinished task uses it (see [`ModuleDeleteParams`]).
    async fn module_delete(&self, params: ModuleDeleteParams) -> Result<ModuleDeleted>;

    /// Inserts a batch of tasks in one transaction; one [`Inserted`] per task, in order.
    /// A task whose module its tenant does not store fails the whole batch with
    /// [`StoreError::ModuleNotFound`], checked in the same transaction as the insert (so
    /// it cannot pass a concurrent [`Store::module_delete`]).
    async fn task_insert(&self, params: TaskInsertParams) -> Result<Vec<Inserted>>;

    /// One task with all its attempts.
    async fn task_get(&self, params: TaskGetParams) -> Result<Option<TaskRecord>>;

    /// A page of tasks, newest first, by keyset pagination.
    async fn task_list(&self, params: TaskListParams) -> Result<TaskPage>;

    /// Moves up to `max` queued tasks to `running` in claim order, each under a new attempt
    /// holding a lease until `now + lease`. A queued task whose deadline has passed is
    /// expired instead of claimed, and named in [`Claimed::expired`]. No task is ever
    /// handed to two claimers.
    async fn task_claim(&self, params: TaskClaimParams) -> Result<Claimed>;

    /// Renews the leases of the attempts that still hold their tasks.
    async fn task_heartbeat(&self, params: TaskHeartbeatParams) -> Result<Heartbeat>;

    /// Records the ends of attempts, fenced by attempt id; one [`Completed`] per completion.
    async fn task_complete(&self, params: TaskCompleteParams) -> Result<Vec<Completed>>;

    /// Cancels a task (see [`TaskCancelParams`]); `None` when not found.
    async fn task_cancel(&self, params: TaskCancelParams) -> Result<Option<TaskRecord>>;

    /// Takes back tasks whose lease expired (see [`TaskRescueParams`]).
    async fn task_rescue(&self, params: TaskRescueParams) -> Result<Vec<Rescued>>;

    /// Moves due `scheduled` tasks to `queued`; returns their ids.
    async fn task_promote(&self, params: TaskPromoteParams) -> Result<Vec<TaskId>>;

    /// Expires waiting tasks whose deadline passed; returns their ids.
    async fn task_expire(&self, params: TaskExpireParams) -> Result<Vec<TaskId>>;

    /// Deletes old terminal tasks; returns how many.
    async fn task_prune(&self, params: TaskPruneParams) -> Result<u64>;

    /// Takes or renews the maintenance leadership (see [`LeaderAcquireParams`]); `true`
    /// while `params.node` holds it. A store only one process opens (SQLite) answers
    /// `true` at once. Leadership saves work, it is not needed for safety: rescue, expiry
    /// and pruning stay correct when two nodes run them at once.
    async fn leader_acquire(&self, params: LeaderAcquireParams) -> Result<bool>;

    /// Gives up the maintenance leadership; `true` when `params.node` held it.
    async fn leader_release(&self, params: LeaderReleaseParams) -> Result<bool>;

    /// Records the progress running attempts reported, fenced by attempt id (see
    /// [`TaskProgressParams`]); returns how many updates were applied.
    async fn task_progress(&self, params: TaskProgressParams) -> Result<u64>;

    /// KPI stats from the hourly rollup (see [`KpiQueryParams`]), ordered by the grouping
    /// dimension, then KPI name.
    async fn kpi_query(&self, params: KpiQueryParams) -> Result<Vec<KpiAggregate>>;

    /// What attempts used, from the hourly rollup (see [`UsageReportParams`]), ordered by
    /// the grouping dimension.
    async fn usage_report(&self, params: UsageReportParams) -> Result<Vec<UsageAggregate>>;

    /// Task counts by state.
    async fn stats(&self, params: StatsParams) -> Result<Stats>;

    /// The earliest `run_at` among `scheduled` tasks (possibly already past), so a
    /// scheduler can sleep exactly until the next promotion is due; `None` when nothing is
    /// scheduled.
    async fn next_wakeup(&self) -> Result<Option<OffsetDateTime>>;

    /// Creates or replaces a cron schedule (see [`SchedulePutParams`]).
    async fn schedule_put(&self, params: SchedulePutParams) -> Result<SchedulePut>;

    /// One schedule of one tenant.
    async fn schedule_get(&self, params: ScheduleGetParams) -> Result<Option<ScheduleRecord>>;

    /// A tenant's schedules, by name.
    async fn schedule_list(&self, params: ScheduleListParams) -> Result<Vec<ScheduleRecord>>;

    /// Deletes a schedule; `true` when it existed.
    async fn schedule_delete(&self, params: ScheduleDeleteParams) -> Result<bool>;

    /// The schedules due to fire (see [`ScheduleDueParams`]).
    async fn schedule_due(&self, params: ScheduleDueParams) -> Result<Vec<ScheduleRecord>>;

    /// Moves a schedule past a fired tick, if no one did (see [`ScheduleAdvanceParams`]);
    /// `true` when this call moved it.
    async fn schedule_advance(&self, params: ScheduleAdvanceParams) -> Result<bool>;

    /// The earliest `next_run_at` of any tenant's schedule, so the firing loop can sleep
    /// until then; `None` without schedules.
    async fn schedule_next_due(&self) -> Result<Option<OffsetDateTime>>;
}
