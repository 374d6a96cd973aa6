//! Counts a run's tasks from their acknowledgements, events and read-backs, keeping only
//! the tasks in flight.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use fabric_client::TaskEventNotice;
use fabric_types::wire::Task;
use fabric_types::{Outcome, TaskState};
use time::OffsetDateTime;

use super::histogram::LogHistogram;
use super::mix::{End, Kind, MixTally};

/// Events of tasks this run has not (yet) submitted are kept this long for the
/// acknowledgement that names them, then dropped (they belong to another client).
const EARLY_EVENT_TTL: Duration = Duration::from_secs(60);

/// Whether `task`'s id carries its `created_at`: the fabric's ids start with 48 bits of
/// milliseconds since the epoch, the same instant as `created_at`.
pub(super) fn id_carries_created_at(task: &Task) -> bool {
    id_unix_ms(&task.id) == Some(unix_ms(task.created_at))
}

/// Crockford's base32 alphabet, in which the fabric writes its 128-bit ids.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// The milliseconds since the Unix epoch in the top 48 bits of a 26-character Crockford
/// base32 id; `None` for any other id.
fn id_unix_ms(id: &str) -> Option<i64> {
    if id.len() != 26 {
        return None;
    }
    let mut value: u128 = 0;
    for (index, byte) in id.bytes().enumerate() {
        let digit = CROCKFORD
            .iter()
            .position(|&c| c == byte.to_ascii_uppercase())?;
        // 26 digits hold 130 bits: the first may only use its low 3.
        if index == 0 && digit > 7 {
            return None;
        }
        value = (value << 5) | digit as u128;
    }
    i64::try_from(value >> 80).ok()
}

fn unix_ms(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Maps this process's monotonic clock onto wall-clock milliseconds (the fallback for a
/// task's `created_at` when its id does not carry it).
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    instant: Instant,
    unix_ms: i64,
}

impl Clock {
    pub(super) fn now() -> Self {
        Self {
            instant: Instant::now(),
            unix_ms: unix_ms(OffsetDateTime::now_utc()),
        }
    }

    fn unix_ms_at(&self, at: Instant) -> i64 {
        let since = at.saturating_duration_since(self.instant).as_millis();
        self.unix_ms + i64::try_from(since).unwrap_or(i64::MAX / 2)
    }
}

/// A task submitted and acknowledged, not yet finished.
#[derive(Debug)]
pub(super) struct Pending {
    sent: Instant,
    pub(super) acked: Instant,
    first_start_ms: Option<i64>,
    attempts_seen: u32,
    last_outcome: Option<Outcome>,
    /// Its kind, with `--mix`.
    kind: Option<Kind>,
    /// Its events ended it otherwise than its kind must: it waits to be read back with
    /// `task.get` (events may have been dropped) and further events are ignored.
    recheck: bool,
}

impl Pending {
    fn new(sent: Instant, acked: Instant, kind: Option<Kind>) -> Self {
        Self {
            sent,
            acked,
            first_start_ms: None,
            attempts_seen: 0,
            last_outcome: None,
            kind,
            recheck: false,
        }
    }

    /// Whether `end`, as events told it, must be read back before it is counted: with
    /// `--mix`, when it is not the end the task's kind must reach.
    fn doubts(&self, end: &End) -> bool {
        self.kind.is_some_and(|kind| kind.check(end).is_err())
    }
}

/// Events of a task whose acknowledgement has not come back yet (a task can finish before
/// the answer to the call that submitted it is read).
#[derive(Debug, Default)]
struct Early {
    received: Option<Instant>,
    first_start_ms: Option<i64>,
    outcomes: Vec<Outcome>,
    /// The terminal state, its attempt's `finished_at`, when it came, and its output's
    /// size.
    terminal: Option<(TaskState, Option<i64>, Instant, Option<usize>)>,
}

/// Everything counted so far; its size is bounded by the tasks in flight.
#[derive(Debug)]
pub(super) struct Tally {
    pub(super) created_from_id: bool,
    clock: Clock,
    pub(super) pending: HashMap<Box<str>, Pending>,
    early: HashMap<Box<str>, Early>,
    pub(super) submitted: u64,
    pub(super) finished: u64,
    /// Finished tasks read back with `task.get` because their event was skipped.
    pub(super) read_back: u64,
    /// Pending tasks that were gone (pruned) when read back.
    pub(super) lost: u64,
    /// Pending tasks given up on: not finished when the run stopped waiting.
    pub(super) unfinished: u64,
    /// With `--mix`: the tasks of each kind and whether they ended as they must.
    pub(super) mix: Option<MixTally>,
    /// With `--mix`: tasks of the cancel kind not yet cancelled, and when they were
    /// acknowledged, oldest first.
    pub(super) to_cancel: VecDeque<(Box<str>, Instant)>,
    /// Pending tasks to read back with `task.get` before they are counted (see
    /// [`Pending::doubts`]).
    pub(super) recheck: Vec<Box<str>>,
    pub(super) states: [u64; TaskState::ALL.len()],
    pub(super) outcomes: [u64; Outcome::ALL.len()],
    /// `created_at` to the first attempt's `started_at`, in whole milliseconds (the
    /// precision of the server's timestamps).
    pub(super) to_start: LogHistogram,
    /// `created_at` to the last attempt's `finished_at`, in whole milliseconds.
    pub(super) to_finish: LogHistogram,
    /// From sending the submit call to receiving the task's terminal event, in µs.
    pub(super) client_to_event: LogHistogram,
    /// How long each submit call took, in µs.
    pub(super) submit_call: LogHistogram,
    first_created_ms: Option<i64>,
    last_finished_ms: Option<i64>,
    pub(super) last_progress: Instant,
}

impl Tally {
    pub(super) fn new(created_from_id: bool, clock: Clock, mix: bool) -> Self {
        Self {
            created_from_id,
            clock,
            pending: HashMap::new(),
            early: HashMap::new(),
            submitted: 0,
            finished: 0,
            read_back: 0,
            lost: 0,
            unfinished: 0,
            mix: mix.then(MixTally::default),
            to_cancel: VecDeque::new(),
            recheck: Vec::new(),
            states: [0; TaskState::ALL.len()],
            outcomes: [0; Outcome::ALL.len()],
            to_start: LogHistogram::millis(),
            to_finish: LogHistogram::millis(),
            client_to_event: LogHistogram::default(),
            submit_call: LogHistogram::default(),
            first_created_ms: None,
            last_finished_ms: None,
            last_progress: clock.instant,
        }
    }

    fn count_outcome(&mut self, outcome: Outcome) {
        if let Some(index) = Outcome::ALL.iter().position(|o| *o == outcome) {
            self.outcomes[index] += 1;
        }
    }

    /// One submit call's tasks, counted only.
    pub(super) fn count_submitted(&mut self, count: usize, took: Duration, now: Instant) {
        self.submit_call.record(micros(took));
        self.submitted += count as u64;
        self.last_progress = now;
    }

    /// One submit call's tasks (with `--mix`, the first of them the `first`-th of the
    /// rotation); returns how many of them had already finished.
    pub(super) fn acked(
        &mut self,
        ids: Vec<String>,
        first: Option<u64>,
        sent: Instant,
        took: Duration,
        now: Instant,
    ) -> usize {
        self.count_submitted(ids.len(), took, now);
        let mut done = 0;
        for (index, id) in (0..).zip(ids) {
            let id = id.into_boxed_str();
            let kind = first.map(|first| Kind::at(first + index));
            if let (Some(mix), Some(kind)) = (&mut self.mix, kind) {
                mix.submitted(kind);
            }
            let mut pending = Pending::new(sent, now, kind);
            if let Some(early) = self.early.remove(&id) {
                pending.first_start_ms = early.first_start_ms;
                pending.attempts_seen = early.outcomes.len() as u32;
                pending.last_outcome = early.outcomes.last().copied();
                for outcome in early.outcomes {
                    self.count_outcome(outcome);
                }
                if let Some((state, finished_ms, received, output_bytes)) = early.terminal {
                    let end = End {
                        state,
                        attempts: pending.attempts_seen,
                        last_outcome: pending.last_outcome,
                        output_bytes,
                    };
                    if pending.doubts(&end) {
                        pending.recheck = true;
                        self.recheck.push(id.clone());
                    } else {
                        self.finish(&id, &pending, &end, finished_ms, Some(received), None);
                        done += 1;
                        continue;
                    }
                }
            }
            if kind == Some(Kind::Cancel) {
                self.to_cancel.push_back((id.clone(), now));
            }
            self.pending.insert(id, pending);
        }
        done
    }

    /// One `task.event`; returns 1 when it finished a task of this run.
    pub(super) fn event(&mut self, notice: TaskEventNotice, received: Instant) -> usize {
        let terminal = notice.state.is_terminal();
        if notice.attempt.is_none() && !terminal {
            return 0;
        }
        let started_ms = notice
            .attempt
            .as_ref()
            .and_then(|a| a.started_at)
            .map(unix_ms);
        let finished_ms = notice
            .attempt
            .as_ref()
            .and_then(|a| a.finished_at)
            .map(unix_ms);
        let outcome = notice.attempt.as_ref().map(|a| a.outcome);
        let output_bytes = notice.attempt.as_ref().map(|a| a.output.len());
        if let Some(mut pending) = self.pending.remove(notice.id.as_str()) {
            if pending.recheck {
                // Its read-back counts it.
                self.pending.insert(notice.id.into_boxed_str(), pending);
                return 0;
            }
            if let Some(outcome) = outcome {
                self.count_outcome(outcome);
                pending.attempts_seen += 1;
                pending.last_outcome = Some(outcome);
            }
            pending.first_start_ms = pending.first_start_ms.or(started_ms);
            if terminal {
                self.last_progress = received;
                let end = End {
                    state: notice.state,
                    attempts: pending.attempts_seen,
                    last_outcome: pending.last_outcome,
                    output_bytes,
                };
                if pending.doubts(&end) {
                    pending.recheck = true;
                    let id = notice.id.into_boxed_str();
                    self.recheck.push(id.clone());
                    self.pending.insert(id, pending);
                    return 0;
                }
                self.finish(
                    &notice.id,
                    &pending,
                    &end,
                    finished_ms,
                    Some(received),
                    None,
                );
                return 1;
            }
            self.pending.insert(notice.id.into_boxed_str(), pending);
            return 0;
        }
        let early = self.early.entry(notice.id.into_boxed_str()).or_default();
        early.received.get_or_insert(received);
        early.first_start_ms = early.first_start_ms.or(started_ms);
        early.outcomes.extend(outcome);
        if terminal {
            early.terminal = Some((notice.state, finished_ms, received, output_bytes));
        }
        0
    }

    /// A pending task read back finished; returns 1 when it was pending.
    pub(super) fn read_back(&mut self, task: &Task) -> usize {
        let Some(pending) = self.pending.remove(task.id.as_str()) else {
            return 0;
        };
        let seen = pending.attempts_seen as usize;
        for attempt in task.attempts.iter().skip(seen) {
            self.count_outcome(attempt.outcome);
        }
        let pending = Pending {
            first_start_ms: task.started_at.map(unix_ms).or(pending.first_start_ms),
            ..pending
        };
        self.read_back += 1;
        self.finish(
            &task.id,
            &pending,
            &End::of_task(task),
            task.finished_at.map(unix_ms),
            None,
            Some(unix_ms(task.created_at)),
        );
        1
    }

    /// A task of this run read back after it (`--read-back`): counted when finished.
    pub(super) fn listed(&mut self, task: &Task) {
        if !task.state.is_terminal() {
            return;
        }
        for attempt in &task.attempts {
            self.count_outcome(attempt.outcome);
        }
        let pending = Pending {
            first_start_ms: task.started_at.map(unix_ms),
            ..Pending::new(self.clock.instant, self.clock.instant, None)
        };
        self.read_back += 1;
        self.finish(
            &task.id,
            &pending,
            &End::of_task(task),
            task.finished_at.map(unix_ms),
            None,
            Some(unix_ms(task.created_at)),
        );
    }

    /// A pending task that is gone; returns 1 when it was pending.
    pub(super) fn lost(&mut self, id: &str) -> usize {
        match self.pending.remove(id) {
            Some(pending) => {
                self.lost += 1;
                if let (Some(mix), Some(kind)) = (&mut self.mix, pending.kind) {
                    mix.lost(kind);
                }
                1
            }
            None => 0,
        }
    }

    /// Gives up on every pending task: they count as unfinished (and, with `--mix`, lost).
    pub(super) fn give_up(&mut self) {
        for (_, pending) in self.pending.drain() {
            self.unfinished += 1;
            if let (Some(mix), Some(kind)) = (&mut self.mix, pending.kind) {
                mix.lost(kind);
            }
        }
        self.to_cancel.clear();
        self.recheck.clear();
    }

    fn finish(
        &mut self,
        id: &str,
        pending: &Pending,
        end: &End,
        finished_ms: Option<i64>,
        received: Option<Instant>,
        created_ms: Option<i64>,
    ) {
        self.finished += 1;
        if let Some(index) = TaskState::ALL.iter().position(|s| *s == end.state) {
            self.states[index] += 1;
        }
        if let (Some(mix), Some(kind)) = (&mut self.mix, pending.kind) {
            mix.ended(id, kind, end);
        }
        let created_ms = created_ms
            .or_else(|| self.created_from_id.then(|| id_unix_ms(id)).flatten())
            .unwrap_or_else(|| self.clock.unix_ms_at(pending.sent));
        if let Some(start) = pending.first_start_ms {
            self.to_start.record(non_negative(start - created_ms));
        }
        if let Some(finish) = finished_ms {
            self.to_finish.record(non_negative(finish - created_ms));
            self.last_finished_ms = Some(self.last_finished_ms.map_or(finish, |l| l.max(finish)));
        }
        if let Some(received) = received {
            self.client_to_event
                .record(micros(received.saturating_duration_since(pending.sent)));
        }
        self.first_created_ms = Some(
            self.first_created_ms
                .map_or(created_ms, |f| f.min(created_ms)),
        );
    }

    /// Drops events of tasks no acknowledgement named within [`EARLY_EVENT_TTL`].
    pub(super) fn forget_early_events(&mut self, now: Instant) {
        self.early.retain(|_, early| {
            early
                .received
                .is_none_or(|at| now.duration_since(at) < EARLY_EVENT_TTL)
        });
    }

    /// Finished tasks per second, from the first task's `created_at` to the last
    /// `finished_at`.
    pub(super) fn throughput(&self) -> Option<f64> {
        let (first, last) = (self.first_created_ms?, self.last_finished_ms?);
        let seconds = (last - first) as f64 / 1000.0;
        (seconds > 0.0).then(|| self.finished as f64 / seconds)
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

fn non_negative(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fabric_types::{Attempt, Priority};

    #[test]
    fn fabric_ids_carry_their_milliseconds() {
        // 2023-11-14T22:13:20.123Z = 1_700_000_000_123 ms, then 80 bits of anything.
        let ms: u128 = 1_700_000_000_123;
        let value = (ms << 80) | 0x1234_5678_9abc_def0_1234;
        let id: String = (0..26)
            .rev()
            .map(|i| char::from(CROCKFORD[((value >> (i * 5)) & 31) as usize]))
            .collect();
        assert_eq!(id_unix_ms(&id), Some(1_700_000_000_123));
        assert_eq!(id_unix_ms(&id.to_lowercase()), Some(1_700_000_000_123));
        assert_eq!(id_unix_ms("42"), None);
        assert_eq!(id_unix_ms("ZZZZZZZZZZZZZZZZZZZZZZZZZZ"), None);
        assert_eq!(id_unix_ms("0000000000000000000000000U"), None);
    }

    fn notice(id: &str, state: TaskState, outcome: Option<Outcome>, at_ms: i64) -> TaskEventNotice {
        let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000).unwrap();
        TaskEventNotice {
            id: id.to_owned(),
            state,
            attempt: outcome.map(|outcome| {
                let mut attempt = Attempt::new(outcome);
                attempt.started_at = Some(at - time::Duration::milliseconds(2));
                attempt.finished_at = Some(at);
                attempt
            }),
            progress: None,
        }
    }

    #[test]
    fn events_before_and_after_the_acknowledgement_count_once() {
        let clock = Clock::now();
        let mut tally = Tally::new(false, clock, false);
        let t0 = clock.instant;
        let sent_ms = clock.unix_ms;
        // "a" finishes before its acknowledgement arrives; "b" after; "c" is retried once.
        assert_eq!(
            tally.event(
                notice("a", TaskState::Succeeded, Some(Outcome::Ok), sent_ms + 5),
                t0
            ),
            0
        );
        assert_eq!(
            tally.event(notice("a", TaskState::Running, None, sent_ms), t0),
            0
        );
        let done = tally.acked(
            vec!["a".into(), "b".into(), "c".into()],
            None,
            t0,
            Duration::from_millis(3),
            t0,
        );
        assert_eq!(done, 1);
        assert_eq!(tally.pending.len(), 2);
        assert_eq!(
            tally.event(
                notice("c", TaskState::Queued, Some(Outcome::Trap), sent_ms + 4),
                t0
            ),
            0
        );
        assert_eq!(
            tally.event(
                notice("b", TaskState::Succeeded, Some(Outcome::Ok), sent_ms + 9),
                t0
            ),
            1
        );
        assert_eq!(
            tally.event(
                notice("c", TaskState::Failed, Some(Outcome::Exit), sent_ms + 20),
                t0
            ),
            1
        );
        assert!(tally.pending.is_empty() && tally.early.is_empty());
        assert_eq!((tally.submitted, tally.finished), (3, 3));
        let report_outcomes: Vec<(Outcome, u64)> = Outcome::ALL
            .iter()
            .copied()
            .zip(tally.outcomes)
            .filter(|(_, n)| *n > 0)
            .collect();
        assert_eq!(
            report_outcomes,
            [(Outcome::Ok, 2), (Outcome::Exit, 1), (Outcome::Trap, 1)]
        );
        assert_eq!(tally.to_finish.count, 3);
        assert_eq!(tally.to_finish.max, 20);
        // "c" started with its first attempt, 2 ms before that attempt ended (not with its
        // last, at 18 ms); "a" at 3 ms, "b" at 7 ms.
        assert_eq!((tally.to_start.min, tally.to_start.max), (2, 7));
    }

    #[test]
    fn a_read_back_task_counts_only_the_attempts_not_seen() {
        let clock = Clock::now();
        let mut tally = Tally::new(false, clock, false);
        let t0 = clock.instant;
        tally.acked(vec!["x".into()], None, t0, Duration::ZERO, t0);
        tally.event(
            notice("x", TaskState::Queued, Some(Outcome::Trap), clock.unix_ms),
            t0,
        );
        let at = |ms: i64| {
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(clock.unix_ms + ms) * 1_000_000)
                .unwrap()
        };
        let mut task = stored(
            "x",
            TaskState::Succeeded,
            &[Outcome::Trap, Outcome::Ok],
            at(0),
        );
        task.module = "echo".into();
        task.started_at = Some(at(1));
        task.finished_at = Some(at(7));
        task.output = None;
        assert_eq!(tally.read_back(&task), 1);
        assert_eq!(tally.read_back(&task), 0);
        assert_eq!(
            tally.outcomes[Outcome::ALL
                .iter()
                .position(|o| *o == Outcome::Trap)
                .unwrap()],
            1
        );
        assert_eq!(tally.outcomes[0], 1);
        assert_eq!(tally.to_finish.max, 7);
        assert_eq!(tally.read_back, 1);
    }

    /// A stored task as `task.get` shows it, with these attempts.
    fn stored(id: &str, state: TaskState, outcomes: &[Outcome], at: OffsetDateTime) -> Task {
        Task {
            id: id.into(),
            module: "strict".into(),
            state,
            priority: Priority::Normal,
            created_at: at,
            started_at: Some(at),
            finished_at: Some(at),
            attempts: outcomes.iter().map(|o| Attempt::new(*o)).collect(),
            output: Some(String::new()),
            output_base64: None,
            error: None,
            labels: Default::default(),
            dirs: Default::default(),
            egress: Vec::new(),
            args: Vec::new(),
            progress: None,
            after: Vec::new(),
            pass_outputs: false,
            parent: None,
            concurrency: None,
        }
    }

    #[test]
    fn a_mix_task_whose_events_do_not_match_is_read_back_before_it_counts() {
        let clock = Clock::now();
        let mut tally = Tally::new(true, clock, true);
        let t0 = clock.instant;
        let ms = clock.unix_ms;
        // Places 4 and 5 of the rotation: a retry (three exits) and a cancel.
        tally.acked(
            vec!["r".into(), "c".into()],
            Some(4),
            t0,
            Duration::ZERO,
            t0,
        );
        assert_eq!(tally.to_cancel.len(), 1);
        // The retry's first attempt event was dropped: its events show two attempts.
        tally.event(
            notice("r", TaskState::Scheduled, Some(Outcome::Exit), ms),
            t0,
        );
        assert_eq!(
            tally.event(
                notice("r", TaskState::Failed, Some(Outcome::Exit), ms + 5),
                t0
            ),
            0
        );
        assert_eq!(tally.recheck.len(), 1);
        assert!(tally.pending["r"].recheck);
        // Another event of it is ignored; the read-back of the store counts it.
        tally.event(notice("r", TaskState::Failed, None, ms + 6), t0);
        let at = OffsetDateTime::now_utc();
        let three = [Outcome::Exit; 3];
        assert_eq!(
            tally.read_back(&stored("r", TaskState::Failed, &three, at)),
            1
        );
        // The cancel ended by its timeout instead: a mismatch, after its read-back too.
        tally.event(
            notice("c", TaskState::Failed, Some(Outcome::Timeout), ms + 9),
            t0,
        );
        let timed_out = [Outcome::Timeout];
        assert_eq!(
            tally.read_back(&stored("c", TaskState::Failed, &timed_out, at)),
            1
        );
        let mix = tally.mix.as_ref().unwrap().to_json();
        assert_eq!(mix["kinds"]["retry"]["expected"], 1, "{mix}");
        assert_eq!(mix["kinds"]["cancel"]["mismatched"], 1, "{mix}");
        assert_eq!(mix["mismatched"], 1, "{mix}");
        assert_eq!(
            tally.outcomes[Outcome::ALL
                .iter()
                .position(|o| *o == Outcome::Exit)
                .unwrap()],
            3
        );
        assert!(tally.pending.is_empty());
    }

    #[test]
    fn events_of_other_clients_are_forgotten() {
        let clock = Clock::now();
        let mut tally = Tally::new(false, clock, false);
        tally.event(
            notice("other", TaskState::Succeeded, Some(Outcome::Ok), 0),
            clock.instant,
        );
        tally.forget_early_events(clock.instant + Duration::from_secs(1));
        assert_eq!(tally.early.len(), 1);
        tally.forget_early_events(clock.instant + EARLY_EVENT_TTL);
        assert!(tally.early.is_empty());
    }
}
