//! A `Store` decorator that measures the latency of every write (each one a committed
//! transaction, or a share of a group commit) for `fabric_store_commit_duration_seconds`,
//! and keeps whether the store's disk is full for `/readyz`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use fabric_store::*;
use time::OffsetDateTime;

use crate::metrics::{Metrics, StoreOp};

/// Wraps a store; reads pass straight through, writes are timed.
#[derive(Debug)]
pub struct TimedStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    full: Arc<AtomicBool>,
}

impl TimedStore {
    /// `full` is set when a write finds the disk full, and cleared when a write that
    /// stores rows (a module, tasks, completions) succeeds again.
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>, full: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            metrics,
            full,
        }
    }

    async fn timed<T>(&self, op: StoreOp, write: impl Future<Output = Result<T>>) -> Result<T> {
        let started = Instant::now();
        let result = write.await;
        self.metrics.store_op(op, started.elapsed());
        match &result {
            Err(StoreError::Full { .. }) => self.full.store(true, Ordering::Relaxed),
            // Maintenance and empty claims can succeed on a full disk: they write nothing.
            Ok(_) if matches!(op, StoreOp::ModulePut | StoreOp::Insert | StoreOp::Complete) => {
                self.full.store(false, Ordering::Relaxed)
            }
            _ => {}
        }
        result
    }
}

#[async_trait]
impl Store for TimedStore {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn aging_step_ms(&self) -> u64 {
        self.inner.aging_step_ms()
    }

    fn ready_signal(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.ready_signal()
    }

    async fn module_put(&self, params: ModulePutParams) -> Result<ModuleInfo> {
        self.timed(StoreOp::ModulePut, self.inner.module_put(params))
            .await
    }

    async fn module_get(&self, params: ModuleGetParams) -> Result<Option<ModuleRecord>> {
        self.inner.module_get(params).await
    }

    async fn module_list(&self, params: ModuleListParams) -> Result<Vec<ModuleInfo>> {
        self.inner.module_list(params).await
    }

    async fn module_delete(&self, params: ModuleDeleteParams) -> Result<ModuleDeleted> {
        self.inner.module_delete(params).await
    }

    async fn task_insert(&self, params: TaskInsertParams) -> Result<Vec<Inserted>> {
        self.timed(StoreOp::Insert, self.inner.task_insert(params))
            .await
    }

    async fn task_progress(&self, params: TaskProgressParams) -> Result<u64> {
        self.inner.task_progress(params).await
    }

    async fn kpi_query(&self, params: KpiQueryParams) -> Result<Vec<KpiAggregate>> {
        self.inner.kpi_query(params).await
    }

    async fn usage_report(&self, params: UsageReportParams) -> Result<Vec<UsageAggregate>> {
        self.inner.usage_report(params).await
    }

    async fn leader_acquire(&self, params: LeaderAcquireParams) -> Result<bool> {
        self.inner.leader_acquire(params).await
    }

    async fn leader_release(&self, params: LeaderReleaseParams) -> Result<bool> {
        self.inner.leader_release(params).await
    }

    async fn task_get(&self, params: TaskGetParams) -> Result<Option<TaskRecord>> {
        self.inner.task_get(params).await
    }

    async fn task_list(&self, params: TaskListParams) -> Result<TaskPage> {
        self.inner.task_list(params).await
    }

    async fn task_claim(&self, params: TaskClaimParams) -> Result<Claimed> {
        self.timed(StoreOp::Claim, self.inner.task_claim(params))
            .await
    }

    async fn task_heartbeat(&self, params: TaskHeartbeatParams) -> Result<Heartbeat> {
        self.timed(StoreOp::Heartbeat, self.inner.task_heartbeat(params))
            .await
    }

    async fn task_complete(&self, params: TaskCompleteParams) -> Result<Vec<Completed>> {
        self.timed(StoreOp::Complete, self.inner.task_complete(params))
            .await
    }

    async fn task_cancel(&self, params: TaskCancelParams) -> Result<Option<TaskRecord>> {
        self.timed(StoreOp::Cancel, self.inner.task_cancel(params))
            .await
    }

    async fn task_rescue(&self, params: TaskRescueParams) -> Result<Vec<Rescued>> {
        self.timed(StoreOp::Maintenance, self.inner.task_rescue(params))
            .await
    }

    async fn task_promote(&self, params: TaskPromoteParams) -> Result<Vec<TaskId>> {
        self.timed(StoreOp::Maintenance, self.inner.task_promote(params))
            .await
    }

    async fn task_expire(&self, params: TaskExpireParams) -> Result<Vec<TaskId>> {
        self.timed(StoreOp::Maintenance, self.inner.task_expire(params))
            .await
    }

    async fn task_prune(&self, params: TaskPruneParams) -> Result<u64> {
        self.timed(StoreOp::Maintenance, self.inner.task_prune(params))
            .await
    }

    async fn stats(&self, params: StatsParams) -> Result<Stats> {
        self.inner.stats(params).await
    }

    async fn next_wakeup(&self) -> Result<Option<OffsetDateTime>> {
        self.inner.next_wakeup().await
    }

    async fn schedule_put(&self, params: SchedulePutParams) -> Result<SchedulePut> {
        self.inner.schedule_put(params).await
    }

    async fn schedule_get(&self, params: ScheduleGetParams) -> Result<Option<ScheduleRecord>> {
        self.inner.schedule_get(params).await
    }

    async fn schedule_list(&self, params: ScheduleListParams) -> Result<Vec<ScheduleRecord>> {
        self.inner.schedule_list(params).await
    }

    async fn schedule_delete(&self, params: ScheduleDeleteParams) -> Result<bool> {
        self.inner.schedule_delete(params).await
    }

    async fn schedule_due(&self, params: ScheduleDueParams) -> Result<Vec<ScheduleRecord>> {
        self.inner.schedule_due(params).await
    }

    async fn schedule_advance(&self, params: ScheduleAdvanceParams) -> Result<bool> {
        self.inner.schedule_advance(params).await
    }

    async fn schedule_next_due(&self) -> Result<Option<OffsetDateTime>> {
        self.inner.schedule_next_due().await
    }
}
