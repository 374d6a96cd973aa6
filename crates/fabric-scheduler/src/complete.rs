//! The completer: writes the ends of attempts to the store in batches (many completions per
//! transaction), retries while the store is unavailable, and announces each new state.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fabric_store::workflow::{CHILDREN_REFUSED, refused_attempt};
use fabric_store::{Completion, TaskCompleteParams, TaskId};
use fabric_types::TaskState;
use tokio::sync::mpsc;

use crate::{EndedAttempt, Shared};

/// The longest pause between two tries to write completions while the store is down.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(2);

/// One attempt's end, waiting to be written.
pub(crate) struct Done {
    pub completion: Completion,
    pub task_id: TaskId,
    pub tenant: String,
    pub attempt: Arc<EndedAttempt>,
    /// The task has a concurrency key: its end may let a held-back task start.
    pub keyed: bool,
    /// The task's span, should this attempt end a traced task.
    pub trace: Option<crate::trace::TaskEnd>,
}

/// The sending side, shared by every attempt.
pub(crate) struct Completer {
    tx: Mutex<Option<mpsc::Sender<Done>>>,
}

impl Completer {
    /// A queue that holds at most `bound` completions besides the batch being written.
    pub fn new(bound: usize) -> (Self, mpsc::Receiver<Done>) {
        let (tx, rx) = mpsc::channel(bound.max(1));
        (
            Self {
                tx: Mutex::new(Some(tx)),
            },
            rx,
        )
    }

    /// Queues a completion for the next batch, waiting while the queue is full (the store
    /// is slower than the guests: the caller keeps its worker slot, so no more attempts
    /// start). Once queued, it is written even if the scheduler shuts down: shutdown
    /// closes the queue and the writer drains it.
    pub async fn submit(&self, done: Done) {
        let tx = self.tx.lock().expect("completer lock").clone();
        if let Some(tx) = tx {
            let _ = tx.send(done).await;
        }
    }

    /// No more completions: the writer drains what is queued and stops.
    pub fn close(&self) {
        self.tx.lock().expect("completer lock").take();
    }
}

pub(crate) async fn run(shared: Arc<Shared>, mut rx: mpsc::Receiver<Done>) {
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < shared.config.complete_batch {
            match rx.try_recv() {
                Ok(done) => batch.push(done),
                Err(_) => break,
            }
        }
        write(&shared, &mut batch).await;
    }
}

async fn write(shared: &Shared, batch: &mut Vec<Done>) {
    let mut pause = Duration::from_millis(50);
    loop {
        let params = TaskCompleteParams {
            completions: batch.iter().map(|d| d.completion.clone()).collect(),
            now: shared.clock.now(),
        };
        match shared.store.task_complete(params).await {
            Ok(results) => {
                // A slot of a concurrency key came free: claim again now, not at the idle poll.
                if batch.iter().any(|d| d.keyed) {
                    shared.room.notify_one();
                }
                for (mut done, result) in batch.drain(..).zip(results) {
                    let with_children = !done.completion.children.is_empty();
                    match (result.accepted, result.state) {
                        (true, Some(state)) => {
                            if with_children && state == TaskState::Failed {
                                // The store refused the children: the attempt stands as
                                // `invalid` (the reason is stored with it).
                                done.attempt = Arc::new(EndedAttempt {
                                    attempt: refused_attempt(
                                        done.attempt.attempt.clone(),
                                        format!("{CHILDREN_REFUSED}task.get shows the reason"),
                                    ),
                                    ..(*done.attempt).clone()
                                });
                            } else if with_children {
                                // The children are stored: claim them now.
                                shared.wake.notify_one();
                            }
                            if let Some(end) = done.trace.as_ref().filter(|_| state.is_terminal()) {
                                crate::trace::task_end(end, &done.task_id, &done.tenant, state);
                            }
                            shared.emit(done.task_id, done.tenant, state, Some(done.attempt))
                        }
                        _ => {
                            tracing::info!(task = %done.task_id, "completion rejected: the attempt no longer held its task")
                        }
                    }
                }
                return;
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, completions = batch.len(), "store unavailable; retrying completions");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_RETRY_PAUSE);
            }
            Err(e) => {
                // Not retryable (closed, corrupt): the leases will bring these tasks back.
                tracing::error!(error = %e, completions = batch.len(), "cannot record completions; their tasks will be rescued when their leases end");
                batch.clear();
                return;
            }
        }
    }
}
