//! What happens to a task after an attempt: succeed, fail, or retry after a backoff with
//! full jitter, as its retry policy says.

use fabric_store::Next;
use fabric_types::{Outcome, RetryPolicy, TaskState};
use time::OffsetDateTime;

/// The task's next step after attempt number `attempt_number` (1 for the first) ended with
/// `outcome`. `jitter` draws the delay from `0..=bound` milliseconds (full jitter).
pub fn next_after(
    outcome: Outcome,
    attempt_number: u32,
    policy: &RetryPolicy,
    now: OffsetDateTime,
    jitter: impl FnOnce(u64) -> u64,
) -> Next {
    match outcome {
        Outcome::Ok => Next::Finish(TaskState::Succeeded),
        Outcome::Cancelled => Next::Finish(TaskState::Cancelled),
        outcome if policy.retries(outcome) && attempt_number < policy.max_attempts => {
            let bound = policy.backoff_bound_ms(attempt_number + 1);
            let delay = jitter(bound).min(bound);
            Next::Retry {
                run_at: now + time::Duration::milliseconds(delay as i64),
            }
        }
        _ => Next::Finish(TaskState::Failed),
    }
}

/// Full jitter: uniformly from `0..=bound`.
pub(crate) fn full_jitter(bound: u64) -> u64 {
    rand::random_range(0..=bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            backoff_ms: 100,
            max_backoff_ms: 150,
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn success_and_cancel_are_final() {
        let now = OffsetDateTime::UNIX_EPOCH;
        assert_eq!(
            next_after(Outcome::Ok, 1, &policy(), now, |b| b),
            Next::Finish(TaskState::Succeeded)
        );
        assert_eq!(
            next_after(Outcome::Cancelled, 1, &policy(), now, |b| b),
            Next::Finish(TaskState::Cancelled)
        );
    }

    #[test]
    fn retried_outcomes_back_off_exponentially_up_to_the_cap() {
        let now = OffsetDateTime::UNIX_EPOCH;
        let at = |ms: i64| Next::Retry {
            run_at: now + time::Duration::milliseconds(ms),
        };
        assert_eq!(next_after(Outcome::Trap, 1, &policy(), now, |b| b), at(100));
        assert_eq!(
            next_after(Outcome::Timeout, 2, &policy(), now, |b| b),
            at(150),
            "200 capped at 150"
        );
        assert_eq!(
            next_after(Outcome::Exit, 1, &policy(), now, |_| 7),
            at(7),
            "jitter picks within the bound"
        );
        assert_eq!(
            next_after(Outcome::Exit, 1, &policy(), now, |_| 10_000),
            at(100),
            "never above the bound"
        );
    }

    #[test]
    fn the_last_attempt_fails_the_task() {
        let now = OffsetDateTime::UNIX_EPOCH;
        assert_eq!(
            next_after(Outcome::Trap, 3, &policy(), now, |b| b),
            Next::Finish(TaskState::Failed)
        );
    }

    #[test]
    fn deterministic_failures_are_not_retried() {
        let now = OffsetDateTime::UNIX_EPOCH;
        for outcome in [Outcome::OutOfFuel, Outcome::MemoryLimit, Outcome::Invalid] {
            assert_eq!(
                next_after(outcome, 1, &policy(), now, |b| b),
                Next::Finish(TaskState::Failed),
                "{outcome}"
            );
        }
    }

    #[test]
    fn full_jitter_stays_within_its_bound() {
        for _ in 0..1000 {
            assert!(full_jitter(10) <= 10);
        }
        assert_eq!(full_jitter(0), 0);
    }
}
