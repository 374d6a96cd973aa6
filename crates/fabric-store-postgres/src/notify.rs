//! Tells other nodes that tasks became claimable: one `NOTIFY` after the writes commit,
//! from a background task, coalescing every request made while one is in flight.
//!
//! The `NOTIFY` is deliberately not part of the writing transaction: a transaction that
//! notifies takes a database-wide lock from its pre-commit until its commit is flushed, so
//! concurrent writers that all notified would commit one at a time (measured here:
//! concurrent single inserts went from ~1,900/s to ~300/s). Sent after commit and
//! coalesced, it costs one short transaction per burst of writes, and listeners never wake
//! before the work is visible. The price: a node that dies between a commit and its
//! `NOTIFY` leaves that work to be found by the others' next wake-up or poll.

use std::time::Duration;

use deadpool_postgres::{Pool, PoolError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::db::execute;

/// Sends one notification on `fabric_ready` with the schema (`$1`) as payload.
pub(crate) const NOTIFY_SQL: &str = "SELECT pg_notify('fabric_ready', $1)";

/// The first pause after a failed `NOTIFY`; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Failed attempts after which a notifier whose store is gone stops retrying.
const GIVE_UP_AFTER: u32 = 3;

/// The handle writers use. Dropping it lets the task send what is pending, then stop.
#[derive(Debug)]
pub(crate) struct Notifier {
    /// How many notifications were asked for.
    requested: watch::Sender<u64>,
    /// Up to which request the notifications went out.
    sent: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

impl Notifier {
    /// Starts the notifying task on `pool` for `schema`.
    pub(crate) fn start(pool: Pool, schema: String) -> Self {
        let (requested, requests) = watch::channel(0);
        let (sent_tx, sent) = watch::channel(0);
        let task = tokio::spawn(run(pool, schema, requests, sent_tx));
        Self {
            requested,
            sent,
            task,
        }
    }

    /// Asks for a notification; requests made before it goes out share it.
    pub(crate) fn request(&self) {
        self.requested.send_modify(|n| *n += 1);
    }

    /// Waits until every notification asked for so far went out (or the task stopped
    /// because the pool was closed).
    pub(crate) async fn flush(&self) {
        let target = *self.requested.borrow();
        let mut sent = self.sent.clone();
        let _ = sent.wait_for(|sent| *sent >= target).await;
    }

    /// Stops the task at once, dropping what is pending.
    pub(crate) fn abort(&self) {
        self.task.abort();
    }
}

async fn run(
    pool: Pool,
    schema: String,
    mut requests: watch::Receiver<u64>,
    sent: watch::Sender<u64>,
) {
    // `changed` fails once the store is gone and every request was seen.
    while requests.changed().await.is_ok() {
        let target = *requests.borrow_and_update();
        let mut backoff = MIN_BACKOFF;
        for failures in 0.. {
            // Once the store is gone, a database that keeps failing is given up on.
            if failures >= GIVE_UP_AFTER && requests.has_changed().is_err() {
                return;
            }
            let result = match pool.get().await {
                Ok(client) => execute(&client, "notify other nodes", NOTIFY_SQL, &[&schema])
                    .await
                    .map(drop),
                Err(PoolError::Closed) => return,
                Err(e) => Err(crate::error::pool_err("notify other nodes")(e)),
            };
            match result {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, schema, "could not notify other nodes of ready work; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        sent.send_replace(target);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_uses_the_ready_channel() {
        assert!(NOTIFY_SQL.contains(&format!("'{}'", crate::db::READY_CHANNEL)));
    }
}
