//! The JSON shapes of the reporting methods (docs/api.md): `kpi.query`, `kpi.subscribe`
//! and its `kpi.report` notifications, and `usage.report`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{Kpis, Outcome, Usage};

/// What `kpi.query` groups by, besides the KPI name (always a key: values of different
/// KPIs are never summed together).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KpiGroup {
    /// One row per KPI name.
    #[default]
    Name,
    /// One row per module and KPI name.
    Module,
    /// One row per tenant and KPI name.
    Tenant,
    /// One row per hour (UTC) and KPI name.
    Hour,
}

/// `kpi.query` params.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KpiQuery {
    /// A module id (`sha256:<hex>`) or name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// Only this KPI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = "^[a-z][a-z0-9_.]{0,63}$"))]
    pub name: Option<String>,
    /// Attempts finished at or after this time (rounded down to its hour).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    #[schemars(schema_with = "crate::schema::date_time")]
    pub since: Option<OffsetDateTime>,
    /// Attempts finished before this time (rounded up to an hour).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    #[schemars(schema_with = "crate::schema::date_time")]
    pub until: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<KpiGroup>,
}

/// One row of `kpi.query`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KpiRow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The start of the hour, for `group_by: "hour"`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::millis::option"
    )]
    #[schemars(schema_with = "crate::schema::date_time")]
    pub hour: Option<OffsetDateTime>,
    pub name: String,
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
}

/// `kpi.query` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KpiRows {
    pub rows: Vec<KpiRow>,
}

/// `kpi.subscribe` params.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KpiSubscribe {
    /// Only attempts of this module (an id or a name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

/// `kpi.report` notification params: one finished attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KpiReport {
    pub task: String,
    /// The attempt's number, from 1.
    pub attempt: u32,
    pub module: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_name: Option<String>,
    pub tenant: String,
    pub outcome: Outcome,
    pub usage: Usage,
    pub kpis: Kpis,
}

/// What `usage.report` groups by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UsageGroup {
    #[default]
    Tenant,
    Module,
    /// One row per day (UTC).
    Day,
}

/// `usage.report` params.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Attempts finished at or after this time (rounded down to its hour).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    #[schemars(schema_with = "crate::schema::date_time")]
    pub since: Option<OffsetDateTime>,
    /// Attempts finished before this time (rounded up to an hour).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    #[schemars(schema_with = "crate::schema::date_time")]
    pub until: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<UsageGroup>,
}

/// One row of `usage.report`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UsageRow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_name: Option<String>,
    /// The day (UTC), `YYYY-MM-DD`, for `group_by: "day"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<String>,
    pub attempts: u64,
    pub fuel_consumed: u64,
    pub wall_ms: u64,
    /// Each attempt's peak memory times its wall time, summed.
    pub memory_byte_seconds: u64,
    pub http_requests: u64,
    pub http_bytes_sent: u64,
    pub http_bytes_received: u64,
}

/// `usage.report` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UsageRows {
    pub rows: Vec<UsageRow>,
}
