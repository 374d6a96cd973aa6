//! The scheduler: claims ready tasks from the store in priority order, runs each in the
//! sandbox under a lease, records the outcome fenced by the attempt id, retries failures
//! with backoff, and runs the maintenance services (rescue, promotion, expiry, pruning).

mod children;
mod clock;
mod complete;
mod dispatch;
mod policy;
mod progress;
mod service;
mod trace;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fabric_sandbox::{CancelToken, ProgressCell, Sandbox};
use fabric_store::{AttemptId, Store, TaskCancelParams, TaskId, TaskRecord};
use fabric_types::{Attempt, ModuleId, Progress, TaskState};
use tokio::sync::{Notify, Semaphore, broadcast, watch};
use tokio::task::JoinHandle;

pub use children::{ChildSpecs, ChildrenError};
pub use clock::{Clock, ManualClock, SystemClock};
pub use fabric_store::rules::next_after;

/// How the scheduler runs, each field with a documented default.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// This node's name in the store (who holds which lease).
    pub node: String,
    /// Attempts running at once on this node. Default 128.
    pub workers: u32,
    /// Attempts of one tenant running at once on this node; `None` means the default,
    /// [`SchedulerConfig::fair_share`] of `workers` (see [`SchedulerConfig::tenant_cap`]).
    /// A tenant at its cap gets no more attempts started: its queued tasks keep their place
    /// in line while the dispatcher claims other tenants' tasks behind them.
    pub tenant_max_running: Option<u32>,
    /// How long a claim holds before another node may rescue the task. Default 10 s.
    pub lease: Duration,
    /// How often running attempts renew their leases. Default lease / 3.
    pub heartbeat_every: Duration,
    /// Most tasks claimed in one store call. Default 256.
    pub claim_batch: usize,
    /// Most completions written in one store call. Default 1024.
    pub complete_batch: usize,
    /// How often expired leases are rescued and passed deadlines expired. Default 1 s.
    pub maintenance_every: Duration,
    /// How long the maintenance leadership lasts unless renewed (every
    /// `maintenance_every`). Among nodes sharing a store, only the leader rescues, expires
    /// and prunes; when it dies, another takes over within this time. Default 5 s.
    pub leader_ttl: Duration,
    /// How long finished tasks are kept. Default 7 days.
    pub retention: Duration,
    /// How often finished tasks older than `retention` are pruned. Default 1 min.
    pub prune_every: Duration,
    /// Longest idle wait before the dispatcher looks at the store again even without a
    /// signal (other nodes' work on a store without LISTEN/NOTIFY). Default 1 s.
    pub idle_poll: Duration,
    /// The volumes a task's `dirs` may name: volume name → host directory, granted
    /// read-only. A task naming a volume missing here ends `invalid`. Default none.
    pub volumes: BTreeMap<String, PathBuf>,
    /// The egress policies a task's `egress` may name, by name. A task naming one missing
    /// here ends `invalid`. Default none.
    pub egress: BTreeMap<String, Arc<fabric_sandbox::EgressPolicy>>,
    /// How often the progress running attempts reported is written to the store and
    /// announced: an agent may report progress as often as it likes, the store sees at
    /// most one write per attempt per period. Default 500 ms.
    pub progress_every: Duration,
    /// Where the spans of traced tasks, their attempts and their outbound requests go
    /// (see `trace`). Default none: nothing is traced, and nothing is spent on it.
    pub spans: Option<Arc<dyn fabric_types::trace::SpanSink>>,
    /// How the specs of child tasks that attempts submit are checked and made tasks.
    /// Default none: no attempt may submit children.
    pub children: Option<Arc<dyn ChildSpecs>>,
}

impl SchedulerConfig {
    /// Enough slots that a node keeps the cores busy while claims wait for their group
    /// commit (about a millisecond or two under load; a slot is taken from the claim until
    /// the guest ends): 64 capped echo throughput near 25,000/s on two cores, 128 gives
    /// about 30,000/s. Slots cost address space, not memory, until a guest uses them.
    pub const DEFAULT_WORKERS: u32 = 128;
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
    pub const DEFAULT_CLAIM_BATCH: usize = 256;
    pub const DEFAULT_COMPLETE_BATCH: usize = 1024;
    pub const DEFAULT_MAINTENANCE_EVERY: Duration = Duration::from_secs(1);
    pub const DEFAULT_LEADER_TTL: Duration = Duration::from_secs(5);
    pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
    pub const DEFAULT_PRUNE_EVERY: Duration = Duration::from_secs(60);
    pub const DEFAULT_IDLE_POLL: Duration = Duration::from_secs(1);
    pub const DEFAULT_PROGRESS_EVERY: Duration = Duration::from_millis(500);

    /// The default cap on one tenant's running attempts: half the workers (at least one).
    /// Half, so that while one tenant's attempts spin to their timeouts the other half of
    /// the node stays free for everyone else's work; not less, so that a node serving one
    /// tenant still uses half its workers. With one worker the cap is that worker: a single
    /// slot cannot be shared.
    pub fn fair_share(workers: u32) -> u32 {
        (workers / 2).max(1)
    }

    /// The cap in force: `tenant_max_running`, or [`SchedulerConfig::fair_share`] of the
    /// workers. At or above `workers` it never binds.
    pub fn tenant_cap(&self) -> u32 {
        self.tenant_max_running
            .unwrap_or_else(|| Self::fair_share(self.workers))
    }

    /// Whether the cap can ever stop an attempt: only below `workers`. When it cannot, the
    /// dispatcher neither counts tenants' attempts nor passes a cap to its claims.
    pub fn tenant_cap_binds(&self) -> bool {
        self.tenant_cap() < self.workers
    }

    /// Defaults for a node with this name.
    pub fn new(node: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            workers: Self::DEFAULT_WORKERS,
            tenant_max_running: None,
            lease: Self::DEFAULT_LEASE,
            heartbeat_every: Self::DEFAULT_LEASE / 3,
            claim_batch: Self::DEFAULT_CLAIM_BATCH,
            complete_batch: Self::DEFAULT_COMPLETE_BATCH,
            maintenance_every: Self::DEFAULT_MAINTENANCE_EVERY,
            leader_ttl: Self::DEFAULT_LEADER_TTL,
            retention: Self::DEFAULT_RETENTION,
            prune_every: Self::DEFAULT_PRUNE_EVERY,
            idle_poll: Self::DEFAULT_IDLE_POLL,
            volumes: BTreeMap::new(),
            egress: BTreeMap::new(),
            progress_every: Self::DEFAULT_PROGRESS_EVERY,
            spans: None,
            children: None,
        }
    }
}

/// A change of a task's state, or progress its running attempt reported, for subscribers
/// (`task.subscribe`, `kpi.subscribe`) and metrics.
#[derive(Debug, Clone)]
pub struct TaskEvent {
    pub task_id: TaskId,
    pub tenant: String,
    pub state: TaskState,
    /// The attempt that just ended, when the change comes from one.
    pub attempt: Option<Arc<EndedAttempt>>,
    /// Progress the running attempt reported (the state is `running`).
    pub progress: Option<Arc<Progress>>,
}

/// An attempt this node ran to its end, as its completion was recorded.
#[derive(Debug, Clone)]
pub struct EndedAttempt {
    /// 1 for the task's first attempt.
    pub number: u32,
    pub module: ModuleId,
    pub attempt: Attempt,
}

/// Why a running attempt was interrupted from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Interruption {
    None = 0,
    /// `task.cancel`: the task ends `cancelled`.
    Cancel = 1,
    /// Shutdown after the grace period: the task goes back to the queue, uncharged.
    Shutdown = 2,
    /// The lease was lost (another node rescued the task): the result is discarded.
    LeaseLost = 3,
}

/// An attempt running on this node.
#[derive(Debug)]
struct Running {
    task_id: TaskId,
    tenant: String,
    cancel: CancelToken,
    why: AtomicU8,
    /// What the guest last reported, and the change counter the store has seen.
    progress: ProgressCell,
    progress_seen: std::sync::atomic::AtomicU64,
}

impl Running {
    fn interrupt(&self, why: Interruption) {
        // The first reason wins: a cancel is not turned into a requeue by a later shutdown.
        let _ = self.why.compare_exchange(
            Interruption::None as u8,
            why as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.cancel.cancel();
    }

    fn interruption(&self) -> Interruption {
        match self.why.load(Ordering::Acquire) {
            1 => Interruption::Cancel,
            2 => Interruption::Shutdown,
            3 => Interruption::LeaseLost,
            _ => Interruption::None,
        }
    }
}

/// Completions queued for the store per worker slot. A slot is freed when its completion
/// is queued, so this bounds the attempts' ends (and outputs) held in memory while the
/// store lags behind the guests. A node keeping up queues only what ends during one group
/// commit, far fewer.
const UNWRITTEN_PER_WORKER: usize = 2;

/// What every part of the scheduler shares.
struct Shared {
    config: SchedulerConfig,
    store: Arc<dyn Store>,
    sandbox: Arc<Sandbox>,
    clock: Arc<dyn Clock>,
    /// One permit per attempt that may run at once (admission).
    permits: Arc<Semaphore>,
    running: Mutex<HashMap<AttemptId, Arc<Running>>>,
    /// Each tenant's claimed attempts on this node (from the claim until the slot is freed),
    /// for the tenant cap; tenants holding none are absent.
    held: Mutex<BTreeMap<String, usize>>,
    /// Raised when a tenant at its cap frees a slot, or a task with a concurrency key ends:
    /// queued tasks held back for either may be claimable again.
    room: Notify,
    events: broadcast::Sender<TaskEvent>,
    /// Raised when new work may be claimable or scheduled (a submit, a retry).
    wake: Notify,
    /// This node holds the maintenance leadership (as of its last renewal).
    leading: AtomicBool,
    stopping: AtomicBool,
    stop: watch::Sender<bool>,
    completions: complete::Completer,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A running scheduler. Dropping it without [`Scheduler::shutdown`] aborts its tasks;
/// nothing acknowledged is lost either way (leases bring running tasks back).
#[derive(Debug)]
pub struct Scheduler {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// Why a scheduler operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Store(#[from] fabric_store::StoreError),
    #[error("invalid scheduler configuration: {0}")]
    Config(String),
}

impl Scheduler {
    /// Starts dispatching, heartbeats and maintenance on the current tokio runtime.
    pub fn start(
        config: SchedulerConfig,
        store: Arc<dyn Store>,
        sandbox: Arc<Sandbox>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, SchedulerError> {
        if config.workers == 0 || config.claim_batch == 0 || config.complete_batch == 0 {
            return Err(SchedulerError::Config(
                "workers, claim_batch and complete_batch must be at least 1".into(),
            ));
        }
        if config.tenant_max_running == Some(0) {
            return Err(SchedulerError::Config(
                "tenant_max_running must be at least 1".into(),
            ));
        }
        if config.progress_every.is_zero() {
            return Err(SchedulerError::Config(
                "progress_every must be longer than zero".into(),
            ));
        }
        if config.heartbeat_every >= config.lease {
            return Err(SchedulerError::Config(
                "heartbeat_every must be shorter than the lease".into(),
            ));
        }
        if config.leader_ttl <= config.maintenance_every {
            return Err(SchedulerError::Config(
                "leader_ttl must be longer than maintenance_every (the leader renews on each round)".into(),
            ));
        }
        let (events, _) = broadcast::channel(4096);
        let (stop, _) = watch::channel(false);
        let (completions, completer_rx) =
            complete::Completer::new(config.workers as usize * UNWRITTEN_PER_WORKER);
        let shared = Arc::new(Shared {
            permits: Arc::new(Semaphore::new(config.workers as usize)),
            config,
            store,
            sandbox,
            clock,
            running: Mutex::default(),
            held: Mutex::default(),
            room: Notify::new(),
            events,
            wake: Notify::new(),
            leading: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            stop,
            completions,
        });
        let tasks = vec![
            tokio::spawn(complete::run(shared.clone(), completer_rx)),
            tokio::spawn(dispatch::run(shared.clone())),
            tokio::spawn(service::heartbeat(shared.clone())),
            tokio::spawn(service::maintenance(shared.clone())),
            tokio::spawn(service::prune(shared.clone())),
            tokio::spawn(progress::run(shared.clone())),
        ];
        Ok(Self {
            shared,
            tasks: Mutex::new(tasks),
        })
    }

    /// Tells the dispatcher that tasks may have become ready or scheduled (after a submit).
    pub fn wake(&self) {
        self.shared.wake.notify_one();
    }

    /// Every task state change this node makes, as it happens.
    pub fn subscribe(&self) -> broadcast::Receiver<TaskEvent> {
        self.shared.events.subscribe()
    }

    /// Attempts running on this node now.
    pub fn running(&self) -> usize {
        self.shared.running.lock().expect("running lock").len()
    }

    /// The most attempts that may run at once on this node.
    pub fn workers(&self) -> u32 {
        self.shared.config.workers
    }

    /// The most attempts of one tenant that may run at once on this node.
    pub fn tenant_cap(&self) -> u32 {
        self.shared.config.tenant_cap()
    }

    /// Cancels a task: a waiting one at once; a running one here is interrupted within an
    /// epoch tick (one running on another node, at that node's next heartbeat).
    pub async fn cancel(
        &self,
        tenant: Option<String>,
        id: TaskId,
    ) -> Result<Option<TaskRecord>, SchedulerError> {
        let now = self.shared.clock.now();
        let record = self
            .shared
            .store
            .task_cancel(TaskCancelParams {
                tenant,
                id: id.clone(),
                now,
            })
            .await?;
        if let Some(record) = &record {
            match record.state {
                TaskState::Running => self.shared.interrupt_task(&id, Interruption::Cancel),
                TaskState::Cancelled => {
                    trace::record_ended(&self.shared, record);
                    self.shared.emit(
                        record.id.clone(),
                        record.tenant.clone(),
                        TaskState::Cancelled,
                        None,
                    )
                }
                _ => {}
            }
        }
        Ok(record)
    }

    /// Stops claiming, lets running attempts finish for up to `grace`, then interrupts the
    /// rest and puts their tasks back in the queue without charging an attempt, flushes
    /// every completion and stops the services. Calling it twice is harmless.
    pub async fn shutdown(&self, grace: Duration) {
        if self.shared.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = self.shared.stop.send(true);
        self.shared.wake.notify_one();
        let workers = self.shared.config.workers;
        let all_idle = self.shared.permits.clone().acquire_many_owned(workers);
        let idle = match tokio::time::timeout(grace, all_idle).await {
            Ok(permits) => permits.ok(),
            Err(_) => {
                let interrupted = self.shared.interrupt_all(Interruption::Shutdown);
                tracing::info!(
                    interrupted,
                    "grace period over: interrupting running attempts; their tasks go back to the queue"
                );
                self.shared
                    .permits
                    .clone()
                    .acquire_many_owned(workers)
                    .await
                    .ok()
            }
        };
        drop(idle);
        self.shared.completions.close();
        let tasks = std::mem::take(&mut *self.tasks.lock().expect("tasks lock"));
        for task in tasks {
            let _ = task.await;
        }
        service::resign(&self.shared).await;
    }

    /// This node runs the maintenance services now (it holds the leadership).
    pub fn is_leader(&self) -> bool {
        self.shared.leading.load(Ordering::Acquire)
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        for task in self.tasks.lock().expect("tasks lock").iter() {
            task.abort();
        }
    }
}

impl Shared {
    fn emit(
        &self,
        task_id: TaskId,
        tenant: String,
        state: TaskState,
        attempt: Option<Arc<EndedAttempt>>,
    ) {
        let _ = self.events.send(TaskEvent {
            task_id,
            tenant,
            state,
            attempt,
            progress: None,
        });
    }

    fn interrupt_task(&self, task_id: &TaskId, why: Interruption) {
        let running = self.running.lock().expect("running lock");
        for attempt in running.values().filter(|r| &r.task_id == task_id) {
            attempt.interrupt(why);
        }
    }

    fn interrupt_all(&self, why: Interruption) -> usize {
        let running = self.running.lock().expect("running lock");
        for attempt in running.values() {
            attempt.interrupt(why);
        }
        running.len()
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tenant_cap_defaults_to_half_the_workers_at_least_one() {
        let cap = |workers, set| {
            SchedulerConfig {
                workers,
                tenant_max_running: set,
                ..SchedulerConfig::new("n")
            }
            .tenant_cap()
        };
        assert_eq!(cap(128, None), 64);
        assert_eq!(cap(5, None), 2);
        assert_eq!(cap(2, None), 1);
        assert_eq!(cap(1, None), 1);
        assert_eq!(cap(4, Some(3)), 3);
        assert_eq!(cap(4, Some(10)), 10);
    }
}
