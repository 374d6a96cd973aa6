//! The `data` of the JSON-RPC errors the server answers (docs/api.md, "Errors"): what was
//! wrong, in a shape per kind of error.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::TaskState;

/// -32602 (invalid params), and -32002 for an unknown module: the path of the offending
/// field (`tasks[3].limits.memory_bytes`; `params` for the params as a whole).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldError {
    pub field: String,
}

/// -32002 for an unknown task (or another tenant's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskNotFound {
    pub id: String,
}

/// -32002 for an unknown schedule (or another tenant's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleNotFound {
    pub name: String,
}

/// -32003 (a tenant's quota) and -32600 for a body over `max_request_bytes`: the limit by
/// its option name, its value and, for a quota, what the tenant holds now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitExceeded {
    pub limit: String,
    pub max: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<u64>,
}

/// -32601 for a name that is no method.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnknownMethod {
    pub method: String,
}

/// -32008 from `module.delete`: the module's id and how many unfinished tasks use it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModuleInUse {
    pub module: String,
    pub unfinished_tasks: u64,
}

/// -32008 from `task.retry`: the task is in a state it cannot be retried from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskNotRetryable {
    pub id: String,
    pub state: TaskState,
}
