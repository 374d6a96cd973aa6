//! OTLP/JSON: the protobuf export request in OTLP's JSON mapping (lowerCamelCase names,
//! trace and span ids as lowercase hex, 64-bit integers as decimal strings, enums as
//! numbers), for `OTEL_EXPORTER_OTLP_PROTOCOL=http/json`.

use serde_json::{Value as Json, json};

use super::proto::{AnyValue, ExportTraceServiceRequest, KeyValue, Value};

pub fn encode(request: &ExportTraceServiceRequest) -> Vec<u8> {
    let resource_spans: Vec<Json> = request
        .resource_spans
        .iter()
        .map(|rs| {
            let scope_spans: Vec<Json> = rs
                .scope_spans
                .iter()
                .map(|ss| {
                    let spans: Vec<Json> = ss.spans.iter().map(span).collect();
                    let scope = ss.scope.as_ref().map_or(
                        Json::Null,
                        |s| json!({"name": s.name, "version": s.version}),
                    );
                    json!({"scope": scope, "spans": spans})
                })
                .collect();
            let attributes = rs
                .resource
                .as_ref()
                .map_or_else(Vec::new, |r| attributes(&r.attributes));
            json!({"resource": {"attributes": attributes}, "scopeSpans": scope_spans})
        })
        .collect();
    serde_json::to_vec(&json!({ "resourceSpans": resource_spans }))
        .expect("a JSON value serializes")
}

fn span(s: &super::proto::Span) -> Json {
    let mut out = json!({
        "traceId": hex::encode(&s.trace_id),
        "spanId": hex::encode(&s.span_id),
        "name": s.name,
        "kind": s.kind,
        "startTimeUnixNano": s.start_time_unix_nano.to_string(),
        "endTimeUnixNano": s.end_time_unix_nano.to_string(),
        "attributes": attributes(&s.attributes),
        "flags": s.flags,
    });
    if !s.parent_span_id.is_empty() {
        out["parentSpanId"] = json!(hex::encode(&s.parent_span_id));
    }
    if !s.trace_state.is_empty() {
        out["traceState"] = json!(s.trace_state);
    }
    if let Some(status) = &s.status {
        let mut st = json!({ "code": status.code });
        if !status.message.is_empty() {
            st["message"] = json!(status.message);
        }
        out["status"] = st;
    }
    out
}

fn attributes(kvs: &[KeyValue]) -> Vec<Json> {
    kvs.iter()
        .map(|kv| json!({"key": kv.key, "value": any(kv.value.as_ref())}))
        .collect()
}

fn any(value: Option<&AnyValue>) -> Json {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::String(s)) => json!({ "stringValue": s }),
        Some(Value::Bool(b)) => json!({ "boolValue": b }),
        Some(Value::Int(i)) => json!({ "intValue": i.to_string() }),
        None => json!({}),
    }
}
