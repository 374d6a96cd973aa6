//! The log of one attempt's outbound requests, one entry each (method, host, port, status,
//! bytes, start and end; never the query nor a header), kept when the embedder asks for it
//! (for trace spans) and bounded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::Decision;

/// The most requests one attempt's log keeps; later ones are only counted
/// ([`EgressCalls::dropped`]). Policies allow 64 requests per attempt by default.
pub const MAX_LOGGED_CALLS: usize = 256;

/// One outbound request as the log holds it once the attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressCall {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The host the guest named (a name or an IP literal), without port or path.
    pub host: String,
    pub port: u16,
    /// The policy that allowed it (or would have, for a denial past its bounds).
    pub policy: Option<String>,
    pub decision: Decision,
    /// The response's status, when one came.
    pub status: Option<u16>,
    /// Request body bytes sent.
    pub bytes_sent: u64,
    /// Response body bytes the guest read before the attempt ended.
    pub bytes_received: u64,
    pub started: SystemTime,
    /// When the response's body ended, else when its headers came or the request failed
    /// (or when the attempt ended, for a response still being read).
    pub ended: SystemTime,
}

/// Where the attempt's requests are logged; shared by the hooks and the bodies.
#[derive(Debug, Default)]
pub struct EgressCalls {
    calls: Mutex<Vec<Arc<Call>>>,
    dropped: AtomicU64,
}

/// One request being carried.
#[derive(Debug)]
pub(crate) struct Call {
    method: String,
    host: String,
    port: u16,
    policy: Option<String>,
    started: SystemTime,
    state: Mutex<(Option<Decision>, Option<u16>, Option<SystemTime>)>,
    sent: AtomicU64,
    received: AtomicU64,
}

impl EgressCalls {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Logs a request that starts now; `None` (and counted) past [`MAX_LOGGED_CALLS`].
    pub(crate) fn start(
        &self,
        uri: &http::Uri,
        method: &str,
        policy: Option<&str>,
    ) -> Option<Arc<Call>> {
        let mut calls = self.calls.lock().expect("calls lock");
        if calls.len() >= MAX_LOGGED_CALLS {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let default_port = if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        };
        let call = Arc::new(Call {
            method: method.to_string(),
            host: uri
                .host()
                .unwrap_or("")
                .trim_matches(['[', ']'])
                .to_string(),
            port: uri.port_u16().unwrap_or(default_port),
            policy: policy.map(str::to_string),
            started: SystemTime::now(),
            state: Mutex::new((None, None, None)),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
        });
        calls.push(call.clone());
        Some(call)
    }

    /// Requests past [`MAX_LOGGED_CALLS`], not logged.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Every logged request, oldest first, emptying the log.
    pub fn take(&self) -> Vec<EgressCall> {
        let calls = std::mem::take(&mut *self.calls.lock().expect("calls lock"));
        let now = SystemTime::now();
        calls
            .into_iter()
            .map(|call| {
                let (decision, status, ended) = *call.state.lock().expect("call lock");
                EgressCall {
                    method: call.method.clone(),
                    host: call.host.clone(),
                    port: call.port,
                    policy: call.policy.clone(),
                    decision: decision.unwrap_or(Decision::Failed),
                    status,
                    bytes_sent: call.sent.load(Ordering::Relaxed),
                    bytes_received: call.received.load(Ordering::Relaxed),
                    started: call.started,
                    ended: ended.unwrap_or(now),
                }
            })
            .collect()
    }
}

impl Call {
    /// The request ended (denied, failed) or its response's headers came (answered).
    pub fn decided(&self, decision: Decision, status: Option<u16>) {
        *self.state.lock().expect("call lock") = (Some(decision), status, Some(SystemTime::now()));
    }

    /// The response's body ended: the request ends now.
    pub fn body_ended(&self) {
        self.state.lock().expect("call lock").2 = Some(SystemTime::now());
    }

    pub fn sent(&self, bytes: u64) {
        self.sent.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn received(&self, bytes: u64) {
        self.received.fetch_add(bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_keeps_method_host_port_status_and_bytes_and_is_bounded() {
        let log = EgressCalls::new();
        let uri: http::Uri = "https://api.example.com/v1/items?secret=1".parse().unwrap();
        let call = log.start(&uri, "POST", Some("api")).unwrap();
        call.sent(10);
        call.received(7);
        call.decided(Decision::Answered, Some(201));
        let literal: http::Uri = "http://[::1]:8080/x".parse().unwrap();
        log.start(&literal, "GET", None)
            .unwrap()
            .decided(Decision::Denied, None);
        let calls = log.take();
        assert_eq!(calls.len(), 2);
        assert_eq!(
            (
                calls[0].method.as_str(),
                calls[0].host.as_str(),
                calls[0].port
            ),
            ("POST", "api.example.com", 443)
        );
        assert_eq!(calls[0].policy.as_deref(), Some("api"));
        assert_eq!(
            (
                calls[0].status,
                calls[0].bytes_sent,
                calls[0].bytes_received
            ),
            (Some(201), 10, 7)
        );
        assert!(calls[0].ended >= calls[0].started);
        assert_eq!((calls[1].host.as_str(), calls[1].port), ("::1", 8080));
        assert_eq!(calls[1].decision, Decision::Denied);
        assert!(log.take().is_empty(), "taking empties the log");

        for _ in 0..MAX_LOGGED_CALLS + 3 {
            log.start(&uri, "GET", None);
        }
        assert_eq!(log.take().len(), MAX_LOGGED_CALLS);
        assert_eq!(log.dropped(), 3);
    }
}
