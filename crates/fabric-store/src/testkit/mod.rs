//! The conformance suite every store backend runs, so backends cannot drift apart.
//!
//! Each case is a `pub async fn(Arc<dyn Store>)` that takes a fresh store, holding only
//! [`module_id`]'s module for each of the [`TENANTS`] (see [`seed`]), and panics on a
//! violation. A backend's test file runs them all, each as its own `#[tokio::test]`
//! named after the case, with [`conformance_tests!`](crate::conformance_tests):
//!
//! ```ignore
//! async fn make() -> (Arc<dyn Store>, tempfile::TempDir) { /* a fresh store */ }
//! fabric_store::conformance_tests!(make);
//! ```
//!
//! The test crate needs `tokio` (with `macros` and `rt-multi-thread`) as a dev-dependency.
//! Every case drives time through its params from a fixed instant ([`T0_MS`]), never from
//! the system clock, and waits on nothing.

mod children;
mod claim_order;
mod completion;
mod concurrency;
mod insert;
mod lease;
mod maintenance;
mod modules;
mod reads;
mod reports;
mod schedules;
mod tenants;
mod workflow;

pub use children::{
    cancel_cascades_to_descendants, children_dropped_unless_success, children_fenced_after_rescue,
    children_inserted_on_success, children_refused, list_filters,
};
pub use claim_order::{
    claim_aging, claim_order_priority_then_fifo, claim_tenant_cap, fair_share_between_tenants,
    fair_share_clock_persists_and_catches_up, fair_share_per_priority,
};
pub use completion::{
    cancel_queued, cancel_running, max_attempts_then_failed, requeue_does_not_count,
    retry_schedules_then_promote_queues,
};
pub use concurrency::{
    concurrency_key_caps_running, concurrency_key_does_not_hold_back_others,
    concurrency_limit_is_the_tasks_own, keyed,
};
pub use insert::{
    idempotency_across_calls, idempotency_is_per_tenant, idempotency_within_batch,
    insert_get_round_trip,
};
pub use lease::{
    claim_concurrent_no_duplicates, fenced_completion_after_rescue, heartbeat_renews,
    rescue_follows_policy,
};
pub use maintenance::{
    deadline_expiry, next_wakeup, prune_keeps_unfinished, ready_signal_fires, run_at_honoured,
};
pub use modules::module_delete_rules;
pub use reads::{list_pagination, stats_counts};
pub use reports::{
    args_and_kpis_round_trip, kpi_query_groups_and_filters, progress_fenced, rollup_batch_sums,
    usage_report_exact,
};
pub use schedules::{schedule_due_and_advance, schedule_limit_per_tenant, schedule_round_trip};
pub use tenants::{modules_put_get_list, tenant_isolation};
pub use workflow::{
    dependency_cancel_and_expiry_cascade, dependency_chain, dependency_failure_cascades,
    dependency_fan_in, pass_outputs_document, unknown_after_refused,
};

use std::time::Duration;

use fabric_types::{Attempt, ModuleId, ModuleKind, Outcome};
use time::OffsetDateTime;

use crate::{
    AttemptId, ClaimedTask, Completed, Completion, ModulePutParams, NewTask, Next, Store,
    TaskClaimParams, TaskCompleteParams, TaskGetParams, TaskId, TaskInsertParams, TaskRecord,
    from_millis,
};

/// The instant every case starts at: 2023-11-14T22:13:20Z.
pub const T0_MS: i64 = 1_700_000_000_000;

/// The lease every case claims with.
pub const LEASE: Duration = Duration::from_secs(10);

/// `T0` plus `ms` milliseconds.
pub fn at(ms: i64) -> OffsetDateTime {
    from_millis(T0_MS + ms)
}

/// The bytes of the module the cases' tasks name (a store does not look inside them).
pub const MODULE_BYTES: &[u8] = b"(module)";

/// The tenants the cases insert tasks for; [`seed`] stores the cases' module for each.
pub const TENANTS: [&str; 4] = ["acme", "globex", "x", "y"];

/// The module id the cases use for their tasks.
pub fn module_id() -> ModuleId {
    ModuleId::of(MODULE_BYTES)
}

/// Stores the cases' module ([`module_id`]) for each of the [`TENANTS`], as a store needs
/// before it accepts their tasks; a fresh store gets this before every case, and a
/// backend's own tests may call it on the stores they open. Idempotent.
pub async fn seed(store: &dyn Store) {
    for tenant in TENANTS {
        store
            .module_put(ModulePutParams {
                tenant: tenant.to_owned(),
                id: module_id(),
                name: None,
                bytes: MODULE_BYTES.to_vec(),
                kind: ModuleKind::Module,
                now: at(-1),
            })
            .await
            .expect("seed the cases' module");
    }
}

/// A task for `tenant` with defaults and the given input.
pub fn new_task(tenant: &str, input: &str) -> NewTask {
    NewTask::new(tenant, module_id(), input.as_bytes().to_vec())
}

/// Inserts one task at `now` and returns its id.
pub async fn insert(store: &dyn Store, task: NewTask, now: OffsetDateTime) -> TaskId {
    let mut out = store
        .task_insert(TaskInsertParams {
            tasks: vec![task],
            now,
        })
        .await
        .expect("task_insert");
    assert_eq!(out.len(), 1, "task_insert returns one result per task");
    out.remove(0).id
}

/// Reads a task as admin, which must exist.
pub async fn get(store: &dyn Store, id: &TaskId) -> TaskRecord {
    store
        .task_get(TaskGetParams {
            tenant: None,
            id: id.clone(),
        })
        .await
        .expect("task_get")
        .unwrap_or_else(|| panic!("task {id} not found"))
}

/// Claims up to `max` tasks as `node` at `now`.
pub async fn claim(
    store: &dyn Store,
    node: &str,
    max: usize,
    now: OffsetDateTime,
) -> Vec<ClaimedTask> {
    store
        .task_claim(TaskClaimParams {
            node: node.to_string(),
            max,
            lease: LEASE,
            now,
            tenant_cap: None,
        })
        .await
        .expect("task_claim")
        .tasks
}

/// Completes one attempt with `outcome` and `next` at `now`.
pub async fn complete(
    store: &dyn Store,
    attempt_id: &AttemptId,
    outcome: Outcome,
    next: Next,
    now: OffsetDateTime,
) -> Completed {
    let mut out = store
        .task_complete(TaskCompleteParams {
            completions: vec![Completion {
                children: Vec::new(),
                attempt_id: attempt_id.clone(),
                attempt: Attempt::new(outcome),
                next,
            }],
            now,
        })
        .await
        .expect("task_complete");
    assert_eq!(
        out.len(),
        1,
        "task_complete returns one result per completion"
    );
    out.remove(0)
}

fn no_jitter(bound: u64) -> u64 {
    bound
}

fn ids(claimed: &[ClaimedTask]) -> Vec<TaskId> {
    claimed.iter().map(|c| c.task_id.clone()).collect()
}

/// Defines one `#[tokio::test]` per conformance case, named after it, each on a fresh
/// store from `$make`: an `async fn() -> (Arc<dyn Store>, G)` where `G` is kept alive for
/// the test (a temporary directory, a database handle).
#[macro_export]
macro_rules! conformance_tests {
    ($make:path) => {
        $crate::conformance_tests!(@cases $make;
            insert_get_round_trip,
            idempotency_across_calls,
            idempotency_within_batch,
            idempotency_is_per_tenant,
            tenant_isolation,
            modules_put_get_list,
            module_delete_rules,
            claim_order_priority_then_fifo,
            claim_aging,
            claim_tenant_cap,
            fair_share_between_tenants,
            fair_share_per_priority,
            fair_share_clock_persists_and_catches_up,
            claim_concurrent_no_duplicates,
            heartbeat_renews,
            fenced_completion_after_rescue,
            retry_schedules_then_promote_queues,
            max_attempts_then_failed,
            requeue_does_not_count,
            cancel_queued,
            cancel_running,
            run_at_honoured,
            deadline_expiry,
            prune_keeps_unfinished,
            stats_counts,
            list_pagination,
            next_wakeup,
            ready_signal_fires,
            rescue_follows_policy,
            args_and_kpis_round_trip,
            progress_fenced,
            kpi_query_groups_and_filters,
            usage_report_exact,
            rollup_batch_sums,
            dependency_chain,
            dependency_fan_in,
            dependency_failure_cascades,
            dependency_cancel_and_expiry_cascade,
            pass_outputs_document,
            unknown_after_refused,
            children_inserted_on_success,
            children_dropped_unless_success,
            children_fenced_after_rescue,
            children_refused,
            cancel_cascades_to_descendants,
            list_filters,
            concurrency_key_caps_running,
            concurrency_key_does_not_hold_back_others,
            concurrency_limit_is_the_tasks_own,
            schedule_round_trip,
            schedule_limit_per_tenant,
            schedule_due_and_advance
        );
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (store, _guard) = $make().await;
                $crate::testkit::seed(&*store).await;
                $crate::testkit::$case(store).await;
            }
        )*
    };
}
