//! OpenTelemetry traces: a span for each JSON-RPC call, joined to the caller's trace by its
//! W3C `traceparent`, the trace context handed to the tasks a call submits (the scheduler
//! records their task, attempt and egress spans), and the OTLP/HTTP export of them all.
//! Off unless configured: then the server builds no span and pays one `Option` check per
//! call.

mod config;
mod export;
mod json;
mod proto;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::http::HeaderMap;
use fabric_types::trace::{
    AttrValue, SpanId, SpanKind, SpanRecord, SpanSink, SpanStatus, TaskTrace, TraceId, TraceParent,
    tracestate, unix_nanos,
};
use futures_util::future::Either;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use config::{OtelConfig, OtelConfigError, Protocol, Root, Sampler};

use crate::rpc::RpcError;

/// The instrumentation scope every span is reported under.
pub(crate) const SCOPE: &str = "fabric";

/// The trace export of one server.
pub struct Otel {
    config: OtelConfig,
    tx: mpsc::Sender<SpanRecord>,
    counters: Arc<export::Counters>,
    stop: watch::Sender<bool>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Otel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values may be secrets: the endpoint and protocol only.
        f.debug_struct("Otel")
            .field("endpoint", &self.config.endpoint)
            .field("protocol", &self.config.protocol)
            .finish_non_exhaustive()
    }
}

impl Otel {
    /// Starts the exporter on the current tokio runtime; `node` is this server's node name
    /// (the resource's `service.instance.id`).
    pub fn start(config: OtelConfig, node: &str) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(config.max_queue);
        let (stop, stop_rx) = watch::channel(false);
        let counters = Arc::new(export::Counters::default());
        let mut resource = vec![
            proto::key_value("service.name", &config.service_name.as_str().into()),
            proto::key_value("service.instance.id", &node.into()),
            proto::key_value("service.version", &env!("CARGO_PKG_VERSION").into()),
        ];
        for (key, value) in &config.resource {
            resource.push(proto::key_value(key, &value.as_str().into()));
        }
        let worker = tokio::spawn(
            export::Worker {
                config: config.clone(),
                rx,
                stop: stop_rx,
                counters: counters.clone(),
                resource,
            }
            .run(),
        );
        tracing::info!(endpoint = %config.endpoint, protocol = ?config.protocol, "exporting traces over OTLP/HTTP");
        Arc::new(Self {
            config,
            tx,
            counters,
            stop,
            worker: Mutex::new(Some(worker)),
        })
    }

    /// Flushes the queued spans (within the export timeout) and stops the exporter. Spans
    /// recorded afterwards are dropped. Calling it twice is harmless.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let worker = self.worker.lock().expect("worker lock").take();
        if let Some(worker) = worker {
            // The flush's requests are each bounded by the timeout; bound the whole too.
            let bound = self.config.timeout * 2;
            if tokio::time::timeout(bound, worker).await.is_err() {
                tracing::warn!("the final span export did not finish in time; spans dropped");
            }
        }
    }

    /// The exporter's counters in the Prometheus text format.
    pub(crate) fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let counters = [
            (
                "fabric_otel_spans_exported_total",
                "Spans the OTLP endpoint accepted.",
                &self.counters.exported,
            ),
            (
                "fabric_otel_spans_dropped_total",
                "Spans dropped: the export queue was full or their export failed.",
                &self.counters.dropped,
            ),
            (
                "fabric_otel_export_failures_total",
                "Export requests that failed (refused, timed out or unreachable).",
                &self.counters.failed_exports,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
    }

    /// Runs one JSON-RPC call as a span (when its trace is sampled): a child of the
    /// caller's span when the request carried a valid `traceparent`, else a new trace. The
    /// tasks it submits carry the span's context.
    pub(crate) async fn traced(
        &self,
        method: &str,
        tenant: &str,
        call: impl Future<Output = Result<Value, RpcError>>,
    ) -> Result<Value, RpcError> {
        let incoming = INCOMING.try_with(Clone::clone).ok();
        let parent = incoming.as_ref().and_then(|i| i.parent);
        let trace_id = parent.map_or_else(random_trace_id, |p| p.trace_id);
        if !self
            .config
            .sampler
            .sampled(&trace_id.0, parent.map(|p| p.sampled))
        {
            return call.await;
        }
        let span = RpcSpan {
            trace_id,
            span_id: random_span_id(),
            parent_id: parent.map(|p| p.span_id),
            tracestate: incoming.and_then(|i| i.tracestate),
        };
        let start = SystemTime::now();
        let outcome = CURRENT.scope(span.clone(), call).await;
        // Only a method the server has names the span: a caller's made-up name does not.
        let name = crate::methods::METHODS
            .iter()
            .find(|m| m.name == method)
            .map_or("unknown", |m| m.name);
        let mut attributes: Vec<(&'static str, AttrValue)> = vec![
            ("rpc.system", "jsonrpc".into()),
            ("rpc.jsonrpc.version", "2.0".into()),
            ("rpc.method", name.into()),
            ("fabric.tenant", tenant.into()),
        ];
        let status = match &outcome {
            Ok(_) => SpanStatus::Unset,
            Err(error) => {
                attributes.push(("rpc.jsonrpc.error_code", error.code.into()));
                SpanStatus::Error(format!("JSON-RPC error {}", error.code))
            }
        };
        self.record(SpanRecord {
            trace_id: span.trace_id,
            span_id: span.span_id,
            parent_id: span.parent_id,
            tracestate: span.tracestate,
            name: name.to_string(),
            kind: SpanKind::Server,
            start_unix_nanos: unix_nanos(start),
            end_unix_nanos: unix_nanos(SystemTime::now()),
            attributes,
            status,
        });
        outcome
    }
}

impl SpanSink for Otel {
    fn record(&self, span: SpanRecord) {
        if self.tx.try_send(span).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn span_id(&self) -> SpanId {
        random_span_id()
    }
}

fn random_span_id() -> SpanId {
    loop {
        if let Some(id) = SpanId::new(rand::random()) {
            return id;
        }
    }
}

fn random_trace_id() -> TraceId {
    loop {
        if let Some(id) = TraceId::new(rand::random()) {
            return id;
        }
    }
}

/// What an HTTP request (or WebSocket upgrade) said of the caller's trace.
#[derive(Debug, Clone)]
pub(crate) struct Incoming {
    /// `None` when there was no `traceparent` or it was invalid (then ignored).
    parent: Option<TraceParent>,
    /// Kept only with a valid `traceparent`, as the specification says.
    tracestate: Option<String>,
}

/// The span of the call being served.
#[derive(Debug, Clone)]
struct RpcSpan {
    trace_id: TraceId,
    span_id: SpanId,
    parent_id: Option<SpanId>,
    tracestate: Option<String>,
}

tokio::task_local! {
    static INCOMING: Incoming;
    static CURRENT: RpcSpan;
}

/// The caller's trace context from a request's headers; `None` when tracing is off (then
/// the headers are not even read).
pub(crate) fn incoming(otel: Option<&Otel>, headers: &HeaderMap) -> Option<Incoming> {
    otel?;
    let parent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse);
    let tracestate = parent.and_then(|_| {
        // Several tracestate headers are one list, joined by commas.
        let joined: Vec<&str> = headers
            .get_all("tracestate")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!joined.is_empty())
            .then(|| joined.join(","))
            .and_then(|list| tracestate(&list))
    });
    Some(Incoming { parent, tracestate })
}

/// Runs `fut` with the request's trace context in reach of the calls it serves; as it is
/// when tracing is off.
pub(crate) fn scoped<F: Future>(
    incoming: Option<Incoming>,
    fut: F,
) -> impl Future<Output = F::Output> {
    match incoming {
        Some(incoming) => Either::Left(INCOMING.scope(incoming, fut)),
        None => Either::Right(fut),
    }
}

/// The trace context in reach now (to carry it into a spawned task).
pub(crate) fn current_incoming() -> Option<Incoming> {
    INCOMING.try_with(Clone::clone).ok()
}

/// The stored trace context of a task the current call submits: a new span for the task,
/// child of the call's span, starting now. `None` when the call is not traced.
pub(crate) fn task_trace() -> Option<String> {
    CURRENT
        .try_with(|span| {
            TaskTrace {
                trace_id: span.trace_id,
                span_id: random_span_id(),
                parent_id: Some(span.span_id),
                start_unix_nanos: unix_nanos(SystemTime::now()),
                tracestate: span.tracestate.clone(),
            }
            .encode()
        })
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, v.parse().unwrap());
        }
        map
    }

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[tokio::test]
    async fn invalid_trace_headers_are_ignored_never_an_error() {
        let config = OtelConfig::from_env(|k| {
            (k == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "http://127.0.0.1:9".to_string())
        })
        .unwrap()
        .unwrap();
        let otel = Otel::start(config, "n");
        assert!(incoming(None, &headers(&[("traceparent", PARENT)])).is_none());

        let got = incoming(
            Some(&otel),
            &headers(&[
                ("traceparent", PARENT),
                ("tracestate", "a=1"),
                ("tracestate", "b=2"),
            ]),
        )
        .unwrap();
        assert_eq!(got.parent.unwrap().header(), PARENT);
        assert_eq!(got.tracestate.as_deref(), Some("a=1,b=2"));

        for bad in [
            "",
            "00-xyz",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let got = incoming(
                Some(&otel),
                &headers(&[("traceparent", bad), ("tracestate", "a=1")]),
            )
            .unwrap();
            assert!(got.parent.is_none(), "{bad:?}");
            assert!(
                got.tracestate.is_none(),
                "tracestate without a valid traceparent is dropped"
            );
        }
        // A call with an invalid traceparent still runs, in a trace of its own.
        let answer = scoped(
            incoming(Some(&*otel), &headers(&[("traceparent", "garbage")])),
            otel.traced("task.get", "t", async {
                let trace = task_trace().expect("the call is traced");
                Ok(Value::String(trace))
            }),
        )
        .await
        .unwrap();
        let trace = TaskTrace::decode(answer.as_str().unwrap()).unwrap();
        assert_ne!(
            trace.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );

        // With a valid one, the task joins the caller's trace.
        let answer = scoped(
            incoming(Some(&*otel), &headers(&[("traceparent", PARENT)])),
            otel.traced("task.submit", "t", async {
                Ok(Value::String(task_trace().unwrap()))
            }),
        )
        .await
        .unwrap();
        let trace = TaskTrace::decode(answer.as_str().unwrap()).unwrap();
        assert_eq!(
            trace.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(
            task_trace().is_none(),
            "outside a call there is no trace context"
        );
        otel.shutdown().await;
    }
}
