//! The KPI and usage rollups, in one place for both backends: how a batch of ended attempts
//! becomes one row per rollup key (so a batch does one upsert per key, not per attempt), which
//! stored hours a query's bounds cover, and how stored hourly rows group into a report.
//!
//! Backends store one row per `(tenant, module, hour[, KPI name])` and upsert
//! [`Rollup::kpis`] and [`Rollup::usage`] in the transaction that ended the attempts, in key
//! order (so concurrent writers lock rows in one order). A query reads the hourly rows in
//! range and hands them to [`group_kpis`] or [`group_usage`].

use std::collections::BTreeMap;

use fabric_types::wire::{KpiGroup, UsageGroup};
use fabric_types::{Attempt, KpiStats, ModuleId, Usage};
use time::OffsetDateTime;

use crate::{KpiAggregate, StoreError, UsageAggregate, from_millis, to_millis};

/// One hour in milliseconds.
pub const HOUR_MS: i64 = 3_600_000;

/// One day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// The start of the UTC hour holding `at_ms` (milliseconds since the Unix epoch).
pub fn hour_start(at_ms: i64) -> i64 {
    at_ms.div_euclid(HOUR_MS).saturating_mul(HOUR_MS)
}

/// The stored hours a query's bounds cover: a row of hour `h` is in range when
/// `since <= h` and `h < until`, with `since` rounded down to its hour and `until` rounded up
/// to an hour (an absent bound is open).
pub fn hour_range(
    since: Option<OffsetDateTime>,
    until: Option<OffsetDateTime>,
) -> (Option<i64>, Option<i64>) {
    let since = since.map(|at| hour_start(to_millis(at)));
    let until = until.map(|at| {
        let ms = to_millis(at);
        let start = hour_start(ms);
        if start == ms {
            start
        } else {
            start.saturating_add(HOUR_MS)
        }
    });
    (since, until)
}

/// `x` as a finite number the stores can keep: infinities saturate at the largest finite
/// values, NaN becomes 0.
pub fn finite(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(f64::MIN, f64::MAX)
    }
}

/// What one rollup row is kept for: a tenant's module in one UTC hour.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RollupKey {
    pub tenant: String,
    /// The module id as stored (`sha256:<hex>`).
    pub module: String,
    /// The start of the hour, in milliseconds since the Unix epoch.
    pub hour_ms: i64,
}

/// The stats of one KPI in one rollup row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KpiTotals {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl KpiTotals {
    /// One attempt's stats of a KPI, made finite.
    pub fn of(stats: &KpiStats) -> Self {
        Self {
            count: stats.count,
            sum: finite(stats.sum),
            min: finite(stats.min),
            max: finite(stats.max),
        }
    }

    /// Adds `other` (counts and sums saturate).
    pub fn merge(&mut self, other: &KpiTotals) {
        self.count = self.count.saturating_add(other.count);
        self.sum = finite(self.sum + other.sum);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }
}

/// The usage of the attempts of one rollup row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageTotals {
    pub attempts: u64,
    pub fuel_consumed: u64,
    pub wall_ms: u64,
    pub memory_byte_seconds: u64,
    pub http_requests: u64,
    pub http_bytes_sent: u64,
    pub http_bytes_received: u64,
}

impl UsageTotals {
    /// One attempt that used `usage`.
    pub fn of(usage: &Usage) -> Self {
        Self {
            attempts: 1,
            fuel_consumed: usage.fuel_consumed,
            wall_ms: usage.wall_ms,
            memory_byte_seconds: usage.memory_byte_seconds(),
            http_requests: usage.http_requests,
            http_bytes_sent: usage.http_bytes_sent,
            http_bytes_received: usage.http_bytes_received,
        }
    }

    /// Adds `other`, saturating.
    pub fn merge(&mut self, other: &UsageTotals) {
        self.attempts = self.attempts.saturating_add(other.attempts);
        self.fuel_consumed = self.fuel_consumed.saturating_add(other.fuel_consumed);
        self.wall_ms = self.wall_ms.saturating_add(other.wall_ms);
        self.memory_byte_seconds = self
            .memory_byte_seconds
            .saturating_add(other.memory_byte_seconds);
        self.http_requests = self.http_requests.saturating_add(other.http_requests);
        self.http_bytes_sent = self.http_bytes_sent.saturating_add(other.http_bytes_sent);
        self.http_bytes_received = self
            .http_bytes_received
            .saturating_add(other.http_bytes_received);
    }

    /// The columns as a backend stores them (signed 64-bit integers), saturating.
    pub fn columns(&self) -> [i64; 7] {
        [
            self.attempts,
            self.fuel_consumed,
            self.wall_ms,
            self.memory_byte_seconds,
            self.http_requests,
            self.http_bytes_sent,
            self.http_bytes_received,
        ]
        .map(saturate)
    }

    /// Totals from stored columns (in [`UsageTotals::columns`] order; negatives read as 0).
    pub fn from_columns(columns: [i64; 7]) -> Self {
        let [
            attempts,
            fuel_consumed,
            wall_ms,
            memory_byte_seconds,
            http_requests,
            http_bytes_sent,
            http_bytes_received,
        ] = columns.map(|c| u64::try_from(c).unwrap_or(0));
        Self {
            attempts,
            fuel_consumed,
            wall_ms,
            memory_byte_seconds,
            http_requests,
            http_bytes_sent,
            http_bytes_received,
        }
    }
}

/// A `u64` as a signed 64-bit column, saturating at `i64::MAX`.
pub fn saturate(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// One write transaction's additions to the rollups, merged by key.
#[derive(Debug, Clone, Default)]
pub struct Rollup {
    /// By rollup key and KPI name.
    pub kpis: BTreeMap<(RollupKey, String), KpiTotals>,
    pub usage: BTreeMap<RollupKey, UsageTotals>,
}

impl Rollup {
    /// An attempt of `tenant`'s `module` that ended at `now`. Its usage always counts (a
    /// requeued attempt ran too); its KPIs only when the attempt is `recorded` (a requeued
    /// attempt is deleted, and its KPIs with it).
    pub fn ended(
        &mut self,
        tenant: &str,
        module: &str,
        now: OffsetDateTime,
        attempt: &Attempt,
        recorded: bool,
    ) {
        let key = RollupKey {
            tenant: tenant.to_owned(),
            module: module.to_owned(),
            hour_ms: hour_start(to_millis(now)),
        };
        if recorded {
            for (name, stats) in &attempt.kpis {
                let totals = KpiTotals::of(stats);
                self.kpis
                    .entry((key.clone(), name.clone()))
                    .and_modify(|t| t.merge(&totals))
                    .or_insert(totals);
            }
        }
        self.add_usage(key, UsageTotals::of(&attempt.usage));
    }

    /// An attempt of `tenant`'s `module` found lost at `now`: counted, with no usage (what
    /// the guest used is unknown).
    pub fn lost(&mut self, tenant: &str, module: &str, now: OffsetDateTime) {
        let key = RollupKey {
            tenant: tenant.to_owned(),
            module: module.to_owned(),
            hour_ms: hour_start(to_millis(now)),
        };
        let one = UsageTotals {
            attempts: 1,
            ..UsageTotals::default()
        };
        self.add_usage(key, one);
    }

    fn add_usage(&mut self, key: RollupKey, totals: UsageTotals) {
        self.usage
            .entry(key)
            .and_modify(|t| t.merge(&totals))
            .or_insert(totals);
    }
}

/// One stored `kpi_hourly` row, as a backend reads it for [`group_kpis`].
#[derive(Debug, Clone, PartialEq)]
pub struct KpiHourly {
    pub key: RollupKey,
    pub name: String,
    pub totals: KpiTotals,
    /// The name pointing at the module for the row's tenant; read only for
    /// [`KpiGroup::Module`].
    pub module_name: Option<String>,
}

/// One stored `usage_hourly` row, as a backend reads it for [`group_usage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageHourly {
    pub key: RollupKey,
    pub totals: UsageTotals,
    /// The name pointing at the module for the row's tenant; read only for
    /// [`UsageGroup::Module`].
    pub module_name: Option<String>,
}

/// What a report row groups by: only its dimension is set. Orders rows by dimension.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Dimension {
    tenant: Option<String>,
    module: Option<String>,
    module_name: Option<String>,
    /// An hour or a day, as the start of it in milliseconds.
    at_ms: Option<i64>,
}

fn module_id(text: &str) -> Result<ModuleId, StoreError> {
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("rollup module {text:?}: {e}")))
}

/// Groups hourly KPI rows (already filtered) by KPI name plus `group_by`; rows ordered by
/// dimension, then name.
pub fn group_kpis(
    rows: impl IntoIterator<Item = KpiHourly>,
    group_by: KpiGroup,
) -> Result<Vec<KpiAggregate>, StoreError> {
    let mut groups: BTreeMap<(Dimension, String), KpiTotals> = BTreeMap::new();
    for row in rows {
        let dimension = match group_by {
            KpiGroup::Name => Dimension::default(),
            KpiGroup::Module => Dimension {
                module: Some(row.key.module),
                module_name: row.module_name,
                ..Dimension::default()
            },
            KpiGroup::Tenant => Dimension {
                tenant: Some(row.key.tenant),
                ..Dimension::default()
            },
            KpiGroup::Hour => Dimension {
                at_ms: Some(row.key.hour_ms),
                ..Dimension::default()
            },
        };
        groups
            .entry((dimension, row.name))
            .and_modify(|t| t.merge(&row.totals))
            .or_insert(row.totals);
    }
    groups
        .into_iter()
        .map(|((d, name), t)| {
            Ok(KpiAggregate {
                module: d.module.as_deref().map(module_id).transpose()?,
                module_name: d.module_name,
                tenant: d.tenant,
                hour: d.at_ms.map(from_millis),
                name,
                count: t.count,
                sum: t.sum,
                min: t.min,
                max: t.max,
            })
        })
        .collect()
}

/// Groups hourly usage rows (already filtered) by `group_by`; rows ordered by dimension.
pub fn group_usage(
    rows: impl IntoIterator<Item = UsageHourly>,
    group_by: UsageGroup,
) -> Result<Vec<UsageAggregate>, StoreError> {
    let mut groups: BTreeMap<Dimension, UsageTotals> = BTreeMap::new();
    for row in rows {
        let dimension = match group_by {
            UsageGroup::Tenant => Dimension {
                tenant: Some(row.key.tenant),
                ..Dimension::default()
            },
            UsageGroup::Module => Dimension {
                module: Some(row.key.module),
                module_name: row.module_name,
                ..Dimension::default()
            },
            UsageGroup::Day => Dimension {
                at_ms: Some(row.key.hour_ms.div_euclid(DAY_MS).saturating_mul(DAY_MS)),
                ..Dimension::default()
            },
        };
        groups
            .entry(dimension)
            .and_modify(|t| t.merge(&row.totals))
            .or_insert(row.totals);
    }
    groups
        .into_iter()
        .map(|(d, t)| {
            Ok(UsageAggregate {
                tenant: d.tenant,
                module: d.module.as_deref().map(module_id).transpose()?,
                module_name: d.module_name,
                day: d.at_ms.map(|ms| {
                    let date = from_millis(ms).date();
                    format!(
                        "{:04}-{:02}-{:02}",
                        date.year(),
                        u8::from(date.month()),
                        date.day()
                    )
                }),
                attempts: t.attempts,
                fuel_consumed: t.fuel_consumed,
                wall_ms: t.wall_ms,
                memory_byte_seconds: t.memory_byte_seconds,
                http_requests: t.http_requests,
                http_bytes_sent: t.http_bytes_sent,
                http_bytes_received: t.http_bytes_received,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fabric_types::Outcome;

    const T0: i64 = 1_700_000_000_000; // 22:13:20 UTC

    #[test]
    fn hours_round_down_and_until_rounds_up() {
        assert_eq!(hour_start(T0), 1_699_999_200_000);
        assert_eq!(hour_start(-1), -HOUR_MS);
        let (since, until) = hour_range(Some(from_millis(T0)), Some(from_millis(T0)));
        assert_eq!(since, Some(1_699_999_200_000));
        assert_eq!(until, Some(1_699_999_200_000 + HOUR_MS));
        let exact = from_millis(1_699_999_200_000);
        assert_eq!(
            hour_range(None, Some(exact)),
            (None, Some(1_699_999_200_000))
        );
    }

    #[test]
    fn a_batch_merges_into_one_row_per_key_and_requeued_kpis_are_dropped() {
        let mut attempt = Attempt::new(Outcome::Ok);
        attempt.usage.fuel_consumed = 10;
        attempt.usage.peak_memory_bytes = 2_000;
        attempt.usage.wall_ms = 500;
        let mut stats = KpiStats::new(2.0);
        stats.record(-1.0);
        attempt.kpis.insert("score".into(), stats);
        let now = from_millis(T0);
        let mut rollup = Rollup::default();
        rollup.ended("a", "m", now, &attempt, true);
        rollup.ended("a", "m", now, &attempt, false);
        rollup.lost("a", "m", now);
        rollup.ended("b", "m", now, &attempt, true);
        assert_eq!(rollup.usage.len(), 2);
        let key = RollupKey {
            tenant: "a".into(),
            module: "m".into(),
            hour_ms: hour_start(T0),
        };
        let usage = rollup.usage[&key];
        assert_eq!(
            (
                usage.attempts,
                usage.fuel_consumed,
                usage.memory_byte_seconds
            ),
            (3, 20, 2_000)
        );
        assert_eq!(rollup.kpis.len(), 2);
        let score = rollup.kpis[&(key, "score".to_string())];
        assert_eq!(
            score,
            KpiTotals {
                count: 2,
                sum: 1.0,
                min: -1.0,
                max: 2.0
            }
        );
    }

    #[test]
    fn sums_saturate_instead_of_overflowing() {
        let mut a = UsageTotals::of(&Usage {
            fuel_consumed: u64::MAX - 1,
            ..Usage::default()
        });
        a.merge(&a.clone());
        assert_eq!(a.fuel_consumed, u64::MAX);
        assert_eq!(a.columns()[1], i64::MAX);
        let mut k = KpiTotals::of(&KpiStats::new(f64::MAX));
        k.merge(&k.clone());
        assert_eq!(k.sum, f64::MAX);
        assert_eq!(finite(f64::NAN), 0.0);
        assert_eq!(finite(f64::NEG_INFINITY), f64::MIN);
    }

    #[test]
    fn usage_groups_by_day_as_a_date() {
        let module = ModuleId::of(b"m").to_string();
        let row = |hour_ms| UsageHourly {
            key: RollupKey {
                tenant: "a".into(),
                module: module.clone(),
                hour_ms,
            },
            totals: UsageTotals {
                attempts: 1,
                ..UsageTotals::default()
            },
            module_name: None,
        };
        let rows = vec![
            row(hour_start(T0)),
            row(hour_start(T0) + HOUR_MS),
            row(hour_start(T0) + 2 * HOUR_MS),
            row(0),
        ];
        let days = group_usage(rows, UsageGroup::Day).unwrap();
        let got: Vec<(Option<String>, u64)> =
            days.into_iter().map(|d| (d.day, d.attempts)).collect();
        assert_eq!(
            got,
            [
                (Some("1970-01-01".to_string()), 1),
                (Some("2023-11-14".to_string()), 2),
                (Some("2023-11-15".to_string()), 1)
            ]
        );
    }
}
