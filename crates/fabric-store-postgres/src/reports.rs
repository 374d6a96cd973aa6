//! The reads of the hourly rollups: the rows a KPI query or usage report covers, grouped by
//! the shared rules of `fabric_store::rollup`.

use fabric_store::rollup::{
    KpiHourly, KpiTotals, RollupKey, UsageHourly, UsageTotals, group_kpis, group_usage, hour_range,
};
use fabric_store::{KpiAggregate, KpiQueryParams, StoreError, UsageAggregate, UsageReportParams};
use fabric_types::wire::{KpiGroup, UsageGroup};
use tokio_postgres::types::ToSql;

use crate::db::{Db, query};
use crate::error::corrupt;

/// The name pointing at a rollup row's module for its tenant (the smallest, when several do).
const MODULE_NAME: &str = "(SELECT min(n.name) FROM module_names n
    WHERE n.tenant = r.tenant AND n.module_id = r.module)";

/// The `WHERE` conditions and their arguments for a tenant and an hour range, then `more`.
fn filters<'a>(
    tenant: &'a Option<String>,
    hours: &'a (Option<i64>, Option<i64>),
    more: &[(&'a (dyn ToSql + Sync), &str)],
) -> (String, Vec<&'a (dyn ToSql + Sync)>) {
    let mut conditions = vec!["true".to_string()];
    let mut args: Vec<&(dyn ToSql + Sync)> = Vec::new();
    let mut add = |arg: &'a (dyn ToSql + Sync), condition: &str| {
        args.push(arg);
        conditions.push(format!("{condition} ${}", args.len()));
    };
    if let Some(tenant) = tenant {
        add(tenant, "r.tenant =");
    }
    if let Some(since) = &hours.0 {
        add(since, "r.hour >=");
    }
    if let Some(until) = &hours.1 {
        add(until, "r.hour <");
    }
    for (arg, condition) in more {
        add(*arg, condition);
    }
    (conditions.join(" AND "), args)
}

fn count(value: i64, column: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt(format!("{column} is negative: {value}")))
}

/// `kpi_query`: the hourly KPI rows in range, grouped.
pub(crate) async fn kpi_query(db: &Db, p: KpiQueryParams) -> Result<Vec<KpiAggregate>, StoreError> {
    let hours = hour_range(p.since, p.until);
    let module = p.module.map(|m| m.to_string());
    let mut more: Vec<(&(dyn ToSql + Sync), &str)> = Vec::new();
    if let Some(module) = &module {
        more.push((module, "r.module ="));
    }
    if let Some(name) = &p.name {
        more.push((name, "r.name ="));
    }
    let (filter, args) = filters(&p.tenant, &hours, &more);
    let module_name = if p.group_by == KpiGroup::Module {
        MODULE_NAME
    } else {
        "NULL::text"
    };
    let sql = format!(
        "SELECT r.tenant, r.module, r.hour, r.name, r.count, r.sum, r.min, r.max, {module_name}
         FROM kpi_hourly r WHERE {filter}"
    );
    let client = db.client("kpi_query").await?;
    let rows = query(&client, "query KPIs", &sql, &args).await?;
    let rows = rows
        .iter()
        .map(|r| {
            Ok(KpiHourly {
                key: RollupKey {
                    tenant: r.get(0),
                    module: r.get(1),
                    hour_ms: r.get(2),
                },
                name: r.get(3),
                totals: KpiTotals {
                    count: count(r.get(4), "kpi_hourly.count")?,
                    sum: r.get(5),
                    min: r.get(6),
                    max: r.get(7),
                },
                module_name: r.get(8),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    group_kpis(rows, p.group_by)
}

/// `usage_report`: the hourly usage rows in range, grouped.
pub(crate) async fn usage_report(
    db: &Db,
    p: UsageReportParams,
) -> Result<Vec<UsageAggregate>, StoreError> {
    let hours = hour_range(p.since, p.until);
    let (filter, args) = filters(&p.tenant, &hours, &[]);
    let module_name = if p.group_by == UsageGroup::Module {
        MODULE_NAME
    } else {
        "NULL::text"
    };
    let sql = format!(
        "SELECT r.tenant, r.module, r.hour, r.attempts, r.fuel_consumed, r.wall_ms,
            r.memory_byte_seconds, r.http_requests, r.http_bytes_sent, r.http_bytes_received,
            {module_name}
         FROM usage_hourly r WHERE {filter}"
    );
    let client = db.client("usage_report").await?;
    let rows = query(&client, "report usage", &sql, &args).await?;
    let rows = rows.iter().map(|r| {
        let mut columns = [0i64; 7];
        for (i, column) in columns.iter_mut().enumerate() {
            *column = r.get(3 + i);
        }
        UsageHourly {
            key: RollupKey {
                tenant: r.get(0),
                module: r.get(1),
                hour_ms: r.get(2),
            },
            totals: UsageTotals::from_columns(columns),
            module_name: r.get(10),
        }
    });
    group_usage(rows, p.group_by)
}
