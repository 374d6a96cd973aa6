//! What an attempt's outbound requests did: counters and the first denials, shared by the
//! hooks and the tasks that carry requests, read into the attempt's usage at its end; and
//! the events the embedder observes (for metrics).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fabric_types::{Denial, Usage};

use super::{MAX_DENIAL_URL_CHARS, MAX_RECORDED_DENIALS};

/// One outbound request's fate, for the embedder's metrics.
#[derive(Debug, Clone)]
pub struct EgressEvent {
    /// The policy that allowed it (or, for a denial past a policy's bounds or address
    /// check, the policy that would have); `None` when no policy matched.
    pub policy: Option<String>,
    pub decision: Decision,
    /// From the request to its response's headers, for answered requests.
    pub elapsed: Option<Duration>,
}

/// How an outbound request ended, as far as the host saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Allowed, sent, and answered with a response (whatever its status).
    Answered,
    /// Allowed, but no response came: the connection, TLS or the peer failed.
    Failed,
    /// Refused: no policy allows it, a policy's bound was reached, or the address check.
    Denied,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Answered => "answered",
            Decision::Failed => "failed",
            Decision::Denied => "denied",
        }
    }
}

/// Receives every [`EgressEvent`] of every attempt.
pub type EgressObserver = Arc<dyn Fn(&EgressEvent) + Send + Sync>;

/// One attempt's egress counters.
#[derive(Default)]
pub(crate) struct Meter {
    requests: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    denied: AtomicU64,
    denials: Mutex<Vec<Denial>>,
    observer: Option<EgressObserver>,
}

impl Meter {
    pub fn new(observer: Option<EgressObserver>) -> Arc<Self> {
        Arc::new(Self {
            observer,
            ..Self::default()
        })
    }

    /// A request was allowed and is being sent.
    pub fn sending(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn sent(&self, bytes: u64) {
        self.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn received(&self, bytes: u64) {
        self.bytes_received.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A request was refused: counted, and recorded while fewer than
    /// [`MAX_RECORDED_DENIALS`] are.
    pub fn deny(&self, policy: Option<&str>, url: &str, reason: String) {
        self.denied.fetch_add(1, Ordering::Relaxed);
        let mut denials = self.denials.lock().expect("denials lock");
        if denials.len() < MAX_RECORDED_DENIALS {
            denials.push(Denial {
                url: cut(url),
                reason,
            });
        }
        drop(denials);
        self.observe(policy, Decision::Denied, None);
    }

    pub fn observe(&self, policy: Option<&str>, decision: Decision, elapsed: Option<Duration>) {
        if let Some(observer) = &self.observer {
            observer(&EgressEvent {
                policy: policy.map(str::to_string),
                decision,
                elapsed,
            });
        }
    }

    /// Adds the counters to `usage` and returns the recorded denials.
    pub fn report(&self, usage: &mut Usage) -> Vec<Denial> {
        usage.http_requests = self.requests.load(Ordering::Relaxed);
        usage.http_bytes_sent = self.bytes_sent.load(Ordering::Relaxed);
        usage.http_bytes_received = self.bytes_received.load(Ordering::Relaxed);
        usage.http_denied = self.denied.load(Ordering::Relaxed);
        std::mem::take(&mut *self.denials.lock().expect("denials lock"))
    }
}

fn cut(url: &str) -> String {
    match url.char_indices().nth(MAX_DENIAL_URL_CHARS) {
        None => url.to_string(),
        Some((at, _)) => format!("{}…", &url[..at]),
    }
}
