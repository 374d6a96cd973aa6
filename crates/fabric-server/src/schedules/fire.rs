//! One firing of a due schedule: the tick to fire (the latest one due), the task it
//! creates, and moving the schedule on to its next tick.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use fabric_store::{ScheduleAdvanceParams, ScheduleRecord, StoreError, TaskId, TaskInsertParams};
use fabric_types::wire::{TaskSpec, code};
use jiff::tz::TimeZone;
use time::OffsetDateTime;

use super::cron::Cron;
use super::{SCHEDULE_LABEL, from_timestamp, tick_key, to_timestamp};
use crate::auth::Principal;
use crate::server::App;

/// How a firing ended, for `fabric_schedule_firings_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fired {
    /// A new task.
    Created,
    /// Another node (or an earlier try of this one) already created the tick's task.
    Deduplicated,
    /// The schedule's module is not stored: no task; the schedule goes on.
    ModuleMissing,
    /// The task was refused (its spec no longer passes the server's checks, or the tenant's
    /// task quota is full): no task; the schedule goes on.
    Refused,
}

impl Fired {
    const ALL: [Fired; 4] = [
        Fired::Created,
        Fired::Deduplicated,
        Fired::ModuleMissing,
        Fired::Refused,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Fired::Created => "created",
            Fired::Deduplicated => "deduplicated",
            Fired::ModuleMissing => "module_missing",
            Fired::Refused => "refused",
        }
    }
}

/// The firings this node made, by how they ended.
#[derive(Debug, Default)]
pub struct FiringCounts([AtomicU64; 4]);

impl FiringCounts {
    fn count(&self, fired: Fired) {
        if let Some(i) = Fired::ALL.iter().position(|f| *f == fired) {
            self.0[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many firings ended `fired` (tests read it).
    pub fn get(&self, fired: Fired) -> u64 {
        Fired::ALL
            .iter()
            .position(|f| *f == fired)
            .map_or(0, |i| self.0[i].load(Ordering::Relaxed))
    }

    /// The `fabric_schedule_firings_total` counter, in Prometheus text.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP fabric_schedule_firings_total Schedule ticks this node fired, by result \
             (created, deduplicated: another node made the tick's task, module_missing, refused)."
        );
        let _ = writeln!(out, "# TYPE fabric_schedule_firings_total counter");
        for fired in Fired::ALL {
            let _ = writeln!(
                out,
                "fabric_schedule_firings_total{{result=\"{}\"}} {}",
                fired.as_str(),
                self.get(fired)
            );
        }
    }
}

/// What the loop should do after a firing could not be completed.
#[derive(Debug)]
pub(crate) struct Transient(pub String);

/// Fires `schedule`, due at `now`: creates the task of its latest due tick (unless its
/// module is missing or the task is refused), then moves it to its first tick after `now`.
/// A store that cannot be reached leaves the schedule due, to be fired again.
pub(crate) async fn fire(
    app: &App,
    schedule: &ScheduleRecord,
    now: OffsetDateTime,
) -> Result<(), Transient> {
    let name = &schedule.name;
    let parsed = Cron::parse(&schedule.cron)
        .map_err(|e| e.0)
        .and_then(|cron| {
            TimeZone::get(&schedule.timezone)
                .map(|tz| (cron, tz))
                .map_err(|e| e.to_string())
        });
    let (tick, next, last_task) = match parsed {
        Ok((cron, tz)) => {
            let tick =
                cron.last_at_or_before(to_timestamp(schedule.next_run_at), to_timestamp(now), &tz);
            let next = cron
                .next_after(to_timestamp(now), &tz)
                .map_or_else(never, from_timestamp);
            let tick = from_timestamp(tick);
            let last_task = create(app, schedule, tick).await?;
            (tick, next, last_task)
        }
        Err(why) => {
            // Stored by another version that read it differently: leave it for a day.
            tracing::error!(schedule = %name, tenant = %schedule.tenant, %why, "cannot read a schedule");
            let later = now + time::Duration::days(1);
            (schedule.next_run_at, later, None)
        }
    };
    let moved = app
        .store
        .schedule_advance(ScheduleAdvanceParams {
            tenant: schedule.tenant.clone(),
            name: name.clone(),
            from: schedule.next_run_at,
            to: next,
            last_task,
            now,
        })
        .await
        .map_err(|e| Transient(format!("advance schedule {name:?}: {e}")))?;
    tracing::debug!(schedule = %name, tenant = %schedule.tenant, %tick, %next, moved, "schedule fired");
    Ok(())
}

/// The `next_run_at` of a schedule whose fields match no time in the search window:
/// 9999-12-31T00:00:00Z.
fn never() -> OffsetDateTime {
    fabric_store::from_millis(253_402_214_400_000)
}

/// Creates the task of `schedule`'s tick: its id (also when another node created it), or
/// `None` when the firing was skipped.
async fn create(
    app: &App,
    schedule: &ScheduleRecord,
    tick: OffsetDateTime,
) -> Result<Option<TaskId>, Transient> {
    let (tenant, name) = (&schedule.tenant, &schedule.name);
    let skip = |fired: Fired, why: String| {
        app.metrics.schedules.count(fired);
        tracing::warn!(schedule = %name, %tenant, %tick, %why, "schedule firing skipped");
        Ok(None)
    };
    let spec: TaskSpec = match serde_json::from_str(&schedule.task) {
        Ok(spec) => spec,
        Err(err) => return skip(Fired::Refused, format!("its task cannot be read: {err}")),
    };
    let module = match app
        .modules
        .resolve(&*app.store, tenant, &spec.module, "task.")
        .await
    {
        Ok(module) => module,
        Err(err) if err.code == code::NOT_FOUND => {
            return skip(Fired::ModuleMissing, err.message);
        }
        Err(err) => return Err(Transient(err.message)),
    };
    let principal = Principal {
        tenant: tenant.clone(),
        admin: false,
        egress: app.auth.egress_of(tenant),
    };
    let mut task = match crate::spec::new_task(
        tenant,
        module,
        spec,
        crate::methods::bounds(app, &principal),
        "task.",
    ) {
        Ok(task) => task,
        Err(err) => return skip(Fired::Refused, err.message),
    };
    task.labels.insert(SCHEDULE_LABEL.to_owned(), name.clone());
    task.idempotency_key = Some(tick_key(name, tick));
    let priority = task.priority;
    let admitted = match app.quota.admit(&*app.store, tenant, 1).await {
        Ok(admitted) => admitted,
        Err(err) if err.code == code::QUOTA => return skip(Fired::Refused, err.message),
        Err(err) => return Err(Transient(err.message)),
    };
    let inserted = app
        .store
        .task_insert(TaskInsertParams {
            tasks: vec![task],
            now: OffsetDateTime::now_utc(),
        })
        .await;
    let inserted = match inserted {
        Ok(mut inserted) if !inserted.is_empty() => inserted.remove(0),
        Ok(_) => return Err(Transient("no task inserted".into())),
        Err(StoreError::ModuleNotFound { module, .. }) => {
            if let Ok(id) = module.parse() {
                app.modules.forget(tenant, &id);
            }
            return skip(Fired::ModuleMissing, format!("module {module} was deleted"));
        }
        Err(err) => {
            return Err(Transient(format!(
                "insert the task of schedule {name:?}: {err}"
            )));
        }
    };
    if inserted.deduplicated {
        app.metrics.schedules.count(Fired::Deduplicated);
        admitted.settle(0);
    } else {
        app.metrics.schedules.count(Fired::Created);
        app.metrics.task_submitted(priority);
        app.scheduler.wake();
        admitted.settle(1);
    }
    Ok(Some(inserted.id))
}
