//! The JSON shapes of docs/api.md shared by the server and the client: `TaskSpec`, `Task`,
//! results of every method, and the JSON-RPC error codes.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{Attempt, Concurrency, ModuleKind, Priority, Progress, TaskState};

pub use crate::schedule::{Schedule, ScheduleDeleted, ScheduleList, ScheduleName, SchedulePut};

pub use crate::error_data::{
    FieldError, LimitExceeded, ModuleInUse, ScheduleNotFound, TaskNotFound, TaskNotRetryable,
    UnknownMethod,
};
pub use crate::report::{
    KpiGroup, KpiQuery, KpiReport, KpiRow, KpiRows, KpiSubscribe, UsageGroup, UsageQuery, UsageRow,
    UsageRows,
};

/// JSON-RPC 2.0 and application error codes (docs/api.md, "Errors").
pub mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL: i64 = -32603;
    pub const UNAUTHORIZED: i64 = -32001;
    pub const NOT_FOUND: i64 = -32002;
    pub const QUOTA: i64 = -32003;
    pub const DRAINING: i64 = -32004;
    pub const MODULE_INVALID: i64 = -32005;
    /// The store's disk is full: nothing was written; retry once space is freed.
    pub const STORE_FULL: i64 = -32006;
    /// A resource the call needs stayed taken for as long as the call may wait (the
    /// compile threads, for `module.put`): nothing was done; retry.
    pub const BUSY: i64 = -32007;
    /// The call conflicts with what is stored (`module.delete` of a module that unfinished
    /// tasks use): nothing was changed.
    pub const CONFLICT: i64 = -32008;
}

/// The most `env` entries one task may set.
pub const MAX_ENV_VARS: usize = 64;
/// The most `labels` one task may carry.
pub const MAX_LABELS: usize = 32;
/// The most directory grants (`dirs`) one task may ask for.
pub const MAX_DIRS: usize = 8;
/// The most egress policies (`egress`) one task may name.
pub const MAX_TASK_EGRESS: usize = 16;

/// Optional per-task limits; absent fields take the server's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_bytes: Option<u64>,
}

/// Optional retry policy; absent fields take the defaults of [`crate::RetryPolicy`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_backoff_ms: Option<u64>,
}

/// What a client submits (docs/api.md `TaskSpec`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// `sha256:<hex>` or a module name.
    pub module: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    #[schemars(schema_with = "crate::schema::date_time")]
    pub run_at: Option<OffsetDateTime>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    #[schemars(schema_with = "crate::schema::date_time")]
    pub deadline: Option<OffsetDateTime>,
    /// Environment variables the guest sees (names `[A-Za-z_][A-Za-z0-9_]*`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = MAX_ENV_VARS))]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = MAX_LABELS))]
    pub labels: BTreeMap<String, String>,
    /// Directory grants: guest path (such as `/data`) → the name of a volume the
    /// operator defined (`fabric serve --volume NAME=DIR`). Each is read-only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = MAX_DIRS))]
    pub dirs: BTreeMap<String, String>,
    /// The egress policies (operator-defined, by name) the task's attempts may send HTTP
    /// requests under.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = MAX_TASK_EGRESS, "uniqueItems" = true))]
    pub egress: Vec<String>,
    /// Command-line arguments after the program name (which is always `agent`); at most
    /// 64 KiB together, none holding a NUL byte.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = crate::MAX_ARGS))]
    pub args: Vec<String>,
    /// Ids of tasks (of the same tenant) this one runs after: it waits until all of them
    /// succeeded, and is cancelled when one of them does not (at most
    /// [`crate::workflow::MAX_AFTER`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// Run with the input `{"input": <own input>, "after": [{"id", "state", "output"}, ...]}`
    /// built from the outputs of the `after` tasks when they all succeeded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pass_outputs: bool,
    /// At most `limit` attempts of the tenant's tasks with this `key` run at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
}

/// The answer to `task.submit`, and each element of `task.submit_batch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Submitted {
    pub id: String,
    pub state: TaskState,
    pub deduplicated: bool,
}

/// `task.submit_batch` params and result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitBatch {
    pub tasks: Vec<TaskSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SubmittedBatch {
    pub tasks: Vec<Submitted>,
}

/// A task as the API shows it (docs/api.md `Task`). `output`/`output_base64` and `error` come
/// from the last attempt of a finished task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Task {
    pub id: String,
    pub module: String,
    pub state: TaskState,
    pub priority: Priority,
    #[serde(with = "crate::millis")]
    #[schemars(schema_with = "crate::schema::date_time")]
    pub created_at: OffsetDateTime,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::millis::option"
    )]
    #[schemars(schema_with = "crate::schema::date_time")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::millis::option"
    )]
    #[schemars(schema_with = "crate::schema::date_time")]
    pub finished_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The task's directory grants: guest path → volume name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dirs: BTreeMap<String, String>,
    /// The egress policies the task named.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<String>,
    /// The arguments after the program name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// The progress the running (or last) attempt reported last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// The tasks this one runs after, in the order given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// Whether its input is built from the outputs of its `after` tasks.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pass_outputs: bool,
    /// The task whose attempt submitted this one as a child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The task's concurrency key and limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
}

/// `task.get`, `task.cancel` params.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskRef {
    pub id: String,
}

/// `task.wait` params.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskWait {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// `task.list` params and result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskList {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<TaskState>,
    /// Only tasks of this module: a module name or `sha256:<hex>` id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// Only tasks carrying every one of these labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Only the children of this task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskPage {
    pub tasks: Vec<Task>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `module.put` params.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModulePut {
    pub wasm_base64: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `module.put` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ModulePutResult {
    pub module: String,
    pub size: u64,
    pub kind: ModuleKind,
}

/// One module of `module.list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ModuleEntry {
    pub module: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub size: u64,
    pub kind: ModuleKind,
    #[serde(with = "crate::millis")]
    #[schemars(schema_with = "crate::schema::date_time")]
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ModuleListResult {
    pub modules: Vec<ModuleEntry>,
}

/// Queued tasks by priority, in `fabric.stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct QueuedByPriority {
    pub critical: u64,
    pub high: u64,
    pub normal: u64,
    pub low: u64,
    pub background: u64,
}

/// `fabric.stats` result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FabricStats {
    pub queued: QueuedByPriority,
    /// Tasks waiting for their `after` tasks (0 from a server that predates them).
    #[serde(default)]
    pub waiting: u64,
    pub scheduled: u64,
    pub running: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub expired: u64,
    /// Attempts that may run at once on the answering node.
    pub workers: u64,
    /// Attempts of one tenant that may run at once on the answering node (0 from a server
    /// that predates the cap).
    #[serde(default)]
    pub tenant_max_running: u64,
}

/// The params of a method that takes none: `{}` (or no `params` at all).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// `module.delete` params.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModuleDelete {
    /// `sha256:<hex>` or a name.
    pub module: String,
}

/// `task.retry` result: the new task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TaskRetried {
    pub id: String,
    pub state: TaskState,
    /// Always false: a retry is a new task.
    pub deduplicated: bool,
    /// The id of the task it copies.
    pub retry_of: String,
}

/// `task.subscribe` params.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskSubscribe {
    /// Only this task's events; all of the caller's tasks when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// `task.subscribe` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TaskSubscribed {
    pub subscribed: bool,
    /// The task followed, or null for all of the caller's.
    pub id: Option<String>,
}

/// `kpi.subscribe` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct KpiSubscribed {
    pub subscribed: bool,
    /// The module followed (as given), or null for every module.
    pub module: Option<String>,
}

/// `task.events_dropped` and `kpi.reports_dropped` notification params: the subscription
/// fell behind and `dropped` notifications were never sent to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Dropped {
    pub dropped: u64,
}

/// `task.event` notification params (WebSocket subscriptions): a change of state (with the
/// attempt that caused it), or progress reported by the running attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskEventNotice {
    pub id: String,
    pub state: TaskState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<Attempt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_task_spec_parses_and_unknown_fields_are_refused() {
        let spec: TaskSpec = serde_json::from_str(r#"{"module": "echo", "input": "hi"}"#).unwrap();
        assert_eq!(spec.module, "echo");
        assert_eq!(spec.input.as_deref(), Some("hi"));
        let err =
            serde_json::from_str::<TaskSpec>(r#"{"module": "echo", "inptu": "hi"}"#).unwrap_err();
        assert!(err.to_string().contains("inptu"), "{err}");
        let err = serde_json::from_str::<TaskSpec>(r#"{"module": "echo", "limits": {"fuel": -1}}"#)
            .unwrap_err();
        assert!(err.to_string().contains("invalid value"), "{err}");
    }

    #[test]
    fn a_full_task_spec_round_trips() {
        let text = r#"{"module":"sha256:00","input_base64":"AAE=","priority":"critical",
            "limits":{"fuel":5,"memory_bytes":65536,"timeout_ms":100,"output_bytes":10},
            "retry":{"max_attempts":2,"backoff_ms":10,"max_backoff_ms":20},
            "idempotency_key":"k","run_at":"2030-01-01T00:00:00Z","deadline":"2030-01-02T00:00:00.5Z",
            "env":{"A":"1"},"labels":{"team":"x"},"dirs":{"/data":"shared"}}"#;
        let spec: TaskSpec = serde_json::from_str(text).unwrap();
        assert_eq!(spec.priority, Some(Priority::Critical));
        assert_eq!(spec.retry.as_ref().unwrap().max_attempts, Some(2));
        assert_eq!(spec.dirs["/data"], "shared");
        let back: TaskSpec = serde_json::from_value(serde_json::to_value(&spec).unwrap()).unwrap();
        assert_eq!(back, spec);
    }
}
