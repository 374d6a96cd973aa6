//! The HTTP surface: `POST /rpc` (JSON-RPC, body size bounded), `GET /rpc` (WebSocket),
//! `/healthz`, `/readyz`, `/metrics` and the dashboard at `/ui`, with a request id on every log line of a request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fabric_store::StatsParams;
use fabric_types::wire::code;
use serde_json::Value;
use tracing::Instrument;

use crate::auth::Principal;
use crate::methods::Transport;
use crate::metrics::Gauges;
use crate::rpc::{self, RpcError};
use crate::server::App;

/// The whole HTTP API of one server.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/rpc", get(rpc_websocket).post(rpc_http))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::ui::routes())
        .layer(middleware::from_fn(request_id))
        .with_state(app)
}

static REQUESTS: AtomicU64 = AtomicU64::new(0);

/// Gives each request an id (or keeps the caller's `x-request-id`), runs it inside a
/// tracing span carrying that id, and echoes it in the response.
async fn request_id(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64)
        .map(str::to_owned)
        .unwrap_or_else(|| {
            format!(
                "{:x}-{:x}",
                std::process::id(),
                REQUESTS.fetch_add(1, Ordering::Relaxed)
            )
        });
    let span = tracing::info_span!("request", id = %id, method = %request.method(), path = %request.uri().path());
    let mut response = next.run(request).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn principal(app: &App, headers: &HeaderMap) -> Result<Principal, Box<Response>> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    app.auth.principal(authorization).ok_or_else(|| {
        let error = RpcError::new(
            code::UNAUTHORIZED,
            "unauthorized: send Authorization: Bearer <token> with a token from the server's --auth file",
        );
        Box::new(json_response(
            StatusCode::UNAUTHORIZED,
            &rpc::error_response(Value::Null, &error),
        ))
    })
}

/// A browser sends `Origin` with every cross-origin `POST` and WebSocket upgrade: a call to
/// `/rpc` from a web page of another origin than the server it reached (its `Host`) is
/// refused with 403, so that a page the user visits cannot drive a server it can reach
/// (without `--auth`, a loopback one). Clients that are not browsers send no `Origin`.
fn refuse_foreign_origin(headers: &HeaderMap) -> Option<Response> {
    let origin = headers.get(header::ORIGIN)?;
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin = String::from_utf8_lossy(origin.as_bytes());
    if same_origin(&origin, host) {
        return None;
    }
    let error = RpcError::new(
        code::UNAUTHORIZED,
        format!(
            "forbidden: a call from the web page of {origin:?} to this server is refused (cross-origin)"
        ),
    );
    Some(json_response(
        StatusCode::FORBIDDEN,
        &rpc::error_response(Value::Null, &error),
    ))
}

/// Whether `origin` (`scheme://host[:port]`) names the server reached at `host`.
fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let authority = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'));
    matches!((authority, host), (Some(a), Some(h)) if !a.is_empty() && a.eq_ignore_ascii_case(h))
}

async fn rpc_http(State(app): State<Arc<App>>, request: Request) -> Response {
    if let Some(refusal) = refuse_foreign_origin(request.headers()) {
        return refusal;
    }
    let who = match principal(&app, request.headers()) {
        Ok(who) => who,
        Err(response) => return *response,
    };
    let incoming = crate::otel::incoming(app.otel.as_deref(), request.headers());
    let limit = app.config.max_request_bytes;
    let body: Bytes = match read_body(request.into_body(), limit as usize).await {
        Ok(body) => body,
        Err(BodyError::Unreadable) => {
            let error = RpcError::new(
                code::INVALID_REQUEST,
                "invalid request: the body could not be read",
            );
            return json_response(
                StatusCode::BAD_REQUEST,
                &rpc::error_response(Value::Null, &error),
            );
        }
        Err(BodyError::TooLarge) => {
            let error = RpcError::new(
                code::INVALID_REQUEST,
                format!(
                    "invalid request: the body is larger than {limit} bytes (max_request_bytes)"
                ),
            )
            .with_data(fabric_types::wire::LimitExceeded {
                limit: "max_request_bytes".into(),
                max: limit,
                current: None,
            });
            return json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &rpc::error_response(Value::Null, &error),
            );
        }
    };
    let answer = rpc::handle_body(&app, &who, &body, Transport::Http);
    match crate::otel::scoped(incoming, answer).await {
        Some(answer) => json_response(StatusCode::OK, &answer),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

/// How many bytes of an oversized body are read and thrown away before the 413 answer, so
/// that a client still sending it reads the answer instead of a reset connection.
const DRAIN_OVERSIZED_BYTES: usize = 64 << 20;

enum BodyError {
    /// Over the limit (the rest was drained, up to [`DRAIN_OVERSIZED_BYTES`]).
    TooLarge,
    /// The client broke off the body.
    Unreadable,
}

/// The whole body if it is at most `limit` bytes.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, BodyError> {
    use futures_util::StreamExt as _;
    let mut stream = body.into_data_stream();
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| BodyError::Unreadable)?;
        seen = seen.saturating_add(chunk.len());
        if seen <= limit {
            kept.extend_from_slice(&chunk);
        } else if seen > limit.saturating_add(DRAIN_OVERSIZED_BYTES) {
            break;
        }
    }
    if seen > limit {
        return Err(BodyError::TooLarge);
    }
    Ok(Bytes::from(kept))
}

async fn rpc_websocket(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if let Some(refusal) = refuse_foreign_origin(&headers) {
        return refusal;
    }
    // Browsers cannot set Authorization on a WebSocket: they may offer the token as a
    // subprotocol instead (see ws::protocol_authorization); the header wins when both are.
    let mut headers = headers;
    if !headers.contains_key(header::AUTHORIZATION)
        && let Some(value) = crate::ws::protocol_authorization(&headers)
    {
        headers.insert(header::AUTHORIZATION, value);
    }
    let who = match principal(&app, &headers) {
        Ok(who) => who,
        Err(response) => return *response,
    };
    let limit = app.config.max_request_bytes as usize;
    // A traceparent on the upgrade is the parent of every call made over the socket.
    let incoming = crate::otel::incoming(app.otel.as_deref(), &headers);
    upgrade
        .protocols([crate::ws::PROTOCOL])
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| {
            crate::otel::scoped(incoming, crate::ws::session(app, who, socket)).in_current_span()
        })
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    let phase = *app.phase().borrow();
    match phase {
        crate::server::Phase::Ready if app.store_full.load(Ordering::Relaxed) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "store full: the disk holding the store is full\n",
        )
            .into_response(),
        crate::server::Phase::Ready => (StatusCode::OK, "ready\n").into_response(),
        crate::server::Phase::Starting => {
            (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
        }
        crate::server::Phase::Draining => {
            (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
        }
    }
}

/// How long `/metrics` waits for the store's counts before leaving them out.
const STATS_TIMEOUT: Duration = Duration::from_secs(2);

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let stats = tokio::time::timeout(STATS_TIMEOUT, app.store.stats(StatsParams::default()))
        .await
        .ok()
        .and_then(Result::ok);
    let text = app.metrics.render(Gauges {
        stats,
        running: app.scheduler.running(),
        workers: app.scheduler.workers(),
        cache: app.sandbox.cache_stats(),
        ready: app.is_ready(),
        leader: app.scheduler.is_leader(),
    });
    let mut text = text;
    if let Some(otel) = &app.otel {
        otel.render_metrics(&mut text);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        Body::from(text),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_origin_naming_the_host_reached_is_the_same_origin() {
        let host = Some("127.0.0.1:7070");
        assert!(same_origin("http://127.0.0.1:7070", host));
        assert!(same_origin(
            "https://Fabric.Example:443/",
            Some("fabric.example:443")
        ));
        assert!(!same_origin("http://evil.example", host));
        assert!(!same_origin("http://127.0.0.1:7071", host));
        assert!(!same_origin("null", host));
        assert!(!same_origin("http://", Some("")));
        assert!(!same_origin("http://127.0.0.1:7070", None));
    }

    #[test]
    fn a_foreign_origin_is_refused_and_no_origin_is_let_through() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:7070"));
        assert!(
            refuse_foreign_origin(&headers).is_none(),
            "no Origin: not a browser"
        );
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:7070"),
        );
        assert!(refuse_foreign_origin(&headers).is_none());
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        let refused = refuse_foreign_origin(&headers).expect("refused");
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    }
}
