//! JSON-RPC over one WebSocket: every text (or binary) message is a request or a batch,
//! answered on the same socket; `task.subscribe` adds a stream of `task.event`
//! notifications (and `task.events_dropped` when it falls behind) that ends with the
//! connection.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use fabric_scheduler::TaskEvent;
use fabric_store::{TaskGetParams, TaskId};
use fabric_types::TaskState;
use fabric_types::wire::{Dropped, TaskEventNotice};
use futures_util::{SinkExt, StreamExt};
use time::OffsetDateTime;
use tokio::sync::{broadcast, mpsc};
use tokio::task::AbortHandle;
use tracing::Instrument;

use crate::auth::Principal;
use crate::methods::Transport;
use crate::rpc;
use crate::server::App;

/// The subprotocol a browser offers on `GET /rpc` (and the server selects): JSON-RPC as
/// over HTTP. Browsers fail a connection that offered subprotocols and got none back.
pub const PROTOCOL: &str = "fabric.rpc";
/// The prefix of the subprotocol that carries a bearer token, base64url-encoded (without
/// padding) so that any token is a valid protocol name. Never selected, so never echoed.
pub const BEARER_PROTOCOL_PREFIX: &str = "fabric.bearer.";

/// The `Authorization: Bearer` value carried by an offered `fabric.bearer.<base64url>`
/// subprotocol (browsers cannot set headers on a WebSocket), if there is one.
pub fn protocol_authorization(headers: &axum::http::HeaderMap) -> Option<axum::http::HeaderValue> {
    use base64::Engine as _;
    let encoded = headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|offered| offered.trim().strip_prefix(BEARER_PROTOCOL_PREFIX))?;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .ok()?;
    let token = String::from_utf8(token).ok()?;
    axum::http::HeaderValue::from_str(&format!("Bearer {token}")).ok()
}

/// Messages queued for one socket before senders wait.
const OUTBOX: usize = 1024;

/// One WebSocket connection: where answers and notifications are sent, and its
/// subscriptions (stopped when the connection ends).
#[derive(Debug)]
pub struct Session {
    app: Arc<App>,
    outbox: mpsc::Sender<String>,
    subscriptions: Mutex<Vec<AbortHandle>>,
}

impl Session {
    /// Forwards the task events of `who`'s tasks (all tenants' for the admin), only those
    /// of task `id` when given. Events come from this node's scheduler; on a store several
    /// nodes share, a subscription to one task also reads the task from the store every
    /// [`CLUSTER_POLL`], so that changes made by other nodes reach it too.
    pub fn subscribe(&self, who: &Principal, id: Option<String>) {
        let app = self.app.clone();
        let mut events = app.scheduler.subscribe();
        let outbox = self.outbox.clone();
        let poll_store = app.store.capabilities().multi_node && id.is_some();
        let mut follow = Follow {
            who: who.clone(),
            id,
            last: None,
            last_progress: None,
        };
        self.spawn(
            async move {
                let mut poll = tokio::time::interval(CLUSTER_POLL);
                poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    let message = tokio::select! {
                        event = events.recv() => match follow.event(event) {
                            Step::Send(message) => message,
                            Step::Skip => continue,
                            Step::Stop => return,
                        },
                        _ = poll.tick(), if poll_store => {
                            let Some(id) = &follow.id else { continue };
                            let Some(notice) = stored_change(&app, &follow.who, id, follow.last, follow.last_progress).await else {
                                continue;
                            };
                            match follow.notice(notice) {
                                Some(message) => message,
                                None => continue,
                            }
                        }
                    };
                    if outbox.send(message).await.is_err() {
                        return;
                    }
                }
            }
            .in_current_span(),
        );
    }

    /// The server this connection belongs to.
    pub(crate) fn app(&self) -> Arc<App> {
        self.app.clone()
    }

    /// Where to send messages on this connection.
    pub(crate) fn outbox(&self) -> mpsc::Sender<String> {
        self.outbox.clone()
    }

    /// Runs `forward` (a subscription's loop) until it ends or the connection closes.
    pub(crate) fn spawn(&self, forward: impl Future<Output = ()> + Send + 'static) {
        let forward = tokio::spawn(forward);
        self.subscriptions
            .lock()
            .expect("subscriptions lock")
            .push(forward.abort_handle());
    }
}

/// The notification `task.subscribe` sends for each change of a followed task.
pub(crate) const TASK_EVENT: &str = "task.event";
/// The notification telling a subscriber that it fell behind and `dropped` task events
/// were never sent to it.
pub(crate) const EVENTS_DROPPED: &str = "task.events_dropped";

/// What one subscription forwards: `who`'s events (every tenant's for the admin), only
/// task `id`'s when given.
#[derive(Debug)]
struct Follow {
    who: Principal,
    id: Option<String>,
    /// The last state sent, so a change seen both from events and from the store is sent once.
    last: Option<TaskState>,
    /// When the last progress sent was reported, likewise.
    last_progress: Option<OffsetDateTime>,
}

/// What to do with one received event.
#[derive(Debug, PartialEq)]
enum Step {
    Send(String),
    Skip,
    Stop,
}

impl Follow {
    /// The message for one receipt from the scheduler's events: a `task.event` for a
    /// wanted event, a [`EVENTS_DROPPED`] notification when the subscription fell behind.
    fn event(&mut self, event: Result<TaskEvent, broadcast::error::RecvError>) -> Step {
        match event {
            Ok(event) => {
                let visible = self.who.admin || event.tenant == self.who.tenant;
                let wanted = self
                    .id
                    .as_deref()
                    .is_none_or(|id| event.task_id.as_str() == id);
                if !(visible && wanted) {
                    return Step::Skip;
                }
                let notice = TaskEventNotice {
                    id: event.task_id.into_string(),
                    state: event.state,
                    attempt: event.attempt.as_ref().map(|ended| ended.attempt.clone()),
                    progress: event.progress.as_deref().cloned(),
                };
                self.notice(notice).map_or(Step::Skip, Step::Send)
            }
            Err(broadcast::error::RecvError::Lagged(dropped)) => {
                tracing::warn!(
                    dropped,
                    "a subscriber fell behind; telling it events were dropped"
                );
                let params = serde_json::json!(Dropped { dropped });
                Step::Send(rpc::notification(EVENTS_DROPPED, params).to_string())
            }
            Err(broadcast::error::RecvError::Closed) => Step::Stop,
        }
    }

    /// The `task.event` message for `notice`, unless it repeats the last state (and
    /// progress) sent for a followed task.
    fn notice(&mut self, notice: TaskEventNotice) -> Option<String> {
        let progress_at = notice.progress.as_ref().map(|p| p.at);
        let new_progress = progress_at.is_some() && progress_at != self.last_progress;
        if self.id.is_some()
            && self.last == Some(notice.state)
            && notice.attempt.is_none()
            && !new_progress
        {
            return None;
        }
        self.last = Some(notice.state);
        if new_progress {
            self.last_progress = progress_at;
        }
        let params = serde_json::to_value(&notice).ok()?;
        Some(rpc::notification(TASK_EVENT, params).to_string())
    }
}

/// How often a subscription to one task reads it from a store that other nodes share.
const CLUSTER_POLL: Duration = Duration::from_millis(250);

/// The task's change since `last` (and `last_progress`), read from the store (made by any
/// node): its state and progress, with its last attempt when it reached a terminal state.
/// `None` when it has not changed or cannot be read now.
async fn stored_change(
    app: &App,
    who: &Principal,
    id: &str,
    last: Option<TaskState>,
    last_progress: Option<OffsetDateTime>,
) -> Option<TaskEventNotice> {
    let params = TaskGetParams {
        tenant: who.scope(),
        id: TaskId::from(id),
    };
    let task = app.store.task_get(params).await.ok()??;
    let progress_at = task.progress.as_ref().map(|p| p.at);
    if last == Some(task.state) && progress_at == last_progress {
        return None;
    }
    let attempt = if task.state.is_terminal() {
        task.attempts.last().and_then(|a| a.result.clone())
    } else {
        None
    };
    Some(TaskEventNotice {
        id: id.to_owned(),
        state: task.state,
        attempt,
        progress: task.progress,
    })
}

impl Drop for Session {
    fn drop(&mut self) {
        for subscription in self
            .subscriptions
            .lock()
            .expect("subscriptions lock")
            .drain(..)
        {
            subscription.abort();
        }
    }
}

/// Serves one upgraded connection until the client closes it.
pub async fn session(app: Arc<App>, who: Principal, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (outbox, mut outgoing) = mpsc::channel::<String>(OUTBOX);
    let writer = tokio::spawn(async move {
        while let Some(text) = outgoing.recv().await {
            if sink.send(Message::Text(text.into())).await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    let session = Arc::new(Session {
        app: app.clone(),
        outbox,
        subscriptions: Mutex::default(),
    });
    tracing::debug!(tenant = %who.tenant, "websocket open");
    while let Some(Ok(message)) = stream.next().await {
        let body = match message {
            Message::Text(text) => text.as_str().as_bytes().to_vec(),
            Message::Binary(bytes) => bytes.to_vec(),
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        let (app, who, session) = (app.clone(), who.clone(), session.clone());
        let call = async move {
            let answer = rpc::handle_body(&app, &who, &body, Transport::WebSocket(&session)).await;
            if let Some(answer) = answer {
                let _ = session.outbox.send(answer.to_string()).await;
            }
        };
        tokio::spawn(crate::otel::scoped(crate::otel::current_incoming(), call).in_current_span());
    }
    tracing::debug!("websocket closed");
    drop(session);
    writer.abort();
}

#[cfg(test)]
mod tests {
    use fabric_store::TaskId;
    use serde_json::Value;

    use super::*;

    fn event(id: &str, state: TaskState) -> TaskEvent {
        TaskEvent {
            task_id: TaskId::from(id),
            tenant: "acme".into(),
            state,
            attempt: None,
            progress: None,
        }
    }

    fn json(step: Step) -> Value {
        match step {
            Step::Send(message) => serde_json::from_str(&message).unwrap(),
            other => panic!("expected a message, got {other:?}"),
        }
    }

    #[test]
    fn a_bearer_subprotocol_becomes_an_authorization_value() {
        use axum::http::{HeaderMap, HeaderValue, header::SEC_WEBSOCKET_PROTOCOL};
        let mut headers = HeaderMap::new();
        // base64url("tok/en+x") = dG9rL2VuK3g
        headers.insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("fabric.rpc, fabric.bearer.dG9rL2VuK3g"),
        );
        assert_eq!(protocol_authorization(&headers).unwrap(), "Bearer tok/en+x");
        headers.insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("fabric.rpc"),
        );
        assert_eq!(protocol_authorization(&headers), None);
        headers.insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("fabric.rpc, fabric.bearer.!!"),
        );
        assert_eq!(protocol_authorization(&headers), None, "not base64url");
    }

    #[test]
    fn a_subscriber_that_falls_behind_is_told_how_many_events_it_lost() {
        let (sender, mut events) = broadcast::channel(4);
        let mut follow = Follow {
            who: Principal::tenant("acme"),
            id: None,
            last: None,
            last_progress: None,
        };
        for i in 0..10 {
            sender
                .send(event(&format!("t{i}"), TaskState::Succeeded))
                .unwrap();
        }
        let told = json(follow.event(events.try_recv().map_err(|e| match e {
            broadcast::error::TryRecvError::Lagged(n) => broadcast::error::RecvError::Lagged(n),
            other => panic!("{other:?}"),
        })));
        assert_eq!(told["jsonrpc"], "2.0");
        assert_eq!(told["method"], EVENTS_DROPPED);
        assert_eq!(told["params"]["dropped"], 6);
        assert!(told.get("id").is_none(), "a notification has no id");
        // The subscription goes on with the events it still holds.
        for i in 6..10 {
            let next = json(follow.event(Ok(events.try_recv().unwrap())));
            assert_eq!(next["method"], "task.event");
            assert_eq!(next["params"]["id"], format!("t{i}"));
        }
    }

    #[test]
    fn other_tenants_events_and_repeated_states_of_a_followed_task_are_not_sent() {
        let mut follow = Follow {
            who: Principal::tenant("other"),
            id: None,
            last: None,
            last_progress: None,
        };
        assert_eq!(
            follow.event(Ok(event("t1", TaskState::Running))),
            Step::Skip
        );
        let mut follow = Follow {
            who: Principal::tenant("acme"),
            id: Some("t1".into()),
            last: None,
            last_progress: None,
        };
        assert_eq!(
            follow.event(Ok(event("t2", TaskState::Running))),
            Step::Skip
        );
        assert!(matches!(
            follow.event(Ok(event("t1", TaskState::Running))),
            Step::Send(_)
        ));
        assert_eq!(
            follow.event(Ok(event("t1", TaskState::Running))),
            Step::Skip
        );
        assert_eq!(
            follow.event(Err(broadcast::error::RecvError::Closed)),
            Step::Stop
        );
    }
}
