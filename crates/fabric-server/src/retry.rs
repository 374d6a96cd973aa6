//! `task.retry`: a failed, cancelled or expired task queued again as a new task with the
//! same spec, labelled `retry_of=<old id>`.

use fabric_store::{NewTask, StoreError, TaskGetParams, TaskId, TaskInsertParams};
use fabric_types::TaskState;
use fabric_types::wire::{FieldError, TaskNotRetryable, TaskRef, TaskRetried, code};
use serde_json::Value;
use time::OffsetDateTime;

use crate::auth::Principal;
use crate::rpc::RpcError;
use crate::server::App;

/// The label naming the task a retry copies.
pub const RETRY_OF: &str = "retry_of";

/// The states a task may be retried from.
const RETRYABLE: [TaskState; 3] = [TaskState::Failed, TaskState::Cancelled, TaskState::Expired];

/// Answers `task.retry {id}` with `{id, state, deduplicated: false, retry_of}`.
pub(crate) async fn task_retry(
    app: &App,
    who: &Principal,
    params: Value,
) -> Result<Value, RpcError> {
    if app.is_draining() {
        return Err(RpcError::draining());
    }
    let TaskRef { id } = serde_path_to_error::deserialize(params).map_err(RpcError::from_decode)?;
    let not_found = || crate::methods::task_not_found(&id);
    let record = app
        .store
        .task_get(TaskGetParams {
            tenant: who.scope(),
            id: TaskId::from(id.as_str()),
        })
        .await
        .map_err(RpcError::store)?
        .ok_or_else(not_found)?;
    if !RETRYABLE.contains(&record.state) {
        return Err(RpcError::new(
            code::CONFLICT,
            format!(
                "task {id:?} is {}: only a failed, cancelled or expired task can be retried",
                record.state
            ),
        )
        .with_data(TaskNotRetryable {
            id: id.clone(),
            state: record.state,
        }));
    }
    let tenant = record.tenant.clone();
    let task = copy(record);
    let priority = task.priority;
    let admitted = app.quota.admit(&*app.store, &tenant, 1).await?;
    let inserted = app
        .store
        .task_insert(TaskInsertParams {
            tasks: vec![task],
            now: OffsetDateTime::now_utc(),
        })
        .await
        .map_err(|err| match err {
            StoreError::ModuleNotFound { module, .. } => RpcError::not_found(format!(
                "module {module:?}: the task's module was deleted; put it again to retry"
            ))
            .with_data(FieldError {
                field: "module".into(),
            }),
            StoreError::UnknownDependency { id, .. } => RpcError::not_found(format!(
                "task {id:?}: a task this one runs after is no longer stored"
            ))
            .with_data(FieldError {
                field: "after".into(),
            }),
            other => RpcError::store(other),
        })?;
    app.scheduler.wake();
    app.metrics.task_submitted(priority);
    admitted.settle(1);
    let inserted = inserted
        .into_iter()
        .next()
        .ok_or_else(|| RpcError::internal("no task inserted"))?;
    crate::methods::encode(TaskRetried {
        id: inserted.id.into_string(),
        state: inserted.state,
        deduplicated: inserted.deduplicated,
        retry_of: id,
    })
}

/// The new task: the old one's spec without its idempotency key (which would find the old
/// task again), `run_at` (it runs now) and deadline (it may have passed). A task that never
/// ran keeps its `after` and `pass_outputs`; one that ran already had its input built from
/// its dependencies' outputs, and runs again with that input, after nothing. A retry is a
/// top-level task (no `parent`).
fn copy(record: fabric_store::TaskRecord) -> NewTask {
    let mut labels = record.labels;
    labels.insert(RETRY_OF.to_owned(), record.id.into_string());
    let ran = !record.attempts.is_empty();
    let (after, pass_outputs) = if ran {
        (Vec::new(), false)
    } else {
        (record.after, record.pass_outputs)
    };
    NewTask {
        tenant: record.tenant,
        module: record.module,
        input: record.input,
        priority: record.priority,
        limits: record.limits,
        retry: record.retry,
        idempotency_key: None,
        run_at: None,
        deadline: None,
        env: record.env,
        labels,
        dirs: record.dirs,
        egress: record.egress,
        args: record.args,
        id: None,
        after,
        pass_outputs,
        parent: None,
        concurrency: record.concurrency,
        trace: crate::otel::task_trace(),
    }
}
