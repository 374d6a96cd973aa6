//! KPIs and progress an agent reports (`fabric:agent/telemetry`): one per-attempt state
//! that both ABIs call into — components through `wit/fabric-agent.wit` ([`p2`]), core
//! modules through the `fabric.kpi` and `fabric.progress` imports ([`p1`]) — with the
//! attempt's bounds on calls and names, and the cell the latest progress is published in.

mod p1;
mod p2;

use std::sync::{Arc, Mutex};

use fabric_types::{KpiStats, Kpis, Progress, TelemetryRefusal, check_kpi, check_progress};
use time::OffsetDateTime;
use wasmtime::AsContextMut;

pub(crate) use p1::{MODULE, add_to_linker as add_to_p1_linker};
pub(crate) use p2::add_to_linker as add_to_p2_linker;

/// Fuel every telemetry call costs the attempt, taken or refused: a guest that floods the
/// host with calls burns its own fuel as it would by computing.
pub const TELEMETRY_CALL_FUEL: u64 = 1_000;

/// Takes [`TELEMETRY_CALL_FUEL`] from the attempt's fuel (see [`crate::hostcalls::charge`]).
fn charge(store: impl AsContextMut) -> wasmtime::Result<()> {
    crate::hostcalls::charge(store, TELEMETRY_CALL_FUEL)
}

/// The latest progress an attempt reported, shared between the attempt (which sets it) and
/// whoever watches it run (which polls it). It holds one [`Progress`] and a count of
/// changes, whatever the guest does; clones share the same cell.
#[derive(Clone, Default, Debug)]
pub struct ProgressCell(Arc<Mutex<Latest>>);

#[derive(Default, Debug)]
struct Latest {
    /// How many times progress was reported; 0 before the first report.
    changes: u64,
    progress: Option<Progress>,
}

impl ProgressCell {
    /// An empty cell: no progress reported yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The progress reported last, if any.
    pub fn latest(&self) -> Option<Progress> {
        self.lock().progress.clone()
    }

    /// The progress reported last and the count of reports so far, when there were more
    /// than `seen` of them: pass 0 first, then the count this returned.
    pub fn changed_since(&self, seen: u64) -> Option<(u64, Progress)> {
        let latest = self.lock();
        match &latest.progress {
            Some(progress) if latest.changes > seen => Some((latest.changes, progress.clone())),
            _ => None,
        }
    }

    /// Replaces the progress, reusing the held message's buffer.
    fn set(&self, done: f64, message: &str) {
        let at = OffsetDateTime::now_utc();
        let mut latest = self.lock();
        latest.changes += 1;
        match &mut latest.progress {
            Some(progress) => {
                progress.done = done;
                progress.message.clear();
                progress.message.push_str(message);
                progress.at = at;
            }
            empty @ None => {
                *empty = Some(Progress {
                    done,
                    message: message.to_owned(),
                    at,
                });
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Latest> {
        // A panic while holding the lock leaves a consistent value: keep using it.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One attempt's telemetry: the KPIs recorded so far, the calls made, the bounds, and the
/// cell progress is published in. The ABI adapters call [`Telemetry::admit`] first, then
/// read the guest's arguments, then [`Telemetry::kpi`] or [`Telemetry::progress`].
#[derive(Debug)]
pub(crate) struct Telemetry {
    kpis: Kpis,
    calls: u32,
    max_calls: u32,
    max_names: usize,
    progress: ProgressCell,
}

impl Telemetry {
    pub fn new(max_calls: u32, max_names: usize, progress: ProgressCell) -> Self {
        Self {
            kpis: Kpis::new(),
            calls: 0,
            max_calls,
            max_names,
            progress,
        }
    }

    /// Counts one call, taken or refused; refuses it when the attempt already made as many
    /// as it may. Cheap: the adapters call it before reading anything of the guest's.
    pub fn admit(&mut self) -> Result<(), TelemetryRefusal> {
        if self.calls >= self.max_calls {
            return Err(TelemetryRefusal::TooManyCalls);
        }
        self.calls += 1;
        Ok(())
    }

    /// Records `value` under `name`, unless either is bad or `name` would be one distinct
    /// name too many.
    pub fn kpi(&mut self, name: &str, value: f64) -> Result<(), TelemetryRefusal> {
        check_kpi(name, value)?;
        if let Some(stats) = self.kpis.get_mut(name) {
            stats.record(value);
            return Ok(());
        }
        if self.kpis.len() >= self.max_names {
            return Err(TelemetryRefusal::TooManyNames);
        }
        self.kpis.insert(name.to_owned(), KpiStats::new(value));
        Ok(())
    }

    /// Publishes `done` and `message` as the attempt's latest progress, unless either is bad.
    pub fn progress(&mut self, done: f64, message: &str) -> Result<(), TelemetryRefusal> {
        check_progress(done, message)?;
        self.progress.set(done, message);
        Ok(())
    }

    /// The KPIs recorded, leaving none.
    pub fn take_kpis(&mut self) -> Kpis {
        std::mem::take(&mut self.kpis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_past_the_limit_are_refused_and_not_counted_further() {
        let mut telemetry = Telemetry::new(3, 64, ProgressCell::new());
        for _ in 0..3 {
            assert_eq!(telemetry.admit(), Ok(()));
        }
        for _ in 0..5 {
            assert_eq!(telemetry.admit(), Err(TelemetryRefusal::TooManyCalls));
        }
        assert_eq!(telemetry.calls, 3);
    }

    #[test]
    fn distinct_names_are_bounded_but_known_names_keep_recording() {
        let mut telemetry = Telemetry::new(100, 2, ProgressCell::new());
        assert_eq!(telemetry.kpi("a", 1.0), Ok(()));
        assert_eq!(telemetry.kpi("b", 2.0), Ok(()));
        assert_eq!(telemetry.kpi("c", 3.0), Err(TelemetryRefusal::TooManyNames));
        assert_eq!(telemetry.kpi("a", 5.0), Ok(()));
        assert_eq!(telemetry.kpi("B", 1.0), Err(TelemetryRefusal::BadName));
        assert_eq!(
            telemetry.kpi("a", f64::NAN),
            Err(TelemetryRefusal::BadValue)
        );
        let kpis = telemetry.take_kpis();
        assert_eq!(kpis.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(kpis["a"].count, 2);
        assert_eq!(kpis["a"].sum, 6.0);
        assert!(telemetry.take_kpis().is_empty());
    }

    #[test]
    fn the_cell_holds_the_latest_progress_and_counts_changes() {
        let cell = ProgressCell::new();
        let mut telemetry = Telemetry::new(100, 64, cell.clone());
        assert_eq!(cell.latest(), None);
        assert_eq!(cell.changed_since(0), None);
        assert_eq!(telemetry.progress(0.25, "a quarter"), Ok(()));
        let (seen, first) = cell.changed_since(0).unwrap();
        assert_eq!(
            (seen, first.done, first.message.as_str()),
            (1, 0.25, "a quarter")
        );
        assert_eq!(cell.changed_since(seen), None);
        assert_eq!(
            telemetry.progress(1.5, "too far"),
            Err(TelemetryRefusal::BadValue)
        );
        assert_eq!(cell.changed_since(seen), None);
        assert_eq!(telemetry.progress(1.0, "done"), Ok(()));
        let (seen, last) = cell.changed_since(seen).unwrap();
        assert_eq!((seen, last.done, last.message.as_str()), (2, 1.0, "done"));
        assert!(last.at >= first.at);
        assert_eq!(cell.latest(), Some(last));
    }
}
