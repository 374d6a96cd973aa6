//! What agents reported, for the layer above: `kpi.query` and `usage.report` (answered from
//! the store's rollups), `kpi.subscribe` (one `kpi.report` per attempt this node finishes)
//! and the KPI series of `/metrics`.

use std::sync::Arc;

use fabric_scheduler::TaskEvent;
use fabric_store::{KpiQueryParams, UsageReportParams};
use fabric_types::wire::{
    Dropped, KpiQuery, KpiReport, KpiRow, KpiRows, KpiSubscribe, KpiSubscribed, UsageQuery,
    UsageRow, UsageRows, code,
};
use fabric_types::{ModuleId, is_kpi_name};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::broadcast;
use tracing::Instrument;

use crate::admission::module_ref;
use crate::auth::Principal;
use crate::methods::{Transport, decode, encode};
use crate::rpc::{self, RpcError};
use crate::server::App;

/// The notification `kpi.subscribe` sends for each finished attempt.
pub(crate) const KPI_REPORT: &str = "kpi.report";
/// The notification telling a `kpi.subscribe` subscriber that it fell behind and `dropped`
/// reports were never sent to it.
pub(crate) const REPORTS_DROPPED: &str = "kpi.reports_dropped";

pub(crate) async fn kpi_query(
    app: &App,
    who: &Principal,
    params: Value,
) -> Result<Value, RpcError> {
    let query: KpiQuery = decode(params)?;
    if let Some(name) = &query.name
        && !is_kpi_name(name)
    {
        return Err(RpcError::invalid_params(
            "name",
            "a KPI name is [a-z][a-z0-9_.]{0,63}",
        ));
    }
    check_window(query.since, query.until)?;
    let module = match &query.module {
        Some(reference) => Some(module_id(app, who, reference).await?),
        None => None,
    };
    let rows = app
        .store
        .kpi_query(KpiQueryParams {
            tenant: who.scope(),
            module,
            name: query.name,
            since: query.since,
            until: query.until,
            group_by: query.group_by.unwrap_or_default(),
        })
        .await
        .map_err(RpcError::store)?;
    encode(KpiRows {
        rows: rows
            .into_iter()
            .map(|row| KpiRow {
                mean: row.mean(),
                module: row.module.map(|m| m.to_string()),
                module_name: row.module_name,
                tenant: row.tenant,
                hour: row.hour,
                name: row.name,
                count: row.count,
                sum: row.sum,
                min: row.min,
                max: row.max,
            })
            .collect(),
    })
}

pub(crate) async fn usage_report(
    app: &App,
    who: &Principal,
    params: Value,
) -> Result<Value, RpcError> {
    let query: UsageQuery = decode(params)?;
    check_window(query.since, query.until)?;
    let rows = app
        .store
        .usage_report(UsageReportParams {
            tenant: who.scope(),
            since: query.since,
            until: query.until,
            group_by: query.group_by.unwrap_or_default(),
        })
        .await
        .map_err(RpcError::store)?;
    encode(UsageRows {
        rows: rows
            .into_iter()
            .map(|row| UsageRow {
                tenant: row.tenant,
                module: row.module.map(|m| m.to_string()),
                module_name: row.module_name,
                day: row.day,
                attempts: row.attempts,
                fuel_consumed: row.fuel_consumed,
                wall_ms: row.wall_ms,
                memory_byte_seconds: row.memory_byte_seconds,
                http_requests: row.http_requests,
                http_bytes_sent: row.http_bytes_sent,
                http_bytes_received: row.http_bytes_received,
            })
            .collect(),
    })
}

/// Refuses a window that ends before it starts.
fn check_window(
    since: Option<OffsetDateTime>,
    until: Option<OffsetDateTime>,
) -> Result<(), RpcError> {
    match (since, until) {
        (Some(since), Some(until)) if until < since => Err(RpcError::invalid_params(
            "until",
            "must not be before since",
        )),
        _ => Ok(()),
    }
}

/// The module `reference` (an id or a name) names for `who`: a tenant's must be one of its
/// modules; the admin may name any id, and names resolve among the admin's own modules.
async fn module_id(app: &App, who: &Principal, reference: &str) -> Result<ModuleId, RpcError> {
    if who.admin
        && let fabric_store::ModuleRef::Id(id) = module_ref(reference, "")?
    {
        return Ok(id);
    }
    app.modules
        .resolve(&*app.store, &who.tenant, reference, "")
        .await
}

pub(crate) async fn kpi_subscribe(
    app: &App,
    who: &Principal,
    params: Value,
    transport: Transport<'_>,
) -> Result<Value, RpcError> {
    let KpiSubscribe { module } = decode(params)?;
    let Transport::WebSocket(session) = transport else {
        return Err(RpcError::new(
            code::METHOD_NOT_FOUND,
            "kpi.subscribe needs a WebSocket: connect to GET /rpc with an upgrade",
        ));
    };
    let only = match &module {
        Some(reference) => Some(module_id(app, who, reference).await?),
        None => None,
    };
    let app = session.app();
    let who = who.clone();
    let outbox = session.outbox();
    let mut events = app.scheduler.subscribe();
    session.spawn(
        async move {
            loop {
                let message = match events.recv().await {
                    Ok(event) => match report(&app, &who, only.as_ref(), event).await {
                        Some(report) => match serde_json::to_value(&report) {
                            Ok(params) => rpc::notification(KPI_REPORT, params),
                            Err(_) => continue,
                        },
                        None => continue,
                    },
                    Err(broadcast::error::RecvError::Lagged(dropped)) => {
                        tracing::warn!(dropped, "a KPI subscriber fell behind");
                        rpc::notification(REPORTS_DROPPED, json!(Dropped { dropped }))
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if outbox.send(message.to_string()).await.is_err() {
                    return;
                }
            }
        }
        .in_current_span(),
    );
    encode(KpiSubscribed {
        subscribed: true,
        module,
    })
}

/// The `kpi.report` for `event` when it is the end of an attempt `who` may see (of module
/// `only`, when given).
async fn report(
    app: &App,
    who: &Principal,
    only: Option<&ModuleId>,
    event: TaskEvent,
) -> Option<KpiReport> {
    let ended = event.attempt?;
    if !(who.admin || event.tenant == who.tenant) || only.is_some_and(|m| *m != ended.module) {
        return None;
    }
    let module_name = app
        .module_names
        .name(app.store.as_ref(), &event.tenant, &ended.module)
        .await;
    Some(KpiReport {
        task: event.task_id.into_string(),
        attempt: ended.number,
        module: ended.module.to_string(),
        module_name,
        tenant: event.tenant,
        outcome: ended.attempt.outcome,
        usage: ended.attempt.usage,
        kpis: ended.attempt.kpis.clone(),
    })
}

/// Adds every attempt this node finishes with KPIs to the `/metrics` series, labelled with
/// its module's name when it has one. A loop of its own, so that reading a tenant's module
/// names never holds up the event router that wakes `task.wait`.
pub(crate) async fn route_kpis(app: Arc<App>) {
    let mut events = app.scheduler.subscribe();
    loop {
        match events.recv().await {
            Ok(event) => {
                let Some(ended) = event.attempt.filter(|e| !e.attempt.kpis.is_empty()) else {
                    continue;
                };
                let label = app
                    .module_names
                    .name(app.store.as_ref(), &event.tenant, &ended.module)
                    .await
                    .unwrap_or_else(|| ended.module.to_string());
                app.metrics.kpis.record(&label, &ended.attempt.kpis);
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "KPI metrics fell behind the task events");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
