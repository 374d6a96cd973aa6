//! The OpenRPC document `rpc.discover` answers, generated from the types the handlers
//! decode and encode: every method of [`METHODS`] with its params (each member, and the
//! whole params object as `x-params`), its result and its errors; the JSON Schemas of the
//! wire types (`components.schemas`); every error code with the schema of the error object
//! it comes in (`x-error-schemas`); and the notifications subscriptions send
//! (`x-notifications`).

mod errors;

use std::collections::BTreeMap;

use fabric_types::openrpc::{
    Components, ContentDescriptor, ErrorObject, Info, MethodObject, NotificationObject,
    OPENRPC_VERSION, OpenRpcDocument, Reference,
};
use fabric_types::wire::{Dropped, KpiReport, TaskEventNotice};
use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value};

use errors::{ERRORS, EVERY_CALL};

use crate::methods::{METHODS, SchemaFn, schema};
use crate::{reports, ws};

/// Where the schemas of `components.schemas` are referred to.
const SCHEMAS: &str = "#/components/schemas/";
/// Where the errors of `components.errors` are referred to.
const ERRORS_REF: &str = "#/components/errors/";
/// The suffix of a type's schema as the server writes it, when it differs from the schema
/// of what it reads under the same name (a field with a default is optional in params but
/// always present in results).
const OUTPUT_SUFFIX: &str = "Output";

/// One notification the server sends on a WebSocket.
#[derive(Debug)]
pub(crate) struct Notification {
    pub name: &'static str,
    pub summary: &'static str,
    /// Its params' schema: [`schema`] of the type the server encodes.
    pub params: SchemaFn,
    /// The methods whose calls start it.
    pub sent_after: &'static [&'static str],
}

/// Every notification the server sends.
pub(crate) static NOTIFICATIONS: &[Notification] = &[
    Notification {
        name: ws::TASK_EVENT,
        summary: "A followed task changed state (with the attempt that just ended, when one did), or its running attempt reported progress.",
        params: schema::<TaskEventNotice>,
        sent_after: &["task.subscribe"],
    },
    Notification {
        name: ws::EVENTS_DROPPED,
        summary: "The subscription fell behind: `dropped` task events were never sent to it; read the tasks it follows again with task.get.",
        params: schema::<Dropped>,
        sent_after: &["task.subscribe"],
    },
    Notification {
        name: reports::KPI_REPORT,
        summary: "An attempt ended on the answering node: its task, number, module, tenant, outcome, usage and KPIs.",
        params: schema::<KpiReport>,
        sent_after: &["kpi.subscribe"],
    },
    Notification {
        name: reports::REPORTS_DROPPED,
        summary: "The subscription fell behind: `dropped` KPI reports were never sent to it.",
        params: schema::<Dropped>,
        sent_after: &["kpi.subscribe"],
    },
];

/// A generator of JSON Schema draft 7 (OpenRPC's) with its definitions in
/// `components.schemas`.
fn generator(settings: SchemaSettings) -> SchemaGenerator {
    settings
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .into_generator()
}

/// The OpenRPC document of [`METHODS`], as JSON.
pub fn discover() -> Value {
    serde_json::to_value(document()).expect("the OpenRPC document is JSON")
}

/// The OpenRPC document of [`METHODS`]. Params are described as the server reads them,
/// results, notifications and error data as it writes them.
pub fn document() -> OpenRpcDocument {
    let mut reads = generator(SchemaSettings::draft07().for_deserialize());
    let mut writes = generator(SchemaSettings::draft07().for_serialize());
    let params: Vec<Value> = METHODS
        .iter()
        .map(|m| (m.params)(&mut reads).to_value())
        .collect();
    let mut results: Vec<Value> = METHODS
        .iter()
        .map(|m| (m.result)(&mut writes).to_value())
        .collect();
    let mut notices: Vec<Value> = NOTIFICATIONS
        .iter()
        .map(|n| (n.params)(&mut writes).to_value())
        .collect();
    let mut error_schemas: Vec<Value> = ERRORS
        .iter()
        .map(|kind| kind.object_schema(&mut writes))
        .collect();

    let mut schemas: BTreeMap<String, Value> = reads.take_definitions(true).into_iter().collect();
    let mut written = Value::Object(writes.take_definitions(true));
    let renames = clashes(&schemas, &written);
    for value in [&mut written]
        .into_iter()
        .chain(&mut results)
        .chain(&mut notices)
        .chain(&mut error_schemas)
    {
        rename_refs(value, &renames);
    }
    if let Value::Object(written) = written {
        for (name, schema) in written {
            let name = renames.get(&name).cloned().unwrap_or(name);
            schemas.insert(name, schema);
        }
    }

    let methods = METHODS
        .iter()
        .zip(params)
        .zip(results)
        .map(|((method, params), result)| MethodObject {
            name: method.name.to_owned(),
            summary: method.summary.to_owned(),
            param_structure: "by-name".to_owned(),
            params: members(&params, &schemas),
            result: ContentDescriptor {
                name: ref_name(&result).unwrap_or("result").to_owned(),
                description: None,
                required: true,
                schema: result,
            },
            errors: method_errors(method.errors),
            params_schema: params,
            notifications: NOTIFICATIONS
                .iter()
                .filter(|n| n.sent_after.contains(&method.name))
                .map(|n| n.name.to_owned())
                .collect(),
        })
        .collect();
    let notifications = NOTIFICATIONS
        .iter()
        .zip(notices)
        .map(|(notification, params)| NotificationObject {
            name: notification.name.to_owned(),
            summary: notification.summary.to_owned(),
            param_structure: "by-name".to_owned(),
            params: members(&params, &schemas),
            params_schema: params,
            sent_after: notification
                .sent_after
                .iter()
                .map(|m| (*m).to_owned())
                .collect(),
        })
        .collect();
    OpenRpcDocument {
        openrpc: OPENRPC_VERSION.to_owned(),
        info: Info {
            title: "Execution Fabric".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        },
        methods,
        components: Components {
            schemas,
            errors: ERRORS
                .iter()
                .map(|kind| {
                    let error = ErrorObject {
                        code: kind.code,
                        message: kind.meaning.to_owned(),
                    };
                    (kind.name.to_owned(), error)
                })
                .collect(),
        },
        notifications,
        error_schemas: ERRORS
            .iter()
            .zip(error_schemas)
            .map(|(kind, schema)| (kind.name.to_owned(), schema))
            .collect(),
    }
}

/// References to the errors a method may answer: those of every call, then its own, in
/// the order of [`ERRORS`].
fn method_errors(own: &[i64]) -> Vec<Reference> {
    ERRORS
        .iter()
        .filter(|kind| EVERY_CALL.contains(&kind.code) || own.contains(&kind.code))
        .map(|kind| Reference {
            reference: format!("{ERRORS_REF}{}", kind.name),
        })
        .collect()
}

/// The name a `{"$ref": "#/components/schemas/NAME"}` refers to.
fn ref_name(schema: &Value) -> Option<&str> {
    schema.get("$ref")?.as_str()?.strip_prefix(SCHEMAS)
}

/// The by-name params of an object schema (a reference into `schemas`): its required
/// members in their order, then the others by name.
fn members(object: &Value, schemas: &BTreeMap<String, Value>) -> Vec<ContentDescriptor> {
    let object = ref_name(object)
        .and_then(|name| schemas.get(name))
        .unwrap_or(object);
    let required: Vec<&str> = object
        .get("required")
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let empty = Map::new();
    let properties = object
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let descriptor = |name: &str| ContentDescriptor {
        name: name.to_owned(),
        description: properties[name]
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_owned),
        required: required.contains(&name),
        schema: properties[name].clone(),
    };
    let mut params: Vec<ContentDescriptor> = required
        .iter()
        .filter(|name| properties.contains_key(**name))
        .map(|name| descriptor(name))
        .collect();
    params.extend(
        properties
            .keys()
            .filter(|name| !required.contains(&name.as_str()))
            .map(|name| descriptor(name)),
    );
    params
}

/// The names of the written schemas that clash with a read schema of the same name and
/// another shape, each with the name it gets instead.
fn clashes(read: &BTreeMap<String, Value>, written: &Value) -> BTreeMap<String, String> {
    let Some(written) = written.as_object() else {
        return BTreeMap::new();
    };
    written
        .iter()
        .filter(|(name, schema)| read.get(*name).is_some_and(|other| other != *schema))
        .map(|(name, _)| {
            let mut renamed = format!("{name}{OUTPUT_SUFFIX}");
            while read.contains_key(&renamed) || written.contains_key(&renamed) {
                renamed.push('_');
            }
            (name.clone(), renamed)
        })
        .collect()
}

/// Points every `$ref` to a renamed schema at its new name.
fn rename_refs(value: &mut Value, renames: &BTreeMap<String, String>) {
    if renames.is_empty() {
        return;
    }
    match value {
        Value::Object(object) => {
            if let Some(Value::String(reference)) = object.get_mut("$ref")
                && let Some(new) = reference
                    .strip_prefix(SCHEMAS)
                    .and_then(|name| renames.get(name))
            {
                *reference = format!("{SCHEMAS}{new}");
            }
            for child in object.values_mut() {
                rename_refs(child, renames);
            }
        }
        Value::Array(items) => {
            for item in items {
                rename_refs(item, renames);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use fabric_types::wire::code;
    use serde_json::json;

    use super::*;

    fn documented(code: i64) -> bool {
        ERRORS.iter().any(|kind| kind.code == code)
    }

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

    /// Every `$ref` in `value`.
    fn references(value: &Value, found: &mut Vec<String>) {
        match value {
            Value::Object(object) => {
                if let Some(Value::String(reference)) = object.get("$ref") {
                    found.push(reference.clone());
                }
                object.values().for_each(|child| references(child, found));
            }
            Value::Array(items) => items.iter().for_each(|item| references(item, found)),
            _ => {}
        }
    }

    #[test]
    fn the_document_names_every_dispatched_method_once_and_nothing_else() {
        let doc = document();
        let documented: Vec<&str> = doc.methods.iter().map(|m| m.name.as_str()).collect();
        let dispatched: Vec<&str> = METHODS.iter().map(|m| m.name).collect();
        assert_eq!(documented, dispatched);
    }

    #[test]
    fn every_reference_resolves_and_every_params_object_refuses_unknown_members() {
        let doc = discover();
        let mut found = Vec::new();
        references(&doc, &mut found);
        assert!(found.len() > 50, "{found:?}");
        for reference in &found {
            let resolved = match (
                reference.strip_prefix(SCHEMAS),
                reference.strip_prefix(ERRORS_REF),
            ) {
                (Some(name), _) => doc["components"]["schemas"].get(name),
                (_, Some(name)) => doc["components"]["errors"].get(name),
                _ => None,
            };
            assert!(resolved.is_some(), "{reference} does not resolve");
        }
        let schemas = &doc["components"]["schemas"];
        for method in doc["methods"].as_array().unwrap() {
            let name = method["x-params"]["$ref"]
                .as_str()
                .and_then(|r| r.strip_prefix(SCHEMAS))
                .unwrap_or_else(|| panic!("{}: x-params is no reference", method["name"]));
            let params = &schemas[name];
            assert_eq!(params["type"], "object", "{name}");
            assert_eq!(params["additionalProperties"], false, "{name}");
            let members: Vec<&str> = method["params"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            let mut properties: Vec<&str> = params["properties"]
                .as_object()
                .map(|p| p.keys().map(String::as_str).collect())
                .unwrap_or_default();
            let mut sorted = members.clone();
            sorted.sort();
            properties.sort();
            assert_eq!(sorted, properties, "{name}");
            for param in method["params"].as_array().unwrap() {
                let required = params["required"]
                    .as_array()
                    .is_some_and(|r| r.contains(&param["name"]));
                assert_eq!(param["required"], required, "{name}.{}", param["name"]);
            }
        }
    }

    #[test]
    fn params_list_required_members_first() {
        let doc = document();
        let submit = doc
            .methods
            .iter()
            .find(|m| m.name == "task.submit")
            .unwrap();
        assert_eq!(submit.params[0].name, "module");
        assert!(submit.params[0].required);
        assert!(submit.params[1..].iter().all(|p| !p.required));
        let wait = doc.methods.iter().find(|m| m.name == "task.wait").unwrap();
        let names: Vec<&str> = wait.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["id", "timeout_ms"]);
    }

    #[test]
    fn every_error_code_is_documented_with_the_schema_of_its_error_object() {
        let all = [
            code::PARSE_ERROR,
            code::INVALID_REQUEST,
            code::METHOD_NOT_FOUND,
            code::INVALID_PARAMS,
            code::INTERNAL,
            code::UNAUTHORIZED,
            code::NOT_FOUND,
            code::QUOTA,
            code::DRAINING,
            code::MODULE_INVALID,
            code::STORE_FULL,
            code::BUSY,
            code::CONFLICT,
        ];
        assert_eq!(ERRORS.len(), all.len());
        for code in all {
            assert!(documented(code), "{code} is not documented");
        }
        for method in METHODS {
            for code in method.errors {
                assert!(documented(*code), "{}: {code}", method.name);
            }
        }
        let doc = document();
        let names: Vec<&String> = doc.components.errors.keys().collect();
        assert_eq!(names, doc.error_schemas.keys().collect::<Vec<_>>());
        let not_found = &doc.error_schemas["NotFound"];
        assert_eq!(not_found["properties"]["code"]["const"], code::NOT_FOUND);
        assert_eq!(not_found["required"], json!(["code", "message", "data"]));
        assert_eq!(
            not_found["properties"]["data"]["anyOf"][0]["$ref"],
            "#/components/schemas/TaskNotFound"
        );
        let draining = &doc.error_schemas["Draining"];
        assert_eq!(draining["additionalProperties"], false);
        assert!(draining["properties"].get("data").is_none());
        let get = doc.methods.iter().find(|m| m.name == "task.get").unwrap();
        let refs: Vec<&str> = get.errors.iter().map(|r| r.reference.as_str()).collect();
        assert_eq!(
            refs,
            [
                "#/components/errors/InvalidParams",
                "#/components/errors/Internal",
                "#/components/errors/Unauthorized",
                "#/components/errors/NotFound",
            ]
        );
    }

    #[test]
    fn notifications_are_documented_with_the_methods_that_start_them() {
        let doc = document();
        let names: Vec<&str> = doc.notifications.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "task.event",
                "task.events_dropped",
                "kpi.report",
                "kpi.reports_dropped"
            ]
        );
        for notification in &doc.notifications {
            for method in &notification.sent_after {
                let method = doc.methods.iter().find(|m| &m.name == method).unwrap();
                assert!(method.notifications.contains(&notification.name));
            }
        }
        let event = &doc.notifications[0];
        let members: Vec<(&str, bool)> = event
            .params
            .iter()
            .map(|p| (p.name.as_str(), p.required))
            .collect();
        assert_eq!(
            members,
            [
                ("id", true),
                ("state", true),
                ("attempt", false),
                ("progress", false)
            ]
        );
    }

    #[test]
    fn a_type_written_in_another_shape_than_it_is_read_gets_a_schema_of_its_own() {
        let read: BTreeMap<String, Value> = [
            ("Same".to_owned(), json!({"type": "string"})),
            ("Stats".to_owned(), json!({"required": []})),
        ]
        .into();
        let mut written = json!({
            "Same": {"type": "string"},
            "Stats": {"required": ["workers"]},
            "Page": {"properties": {"stats": {"$ref": "#/components/schemas/Stats"}}},
        });
        let renames = clashes(&read, &written);
        assert_eq!(
            renames,
            BTreeMap::from([("Stats".to_owned(), "StatsOutput".to_owned())])
        );
        rename_refs(&mut written, &renames);
        assert_eq!(
            written["Page"]["properties"]["stats"]["$ref"],
            "#/components/schemas/StatsOutput"
        );
    }

    #[test]
    fn results_are_described_as_written_and_params_as_read() {
        let doc = discover();
        let schemas = &doc["components"]["schemas"];
        // A default makes a member optional to read, but it is always written.
        assert_eq!(
            schemas["Task"]["required"],
            json!([
                "id",
                "module",
                "state",
                "priority",
                "created_at",
                "attempts"
            ])
        );
        assert_eq!(schemas["TaskSpec"]["required"], json!(["module"]));
        assert_eq!(schemas["TaskSpec"]["additionalProperties"], false);
        assert_eq!(
            schemas["TaskSpec"]["properties"]["run_at"],
            json!({"type": "string", "format": "date-time"})
        );
        assert_eq!(
            schemas["TaskSpec"]["properties"]["dirs"]["maxProperties"],
            8
        );
        assert_eq!(
            schemas["TaskSubscribed"]["required"],
            json!(["subscribed", "id"])
        );
        assert!(schemas["Attempt"]["properties"]["output_base64"].is_object());
    }
}
