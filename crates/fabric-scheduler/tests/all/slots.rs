//! Worker slots: a slot is held while a guest runs, not while its completion waits for the
//! store.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fabric_scheduler::{Scheduler, SystemClock};
use fabric_store::*;
use fabric_types::TaskState;
use time::OffsetDateTime;
use tokio::sync::Semaphore;

use crate::util::*;

/// A store whose completions wait until the test lets them through; everything else
/// passes straight to the SQLite store inside.
#[derive(Debug)]
struct HeldCompletions {
    inner: Arc<dyn Store>,
    gate: Semaphore,
}

impl HeldCompletions {
    fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            gate: Semaphore::new(0),
        }
    }

    /// Lets every completion, waiting or to come, through.
    fn release(&self) {
        self.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }
}

#[async_trait]
impl Store for HeldCompletions {
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
        self.inner.module_put(params).await
    }

    async fn module_get(&self, params: ModuleGetParams) -> Result<Option<ModuleRecord>> {
        self.inner.module_get(params).await
    }

    async fn module_delete(&self, params: ModuleDeleteParams) -> Result<ModuleDeleted> {
        self.inner.module_delete(params).await
    }

    async fn module_list(&self, params: ModuleListParams) -> Result<Vec<ModuleInfo>> {
        self.inner.module_list(params).await
    }

    async fn task_insert(&self, params: TaskInsertParams) -> Result<Vec<Inserted>> {
        self.inner.task_insert(params).await
    }

    async fn task_get(&self, params: TaskGetParams) -> Result<Option<TaskRecord>> {
        self.inner.task_get(params).await
    }

    async fn task_list(&self, params: TaskListParams) -> Result<TaskPage> {
        self.inner.task_list(params).await
    }

    async fn task_claim(&self, params: TaskClaimParams) -> Result<Claimed> {
        self.inner.task_claim(params).await
    }

    async fn task_heartbeat(&self, params: TaskHeartbeatParams) -> Result<Heartbeat> {
        self.inner.task_heartbeat(params).await
    }

    async fn task_complete(&self, params: TaskCompleteParams) -> Result<Vec<Completed>> {
        let _pass = self.gate.acquire().await.expect("the gate is never closed");
        self.inner.task_complete(params).await
    }

    async fn task_cancel(&self, params: TaskCancelParams) -> Result<Option<TaskRecord>> {
        self.inner.task_cancel(params).await
    }

    async fn task_rescue(&self, params: TaskRescueParams) -> Result<Vec<Rescued>> {
        self.inner.task_rescue(params).await
    }

    async fn task_promote(&self, params: TaskPromoteParams) -> Result<Vec<TaskId>> {
        self.inner.task_promote(params).await
    }

    async fn task_expire(&self, params: TaskExpireParams) -> Result<Vec<TaskId>> {
        self.inner.task_expire(params).await
    }

    async fn task_prune(&self, params: TaskPruneParams) -> Result<u64> {
        self.inner.task_prune(params).await
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

/// One worker, two tasks, and the first task's completion held back by the store: the
/// second task still runs, because the first's slot came free when its guest ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_is_free_while_its_completion_waits_for_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = open_store(dir.path());
    let store = Arc::new(HeldCompletions::new(sqlite.clone()));
    let scheduler =
        Scheduler::start(config(1), store.clone(), sandbox(), Arc::new(SystemClock)).unwrap();
    let mut events = scheduler.subscribe();
    let echo = put_module(&*sqlite, fabric_agents::p1::ECHO).await;
    let first = insert(&*sqlite, task(echo, "first")).await;
    let second = insert(&*sqlite, task(echo, "second")).await;
    scheduler.wake();

    let mut started = HashSet::new();
    let both_started = async {
        while started.len() < 2 {
            let event = events.recv().await.expect("scheduler events");
            if event.state == TaskState::Running {
                started.insert(event.task_id);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), both_started)
        .await
        .expect("the second task did not start while the first's completion was held");
    assert_eq!(
        get(&*sqlite, &first).await.state,
        TaskState::Running,
        "the first task's completion cannot have been written yet"
    );

    store.release();
    for id in [&first, &second] {
        let done = wait_finished(&*sqlite, &scheduler, id).await;
        assert_eq!(done.state, TaskState::Succeeded);
        assert_eq!(outcomes(&done), ["ok"]);
    }
    scheduler.shutdown(Duration::from_secs(5)).await;
}

/// One worker, eight tasks, every completion held back: the queue of unwritten
/// completions is bounded (two per worker slot), so the slot stops coming free and the
/// rest wait in the store instead of running and piling up their results in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritten_completions_are_bounded_while_the_store_lags() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = open_store(dir.path());
    let store = Arc::new(HeldCompletions::new(sqlite.clone()));
    let scheduler =
        Scheduler::start(config(1), store.clone(), sandbox(), Arc::new(SystemClock)).unwrap();
    let mut events = scheduler.subscribe();
    let echo = put_module(&*sqlite, fabric_agents::p1::ECHO).await;
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(insert(&*sqlite, task(echo, &format!("task {i}"))).await);
    }
    scheduler.wake();

    // Count starts: at least two (the slot comes free while the first completion is
    // held), then until none has come for 300 ms.
    let mut started = HashSet::new();
    let mut quiet_for = Duration::from_secs(10);
    while let Ok(event) = tokio::time::timeout(quiet_for, events.recv()).await {
        let event = event.expect("scheduler events");
        if event.state == TaskState::Running {
            started.insert(event.task_id);
        }
        if started.len() >= 2 {
            quiet_for = Duration::from_millis(300);
        }
    }
    // The batch being written (1), the queue (2), and the attempt waiting for room with
    // its slot (1); one more if a second completion joined the first batch.
    assert!(
        (2..=5).contains(&started.len()),
        "{} of 8 tasks started while every completion was held",
        started.len()
    );

    store.release();
    for id in &ids {
        let done = wait_finished(&*sqlite, &scheduler, id).await;
        assert_eq!(done.state, TaskState::Succeeded);
        assert_eq!(outcomes(&done), ["ok"]);
    }
    scheduler.shutdown(Duration::from_secs(5)).await;
}
