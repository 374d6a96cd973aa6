//! JSON-RPC over one WebSocket: every text (or binary) message is a request or a batch,
//! answered on the same socket; `task.subscribe` adds a stream of `task.event`
//! notifications that ends with the connection.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use fabric_store::{TaskGetParams, TaskId};
use fabric_types::TaskState;
use fabric_types::wire::TaskEventNotice;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{broadcast, mpsc};
use tokio::task::AbortHandle;
use tracing::Instrument;

use crate::auth::Principal;
use crate::methods::Transport;
use crate::rpc;
use crate::server::App;

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
        let who = who.clone();
        let poll_store = app.store.capabilities().multi_node && id.is_some();
        let forward = tokio::spawn(
            async move {
                let mut poll = tokio::time::interval(CLUSTER_POLL);
                poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                // The last state sent, so a change seen both ways is sent once.
                let mut last: Option<TaskState> = None;
                loop {
                    let notice = tokio::select! {
                        event = events.recv() => match event {
                            Ok(event) => {
                                let visible = who.admin || event.tenant == who.tenant;
                                let wanted = id.as_deref().is_none_or(|id| event.task_id.as_str() == id);
                                if !(visible && wanted) {
                                    continue;
                                }
                                TaskEventNotice {
                                    id: event.task_id.into_string(),
                                    state: event.state,
                                    attempt: event.attempt.as_deref().cloned(),
                                }
                            }
                            Err(broadcast::error::RecvError::Lagged(missed)) => {
                                tracing::warn!(missed, "a subscriber fell behind; events were skipped");
                                continue;
                            }
                            Err(broadcast::error::RecvError::Closed) => return,
                        },
                        _ = poll.tick(), if poll_store => {
                            let Some(id) = &id else { continue };
                            match stored_change(&app, &who, id, last).await {
                                Some(notice) => notice,
                                None => continue,
                            }
                        }
                    };
                    if id.is_some() && last == Some(notice.state) && notice.attempt.is_none() {
                        continue;
                    }
                    last = Some(notice.state);
                    let Ok(params) = serde_json::to_value(&notice) else {
                        continue;
                    };
                    let message = rpc::notification("task.event", params).to_string();
                    if outbox.send(message).await.is_err() {
                        return;
                    }
                }
            }
            .in_current_span(),
        );
        self.subscriptions
            .lock()
            .expect("subscriptions lock")
            .push(forward.abort_handle());
    }
}

/// How often a subscription to one task reads it from a store that other nodes share.
const CLUSTER_POLL: Duration = Duration::from_millis(250);

/// The task's change since `last`, read from the store (made by any node): its state, with
/// its last attempt when it reached a terminal state. `None` when it has not changed or
/// cannot be read now.
async fn stored_change(
    app: &App,
    who: &Principal,
    id: &str,
    last: Option<TaskState>,
) -> Option<TaskEventNotice> {
    let params = TaskGetParams {
        tenant: who.scope(),
        id: TaskId::from(id),
    };
    let task = app.store.task_get(params).await.ok()??;
    if last == Some(task.state) {
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
        tokio::spawn(
            async move {
                let answer =
                    rpc::handle_body(&app, &who, &body, Transport::WebSocket(&session)).await;
                if let Some(answer) = answer {
                    let _ = session.outbox.send(answer.to_string()).await;
                }
            }
            .in_current_span(),
        );
    }
    tracing::debug!("websocket closed");
    drop(session);
    writer.abort();
}
