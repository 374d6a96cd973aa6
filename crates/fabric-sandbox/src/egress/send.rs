//! Carries one allowed request: resolves its host, keeps the addresses the policy lets it
//! reach, connects to one of exactly those (no second resolution), speaks TLS for `https`,
//! sends over HTTP/1.1 and hands back a response whose body is bounded and metered. Every
//! wait ends at the attempt's deadline at the latest.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::timeout_at;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

use super::body::{Bounded, Direction};
use super::meter::Decision;
use super::{Call, Destination, EgressPolicy, Host, Meter, Scheme, non_public};

/// An allowed request and what carrying it needs.
pub(crate) struct Outbound {
    pub request: http::Request<WasiBody>,
    pub to: Destination,
    pub policy: Arc<EgressPolicy>,
    pub options: Option<RequestOptions>,
    pub deadline: Instant,
    pub meter: Arc<Meter>,
    /// As a denial would record it.
    pub url: String,
    /// The request's entry in the attempt's log, when it keeps one.
    pub call: Option<Arc<Call>>,
}

type Io = Box<dyn Future<Output = Result<(), Error>> + Send>;

trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

pub(crate) async fn send(out: Outbound) -> Result<(http::Response<WasiBody>, Io), Error> {
    let Outbound {
        mut request,
        to,
        policy,
        options,
        deadline,
        meter,
        url,
        call,
    } = out;
    let decided = |decision: Decision, status: Option<u16>| {
        if let Some(call) = &call {
            call.decided(decision, status);
        }
    };
    let addrs = match addresses(&to, &policy, deadline).await {
        Ok(addrs) => addrs,
        Err(Refusal::Denied(reason)) => {
            decided(Decision::Denied, None);
            meter.deny(Some(&policy.name), &url, reason);
            return Err(Error::HttpRequestDenied);
        }
        Err(Refusal::Failed(e)) => {
            decided(Decision::Failed, None);
            meter.observe(Some(&policy.name), Decision::Failed, None);
            return Err(e);
        }
    };
    meter.sending();
    let started = Instant::now();
    let failed = |e: Error| {
        decided(Decision::Failed, None);
        meter.observe(Some(&policy.name), Decision::Failed, None);
        e
    };
    let until = |wait: Option<std::time::Duration>| match wait {
        Some(wait) => deadline.min(Instant::now() + wait),
        None => deadline,
    };
    let connect_by = until(options.and_then(|o| o.connect_timeout));
    let stream = connect(&addrs, connect_by).await.map_err(failed)?;
    let stream: Box<dyn Stream> = match to.scheme {
        Scheme::Http => Box::new(stream),
        Scheme::Https => {
            let name = match &to.host {
                Host::Ip(ip) => rustls::pki_types::ServerName::IpAddress((*ip).into()),
                Host::Name(name) | Host::Wildcard(name) => {
                    rustls::pki_types::ServerName::try_from(name.clone())
                        .map_err(|_| failed(Error::HttpRequestUriInvalid))?
                }
            };
            let connector = tokio_rustls::TlsConnector::from(policy.tls.clone());
            let tls = timeout_at(connect_by.into(), connector.connect(name, stream))
                .await
                .map_err(|_| failed(Error::ConnectionTimeout))?
                .map_err(|e| failed(Error::Tls(e)))?;
            Box::new(tls)
        }
    };
    let (mut sender, conn) = timeout_at(
        connect_by.into(),
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| failed(Error::ConnectionTimeout))?
    .map_err(|e| failed(e.into()))?;

    // On the wire the request names its path only; the authority went to the connection.
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    *request.uri_mut() = path
        .parse()
        .map_err(|_| failed(Error::HttpRequestUriInvalid))?;
    let request = request.map(|body| {
        Bounded::new(
            body,
            Direction::Request,
            policy.max_request_bytes,
            meter.clone(),
            call.clone(),
        )
    });

    let first_byte_by = until(options.and_then(|o| o.first_byte_timeout));
    let mut conn = Box::pin(conn);
    let mut conn_done = false;
    let answer = timeout_at(first_byte_by.into(), async {
        let response = sender.send_request(request);
        tokio::pin!(response);
        loop {
            tokio::select! {
                response = &mut response => return response.map_err(Error::from),
                ended = &mut conn, if !conn_done => {
                    conn_done = true;
                    ended.map_err(Error::from)?;
                }
            }
        }
    })
    .await;
    let response = match answer {
        Err(_) => return Err(failed(Error::ConnectionReadTimeout)),
        Ok(Err(e)) => return Err(failed(e)),
        Ok(Ok(response)) => response,
    };
    let max = policy.max_response_bytes;
    if response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|len| len > max)
    {
        return Err(failed(Error::HttpResponseBodySize(Some(max))));
    }
    decided(Decision::Answered, Some(response.status().as_u16()));
    meter.observe(
        Some(&policy.name),
        Decision::Answered,
        Some(started.elapsed()),
    );
    let response = response.map(|incoming| {
        Bounded::new(
            incoming,
            Direction::Response,
            max,
            meter.clone(),
            call.clone(),
        )
        .boxed_unsync()
    });
    let io: Io = Box::new(async move {
        if conn_done {
            return Ok(());
        }
        conn.await.map_err(Error::from)
    });
    Ok((response, io))
}

/// Why a request goes no further before connecting.
enum Refusal {
    /// The policy forbids every address the name has: a denial.
    Denied(String),
    /// The name could not be resolved.
    Failed(Error),
}

/// The addresses `to` may be reached at: an IP literal as it is (a rule named it); a name's
/// resolved addresses, keeping only public ones unless the policy allows private ones.
async fn addresses(
    to: &Destination,
    policy: &EgressPolicy,
    deadline: Instant,
) -> Result<Vec<SocketAddr>, Refusal> {
    let name = match &to.host {
        Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, to.port)]),
        Host::Name(name) | Host::Wildcard(name) => name,
    };
    let resolved: Vec<SocketAddr> = match timeout_at(
        deadline.into(),
        tokio::net::lookup_host((name.as_str(), to.port)),
    )
    .await
    {
        Err(_) => return Err(Refusal::Failed(Error::DnsTimeout)),
        Ok(Err(e)) => {
            return Err(Refusal::Failed(Error::DnsError {
                rcode: Some(e.to_string()),
                info_code: None,
            }));
        }
        Ok(Ok(addrs)) => addrs.collect(),
    };
    if resolved.is_empty() {
        return Err(Refusal::Failed(Error::DestinationNotFound));
    }
    if policy.private {
        return Ok(resolved);
    }
    let (public, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = resolved
        .into_iter()
        .partition(|a| non_public(a.ip()).is_none());
    if public.is_empty() {
        let first: IpAddr = refused[0].ip();
        return Err(Refusal::Denied(format!(
            "{name} resolves only to non-public addresses ({first} is {}), which policy {:?} \
             does not allow",
            non_public(first).unwrap_or("non-public"),
            policy.name
        )));
    }
    Ok(public)
}

/// A connection to the first of `addrs` that takes one by `by`.
async fn connect(addrs: &[SocketAddr], by: Instant) -> Result<TcpStream, Error> {
    let mut last = Error::ConnectionRefused;
    for addr in addrs {
        match timeout_at(by.into(), TcpStream::connect(addr)).await {
            Err(_) => return Err(Error::ConnectionTimeout),
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => last = Error::Connect(e),
        }
    }
    Err(last)
}
