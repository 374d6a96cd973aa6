//! The decision on each outbound request a component makes: which of the attempt's
//! policies allows it (if any), within that policy's count, with the policy's headers
//! set and an idempotency key added; then [`super::send`] carries it.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use http::HeaderValue;
use sha2::{Digest, Sha256};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::{Decision, Destination, EgressGrant, Meter};

/// The header carrying a key derived from the task and the request's number within the
/// attempt: the same on every attempt of the task, so an API that honours it can drop
/// the duplicates of a retried agent's calls. A guest that sets it keeps its own.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

type Sent = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
>;

/// One attempt's egress: its grant, how many requests each policy has allowed, and its
/// meter.
pub(crate) struct EgressHooks {
    grant: EgressGrant,
    used: Vec<u32>,
    requests: u64,
    deadline: Instant,
    meter: Arc<Meter>,
}

impl EgressHooks {
    pub fn new(grant: EgressGrant, deadline: Instant, meter: Arc<Meter>) -> Self {
        Self {
            used: vec![0; grant.policies.len()],
            grant,
            requests: 0,
            deadline,
            meter,
        }
    }

    /// The policy allowing `to`, by index, counted against its `max_requests`; or why the
    /// request is refused and under which policy.
    fn decide(&mut self, to: &Destination) -> Result<usize, (Option<&str>, String)> {
        let Some(i) = self
            .grant
            .policies
            .iter()
            .position(|p| p.rules.iter().any(|r| r.matches(to)))
        else {
            return Err((
                None,
                if self.grant.policies.is_empty() {
                    "this attempt was granted no egress".to_string()
                } else {
                    format!("no egress policy of this attempt allows {to}")
                },
            ));
        };
        let policy = &self.grant.policies[i];
        if self.used[i] >= policy.max_requests {
            return Err((
                Some(&policy.name),
                format!(
                    "egress policy {:?} allows {} requests per attempt, all made",
                    policy.name, policy.max_requests
                ),
            ));
        }
        self.used[i] += 1;
        Ok(i)
    }

    /// The idempotency key of this attempt's `number`th request.
    fn key(&self, number: u64) -> HeaderValue {
        let digest = Sha256::new()
            .chain_update(self.grant.key_seed.as_bytes())
            .chain_update(b"\0")
            .chain_update(number.to_be_bytes())
            .finalize();
        HeaderValue::from_str(&hex::encode(&digest[..16])).expect("hex is a valid header value")
    }
}

impl WasiHttpHooks for EgressHooks {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_errors: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        let number = self.requests;
        self.requests += 1;
        let url = shown_url(request.uri());
        let uri = request.uri();
        let to = Destination::parse(
            uri.scheme_str().unwrap_or(""),
            uri.authority().map(|a| a.as_str()).unwrap_or(""),
        );
        let decided = to
            .map_err(|why| (None, format!("{url} cannot be allowed: {why}")))
            .and_then(|to| self.decide(&to).map(|i| (i, to)));
        let (i, to) = match decided {
            Ok(allowed) => allowed,
            Err((policy, reason)) => {
                let policy = policy.map(str::to_string);
                if let Some(log) = &self.grant.calls {
                    let method = request.method().as_str();
                    if let Some(call) = log.start(request.uri(), method, policy.as_deref()) {
                        call.decided(Decision::Denied, None);
                    }
                }
                self.meter.deny(policy.as_deref(), &url, reason);
                return Box::new(async { Err(Error::HttpRequestDenied) });
            }
        };
        let policy = self.grant.policies[i].clone();
        let call = self.grant.calls.as_ref().and_then(|log| {
            log.start(request.uri(), request.method().as_str(), Some(&policy.name))
        });
        let headers = request.headers_mut();
        for (name, value) in &policy.headers {
            headers.insert(name.clone(), value.clone());
        }
        if !headers.contains_key(IDEMPOTENCY_KEY) {
            headers.insert(IDEMPOTENCY_KEY, self.key(number));
        }
        Box::new(super::send::send(super::send::Outbound {
            request,
            to,
            policy,
            options,
            deadline: self.deadline,
            meter: self.meter.clone(),
            url,
            call,
        }))
    }
}

/// What a denial records of a request: scheme, authority and path, never the query (nor
/// any header, so never a secret).
fn shown_url(uri: &http::Uri) -> String {
    format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or(""),
        uri.authority().map(|a| a.as_str()).unwrap_or(""),
        uri.path()
    )
}
