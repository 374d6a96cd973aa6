//! The dispatcher: waits for capacity and for ready work (signals, never polling sleeps on
//! the hot path), claims tasks in batches, and runs each claimed attempt to its completion.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64};
use std::time::Duration;

use fabric_sandbox::{
    Agent, CancelToken, DirGrant, EgressGrant, EgressPolicy, ProgressCell, RunRequest,
};
use fabric_store::{
    ClaimedTask, ModuleGetParams, ModuleRef, Next, TaskClaimParams, TaskPromoteParams, TenantCap,
};
use fabric_types::{Attempt, ModuleId, Outcome, TaskState};
use tokio::sync::{Mutex as AsyncMutex, OwnedSemaphorePermit};
use tokio::time::Instant;

use crate::ChildrenError;
use crate::complete::Done;
use crate::policy::full_jitter;
use crate::service::emit_expired;
use crate::{EndedAttempt, Interruption, Running, Shared};
use fabric_store::rules::next_after;
use fabric_store::workflow::refused_attempt;

/// Most scheduled tasks promoted in one store call.
const PROMOTE_BATCH: usize = 4096;
/// A pause after the store failed, before the dispatcher tries again.
const STORE_ERROR_PAUSE: Duration = Duration::from_millis(200);

pub(crate) async fn run(shared: Arc<Shared>) {
    let mut ready = shared.store.ready_signal();
    let mut stop = shared.stop.subscribe();
    let loading: Arc<std::sync::Mutex<HashMap<ModuleId, Arc<AsyncMutex<()>>>>> = Arc::default();
    // When the earliest scheduled task is due; `None` means "look it up".
    let mut next_due: Option<Option<Instant>> = None;
    loop {
        if shared.is_stopping() {
            return;
        }
        let first = tokio::select! {
            permit = shared.permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = stop.changed() => return,
        };
        let mut permits = vec![first];
        while permits.len() < shared.config.claim_batch {
            match shared.permits.clone().try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }

        if next_due.is_none_or(|due| due.is_some_and(|at| at <= Instant::now())) {
            next_due = promote(&shared).await;
        }
        let now = shared.clock.now();
        let claim = TaskClaimParams {
            node: shared.config.node.clone(),
            max: permits.len(),
            lease: shared.config.lease,
            now,
            tenant_cap: tenant_cap(&shared),
        };
        let claimed = match shared.store.task_claim(claim).await {
            Ok(claimed) => {
                if !claimed.expired.is_empty() {
                    let (shared, expired) = (shared.clone(), claimed.expired);
                    tokio::spawn(async move { emit_expired(&shared, expired).await });
                }
                if shared.config.tenant_cap_binds() {
                    let mut held = shared.held.lock().expect("held lock");
                    for task in &claimed.tasks {
                        *held.entry(task.tenant.clone()).or_insert(0) += 1;
                    }
                }
                claimed.tasks
            }
            Err(e) => {
                tracing::warn!(error = %e, "claiming tasks failed; trying again shortly");
                drop(permits);
                tokio::time::sleep(STORE_ERROR_PAUSE).await;
                continue;
            }
        };
        let idle = claimed.is_empty();
        for (task, permit) in claimed.into_iter().zip(permits.drain(..)) {
            tokio::spawn(run_attempt(shared.clone(), task, permit, loading.clone()));
        }
        drop(permits);
        if !idle {
            continue;
        }

        // Nothing ready: sleep until new work is signalled, the earliest scheduled task is
        // due, or (for work other nodes made ready) the idle poll passes.
        let due = match next_due {
            Some(due) => due,
            None => {
                next_due = promote(&shared).await;
                next_due.flatten()
            }
        };
        let wake_at = Instant::now() + shared.config.idle_poll;
        let wake_at = due.map_or(wake_at, |due| due.min(wake_at));
        tokio::select! {
            _ = ready.changed() => {}
            () = shared.room.notified() => {}
            () = shared.wake.notified() => next_due = None,
            () = tokio::time::sleep_until(wake_at) => next_due = None,
            _ = stop.changed() => return,
        }
    }
}

/// The tenant cap for a claim: what each tenant holds on this node now. `None` when the
/// cap cannot bind, so the claim takes the plain path.
fn tenant_cap(shared: &Shared) -> Option<TenantCap> {
    if !shared.config.tenant_cap_binds() {
        return None;
    }
    Some(TenantCap {
        max: shared.config.tenant_cap() as usize,
        running: shared.held.lock().expect("held lock").clone(),
    })
}

/// One claimed attempt counted against its tenant's cap (counted at the claim); dropping it
/// frees the count, however the attempt ends, and wakes the dispatcher when the tenant was
/// at its cap.
struct TenantSlot {
    shared: Arc<Shared>,
    tenant: String,
}

impl Drop for TenantSlot {
    fn drop(&mut self) {
        let mut held = self.shared.held.lock().expect("held lock");
        let Some(count) = held.get_mut(&self.tenant) else {
            return;
        };
        let was_full = *count >= self.shared.config.tenant_cap() as usize;
        *count -= 1;
        if *count == 0 {
            held.remove(&self.tenant);
        }
        drop(held);
        if was_full {
            self.shared.room.notify_one();
        }
    }
}

/// Promotes due scheduled tasks and returns when the next one is due (`Some(None)`: none
/// is scheduled; `None`: unknown, after a store error).
async fn promote(shared: &Shared) -> Option<Option<Instant>> {
    let now = shared.clock.now();
    if let Err(e) = shared
        .store
        .task_promote(TaskPromoteParams {
            now,
            max: PROMOTE_BATCH,
        })
        .await
    {
        tracing::warn!(error = %e, "promoting scheduled tasks failed");
        return None;
    }
    match shared.store.next_wakeup().await {
        Ok(next) => Some(next.map(|at| {
            let wait = (at - now).max(time::Duration::ZERO);
            Instant::now() + Duration::try_from(wait).unwrap_or(Duration::ZERO)
        })),
        Err(e) => {
            tracing::warn!(error = %e, "reading the next scheduled time failed");
            None
        }
    }
}

/// Why an agent could not be had for an attempt.
enum Unloadable {
    /// The module is missing or not valid: the attempt ends `invalid`.
    Invalid(String),
    /// The store did not answer: put the task back without charging it.
    Unavailable,
}

async fn load_agent(
    shared: &Shared,
    task: &ClaimedTask,
    loading: &std::sync::Mutex<HashMap<ModuleId, Arc<AsyncMutex<()>>>>,
) -> Result<Arc<Agent>, Unloadable> {
    if let Some(agent) = shared.sandbox.cached(&task.module) {
        return Ok(agent);
    }
    // One load per module at a time: a burst of tasks for a new module compiles it once.
    let gate = loading
        .lock()
        .expect("loading lock")
        .entry(task.module)
        .or_default()
        .clone();
    let _loading = gate.lock().await;
    if let Some(agent) = shared.sandbox.cached(&task.module) {
        return Ok(agent);
    }
    let params = ModuleGetParams {
        tenant: task.tenant.clone(),
        module: ModuleRef::Id(task.module),
    };
    let record = match shared.store.module_get(params).await {
        Ok(Some(record)) => record,
        Ok(None) => {
            return Err(Unloadable::Invalid(format!(
                "module {} not found",
                task.module
            )));
        }
        Err(e) => {
            tracing::warn!(error = %e, module = %task.module, "cannot read the module");
            return Err(Unloadable::Unavailable);
        }
    };
    let sandbox = shared.sandbox.clone();
    let loaded = tokio::task::spawn_blocking(move || sandbox.load(&record.bytes)).await;
    loading.lock().expect("loading lock").remove(&task.module);
    match loaded {
        Ok(Ok(agent)) => Ok(agent),
        Ok(Err(e)) => Err(Unloadable::Invalid(e.to_string())),
        Err(_) => Err(Unloadable::Invalid("compiling the module panicked".into())),
    }
}

/// The task's directory grants with each volume name resolved to this node's directory.
/// A volume this node does not define (the operator removed it since the task was
/// submitted, or another node defines it), or whose directory is gone, is an error naming
/// the volume, never its host path; nothing runs.
fn grants(
    volumes: &BTreeMap<String, PathBuf>,
    task: &ClaimedTask,
) -> Result<Vec<DirGrant>, String> {
    task.dirs
        .iter()
        .map(|(guest, volume)| {
            let Some(host) = volumes.get(volume) else {
                return Err(format!(
                    "volume {volume:?} (granted at {guest}) is not defined on this node"
                ));
            };
            match std::fs::metadata(host) {
                Ok(meta) if meta.is_dir() => Ok(DirGrant::read_only(host, guest)),
                Ok(_) => Err(format!(
                    "volume {volume:?} (granted at {guest}) is no longer a directory"
                )),
                Err(e) => Err(format!(
                    "volume {volume:?} (granted at {guest}) is not available: {e}"
                )),
            }
        })
        .collect()
}

/// The task's egress policies as this node defines them, its idempotency keys seeded with
/// the task id (the same on every attempt). A policy this node does not define (the
/// operator removed it since the task was submitted) is an error naming it; nothing runs.
fn egress(
    policies: &BTreeMap<String, Arc<EgressPolicy>>,
    task: &ClaimedTask,
) -> Result<EgressGrant, String> {
    if task.egress.is_empty() {
        return Ok(EgressGrant::default());
    }
    let policies = task
        .egress
        .iter()
        .map(|name| {
            policies
                .get(name)
                .cloned()
                .ok_or_else(|| format!("egress policy {name:?} is not defined on this node"))
        })
        .collect::<Result<_, _>>()?;
    Ok(EgressGrant {
        policies,
        key_seed: task.task_id.as_str().to_string(),
        calls: None,
    })
}

async fn run_attempt(
    shared: Arc<Shared>,
    task: ClaimedTask,
    permit: OwnedSemaphorePermit,
    loading: Arc<std::sync::Mutex<HashMap<ModuleId, Arc<AsyncMutex<()>>>>>,
) {
    // Counted only where the cap can bind: a node without one pays nothing per attempt.
    let slot = shared.config.tenant_cap_binds().then(|| TenantSlot {
        shared: shared.clone(),
        tenant: task.tenant.clone(),
    });
    let running = Arc::new(Running {
        task_id: task.task_id.clone(),
        tenant: task.tenant.clone(),
        cancel: CancelToken::new(),
        why: AtomicU8::new(Interruption::None as u8),
        progress: ProgressCell::new(),
        progress_seen: AtomicU64::new(0),
    });
    shared
        .running
        .lock()
        .expect("running lock")
        .insert(task.attempt_id.clone(), running.clone());
    shared.emit(
        task.task_id.clone(),
        task.tenant.clone(),
        TaskState::Running,
        None,
    );

    let traced = crate::trace::attempt_start(&shared, &task);
    let granted = grants(&shared.config.volumes, &task).and_then(|dirs| {
        let mut egress = egress(&shared.config.egress, &task)?;
        if let Some(traced) = traced.as_ref().filter(|_| !egress.policies.is_empty()) {
            egress.calls = Some(traced.calls.clone());
        }
        Ok((dirs, egress))
    });
    let agent = match granted {
        Ok(granted) => load_agent(&shared, &task, &loading)
            .await
            .map(|agent| (agent, granted)),
        Err(why) => Err(Unloadable::Invalid(why)),
    };
    let attempt = match agent {
        Ok((agent, (dirs, egress))) => {
            let request = RunRequest {
                input: task.input.clone(),
                limits: task.limits,
                env: task
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                dirs,
                egress,
                args: task.args.clone(),
                progress: running.progress.clone(),
                tasks: shared
                    .config
                    .children
                    .as_ref()
                    .map(|specs| crate::children::grant(specs, &shared.clock, &task)),
            };
            let run = shared
                .sandbox
                .run_with_children(&agent, request, &running.cancel)
                .await;
            Ok((run.attempt, run.children))
        }
        Err(Unloadable::Invalid(why)) => {
            let mut attempt = Attempt::new(Outcome::Invalid);
            attempt.error = Some(why);
            Ok((attempt, Vec::new()))
        }
        Err(Unloadable::Unavailable) => Err(()),
    };
    // An `ok` attempt's children become tasks (created with its completion); a refusal
    // makes the attempt `invalid`, so it is not retried and no child exists.
    let (attempt, children) = match attempt {
        Ok((attempt, children))
            if attempt.outcome == Outcome::Ok
                && !children.is_empty()
                && running.interruption() == Interruption::None =>
        {
            let specs = shared
                .config
                .children
                .as_ref()
                .expect("children need a grant");
            match crate::children::tasks(specs.as_ref(), &task, children).await {
                Ok(children) => (Ok(attempt), children),
                Err(ChildrenError::Refused(why)) => (Ok(refused_attempt(attempt, why)), Vec::new()),
                Err(ChildrenError::Unavailable(why)) => {
                    tracing::warn!(task = %task.task_id, error = %why, "cannot make the attempt's children tasks; the task runs again");
                    (Err(()), Vec::new())
                }
            }
        }
        Ok((attempt, _)) => (Ok(attempt), Vec::new()),
        Err(()) => (Err(()), Vec::new()),
    };
    shared
        .running
        .lock()
        .expect("running lock")
        .remove(&task.attempt_id);
    if running.interruption() != Interruption::LeaseLost {
        crate::progress::flush(&shared, &task.attempt_id, &running).await;
    }

    let now = shared.clock.now();
    let (attempt, next) = match (attempt, running.interruption()) {
        // Another node holds the task now; its completion would be rejected.
        (_, Interruption::LeaseLost) => return,
        (Err(()), _) => (Attempt::new(Outcome::Lost), Next::Requeue),
        (Ok(attempt), Interruption::Shutdown) if attempt.outcome == Outcome::Cancelled => {
            (attempt, Next::Requeue)
        }
        (Ok(attempt), Interruption::Cancel) if attempt.outcome == Outcome::Cancelled => {
            (attempt, Next::Finish(TaskState::Cancelled))
        }
        (Ok(attempt), _) => {
            let next = next_after(
                attempt.outcome,
                task.attempt_number,
                &task.retry,
                now,
                full_jitter,
            );
            (attempt, next)
        }
    };
    if matches!(next, Next::Retry { .. }) {
        shared.wake.notify_one();
    }
    let keyed = task.concurrency.is_some();
    let trace = traced
        .map(|traced| crate::trace::attempt_end(traced, &task, &shared.config.node, &attempt));
    let done = Done {
        completion: fabric_store::Completion {
            children,
            attempt_id: task.attempt_id,
            attempt: attempt.clone(),
            next,
        },
        task_id: task.task_id,
        tenant: task.tenant,
        attempt: Arc::new(EndedAttempt {
            number: task.attempt_number,
            module: task.module,
            attempt,
        }),
        keyed,
        trace,
    };
    // The guest has ended, so its worker slot is free once the completion is queued, not
    // once it is committed: a slot held through the group commit would cap throughput at
    // workers per commit latency. Shutdown waits for every slot, then drains the queue.
    shared.completions.submit(done).await;
    drop(slot);
    drop(permit);
}

#[cfg(test)]
mod tests {
    use super::*;
    use fabric_store::{AttemptId, NewTask, TaskId, TaskRecord};
    use time::OffsetDateTime;

    fn claimed(dirs: &[(&str, &str)]) -> ClaimedTask {
        let mut task = NewTask::new("t", ModuleId::of(b"m"), Vec::new());
        task.dirs = dirs
            .iter()
            .map(|(g, v)| (g.to_string(), v.to_string()))
            .collect();
        let now = OffsetDateTime::UNIX_EPOCH;
        let record = TaskRecord {
            id: TaskId::from("T".to_owned()),
            tenant: task.tenant,
            module: task.module,
            input: task.input,
            priority: task.priority,
            state: TaskState::Running,
            limits: task.limits,
            retry: task.retry,
            idempotency_key: None,
            run_at: None,
            deadline: None,
            env: task.env,
            labels: task.labels,
            dirs: task.dirs,
            egress: task.egress,
            args: task.args,
            progress: None,
            created_at: now,
            started_at: None,
            finished_at: None,
            cancel_requested: false,
            attempts: Vec::new(),
            after: Vec::new(),
            pass_outputs: false,
            parent: None,
            depth: 0,
            error: None,
            concurrency: None,
            trace: None,
        };
        ClaimedTask::from_record(record, AttemptId::from("A".to_owned()), 1, now, now)
    }

    #[test]
    fn grants_resolve_volume_names_and_name_a_missing_one() {
        let root = tempfile::tempdir().unwrap();
        let (data, models) = (root.path().join("data"), root.path().join("models"));
        std::fs::create_dir(&data).unwrap();
        std::fs::create_dir(&models).unwrap();
        let volumes = BTreeMap::from([
            ("data".to_owned(), data.clone()),
            ("models".to_owned(), models.clone()),
            ("gone".to_owned(), root.path().join("gone")),
            ("file".to_owned(), root.path().join("file")),
        ]);
        std::fs::write(root.path().join("file"), "x").unwrap();
        assert_eq!(grants(&volumes, &claimed(&[])).unwrap(), []);
        assert_eq!(
            grants(&volumes, &claimed(&[("/data", "data"), ("/m", "models")])).unwrap(),
            [
                DirGrant::read_only(&data, "/data"),
                DirGrant::read_only(&models, "/m"),
            ]
        );
        for (volume, expected) in [
            (
                "undefined",
                "volume \"undefined\" (granted at /x) is not defined on this node",
            ),
            (
                "gone",
                "volume \"gone\" (granted at /x) is not available: No such file or directory (os error 2)",
            ),
            (
                "file",
                "volume \"file\" (granted at /x) is no longer a directory",
            ),
        ] {
            let task = claimed(&[("/data", "data"), ("/x", volume)]);
            assert_eq!(grants(&volumes, &task).unwrap_err(), expected);
        }
    }
}
