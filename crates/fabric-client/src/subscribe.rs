//! `task.subscribe` over the WebSocket at `GET /rpc`: a stream of `task.event` notices.

use std::collections::VecDeque;

use futures_util::stream::BoxStream;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::{CONNECT_TIMEOUT, Client, ClientError, Result, TaskEventNotice};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The id of the one request a subscription socket sends.
const SUBSCRIBE_ID: u64 = 1;

/// What one text message on a subscription socket is.
#[derive(Debug)]
enum Frame {
    /// A `task.event` notification.
    Event(Box<TaskEventNotice>),
    /// The answer to the request with this id.
    Response(Option<u64>, Result<Value>),
    /// Anything else (another notification method): skipped.
    Other,
}

fn classify(text: &str) -> Result<Frame> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| ClientError::decode("a WebSocket message", e))?;
    if let Some(method) = value.get("method").and_then(Value::as_str) {
        if method != "task.event" {
            return Ok(Frame::Other);
        }
        let params = value.get("params").cloned().unwrap_or(Value::Null);
        let notice = serde_json::from_value(params)
            .map_err(|e| ClientError::decode("a task.event notification", e))?;
        return Ok(Frame::Event(Box::new(notice)));
    }
    let id = value.get("id").and_then(Value::as_u64);
    Ok(Frame::Response(
        id,
        crate::response_result(value, "task.subscribe"),
    ))
}

impl Client {
    /// `task.subscribe` on a WebSocket: once the server has confirmed the subscription,
    /// a stream of the `task.event` notices of task `id` (all of the caller's tasks when
    /// `None`). The stream ends when the server closes the socket; dropping it closes it.
    pub async fn subscribe(
        &self,
        id: Option<&str>,
    ) -> Result<BoxStream<'static, Result<TaskEventNotice>>> {
        let url = self.endpoint.ws.as_str().to_owned();
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| ClientError::transport(&url, e))?;
        if let Some(authorization) = &self.authorization {
            let value = HeaderValue::from_bytes(authorization.as_bytes())
                .expect("a header value stays a header value");
            request.headers_mut().insert("authorization", value);
        }
        let connector = tokio_tungstenite::Connector::Rustls(self.tls.clone());
        let connect =
            tokio_tungstenite::connect_async_tls_with_config(request, None, false, Some(connector));
        let (mut socket, _) = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Err(_elapsed) => {
                return Err(ClientError::Transport {
                    url,
                    reason: format!(
                        "no WebSocket handshake within {} s",
                        CONNECT_TIMEOUT.as_secs()
                    ),
                    source: "timed out".into(),
                });
            }
            Ok(Err(tungstenite::Error::Http(response))) => {
                let body = response.body().as_deref().unwrap_or_default();
                return Err(ClientError::from_http_status(
                    response.status().as_u16(),
                    body,
                ));
            }
            Ok(Err(e)) => return Err(ClientError::transport(&url, e)),
            Ok(Ok(connected)) => connected,
        };
        let subscribe = json!({
            "jsonrpc": "2.0",
            "id": SUBSCRIBE_ID,
            "method": "task.subscribe",
            "params": {"id": id},
        });
        socket
            .send(Message::text(subscribe.to_string()))
            .await
            .map_err(|e| ClientError::transport(&url, e))?;

        // Events may arrive before the confirmation; keep them for the stream.
        let mut early = VecDeque::new();
        loop {
            match next_frame(&mut socket, &url).await {
                Some(Ok(Frame::Event(notice))) => early.push_back(*notice),
                Some(Ok(Frame::Response(Some(SUBSCRIBE_ID), result))) => {
                    result?;
                    break;
                }
                Some(Ok(Frame::Response(None, Err(error)))) => return Err(error),
                Some(Ok(Frame::Response(..) | Frame::Other)) => {}
                Some(Err(error)) => return Err(error),
                None => {
                    return Err(ClientError::Transport {
                        url,
                        reason:
                            "the server closed the WebSocket before confirming the subscription"
                                .into(),
                        source: "closed".into(),
                    });
                }
            }
        }
        Ok(events(socket, url, early))
    }
}

/// The notices of an open subscription: the early ones, then each from the socket.
fn events(
    socket: Socket,
    url: String,
    early: VecDeque<TaskEventNotice>,
) -> BoxStream<'static, Result<TaskEventNotice>> {
    let state = Some((socket, url, early));
    futures_util::stream::unfold(state, |state| async move {
        let (mut socket, url, mut early) = state?;
        if let Some(notice) = early.pop_front() {
            return Some((Ok(notice), Some((socket, url, early))));
        }
        loop {
            match next_frame(&mut socket, &url).await? {
                Ok(Frame::Event(notice)) => return Some((Ok(*notice), Some((socket, url, early)))),
                Ok(Frame::Response(_, Err(error))) => return Some((Err(error), None)),
                Ok(Frame::Response(_, Ok(_)) | Frame::Other) => {}
                Err(error) => return Some((Err(error), None)),
            }
        }
    })
    .boxed()
}

/// The next text message, classified; `None` once the socket is closed.
async fn next_frame(socket: &mut Socket, url: &str) -> Option<Result<Frame>> {
    loop {
        match socket.next().await? {
            Ok(Message::Text(text)) => return Some(classify(text.as_str())),
            Ok(Message::Close(_)) => return None,
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                return None;
            }
            Err(e) => return Some(Err(ClientError::transport(url, e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fabric_types::TaskState;

    #[test]
    fn task_events_responses_and_other_notifications_are_told_apart() {
        let event =
            r#"{"jsonrpc":"2.0","method":"task.event","params":{"id":"5","state":"succeeded"}}"#;
        match classify(event).unwrap() {
            Frame::Event(notice) => {
                assert_eq!(notice.id, "5");
                assert_eq!(notice.state, TaskState::Succeeded);
                assert!(notice.attempt.is_none());
            }
            other => panic!("{other:?}"),
        }
        let confirmed = r#"{"jsonrpc":"2.0","id":1,"result":{"subscribed":true}}"#;
        assert!(matches!(
            classify(confirmed).unwrap(),
            Frame::Response(Some(1), Ok(_))
        ));
        let refused = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32002,"message":"no task 9"}}"#;
        match classify(refused).unwrap() {
            Frame::Response(Some(1), Err(error)) => assert_eq!(error.code(), Some(-32002)),
            other => panic!("{other:?}"),
        }
        let other = r#"{"jsonrpc":"2.0","method":"server.draining","params":{}}"#;
        assert!(matches!(classify(other).unwrap(), Frame::Other));
        let bad_event = r#"{"jsonrpc":"2.0","method":"task.event","params":{"id":5}}"#;
        assert!(matches!(
            classify(bad_event),
            Err(ClientError::Decode { .. })
        ));
        assert!(classify("not json").is_err());
    }
}
