//! Outbound HTTP for components (`wasi:http/outgoing-handler`), deny by default: a request
//! goes out only when a policy the attempt was granted allows its scheme, host and port;
//! its name is resolved and checked ([`address`]) before the host connects to the address
//! it checked; the policy's headers (credentials the guest never sees) replace the guest's;
//! counts and sizes are bounded per attempt and metered into its usage.

mod address;
mod body;
mod calls;
mod hooks;
mod meter;
mod rule;
mod send;

use std::sync::Arc;

use http::{HeaderName, HeaderValue};

pub use address::non_public;
pub(crate) use calls::Call;
pub use calls::{EgressCall, EgressCalls, MAX_LOGGED_CALLS};
pub(crate) use hooks::EgressHooks;
pub use hooks::IDEMPOTENCY_KEY;
pub(crate) use meter::Meter;
pub use meter::{Decision, EgressEvent, EgressObserver};
pub use rule::{Destination, Host, Rule, Scheme};

/// Requests one policy allows per attempt unless it says otherwise.
pub const DEFAULT_MAX_REQUESTS: u32 = 64;
/// The largest response body one policy lets through unless it says otherwise: 8 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 8 << 20;
/// The largest request body one policy lets out unless it says otherwise: 8 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 8 << 20;
/// Denials an attempt records (`Attempt.denials`); later ones are only counted.
pub const MAX_RECORDED_DENIALS: usize = 16;
/// The longest URL a denial records; longer ones are cut (and end with `…`).
pub const MAX_DENIAL_URL_CHARS: usize = 256;

/// What the operator allows under one name: destinations, whether names may resolve to
/// non-public addresses, headers the host sets, and per-attempt bounds.
#[derive(Clone)]
pub struct EgressPolicy {
    pub name: String,
    pub rules: Vec<Rule>,
    /// Whether names may resolve to loopback, private, link-local and other non-public
    /// addresses. A rule naming an IP literal allows that address whatever this says.
    pub private: bool,
    /// Set by the host on every request this policy allows, replacing a guest header of
    /// the same name. Never shown to the guest nor recorded.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Requests this policy allows per attempt; past them requests are denied.
    pub max_requests: u32,
    /// The largest response body, in bytes; past it the body ends in an error.
    pub max_response_bytes: u64,
    /// The largest request body, in bytes; past it the request fails.
    pub max_request_bytes: u64,
    /// Trust anchors for `https`: the public web's (webpki roots) plus any the operator
    /// added for this policy.
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for EgressPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values are secrets: their names only.
        let headers: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("EgressPolicy")
            .field("name", &self.name)
            .field(
                "rules",
                &self.rules.iter().map(Rule::to_string).collect::<Vec<_>>(),
            )
            .field("private", &self.private)
            .field("headers", &headers)
            .field("max_requests", &self.max_requests)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("max_request_bytes", &self.max_request_bytes)
            .finish_non_exhaustive()
    }
}

impl EgressPolicy {
    /// A policy allowing `rules` (each `scheme://host[:port]`) with the default bounds, no
    /// headers, public addresses only, and the webpki roots for `https`.
    pub fn new(name: impl Into<String>, rules: &[impl AsRef<str>]) -> Result<Self, String> {
        let name = name.into();
        let rules = rules
            .iter()
            .map(|r| Rule::parse(r.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        if rules.is_empty() {
            return Err(format!("egress policy {name:?} allows nothing"));
        }
        Ok(Self {
            name,
            rules,
            private: false,
            headers: Vec::new(),
            max_requests: DEFAULT_MAX_REQUESTS,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            tls: tls_config(&[])?,
        })
    }

    /// Sets a header on every request this policy allows. Refused when the name or value is
    /// not a valid header (CR, LF and NUL are not).
    pub fn header(mut self, name: &str, value: &str) -> Result<Self, String> {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            format!(
                "egress policy {:?}: {name:?} is not a header name",
                self.name
            )
        })?;
        let mut value = HeaderValue::from_str(value).map_err(|_| {
            format!(
                "egress policy {:?}: the value of header {name} is not a valid header value",
                self.name
            )
        })?;
        value.set_sensitive(true);
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value));
        Ok(self)
    }

    /// Also trusts the CA certificates in these PEM files for `https`.
    pub fn trust(mut self, ca_pem_files: &[std::path::PathBuf]) -> Result<Self, String> {
        self.tls = tls_config(ca_pem_files)?;
        Ok(self)
    }
}

/// The egress an attempt may use: the policies its task named, and the seed of its
/// requests' idempotency keys (the task id: stable across the task's attempts); and, when
/// the embedder wants one (for trace spans), the log every request is entered in.
#[derive(Clone, Default)]
pub struct EgressGrant {
    pub policies: Vec<Arc<EgressPolicy>>,
    pub key_seed: String,
    pub calls: Option<Arc<EgressCalls>>,
}

impl std::fmt::Debug for EgressGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EgressGrant")
            .field(
                "policies",
                &self
                    .policies
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("key_seed", &self.key_seed)
            .field("logged", &self.calls.is_some())
            .finish()
    }
}

fn tls_config(ca_pem_files: &[std::path::PathBuf]) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for file in ca_pem_files {
        use rustls::pki_types::pem::PemObject;
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(file)
            .map_err(|e| format!("CA certificate file {}: {e}", file.display()))?;
        let mut added = 0;
        for cert in certs {
            let cert = cert.map_err(|e| format!("CA certificate file {}: {e}", file.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("CA certificate file {}: {e}", file.display()))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!(
                "CA certificate file {}: no PEM certificate in it",
                file.display()
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
