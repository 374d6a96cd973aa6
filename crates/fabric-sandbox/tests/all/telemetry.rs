//! Telemetry of well-behaved agents: KPIs and progress reported through the SDK, on core
//! modules and components alike, kept in the attempt and published in its progress cell.

use fabric_sandbox::{ProgressCell, RunRequest};
use fabric_types::{KpiStats, Outcome};

use crate::util::*;

/// Four lines of 2, 3, 0 and 1 words; 5 of the 6 words are letters only.
const TEXT: &str = "alpha beta\ngamma 42 delta\n\nepsilon\n";

fn both() -> [(&'static str, &'static [u8]); 2] {
    [
        ("p1", fabric_agents::p1::REPORTER),
        ("p2", fabric_agents::p2::REPORTER),
    ]
}

#[tokio::test]
async fn reporter_records_its_kpis_and_progress_on_both_abis() {
    for (kind, wasm) in both() {
        let progress = ProgressCell::new();
        let request = RunRequest {
            input: TEXT.into(),
            limits: tight(),
            progress: progress.clone(),
            ..RunRequest::default()
        };
        let attempt = run_request(wasm, request).await;
        assert_outcome(&attempt, Outcome::Ok);
        let confidence = 5.0 / 6.0;
        assert_eq!(
            text(&attempt.output),
            format!("lines=4 words=6 confidence={confidence} refused=0\n"),
            "{kind}"
        );
        let words = KpiStats {
            count: 4,
            sum: 6.0,
            min: 0.0,
            max: 3.0,
            last: 1.0,
        };
        assert_eq!(attempt.kpis.len(), 3, "{kind}: {:?}", attempt.kpis);
        assert_eq!(attempt.kpis["words"], words, "{kind}");
        assert_eq!(attempt.kpis["lines"], KpiStats::new(4.0), "{kind}");
        assert_eq!(
            attempt.kpis["confidence"],
            KpiStats::new(confidence),
            "{kind}"
        );

        let (changes, last) = progress.changed_since(0).expect("progress was reported");
        assert_eq!(changes, 4, "{kind}: one report per line");
        assert_eq!(
            (last.done, last.message.as_str()),
            (1.0, "line 4 of 4"),
            "{kind}"
        );
        let (started, finished) = (attempt.started_at.unwrap(), attempt.finished_at.unwrap());
        assert!(
            started <= last.at && last.at <= finished,
            "{kind}: {last:?}"
        );
        assert_eq!(progress.changed_since(changes), None, "{kind}");
        assert_eq!(progress.latest(), Some(last), "{kind}");
    }
}

#[tokio::test]
async fn telemetry_calls_cost_fuel() {
    for (kind, wasm) in both() {
        let quiet = run(wasm, b"").await;
        let busy = run(wasm, "word\n".repeat(100).as_bytes()).await;
        assert_outcome(&busy, Outcome::Ok);
        assert_eq!(busy.kpis["words"].count, 100, "{kind}");
        // 200 more calls (a KPI and a progress report per line), at least their fuel each.
        let extra = busy.usage.fuel_consumed - quiet.usage.fuel_consumed;
        assert!(
            extra >= 200 * fabric_sandbox::TELEMETRY_CALL_FUEL,
            "{kind}: {extra}"
        );
    }
}

#[tokio::test]
async fn wordcount_records_its_word_count_and_prints_as_before() {
    for (kind, wasm) in [
        ("p1", fabric_agents::p1::WORDCOUNT),
        ("p2", fabric_agents::p2::WORDCOUNT),
    ] {
        let attempt = run(wasm, b"the cat saw the dog\nthe end\n").await;
        assert_outcome(&attempt, Outcome::Ok);
        assert_eq!(
            text(&attempt.output),
            "{\"words\":7,\"lines\":2,\"bytes\":28,\"top\":[[\"the\",3],[\"cat\",1],[\"dog\",1],[\"end\",1],[\"saw\",1]]}\n",
            "{kind}"
        );
        assert_eq!(attempt.kpis.len(), 1, "{kind}");
        assert_eq!(attempt.kpis["words"], KpiStats::new(7.0), "{kind}");
    }
}

#[tokio::test]
async fn an_agent_that_reports_nothing_keeps_no_kpis_and_no_progress() {
    let progress = ProgressCell::new();
    let request = RunRequest {
        input: b"quiet".to_vec(),
        limits: tight(),
        progress: progress.clone(),
        ..RunRequest::default()
    };
    let attempt = run_request(fabric_agents::p1::ECHO, request).await;
    assert_outcome(&attempt, Outcome::Ok);
    assert!(attempt.kpis.is_empty());
    assert_eq!(progress.latest(), None);
}
