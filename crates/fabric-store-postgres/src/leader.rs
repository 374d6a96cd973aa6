//! Leader leases: a row per job (such as the maintenance services) naming the node that
//! holds it until a time; a node renews before it ends, and another may take it after.

use fabric_store::{LeaderAcquireParams, LeaderReleaseParams, StoreError, from_millis};
use time::OffsetDateTime;

use crate::PostgresStore;
use crate::db::{Db, execute, query, query_opt};
use crate::rows::ms;

/// The lease that elects the one node that runs the maintenance services (rescue, promote,
/// expire, prune) for a schema.
pub const MAINTENANCE_LEASE: &str = "maintenance";

/// Who holds a leader lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    pub node: String,
    /// The lease holds until this instant unless renewed.
    pub lease_until: OffsetDateTime,
    /// When this node took the lease (renewals keep it).
    pub acquired_at: OffsetDateTime,
}

const ACQUIRE_SQL: &str = "INSERT INTO leader_leases (name, node, lease_until, acquired_at)
    VALUES ($1, $2, $3, $4)
    ON CONFLICT (name) DO UPDATE SET
        node = EXCLUDED.node,
        lease_until = EXCLUDED.lease_until,
        acquired_at = CASE WHEN leader_leases.node = EXCLUDED.node
                           THEN leader_leases.acquired_at ELSE EXCLUDED.acquired_at END
    WHERE leader_leases.node = EXCLUDED.node OR leader_leases.lease_until < EXCLUDED.acquired_at
    RETURNING node";

/// Takes or renews the maintenance leadership for `params.node` until `now + ttl`, in one
/// statement: `true` when the node holds it now (it was free, its holder's lease ended
/// before `now`, or the node already held it), `false` while another node's lease lasts.
///
/// A scheduler calls it every few seconds (well within `ttl`) and runs the maintenance
/// services only while it says `true`. `now` comes from the caller's clock, so nodes'
/// clocks must agree to well within `ttl`.
pub(crate) async fn acquire(db: &Db, params: LeaderAcquireParams) -> Result<bool, StoreError> {
    let LeaderAcquireParams { node, ttl, now } = params;
    let ttl_ms = i64::try_from(ttl.as_millis())
        .ok()
        .filter(|ms| *ms > 0)
        .ok_or_else(|| {
            StoreError::InvalidArgument(format!("leader ttl {ttl:?} must be from 1 ms"))
        })?;
    if node.is_empty() {
        return Err(StoreError::InvalidArgument("leader node is empty".into()));
    }
    let now = ms(now);
    let client = db.client("leader_acquire").await?;
    let rows = query(
        &client,
        "take the leader lease",
        ACQUIRE_SQL,
        &[&MAINTENANCE_LEASE, &node, &now.saturating_add(ttl_ms), &now],
    )
    .await?;
    Ok(!rows.is_empty())
}

/// Gives up the maintenance leadership if `params.node` holds it.
pub(crate) async fn release(db: &Db, params: LeaderReleaseParams) -> Result<bool, StoreError> {
    let client = db.client("leader_release").await?;
    let deleted = execute(
        &client,
        "release the leader lease",
        "DELETE FROM leader_leases WHERE name = $1 AND node = $2",
        &[&MAINTENANCE_LEASE, &params.node],
    )
    .await?;
    Ok(deleted > 0)
}

impl PostgresStore {
    /// The node holding the maintenance leadership at `now`, if its lease lasts.
    pub async fn leader(&self, now: OffsetDateTime) -> Result<Option<Leader>, StoreError> {
        let client = self.db.client("leader").await?;
        let row = query_opt(
            &client,
            "read the leader lease",
            "SELECT node, lease_until, acquired_at FROM leader_leases
             WHERE name = $1 AND lease_until >= $2",
            &[&MAINTENANCE_LEASE, &ms(now)],
        )
        .await?;
        Ok(row.map(|r| Leader {
            node: r.get(0),
            lease_until: from_millis(r.get(1)),
            acquired_at: from_millis(r.get(2)),
        }))
    }
}
