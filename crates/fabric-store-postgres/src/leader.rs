//! Leader leases: a row per job (such as the maintenance services) naming the node that
//! holds it until a time; a node renews before it ends, and another may take it after.

use std::time::Duration;

use fabric_store::{StoreError, from_millis};
use time::OffsetDateTime;

use crate::PostgresStore;
use crate::db::{execute, query, query_opt};
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

impl PostgresStore {
    /// Takes or renews the maintenance leadership for `node` until `now + ttl`, in one
    /// statement. `true` when `node` holds it now: it was free, it had ended (its
    /// `lease_until` is before `now`), or `node` already held it. `false` while another
    /// node's lease lasts.
    ///
    /// Call it every `ttl / 3` or so and run the maintenance services only while it says
    /// `true`; stop them when it says `false` or fails. `now` comes from the caller's
    /// clock, so nodes' clocks must agree to well within `ttl`. Leadership is a
    /// convenience, not a safety property: the services are safe to run on two nodes at
    /// once (their statements lock with `SKIP LOCKED`), leadership only avoids the waste.
    pub async fn leader_acquire(
        &self,
        node: &str,
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
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
        let client = self.db.client("leader_acquire").await?;
        let rows = query(
            &client,
            "take the leader lease",
            ACQUIRE_SQL,
            &[&MAINTENANCE_LEASE, &node, &now.saturating_add(ttl_ms), &now],
        )
        .await?;
        Ok(!rows.is_empty())
    }

    /// Gives up the maintenance leadership if `node` holds it (say, at shutdown), so
    /// another node can take it at once instead of after the lease ends. `true` when it
    /// held it.
    pub async fn leader_release(&self, node: &str) -> Result<bool, StoreError> {
        let client = self.db.client("leader_release").await?;
        let deleted = execute(
            &client,
            "release the leader lease",
            "DELETE FROM leader_leases WHERE name = $1 AND node = $2",
            &[&MAINTENANCE_LEASE, &node],
        )
        .await?;
        Ok(deleted > 0)
    }

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
