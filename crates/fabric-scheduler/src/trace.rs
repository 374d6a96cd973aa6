//! The spans of traced tasks (from their submit to their end), of their attempts and of
//! their attempts' outbound requests, handed to the configured span sink. A task is traced
//! when its stored trace context says so; nothing here runs for other tasks, nor when no
//! sink is configured.

use std::sync::Arc;
use std::time::SystemTime;

use fabric_sandbox::{Decision, EgressCalls};
use fabric_store::{ClaimedTask, TaskId, TaskRecord};
use fabric_types::trace::{
    AttrValue, SpanKind, SpanRecord, SpanSink, SpanStatus, TaskTrace, unix_nanos,
};
use fabric_types::{Attempt, ModuleId, Outcome, Priority, TaskState};

use crate::Shared;

/// A traced attempt while it runs.
pub(crate) struct AttemptTrace {
    sink: Arc<dyn SpanSink>,
    task: TaskTrace,
    span_id: fabric_types::trace::SpanId,
    started: SystemTime,
    /// Where the sandbox logs the attempt's outbound requests.
    pub calls: Arc<EgressCalls>,
}

/// What the task's span needs when the task ends with this attempt.
pub(crate) struct TaskEnd {
    sink: Arc<dyn SpanSink>,
    task: TaskTrace,
    module: ModuleId,
    priority: Priority,
    attempts: u32,
}

/// Starts tracing `task`'s attempt, when a sink is configured and the task is traced.
pub(crate) fn attempt_start(shared: &Shared, task: &ClaimedTask) -> Option<AttemptTrace> {
    let sink = shared.config.spans.as_ref()?;
    let trace = TaskTrace::decode(task.trace.as_deref()?)?;
    Some(AttemptTrace {
        span_id: sink.span_id(),
        sink: sink.clone(),
        task: trace,
        started: SystemTime::now(),
        calls: EgressCalls::new(),
    })
}

/// Records the attempt's span and one child span per outbound request, and returns what
/// the task's span needs should this attempt end the task.
pub(crate) fn attempt_end(
    traced: AttemptTrace,
    task: &ClaimedTask,
    node: &str,
    attempt: &Attempt,
) -> TaskEnd {
    let AttemptTrace {
        sink,
        task: trace,
        span_id,
        started,
        calls,
    } = traced;
    let mut attributes = common(&task.task_id, &task.tenant, &task.module);
    attributes.extend([
        kv("fabric.attempt.number", task.attempt_number),
        kv("fabric.node", node),
        kv("fabric.attempt.outcome", attempt.outcome.as_str()),
        kv("fabric.attempt.fuel_consumed", attempt.usage.fuel_consumed),
        kv(
            "fabric.attempt.peak_memory_bytes",
            attempt.usage.peak_memory_bytes,
        ),
        kv("fabric.attempt.wall_ms", attempt.usage.wall_ms),
    ]);
    if let Some(code) = attempt.exit_code {
        attributes.push(kv("fabric.attempt.exit_code", i64::from(code)));
    }
    if let Some(trap) = &attempt.trap {
        attributes.push(kv("fabric.attempt.trap", trap.clone()));
    }
    if attempt.usage.http_requests > 0 || attempt.usage.http_denied > 0 {
        attributes.push((
            "fabric.attempt.http_requests",
            attempt.usage.http_requests.into(),
        ));
        attributes.push((
            "fabric.attempt.http_denied",
            attempt.usage.http_denied.into(),
        ));
    }
    let status = match attempt.outcome {
        Outcome::Ok => SpanStatus::Ok,
        other => SpanStatus::Error(other.as_str().to_string()),
    };
    for call in calls.take() {
        let mut attributes = vec![
            kv("http.request.method", call.method.clone()),
            kv("server.address", call.host),
            kv("server.port", u32::from(call.port)),
            kv("fabric.egress.decision", call.decision.as_str()),
            kv("fabric.egress.bytes_sent", call.bytes_sent),
            kv("fabric.egress.bytes_received", call.bytes_received),
        ];
        if let Some(policy) = call.policy {
            attributes.push(kv("fabric.egress.policy", policy));
        }
        if let Some(status) = call.status {
            attributes.push(kv("http.response.status_code", u32::from(status)));
        }
        let status = match (call.decision, call.status) {
            (Decision::Answered, Some(code)) if code >= 400 => {
                SpanStatus::Error(format!("HTTP {code}"))
            }
            (Decision::Answered, _) => SpanStatus::Unset,
            (other, _) => SpanStatus::Error(other.as_str().to_string()),
        };
        sink.record(SpanRecord {
            trace_id: trace.trace_id,
            span_id: sink.span_id(),
            parent_id: Some(span_id),
            tracestate: trace.tracestate.clone(),
            name: call.method,
            kind: SpanKind::Client,
            start_unix_nanos: unix_nanos(call.started),
            end_unix_nanos: unix_nanos(call.ended),
            attributes,
            status,
        });
    }
    sink.record(SpanRecord {
        trace_id: trace.trace_id,
        span_id,
        parent_id: Some(trace.span_id),
        tracestate: trace.tracestate.clone(),
        name: "attempt".into(),
        kind: SpanKind::Internal,
        start_unix_nanos: unix_nanos(started),
        end_unix_nanos: unix_nanos(SystemTime::now()),
        attributes,
        status,
    });
    TaskEnd {
        sink,
        task: trace,
        module: task.module,
        priority: task.priority,
        attempts: task.attempt_number,
    }
}

/// Records the task's span: the task ended in `state` (a terminal state) with the attempt
/// `end` came from.
pub(crate) fn task_end(end: &TaskEnd, task_id: &TaskId, tenant: &str, state: TaskState) {
    record_task(
        &end.sink,
        &end.task,
        (task_id, tenant, &end.module, end.priority),
        state,
        end.attempts,
    );
}

/// Records the span of a task that ended without an attempt of this node (cancelled while
/// waiting, expired, rescued to its end), when it is traced and a sink is configured.
pub(crate) fn record_ended(shared: &Shared, record: &TaskRecord) {
    let Some(sink) = &shared.config.spans else {
        return;
    };
    let Some(trace) = record.trace.as_deref().and_then(TaskTrace::decode) else {
        return;
    };
    if !record.state.is_terminal() {
        return;
    }
    record_task(
        sink,
        &trace,
        (&record.id, &record.tenant, &record.module, record.priority),
        record.state,
        u32::try_from(record.attempts.len()).unwrap_or(u32::MAX),
    );
}

/// [`record_ended`] for a task known by its id (read from the store; a task pruned
/// meanwhile is skipped).
pub(crate) async fn record_ended_by_id(shared: &Shared, id: &TaskId) {
    let params = fabric_store::TaskGetParams {
        tenant: None,
        id: id.clone(),
    };
    match shared.store.task_get(params).await {
        Ok(Some(record)) => record_ended(shared, &record),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(task = %id, error = %e, "reading an ended task for its span failed")
        }
    }
}

fn record_task(
    sink: &Arc<dyn SpanSink>,
    trace: &TaskTrace,
    (task_id, tenant, module, priority): (&TaskId, &str, &ModuleId, Priority),
    state: TaskState,
    attempts: u32,
) {
    let mut attributes = common(task_id, tenant, module);
    attributes.extend([
        kv("fabric.task.priority", priority.as_str()),
        kv("fabric.task.state", state.as_str()),
        kv("fabric.task.attempts", attempts),
    ]);
    let status = match state {
        TaskState::Succeeded => SpanStatus::Ok,
        TaskState::Failed | TaskState::Expired => SpanStatus::Error(state.as_str().to_string()),
        _ => SpanStatus::Unset,
    };
    sink.record(SpanRecord {
        trace_id: trace.trace_id,
        span_id: trace.span_id,
        parent_id: trace.parent_id,
        tracestate: trace.tracestate.clone(),
        name: "task".into(),
        kind: SpanKind::Internal,
        start_unix_nanos: trace.start_unix_nanos,
        end_unix_nanos: unix_nanos(SystemTime::now()).max(trace.start_unix_nanos),
        attributes,
        status,
    });
}

fn common(task_id: &TaskId, tenant: &str, module: &ModuleId) -> Vec<(&'static str, AttrValue)> {
    vec![
        kv("fabric.task.id", task_id.as_str()),
        kv("fabric.tenant", tenant),
        kv("fabric.module", module.to_string()),
    ]
}

fn kv(key: &'static str, value: impl Into<AttrValue>) -> (&'static str, AttrValue) {
    (key, value.into())
}
