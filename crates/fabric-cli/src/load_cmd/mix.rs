//! The tasks of `fabric load --mix`: kinds in a fixed rotation, each with the spec that
//! makes it and the end it must reach, and the count of which did.

use fabric_types::wire::{LimitsSpec, RetrySpec, Task, TaskSpec};
use fabric_types::{Outcome, Priority, TaskState};
use serde_json::{Value, json};
use time::OffsetDateTime;

/// Bytes of the big-output kind's input, which the echo agent sends back.
pub(super) const BIG_OUTPUT_BYTES: usize = 64 << 10;
/// How far ahead the scheduled kind's `run_at` is.
const SCHEDULED_AHEAD: time::Duration = time::Duration::seconds(2);
/// The expired kind's deadline, from its submission; its `run_at` is an hour later, so
/// only expiry can end it.
const EXPIRED_DEADLINE: time::Duration = time::Duration::seconds(1);
/// The timeout kind's `limits.timeout_ms`, for a sleep of [`TIMEOUT_SLEEP_MS`].
const TIMEOUT_MS: u64 = 100;
const TIMEOUT_SLEEP_MS: u64 = 10_000;
/// The cancel kind sleeps this long, bounded by [`CANCEL_TIMEOUT_MS`]: a cancel that never
/// lands shows as a mismatch (`failed`, `timeout`), not a stuck run.
const CANCEL_SLEEP_MS: u64 = 60_000;
const CANCEL_TIMEOUT_MS: u64 = 20_000;
/// Attempts of the retry kind, `RETRY_BACKOFF_MS` apart (then twice that).
const RETRY_ATTEMPTS: u32 = 3;
const RETRY_BACKOFF_MS: u64 = 10;
/// Mismatches kept as examples for the report.
const MAX_EXAMPLES: usize = 10;

/// One kind of task in the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `echo`: succeeded, `ok`.
    Success,
    /// `strict` on input that is not `{"name": ...}`, one attempt: failed, `exit`.
    Exit,
    /// `probe` told to `panic` (an `unreachable` trap), one attempt: failed, `trap`.
    Trap,
    /// `sleep` longer than its timeout, one attempt: failed, `timeout`.
    Timeout,
    /// `strict` on bad input with three attempts and a short backoff: failed after three
    /// `exit`s.
    Retry,
    /// A long `sleep` that `fabric load` cancels with `task.cancel`: cancelled.
    Cancel,
    /// `echo` with `run_at` two seconds ahead: succeeded.
    Scheduled,
    /// `echo` whose deadline passes an hour before its `run_at`: expired, never run.
    Expired,
    /// `echo` of 64 KiB: succeeded, with all of it as its output.
    BigOutput,
}

impl Kind {
    /// The rotation: the task submitted `n`-th is `ROTATION[n % ROTATION.len()]`.
    pub(super) const ROTATION: [Kind; 9] = [
        Kind::Success,
        Kind::Exit,
        Kind::Trap,
        Kind::Timeout,
        Kind::Retry,
        Kind::Cancel,
        Kind::Scheduled,
        Kind::Expired,
        Kind::BigOutput,
    ];

    /// The kind of the task submitted `index`-th.
    pub(super) fn at(index: u64) -> Kind {
        Self::ROTATION[(index % Self::ROTATION.len() as u64) as usize]
    }

    fn position(self) -> usize {
        Self::ROTATION
            .iter()
            .position(|k| *k == self)
            .expect("every kind is in the rotation")
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Success => "success",
            Kind::Exit => "exit",
            Kind::Trap => "trap",
            Kind::Timeout => "timeout",
            Kind::Retry => "retry",
            Kind::Cancel => "cancel",
            Kind::Scheduled => "scheduled",
            Kind::Expired => "expired",
            Kind::BigOutput => "big_output",
        }
    }

    /// The spec of a task of this kind submitted at `now`.
    pub(super) fn spec(self, now: OffsetDateTime, priority: Option<Priority>) -> TaskSpec {
        let once = Some(RetrySpec {
            max_attempts: Some(1),
            ..RetrySpec::default()
        });
        let (module, input) = match self {
            Kind::Success | Kind::Scheduled | Kind::Expired => ("echo", "hello".to_owned()),
            Kind::Exit | Kind::Retry => ("strict", "not a JSON object".to_owned()),
            Kind::Trap => ("probe", "panic\n".to_owned()),
            Kind::Timeout => ("sleep", TIMEOUT_SLEEP_MS.to_string()),
            Kind::Cancel => ("sleep", CANCEL_SLEEP_MS.to_string()),
            Kind::BigOutput => ("echo", "x".repeat(BIG_OUTPUT_BYTES)),
        };
        let mut spec = TaskSpec {
            module: module.to_owned(),
            input: Some(input),
            priority,
            ..TaskSpec::default()
        };
        match self {
            Kind::Success | Kind::BigOutput => {}
            Kind::Exit | Kind::Trap => spec.retry = once,
            Kind::Timeout | Kind::Cancel => {
                spec.retry = once;
                spec.limits = Some(LimitsSpec {
                    timeout_ms: Some(if self == Kind::Timeout {
                        TIMEOUT_MS
                    } else {
                        CANCEL_TIMEOUT_MS
                    }),
                    ..LimitsSpec::default()
                });
            }
            Kind::Retry => {
                spec.retry = Some(RetrySpec {
                    max_attempts: Some(RETRY_ATTEMPTS),
                    backoff_ms: Some(RETRY_BACKOFF_MS),
                    max_backoff_ms: Some(RETRY_BACKOFF_MS * 4),
                });
            }
            Kind::Scheduled => spec.run_at = Some(now + SCHEDULED_AHEAD),
            Kind::Expired => {
                spec.deadline = Some(now + EXPIRED_DEADLINE);
                spec.run_at = Some(now + time::Duration::hours(1));
            }
        }
        spec
    }

    /// Whether `end` is the end this kind must reach; if not, what it should have been.
    pub(super) fn check(self, end: &End) -> Result<(), &'static str> {
        let one = |state: TaskState, outcome: Outcome| {
            end.state == state && end.attempts == 1 && end.last_outcome == Some(outcome)
        };
        let (expected, met) = match self {
            Kind::Success | Kind::Scheduled => (
                "succeeded, one attempt ok",
                one(TaskState::Succeeded, Outcome::Ok),
            ),
            Kind::Exit => (
                "failed, one attempt exit",
                one(TaskState::Failed, Outcome::Exit),
            ),
            Kind::Trap => (
                "failed, one attempt trap",
                one(TaskState::Failed, Outcome::Trap),
            ),
            Kind::Timeout => (
                "failed, one attempt timeout",
                one(TaskState::Failed, Outcome::Timeout),
            ),
            Kind::Retry => (
                "failed, three attempts, the last exit",
                end.state == TaskState::Failed
                    && end.attempts == RETRY_ATTEMPTS
                    && end.last_outcome == Some(Outcome::Exit),
            ),
            Kind::Cancel => (
                "cancelled, at most one attempt, cancelled",
                end.state == TaskState::Cancelled
                    && match end.attempts {
                        0 => true,
                        1 => end.last_outcome == Some(Outcome::Cancelled),
                        _ => false,
                    },
            ),
            Kind::Expired => (
                "expired, no attempt",
                end.state == TaskState::Expired && end.attempts == 0,
            ),
            Kind::BigOutput => (
                "succeeded, one attempt ok, 65536 bytes of output",
                one(TaskState::Succeeded, Outcome::Ok)
                    && end.output_bytes == Some(BIG_OUTPUT_BYTES),
            ),
        };
        if met { Ok(()) } else { Err(expected) }
    }
}

/// Tasks that run each module of the mix but `echo` once, so that the measurement does
/// not include their first compilation.
pub(super) fn warm_up_specs() -> Vec<TaskSpec> {
    [
        ("strict", r#"{"name": "warm-up"}"#),
        ("probe", ""),
        ("sleep", "0"),
    ]
    .into_iter()
    .map(|(module, input)| TaskSpec {
        module: module.to_owned(),
        input: Some(input.to_owned()),
        ..TaskSpec::default()
    })
    .collect()
}

/// How a task ended, as far as the mix checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct End {
    pub(super) state: TaskState,
    /// Attempts it made.
    pub(super) attempts: u32,
    pub(super) last_outcome: Option<Outcome>,
    /// Bytes of its output (its last attempt's stdout), when known.
    pub(super) output_bytes: Option<usize>,
}

impl End {
    /// The end of a task read back with `task.get`.
    pub(super) fn of_task(task: &Task) -> Self {
        let output_bytes = match (&task.output, &task.output_base64) {
            (Some(text), _) => Some(text.len()),
            (None, Some(base64)) => {
                let padding = base64.bytes().rev().take_while(|b| *b == b'=').count();
                Some(base64.len() / 4 * 3 - padding)
            }
            (None, None) => Some(0),
        };
        Self {
            state: task.state,
            attempts: u32::try_from(task.attempts.len()).unwrap_or(u32::MAX),
            last_outcome: task.attempts.last().map(|a| a.outcome),
            output_bytes,
        }
    }

    fn describe(&self) -> String {
        let mut text = format!("{}, {} attempt(s)", self.state, self.attempts);
        if let Some(outcome) = self.last_outcome {
            text.push_str(&format!(", the last {outcome}"));
        }
        if let Some(bytes) = self.output_bytes {
            text.push_str(&format!(", {bytes} bytes of output"));
        }
        text
    }
}

/// Per kind: tasks submitted, ended as expected, ended otherwise, and lost (pruned before
/// their end was seen, or unfinished when the run gave up waiting).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct KindCount {
    pub(super) submitted: u64,
    pub(super) expected: u64,
    pub(super) mismatched: u64,
    pub(super) lost: u64,
}

/// A task that did not end as its kind must.
#[derive(Debug, Clone)]
pub(super) struct Mismatch {
    id: String,
    kind: Kind,
    expected: &'static str,
    got: String,
}

/// The mix's counts, of fixed size but for a few examples.
#[derive(Debug, Default)]
pub(super) struct MixTally {
    pub(super) kinds: [KindCount; Kind::ROTATION.len()],
    examples: Vec<Mismatch>,
}

impl MixTally {
    pub(super) fn submitted(&mut self, kind: Kind) {
        self.kinds[kind.position()].submitted += 1;
    }

    pub(super) fn lost(&mut self, kind: Kind) {
        self.kinds[kind.position()].lost += 1;
    }

    /// Counts `end` for a task of `kind` as expected or not.
    pub(super) fn ended(&mut self, id: &str, kind: Kind, end: &End) {
        let count = &mut self.kinds[kind.position()];
        match kind.check(end) {
            Ok(()) => count.expected += 1,
            Err(expected) => {
                count.mismatched += 1;
                if self.examples.len() < MAX_EXAMPLES {
                    self.examples.push(Mismatch {
                        id: id.to_owned(),
                        kind,
                        expected,
                        got: end.describe(),
                    });
                }
            }
        }
    }

    pub(super) fn mismatched(&self) -> u64 {
        self.kinds.iter().map(|k| k.mismatched).sum()
    }

    pub(super) fn lost_total(&self) -> u64 {
        self.kinds.iter().map(|k| k.lost).sum()
    }

    pub(super) fn to_json(&self) -> Value {
        let kinds: serde_json::Map<String, Value> = Kind::ROTATION
            .iter()
            .zip(&self.kinds)
            .map(|(kind, c)| {
                let value = json!({
                    "submitted": c.submitted,
                    "expected": c.expected,
                    "mismatched": c.mismatched,
                    "lost": c.lost,
                });
                (kind.name().to_owned(), value)
            })
            .collect();
        let examples: Vec<Value> = self
            .examples
            .iter()
            .map(|m| json!({"id": m.id, "kind": m.kind.name(), "expected": m.expected, "got": m.got}))
            .collect();
        json!({
            "kinds": kinds,
            "mismatched": self.mismatched(),
            "lost": self.lost_total(),
            "mismatch_examples": examples,
        })
    }

    /// Rows `KIND SUBMITTED EXPECTED MISMATCHED LOST` for the table.
    pub(super) fn rows(&self) -> Vec<Vec<String>> {
        Kind::ROTATION
            .iter()
            .zip(&self.kinds)
            .map(|(kind, c)| {
                vec![
                    kind.name().to_owned(),
                    c.submitted.to_string(),
                    c.expected.to_string(),
                    c.mismatched.to_string(),
                    c.lost.to_string(),
                ]
            })
            .collect()
    }

    /// One line per example mismatch.
    pub(super) fn example_lines(&self) -> Vec<String> {
        self.examples
            .iter()
            .map(|m| {
                format!(
                    "{} {}: expected {}, got {}",
                    m.kind.name(),
                    m.id,
                    m.expected,
                    m.got
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(state: TaskState, attempts: u32, last: Option<Outcome>, bytes: Option<usize>) -> End {
        End {
            state,
            attempts,
            last_outcome: last,
            output_bytes: bytes,
        }
    }

    #[test]
    fn the_rotation_is_fixed_and_covers_every_kind() {
        let first: Vec<Kind> = (0..9).map(Kind::at).collect();
        assert_eq!(first, Kind::ROTATION);
        assert_eq!(Kind::at(9), Kind::Success);
        assert_eq!(Kind::at(9 * 1000 + 8), Kind::BigOutput);
    }

    #[test]
    fn each_kind_accepts_its_end_and_refuses_the_others() {
        use Outcome::{Exit, Ok, Timeout, Trap};
        use TaskState::{Failed, Succeeded};
        let ends = [
            (Kind::Success, end(Succeeded, 1, Some(Ok), Some(6))),
            (Kind::Exit, end(Failed, 1, Some(Exit), Some(0))),
            (Kind::Trap, end(Failed, 1, Some(Trap), Some(0))),
            (Kind::Timeout, end(Failed, 1, Some(Timeout), Some(0))),
            (Kind::Retry, end(Failed, 3, Some(Exit), Some(0))),
            (
                Kind::Cancel,
                end(TaskState::Cancelled, 1, Some(Outcome::Cancelled), None),
            ),
            (Kind::Scheduled, end(Succeeded, 1, Some(Ok), Some(6))),
            (Kind::Expired, end(TaskState::Expired, 0, None, None)),
            (
                Kind::BigOutput,
                end(Succeeded, 1, Some(Ok), Some(BIG_OUTPUT_BYTES)),
            ),
        ];
        for (kind, good) in &ends {
            assert_eq!(kind.check(good), Result::Ok(()), "{kind:?}");
            for (other, end) in &ends {
                // Success and Scheduled expect the same end, which a big output's meets.
                let same = matches!(kind, Kind::Success | Kind::Scheduled)
                    && matches!(other, Kind::Success | Kind::Scheduled | Kind::BigOutput);
                if other != kind && !same {
                    assert!(kind.check(end).is_err(), "{kind:?} accepted {end:?}");
                }
            }
        }
        // A cancel before the attempt started has none; a retry that stopped early, and a
        // big output cut short, are mismatches.
        assert!(
            Kind::Cancel
                .check(&end(TaskState::Cancelled, 0, None, None))
                .is_ok()
        );
        assert!(
            Kind::Retry
                .check(&end(Failed, 2, Some(Exit), None))
                .is_err()
        );
        assert!(
            Kind::BigOutput
                .check(&end(Succeeded, 1, Some(Ok), Some(1000)))
                .is_err()
        );
    }

    #[test]
    fn specs_say_what_makes_each_kind() {
        let now = OffsetDateTime::now_utc();
        let expired = Kind::Expired.spec(now, None);
        assert!(expired.deadline.unwrap() < expired.run_at.unwrap());
        let scheduled = Kind::Scheduled.spec(now, None);
        assert_eq!(scheduled.run_at, Some(now + SCHEDULED_AHEAD));
        let big = Kind::BigOutput.spec(now, Some(Priority::Low));
        assert_eq!(big.input.unwrap().len(), BIG_OUTPUT_BYTES);
        assert_eq!(big.priority, Some(Priority::Low));
        let retry = Kind::Retry.spec(now, None).retry.unwrap();
        assert_eq!(retry.max_attempts, Some(RETRY_ATTEMPTS));
        for kind in [Kind::Exit, Kind::Trap, Kind::Timeout, Kind::Cancel] {
            assert_eq!(kind.spec(now, None).retry.unwrap().max_attempts, Some(1));
        }
    }

    #[test]
    fn mismatches_are_counted_with_a_few_examples() {
        let mut tally = MixTally::default();
        for i in 0..20 {
            tally.submitted(Kind::Trap);
            let got = end(TaskState::Failed, 1, Some(Outcome::Exit), None);
            tally.ended(&format!("t{i}"), Kind::Trap, &got);
        }
        tally.ended(
            "ok",
            Kind::Trap,
            &end(TaskState::Failed, 1, Some(Outcome::Trap), None),
        );
        assert_eq!(tally.mismatched(), 20);
        assert_eq!(tally.kinds[Kind::Trap.position()].expected, 1);
        assert_eq!(tally.examples.len(), MAX_EXAMPLES);
        let json = tally.to_json();
        assert_eq!(json["kinds"]["trap"]["mismatched"], 20);
        assert_eq!(
            json["mismatch_examples"][0]["got"],
            "failed, 1 attempt(s), the last exit"
        );
    }
}
