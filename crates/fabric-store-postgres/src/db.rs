//! The shared state behind a store — pool, schema, aging step, ready signal — and the
//! helpers every query goes through (cached statements, typed errors, NOTIFY).

use std::sync::Arc;

use deadpool_postgres::{Client, GenericClient, Pool};
use fabric_store::StoreError;
use tokio::sync::watch;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::error::{db_err, pool_err};
use crate::notify::Notifier;

/// The channel writers `NOTIFY` when they made tasks claimable; the payload is the schema,
/// so stores of different schemas on one database ignore each other's wake-ups.
pub(crate) const READY_CHANNEL: &str = "fabric_ready";

/// What every operation needs.
#[derive(Debug)]
pub(crate) struct Db {
    pub pool: Pool,
    pub schema: String,
    pub aging_step_ms: u64,
    /// Bumped after a commit that made tasks claimable, and by the listener.
    pub ready: Arc<watch::Sender<u64>>,
    /// Tells other nodes about work made ready here.
    pub notifier: Notifier,
}

/// Parameters of a statement.
pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

impl Db {
    /// A pooled connection for `what`.
    pub(crate) async fn client(&self, what: &'static str) -> Result<Client, StoreError> {
        self.pool.get().await.map_err(pool_err(what))
    }

    /// Call after a commit that made tasks claimable: wakes this process's dispatchers
    /// now and other nodes' through one coalesced `NOTIFY` (see `notify`).
    pub(crate) fn made_ready(&self) {
        bump(&self.ready);
        self.notifier.request();
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
