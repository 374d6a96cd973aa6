//! `schedule.put`, `schedule.get`, `schedule.list` and `schedule.delete`: a tenant's cron
//! schedules, checked field by field (each refusal names the field) before they are stored.

use fabric_store::{
    ScheduleDeleteParams, ScheduleGetParams, ScheduleListParams, SchedulePut as Stored,
    SchedulePutParams,
};
use fabric_types::ModuleId;
use fabric_types::wire::{
    LimitExceeded, ScheduleDeleted, ScheduleList, ScheduleName, ScheduleNotFound, SchedulePut,
    TaskSpec, code,
};
use serde_json::Value;
use time::OffsetDateTime;

use super::cron::Cron;
use super::{
    DEFAULT_TIMEZONE, MAX_SCHEDULES_PER_TENANT, SCHEDULE_LABEL, check_name, from_timestamp,
    time_zone, to_timestamp, view,
};
use crate::auth::Principal;
use crate::methods::{bounds as spec_bounds, decode, encode};
use crate::rpc::RpcError;
use crate::server::App;

/// Checks the schedule's task as `task.submit` would, but for its module (resolved at each
/// firing) and the fields a repeating task cannot have: `run_at`, `deadline` (instants)
/// and `idempotency_key` (each firing gets its own).
fn check_task(app: &App, who: &Principal, spec: &TaskSpec) -> Result<(), RpcError> {
    for (name, set) in [
        ("run_at", spec.run_at.is_some()),
        ("deadline", spec.deadline.is_some()),
        ("idempotency_key", spec.idempotency_key.is_some()),
    ] {
        if set {
            return Err(RpcError::invalid_params(
                format!("task.{name}"),
                "a schedule's task cannot have one: each firing is a new task at its tick, \
                 with the idempotency key schedule:<name>:<tick>",
            ));
        }
    }
    if spec.labels.contains_key(SCHEDULE_LABEL) {
        return Err(RpcError::invalid_params(
            format!("task.labels.{SCHEDULE_LABEL}"),
            "is set by the schedule: schedule=<name> on every task it creates",
        ));
    }
    if spec.labels.len() >= crate::spec::MAX_LABELS {
        return Err(RpcError::invalid_params(
            "task.labels",
            format!(
                "{} labels; a schedule's task may have at most {} (the schedule adds \
                 schedule=<name>)",
                spec.labels.len(),
                crate::spec::MAX_LABELS - 1
            ),
        ));
    }
    if spec.module.is_empty() {
        return Err(RpcError::invalid_params(
            "task.module",
            "must name a module: sha256:<hex> or a name",
        ));
    }
    crate::admission::module_ref(&spec.module, "task.")?;
    // Any module id will do: the module is resolved when the schedule fires.
    crate::spec::new_task(
        &who.tenant,
        ModuleId::of(b""),
        spec.clone(),
        spec_bounds(app, who),
        "task.",
    )?;
    Ok(())
}

pub(crate) async fn schedule_put(
    app: &App,
    who: &Principal,
    params: Value,
) -> Result<Value, RpcError> {
    if app.is_draining() {
        return Err(RpcError::draining());
    }
    let put: SchedulePut = decode(params)?;
    check_name(&put.name)?;
    let cron = Cron::parse(&put.cron).map_err(|err| RpcError::invalid_params("cron", err.0))?;
    let timezone = put.timezone.unwrap_or_else(|| DEFAULT_TIMEZONE.to_owned());
    let tz = time_zone(&timezone)?;
    check_task(app, who, &put.task)?;
    let now = OffsetDateTime::now_utc();
    let next = cron
        .next_after(to_timestamp(now), &tz)
        .ok_or_else(|| RpcError::invalid_params("cron", "matches no time in the next 30 years"))?;
    let task = serde_json::to_string(&put.task).map_err(RpcError::internal)?;
    let stored = app
        .store
        .schedule_put(SchedulePutParams {
            tenant: who.tenant.clone(),
            name: put.name,
            cron: put.cron,
            timezone,
            task,
            next_run_at: from_timestamp(next),
            max_per_tenant: MAX_SCHEDULES_PER_TENANT,
            now,
        })
        .await
        .map_err(RpcError::store)?;
    match stored {
        Stored::Stored(record) => encode(view(record)?),
        Stored::TooMany { count } => Err(RpcError::new(
            code::QUOTA,
            format!(
                "schedule quota: this tenant has {count} schedules, its limit of \
                 {MAX_SCHEDULES_PER_TENANT}; delete one first"
            ),
        )
        .with_data(LimitExceeded {
            limit: "schedules_per_tenant".to_owned(),
            max: MAX_SCHEDULES_PER_TENANT as u64,
            current: Some(count),
        })),
    }
}

fn not_found(name: &str) -> RpcError {
    RpcError::not_found(format!("schedule {name:?}")).with_data(ScheduleNotFound {
        name: name.to_owned(),
    })
}

pub(crate) async fn schedule_get(
    app: &App,
    who: &Principal,
    params: Value,
) -> Result<Value, RpcError> {
    let ScheduleName { name } = decode(params)?;
    let record = app
        .store
        .schedule_get(ScheduleGetParams {
            tenant: who.tenant.clone(),
            name: name.clone(),
        })
        .await
        .map_err(RpcError::store)?
        .ok_or_else(|| not_found(&name))?;
    encode(view(record)?)
}

pub(crate) async fn schedule_list(
    app: &App,
    who: &Principal,
    params: Value,
) -> Result<Value, RpcError> {
    let _: fabric_types::wire::NoParams = decode(params)?;
    let records = app
        .store
        .schedule_list(ScheduleListParams {
            tenant: who.tenant.clone(),
        })
        .await
        .map_err(RpcError::store)?;
    let schedules = records
        .into_iter()
        .map(view)
        .collect::<Result<Vec<_>, _>>()?;
    encode(ScheduleList { schedules })
}

pub(crate) async fn schedule_delete(
    app: &App,
    who: &Principal,
    params: Value,
) -> Result<Value, RpcError> {
    let ScheduleName { name } = decode(params)?;
    let deleted = app
        .store
        .schedule_delete(ScheduleDeleteParams {
            tenant: who.tenant.clone(),
            name: name.clone(),
        })
        .await
        .map_err(RpcError::store)?;
    if !deleted {
        return Err(not_found(&name));
    }
    encode(ScheduleDeleted {
        name,
        deleted: true,
    })
}
