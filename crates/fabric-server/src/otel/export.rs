//! The batch exporter: a bounded queue that never blocks whoever records a span (a full
//! queue drops the span and counts it), and one task that posts batches to the OTLP/HTTP
//! endpoint, one request at a time, each under the export timeout; at shutdown it flushes
//! what is queued, bounded by the same timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fabric_types::trace::SpanRecord;
use prost::Message as _;
use tokio::sync::{mpsc, watch};

use super::config::{OtelConfig, Protocol};
use super::proto::{self, KeyValue};

/// What the exporter did, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub exported: AtomicU64,
    pub dropped: AtomicU64,
    pub failed_exports: AtomicU64,
}

/// The longest time between two warnings about failing exports.
const WARN_EVERY: Duration = Duration::from_secs(60);

pub(crate) struct Worker {
    pub config: OtelConfig,
    pub rx: mpsc::Receiver<SpanRecord>,
    pub stop: watch::Receiver<bool>,
    pub counters: Arc<Counters>,
    pub resource: Vec<KeyValue>,
}

impl Worker {
    pub async fn run(mut self) {
        let client = match reqwest::Client::builder()
            .timeout(self.config.timeout)
            .connect_timeout(self.config.timeout)
            .build()
        {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the OTLP HTTP client; spans are dropped");
                return;
            }
        };
        let mut last_warning: Option<Instant> = None;
        let mut batch = Vec::with_capacity(self.config.max_batch);
        loop {
            // Wait for a first span (or the stop), then for a full batch or the delay.
            let stopping = tokio::select! {
                span = self.rx.recv() => match span {
                    Some(span) => { batch.push(span); false }
                    None => true,
                },
                _ = self.stop.wait_for(|stop| *stop) => true,
            };
            if !stopping {
                let until = tokio::time::Instant::now() + self.config.schedule_delay;
                while batch.len() < self.config.max_batch {
                    tokio::select! {
                        span = self.rx.recv() => match span {
                            Some(span) => batch.push(span),
                            None => break,
                        },
                        () = tokio::time::sleep_until(until) => break,
                        _ = self.stop.wait_for(|stop| *stop) => break,
                    }
                }
                self.send(&client, &mut batch, &mut last_warning).await;
                continue;
            }
            // Stopping: flush what is queued, batch by batch.
            while let Ok(span) = self.rx.try_recv() {
                batch.push(span);
                if batch.len() >= self.config.max_batch {
                    self.send(&client, &mut batch, &mut last_warning).await;
                }
            }
            self.send(&client, &mut batch, &mut last_warning).await;
            return;
        }
    }

    async fn send(
        &self,
        client: &reqwest::Client,
        batch: &mut Vec<SpanRecord>,
        last_warning: &mut Option<Instant>,
    ) {
        if batch.is_empty() {
            return;
        }
        let spans = std::mem::take(batch);
        let request = proto::request(&self.resource, &spans);
        let (body, content_type) = match self.config.protocol {
            Protocol::Protobuf => (request.encode_to_vec(), "application/x-protobuf"),
            Protocol::Json => (super::json::encode(&request), "application/json"),
        };
        let mut post = client
            .post(&self.config.endpoint)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        for (name, value) in &self.config.headers {
            post = post.header(name.as_str(), value.as_str());
        }
        let failure = match post.send().await {
            Ok(response) if response.status().is_success() => {
                self.counters
                    .exported
                    .fetch_add(spans.len() as u64, Ordering::Relaxed);
                return;
            }
            Ok(response) => format!("the collector answered {}", response.status()),
            Err(e) if e.is_timeout() => format!("no answer within {:?}", self.config.timeout),
            Err(e) => format!("{e}"),
        };
        self.counters.failed_exports.fetch_add(1, Ordering::Relaxed);
        self.counters
            .dropped
            .fetch_add(spans.len() as u64, Ordering::Relaxed);
        if last_warning.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            *last_warning = Some(Instant::now());
            tracing::warn!(
                endpoint = %self.config.endpoint,
                spans = spans.len(),
                error = %failure,
                "exporting spans failed; they are dropped (further failures are counted in fabric_otel_export_failures_total, logged at most once a minute)"
            );
        }
    }
}
