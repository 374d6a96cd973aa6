//! The error codes of docs/api.md as `rpc.discover` documents them: what each means and the
//! shapes of its `data`, from the types the server builds it from.

use fabric_types::wire::{
    FieldError, LimitExceeded, ModuleInUse, ScheduleNotFound, TaskNotFound, TaskNotRetryable,
    UnknownMethod, code,
};
use schemars::SchemaGenerator;
use serde_json::{Value, json};

use crate::methods::{SchemaFn, schema};

/// One error code.
#[derive(Debug)]
pub(crate) struct ErrorKind {
    /// Its key in `components.errors` and `x-error-schemas`.
    pub name: &'static str,
    pub code: i64,
    pub meaning: &'static str,
    /// The shapes its `data` may have; none when it never carries any.
    pub data: &'static [SchemaFn],
    /// Whether every answer with this code carries `data`.
    pub always_data: bool,
}

/// The errors any call may answer, whatever its method.
pub(crate) const EVERY_CALL: &[i64] = &[code::INVALID_PARAMS, code::INTERNAL, code::UNAUTHORIZED];

/// Every code the server answers.
pub(crate) static ERRORS: &[ErrorKind] = &[
    ErrorKind {
        name: "ParseError",
        code: code::PARSE_ERROR,
        meaning: "parse error: the request body is not JSON",
        data: &[],
        always_data: false,
    },
    ErrorKind {
        name: "InvalidRequest",
        code: code::INVALID_REQUEST,
        meaning: "invalid request: not a JSON-RPC 2.0 request, an empty batch or one over max_batch calls, or a body over max_request_bytes (HTTP 413, with data naming the limit)",
        data: &[schema::<LimitExceeded>],
        always_data: false,
    },
    ErrorKind {
        name: "MethodNotFound",
        code: code::METHOD_NOT_FOUND,
        meaning: "method not found (data names it), or a WebSocket-only method called over HTTP (no data)",
        data: &[schema::<UnknownMethod>],
        always_data: false,
    },
    ErrorKind {
        name: "InvalidParams",
        code: code::INVALID_PARAMS,
        meaning: "invalid params: data.field is the path of the offending field (tasks[3].limits.memory_bytes)",
        data: &[schema::<FieldError>],
        always_data: true,
    },
    ErrorKind {
        name: "Internal",
        code: code::INTERNAL,
        meaning: "internal error: the server logged it",
        data: &[],
        always_data: false,
    },
    ErrorKind {
        name: "Unauthorized",
        code: code::UNAUTHORIZED,
        meaning: "unauthorized: no known bearer token (HTTP 401), or a call from another site's web page (HTTP 403)",
        data: &[],
        always_data: false,
    },
    ErrorKind {
        name: "NotFound",
        code: code::NOT_FOUND,
        meaning: "not found: no such task (data.id) or module (data.field) for this tenant",
        data: &[
            schema::<TaskNotFound>,
            schema::<FieldError>,
            schema::<ScheduleNotFound>,
        ],
        always_data: true,
    },
    ErrorKind {
        name: "Quota",
        code: code::QUOTA,
        meaning: "quota exceeded: the tenant's limit (data.limit) would be passed; nothing was stored",
        data: &[schema::<LimitExceeded>],
        always_data: true,
    },
    ErrorKind {
        name: "Draining",
        code: code::DRAINING,
        meaning: "draining: the server is shutting down and accepts no new work; retry on another node or later",
        data: &[],
        always_data: false,
    },
    ErrorKind {
        name: "ModuleInvalid",
        code: code::MODULE_INVALID,
        meaning: "module invalid: not WebAssembly the sandbox can run, or over the compile budget",
        data: &[],
        always_data: false,
    },
    ErrorKind {
        name: "StoreFull",
        code: code::STORE_FULL,
        meaning: "store full: the disk holding the store is full; nothing was written; retry once space is freed",
        data: &[],
        always_data: false,
    },
    ErrorKind {
        name: "Busy",
        code: code::BUSY,
        meaning: "busy: every compile thread stayed taken for as long as module.put waits; nothing was stored; retry",
        data: &[],
        always_data: false,
    },
    ErrorKind {
        name: "Conflict",
        code: code::CONFLICT,
        meaning: "conflict with what is stored: a module unfinished tasks use (module.delete), a task that cannot be retried in its state (task.retry); nothing was changed",
        data: &[schema::<ModuleInUse>, schema::<TaskNotRetryable>],
        always_data: true,
    },
];

impl ErrorKind {
    /// The JSON Schema of a whole error object with this code (its `data` schemas added to
    /// `generator`).
    pub(crate) fn object_schema(&self, generator: &mut SchemaGenerator) -> Value {
        let mut properties = json!({
            "code": {"const": self.code},
            "message": {"type": "string"},
        });
        let mut required = vec!["code", "message"];
        let mut shapes: Vec<Value> = self
            .data
            .iter()
            .map(|shape| shape(generator).to_value())
            .collect();
        if !shapes.is_empty() {
            properties["data"] = if shapes.len() == 1 {
                shapes.remove(0)
            } else {
                json!({ "anyOf": shapes })
            };
            if self.always_data {
                required.push("data");
            }
        }
        json!({
            "type": "object",
            "required": required,
            "properties": properties,
            "additionalProperties": false,
        })
    }
}
