//! The agents' KPIs in `/metrics`: `fabric_agent_kpi_sum` and `fabric_agent_kpi_count` by
//! module (its name when it has one) and KPI name, with a hard cap on series so that no
//! tenant can blow up a scrape: past [`MAX_KPI_SERIES`], new pairs fold into
//! `kpi="_other"` of their module, and past that into `module="_other"` as well.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use fabric_types::Kpis;

/// The most `(module, kpi)` series kept, `_other` ones included.
pub const MAX_KPI_SERIES: usize = 1000;
/// The label value series fold into past the cap.
const OTHER: &str = "_other";

/// Prints one family's value of a series' `(sum, count)`.
type Render = fn(&(f64, u64)) -> String;

/// Sum and count of each series.
#[derive(Debug, Default)]
pub struct KpiMetrics {
    series: Mutex<BTreeMap<(String, String), (f64, u64)>>,
    cap: usize,
}

impl KpiMetrics {
    pub fn new() -> Self {
        Self::with_cap(MAX_KPI_SERIES)
    }

    /// Keeps at most `cap` series (at least 3).
    pub fn with_cap(cap: usize) -> Self {
        Self {
            series: Mutex::default(),
            cap: cap.max(3),
        }
    }

    /// Adds one finished attempt's KPIs under `module`.
    pub fn record(&self, module: &str, kpis: &Kpis) {
        if kpis.is_empty() {
            return;
        }
        let mut series = self.series.lock().expect("kpi metrics lock");
        for (name, stats) in kpis {
            let key = Self::key(&series, self.cap, module, name);
            let entry = series.entry(key).or_default();
            entry.0 += stats.sum;
            entry.1 += stats.count;
        }
    }

    /// The series `(module, kpi)` lands in: itself while there is room (two places are
    /// always left: one for a module's `_other`, one for the catch-all), else its module's
    /// `_other` while there is room for it, else `_other/_other`.
    fn key(
        series: &BTreeMap<(String, String), (f64, u64)>,
        cap: usize,
        module: &str,
        kpi: &str,
    ) -> (String, String) {
        let exact = (module.to_owned(), kpi.to_owned());
        if series.contains_key(&exact) || series.len() + 2 < cap {
            return exact;
        }
        let module_other = (module.to_owned(), OTHER.to_owned());
        if series.contains_key(&module_other) || series.len() + 1 < cap {
            return module_other;
        }
        (OTHER.to_owned(), OTHER.to_owned())
    }

    /// How many series there are.
    pub fn len(&self) -> usize {
        self.series.lock().expect("kpi metrics lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Both families in the text exposition.
    pub fn render(&self, out: &mut String) {
        let series = self.series.lock().expect("kpi metrics lock");
        let families: [(&str, &str, Render); 2] = [
            (
                "fabric_agent_kpi_sum",
                "Sum of the values agents recorded, by module and KPI.",
                |(sum, _)| sum.to_string(),
            ),
            (
                "fabric_agent_kpi_count",
                "Values agents recorded, by module and KPI.",
                |(_, count)| count.to_string(),
            ),
        ];
        for (name, help, value) in families {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for ((module, kpi), entry) in series.iter() {
                let _ = writeln!(
                    out,
                    "{name}{{module=\"{}\",kpi=\"{kpi}\"}} {}",
                    escape(module),
                    value(entry)
                );
            }
        }
    }
}

/// A label value with `\`, `"` and newlines escaped (module names are the tenants').
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use fabric_types::KpiStats;

    fn kpis(names: &[&str], value: f64) -> Kpis {
        names
            .iter()
            .map(|n| (n.to_string(), KpiStats::new(value)))
            .collect()
    }

    #[test]
    fn sums_and_counts_accumulate_by_module_and_kpi() {
        let metrics = KpiMetrics::new();
        metrics.record("echo", &kpis(&["confidence"], 0.5));
        metrics.record("echo", &kpis(&["confidence"], 0.25));
        metrics.record("sha256:ab", &kpis(&["confidence"], 1.0));
        let mut out = String::new();
        metrics.render(&mut out);
        assert!(
            out.contains("fabric_agent_kpi_sum{module=\"echo\",kpi=\"confidence\"} 0.75\n"),
            "{out}"
        );
        assert!(
            out.contains("fabric_agent_kpi_count{module=\"echo\",kpi=\"confidence\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("fabric_agent_kpi_count{module=\"sha256:ab\",kpi=\"confidence\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("# TYPE fabric_agent_kpi_sum counter"));
    }

    #[test]
    fn series_past_the_cap_fold_into_other_and_the_count_never_passes_it() {
        let metrics = KpiMetrics::with_cap(10);
        for module in 0..50 {
            let names: Vec<String> = (0..64).map(|k| format!("k{k}")).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            metrics.record(&format!("m{module}"), &kpis(&names, 1.0));
            assert!(metrics.len() <= 10, "{} series", metrics.len());
        }
        assert_eq!(metrics.len(), 10);
        let mut out = String::new();
        metrics.render(&mut out);
        // Nothing is lost: every recorded value is counted in some series.
        let total: u64 = out
            .lines()
            .filter(|l| l.starts_with("fabric_agent_kpi_count{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(total, 50 * 64);
        assert!(out.contains("module=\"_other\",kpi=\"_other\""), "{out}");
        assert!(out.contains("module=\"m0\",kpi=\"_other\""), "{out}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
