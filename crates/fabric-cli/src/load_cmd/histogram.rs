//! The log-linear histogram the latencies are counted in: fixed size, within 0.4% of any value.

use serde_json::{Value, json};

/// Sub-buckets per power of two: 2^7 = 128, so a bucket is at most 1/128 (0.8%) of its
/// values wide, and its midpoint is within 0.4% of any of them.
const SUB_BITS: u32 = 7;
const SUB_BUCKETS: usize = 1 << SUB_BITS;
/// Values up to 2^40 µs (12.7 days) are kept apart; larger ones count in the last bucket.
const MAX_EXPONENT: u32 = 40;
const BUCKETS: usize = (MAX_EXPONENT - SUB_BITS + 2) as usize * SUB_BUCKETS;

/// A log-linear histogram of durations in whole units (microseconds, or milliseconds for
/// the server's millisecond timestamps): exact below 128 units, then 128 buckets per power
/// of two, in a fixed 35 KiB whatever the number of values.
#[derive(Clone)]
pub(super) struct LogHistogram {
    /// Microseconds in one unit.
    unit_us: u64,
    counts: Box<[u64]>,
    pub(super) count: u64,
    pub(super) min: u64,
    pub(super) max: u64,
}

impl std::fmt::Debug for LogHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHistogram")
            .field("unit_us", &self.unit_us)
            .field("count", &self.count)
            .field("min", &self.min)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl Default for LogHistogram {
    fn default() -> Self {
        Self {
            unit_us: 1,
            counts: vec![0; BUCKETS].into_boxed_slice(),
            count: 0,
            min: u64::MAX,
            max: 0,
        }
    }
}

impl LogHistogram {
    /// A histogram of whole milliseconds.
    pub(super) fn millis() -> Self {
        Self {
            unit_us: 1000,
            ..Self::default()
        }
    }

    /// A value in units as milliseconds.
    fn ms(&self, value: u64) -> f64 {
        (value * self.unit_us) as f64 / 1000.0
    }

    fn index(value: u64) -> usize {
        if value < SUB_BUCKETS as u64 {
            return value as usize;
        }
        let exponent = (63 - value.leading_zeros()).min(MAX_EXPONENT);
        let shift = exponent - SUB_BITS;
        let mantissa = ((value >> shift) as usize).min(2 * SUB_BUCKETS - 1);
        (shift as usize + 1) * SUB_BUCKETS + (mantissa - SUB_BUCKETS)
    }

    /// The smallest value of bucket `index` and the bucket's width.
    fn bucket(index: usize) -> (u64, u64) {
        if index < SUB_BUCKETS {
            return (index as u64, 1);
        }
        let shift = (index / SUB_BUCKETS - 1) as u32;
        let mantissa = (index % SUB_BUCKETS + SUB_BUCKETS) as u64;
        (mantissa << shift, 1 << shift)
    }

    pub(super) fn record(&mut self, value: u64) {
        self.counts[Self::index(value)] += 1;
        self.count += 1;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    /// The value at quantile `q` (0..=1): the midpoint of its bucket, kept within the
    /// smallest and largest values seen; `None` when empty.
    fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let (low, width) = Self::bucket(index);
                return Some((low + width / 2).clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }

    /// `{count, p50, p90, p99, max}` in milliseconds.
    pub(super) fn to_json(&self) -> Value {
        let ms = |value: Option<u64>| value.map(|v| self.ms(v));
        json!({
            "count": self.count,
            "p50": ms(self.quantile(0.50)),
            "p90": ms(self.quantile(0.90)),
            "p99": ms(self.quantile(0.99)),
            "max": ms((self.count > 0).then_some(self.max)),
        })
    }

    /// `p50 p90 p99 max` cells in milliseconds.
    pub(super) fn cells(&self) -> Vec<String> {
        let cell = |value: Option<u64>| {
            value.map_or_else(|| "-".to_owned(), |v| format!("{:.3}", self.ms(v)))
        };
        vec![
            cell(self.quantile(0.50)),
            cell(self.quantile(0.90)),
            cell(self.quantile(0.99)),
            cell((self.count > 0).then_some(self.max)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_is_exact_for_small_values_and_within_one_percent_above() {
        let mut small = LogHistogram::default();
        for v in 0..100 {
            small.record(v);
        }
        assert_eq!(small.quantile(0.5), Some(49));
        assert_eq!(small.quantile(1.0), Some(99));
        assert_eq!(small.quantile(0.0), Some(0));

        let mut values: Vec<u64> = (0..20_000u64)
            .map(|i| (i * 7919 % 20_000) * 137 + 500)
            .collect();
        let mut histogram = LogHistogram::default();
        for v in &values {
            histogram.record(*v);
        }
        values.sort_unstable();
        for q in [0.5, 0.9, 0.99] {
            let exact = values[(q * values.len() as f64).ceil() as usize - 1] as f64;
            let got = histogram.quantile(q).unwrap() as f64;
            assert!(
                (got - exact).abs() / exact < 0.01,
                "q {q}: {got} vs {exact}"
            );
        }
        assert_eq!(histogram.quantile(1.0), Some(*values.last().unwrap()));
        assert_eq!(histogram.count, 20_000);
    }

    #[test]
    fn histogram_buckets_tile_the_range() {
        let mut expected_low = 0;
        for index in 0..BUCKETS {
            let (low, width) = LogHistogram::bucket(index);
            assert_eq!(low, expected_low, "bucket {index}");
            assert_eq!(LogHistogram::index(low), index);
            assert_eq!(LogHistogram::index(low + width - 1), index);
            expected_low = low + width;
        }
        assert_eq!(LogHistogram::index(u64::MAX), BUCKETS - 1);
    }
}
