//! What an agent reports about its own work: KPIs (named values) and progress, with the
//! rules every layer checks them by (the sandbox for the guest's calls, the server for
//! queries).

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The longest KPI name: `[a-z][a-z0-9_.]{0,63}`.
pub const MAX_KPI_NAME_BYTES: usize = 64;

/// The longest progress message, in bytes; a longer one is refused.
pub const MAX_PROGRESS_MESSAGE_BYTES: usize = 256;

/// One attempt's KPIs by name.
pub type Kpis = BTreeMap<String, KpiStats>;

/// What one attempt recorded of one KPI.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KpiStats {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    /// The value recorded last.
    pub last: f64,
}

impl KpiStats {
    /// The stats of one recorded value.
    pub fn new(value: f64) -> Self {
        Self {
            count: 1,
            sum: value,
            min: value,
            max: value,
            last: value,
        }
    }

    /// Adds one more value.
    pub fn record(&mut self, value: f64) {
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.last = value;
    }
}

/// How far a running task says it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Progress {
    /// From 0.0 (nothing done) to 1.0 (all done).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub done: f64,
    pub message: String,
    /// When the agent reported it.
    #[serde(with = "crate::millis")]
    #[schemars(schema_with = "crate::schema::date_time")]
    pub at: OffsetDateTime,
}

/// Why a telemetry call was refused. Core modules see [`TelemetryRefusal::code`]; components
/// see the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TelemetryRefusal {
    /// The KPI name is not `[a-z][a-z0-9_.]{0,63}` (or not UTF-8).
    BadName,
    /// The value is not finite, or progress is outside 0.0..=1.0.
    BadValue,
    /// The progress message is longer than [`MAX_PROGRESS_MESSAGE_BYTES`] (or not UTF-8).
    BadMessage,
    /// The attempt already recorded the most distinct KPI names it may.
    TooManyNames,
    /// The attempt already made the most telemetry calls it may.
    TooManyCalls,
    /// A pointer and length do not lie inside the guest's memory (core modules only).
    BadPointer,
}

impl TelemetryRefusal {
    /// Every refusal, in code order.
    pub const ALL: [TelemetryRefusal; 6] = [
        TelemetryRefusal::BadName,
        TelemetryRefusal::BadValue,
        TelemetryRefusal::BadMessage,
        TelemetryRefusal::TooManyNames,
        TelemetryRefusal::TooManyCalls,
        TelemetryRefusal::BadPointer,
    ];

    /// The non-zero code a core module's `fabric.kpi`/`fabric.progress` returns.
    pub fn code(self) -> i32 {
        match self {
            TelemetryRefusal::BadName => 1,
            TelemetryRefusal::BadValue => 2,
            TelemetryRefusal::BadMessage => 3,
            TelemetryRefusal::TooManyNames => 4,
            TelemetryRefusal::TooManyCalls => 5,
            TelemetryRefusal::BadPointer => 6,
        }
    }
}

impl fmt::Display for TelemetryRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TelemetryRefusal::BadName => "bad KPI name: expected [a-z][a-z0-9_.]{0,63}",
            TelemetryRefusal::BadValue => {
                "bad value: KPI values must be finite and progress within 0.0..=1.0"
            }
            TelemetryRefusal::BadMessage => "bad progress message: at most 256 bytes of UTF-8",
            TelemetryRefusal::TooManyNames => {
                "limit reached: this attempt recorded the most distinct KPI names it may"
            }
            TelemetryRefusal::TooManyCalls => {
                "limit reached: this attempt made the most telemetry calls it may"
            }
            TelemetryRefusal::BadPointer => "bad pointer: the bytes lie outside the guest memory",
        })
    }
}

/// Whether `name` is a KPI name: `[a-z][a-z0-9_.]{0,63}`.
pub fn is_kpi_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_KPI_NAME_BYTES
        && bytes[0].is_ascii_lowercase()
        && bytes[1..]
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
}

/// Checks one KPI call's name and value.
pub fn check_kpi(name: &str, value: f64) -> Result<(), TelemetryRefusal> {
    if !is_kpi_name(name) {
        return Err(TelemetryRefusal::BadName);
    }
    if !value.is_finite() {
        return Err(TelemetryRefusal::BadValue);
    }
    Ok(())
}

/// Checks one progress call.
pub fn check_progress(done: f64, message: &str) -> Result<(), TelemetryRefusal> {
    if !(0.0..=1.0).contains(&done) {
        return Err(TelemetryRefusal::BadValue);
    }
    if message.len() > MAX_PROGRESS_MESSAGE_BYTES {
        return Err(TelemetryRefusal::BadMessage);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kpi_names_follow_the_pattern() {
        for good in ["a", "confidence", "tokens.in", "x_1.y", &"a".repeat(64)] {
            assert!(is_kpi_name(good), "{good}");
        }
        for bad in [
            "",
            "A",
            "1a",
            "_a",
            ".a",
            "a-b",
            "a b",
            "é",
            &"a".repeat(65),
        ] {
            assert!(!is_kpi_name(bad), "{bad}");
        }
    }

    #[test]
    fn values_must_be_finite_and_progress_within_range() {
        assert_eq!(check_kpi("x", 1e300), Ok(()));
        assert_eq!(check_kpi("x", -0.0), Ok(()));
        assert_eq!(check_kpi("x", f64::NAN), Err(TelemetryRefusal::BadValue));
        assert_eq!(
            check_kpi("x", f64::INFINITY),
            Err(TelemetryRefusal::BadValue)
        );
        assert_eq!(check_kpi("X", 1.0), Err(TelemetryRefusal::BadName));
        assert_eq!(check_progress(0.0, ""), Ok(()));
        assert_eq!(check_progress(1.0, &"m".repeat(256)), Ok(()));
        assert_eq!(check_progress(1.01, ""), Err(TelemetryRefusal::BadValue));
        assert_eq!(
            check_progress(f64::NAN, ""),
            Err(TelemetryRefusal::BadValue)
        );
        assert_eq!(
            check_progress(0.5, &"m".repeat(257)),
            Err(TelemetryRefusal::BadMessage)
        );
    }

    #[test]
    fn stats_keep_count_sum_min_max_and_last() {
        let mut stats = KpiStats::new(2.0);
        stats.record(-1.0);
        stats.record(5.0);
        stats.record(3.0);
        assert_eq!(
            stats,
            KpiStats {
                count: 4,
                sum: 9.0,
                min: -1.0,
                max: 5.0,
                last: 3.0
            }
        );
    }

    #[test]
    fn refusal_codes_are_distinct_and_non_zero() {
        let codes: Vec<i32> = TelemetryRefusal::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes, [1, 2, 3, 4, 5, 6]);
    }
}
