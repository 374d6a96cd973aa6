//! The reads of the hourly rollups: the rows a KPI query or usage report covers, grouped by
//! the shared rules of `fabric_store::rollup`.

use fabric_store::rollup::{
    KpiHourly, KpiTotals, RollupKey, UsageHourly, UsageTotals, group_kpis, group_usage, hour_range,
};
use fabric_store::{KpiAggregate, KpiQueryParams, StoreError, UsageAggregate, UsageReportParams};
use fabric_types::wire::{KpiGroup, UsageGroup};
use rusqlite::{Connection, ToSql};

use crate::db_err;

/// The name pointing at a rollup row's module for its tenant (the smallest, when several do).
const MODULE_NAME: &str = "(SELECT min(n.name) FROM module_names n
    WHERE n.tenant = r.tenant AND n.module_id = r.module)";

/// The `WHERE` clause and its arguments for a tenant and an hour range, followed by `more`.
fn filters<'a>(
    tenant: &'a Option<String>,
    hours: &'a (Option<i64>, Option<i64>),
    more: &[(&'a (dyn ToSql + 'a), &str)],
) -> (String, Vec<&'a dyn ToSql>) {
    let mut conditions = vec!["1 = 1".to_string()];
    let mut args: Vec<&dyn ToSql> = Vec::new();
    let mut add = |arg: &'a dyn ToSql, condition: &str| {
        args.push(arg);
        conditions.push(format!("{condition} ?{}", args.len()));
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

/// `kpi_query`: the hourly KPI rows in range, grouped.
pub(crate) fn kpi_query(
    conn: &Connection,
    p: KpiQueryParams,
) -> Result<Vec<KpiAggregate>, StoreError> {
    let hours = hour_range(p.since, p.until);
    let module = p.module.map(|m| m.to_string());
    let mut more: Vec<(&dyn ToSql, &str)> = Vec::new();
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
        "NULL"
    };
    let sql = format!(
        "SELECT r.tenant, r.module, r.hour, r.name, r.count, r.sum, r.min, r.max, {module_name}
         FROM kpi_hourly r WHERE {filter}"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(db_err("query KPIs"))?;
    let rows = stmt
        .query_map(args.as_slice(), |r| {
            Ok(KpiHourly {
                key: RollupKey {
                    tenant: r.get(0)?,
                    module: r.get(1)?,
                    hour_ms: r.get(2)?,
                },
                name: r.get(3)?,
                totals: KpiTotals {
                    count: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
                    sum: r.get(5)?,
                    min: r.get(6)?,
                    max: r.get(7)?,
                },
                module_name: r.get(8)?,
            })
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(db_err("query KPIs"))?;
    group_kpis(rows, p.group_by)
}

/// `usage_report`: the hourly usage rows in range, grouped.
pub(crate) fn usage_report(
    conn: &Connection,
    p: UsageReportParams,
) -> Result<Vec<UsageAggregate>, StoreError> {
    let hours = hour_range(p.since, p.until);
    let (filter, args) = filters(&p.tenant, &hours, &[]);
    let module_name = if p.group_by == UsageGroup::Module {
        MODULE_NAME
    } else {
        "NULL"
    };
    let sql = format!(
        "SELECT r.tenant, r.module, r.hour, r.attempts, r.fuel_consumed, r.wall_ms,
            r.memory_byte_seconds, r.http_requests, r.http_bytes_sent, r.http_bytes_received,
            {module_name}
         FROM usage_hourly r WHERE {filter}"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(db_err("report usage"))?;
    let rows = stmt
        .query_map(args.as_slice(), |r| {
            let mut columns = [0i64; 7];
            for (i, column) in columns.iter_mut().enumerate() {
                *column = r.get(3 + i)?;
            }
            Ok(UsageHourly {
                key: RollupKey {
                    tenant: r.get(0)?,
                    module: r.get(1)?,
                    hour_ms: r.get(2)?,
                },
                totals: UsageTotals::from_columns(columns),
                module_name: r.get(10)?,
            })
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(db_err("report usage"))?;
    group_usage(rows, p.group_by)
}
