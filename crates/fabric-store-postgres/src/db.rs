//! The shared state behind a store — pool, schema, aging step, ready signal — and the
//! helpers every query goes through (cached statements, typed errors, NOTIFY).

use std::sync::Arc;

use deadpool_postgres::{Client, GenericClient, Pool};
use fabric_store::StoreError;
use tokio::sync::watch;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::error::{db_err, pool_err};

/// The channel writers `NOTIFY` when they made tasks claimable; the payload is the schema,
/// so stores of different schemas on one database ignore each other's wake-ups.
pub(crate) const READY_CHANNEL: &str = "fabric_ready";

/// Sends one notification on [`READY_CHANNEL`] with the schema (`$1`) as payload.
const NOTIFY_SQL: &str = "SELECT pg_notify('fabric_ready', $1)";

/// What every operation needs.
#[derive(Debug)]
pub(crate) struct Db {
    pub pool: Pool,
    pub schema: String,
    pub aging_step_ms: u64,
    /// Bumped after a commit that made tasks claimable, and by the listener.
    pub ready: Arc<watch::Sender<u64>>,
}

/// Parameters of a statement.
pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

impl Db {
    /// A pooled connection for `what`.
    pub(crate) async fn client(&self, what: &'static str) -> Result<Client, StoreError> {
        self.pool.get().await.map_err(pool_err(what))
    }

    /// Wakes this process's dispatchers: tasks became claimable.
    pub(crate) fn bump(&self) {
        bump(&self.ready);
    }

    /// Queues one `NOTIFY` for the transaction `c` is in (delivered when it commits). Send
    /// it at most once per transaction: notifications serialize commits.
    pub(crate) async fn notify<C: GenericClient>(&self, c: &C) -> Result<(), StoreError> {
        execute(c, "notify other nodes", NOTIFY_SQL, &[&self.schema])
            .await
            .map(drop)
    }
}

/// Adds one to a ready counter.
pub(crate) fn bump(ready: &watch::Sender<u64>) {
    ready.send_modify(|n| *n = n.wrapping_add(1));
}

/// Runs a cached statement and returns its rows.
pub(crate) async fn query<C: GenericClient>(
    c: &C,
    what: &'static str,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<Row>, StoreError> {
    let stmt = c.prepare_cached(sql).await.map_err(db_err(what))?;
    c.query(&stmt, params).await.map_err(db_err(what))
}

/// Runs a cached statement and returns its one row, if any.
pub(crate) async fn query_opt<C: GenericClient>(
    c: &C,
    what: &'static str,
    sql: &str,
    params: Params<'_>,
) -> Result<Option<Row>, StoreError> {
    let stmt = c.prepare_cached(sql).await.map_err(db_err(what))?;
    c.query_opt(&stmt, params).await.map_err(db_err(what))
}

/// Runs a cached statement and returns how many rows it touched.
pub(crate) async fn execute<C: GenericClient>(
    c: &C,
    what: &'static str,
    sql: &str,
    params: Params<'_>,
) -> Result<u64, StoreError> {
    let stmt = c.prepare_cached(sql).await.map_err(db_err(what))?;
    c.execute(&stmt, params).await.map_err(db_err(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_uses_the_ready_channel() {
        assert!(NOTIFY_SQL.contains(&format!("'{READY_CHANNEL}'")));
    }
}
