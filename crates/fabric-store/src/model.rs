//! The records a store returns and the params struct of every store method.

use std::collections::BTreeMap;
use std::time::Duration;

pub use fabric_types::ModuleKind;
use fabric_types::{
    Attempt, Concurrency, Limits, ModuleId, Priority, Progress, RetryPolicy, TaskState,
};
use time::OffsetDateTime;

use crate::{AttemptId, TaskId};

/// The default aging step: 30 seconds. See [`claim_sort_key`].
pub const AGING_STEP_MS: u64 = 30_000;

/// The key that orders queued tasks for claiming, smallest first (ties by task id):
/// `enqueued_at_ms + priority.rank() * aging_step_ms`.
///
/// This is FIFO within one priority, and a priority of rank `r` stands `r` aging steps
/// behind a critical task enqueued at the same instant. The **bound**: a task of rank `r`
/// enqueued at `t` is claimed before every task of rank `r'` enqueued after
/// `t + (r - r') * aging_step`, so a flood of newer higher-priority work can overtake it only
/// for `(r - r') * aging_step` (at most `4 * aging_step`, two minutes with the default 30 s
/// step, for background behind critical). After that it waits only for work that was
/// already ahead of it, which is finite.
///
/// `enqueued_at` is when the task became ready — its insert time, or its `run_at` when it
/// was scheduled (so a late promotion does not push it back) — moved later by fair share
/// for a task's first enqueue (see [`FairClock`]); a retry joins at its ready time, and a
/// requeued or rescued task keeps or recomputes its key as before. The bound above holds
/// for these `enqueued_at` values. Backends store this key in an indexed column when the
/// task becomes queued, so a claim is an index scan.
pub fn claim_sort_key(enqueued_at_ms: i64, priority: Priority, aging_step_ms: u64) -> i64 {
    let step = i64::try_from(aging_step_ms).unwrap_or(i64::MAX / 8);
    enqueued_at_ms.saturating_add(i64::from(priority.rank()).saturating_mul(step))
}

/// Fair share between tenants: one tenant's virtual clock at one priority (start-time fair
/// queuing), used when `task_insert` first enqueues a task.
///
/// **The rule.** Each `(tenant, priority)` has a clock `c`, stored by the backend (absent
/// means "never used"). A new task ready at `ready` (the insert's `now`, or its `run_at` when
/// it is scheduled) of that tenant and priority gets, with `base = max(now, c)`,
/// `enqueued_at = max(ready, base)`, and the clock becomes `base + 1`: every task takes one
/// millisecond of its tenant's virtual time. For a task queued at once this is
/// `v = max(now, c)`, `c = v + 1`. (A task scheduled later than `base` does not move the
/// clock to its `run_at`: one task scheduled for next week must not push the tenant's work
/// queued meanwhile behind everyone else's until then.)
///
/// **What it gives.** A tenant that enqueues `n` tasks at one priority in a burst spreads them
/// over `n` ms of virtual time, so a task another tenant enqueues at `now` goes ahead of the
/// part of the burst keyed after `now`: it waits for at most one of the burst's tasks per
/// millisecond since the burst began (fewer as the burst is served), not for all `n`. FIFO
/// within one tenant and priority is unchanged (keys strictly increase), and a tenant's own
/// higher priority still overtakes its own flood (clocks are per priority).
///
/// **The bound on the flooder.** A task is keyed at most `k` ms after it became ready, where
/// `k` is the number of tasks of the same tenant and priority inserted since that clock last
/// fell behind real time; a flood of `n` tasks pushes the tenant's own later tasks back by
/// at most `n` ms less the time since (100,000 tasks: 100 s), and a quota on unfinished tasks
/// bounds `n`. The aging bound of [`claim_sort_key`] holds for the keyed `enqueued_at`.
///
/// **Not covered.** Tasks scheduled for one future instant beyond the tenant's clock all
/// key at that instant (spreading them would need the clock at promotion). The spreading
/// assumes the flooding tenant is served at least one task per millisecond: when its tasks
/// run slower than that, the part of its flood keyed before `now` still grows in front of
/// other tenants, only more slowly than the whole flood would. Retries, requeues and
/// rescues keep their keys as they were.
///
/// A backend reads each clock it needs once per insert batch, calls [`FairClock::take`]
/// for each new task of that tenant and priority in order, and stores [`FairClock::next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FairClock {
    next: i64,
}

impl FairClock {
    /// The clock as stored (`None`: never used), at `now_ms`.
    pub fn new(stored: Option<i64>, now_ms: i64) -> Self {
        Self {
            next: stored.map_or(now_ms, |c| c.max(now_ms)),
        }
    }

    /// The `enqueued_at` of the next new task, ready at `ready_ms`; advances the clock one
    /// millisecond.
    pub fn take(&mut self, ready_ms: i64) -> i64 {
        let enqueued_at = ready_ms.max(self.next);
        self.next = self.next.saturating_add(1);
        enqueued_at
    }

    /// The value to store once the batch is inserted.
    pub fn next(self) -> i64 {
        self.next
    }
}

/// Milliseconds since the Unix epoch, the precision every store keeps timestamps at
/// (sub-millisecond parts are truncated toward the past).
pub fn to_millis(at: OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos().div_euclid(1_000_000)) as i64
}

/// The inverse of [`to_millis`].
pub fn from_millis(millis: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Stores a module's bytes for a tenant. Idempotent per `(tenant, id)`: storing the same
/// bytes again keeps the first `created_at`. A `name` is moved to point at this module.
#[derive(Debug, Clone)]
pub struct ModulePutParams {
    pub tenant: String,
    /// The SHA-256 of `bytes`; the caller computes it (the store does not re-hash).
    pub id: ModuleId,
    pub name: Option<String>,
    pub bytes: Vec<u8>,
    pub kind: ModuleKind,
    pub now: OffsetDateTime,
}

/// How to find a module: by id, or by the name that points at the newest module put
/// under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleRef {
    Id(ModuleId),
    Name(String),
}

/// Looks up one module of one tenant.
#[derive(Debug, Clone)]
pub struct ModuleGetParams {
    pub tenant: String,
    pub module: ModuleRef,
}

/// Lists a tenant's modules, without their bytes.
#[derive(Debug, Clone)]
pub struct ModuleListParams {
    pub tenant: String,
}

/// Deletes one module of one tenant, by id or by name, unless an unfinished task
/// (`waiting`, `scheduled`, `queued` or `running`) of that tenant names it. The check and the delete
/// are one transaction, and [`Store::task_insert`](crate::Store::task_insert) refuses a
/// task whose module its tenant does not store, so a delete never leaves an unfinished task
/// without its module. Finished tasks keep the module id they ran.
#[derive(Debug, Clone)]
pub struct ModuleDeleteParams {
    pub tenant: String,
    pub module: ModuleRef,
}

/// What became of a [`ModuleDeleteParams`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleDeleted {
    /// Deleted, with every name that pointed at it; this is what it was.
    Deleted(ModuleInfo),
    /// The tenant has no such module (or no such name).
    NotFound,
    /// Kept: `unfinished` tasks of the tenant still use it.
    InUse { id: ModuleId, unfinished: u64 },
}

/// A module without its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    pub id: ModuleId,
    /// The name given when it was last put with one, if any.
    pub name: Option<String>,
    pub size: u64,
    pub kind: ModuleKind,
    pub created_at: OffsetDateTime,
}

/// A module with its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleRecord {
    pub id: ModuleId,
    pub name: Option<String>,
    pub size: u64,
    pub kind: ModuleKind,
    pub created_at: OffsetDateTime,
    pub bytes: Vec<u8>,
}

/// One task to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    pub tenant: String,
    /// The module to run: the tenant must store it, or the insert is refused
    /// ([`StoreError::ModuleNotFound`](crate::StoreError::ModuleNotFound)).
    pub module: ModuleId,
    pub input: Vec<u8>,
    pub priority: Priority,
    pub limits: Limits,
    pub retry: RetryPolicy,
    /// A second insert with the same key for the same tenant returns the first task.
    pub idempotency_key: Option<String>,
    /// Not before this instant; a `run_at` after `now` makes the task `scheduled`.
    pub run_at: Option<OffsetDateTime>,
    /// Never started after this instant: a task still waiting then becomes `expired`.
    pub deadline: Option<OffsetDateTime>,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// Read-only directory grants: guest path → the name of an operator-defined volume.
    /// The store keeps names only; the scheduler resolves them when the attempt runs.
    pub dirs: BTreeMap<String, String>,
    /// Names of operator-defined egress policies, resolved when the attempt runs.
    pub egress: Vec<String>,
    /// The arguments after the program name, passed to every attempt.
    pub args: Vec<String>,
    /// The id to store the task under, chosen by the caller (a child task whose id its
    /// guest already holds); `None`: the store mints one. An id already stored refuses
    /// the batch ([`StoreError::DuplicateTaskId`](crate::StoreError::DuplicateTaskId)).
    pub id: Option<TaskId>,
    /// Tasks of the same tenant this one runs after (at most
    /// [`MAX_AFTER`](fabric_types::workflow::MAX_AFTER)): stored ones, or ones earlier in
    /// the same batch. See [`crate::workflow`] for the states this leads to.
    pub after: Vec<TaskId>,
    /// When the task becomes ready, its input becomes the document
    /// [`crate::workflow::pass_outputs_input`] builds from its `after` tasks' outputs.
    pub pass_outputs: bool,
    /// The task whose attempt submitted this one; its depth is the parent's plus one (at
    /// most [`MAX_TASK_DEPTH`](fabric_types::workflow::MAX_TASK_DEPTH)). The parent must be
    /// a stored task of the same tenant.
    pub parent: Option<TaskId>,
    /// A claim starts this task only while fewer than `limit` tasks of its tenant with the
    /// same key run (see [`TaskClaimParams`]).
    pub concurrency: Option<Concurrency>,
}

impl NewTask {
    /// A task with default priority, limits and retry policy, and nothing optional set.
    pub fn new(tenant: impl Into<String>, module: ModuleId, input: impl Into<Vec<u8>>) -> Self {
        Self {
            tenant: tenant.into(),
            module,
            input: input.into(),
            priority: Priority::default(),
            limits: Limits::default(),
            retry: RetryPolicy::default(),
            idempotency_key: None,
            run_at: None,
            deadline: None,
            env: BTreeMap::new(),
            labels: BTreeMap::new(),
            dirs: BTreeMap::new(),
            egress: Vec::new(),
            args: Vec::new(),
            id: None,
            after: Vec::new(),
            pass_outputs: false,
            parent: None,
            concurrency: None,
        }
    }
}

/// Inserts a batch of tasks in one transaction: all of them are stored, or none.
#[derive(Debug, Clone)]
pub struct TaskInsertParams {
    pub tasks: Vec<NewTask>,
    pub now: OffsetDateTime,
}

/// What became of one inserted task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inserted {
    pub id: TaskId,
    pub state: TaskState,
    /// The idempotency key was already used by this tenant (earlier or earlier in the same
    /// batch): `id` and `state` are that first task's, and nothing new was stored.
    pub deduplicated: bool,
}

/// Reads one task. `tenant: None` is the admin view (any tenant); otherwise another
/// tenant's task is not found.
#[derive(Debug, Clone)]
pub struct TaskGetParams {
    pub tenant: Option<String>,
    pub id: TaskId,
}

/// One page of tasks, newest first, of those matching every filter given.
#[derive(Debug, Clone, Default)]
pub struct TaskListParams {
    /// `None` lists every tenant's tasks (admin).
    pub tenant: Option<String>,
    pub state: Option<TaskState>,
    /// Only tasks of this module.
    pub module: Option<ModuleId>,
    /// Only tasks carrying every one of these labels (with these values).
    pub labels: BTreeMap<String, String>,
    /// Only the children of this task.
    pub parent: Option<TaskId>,
    /// At most this many tasks (a store may cap it; zero returns an empty page).
    pub limit: usize,
    /// The `next_cursor` of the previous page, which is the id of that page's last task:
    /// the page continues after it (the server cuts pages at a byte limit this way).
    pub cursor: Option<String>,
}

/// A page of tasks and where the next one starts (`None` when this was the last).
#[derive(Debug, Clone)]
pub struct TaskPage {
    pub tasks: Vec<TaskRecord>,
    pub next_cursor: Option<String>,
}

/// An attempt as stored: who ran it, under which lease, and how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub id: AttemptId,
    /// 1 for the first attempt.
    pub number: u32,
    /// The node that claimed it.
    pub node: String,
    pub claimed_at: OffsetDateTime,
    /// The lease while it runs; `None` once it ended.
    pub lease_until: Option<OffsetDateTime>,
    /// How it ended; `None` while it runs.
    pub result: Option<Attempt>,
}

/// A task with every attempt it counted, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    pub id: TaskId,
    pub tenant: String,
    pub module: ModuleId,
    pub input: Vec<u8>,
    pub priority: Priority,
    pub state: TaskState,
    pub limits: Limits,
    pub retry: RetryPolicy,
    pub idempotency_key: Option<String>,
    /// The requested `run_at`, or the instant a retry waits for.
    pub run_at: Option<OffsetDateTime>,
    pub deadline: Option<OffsetDateTime>,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// Guest path → volume name, as inserted.
    pub dirs: BTreeMap<String, String>,
    /// Egress policy names, as inserted.
    pub egress: Vec<String>,
    /// The arguments after the program name, as inserted.
    pub args: Vec<String>,
    /// The progress the current (or last) attempt reported last; a claim clears it.
    pub progress: Option<Progress>,
    pub created_at: OffsetDateTime,
    /// When the first attempt was claimed.
    pub started_at: Option<OffsetDateTime>,
    /// When it reached a terminal state.
    pub finished_at: Option<OffsetDateTime>,
    /// A cancel arrived while it ran; the worker should interrupt it.
    pub cancel_requested: bool,
    pub attempts: Vec<AttemptRecord>,
    /// The tasks it runs after, in the order given.
    pub after: Vec<TaskId>,
    /// Its input was (or will be) built from its `after` tasks' outputs.
    pub pass_outputs: bool,
    /// The task whose attempt submitted it.
    pub parent: Option<TaskId>,
    /// 0 for a top-level task; a child's is its parent's plus one.
    pub depth: u32,
    /// Why it ended without an attempt saying so: set when a dependency did not succeed
    /// (see [`crate::workflow::dependency_error`]).
    pub error: Option<String>,
    /// The concurrency key and limit, as inserted.
    pub concurrency: Option<Concurrency>,
}

/// Claims up to `max` queued tasks for `node`, in claim order (see [`claim_sort_key`]).
///
/// **Concurrency keys.** A task with a [`Concurrency`] is started only while fewer than its
/// `limit` tasks of its tenant with the same key are `running` (counting those this claim
/// starts), exactly, also with several nodes claiming from one database at once. A task
/// held back stays `queued` in its place in line without an attempt, and the claim goes on
/// with the tasks behind it (without the key, or with another key). Within one claim, tasks
/// with a key may be handed over after keyless tasks that stood behind them in line.
#[derive(Debug, Clone)]
pub struct TaskClaimParams {
    pub node: String,
    pub max: usize,
    /// How long the claim holds before a rescuer may take the task back.
    pub lease: Duration,
    pub now: OffsetDateTime,
    /// A per-tenant bound on this claim; `None` claims in claim order whoever the tenant.
    pub tenant_cap: Option<TenantCap>,
}

/// Bounds how many tasks of each tenant one claim takes: tenant `t` gets at most
/// `max - running[t]` (saturating), so a claimer that tracks what each tenant runs keeps every
/// tenant at or below `max`. A task passed over for this stays `queued` in its place in line
/// and gets no attempt (a claim may still expire one whose deadline passed, as it may any
/// queued task it reaches); the claim goes on with the tasks behind it, so a tenant at its
/// cap never holds back the others. A `max` of 0 claims nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantCap {
    /// The most tasks any one tenant may hold.
    pub max: usize,
    /// What each tenant already holds (tenants not listed hold none).
    pub running: BTreeMap<String, usize>,
}

impl TenantCap {
    /// How many more tasks `tenant` may be given.
    pub fn room(&self, tenant: &str) -> usize {
        self.max
            .saturating_sub(self.running.get(tenant).copied().unwrap_or(0))
    }

    /// The tenants with no room left.
    pub fn full(&self) -> impl Iterator<Item = &str> {
        self.running
            .iter()
            .filter(|(_, held)| **held >= self.max)
            .map(|(tenant, _)| tenant.as_str())
    }

    /// Counts one more task held by `tenant`; returns whether the tenant is now full.
    pub fn take(&mut self, tenant: &str) -> bool {
        let held = self.running.entry(tenant.to_owned()).or_insert(0);
        *held += 1;
        *held >= self.max
    }
}

/// What one claim did: the tasks it handed over, in claim order, and the queued tasks it
/// found past their deadline and expired instead (for their `expired` events).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claimed {
    pub tasks: Vec<ClaimedTask>,
    pub expired: Vec<TaskId>,
}

/// A task handed to a worker: everything needed to run the attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedTask {
    pub task_id: TaskId,
    /// The fencing token: pass it to heartbeat and complete.
    pub attempt_id: AttemptId,
    /// 1 for the first attempt.
    pub attempt_number: u32,
    pub tenant: String,
    pub module: ModuleId,
    pub input: Vec<u8>,
    pub priority: Priority,
    pub limits: Limits,
    pub retry: RetryPolicy,
    pub deadline: Option<OffsetDateTime>,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// Guest path → volume name; the worker resolves each name to its host directory.
    pub dirs: BTreeMap<String, String>,
    /// Egress policy names; the worker resolves each to this node's policy.
    pub egress: Vec<String>,
    /// The arguments after the program name, for the sandbox.
    pub args: Vec<String>,
    /// 0 for a top-level task; a child's is its parent's plus one.
    pub depth: u32,
    pub claimed_at: OffsetDateTime,
    pub lease_until: OffsetDateTime,
    /// The concurrency key and limit it was claimed under.
    pub concurrency: Option<Concurrency>,
}

impl ClaimedTask {
    /// A stored task handed to a worker under `attempt_id`, holding it until `lease_until`.
    pub fn from_record(
        task: TaskRecord,
        attempt_id: AttemptId,
        attempt_number: u32,
        claimed_at: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> Self {
        Self {
            task_id: task.id,
            attempt_id,
            attempt_number,
            tenant: task.tenant,
            module: task.module,
            input: task.input,
            priority: task.priority,
            limits: task.limits,
            retry: task.retry,
            deadline: task.deadline,
            env: task.env,
            labels: task.labels,
            dirs: task.dirs,
            egress: task.egress,
            args: task.args,
            depth: task.depth,
            claimed_at,
            lease_until,
            concurrency: task.concurrency,
        }
    }
}

/// Renews the leases of running attempts.
#[derive(Debug, Clone)]
pub struct TaskHeartbeatParams {
    pub attempt_ids: Vec<AttemptId>,
    pub lease_until: OffsetDateTime,
    pub now: OffsetDateTime,
}

/// What a heartbeat found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Heartbeat {
    /// Attempts that still hold their task; their lease now ends at `lease_until`. An
    /// attempt missing here lost its task (rescued, or the task is gone): stop it and do
    /// not expect its completion to be accepted.
    pub held: Vec<AttemptId>,
    /// Held attempts whose task was asked to cancel: interrupt them and finish them as
    /// [`Next::Finish`]`(Cancelled)`.
    pub cancel_requested: Vec<AttemptId>,
}

/// What happens to a task after an attempt ended; the caller decides (the scheduler
/// applies the retry policy and jitter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The task ends in this terminal state (`Succeeded`, `Failed` or `Cancelled`).
    Finish(TaskState),
    /// Another attempt at `run_at`: `scheduled` until then, or `queued` at once when
    /// `run_at` is not after the completion's `now`.
    Retry { run_at: OffsetDateTime },
    /// The attempt was interrupted by a shutdown, not by the task: the task goes back to
    /// `queued` at its old place in line and the attempt is deleted, so it does not count
    /// against `max_attempts`.
    Requeue,
}

/// One attempt's end.
///
/// **Children.** `children` are the tasks the attempt submitted. They are inserted in the
/// same transaction as the completion, and only when it is accepted (its attempt still
/// holds the task) and its step is `Finish(Succeeded)`; otherwise they are dropped. The
/// store sets each child's tenant to the task's, its `parent` to the task, and its depth
/// to the task's plus one, and stores it under its given `id` (or a minted one). A
/// child's `after` may name children earlier in the list or stored tasks of the tenant.
/// When the children cannot be inserted — more than
/// [`MAX_CHILDREN_PER_ATTEMPT`](fabric_types::workflow::MAX_CHILDREN_PER_ATTEMPT), deeper
/// than [`MAX_TASK_DEPTH`](fabric_types::workflow::MAX_TASK_DEPTH), an unknown `after` id,
/// a module the tenant no longer stores, an id already stored, or any other invalid
/// child — this completion alone is applied as a failure: the attempt is recorded with
/// outcome `invalid` and an error starting `child tasks refused: ` that names the child's
/// index and the reason, the task ends `failed`, and no child exists. Other completions of
/// the same call are unaffected. See [`crate::workflow::refuse_children`].
#[derive(Debug, Clone)]
pub struct Completion {
    pub attempt_id: AttemptId,
    /// What the attempt did. For [`Next::Requeue`] it is discarded.
    pub attempt: Attempt,
    pub next: Next,
    /// The child tasks the attempt submitted, in order.
    pub children: Vec<NewTask>,
}

/// Records the ends of attempts, all in one transaction, each fenced by its attempt id.
///
/// A task with `cancel_requested` never runs again: a `Retry` or `Requeue` for it becomes
/// `Finish(Cancelled)`.
#[derive(Debug, Clone)]
pub struct TaskCompleteParams {
    pub completions: Vec<Completion>,
    pub now: OffsetDateTime,
}

/// The fate of one completion, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    pub attempt_id: AttemptId,
    /// Whether the attempt still held its task and the completion was applied. A rejected
    /// completion changed nothing: the attempt was rescued (the rescuer's `lost` stands) or
    /// already completed.
    pub accepted: bool,
    /// The task, when the attempt is known.
    pub task_id: Option<TaskId>,
    /// The task's state after this call (also when rejected, when the task is known).
    pub state: Option<TaskState>,
}

/// Cancels a task: `waiting`/`queued`/`scheduled` become `cancelled` at once; `running`
/// gets `cancel_requested` (the worker sees it on its next heartbeat) and stays `running`
/// until its attempt completes; terminal tasks are left as they are. In the same
/// transaction every task waiting on a cancelled task is cancelled (transitively), and
/// every unfinished descendant (by `parent`, transitively) is cancelled the same way,
/// whatever the task's own state.
#[derive(Debug, Clone)]
pub struct TaskCancelParams {
    /// `None` is the admin view; otherwise another tenant's task is not found.
    pub tenant: Option<String>,
    pub id: TaskId,
    pub now: OffsetDateTime,
}

/// Takes back running tasks whose lease ended before `now`.
///
/// Each such attempt is recorded `lost` (it counts against `max_attempts`: the guest may
/// have run). The task is then `cancelled` if a cancel was requested, else retried if its
/// policy retries `lost` and attempts remain — `scheduled` at
/// `now + jitter(backoff_bound_ms(next attempt))`, or `queued` if that is `now` — else
/// `failed`.
#[derive(Debug, Clone, Copy)]
pub struct TaskRescueParams {
    pub now: OffsetDateTime,
    /// At most this many tasks per call.
    pub max: usize,
    /// Draws the backoff in milliseconds from its bound (full jitter: uniformly from
    /// `0..=bound`). Tests pass a deterministic function such as `|bound| bound`.
    pub jitter: fn(u64) -> u64,
}

/// One rescued task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rescued {
    pub task_id: TaskId,
    pub tenant: String,
    /// The attempt that lost its lease, now recorded `lost`.
    pub attempt_id: AttemptId,
    /// `Scheduled`, `Queued`, `Failed` or `Cancelled`.
    pub state: TaskState,
    /// When the next attempt may run, when retried.
    pub run_at: Option<OffsetDateTime>,
}

/// Moves `scheduled` tasks whose `run_at` is not after `now` to `queued`.
#[derive(Debug, Clone, Copy)]
pub struct TaskPromoteParams {
    pub now: OffsetDateTime,
    pub max: usize,
}

/// Moves `waiting`, `queued` and `scheduled` tasks whose deadline is before `now` to
/// `expired` (and, in the same transaction, cancels the tasks waiting on them).
#[derive(Debug, Clone, Copy)]
pub struct TaskExpireParams {
    pub now: OffsetDateTime,
    pub max: usize,
}

/// Deletes terminal tasks (with their attempts) that finished before `finished_before`.
/// Unfinished tasks are never deleted. A pruned task's idempotency key is free again.
#[derive(Debug, Clone, Copy)]
pub struct TaskPruneParams {
    pub finished_before: OffsetDateTime,
    pub max: usize,
}

/// Takes or renews, for `node`, the leader lease that elects the one node running the
/// maintenance services (rescue, expiry, pruning), until `now + ttl`. It is free when no
/// node holds it or the holder's lease ended before `now`.
#[derive(Debug, Clone)]
pub struct LeaderAcquireParams {
    pub node: String,
    pub ttl: Duration,
    pub now: OffsetDateTime,
}

/// Gives up the leader lease if `node` holds it (at shutdown), so another node can take
/// it at once instead of after it ends.
#[derive(Debug, Clone)]
pub struct LeaderReleaseParams {
    pub node: String,
}

/// Counts tasks by state, for one tenant or (with `None`) all of them.
#[derive(Debug, Clone, Default)]
pub struct StatsParams {
    pub tenant: Option<String>,
}

/// Task counts by state; queued tasks also by priority (index = [`Priority::rank`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub queued_by_priority: [u64; 5],
    pub waiting: u64,
    pub scheduled: u64,
    pub running: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub expired: u64,
}

impl Stats {
    /// All queued tasks, every priority together.
    pub fn queued(&self) -> u64 {
        self.queued_by_priority.iter().sum()
    }

    /// Adds `count` tasks in `state` of `priority` (the priority counts only for queued
    /// tasks): how a backend folds its per-state counts into one `Stats`.
    pub fn add(&mut self, state: TaskState, priority: Priority, count: u64) {
        match state {
            TaskState::Queued => self.queued_by_priority[usize::from(priority.rank())] += count,
            TaskState::Waiting => self.waiting += count,
            TaskState::Scheduled => self.scheduled += count,
            TaskState::Running => self.running += count,
            TaskState::Succeeded => self.succeeded += count,
            TaskState::Failed => self.failed += count,
            TaskState::Cancelled => self.cancelled += count,
            TaskState::Expired => self.expired += count,
        }
    }
}

/// What a backend can do beyond the trait's guarantees, so callers branch on abilities,
/// never on backend names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// The ready signal ([`crate::Store::ready_signal`]) also fires for work made ready by
    /// other processes (PostgreSQL `LISTEN/NOTIFY`); without it, only this process's writes
    /// fire it and a scheduler must also poll.
    pub listen_notify: bool,
    /// Several processes (fabric nodes) may share the database.
    pub multi_node: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fair_clock_spreads_a_burst_and_catches_up_with_real_time() {
        let mut clock = FairClock::new(None, 1_000);
        let burst: Vec<i64> = (0..3).map(|_| clock.take(1_000)).collect();
        assert_eq!(burst, [1_000, 1_001, 1_002]);
        assert_eq!(clock.next(), 1_003);
        // Stored, and read back later: real time has overtaken it.
        let mut clock = FairClock::new(Some(1_003), 5_000);
        assert_eq!(clock.take(5_000), 5_000);
        // Still ahead of real time: it keeps its place.
        let mut clock = FairClock::new(Some(9_000), 5_000);
        assert_eq!(clock.take(5_000), 9_000);
    }

    #[test]
    fn a_scheduled_task_takes_its_run_at_without_moving_the_clock_there() {
        let mut clock = FairClock::new(Some(1_000), 1_000);
        assert_eq!(clock.take(100_000), 100_000);
        assert_eq!(clock.next(), 1_001, "one millisecond, not up to the run_at");
        // Scheduled inside the tenant's own backlog: behind it.
        let mut clock = FairClock::new(Some(2_000), 1_000);
        assert_eq!(clock.take(1_500), 2_000);
        assert_eq!(clock.next(), 2_001);
    }
}
