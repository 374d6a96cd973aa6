//! The rules on a task's next step after an attempt, in one place: the scheduler decides
//! with them after an attempt ran, every backend after a lease ran out, and every backend
//! checks completions with them. Backends keep only the SQL that applies the decision.

use fabric_types::{Attempt, Outcome, RetryPolicy, TaskState};
use time::OffsetDateTime;

use crate::{Completion, Next, StoreError};

/// The states of a task that may still run: a module such a task names cannot be deleted.
pub const UNFINISHED: [TaskState; 4] = [
    TaskState::Waiting,
    TaskState::Scheduled,
    TaskState::Queued,
    TaskState::Running,
];

/// [`UNFINISHED`] as the SQL condition both backends filter `tasks.state` with.
pub const UNFINISHED_SQL: &str = "state IN ('waiting', 'scheduled', 'queued', 'running')";

/// The task's next step after attempt number `attempt_number` (1 for the first) ended with
/// `outcome`: success and cancellation are final; an outcome the policy retries gets another
/// attempt after a backoff while attempts remain; anything else fails the task. `jitter`
/// draws the delay from `0..=bound` milliseconds (full jitter); a larger draw is capped.
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
            let bound = policy.backoff_bound_ms(attempt_number.saturating_add(1));
            let delay = i64::try_from(jitter(bound).min(bound)).unwrap_or(i64::MAX);
            Next::Retry {
                run_at: now.saturating_add(time::Duration::milliseconds(delay)),
            }
        }
        _ => Next::Finish(TaskState::Failed),
    }
}

/// The next step of a task whose attempt number `attempt_number` lost its lease: the attempt
/// counts against `max_attempts` and is retried only if the policy retries `lost`; a task
/// whose cancellation was requested ends `cancelled` instead.
pub fn next_after_lost(
    attempt_number: u32,
    cancel_requested: bool,
    policy: &RetryPolicy,
    now: OffsetDateTime,
    jitter: impl FnOnce(u64) -> u64,
) -> Next {
    if cancel_requested {
        return Next::Finish(TaskState::Cancelled);
    }
    next_after(Outcome::Lost, attempt_number, policy, now, jitter)
}

/// What is recorded for an attempt whose lease ended at `lease_until` (or, when unknown,
/// `now`) because `node` stopped renewing it.
pub fn lost_attempt(
    node: &str,
    lease_until: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Attempt {
    let mut lost = Attempt::new(Outcome::Lost);
    lost.error = Some(format!(
        "node {node:?} stopped renewing its lease, which ended at {}",
        fabric_types::format_timestamp(lease_until.unwrap_or(now))
    ));
    lost.finished_at = Some(now);
    lost
}

/// A completion's next step once the task's cancellation was requested: a task that would
/// run again ends `cancelled`; a final step is kept.
pub fn honour_cancel(next: Next, cancel_requested: bool) -> Next {
    match next {
        Next::Retry { .. } | Next::Requeue if cancel_requested => {
            Next::Finish(TaskState::Cancelled)
        }
        next => next,
    }
}

/// Where a task waiting for another attempt at `run_at` stands: `queued` when `run_at` is
/// not after `now`, otherwise `scheduled`.
pub fn waiting_state(run_at: OffsetDateTime, now: OffsetDateTime) -> TaskState {
    if run_at <= now {
        TaskState::Queued
    } else {
        TaskState::Scheduled
    }
}

/// Checks a batch of completions before any is applied: a final step must be `succeeded`,
/// `failed` or `cancelled`.
pub fn check_completions(completions: &[Completion]) -> Result<(), StoreError> {
    for (i, c) in completions.iter().enumerate() {
        if let Next::Finish(state) = c.next
            && !matches!(
                state,
                TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled
            )
        {
            return Err(StoreError::InvalidArgument(format!(
                "completions[{i}].next: Finish({state}) must be succeeded, failed or cancelled"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AttemptId;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            backoff_ms: 100,
            max_backoff_ms: 150,
            ..RetryPolicy::default()
        }
    }

    const NOW: OffsetDateTime = OffsetDateTime::UNIX_EPOCH;

    fn at(ms: i64) -> Next {
        Next::Retry {
            run_at: NOW + time::Duration::milliseconds(ms),
        }
    }

    #[test]
    fn success_and_cancel_are_final() {
        assert_eq!(
            next_after(Outcome::Ok, 1, &policy(), NOW, |b| b),
            Next::Finish(TaskState::Succeeded)
        );
        assert_eq!(
            next_after(Outcome::Cancelled, 1, &policy(), NOW, |b| b),
            Next::Finish(TaskState::Cancelled)
        );
    }

    #[test]
    fn retried_outcomes_back_off_exponentially_up_to_the_cap() {
        assert_eq!(next_after(Outcome::Trap, 1, &policy(), NOW, |b| b), at(100));
        assert_eq!(
            next_after(Outcome::Timeout, 2, &policy(), NOW, |b| b),
            at(150),
            "200 capped at 150"
        );
        assert_eq!(
            next_after(Outcome::Exit, 1, &policy(), NOW, |_| 7),
            at(7),
            "jitter picks within the bound"
        );
        assert_eq!(
            next_after(Outcome::Exit, 1, &policy(), NOW, |_| 10_000),
            at(100),
            "never above the bound"
        );
    }

    #[test]
    fn the_last_attempt_fails_the_task() {
        assert_eq!(
            next_after(Outcome::Trap, 3, &policy(), NOW, |b| b),
            Next::Finish(TaskState::Failed)
        );
    }

    #[test]
    fn deterministic_failures_are_not_retried() {
        for outcome in [Outcome::OutOfFuel, Outcome::MemoryLimit, Outcome::Invalid] {
            assert_eq!(
                next_after(outcome, 1, &policy(), NOW, |b| b),
                Next::Finish(TaskState::Failed),
                "{outcome}"
            );
        }
    }

    #[test]
    fn a_lost_lease_counts_as_an_attempt_and_honours_a_cancel() {
        assert_eq!(next_after_lost(1, false, &policy(), NOW, |b| b), at(100));
        assert_eq!(
            next_after_lost(3, false, &policy(), NOW, |b| b),
            Next::Finish(TaskState::Failed),
            "the lost attempt was the last"
        );
        assert_eq!(
            next_after_lost(1, true, &policy(), NOW, |b| b),
            Next::Finish(TaskState::Cancelled)
        );
        let not_lost = RetryPolicy {
            retry_on: vec![Outcome::Trap],
            ..policy()
        };
        assert_eq!(
            next_after_lost(1, false, &not_lost, NOW, |b| b),
            Next::Finish(TaskState::Failed),
            "a policy that does not retry `lost`"
        );
    }

    #[test]
    fn the_lost_attempt_names_the_node_and_the_lease_end() {
        let lost = lost_attempt("n1", Some(NOW), NOW + time::Duration::seconds(1));
        assert_eq!(lost.outcome, Outcome::Lost);
        assert_eq!(
            lost.error.as_deref(),
            Some("node \"n1\" stopped renewing its lease, which ended at 1970-01-01T00:00:00.000Z")
        );
        assert_eq!(lost.finished_at, Some(NOW + time::Duration::seconds(1)));
    }

    #[test]
    fn a_cancel_request_ends_what_would_run_again() {
        assert_eq!(
            honour_cancel(at(5), true),
            Next::Finish(TaskState::Cancelled)
        );
        assert_eq!(
            honour_cancel(Next::Requeue, true),
            Next::Finish(TaskState::Cancelled)
        );
        assert_eq!(
            honour_cancel(Next::Finish(TaskState::Succeeded), true),
            Next::Finish(TaskState::Succeeded)
        );
        assert_eq!(honour_cancel(at(5), false), at(5));
    }

    #[test]
    fn a_retry_due_now_is_queued() {
        assert_eq!(waiting_state(NOW, NOW), TaskState::Queued);
        assert_eq!(
            waiting_state(NOW + time::Duration::milliseconds(1), NOW),
            TaskState::Scheduled
        );
    }

    #[test]
    fn completions_must_finish_in_a_final_state() {
        let completion = |next| Completion {
            attempt_id: AttemptId::from("a".to_string()),
            attempt: Attempt::new(Outcome::Ok),
            next,
            children: Vec::new(),
        };
        assert!(check_completions(&[completion(Next::Finish(TaskState::Failed))]).is_ok());
        let err = check_completions(&[
            completion(Next::Requeue),
            completion(Next::Finish(TaskState::Running)),
        ])
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("completions[1].next: Finish(running)"),
            "{err}"
        );
    }
}

#[cfg(test)]
mod unfinished_tests {
    use super::*;

    #[test]
    fn unfinished_states_are_the_non_terminal_ones_and_the_sql_names_them() {
        for state in TaskState::ALL {
            assert_eq!(
                UNFINISHED.contains(&state),
                !state.is_terminal(),
                "{state:?}"
            );
            let quoted = format!("'{}'", state.as_str());
            assert_eq!(
                UNFINISHED_SQL.contains(&quoted),
                !state.is_terminal(),
                "{state:?}"
            );
        }
    }
}
