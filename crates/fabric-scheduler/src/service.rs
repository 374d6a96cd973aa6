//! The background services beside dispatch, each a loop on its own period that stops when
//! the scheduler stops: heartbeats (renew leases, see cancels and lost leases), maintenance
//! (rescue expired leases, expire passed deadlines) and pruning (retention).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fabric_store::{
    LeaderAcquireParams, LeaderReleaseParams, TaskExpireParams, TaskGetParams, TaskHeartbeatParams,
    TaskId, TaskPruneParams, TaskRescueParams,
};
use fabric_types::TaskState;

use crate::policy::full_jitter;
use crate::{Interruption, Shared};

/// Most tasks rescued, expired or pruned in one store call.
const MAINTENANCE_BATCH: usize = 1000;
/// Most prune calls in one pruning round.
const PRUNE_ROUNDS: usize = 1000;

/// Runs `tick` every `period` until the scheduler stops.
pub(crate) async fn every<F, Fut>(shared: &Shared, period: Duration, mut tick: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut stop = shared.stop.subscribe();
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => tick().await,
            _ = stop.changed() => return,
        }
    }
}

/// Renews the leases of this node's running attempts; interrupts those whose task was
/// cancelled elsewhere or whose lease was lost.
pub(crate) async fn heartbeat(shared: Arc<Shared>) {
    every(&shared, shared.config.heartbeat_every, || async {
        let running: Vec<_> = shared.running.lock().expect("running lock").iter().map(|(id, r)| (id.clone(), r.clone())).collect();
        if running.is_empty() {
            return;
        }
        let now = shared.clock.now();
        let params = TaskHeartbeatParams {
            attempt_ids: running.iter().map(|(id, _)| id.clone()).collect(),
            lease_until: now + shared.config.lease,
            now,
        };
        match shared.store.task_heartbeat(params).await {
            Ok(beat) => {
                for (id, attempt) in &running {
                    if !beat.held.contains(id) {
                        tracing::warn!(task = %attempt.task_id, "lease lost: interrupting the attempt");
                        attempt.interrupt(Interruption::LeaseLost);
                    } else if beat.cancel_requested.contains(id) {
                        attempt.interrupt(Interruption::Cancel);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "renewing leases failed"),
        }
    })
    .await;
}

/// Takes or renews the maintenance leadership; `true` while this node holds it. Nodes
/// sharing a store take turns through it, so that one of them, not all, runs rescue,
/// expiry and pruning (which stay correct, only wasteful, if two ever overlap).
async fn lead(shared: &Shared) -> bool {
    let params = LeaderAcquireParams {
        node: shared.config.node.clone(),
        ttl: shared.config.leader_ttl,
        now: shared.clock.now(),
    };
    let leading = match shared.store.leader_acquire(params).await {
        Ok(leading) => leading,
        Err(e) => {
            tracing::warn!(error = %e, "renewing the maintenance leadership failed");
            false
        }
    };
    let was = shared.leading.swap(leading, Ordering::AcqRel);
    if leading != was {
        tracing::info!(node = %shared.config.node, leading, "maintenance leadership changed");
    }
    leading
}

/// Gives up the maintenance leadership at shutdown, so another node takes it at once.
pub(crate) async fn resign(shared: &Shared) {
    if !shared.leading.swap(false, Ordering::AcqRel) {
        return;
    }
    let params = LeaderReleaseParams {
        node: shared.config.node.clone(),
    };
    if let Err(e) = shared.store.leader_release(params).await {
        tracing::warn!(error = %e, "giving up the maintenance leadership failed; it ends with its lease");
    }
}

/// On the leader: rescues attempts whose lease ended (their worker died) and expires
/// waiting tasks whose deadline passed. Runs at start and then every `maintenance_every`.
pub(crate) async fn maintenance(shared: Arc<Shared>) {
    every(&shared, shared.config.maintenance_every, || async {
        if !lead(&shared).await {
            return;
        }
        let now = shared.clock.now();
        let rescue = TaskRescueParams { now, max: MAINTENANCE_BATCH, jitter: full_jitter };
        match shared.store.task_rescue(rescue).await {
            Ok(rescued) => {
                for task in rescued {
                    tracing::info!(task = %task.task_id, state = %task.state, "rescued a task whose lease ended");
                    if shared.config.spans.is_some() && task.state.is_terminal() {
                        crate::trace::record_ended_by_id(&shared, &task.task_id).await;
                    }
                    shared.emit(task.task_id, task.tenant, task.state, None);
                }
                shared.wake.notify_one();
            }
            Err(e) => tracing::warn!(error = %e, "rescuing expired leases failed"),
        }
        match shared.store.task_expire(TaskExpireParams { now, max: MAINTENANCE_BATCH }).await {
            Ok(expired) if !expired.is_empty() => {
                tracing::info!(count = expired.len(), "expired tasks past their deadline");
                emit_expired(&shared, expired).await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "expiring tasks failed"),
        }
    })
    .await;
}

/// Emits an `expired` event for each task maintenance or a claim just expired, so that subscribers,
/// waiters and metrics see it at once. The store answers with ids only; each task is read
/// for its tenant (a task pruned meanwhile is skipped).
pub(crate) async fn emit_expired(shared: &Shared, expired: Vec<TaskId>) {
    for id in expired {
        let params = TaskGetParams {
            tenant: None,
            id: id.clone(),
        };
        match shared.store.task_get(params).await {
            Ok(Some(task)) => {
                crate::trace::record_ended(shared, &task);
                shared.emit(id, task.tenant, TaskState::Expired, None)
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(task = %id, error = %e, "reading an expired task for its event failed")
            }
        }
    }
}

/// On the leader: deletes finished tasks older than the retention period, in batches of
/// [`MAINTENANCE_BATCH`] until none is left (at most [`PRUNE_ROUNDS`] batches per round, so
/// a backlog after a long outage is worked off over a few rounds).
pub(crate) async fn prune(shared: Arc<Shared>) {
    every(&shared, shared.config.prune_every, || async {
        if !shared.leading.load(Ordering::Acquire) {
            return;
        }
        let finished_before = shared.clock.now() - shared.config.retention;
        let mut total = 0;
        for _ in 0..PRUNE_ROUNDS {
            if shared.is_stopping() {
                break;
            }
            let params = TaskPruneParams {
                finished_before,
                max: MAINTENANCE_BATCH,
            };
            match shared.store.task_prune(params).await {
                Ok(pruned) => {
                    total += pruned;
                    if pruned < MAINTENANCE_BATCH as u64 {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pruning finished tasks failed");
                    break;
                }
            }
        }
        if total > 0 {
            tracing::info!(pruned = total, "pruned finished tasks past retention");
        }
    })
    .await;
}
