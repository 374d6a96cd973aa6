//! `fabric usage` and `fabric kpi`: the server's metered usage and KPI aggregates, as a
//! table or as the method's JSON result.

use std::process::ExitCode;

use fabric_types::format_timestamp;
use fabric_types::wire::{KpiGroup, KpiQuery, KpiRow, UsageGroup, UsageQuery, UsageRow};
use serde_json::json;

use super::{emit, emit_json, format, run};
use crate::args::{KpiArgs, KpiBy, UsageArgs, UsageBy};

pub fn usage(args: UsageArgs) -> ExitCode {
    let group = match args.by {
        UsageBy::Tenant => UsageGroup::Tenant,
        UsageBy::Module => UsageGroup::Module,
        UsageBy::Day => UsageGroup::Day,
    };
    let query = UsageQuery {
        since: args.since,
        until: args.until,
        group_by: Some(group),
    };
    run(&args.client, async |client| {
        let report = client.usage_report(&query).await?;
        if args.client.json {
            emit_json(json!(report));
        } else {
            emit(&usage_table(group, &report.rows));
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn kpi(args: KpiArgs) -> ExitCode {
    let group = match args.by {
        KpiBy::Name => KpiGroup::Name,
        KpiBy::Module => KpiGroup::Module,
        KpiBy::Tenant => KpiGroup::Tenant,
        KpiBy::Hour => KpiGroup::Hour,
    };
    let query = KpiQuery {
        module: args.module.clone(),
        name: args.name.clone(),
        since: args.since,
        until: args.until,
        group_by: Some(group),
    };
    run(&args.client, async |client| {
        let rows = client.kpi_query(&query).await?;
        if args.client.json {
            emit_json(json!(rows));
        } else {
            emit(&kpi_table(group, &rows.rows));
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// A module as a table shows it: its name when it has one, else its id.
fn module_cell(module: &Option<String>, name: &Option<String>) -> String {
    name.clone()
        .or_else(|| module.clone())
        .unwrap_or_else(|| "-".into())
}

fn usage_table(group: UsageGroup, rows: &[UsageRow]) -> String {
    let key = match group {
        UsageGroup::Tenant => "TENANT",
        UsageGroup::Module => "MODULE",
        UsageGroup::Day => "DAY",
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let key = match group {
                UsageGroup::Tenant => row.tenant.clone().unwrap_or_default(),
                UsageGroup::Module => module_cell(&row.module, &row.module_name),
                UsageGroup::Day => row.day.clone().unwrap_or_default(),
            };
            vec![
                key,
                row.attempts.to_string(),
                row.fuel_consumed.to_string(),
                format::duration_ms(row.wall_ms),
                row.memory_byte_seconds.to_string(),
                row.http_requests.to_string(),
                format::bytes(row.http_bytes_sent),
                format::bytes(row.http_bytes_received),
            ]
        })
        .collect();
    format::table(
        &[
            key,
            "ATTEMPTS",
            "FUEL",
            "WALL",
            "MEMORY B·S",
            "HTTP",
            "HTTP OUT",
            "HTTP IN",
        ],
        &cells,
    )
}

fn kpi_table(group: KpiGroup, rows: &[KpiRow]) -> String {
    let key = match group {
        KpiGroup::Name => None,
        KpiGroup::Module => Some("MODULE"),
        KpiGroup::Tenant => Some("TENANT"),
        KpiGroup::Hour => Some("HOUR"),
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let mut cells = match group {
                KpiGroup::Name => vec![],
                KpiGroup::Module => vec![module_cell(&row.module, &row.module_name)],
                KpiGroup::Tenant => vec![row.tenant.clone().unwrap_or_default()],
                KpiGroup::Hour => vec![row.hour.map(format_timestamp).unwrap_or_default()],
            };
            cells.extend([
                row.name.clone(),
                row.count.to_string(),
                row.sum.to_string(),
                row.min.to_string(),
                row.max.to_string(),
                format!("{:.6}", row.mean),
            ]);
            cells
        })
        .collect();
    let mut headers: Vec<&str> = key.into_iter().collect();
    headers.extend(["KPI", "COUNT", "SUM", "MIN", "MAX", "MEAN"]);
    format::table(&headers, &cells)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usage_table_names_modules_by_name_when_they_have_one() {
        let rows = [
            UsageRow {
                module: Some("sha256:aa".into()),
                module_name: Some("echo".into()),
                attempts: 3,
                wall_ms: 1500,
                ..UsageRow::default()
            },
            UsageRow {
                module: Some("sha256:bb".into()),
                attempts: 1,
                ..UsageRow::default()
            },
        ];
        let table = usage_table(UsageGroup::Module, &rows);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("MODULE"), "{table}");
        assert!(
            lines[1].starts_with("echo") && lines[1].contains(" 3 "),
            "{table}"
        );
        assert!(lines[2].starts_with("sha256:bb"), "{table}");
    }

    #[test]
    fn a_kpi_table_by_name_has_no_key_column() {
        let row = KpiRow {
            module: None,
            module_name: None,
            tenant: None,
            hour: None,
            name: "confidence".into(),
            count: 2,
            sum: 1.5,
            min: 0.5,
            max: 1.0,
            mean: 0.75,
        };
        let table = kpi_table(KpiGroup::Name, &[row]);
        assert!(table.starts_with("KPI"), "{table}");
        assert!(
            table.contains("confidence") && table.contains("0.750000"),
            "{table}"
        );
    }
}
