//! The subset of OTLP's trace protobuf messages the exporter sends
//! (`opentelemetry/proto/collector/trace/v1/trace_service.proto` and the messages it uses,
//! field numbers as published), and the encoding of finished spans into them.

use fabric_types::trace::{AttrValue, SpanKind, SpanRecord, SpanStatus};

#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportTraceServiceRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<ResourceSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResourceSpans {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub scope_spans: Vec<ScopeSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Resource {
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ScopeSpans {
    #[prost(message, optional, tag = "1")]
    pub scope: Option<InstrumentationScope>,
    #[prost(message, repeated, tag = "2")]
    pub spans: Vec<Span>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct InstrumentationScope {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Span {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(string, tag = "3")]
    pub trace_state: String,
    #[prost(bytes = "vec", tag = "4")]
    pub parent_span_id: Vec<u8>,
    #[prost(string, tag = "5")]
    pub name: String,
    /// `SpanKind`: 1 internal, 2 server, 3 client.
    #[prost(int32, tag = "6")]
    pub kind: i32,
    #[prost(fixed64, tag = "7")]
    pub start_time_unix_nano: u64,
    #[prost(fixed64, tag = "8")]
    pub end_time_unix_nano: u64,
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<KeyValue>,
    #[prost(message, optional, tag = "15")]
    pub status: Option<Status>,
    /// The W3C trace flags in the low byte (`sampled`).
    #[prost(fixed32, tag = "16")]
    pub flags: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    #[prost(string, tag = "2")]
    pub message: String,
    /// `StatusCode`: 0 unset, 1 ok, 2 error.
    #[prost(int32, tag = "3")]
    pub code: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AnyValue {
    #[prost(oneof = "Value", tags = "1, 2, 3")]
    pub value: Option<Value>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Value {
    #[prost(string, tag = "1")]
    String(String),
    #[prost(bool, tag = "2")]
    Bool(bool),
    #[prost(int64, tag = "3")]
    Int(i64),
}

/// OTLP's `SpanKind` number.
pub fn kind(kind: SpanKind) -> i32 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
    }
}

/// OTLP's `StatusCode` number and the message.
pub fn status(status: &SpanStatus) -> (i32, &str) {
    match status {
        SpanStatus::Unset => (0, ""),
        SpanStatus::Ok => (1, ""),
        SpanStatus::Error(message) => (2, message),
    }
}

pub fn key_value(key: &str, value: &AttrValue) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(match value {
                AttrValue::Str(s) => Value::String(s.clone()),
                AttrValue::Int(i) => Value::Int(*i),
                AttrValue::Bool(b) => Value::Bool(*b),
            }),
        }),
    }
}

/// One export request: the resource (service name and attributes), this scope, the spans.
pub fn request(resource: &[KeyValue], spans: &[SpanRecord]) -> ExportTraceServiceRequest {
    let spans = spans
        .iter()
        .map(|s| {
            let (code, message) = status(&s.status);
            Span {
                trace_id: s.trace_id.0.to_vec(),
                span_id: s.span_id.0.to_vec(),
                trace_state: s.tracestate.clone().unwrap_or_default(),
                parent_span_id: s.parent_id.map(|p| p.0.to_vec()).unwrap_or_default(),
                name: s.name.clone(),
                kind: kind(s.kind),
                start_time_unix_nano: s.start_unix_nanos,
                end_time_unix_nano: s.end_unix_nanos,
                attributes: s.attributes.iter().map(|(k, v)| key_value(k, v)).collect(),
                status: Some(Status {
                    message: message.to_string(),
                    code,
                }),
                flags: 1,
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource.to_vec(),
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: super::SCOPE.to_string(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                }),
                spans,
            }],
        }],
    }
}
