//! A loopback OTLP/HTTP receiver for the trace tests: HTTP/1.1 with keep-alive, every
//! export kept, decoded from protobuf with the official `opentelemetry-proto` message types
//! or from OTLP/JSON by its mapping, into spans the tests compare.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// How long spans may take to arrive.
const WAIT: Duration = Duration::from_secs(60);

/// One export request as the receiver got it.
#[derive(Debug, Clone)]
pub(crate) struct Export {
    pub(crate) path: String,
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) body: Vec<u8>,
}

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Mode {
    Ok,
    /// Reads each request and never answers.
    Silent,
}

/// A loopback OTLP/HTTP receiver: HTTP/1.1 with keep-alive, every request kept.
pub(crate) struct Receiver {
    pub(crate) url: String,
    pub(crate) got: Arc<Mutex<Vec<Export>>>,
}

impl Receiver {
    pub(crate) async fn start(mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let got: Arc<Mutex<Vec<Export>>> = Arc::default();
        let kept = got.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let kept = kept.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut read = BufReader::new(read);
                    loop {
                        let mut line = String::new();
                        if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                        let mut headers = BTreeMap::new();
                        loop {
                            let mut header = String::new();
                            if read.read_line(&mut header).await.unwrap_or(0) == 0 {
                                return;
                            }
                            let header = header.trim_end();
                            if header.is_empty() {
                                break;
                            }
                            if let Some((k, v)) = header.split_once(':') {
                                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                            }
                        }
                        let length: usize = headers
                            .get("content-length")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        let mut body = vec![0; length];
                        if read.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        kept.lock().unwrap().push(Export {
                            path,
                            headers,
                            body,
                        });
                        if mode == Mode::Silent {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            return;
                        }
                        let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                        if write.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { url, got }
    }

    pub(crate) fn exports(&self) -> Vec<Export> {
        self.got.lock().unwrap().clone()
    }
}

/// A span as either encoding carries it, ids in hex.
#[derive(Debug, Clone)]
pub(crate) struct Span {
    pub(crate) trace_id: String,
    pub(crate) span_id: String,
    pub(crate) parent: String,
    pub(crate) trace_state: String,
    pub(crate) name: String,
    pub(crate) kind: i64,
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) attributes: BTreeMap<String, Value>,
    pub(crate) status_code: i64,
}

impl Span {
    pub(crate) fn str(&self, key: &str) -> &str {
        self.attributes
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("span {} has no string {key}: {self:?}", self.name))
    }

    pub(crate) fn int(&self, key: &str) -> i64 {
        self.attributes
            .get(key)
            .and_then(Value::as_i64)
            .unwrap_or_else(|| panic!("span {} has no integer {key}: {self:?}", self.name))
    }
}

/// The resource attributes and spans of one protobuf export, decoded with the official
/// message types.
pub(crate) fn decode_protobuf(body: &[u8]) -> (BTreeMap<String, Value>, Vec<Span>) {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
    let request = ExportTraceServiceRequest::decode(body).expect("a valid OTLP protobuf export");
    let attrs = |kvs: &[KeyValue]| -> BTreeMap<String, Value> {
        kvs.iter()
            .map(|kv| {
                let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(any_value::Value::StringValue(s)) => json!(s),
                    Some(any_value::Value::IntValue(i)) => json!(i),
                    Some(any_value::Value::BoolValue(b)) => json!(b),
                    other => panic!("unexpected attribute value {other:?}"),
                };
                (kv.key.clone(), value)
            })
            .collect()
    };
    let mut resource = BTreeMap::new();
    let mut spans = Vec::new();
    for rs in &request.resource_spans {
        resource = attrs(&rs.resource.as_ref().expect("a resource").attributes);
        for ss in &rs.scope_spans {
            assert_eq!(ss.scope.as_ref().expect("a scope").name, "fabric");
            for s in &ss.spans {
                spans.push(Span {
                    trace_id: hex::encode(&s.trace_id),
                    span_id: hex::encode(&s.span_id),
                    parent: hex::encode(&s.parent_span_id),
                    trace_state: s.trace_state.clone(),
                    name: s.name.clone(),
                    kind: i64::from(s.kind),
                    start: s.start_time_unix_nano,
                    end: s.end_time_unix_nano,
                    attributes: attrs(&s.attributes),
                    status_code: s.status.as_ref().map_or(0, |st| i64::from(st.code)),
                });
            }
        }
    }
    (resource, spans)
}

/// The same from an OTLP/JSON export, checking its mapping: lowerCamelCase names, ids as
/// lowercase hex, 64-bit integers as decimal strings.
pub(crate) fn decode_json(body: &[u8]) -> (BTreeMap<String, Value>, Vec<Span>) {
    let request: Value = serde_json::from_slice(body).expect("a JSON export");
    let attrs = |kvs: &Value| -> BTreeMap<String, Value> {
        kvs.as_array()
            .expect("attributes are an array")
            .iter()
            .map(|kv| {
                let v = &kv["value"];
                let value = if let Some(s) = v.get("stringValue") {
                    s.clone()
                } else if let Some(i) = v.get("intValue") {
                    let text = i.as_str().expect("intValue is a decimal string");
                    json!(text.parse::<i64>().expect("a decimal integer"))
                } else if let Some(b) = v.get("boolValue") {
                    b.clone()
                } else {
                    panic!("unexpected attribute value {v}")
                };
                (kv["key"].as_str().unwrap().to_string(), value)
            })
            .collect()
    };
    let hex_id = |v: &Value, len: usize| -> String {
        let text = v.as_str().unwrap_or("").to_string();
        assert!(
            text.is_empty()
                || (text.len() == len
                    && text
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())),
            "{text:?} is not {len} lowercase hex digits"
        );
        text
    };
    let nanos = |v: &Value| -> u64 {
        v.as_str()
            .expect("a timestamp is a decimal string")
            .parse()
            .unwrap()
    };
    let mut resource = BTreeMap::new();
    let mut spans = Vec::new();
    for rs in request["resourceSpans"].as_array().expect("resourceSpans") {
        resource = attrs(&rs["resource"]["attributes"]);
        for ss in rs["scopeSpans"].as_array().expect("scopeSpans") {
            assert_eq!(ss["scope"]["name"], "fabric");
            for s in ss["spans"].as_array().expect("spans") {
                spans.push(Span {
                    trace_id: hex_id(&s["traceId"], 32),
                    span_id: hex_id(&s["spanId"], 16),
                    parent: hex_id(&s["parentSpanId"], 16),
                    trace_state: s["traceState"].as_str().unwrap_or("").to_string(),
                    name: s["name"].as_str().unwrap().to_string(),
                    kind: s["kind"].as_i64().expect("kind is a number"),
                    start: nanos(&s["startTimeUnixNano"]),
                    end: nanos(&s["endTimeUnixNano"]),
                    attributes: attrs(&s["attributes"]),
                    status_code: s["status"]["code"].as_i64().unwrap_or(0),
                });
            }
        }
    }
    (resource, spans)
}

pub(crate) fn decode(export: &Export) -> (BTreeMap<String, Value>, Vec<Span>) {
    match export.headers.get("content-type").map(String::as_str) {
        Some("application/x-protobuf") => decode_protobuf(&export.body),
        Some("application/json") => decode_json(&export.body),
        other => panic!("unexpected content type {other:?}"),
    }
}

pub(crate) fn spans(receiver: &Receiver) -> Vec<Span> {
    receiver
        .exports()
        .iter()
        .flat_map(|e| decode(e).1)
        .collect()
}

/// Waits until the receiver holds spans for which `done` holds.
pub(crate) async fn spans_until(receiver: &Receiver, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
    let until = Instant::now() + WAIT;
    loop {
        let spans = spans(receiver);
        if done(&spans) {
            return spans;
        }
        assert!(
            Instant::now() < until,
            "spans never arrived; got {spans:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
