//! Per-task resource limits and retry policy, each with a documented default.

use serde::{Deserialize, Serialize};

use crate::Outcome;

/// What one attempt may use. Every field has a default (the associated constants), so a
/// `TaskSpec` may name only the limits it cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Wasm fuel (about one unit per instruction executed).
    pub fuel: u64,
    /// Linear memory of the whole instance, all memories together, in bytes.
    pub memory_bytes: u64,
    /// Wall-clock time for the whole attempt, instantiation included.
    pub timeout_ms: u64,
    /// Bytes of stdout kept as the output; the rest is discarded and the attempt says so.
    pub output_bytes: u64,
    /// Bytes of stderr kept as the log.
    pub log_bytes: u64,
}

impl Limits {
    /// 10 billion units: several seconds of busy compute on this class of machine.
    pub const DEFAULT_FUEL: u64 = 10_000_000_000;
    /// 64 MiB.
    pub const DEFAULT_MEMORY_BYTES: u64 = 64 << 20;
    /// 30 seconds.
    pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
    /// 1 MiB.
    pub const DEFAULT_OUTPUT_BYTES: u64 = 1 << 20;
    /// 64 KiB.
    pub const DEFAULT_LOG_BYTES: u64 = 64 << 10;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: Self::DEFAULT_FUEL,
            memory_bytes: Self::DEFAULT_MEMORY_BYTES,
            timeout_ms: Self::DEFAULT_TIMEOUT_MS,
            output_bytes: Self::DEFAULT_OUTPUT_BYTES,
            log_bytes: Self::DEFAULT_LOG_BYTES,
        }
    }
}

/// How often and how patiently a failed task is retried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included. 1 means never retry.
    pub max_attempts: u32,
    /// The backoff before the second attempt; it doubles for each later one.
    pub backoff_ms: u64,
    /// The most any one backoff may be.
    pub max_backoff_ms: u64,
    /// Outcomes that earn another attempt (while attempts remain).
    pub retry_on: Vec<Outcome>,
}

impl RetryPolicy {
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
    pub const DEFAULT_BACKOFF_MS: u64 = 1_000;
    pub const DEFAULT_MAX_BACKOFF_MS: u64 = 60_000;
    /// Retried by default: `exit`, `trap`, `timeout`, `lost`.
    pub const DEFAULT_RETRY_ON: [Outcome; 4] = [
        Outcome::Exit,
        Outcome::Trap,
        Outcome::Timeout,
        Outcome::Lost,
    ];

    /// Whether an attempt that ended with `outcome` may be followed by another.
    pub fn retries(&self, outcome: Outcome) -> bool {
        self.retry_on.contains(&outcome)
    }

    /// The upper bound of the backoff before attempt number `next_attempt` (2 for the
    /// first retry): `backoff_ms * 2^(next_attempt - 2)`, capped at `max_backoff_ms`. The
    /// scheduler draws the real delay uniformly from `0..=bound` (full jitter).
    pub fn backoff_bound_ms(&self, next_attempt: u32) -> u64 {
        let doublings = next_attempt.saturating_sub(2).min(63);
        self.backoff_ms
            .saturating_mul(1u64 << doublings)
            .min(self.max_backoff_ms)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            backoff_ms: Self::DEFAULT_BACKOFF_MS,
            max_backoff_ms: Self::DEFAULT_MAX_BACKOFF_MS,
            retry_on: Self::DEFAULT_RETRY_ON.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_limits_take_defaults_for_the_rest() {
        let limits: Limits = serde_json::from_str(r#"{"fuel": 5}"#).unwrap();
        assert_eq!(
            limits,
            Limits {
                fuel: 5,
                ..Limits::default()
            }
        );
        let err = serde_json::from_str::<Limits>(r#"{"fuell": 5}"#).unwrap_err();
        assert!(err.to_string().contains("fuell"), "{err}");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy {
            backoff_ms: 100,
            max_backoff_ms: 1_000,
            ..Default::default()
        };
        let bounds: Vec<_> = (2..=7).map(|n| policy.backoff_bound_ms(n)).collect();
        assert_eq!(bounds, [100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(policy.backoff_bound_ms(u32::MAX), 1_000);
    }

    #[test]
    fn default_policy_retries_what_design_says() {
        let policy = RetryPolicy::default();
        for o in [
            Outcome::Exit,
            Outcome::Trap,
            Outcome::Timeout,
            Outcome::Lost,
        ] {
            assert!(policy.retries(o), "{o:?}");
        }
        for o in [
            Outcome::Ok,
            Outcome::Invalid,
            Outcome::Cancelled,
            Outcome::OutOfFuel,
            Outcome::MemoryLimit,
        ] {
            assert!(!policy.retries(o), "{o:?}");
        }
    }
}
