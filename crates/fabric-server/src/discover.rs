//! The OpenRPC document `rpc.discover` answers: every method of [`METHODS`] with its
//! params and result, and the `TaskSpec` schema.

use fabric_types::Priority;
use serde_json::{Value, json};

use crate::methods::METHODS;
use crate::spec;

pub(crate) fn object(required: &[&str]) -> Value {
    json!({"type": "object", "required": required})
}

pub(crate) fn task_schema() -> Value {
    json!({"$ref": "#/components/schemas/Task"})
}

pub(crate) fn task_spec_params() -> Vec<(&'static str, bool, Value)> {
    vec![
        (
            "module",
            true,
            json!({"type": "string", "description": "sha256:<hex> or a module name"}),
        ),
        ("input", false, json!({"type": "string"})),
        (
            "input_base64",
            false,
            json!({"type": "string", "contentEncoding": "base64"}),
        ),
        (
            "priority",
            false,
            json!({"enum": Priority::ALL.iter().map(|p| p.as_str()).collect::<Vec<_>>()}),
        ),
        (
            "limits",
            false,
            json!({"type": "object", "properties": {
            "fuel": {"type": "integer"}, "memory_bytes": {"type": "integer"},
            "timeout_ms": {"type": "integer"}, "output_bytes": {"type": "integer"},
            "log_bytes": {"type": "integer"}}, "additionalProperties": false}),
        ),
        (
            "retry",
            false,
            json!({"type": "object", "properties": {
            "max_attempts": {"type": "integer"}, "backoff_ms": {"type": "integer"},
            "max_backoff_ms": {"type": "integer"}}, "additionalProperties": false}),
        ),
        ("idempotency_key", false, json!({"type": "string"})),
        (
            "run_at",
            false,
            json!({"type": "string", "format": "date-time"}),
        ),
        (
            "deadline",
            false,
            json!({"type": "string", "format": "date-time"}),
        ),
        (
            "env",
            false,
            json!({"type": "object", "additionalProperties": {"type": "string"}}),
        ),
        (
            "labels",
            false,
            json!({"type": "object", "additionalProperties": {"type": "string"}}),
        ),
        (
            "dirs",
            false,
            json!({"type": "object", "maxProperties": spec::MAX_DIRS,
                   "description": "guest path (such as /data) -> the name of a volume of `fabric serve --volume`, granted read-only",
                   "additionalProperties": {"type": "string"}}),
        ),
        (
            "egress",
            false,
            json!({"type": "array", "maxItems": crate::egress::MAX_TASK_EGRESS, "uniqueItems": true,
                   "description": "names of egress policies of the server (`[[egress]]`, `fabric serve --egress`) the task's components may send HTTP requests under",
                   "items": {"type": "string"}}),
        ),
        (
            "args",
            false,
            json!({"type": "array", "maxItems": fabric_types::MAX_ARGS,
                   "description": "command-line arguments after the program name (`agent`); at most MAX_ARGS_BYTES bytes together, no NUL",
                   "items": {"type": "string"}}),
        ),
        (
            "after",
            false,
            json!({"type": "array", "maxItems": fabric_types::workflow::MAX_AFTER, "uniqueItems": true,
                   "description": "ids of tasks of the same tenant this one runs after: it waits (state `waiting`) until all succeeded, and is cancelled when one does not",
                   "items": {"type": "string"}}),
        ),
        (
            "pass_outputs",
            false,
            json!({"type": "boolean",
                   "description": "run with the input {\"input\": <own input>, \"after\": [{\"id\", \"state\", \"output\"}, ...]} built from the `after` tasks' outputs"}),
        ),
        (
            "concurrency",
            false,
            json!({"type": "object", "required": ["key", "limit"], "additionalProperties": false,
                   "description": "at most `limit` attempts of the tenant's tasks with this `key` run at once, across all nodes",
                   "properties": {
                       "key": {"type": "string", "minLength": 1, "maxLength": fabric_types::MAX_CONCURRENCY_KEY_BYTES},
                       "limit": {"type": "integer", "minimum": 1, "maximum": fabric_types::MAX_CONCURRENCY_LIMIT}}}),
        ),
    ]
}

/// The OpenRPC document of [`METHODS`].
pub fn discover() -> Value {
    let methods: Vec<Value> = METHODS
        .iter()
        .map(|method| {
            let params: Vec<Value> = (method.params)()
                .into_iter()
                .map(|(name, required, schema)| json!({"name": name, "required": required, "schema": schema}))
                .collect();
            json!({
                "name": method.name,
                "summary": method.summary,
                "paramStructure": "by-name",
                "params": params,
                "result": {"name": "result", "schema": (method.result)()},
            })
        })
        .collect();
    let spec_properties: serde_json::Map<String, Value> = task_spec_params()
        .into_iter()
        .map(|(name, _, schema)| (name.to_string(), schema))
        .collect();
    json!({
        "openrpc": "1.2.6",
        "info": {"title": "Execution Fabric", "version": env!("CARGO_PKG_VERSION")},
        "methods": methods,
        "components": {"schemas": {
            "TaskSpec": {"type": "object", "required": ["module"], "properties": spec_properties, "additionalProperties": false},
            "Task": {"type": "object", "required": ["id", "module", "state", "priority", "created_at", "attempts"]},
            "Schedule": {"type": "object", "required": ["name", "cron", "task", "timezone", "next_run_at"], "properties": {
                "name": {"type": "string"}, "cron": {"type": "string"},
                "task": {"$ref": "#/components/schemas/TaskSpec"}, "timezone": {"type": "string"},
                "next_run_at": {"type": "string", "format": "date-time"}, "last_task": {"type": "string"}}},
        }},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discover_lists_exactly_the_dispatched_methods() {
        let doc = discover();
        let names: Vec<&str> = doc["methods"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        let expected = [
            "module.put",
            "module.list",
            "module.delete",
            "task.submit",
            "task.submit_batch",
            "task.get",
            "task.wait",
            "task.list",
            "task.cancel",
            "task.retry",
            "task.subscribe",
            "kpi.query",
            "kpi.subscribe",
            "usage.report",
            "schedule.put",
            "schedule.get",
            "schedule.list",
            "schedule.delete",
            "fabric.stats",
            "rpc.discover",
        ];
        assert_eq!(names, expected);
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "a method is listed twice");
    }

    #[test]
    fn the_task_spec_schema_names_every_field_a_task_spec_has() {
        let doc = discover();
        let properties = doc["components"]["schemas"]["TaskSpec"]["properties"]
            .as_object()
            .unwrap();
        let full = json!({
            "module": "m", "input": "i", "input_base64": "aQ==", "priority": "high",
            "limits": {"fuel": 1}, "retry": {"max_attempts": 1}, "idempotency_key": "k",
            "run_at": "2026-01-01T00:00:00Z", "deadline": "2026-01-02T00:00:00Z",
            "env": {"A": "1"}, "labels": {"l": "v"}, "dirs": {"/data": "d"}, "egress": ["e"],
            "args": ["--flag"], "after": ["01H"], "pass_outputs": true,
            "concurrency": {"key": "k", "limit": 2}
        });
        let spec: fabric_types::wire::TaskSpec = serde_json::from_value(full).unwrap();
        let serialized = serde_json::to_value(&spec).unwrap();
        for key in serialized.as_object().unwrap().keys() {
            assert!(
                properties.contains_key(key),
                "TaskSpec.{key} is not in the OpenRPC schema"
            );
        }
        assert_eq!(properties.len(), serialized.as_object().unwrap().len());
    }
}
