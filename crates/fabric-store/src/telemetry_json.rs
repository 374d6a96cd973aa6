//! How both backends store what agents report and run with: an attempt's KPIs, a task's
//! progress and its args, as JSON text that is absent (NULL) when there is nothing to say.

use fabric_types::{Kpis, Progress};

use crate::StoreError;
use crate::rollup::finite;

/// An attempt's KPIs as stored: `None` when it recorded none. Non-finite values (a sum that
/// overflowed) are kept as the nearest finite ones (see [`finite`]), so the text stays JSON.
pub fn kpis_encode(kpis: &Kpis) -> Option<String> {
    if kpis.is_empty() {
        return None;
    }
    let mut kept = kpis.clone();
    for stats in kept.values_mut() {
        stats.sum = finite(stats.sum);
        stats.min = finite(stats.min);
        stats.max = finite(stats.max);
        stats.last = finite(stats.last);
    }
    Some(serde_json::to_string(&kept).expect("names and finite numbers serialize"))
}

/// An attempt's KPIs from their stored text (`None` reads as none).
pub fn kpis_decode(text: Option<&str>, column: &str) -> Result<Kpis, StoreError> {
    match text {
        None => Ok(Kpis::new()),
        Some(text) => serde_json::from_str(text)
            .map_err(|e| StoreError::Corrupt(format!("{column} is not a KPI object: {e}"))),
    }
}

/// A task's progress as stored.
pub fn progress_encode(progress: &Progress) -> String {
    let progress = Progress {
        done: finite(progress.done),
        ..progress.clone()
    };
    serde_json::to_string(&progress).expect("a number, a string and a time serialize")
}

/// A task's progress from its stored text (`None`: none reported).
pub fn progress_decode(text: Option<&str>, column: &str) -> Result<Option<Progress>, StoreError> {
    text.map(|text| {
        serde_json::from_str(text)
            .map_err(|e| StoreError::Corrupt(format!("{column} is not a progress object: {e}")))
    })
    .transpose()
}

/// A task's args as stored: `None` when it has none.
pub fn args_encode(args: &[String]) -> Option<String> {
    crate::egress_json::names_encode(args)
}

/// A task's args from their stored text (`None` reads as none).
pub fn args_decode(text: Option<&str>, column: &str) -> Result<Vec<String>, StoreError> {
    crate::egress_json::names_decode(text, column)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fabric_types::KpiStats;

    #[test]
    fn nothing_is_stored_for_nothing_and_everything_round_trips() {
        assert_eq!(kpis_encode(&Kpis::new()), None);
        assert_eq!(kpis_decode(None, "c").unwrap(), Kpis::new());
        assert_eq!(args_encode(&[]), None);
        assert_eq!(progress_decode(None, "c").unwrap(), None);

        let mut stats = KpiStats::new(0.1);
        stats.record(1e300);
        stats.record(-5e-324);
        let kpis = Kpis::from([("tokens.in".to_string(), stats)]);
        let text = kpis_encode(&kpis);
        assert_eq!(kpis_decode(text.as_deref(), "c").unwrap(), kpis);

        let progress = Progress {
            done: 0.25,
            message: "a quarter".into(),
            at: crate::from_millis(1_700_000_000_123),
        };
        let text = progress_encode(&progress);
        assert_eq!(progress_decode(Some(&text), "c").unwrap(), Some(progress));

        let args = vec!["--fast".to_string(), "x y".to_string()];
        assert_eq!(
            args_decode(args_encode(&args).as_deref(), "c").unwrap(),
            args
        );
    }

    #[test]
    fn an_overflowed_sum_is_stored_as_the_largest_finite_one() {
        let mut stats = KpiStats::new(f64::MAX);
        stats.record(f64::MAX);
        assert!(stats.sum.is_infinite());
        let text = kpis_encode(&Kpis::from([("x".to_string(), stats)]));
        let back = kpis_decode(text.as_deref(), "c").unwrap();
        assert_eq!(back["x"].sum, f64::MAX);
    }
}
